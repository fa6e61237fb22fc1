//! Raw PCM ingest: `audio/L16` (RFC 2586), big-endian signed 16-bit samples,
//! channels interleaved.
//!
//! A live broadcaster may send `Content-Type: audio/L16;rate=48000;channels=2`
//! instead of Ogg Opus. [`parse_l16_content_type`] reads that header and
//! refuses the formats the data plane cannot take (anything but 48 kHz, more
//! than two channels); [`L16Decoder`] turns the body, in whatever pieces the
//! socket delivers it, into interleaved `f32` frames for the DSP chain.
//!
//! Architecture Invariant: the decoder only ever emits whole frames. A body
//! chunk may end in the middle of a sample (an odd byte) or in the middle of
//! a frame (the left sample without its right one); those bytes wait for the
//! next call, so the channels never swap.

/// The only sample rate the live data plane accepts: the Opus ladder encodes
/// at 48 kHz and the data plane does not resample.
pub const ACCEPTED_SAMPLE_RATE_HZ: u32 = 48_000;

/// The most channels the live data plane accepts (stereo).
pub const ACCEPTED_CHANNEL_COUNT_MAX: u8 = 2;

/// Bytes in one L16 sample.
const SAMPLE_BYTE_COUNT: usize = 2;

/// The most channels [`L16Decoder`] takes; more than the data plane
/// accepts, so that the decoder can serve a recording tool too.
const DECODER_CHANNEL_COUNT_MAX: u8 = 8;

/// The scale that maps a signed 16-bit sample into `[-1, 1)`.
const SAMPLE_SCALE: f32 = 1.0 / 32_768.0;

/// The format named by an `audio/L16` content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcmFormat {
    /// Samples per second per channel (`rate=`).
    pub sample_rate_hz: u32,
    /// Interleaved channels (`channels=`, 1 when absent).
    pub channel_count: u8,
}

/// Why an `audio/L16` content type was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PcmError {
    /// The media type is not `audio/L16`.
    #[error("content type {found:?} is not audio/L16")]
    NotL16 {
        /// The media type as sent.
        found: String,
    },
    /// RFC 2586 requires the `rate` parameter.
    #[error("audio/L16 without the required rate parameter")]
    MissingRate,
    /// A parameter is malformed or repeated.
    #[error("audio/L16 parameter {name:?} has the invalid value {value:?}")]
    InvalidParameter {
        /// The parameter name, lower case.
        name: String,
        /// The value as sent.
        value: String,
    },
    /// A well-formed rate other than 48 kHz.
    #[error("audio/L16 rate {sample_rate_hz} Hz is not supported")]
    UnsupportedSampleRate {
        /// The rate as sent.
        sample_rate_hz: u32,
    },
    /// A well-formed channel count other than 1 or 2.
    #[error("audio/L16 with {channel_count} channels is not supported")]
    UnsupportedChannelCount {
        /// The channel count as sent.
        channel_count: u32,
    },
}

impl PcmError {
    /// One sentence for the broadcaster, saying what to send instead; the
    /// data plane puts it in the error response body.
    pub fn detail(&self) -> String {
        match self {
            Self::NotL16 { found } => format!(
                "The content type {found:?} is not raw PCM; send \
                 audio/L16;rate=48000;channels=2 or Ogg Opus."
            ),
            Self::MissingRate => "The audio/L16 content type needs a rate parameter, \
                 for example audio/L16;rate=48000;channels=2."
                .to_owned(),
            Self::InvalidParameter { name, value } => format!(
                "The audio/L16 parameter {name}={value:?} is not a valid \
                 positive integer or is repeated."
            ),
            Self::UnsupportedSampleRate { sample_rate_hz } => format!(
                "Raw PCM at {sample_rate_hz} Hz is not accepted; resample to \
                 {ACCEPTED_SAMPLE_RATE_HZ} Hz and send rate={ACCEPTED_SAMPLE_RATE_HZ}."
            ),
            Self::UnsupportedChannelCount { channel_count } => format!(
                "Raw PCM with {channel_count} channels is not accepted; send mono \
                 (channels=1) or stereo (channels=2)."
            ),
        }
    }
}

