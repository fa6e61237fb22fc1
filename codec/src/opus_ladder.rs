//! The live Opus ladder: one libopus encoder per rendition (by default 64,
//! 96 and 160 kb/s), all fed the same 48 kHz PCM in 20 ms frames.
//!
//! Decisions:
//! - **Constrained VBR**, not CBR. Within one frame the encoder may spend
//!   more bits on a transient and fewer on a quiet passage, which sounds
//!   better at the same average; the constraint keeps every packet near the
//!   target size, so a listener's buffer and the Ogg pages it is sent in
//!   stay as predictable as with CBR, and the average over seconds stays on
//!   the rung. CBR would also make every silence frame full size, while
//!   constrained VBR encodes digital silence in a few bytes.
//! - **20 ms frames** (960 samples per channel): Opus' best quality per bit
//!   for music, and 50 packets a second is few enough for the pager.
//! - **`Application::Audio`**: music, not speech; the lookahead it adds is
//!   reported by [`OpusLadder::pre_skip`] for the OpusHead.
//! - One output buffer of [`PACKET_BYTE_COUNT_MAX`] bytes is reused for every
//!   packet of every rendition; the callback borrows it, so nothing is
//!   allocated per packet.

/// The only sample rate of the ladder: Opus' native rate.
pub const SAMPLE_RATE_HZ: u32 = 48_000;

/// Samples per channel in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLE_COUNT: usize = 960;

/// The largest packet libopus writes: 1275 bytes per frame of up to three
/// frames, rounded up as libopus' own documentation recommends.
pub const PACKET_BYTE_COUNT_MAX: usize = 4_000;

/// The default rungs in kb/s.
pub const DEFAULT_BITRATES_KBPS: [u32; 3] = [64, 96, 160];

/// The most renditions one ladder holds; each costs an encoder's CPU.
pub const RENDITION_COUNT_MAX: usize = 8;

/// The lowest rung libopus supports, in kb/s.
pub const BITRATE_KBPS_MIN: u32 = 6;

/// The highest rung libopus supports, in kb/s.
pub const BITRATE_KBPS_MAX: u32 = 510;

/// Why a ladder could not be built or could not encode.
#[derive(Debug, thiserror::Error)]
pub enum LadderError {
    /// No rungs, or more than [`RENDITION_COUNT_MAX`].
    #[error("an Opus ladder needs 1 to {RENDITION_COUNT_MAX} bitrates, not {rendition_count}")]
    RenditionCount {
        /// The number of rungs asked for.
        rendition_count: usize,
    },
    /// A rung outside libopus' range.
    #[error("Opus bitrate {bitrate_kbps} kb/s is outside {BITRATE_KBPS_MIN}..={BITRATE_KBPS_MAX}")]
    Bitrate {
        /// The rung asked for.
        bitrate_kbps: u32,
    },
    /// Opus in this ladder carries mono or stereo only.
    #[error("an Opus ladder takes 1 or 2 channels, not {channel_count}")]
    ChannelCount {
        /// The channel count asked for.
        channel_count: u8,
    },
    /// libopus refused a call.
    #[error("libopus failed for the {bitrate_kbps} kb/s rendition: {source}")]
    Opus {
        /// The rendition's rung.
        bitrate_kbps: u32,
        /// The libopus error.
        source: opus::Error,
    },
}

/// Receives each packet: the rendition index (into
/// [`OpusLadder::bitrates_kbps`]), the packet, and the samples per channel it
/// carries (always [`FRAME_SAMPLE_COUNT`]).
pub type PacketSink<'a> = dyn FnMut(usize, &[u8], u32) + 'a;

/// libopus encoders at a ladder of bitrates, fed interleaved `f32` PCM.
pub struct OpusLadder {
    encoders: Vec<opus::Encoder>,
    bitrates_kbps: Vec<u32>,
    channel_count: usize,
    pre_skip: u16,
    /// Samples of an unfinished frame, interleaved; never a whole frame
    /// between calls.
    pending: Vec<f32>,
    silence: Vec<f32>,
    packet: Vec<u8>,
}

