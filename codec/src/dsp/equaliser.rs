//! Input gain and the three-band EQ: RBJ audio-EQ-cookbook biquads in
//! transposed direct form II.
//!
//! The vectorised path carries the channels of one frame as lanes of an
//! `f32x4` (L, R, 0, 0), so every biquad runs once per frame for both
//! channels; a biquad's recursion forbids running consecutive samples side
//! by side, so the channels are what goes across.

use std::f64::consts::PI;

use wide::{f32x4, CmpGe, CmpLe};

use super::config::DspConfig;
use super::{decibels_to_amplitude, TINY_SAMPLE};

/// Normalised biquad coefficients (a0 divided out).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BiquadCoefficients {
    b0: f32,
    b1: f32,
    b2: f32,
    a1: f32,
    a2: f32,
}

/// The shelf slope S = 1 of the cookbook: the steepest shelf without a bump.
const SHELF_Q: f64 = std::f64::consts::FRAC_1_SQRT_2;

impl BiquadCoefficients {
    fn normalised(b: [f64; 3], a: [f64; 3]) -> Self {
        Self {
            b0: (b[0] / a[0]) as f32,
            b1: (b[1] / a[0]) as f32,
            b2: (b[2] / a[0]) as f32,
            a1: (a[1] / a[0]) as f32,
            a2: (a[2] / a[0]) as f32,
        }
    }

    /// Cookbook terms: A, cos w0 and alpha, designed in f64 so that low
    /// corners at high rates keep their precision.
    fn terms(frequency_hz: f32, q: f64, gain_db: f32, sample_rate_hz: u32) -> (f64, f64, f64) {
        let amplitude = 10f64.powf(f64::from(gain_db) / 40.0);
        let omega = 2.0 * PI * f64::from(frequency_hz) / f64::from(sample_rate_hz);
        (amplitude, omega.cos(), omega.sin() / (2.0 * q))
    }

    pub(crate) fn peaking(frequency_hz: f32, q: f32, gain_db: f32, sample_rate_hz: u32) -> Self {
        let (a, cos, alpha) = Self::terms(frequency_hz, f64::from(q), gain_db, sample_rate_hz);
        Self::normalised(
            [1.0 + alpha * a, -2.0 * cos, 1.0 - alpha * a],
            [1.0 + alpha / a, -2.0 * cos, 1.0 - alpha / a],
        )
    }

    pub(crate) fn low_shelf(frequency_hz: f32, gain_db: f32, sample_rate_hz: u32) -> Self {
        let (a, cos, alpha) = Self::terms(frequency_hz, SHELF_Q, gain_db, sample_rate_hz);
        let root = 2.0 * a.sqrt() * alpha;
        Self::normalised(
            [
                a * ((a + 1.0) - (a - 1.0) * cos + root),
                2.0 * a * ((a - 1.0) - (a + 1.0) * cos),
                a * ((a + 1.0) - (a - 1.0) * cos - root),
            ],
            [
                (a + 1.0) + (a - 1.0) * cos + root,
                -2.0 * ((a - 1.0) + (a + 1.0) * cos),
                (a + 1.0) + (a - 1.0) * cos - root,
            ],
        )
    }

    pub(crate) fn high_shelf(frequency_hz: f32, gain_db: f32, sample_rate_hz: u32) -> Self {
        let (a, cos, alpha) = Self::terms(frequency_hz, SHELF_Q, gain_db, sample_rate_hz);
        let root = 2.0 * a.sqrt() * alpha;
        Self::normalised(
            [
                a * ((a + 1.0) + (a - 1.0) * cos + root),
                -2.0 * a * ((a - 1.0) + (a + 1.0) * cos),
                a * ((a + 1.0) + (a - 1.0) * cos - root),
            ],
            [
                (a + 1.0) - (a - 1.0) * cos + root,
                2.0 * ((a - 1.0) - (a + 1.0) * cos),
                (a + 1.0) - (a - 1.0) * cos - root,
            ],
        )
    }
}

/// One biquad with its state for up to four channels; the scalar path uses
/// the first `channel_count` entries, the vectorised path all four lanes.
#[derive(Clone, Debug)]
struct Biquad {
    coefficients: BiquadCoefficients,
    state_1: [f32; 4],
    state_2: [f32; 4],
}

/// A biquad as the vectorised path holds it: coefficients splatted across
/// the lanes, one channel's state per lane.
#[derive(Clone, Copy)]
struct LaneBiquad {
    b0: f32x4,
    b1: f32x4,
    b2: f32x4,
    a1: f32x4,
    a2: f32x4,
    state_1: f32x4,
    state_2: f32x4,
}

impl LaneBiquad {
    const IDLE: Self = Self {
        b0: f32x4::ZERO,
        b1: f32x4::ZERO,
        b2: f32x4::ZERO,
        a1: f32x4::ZERO,
        a2: f32x4::ZERO,
        state_1: f32x4::ZERO,
        state_2: f32x4::ZERO,
    };

