//! The input as the pipeline sees it: interleaved stereo at 48 kHz, block
//! by block, within the duration bound.
//!
//! Policies enforced here:
//! - **Duration**: a container claiming more than `duration_max_seconds`
//!   is refused at open; decoding stops with [`MediaError::TooLong`] as soon
//!   as the decoded frames pass the bound.
//! - **Truncation**: no audio at all is [`MediaError::Truncated`]. Audio
//!   that stops early (a decoding error, or fewer frames than the container
//!   claimed) is kept when there is at least
//!   [`TRUNCATED_AUDIO_MS_MIN`](super::TRUNCATED_AUDIO_MS_MIN) of it, and
//!   refused as [`MediaError::Truncated`] otherwise. A file that ends
//!   cleanly is kept however short.

use std::path::Path;

use rubato::{FftFixedInOut, Resampler};

use super::decode::Decoder;
use super::{MediaError, OUTPUT_SAMPLE_RATE_HZ, TRUNCATED_AUDIO_MS_MIN};

/// Input frames per resampler chunk (rounded by rubato to fit the ratio).
const RESAMPLER_CHUNK_FRAMES: usize = 1_024;

/// Stereo, 48 kHz blocks of one input file.
pub(super) struct PcmReader {
    decoder: Decoder,
    resampler: Option<StereoResampler>,
    sample_rate_hz: u32,
    claimed_frame_count: Option<u64>,
    frame_count_max: u64,
    duration_max_seconds: u64,
    /// Source frames decoded so far.
    frame_count: u64,
    decoded: Vec<f32>,
    is_finished: bool,
}

impl PcmReader {
    pub fn open(path: &Path, duration_max_seconds: u64) -> Result<Self, MediaError> {
        let decoder = Decoder::open(path)?;
        let info = decoder.info();
        let sample_rate_hz = u64::from(info.sample_rate_hz);
        if let Some(claimed) = info.claimed_frame_count {
            let seconds = claimed / sample_rate_hz;
            if seconds > duration_max_seconds {
                return Err(MediaError::TooLong {
                    seconds,
                    max_seconds: duration_max_seconds,
                });
            }
        }
        let resampler = (info.sample_rate_hz != OUTPUT_SAMPLE_RATE_HZ)
            .then(|| StereoResampler::new(info.sample_rate_hz))
            .transpose()?;
        Ok(Self {
            decoder,
            resampler,
            sample_rate_hz: info.sample_rate_hz,
            claimed_frame_count: info.claimed_frame_count,
            frame_count_max: duration_max_seconds * sample_rate_hz,
            duration_max_seconds,
            frame_count: 0,
            decoded: Vec::new(),
            is_finished: false,
        })
    }

    /// Replaces `out` with the next block (interleaved stereo, 48 kHz,
    /// possibly empty); `Ok(false)` once everything has been read.
    pub fn read(&mut self, out: &mut Vec<f32>) -> Result<bool, MediaError> {
        out.clear();
        if self.is_finished {
            return Ok(false);
        }
        if self.decoder.next_block(&mut self.decoded)? {
            self.frame_count += (self.decoded.len() / 2) as u64;
            if self.frame_count > self.frame_count_max {
                return Err(MediaError::TooLong {
                    seconds: self.frame_count / u64::from(self.sample_rate_hz),
                    max_seconds: self.duration_max_seconds,
                });
            }
            match &mut self.resampler {
                Some(resampler) => resampler.push(&self.decoded, out)?,
                None => std::mem::swap(out, &mut self.decoded),
            }
            return Ok(true);
        }
        self.is_finished = true;
        self.check_truncation()?;
        if let Some(resampler) = &mut self.resampler {
            resampler.finish(self.frame_count, out)?;
            return Ok(!out.is_empty());
        }
        Ok(false)
    }

    /// How far through the file reading is, 0 to 1.
    pub fn progress(&self) -> f32 {
        self.decoder.progress()
    }

    fn check_truncation(&self) -> Result<(), MediaError> {
        if self.frame_count == 0 {
            return Err(MediaError::Truncated);
        }
        let ended_short = self
            .claimed_frame_count
            .is_some_and(|claimed| self.frame_count < claimed);
        if self.decoder.damage().is_some() || ended_short {
            let decoded_ms = self.frame_count * 1000 / u64::from(self.sample_rate_hz);
            if decoded_ms < TRUNCATED_AUDIO_MS_MIN {
                return Err(MediaError::Truncated);
            }
            tracing::warn!(
                decoded_ms,
                claimed_frame_count = self.claimed_frame_count,
                damage = self.decoder.damage(),
                "input breaks off early; keeping the audio decoded so far"
            );
        }
        Ok(())
    }
}

/// Stereo resampling to 48 kHz, aligned: the resampler's delay is dropped
/// at the start and flushed at the end, so `n` input frames give exactly
/// `round(n × 48000 / rate)` output frames.
struct StereoResampler {
    resampler: FftFixedInOut<f32>,
    sample_rate_hz: u32,
    /// Planar input waiting for a whole chunk.
    input: [Vec<f32>; 2],
    output: [Vec<f32>; 2],
    delay_frames_remaining: usize,
    frames_out: u64,
}

