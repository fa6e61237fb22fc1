//! The duration of an Opus packet, read from its TOC byte (RFC 6716 §3.1)
//! and, for code 3, its frame count byte (§3.2.5). The pager needs it for
//! granule positions and the demuxer to report how much audio arrived;
//! neither needs to decode.

use super::error::OggError;

/// 48 kHz samples in the longest packet Opus allows: 120 ms (§3.2.5).
pub const PACKET_SAMPLES_MAX: u32 = 5760;

/// Frame sizes in 48 kHz samples, indexed by the TOC's configuration number
/// (its top five bits), from the table in RFC 6716 §3.1: SILK-only 10, 20,
/// 40, 60 ms; Hybrid 10, 20 ms; CELT-only 2.5, 5, 10, 20 ms.
const FRAME_SAMPLES_BY_CONFIGURATION: [u32; 32] = [
    480, 960, 1920, 2880, // SILK narrowband
    480, 960, 1920, 2880, // SILK mediumband
    480, 960, 1920, 2880, // SILK wideband
    480, 960, // Hybrid super-wideband
    480, 960, // Hybrid fullband
    120, 240, 480, 960, // CELT narrowband
    120, 240, 480, 960, // CELT wideband
    120, 240, 480, 960, // CELT super-wideband
    120, 240, 480, 960, // CELT fullband
];

/// The frame count byte's lower six bits hold the count (§3.2.5).
const FRAME_COUNT_MASK: u8 = 0x3f;

/// Two frames of different sizes: the first frame's length, one or two
/// bytes, must fit in what follows it (§3.2.3, rule R4).
fn check_code_2_first_frame(payload: &[u8]) -> Result<(), OggError> {
    let (first_frame_bytes, length_bytes) = match payload {
        [] => {
            return Err(OggError::BadOpusPacket(
                "code 2 packet lacks its frame length",
            ))
        }
        [byte, ..] if *byte < 252 => (*byte as usize, 1),
        [_] => {
            return Err(OggError::BadOpusPacket(
                "code 2 packet lacks its frame length",
            ))
        }
        [low, high, ..] => (*low as usize + 4 * *high as usize, 2),
    };
    if first_frame_bytes > payload.len() - length_bytes {
        return Err(OggError::BadOpusPacket(
            "code 2 frame length exceeds the packet",
        ));
    }
    Ok(())
}

/// The number of 48 kHz samples `packet` decodes to.
///
/// Refuses an empty packet (every Opus packet has a TOC byte), a code 1
/// packet whose two equal frames cannot split its payload, a code 2 packet
/// whose first frame length runs past its end, a code 3
/// packet without its frame count byte or with a count of zero, and a
/// packet longer than 120 ms.
pub fn opus_packet_samples(packet: &[u8]) -> Result<u32, OggError> {
    let Some(&toc) = packet.first() else {
        return Err(OggError::BadOpusPacket("empty packet has no TOC byte"));
    };
    let frame_samples = FRAME_SAMPLES_BY_CONFIGURATION[(toc >> 3) as usize];
    let frame_count = match toc & 0x03 {
        0 => 1,
        1 => {
            // Two frames of equal size (§3.2.2, rule R3).
            if !(packet.len() - 1).is_multiple_of(2) {
                return Err(OggError::BadOpusPacket(
                    "code 1 packet has an odd payload length",
                ));
            }
            2
        }
        2 => {
            check_code_2_first_frame(&packet[1..])?;
            2
        }
        _ => {
            let Some(&count_byte) = packet.get(1) else {
                return Err(OggError::BadOpusPacket(
                    "code 3 packet lacks its frame count byte",
                ));
            };
            let frame_count = (count_byte & FRAME_COUNT_MASK) as u32;
            if frame_count == 0 {
                return Err(OggError::BadOpusPacket(
                    "code 3 packet declares zero frames",
                ));
            }
            frame_count
        }
    };
    let samples = frame_samples * frame_count;
    if samples > PACKET_SAMPLES_MAX {
        return Err(OggError::BadOpusPacket("packet is longer than 120 ms"));
    }
    Ok(samples)
}