    fn load(biquad: &Biquad) -> Self {
        let c = biquad.coefficients;
        Self {
            b0: f32x4::splat(c.b0),
            b1: f32x4::splat(c.b1),
            b2: f32x4::splat(c.b2),
            a1: f32x4::splat(c.a1),
            a2: f32x4::splat(c.a2),
            state_1: f32x4::from(biquad.state_1),
            state_2: f32x4::from(biquad.state_2),
        }
    }
}

/// Input gain, then the EQ bands whose gain is not 0 dB.
#[derive(Clone, Debug)]
pub(crate) struct Equaliser {
    channel_count: usize,
    input_gain: f32,
    biquads: Vec<Biquad>,
}

impl Equaliser {
    pub(crate) fn new(config: &DspConfig, sample_rate_hz: u32, channel_count: usize) -> Self {
        let eq = &config.eq;
        let bands = [
            (
                eq.low_shelf_gain_db,
                BiquadCoefficients::low_shelf(
                    eq.low_shelf_frequency_hz,
                    eq.low_shelf_gain_db,
                    sample_rate_hz,
                ),
            ),
            (
                eq.mid_gain_db,
                BiquadCoefficients::peaking(
                    eq.mid_frequency_hz,
                    eq.mid_q,
                    eq.mid_gain_db,
                    sample_rate_hz,
                ),
            ),
            (
                eq.high_shelf_gain_db,
                BiquadCoefficients::high_shelf(
                    eq.high_shelf_frequency_hz,
                    eq.high_shelf_gain_db,
                    sample_rate_hz,
                ),
            ),
        ];
        let biquads = bands
            .into_iter()
            .filter(|(gain_db, _)| *gain_db != 0.0)
            .map(|(_, coefficients)| Biquad {
                coefficients,
                state_1: [0.0; 4],
                state_2: [0.0; 4],
            })
            .collect();
        Self {
            channel_count,
            input_gain: decibels_to_amplitude(config.gain_db),
            biquads,
        }
    }

    /// Silences NaN, infinities and samples below [`TINY_SAMPLE`] (which
    /// would drag the filters into denormals), then applies the gain.
    fn sanitised(&self, sample: f32) -> f32 {
        if (TINY_SAMPLE..=f32::MAX).contains(&sample.abs()) {
            sample * self.input_gain
        } else {
            0.0
        }
    }

    pub(crate) fn process_scalar(&mut self, chunk: &mut [f32]) {
        for frame in chunk.chunks_exact_mut(self.channel_count) {
            for (channel_idx, sample) in frame.iter_mut().enumerate() {
                let mut value = self.sanitised(*sample);
                for biquad in &mut self.biquads {
                    let c = biquad.coefficients;
                    let output = c.b0 * value + biquad.state_1[channel_idx];
                    biquad.state_1[channel_idx] =
                        c.b1 * value - c.a1 * output + biquad.state_2[channel_idx];
                    biquad.state_2[channel_idx] = c.b2 * value - c.a2 * output;
                    value = output;
                }
                *sample = value;
            }
        }
        self.flush_denormal_states();
    }

    pub(crate) fn process_vectorised(&mut self, chunk: &mut [f32]) {
        let tiny = f32x4::splat(TINY_SAMPLE);
        let largest = f32x4::splat(f32::MAX);
        let input_gain = f32x4::splat(self.input_gain);
        // Coefficients splatted and states held in registers for the whole
        // chunk; at most three bands are ever active.
        let mut lanes = [LaneBiquad::IDLE; 3];
        let active = &mut lanes[..self.biquads.len()];
        for (lane, biquad) in active.iter_mut().zip(&self.biquads) {
            *lane = LaneBiquad::load(biquad);
        }
        for frame in chunk.chunks_exact_mut(self.channel_count) {
            let mut samples = [0.0f32; 4];
            samples[..frame.len()].copy_from_slice(frame);
            let input = f32x4::from(samples);
            let magnitude = input.abs();
            let keep = magnitude.cmp_ge(tiny) & magnitude.cmp_le(largest);
            let mut value = keep.blend(input * input_gain, f32x4::ZERO);
            for lane in active.iter_mut() {
                let output = lane.b0 * value + lane.state_1;
                lane.state_1 = lane.b1 * value - lane.a1 * output + lane.state_2;
                lane.state_2 = lane.b2 * value - lane.a2 * output;
                value = output;
            }
            frame.copy_from_slice(&value.to_array()[..frame.len()]);
        }
        for (lane, biquad) in active.iter().zip(&mut self.biquads) {
            biquad.state_1 = lane.state_1.to_array();
            biquad.state_2 = lane.state_2.to_array();
        }
        self.flush_denormal_states();
    }

    /// A decaying filter's state creeps into denormals, which cost x86 a
    /// hundred cycles each; once per chunk is often enough to stop that.
    fn flush_denormal_states(&mut self) {
        for biquad in &mut self.biquads {
            for state in biquad.state_1.iter_mut().chain(biquad.state_2.iter_mut()) {
                if state.abs() < TINY_SAMPLE {
                    *state = 0.0;
                }
            }
        }
    }
}