impl std::fmt::Debug for OpusLadder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OpusLadder")
            .field("bitrates_kbps", &self.bitrates_kbps)
            .field("channel_count", &self.channel_count)
            .field("pre_skip", &self.pre_skip)
            .field("pending_sample_count", &self.pending.len())
            .finish()
    }
}

impl OpusLadder {
    /// One constrained-VBR, 48 kHz, `Application::Audio` encoder per rung.
    pub fn new(bitrates_kbps: &[u32], channel_count: u8) -> Result<Self, LadderError> {
        if bitrates_kbps.is_empty() || bitrates_kbps.len() > RENDITION_COUNT_MAX {
            return Err(LadderError::RenditionCount {
                rendition_count: bitrates_kbps.len(),
            });
        }
        let channels = match channel_count {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            _ => return Err(LadderError::ChannelCount { channel_count }),
        };
        let mut encoders = Vec::with_capacity(bitrates_kbps.len());
        for &bitrate_kbps in bitrates_kbps {
            if !(BITRATE_KBPS_MIN..=BITRATE_KBPS_MAX).contains(&bitrate_kbps) {
                return Err(LadderError::Bitrate { bitrate_kbps });
            }
            let opus_error = |source| LadderError::Opus {
                bitrate_kbps,
                source,
            };
            let mut encoder =
                opus::Encoder::new(SAMPLE_RATE_HZ, channels, opus::Application::Audio)
                    .map_err(opus_error)?;
            encoder
                .set_bitrate(opus::Bitrate::Bits(bitrate_kbps as i32 * 1000))
                .map_err(opus_error)?;
            encoder.set_vbr(true).map_err(opus_error)?;
            encoder.set_vbr_constraint(true).map_err(opus_error)?;
            encoders.push(encoder);
        }
        let lookahead = encoders[0]
            .get_lookahead()
            .map_err(|source| LadderError::Opus {
                bitrate_kbps: bitrates_kbps[0],
                source,
            })?;
        let sample_count = FRAME_SAMPLE_COUNT * usize::from(channel_count);
        Ok(Self {
            encoders,
            bitrates_kbps: bitrates_kbps.to_vec(),
            channel_count: usize::from(channel_count),
            // libopus reports a few hundred samples; OpusHead has 16 bits.
            pre_skip: u16::try_from(lookahead).unwrap_or(u16::MAX),
            pending: Vec::with_capacity(sample_count),
            silence: vec![0.0; sample_count],
            packet: vec![0; PACKET_BYTE_COUNT_MAX],
        })
    }

    /// The rungs in kb/s, in rendition index order.
    pub fn bitrates_kbps(&self) -> &[u32] {
        &self.bitrates_kbps
    }

    /// The interleaved channel count.
    pub fn channel_count(&self) -> u8 {
        self.channel_count as u8
    }

    /// The encoder lookahead in 48 kHz samples (`OPUS_GET_LOOKAHEAD`): the
    /// pre-skip every rendition's OpusHead must carry.
    pub fn pre_skip(&self) -> u16 {
        self.pre_skip
    }

    /// Interleaved samples waiting for the rest of their frame.
    pub fn pending_sample_count(&self) -> usize {
        self.pending.len()
    }

