//! The live stream's DSP chain, run on the owner shard between PCM decoding
//! and the Opus ladder: input gain → three-band EQ → compressor → loudness
//! target → true-peak limiter.
//!
//! Codemap:
//! - `config`: [`DspConfig`] and its parts, ranges, [`DspConfigError`].
//! - `equaliser`: input gain and the RBJ cookbook biquads.
//! - `compressor`: feed-forward, stereo-linked, peak or RMS detector.
//! - `loudness`: the slow gain towards a LUFS target (`ebur128` meter).
//! - `limiter`: 4x-oversampled true-peak estimation, lookahead gain.
//!
//! Two paths run the same maths: [`DspChain::process`] uses `wide` SIMD
//! where it pays (the true-peak interpolator's phases, the EQ's channels as
//! lanes, the compressor's log/exp gain computer, gain application) and
//! [`DspChain::process_scalar`] is the plain reference. The tests run one
//! signal through both and expect the same answer to 1e-4.
//!
//! Architecture Invariant: the output depends only on the samples, never on
//! how the caller splits them. Every stage is a per-frame state machine;
//! the only periodic event (the loudness gain update) falls on a fixed
//! frame grid, and the chain cuts its internal chunks at that grid.
//!
//! Architecture Invariant: no allocation after [`DspChain::new`]; each stage
//! owns scratch for [`CHUNK_FRAME_COUNT`] frames and the chain walks the
//! caller's buffer in chunks of at most that.
//!
//! Written by hand rather than taken from a crate because no maintained Rust
//! crate offers a true-peak lookahead limiter, and the chain has to fit a
//! per-stream CPU budget on a shared shard (see `bench/benches/live_chain.rs`).

mod compressor;
mod config;
mod equaliser;
mod limiter;
mod loudness;

use wide::f32x4;

pub use config::{
    CompressorConfig, CompressorDetector, DspConfig, DspConfigError, EqConfig, LimiterConfig,
};
pub use limiter::{OVERSAMPLING_FACTOR, TAP_COUNT_PER_PHASE};
pub use loudness::{GAIN_RANGE_DB, GATE_LUFS, TIME_CONSTANT_S, UPDATE_INTERVAL_MS};

use compressor::Compressor;
use equaliser::Equaliser;
use limiter::Limiter;
use loudness::LoudnessTarget;

/// The most frames one internal pass processes; each stage's scratch holds
/// this many (256 frames: 5.3 ms at 48 kHz, a few kilobytes, cache-resident).
pub const CHUNK_FRAME_COUNT: usize = 256;

/// Magnitudes below this (about -500 dBFS) are treated as zero: they are
/// inaudible, and letting them decay into denormals slows x86 a hundredfold.
pub(crate) const TINY_SAMPLE: f32 = 1e-25;

/// Which implementation a stage runs; both compute the same maths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    Scalar,
    Vectorised,
}

pub(crate) fn decibels_to_amplitude(gain_db: f32) -> f32 {
    10f32.powf(gain_db / 20.0)
}

/// The per-sample coefficient of a one-pole smoother whose step response
/// reaches 1 - 1/e after `time_ms`.
pub(crate) fn one_pole_coefficient(time_ms: f32, sample_rate_hz: u32) -> f32 {
    (-1000.0 / (time_ms * sample_rate_hz as f32)).exp()
}

/// Multiplies every sample of each frame by that frame's gain.
pub(crate) fn apply_frame_gains(
    chunk: &mut [f32],
    gains: &[f32],
    channel_count: usize,
    path: Path,
) {
    debug_assert_eq!(chunk.len(), gains.len() * channel_count);
    match (path, channel_count) {
        (Path::Vectorised, 2) => {
            // Two stereo frames per f32x4: L0 R0 L1 R1 times g0 g0 g1 g1.
            let mut quads = chunk.chunks_exact_mut(4);
            let mut gain_pairs = gains.chunks_exact(2);
            for (quad, pair) in quads.by_ref().zip(gain_pairs.by_ref()) {
                let samples = f32x4::from([quad[0], quad[1], quad[2], quad[3]]);
                let frame_gains = f32x4::from([pair[0], pair[0], pair[1], pair[1]]);
                quad.copy_from_slice(&(samples * frame_gains).to_array());
            }
            apply_frame_gains(
                quads.into_remainder(),
                gain_pairs.remainder(),
                2,
                Path::Scalar,
            );
        }
        (Path::Vectorised, 1) => {
            let mut quads = chunk.chunks_exact_mut(4);
            let mut gain_quads = gains.chunks_exact(4);
            for (quad, gain_quad) in quads.by_ref().zip(gain_quads.by_ref()) {
                let samples = f32x4::from([quad[0], quad[1], quad[2], quad[3]]);
                let frame_gains =
                    f32x4::from([gain_quad[0], gain_quad[1], gain_quad[2], gain_quad[3]]);
                quad.copy_from_slice(&(samples * frame_gains).to_array());
            }
            apply_frame_gains(
                quads.into_remainder(),
                gain_quads.remainder(),
                1,
                Path::Scalar,
            );
        }
        _ => {
            for (frame, gain) in chunk.chunks_exact_mut(channel_count).zip(gains) {
                for sample in frame {
                    *sample *= gain;
                }
            }
        }
    }
}

