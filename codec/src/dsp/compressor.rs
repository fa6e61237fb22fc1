//! A feed-forward, stereo-linked, hard-knee compressor.
//!
//! The detector (the peak across channels, or the root of their mean square
//! averaged over 20 ms) feeds a one-pole envelope with separate attack and release
//! coefficients; its recursion runs frame by frame in both paths. The gain
//! computer (a log, a knee, an exp per frame) is where the time goes, so the
//! vectorised path runs it four frames at a time with `wide`'s `log10` and
//! `exp` over the chunk's envelope.

use wide::f32x4;

use super::config::{CompressorConfig, CompressorDetector};
use super::{apply_frame_gains, one_pole_coefficient, Path, CHUNK_FRAME_COUNT, TINY_SAMPLE};

/// The RMS detector averages the mean square over about this long before
/// attack and release act on its square root: long enough to smooth a
/// 50 Hz bass note's ripple, short next to a typical attack.
const RMS_WINDOW_MS: f32 = 20.0;

/// dB per decade of amplitude.
const DECIBELS_PER_DECADE: f32 = 20.0;

/// The level the gain computer treats as silence; keeps `log10` finite.
const LEVEL_FLOOR: f32 = 1e-10;

#[derive(Clone, Debug)]
pub(crate) struct Compressor {
    channel_count: usize,
    detector: CompressorDetector,
    threshold_db: f32,
    /// Output dB removed per input dB over the threshold: 1 - 1/ratio.
    slope: f32,
    makeup_db: f32,
    attack_coefficient: f32,
    release_coefficient: f32,
    /// The RMS detector's mean-square smoother coefficient.
    rms_coefficient: f32,
    /// The RMS detector's running mean square.
    mean_square: f32,
    /// The amplitude envelope (peak, or RMS), after attack and release.
    envelope: f32,
    /// One envelope value, then one gain, per frame of the current chunk.
    frame_values: Vec<f32>,
}

impl Compressor {
    pub(crate) fn new(
        config: &CompressorConfig,
        sample_rate_hz: u32,
        channel_count: usize,
    ) -> Self {
        Self {
            channel_count,
            detector: config.detector,
            threshold_db: config.threshold_db,
            slope: 1.0 - 1.0 / config.ratio,
            makeup_db: config.makeup_db,
            attack_coefficient: one_pole_coefficient(config.attack_ms, sample_rate_hz),
            release_coefficient: one_pole_coefficient(config.release_ms, sample_rate_hz),
            rms_coefficient: one_pole_coefficient(RMS_WINDOW_MS, sample_rate_hz),
            mean_square: 0.0,
            envelope: 0.0,
            frame_values: vec![0.0; CHUNK_FRAME_COUNT],
        }
    }

    pub(crate) fn process(&mut self, chunk: &mut [f32], path: Path) {
        let frame_count = chunk.len() / self.channel_count;
        self.detect(chunk);
        match path {
            Path::Scalar => self.gains_scalar(frame_count),
            Path::Vectorised => self.gains_vectorised(frame_count),
        }
        apply_frame_gains(
            chunk,
            &self.frame_values[..frame_count],
            self.channel_count,
            path,
        );
    }

    /// Fills `frame_values` with the amplitude envelope after each frame.
    fn detect(&mut self, chunk: &[f32]) {
        let mut envelope = self.envelope;
        let mut mean_square = self.mean_square;
        let frames = chunk.chunks_exact(self.channel_count);
        for (frame, value) in frames.zip(self.frame_values.iter_mut()) {
            let level = match self.detector {
                CompressorDetector::Peak => frame
                    .iter()
                    .fold(0.0f32, |peak, sample| peak.max(sample.abs())),
                CompressorDetector::Rms => {
                    let frame_mean_square = frame.iter().map(|sample| sample * sample).sum::<f32>()
                        / frame.len() as f32;
                    mean_square = frame_mean_square
                        + self.rms_coefficient * (mean_square - frame_mean_square);
                    mean_square.sqrt()
                }
            };
            let coefficient = if level > envelope {
                self.attack_coefficient
            } else {
                self.release_coefficient
            };
            envelope = level + coefficient * (envelope - level);
            *value = envelope;
        }
        // The envelope of silence decays towards denormals; stop it there.
        self.envelope = if envelope < TINY_SAMPLE {
            0.0
        } else {
            envelope
        };
        self.mean_square = if mean_square < TINY_SAMPLE {
            0.0
        } else {
            mean_square
        };
    }

    fn gains_scalar(&mut self, frame_count: usize) {
        let decibels_per_decade = DECIBELS_PER_DECADE;
        for value in &mut self.frame_values[..frame_count] {
            let level_db = value.max(LEVEL_FLOOR).log10() * decibels_per_decade;
            let over_db = (level_db - self.threshold_db).max(0.0);
            let gain_db = self.makeup_db - over_db * self.slope;
            *value = (gain_db * DECIBELS_TO_NATURAL).exp();
        }
    }

    fn gains_vectorised(&mut self, frame_count: usize) {
        let decibels_per_decade = f32x4::splat(DECIBELS_PER_DECADE);
        let floor = f32x4::splat(LEVEL_FLOOR);
        let threshold_db = f32x4::splat(self.threshold_db);
        let makeup_db = f32x4::splat(self.makeup_db);
        let slope = f32x4::splat(self.slope);
        let to_natural = f32x4::splat(DECIBELS_TO_NATURAL);
        let gains = |envelope: f32x4| {
            let level_db = envelope.max(floor).log10() * decibels_per_decade;
            let over_db = (level_db - threshold_db).max(f32x4::ZERO);
            (makeup_db - over_db * slope) * to_natural
        };
        // The last partial quad is padded; the padding lanes are discarded.
        for quad in self.frame_values[..frame_count].chunks_mut(4) {
            let mut lanes = [LEVEL_FLOOR; 4];
            lanes[..quad.len()].copy_from_slice(quad);
            let exponents = gains(f32x4::from(lanes)).exp().to_array();
            let quad_len = quad.len();
            quad.copy_from_slice(&exponents[..quad_len]);
        }
    }
}

/// ln(10) / 20: dB to the natural exponent of an amplitude ratio.
const DECIBELS_TO_NATURAL: f32 = std::f32::consts::LN_10 / 20.0;