impl StereoResampler {
    fn new(sample_rate_hz: u32) -> Result<Self, MediaError> {
        let resampler = FftFixedInOut::new(
            sample_rate_hz as usize,
            OUTPUT_SAMPLE_RATE_HZ as usize,
            RESAMPLER_CHUNK_FRAMES,
            2,
        )
        .map_err(|error| MediaError::Encode(format!("resampler: {error}")))?;
        let chunk_out = resampler.output_frames_max();
        let chunk_in = resampler.input_frames_max();
        Ok(Self {
            delay_frames_remaining: resampler.output_delay(),
            resampler,
            sample_rate_hz,
            input: [
                Vec::with_capacity(2 * chunk_in),
                Vec::with_capacity(2 * chunk_in),
            ],
            output: [vec![0.0; chunk_out], vec![0.0; chunk_out]],
            frames_out: 0,
        })
    }

    /// Appends `interleaved` and resamples every whole chunk into `out`.
    fn push(&mut self, interleaved: &[f32], out: &mut Vec<f32>) -> Result<(), MediaError> {
        for frame in interleaved.chunks_exact(2) {
            self.input[0].push(frame[0]);
            self.input[1].push(frame[1]);
        }
        let chunk_in = self.resampler.input_frames_next();
        let mut consumed = 0;
        while self.input[0].len() - consumed >= chunk_in {
            let chunk = [
                &self.input[0][consumed..consumed + chunk_in],
                &self.input[1][consumed..consumed + chunk_in],
            ];
            let (_, frames) = self
                .resampler
                .process_into_buffer(&chunk, &mut self.output, None)
                .map_err(|error| MediaError::Encode(format!("resampler: {error}")))?;
            consumed += chunk_in;
            self.emit(frames, u64::MAX, out);
        }
        self.input[0].drain(..consumed);
        self.input[1].drain(..consumed);
        Ok(())
    }

    /// Resamples what is left, then zeros until every input frame is out.
    fn finish(&mut self, frames_in: u64, out: &mut Vec<f32>) -> Result<(), MediaError> {
        let rate = u64::from(self.sample_rate_hz);
        let frames_expected = (frames_in * u64::from(OUTPUT_SAMPLE_RATE_HZ) + rate / 2) / rate;
        // An input that filled its last chunk exactly leaves nothing: the
        // flush then goes on zeros (`None`), since rubato refuses empty
        // channel slices.
        let mut remainder = (!self.input[0].is_empty()).then(|| {
            [
                std::mem::take(&mut self.input[0]),
                std::mem::take(&mut self.input[1]),
            ]
        });
        while self.frames_out < frames_expected {
            let (_, frames) = self
                .resampler
                .process_partial_into_buffer(
                    remainder.take().as_ref().map(|input| &input[..]),
                    &mut self.output,
                    None,
                )
                .map_err(|error| MediaError::Encode(format!("resampler: {error}")))?;
            self.emit(frames, frames_expected, out);
        }
        Ok(())
    }

    /// Interleaves `frames` of the output buffers into `out`, past the
    /// delay and up to `frames_limit` in total.
    fn emit(&mut self, frames: usize, frames_limit: u64, out: &mut Vec<f32>) {
        let skipped = self.delay_frames_remaining.min(frames);
        self.delay_frames_remaining -= skipped;
        let available = (frames - skipped) as u64;
        let kept = available.min(frames_limit.saturating_sub(self.frames_out)) as usize;
        let [left, right] = &self.output;
        for (left, right) in left[skipped..skipped + kept]
            .iter()
            .zip(&right[skipped..skipped + kept])
        {
            out.push(*left);
            out.push(*right);
        }
        self.frames_out += kept as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resamples `frames_in` frames of a 44.1 kHz tone pushed in uneven
    /// pieces; returns the output frames.
    fn resampled_frames(frames_in: usize) -> usize {
        let mut resampler = StereoResampler::new(44_100).unwrap();
        let input: Vec<f32> = (0..frames_in * 2)
            .map(|index| ((index / 2) as f32 * 0.05).sin() * 0.5)
            .collect();
        let mut out = Vec::new();
        for piece in input.chunks(2 * 777) {
            resampler.push(piece, &mut out).unwrap();
        }
        resampler.finish(frames_in as u64, &mut out).unwrap();
        assert!(out.iter().all(|sample| sample.is_finite()));
        out.len() / 2
    }

    #[test]
    fn inputs_that_fill_their_last_chunk_exactly_are_resampled_to_the_end() {
        let chunk_in = StereoResampler::new(44_100)
            .unwrap()
            .resampler
            .input_frames_next();
        for frames_in in [chunk_in * 300, chunk_in * 3, chunk_in * 3 + 1, 44_100 * 7] {
            let expected = (frames_in as u64 * 48_000 + 22_050) / 44_100;
            assert_eq!(
                resampled_frames(frames_in) as u64,
                expected,
                "{frames_in} input frames"
            );
        }
    }
}
