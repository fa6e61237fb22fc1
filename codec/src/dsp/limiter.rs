//! The true-peak limiter: the last stage, so that what the Opus encoders
//! see never exceeds the ceiling, between samples included.
//!
//! Inter-sample peaks are estimated by 4x oversampling with the 48-tap
//! Hann-windowed sinc interpolator that EBU R128 meters use (ITU-R BS.1770-4
//! Annex 2 style; the same design as libebur128 and the `ebur128` crate), so
//! the limiter's idea of the true peak is the meter's. Its four phases of 12
//! taps are the hot loop, and the vectorised path puts the four phases in
//! the lanes of an `f32x4`: twelve multiply-adds per channel per frame.
//!
//! The gain path, per frame (stereo-linked):
//! 1. `required = min(1, ceiling / true_peak)` for the interpolated interval
//!    the new sample completes;
//! 2. the minimum of `required` over the last `hold` frames;
//! 3. instant attack, one-pole release;
//! 4. a moving average over `lookahead` frames, which turns the step into a
//!    ramp that lands on time.
//!
//! The audio waits in a delay line of `lookahead + 10` frames, so that the
//! averaged gain is at or below `required` for all twelve samples that
//! shape each interpolated peak (see [`TAP_COUNT_PER_PHASE`]).

use std::collections::VecDeque;
use std::f64::consts::PI;

use wide::f32x4;

use super::config::LimiterConfig;
use super::{
    apply_frame_gains, decibels_to_amplitude, one_pole_coefficient, Path, CHUNK_FRAME_COUNT,
};

/// The oversampling factor for true-peak estimation at 48 kHz.
pub const OVERSAMPLING_FACTOR: usize = 4;

/// Input samples each interpolated value depends on.
pub const TAP_COUNT_PER_PHASE: usize = 12;

/// Frames of history the interpolator needs before the current one.
const HISTORY_FRAME_COUNT: usize = TAP_COUNT_PER_PHASE - 1;

/// Interpolator taps, `[tap][phase]`: tap `t` weighs the sample `t` frames
/// back, and phase `p` estimates the signal at `6 - p/4` frames back.
fn interpolator_taps() -> [[f32; OVERSAMPLING_FACTOR]; TAP_COUNT_PER_PHASE] {
    let tap_count = TAP_COUNT_PER_PHASE * OVERSAMPLING_FACTOR;
    let mut taps = [[0.0f32; OVERSAMPLING_FACTOR]; TAP_COUNT_PER_PHASE];
    for (index, coefficient) in taps.iter_mut().flatten().enumerate() {
        let position = index as f64;
        let window = 0.5 * (1.0 - (2.0 * PI * position / tap_count as f64).cos());
        let offset = position - tap_count as f64 / 2.0;
        let sinc = if offset.abs() > 1e-6 {
            let argument = offset * PI / OVERSAMPLING_FACTOR as f64;
            argument.sin() / argument
        } else {
            1.0
        };
        *coefficient = (window * sinc) as f32;
    }
    taps
}

/// The gain computer's state: sliding minimum, release, moving average.
#[derive(Clone, Debug)]
struct GainSmoother {
    hold_frame_count: u64,
    /// (frame index, required gain), increasing in both: the candidates
    /// for the minimum over the hold window.
    hold_candidates: VecDeque<(u64, f32)>,
    release_coefficient: f32,
    released_gain: f32,
    average_window: Vec<f32>,
    average_position: usize,
    /// f64 so that adding and removing for hours does not drift.
    average_sum: f64,
    frame_idx: u64,
}

impl GainSmoother {
    fn new(lookahead_frame_count: usize, release_coefficient: f32) -> Self {
        let hold_frame_count = lookahead_frame_count + TAP_COUNT_PER_PHASE - 1;
        Self {
            hold_frame_count: hold_frame_count as u64,
            hold_candidates: VecDeque::with_capacity(hold_frame_count + 1),
            release_coefficient,
            released_gain: 1.0,
            average_window: vec![1.0; lookahead_frame_count],
            average_position: 0,
            average_sum: lookahead_frame_count as f64,
            frame_idx: 0,
        }
    }