    /// Encodes every whole 20 ms frame of `pending + interleaved` in every
    /// rendition, in frame order and rendition order within a frame, and
    /// keeps the remainder for the next call.
    pub fn push_pcm(
        &mut self,
        interleaved: &[f32],
        on_packet: &mut PacketSink<'_>,
    ) -> Result<(), LadderError> {
        let frame_len = FRAME_SAMPLE_COUNT * self.channel_count;
        let mut input = interleaved;
        if !self.pending.is_empty() {
            let taken = (frame_len - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..taken]);
            input = &input[taken..];
            if self.pending.len() < frame_len {
                return Ok(());
            }
            let frame = std::mem::take(&mut self.pending);
            let result = self.encode_frame(&frame, on_packet);
            self.pending = frame;
            self.pending.clear();
            result?;
        }
        let mut frames = input.chunks_exact(frame_len);
        for frame in frames.by_ref() {
            self.encode_frame(frame, on_packet)?;
        }
        self.pending.extend_from_slice(frames.remainder());
        Ok(())
    }

    /// Encodes one 20 ms frame of digital silence in every rendition, for
    /// the time the source is away; samples waiting in the partial frame
    /// stay where they are.
    pub fn push_silence_frame(
        &mut self,
        on_packet: &mut PacketSink<'_>,
    ) -> Result<(), LadderError> {
        let silence = std::mem::take(&mut self.silence);
        let result = self.encode_frame(&silence, on_packet);
        self.silence = silence;
        result
    }

    fn encode_frame(
        &mut self,
        frame: &[f32],
        on_packet: &mut PacketSink<'_>,
    ) -> Result<(), LadderError> {
        debug_assert_eq!(frame.len(), FRAME_SAMPLE_COUNT * self.channel_count);
        for (rendition_idx, encoder) in self.encoders.iter_mut().enumerate() {
            let packet_len = encoder
                .encode_float(frame, &mut self.packet)
                .map_err(|source| LadderError::Opus {
                    bitrate_kbps: self.bitrates_kbps[rendition_idx],
                    source,
                })?;
            on_packet(
                rendition_idx,
                &self.packet[..packet_len],
                FRAME_SAMPLE_COUNT as u32,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::TAU;

    /// A deterministic xorshift generator, so that failures reproduce.
    struct Noise(u32);

    impl Noise {
        fn next_unit(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            (self.0 as f32 / u32::MAX as f32) * 2.0 - 1.0
        }
    }

    fn stereo_sine(frequency_hz: f32, second_count: f32) -> Vec<f32> {
        let frame_count = (SAMPLE_RATE_HZ as f32 * second_count) as usize;
        (0..frame_count)
            .flat_map(|frame_idx| {
                let value = 0.5 * (TAU * frequency_hz * frame_idx as f32 / 48_000.0).sin();
                [value, value]
            })
            .collect()
    }

    /// Music-like: a few tones with a moving envelope over low-passed noise.
    fn music_like(second_count: usize) -> Vec<f32> {
        let mut noise = Noise(0x1234_5678);
        let mut low_passed = [0.0f32; 2];
        let mut samples = Vec::with_capacity(second_count * 96_000);
        for frame_idx in 0..second_count * 48_000 {
            let time_s = frame_idx as f32 / 48_000.0;
            let envelope = 0.6 + 0.4 * (TAU * 0.5 * time_s).sin();
            let tones = [110.0, 220.0, 330.0, 523.25, 659.25]
                .iter()
                .map(|frequency_hz| (TAU * frequency_hz * time_s).sin())
                .sum::<f32>()
                * 0.06;
            for channel in &mut low_passed {
                *channel += 0.3 * (noise.next_unit() - *channel);
                samples.push(envelope * (tones + 0.3 * *channel));
            }
        }
        samples
    }

    fn encode_all(ladder: &mut OpusLadder, samples: &[f32]) -> Vec<Vec<Vec<u8>>> {
        let mut packets = vec![Vec::new(); ladder.bitrates_kbps().len()];
        ladder
            .push_pcm(samples, &mut |rendition_idx, packet, sample_count| {
                assert_eq!(sample_count, 960);
                packets[rendition_idx].push(packet.to_vec());
            })
            .unwrap();
        packets
    }

    /// Counts upward zero crossings of the left channel.
    fn rising_zero_crossing_count(interleaved: &[f32]) -> usize {
        let left: Vec<f32> = interleaved.iter().step_by(2).copied().collect();
        left.windows(2)
            .filter(|pair| pair[0] < 0.0 && pair[1] >= 0.0)
            .count()
    }

    #[test]
    fn a_440_hz_sine_decodes_back_as_440_hz_in_every_rendition() {
        let mut ladder = OpusLadder::new(&DEFAULT_BITRATES_KBPS, 2).unwrap();
        let packets = encode_all(&mut ladder, &stereo_sine(440.0, 2.0));
        for (rendition_idx, rendition) in packets.iter().enumerate() {
            assert_eq!(rendition.len(), 100, "2 s is 100 frames of 20 ms");
            let mut decoder = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
            let mut decoded = vec![0.0f32; 960 * 2];
            let mut all = Vec::new();
            for packet in rendition {
                let sample_count = decoder.decode_float(packet, &mut decoded, false).unwrap();
                all.extend_from_slice(&decoded[..sample_count * 2]);
            }
            // Skip the first second (pre-skip, encoder settling); one second is left.
            let settled = &all[48_000 * 2..];
            assert_eq!(settled.len(), 48_000 * 2);
            let crossings = rising_zero_crossing_count(settled);
            assert!(
                (438..=442).contains(&crossings),
                "rendition {rendition_idx}: {crossings} Hz"
            );
        }
    }

    #[test]
    fn the_achieved_bitrate_over_ten_seconds_of_music_is_each_rung_within_ten_percent() {
        let mut ladder = OpusLadder::new(&DEFAULT_BITRATES_KBPS, 2).unwrap();
        let packets = encode_all(&mut ladder, &music_like(10));
        for (rendition, bitrate_kbps) in packets.iter().zip(DEFAULT_BITRATES_KBPS) {
            let byte_count: usize = rendition.iter().map(Vec::len).sum();
            let achieved_kbps = byte_count as f64 * 8.0 / 10.0 / 1000.0;
            let error = (achieved_kbps - f64::from(bitrate_kbps)).abs() / f64::from(bitrate_kbps);
            assert!(
                error < 0.10,
                "{bitrate_kbps} kb/s rung achieved {achieved_kbps:.1} kb/s"
            );
        }
    }

    #[test]
    fn silence_frames_are_tiny_packets_in_every_rendition() {
        let mut ladder = OpusLadder::new(&DEFAULT_BITRATES_KBPS, 2).unwrap();
        let mut sizes = Vec::new();
        for _ in 0..10 {
            ladder
                .push_silence_frame(&mut |rendition_idx, packet, sample_count| {
                    assert_eq!(sample_count, 960);
                    sizes.push((rendition_idx, packet.len()));
                })
                .unwrap();
        }
        assert_eq!(sizes.len(), 30, "one packet per rendition per frame");
        for (rendition_idx, packet_len) in &sizes[3..] {
            assert!(
                *packet_len <= 16,
                "rendition {rendition_idx}: {packet_len} bytes"
            );
        }
    }

    #[test]
    fn partial_frames_are_buffered_and_pieces_encode_like_the_whole() {
        let samples = music_like(1);
        let mut whole_ladder = OpusLadder::new(&[64], 2).unwrap();
        let whole = encode_all(&mut whole_ladder, &samples);
        let mut pieced_ladder = OpusLadder::new(&[64], 2).unwrap();
        let mut pieced = vec![Vec::new()];
        for piece in samples.chunks(333) {
            pieced_ladder
                .push_pcm(piece, &mut |rendition_idx, packet, _| {
                    pieced[rendition_idx].push(packet.to_vec())
                })
                .unwrap();
        }
        assert_eq!(pieced, whole);
        assert_eq!(pieced_ladder.pending_sample_count(), 0);
    }

    #[test]
    fn pre_skip_is_the_encoder_lookahead() {
        let ladder = OpusLadder::new(&DEFAULT_BITRATES_KBPS, 2).unwrap();
        // 2.5 ms of CELT lookahead plus 4 ms of delay compensation at 48 kHz.
        assert_eq!(ladder.pre_skip(), 312);
    }

    #[test]
    fn ladders_libopus_cannot_encode_are_refused() {
        assert!(matches!(
            OpusLadder::new(&[], 2),
            Err(LadderError::RenditionCount { .. })
        ));
        assert!(matches!(
            OpusLadder::new(&[1000], 2),
            Err(LadderError::Bitrate { bitrate_kbps: 1000 })
        ));
        assert!(matches!(
            OpusLadder::new(&[64], 3),
            Err(LadderError::ChannelCount { channel_count: 3 })
        ));
    }
}