/// One live stream's DSP chain.
#[derive(Debug)]
pub struct DspChain {
    channel_count: usize,
    sample_rate_hz: u32,
    equaliser: Equaliser,
    compressor: Option<Compressor>,
    loudness: Option<LoudnessTarget>,
    limiter: Option<Limiter>,
}

impl DspChain {
    /// Builds the chain for a stream; refuses a configuration out of range,
    /// an EQ frequency at or above Nyquist, a rate outside 8–192 kHz and
    /// anything but mono or stereo.
    pub fn new(
        config: &DspConfig,
        sample_rate_hz: u32,
        channel_count: u8,
    ) -> Result<Self, DspConfigError> {
        config.validate_for_sample_rate(sample_rate_hz)?;
        if !(1..=2).contains(&channel_count) {
            return Err(DspConfigError::ChannelCount { channel_count });
        }
        let channels = usize::from(channel_count);
        let loudness = match config.loudness_target_lufs {
            Some(target_lufs) => Some(
                LoudnessTarget::new(target_lufs, sample_rate_hz, channels, CHUNK_FRAME_COUNT)
                    .ok_or(DspConfigError::SampleRate { sample_rate_hz })?,
            ),
            None => None,
        };
        Ok(Self {
            channel_count: channels,
            sample_rate_hz,
            equaliser: Equaliser::new(config, sample_rate_hz, channels),
            compressor: config
                .compressor
                .as_ref()
                .map(|compressor| Compressor::new(compressor, sample_rate_hz, channels)),
            loudness,
            limiter: config
                .limiter
                .enabled
                .then(|| Limiter::new(&config.limiter, sample_rate_hz, channels)),
        })
    }

    /// The interleaved channel count.
    pub fn channel_count(&self) -> u8 {
        self.channel_count as u8
    }

    /// The sample rate the chain was built for.
    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    /// Samples per channel between a sample going in and coming out: the
    /// limiter's lookahead delay, 0 when it is off. The first
    /// `latency_samples()` frames out are silence.
    pub fn latency_samples(&self) -> usize {
        self.limiter
            .as_ref()
            .map_or(0, Limiter::latency_frame_count)
    }

    /// Runs the chain in place over interleaved samples, vectorised.
    ///
    /// # Panics
    /// When `interleaved.len()` is not a multiple of the channel count.
    pub fn process(&mut self, interleaved: &mut [f32]) {
        self.run(interleaved, Path::Vectorised);
    }

    /// The scalar reference for [`DspChain::process`]: the same maths one
    /// sample at a time, for tests and for checking a new SIMD path.
    ///
    /// # Panics
    /// When `interleaved.len()` is not a multiple of the channel count.
    pub fn process_scalar(&mut self, interleaved: &mut [f32]) {
        self.run(interleaved, Path::Scalar);
    }

    fn run(&mut self, interleaved: &mut [f32], path: Path) {
        assert_eq!(
            interleaved.len() % self.channel_count,
            0,
            "DspChain takes whole frames of {} channels",
            self.channel_count
        );
        let mut remaining = interleaved;
        while !remaining.is_empty() {
            let frames_until_update = self
                .loudness
                .as_ref()
                .map_or(usize::MAX, LoudnessTarget::frames_until_update);
            let frame_count = (remaining.len() / self.channel_count)
                .min(CHUNK_FRAME_COUNT)
                .min(frames_until_update);
            let (chunk, rest) = remaining.split_at_mut(frame_count * self.channel_count);
            self.process_chunk(chunk, path);
            remaining = rest;
        }
    }

    fn process_chunk(&mut self, chunk: &mut [f32], path: Path) {
        match path {
            Path::Scalar => self.equaliser.process_scalar(chunk),
            Path::Vectorised => self.equaliser.process_vectorised(chunk),
        }
        if let Some(compressor) = &mut self.compressor {
            compressor.process(chunk, path);
        }
        if let Some(loudness) = &mut self.loudness {
            loudness.process(chunk, path);
        }
        if let Some(limiter) = &mut self.limiter {
            limiter.process(chunk, path);
        }
    }
}