/// Parses an `audio/L16` content type (RFC 2586) and checks that the live
/// data plane accepts it: rate 48000 and one or two channels.
///
/// The media type and parameter names are case-insensitive, whitespace
/// around `;` and `=` is ignored, values may be quoted, `channels` defaults
/// to 1, and parameters this module does not know (`emphasis`,
/// `channel-order`) are ignored.
pub fn parse_l16_content_type(value: &str) -> Result<PcmFormat, PcmError> {
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("audio/L16") {
        return Err(PcmError::NotL16 {
            found: media_type.to_owned(),
        });
    }
    let mut sample_rate_hz: Option<u32> = None;
    let mut channel_count: Option<u32> = None;
    for parameter in parts.map(str::trim).filter(|part| !part.is_empty()) {
        let (name, raw_value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let name = name.trim().to_ascii_lowercase();
        let raw_value = raw_value.trim().trim_matches('"');
        let slot = match name.as_str() {
            "rate" => &mut sample_rate_hz,
            "channels" => &mut channel_count,
            _ => continue,
        };
        let parsed = raw_value.parse::<u32>().ok().filter(|number| *number > 0);
        match (parsed, slot.is_some()) {
            (Some(number), false) => *slot = Some(number),
            _ => {
                return Err(PcmError::InvalidParameter {
                    name,
                    value: raw_value.to_owned(),
                })
            }
        }
    }
    let sample_rate_hz = sample_rate_hz.ok_or(PcmError::MissingRate)?;
    let channel_count = channel_count.unwrap_or(1);
    if sample_rate_hz != ACCEPTED_SAMPLE_RATE_HZ {
        return Err(PcmError::UnsupportedSampleRate { sample_rate_hz });
    }
    if channel_count > u32::from(ACCEPTED_CHANNEL_COUNT_MAX) {
        return Err(PcmError::UnsupportedChannelCount { channel_count });
    }
    Ok(PcmFormat {
        sample_rate_hz,
        // Checked against ACCEPTED_CHANNEL_COUNT_MAX above, so it fits.
        channel_count: channel_count as u8,
    })
}

/// Decodes an `audio/L16` body into interleaved `f32` samples in `[-1, 1)`,
/// one socket read at a time.
#[derive(Clone, Debug)]
pub struct L16Decoder {
    channel_count: u8,
    /// Bytes of an unfinished frame from the previous call; at most one
    /// frame minus one byte.
    carry: [u8; SAMPLE_BYTE_COUNT * DECODER_CHANNEL_COUNT_MAX as usize],
    carry_byte_count: usize,
}

impl L16Decoder {
    /// A decoder for `channel_count` interleaved channels (1 to 8).
    ///
    /// # Panics
    /// When `channel_count` is 0 or above 8: the caller parses the content
    /// type first, so that is a programmer error.
    pub fn new(channel_count: u8) -> Self {
        assert!(
            (1..=DECODER_CHANNEL_COUNT_MAX).contains(&channel_count),
            "L16Decoder takes 1 to 8 channels, not {channel_count}"
        );
        Self {
            channel_count,
            carry: [0; SAMPLE_BYTE_COUNT * DECODER_CHANNEL_COUNT_MAX as usize],
            carry_byte_count: 0,
        }
    }

    /// The interleaved channel count.
    pub fn channel_count(&self) -> u8 {
        self.channel_count
    }

    /// Bytes of an unfinished frame waiting for the next call.
    pub fn carried_byte_count(&self) -> usize {
        self.carry_byte_count
    }

    /// Appends every whole frame in `carried bytes + bytes` to `out` as
    /// interleaved `f32` (`sample / 32768`) and keeps the rest for the next
    /// call.
    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<f32>) {
        let frame_byte_count = SAMPLE_BYTE_COUNT * usize::from(self.channel_count);
        let mut bytes = bytes;
        if self.carry_byte_count > 0 {
            let needed = frame_byte_count - self.carry_byte_count;
            let taken = needed.min(bytes.len());
            self.carry[self.carry_byte_count..self.carry_byte_count + taken]
                .copy_from_slice(&bytes[..taken]);
            self.carry_byte_count += taken;
            bytes = &bytes[taken..];
            if self.carry_byte_count < frame_byte_count {
                return;
            }
            push_samples(&self.carry[..frame_byte_count], out);
            self.carry_byte_count = 0;
        }
        let whole_byte_count = bytes.len() - bytes.len() % frame_byte_count;
        push_samples(&bytes[..whole_byte_count], out);
        let rest = &bytes[whole_byte_count..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_byte_count = rest.len();
    }
}

/// Converts whole big-endian samples; `bytes.len()` is even.
fn push_samples(bytes: &[u8], out: &mut Vec<f32>) {
    debug_assert_eq!(bytes.len() % SAMPLE_BYTE_COUNT, 0);
    out.reserve(bytes.len() / SAMPLE_BYTE_COUNT);
    out.extend(
        bytes
            .chunks_exact(SAMPLE_BYTE_COUNT)
            .map(|pair| f32::from(i16::from_be_bytes([pair[0], pair[1]])) * SAMPLE_SCALE),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_format(content_type: &str, expected: Result<PcmFormat, PcmError>) {
        assert_eq!(
            parse_l16_content_type(content_type),
            expected,
            "{content_type}"
        );
    }

    fn format(sample_rate_hz: u32, channel_count: u8) -> Result<PcmFormat, PcmError> {
        Ok(PcmFormat {
            sample_rate_hz,
            channel_count,
        })
    }

    #[test]
    fn content_types_the_data_plane_accepts() {
        check_format("audio/L16;rate=48000;channels=2", format(48_000, 2));
        check_format("audio/L16;rate=48000", format(48_000, 1));
        check_format("AUDIO/l16 ; RATE = 48000 ; Channels=2 ", format(48_000, 2));
        check_format(
            "audio/L16; channels=\"2\"; rate=\"48000\"",
            format(48_000, 2),
        );
        check_format(
            "audio/L16;rate=48000;channels=1;emphasis=50-15",
            format(48_000, 1),
        );
    }

    #[test]
    fn content_types_the_data_plane_refuses_name_the_problem() {
        check_format(
            "audio/ogg",
            Err(PcmError::NotL16 {
                found: "audio/ogg".into(),
            }),
        );
        check_format("audio/L16;channels=2", Err(PcmError::MissingRate));
        check_format(
            "audio/L16;rate=44100;channels=2",
            Err(PcmError::UnsupportedSampleRate {
                sample_rate_hz: 44_100,
            }),
        );
        check_format(
            "audio/L16;rate=48000;channels=6",
            Err(PcmError::UnsupportedChannelCount { channel_count: 6 }),
        );
        for bad in [
            "audio/L16;rate=fast",
            "audio/L16;rate=0",
            "audio/L16;rate=48000;rate=48000",
        ] {
            assert!(
                matches!(
                    parse_l16_content_type(bad),
                    Err(PcmError::InvalidParameter { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_refusal_has_a_sentence_for_the_broadcaster() {
        let error = parse_l16_content_type("audio/L16;rate=44100").unwrap_err();
        let detail = error.detail();
        assert!(
            detail.contains("44100") && detail.contains("48000"),
            "{detail}"
        );
        assert!(detail.ends_with('.'));
    }

    #[test]
    fn samples_are_big_endian_signed_and_scaled_to_unit_range() {
        let mut decoder = L16Decoder::new(2);
        let mut out = Vec::new();
        decoder.decode(&[0x80, 0x00, 0x7f, 0xff, 0x00, 0x00, 0xff, 0xff], &mut out);
        assert_eq!(out, vec![-1.0, 32_767.0 / 32_768.0, 0.0, -1.0 / 32_768.0]);
    }

    #[test]
    fn odd_bytes_and_partial_frames_wait_for_the_next_call() {
        let body: Vec<u8> = (0u16..600)
            .flat_map(|sample| (sample * 97).to_be_bytes())
            .collect();
        let mut whole = Vec::new();
        L16Decoder::new(2).decode(&body, &mut whole);
        for piece_byte_count in [1, 3, 5, 7, 64] {
            let mut decoder = L16Decoder::new(2);
            let mut pieced = Vec::new();
            for piece in body.chunks(piece_byte_count) {
                decoder.decode(piece, &mut pieced);
                assert_eq!(pieced.len() % 2, 0, "only whole stereo frames come out");
            }
            assert_eq!(pieced, whole, "pieces of {piece_byte_count} bytes");
            assert_eq!(decoder.carried_byte_count(), 0);
        }
    }

    #[test]
    fn a_trailing_partial_frame_is_held_not_emitted() {
        let mut decoder = L16Decoder::new(2);
        let mut out = Vec::new();
        decoder.decode(&[0x00, 0x01, 0x00], &mut out);
        assert!(out.is_empty());
        assert_eq!(decoder.carried_byte_count(), 3);
        decoder.decode(&[0x02], &mut out);
        assert_eq!(out, vec![1.0 / 32_768.0, 2.0 / 32_768.0]);
    }
}