    fn next(&mut self, required_gain: f32) -> f32 {
        while self
            .hold_candidates
            .back()
            .is_some_and(|&(_, gain)| gain >= required_gain)
        {
            self.hold_candidates.pop_back();
        }
        self.hold_candidates
            .push_back((self.frame_idx, required_gain));
        while self
            .hold_candidates
            .front()
            .is_some_and(|&(idx, _)| idx + self.hold_frame_count <= self.frame_idx)
        {
            self.hold_candidates.pop_front();
        }
        self.frame_idx += 1;
        let held_gain = self.hold_candidates.front().map_or(1.0, |&(_, gain)| gain);
        self.released_gain = if held_gain < self.released_gain {
            held_gain
        } else {
            held_gain + self.release_coefficient * (self.released_gain - held_gain)
        };
        let leaving = std::mem::replace(
            &mut self.average_window[self.average_position],
            self.released_gain,
        );
        self.average_position = (self.average_position + 1) % self.average_window.len();
        self.average_sum += f64::from(self.released_gain) - f64::from(leaving);
        (self.average_sum / self.average_window.len() as f64) as f32
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Limiter {
    channel_count: usize,
    ceiling: f32,
    taps: [[f32; OVERSAMPLING_FACTOR]; TAP_COUNT_PER_PHASE],
    /// The same taps with the four phases in the lanes.
    tap_lanes: [f32x4; TAP_COUNT_PER_PHASE],
    /// Per channel: [`HISTORY_FRAME_COUNT`] samples of the previous chunk,
    /// then the current chunk, planar for the interpolator.
    histories: Vec<Vec<f32>>,
    smoother: GainSmoother,
    /// Interleaved frames waiting for their gain.
    delay_line: Vec<f32>,
    delay_position: usize,
    delay_frame_count: usize,
    /// One gain per frame of the current chunk.
    frame_gains: Vec<f32>,
}

impl Limiter {
    pub(crate) fn new(config: &LimiterConfig, sample_rate_hz: u32, channel_count: usize) -> Self {
        let lookahead_frame_count =
            ((config.lookahead_ms * sample_rate_hz as f32 / 1000.0).round() as usize).max(1);
        // See the module comment: the last of the twelve samples behind an
        // interpolated peak must still be in the line when the gain lands.
        let delay_frame_count = lookahead_frame_count + TAP_COUNT_PER_PHASE - 2;
        let taps = interpolator_taps();
        Self {
            channel_count,
            ceiling: decibels_to_amplitude(config.ceiling_dbtp),
            taps,
            tap_lanes: taps.map(f32x4::from),
            histories: vec![vec![0.0; HISTORY_FRAME_COUNT + CHUNK_FRAME_COUNT]; channel_count],
            smoother: GainSmoother::new(
                lookahead_frame_count,
                one_pole_coefficient(config.release_ms, sample_rate_hz),
            ),
            delay_line: vec![0.0; delay_frame_count * channel_count],
            delay_position: 0,
            delay_frame_count,
            frame_gains: vec![0.0; CHUNK_FRAME_COUNT],
        }
    }

    /// Frames between a sample going in and coming out.
    pub(crate) fn latency_frame_count(&self) -> usize {
        self.delay_frame_count
    }

    pub(crate) fn process(&mut self, chunk: &mut [f32], path: Path) {
        let frame_count = chunk.len() / self.channel_count;
        for (channel_idx, history) in self.histories.iter_mut().enumerate() {
            let samples = chunk.iter().skip(channel_idx).step_by(self.channel_count);
            for (slot, sample) in history[HISTORY_FRAME_COUNT..].iter_mut().zip(samples) {
                *slot = *sample;
            }
        }
        for frame_idx in 0..frame_count {
            let true_peak = match path {
                Path::Scalar => self.true_peak_scalar(frame_idx),
                Path::Vectorised => self.true_peak_vectorised(frame_idx),
            };
            let required_gain = if true_peak > self.ceiling {
                self.ceiling / true_peak
            } else {
                1.0
            };
            self.frame_gains[frame_idx] = self.smoother.next(required_gain);
        }
        for history in &mut self.histories {
            history.copy_within(frame_count..frame_count + HISTORY_FRAME_COUNT, 0);
        }
        self.delay(chunk);
        apply_frame_gains(
            chunk,
            &self.frame_gains[..frame_count],
            self.channel_count,
            path,
        );
        // The gain keeps the true peak at the ceiling; the clamp only guards
        // against float rounding pushing a sample a hair over it.
        for sample in chunk.iter_mut() {
            *sample = sample.clamp(-self.ceiling, self.ceiling);
        }
    }

    /// The largest absolute value, across channels and the four phases, of
    /// the interval completed by `frame_idx` of the chunk.
    fn true_peak_scalar(&self, frame_idx: usize) -> f32 {
        let mut peak = 0.0f32;
        for history in &self.histories {
            let newest = frame_idx + HISTORY_FRAME_COUNT;
            for phase in 0..OVERSAMPLING_FACTOR {
                let mut sum = 0.0f32;
                for (tap, taps) in self.taps.iter().enumerate() {
                    sum += taps[phase] * history[newest - tap];
                }
                peak = peak.max(sum.abs());
            }
        }
        peak
    }

    fn true_peak_vectorised(&self, frame_idx: usize) -> f32 {
        let mut peaks = f32x4::ZERO;
        for history in &self.histories {
            let window = &history[frame_idx..frame_idx + TAP_COUNT_PER_PHASE];
            let mut sums = f32x4::ZERO;
            for (taps, sample) in self.tap_lanes.iter().zip(window.iter().rev()) {
                sums += *taps * f32x4::splat(*sample);
            }
            peaks = peaks.max(sums.abs());
        }
        let [a, b, c, d] = peaks.to_array();
        a.max(b).max(c.max(d))
    }

    /// Swaps each frame of the chunk with the oldest frame in the line.
    fn delay(&mut self, chunk: &mut [f32]) {
        for frame in chunk.chunks_exact_mut(self.channel_count) {
            let start = self.delay_position * self.channel_count;
            frame.swap_with_slice(&mut self.delay_line[start..start + self.channel_count]);
            self.delay_position = (self.delay_position + 1) % self.delay_frame_count;
        }
    }
}
