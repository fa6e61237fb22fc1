//! The loudness target: a slow gain that steers the stream's loudness
//! towards a LUFS target, measured with the `ebur128` crate.
//!
//! Feed-forward: the meter reads the signal before this gain, so the gain is
//! simply `target - measured` (clamped to ±[`GAIN_RANGE_DB`]) and cannot
//! oscillate the way a meter inside its own loop can. Every
//! [`UPDATE_INTERVAL_MS`] the momentary loudness (400 ms window) is read and
//! the gain in dB moves a step towards the wanted value with a time constant
//! of [`TIME_CONSTANT_S`], so that a phrase does not pump; across each
//! interval the amplitude ramps linearly from the old gain to the new.
//! Below [`GATE_LUFS`] (silence, a break) the gain holds instead of rising
//! to its maximum.
//!
//! The momentary window costs the meter 400 ms of energy history per read,
//! a tenth of what the 3 s short-term window would, and the smoothing here
//! makes up for its shorter memory.

use ebur128::{EbuR128, Mode};

use super::{apply_frame_gains, decibels_to_amplitude, Path};

/// The most the loudness gain boosts or cuts, in dB.
pub const GAIN_RANGE_DB: f32 = 10.0;

/// How often the meter is read and the gain steps.
pub const UPDATE_INTERVAL_MS: u32 = 100;

/// The time constant of the gain following the measurement, in seconds.
pub const TIME_CONSTANT_S: f32 = 2.0;

/// Momentary loudness below which the gain holds (the EBU R128 absolute gate).
pub const GATE_LUFS: f64 = -70.0;

pub(crate) struct LoudnessTarget {
    channel_count: usize,
    target_lufs: f32,
    meter: EbuR128,
    /// The fraction of the remaining distance the gain moves per update.
    step_fraction: f32,
    gain_db: f32,
    ramp_start_gain: f32,
    ramp_end_gain: f32,
    interval_frame_count: usize,
    /// Frames of the current interval already processed.
    interval_frame_idx: usize,
    /// One gain per frame of the current chunk.
    frame_gains: Vec<f32>,
}

impl std::fmt::Debug for LoudnessTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LoudnessTarget")
            .field("target_lufs", &self.target_lufs)
            .field("gain_db", &self.gain_db)
            .finish_non_exhaustive()
    }
}

impl LoudnessTarget {
    /// `None` when the meter cannot run at this rate and channel count,
    /// which the chain's own checks already exclude.
    pub(crate) fn new(
        target_lufs: f32,
        sample_rate_hz: u32,
        channel_count: usize,
        chunk_frame_count: usize,
    ) -> Option<Self> {
        let meter = EbuR128::new(channel_count as u32, sample_rate_hz, Mode::M).ok()?;
        let update_interval_s = UPDATE_INTERVAL_MS as f32 / 1000.0;
        Some(Self {
            channel_count,
            target_lufs,
            meter,
            step_fraction: 1.0 - (-update_interval_s / TIME_CONSTANT_S).exp(),
            gain_db: 0.0,
            ramp_start_gain: 1.0,
            ramp_end_gain: 1.0,
            interval_frame_count: (sample_rate_hz * UPDATE_INTERVAL_MS / 1000) as usize,
            interval_frame_idx: 0,
            frame_gains: vec![0.0; chunk_frame_count],
        })
    }

    /// The chain cuts its chunks here so that an update falls on the same
    /// frame however the caller splits the stream.
    pub(crate) fn frames_until_update(&self) -> usize {
        self.interval_frame_count - self.interval_frame_idx
    }

    pub(crate) fn process(&mut self, chunk: &mut [f32], path: Path) {
        let frame_count = chunk.len() / self.channel_count;
        debug_assert!(frame_count <= self.frames_until_update());
        if self.interval_frame_idx == 0 {
            self.update_gain();
        }
        // The rate and channel count were accepted by `EbuR128::new`, and
        // the chunk holds whole frames, so adding cannot fail.
        let _ = self.meter.add_frames_f32(chunk);
        let step = (self.ramp_end_gain - self.ramp_start_gain) / self.interval_frame_count as f32;
        let first_position = (self.interval_frame_idx + 1) as f32;
        for (frame_offset, gain) in self.frame_gains[..frame_count].iter_mut().enumerate() {
            *gain = self.ramp_start_gain + step * (first_position + frame_offset as f32);
        }
        apply_frame_gains(
            chunk,
            &self.frame_gains[..frame_count],
            self.channel_count,
            path,
        );
        self.interval_frame_idx += frame_count;
        if self.interval_frame_idx == self.interval_frame_count {
            self.interval_frame_idx = 0;
        }
    }

    fn update_gain(&mut self) {
        self.ramp_start_gain = self.ramp_end_gain;
        let measured_lufs = self.meter.loudness_momentary().unwrap_or(f64::NEG_INFINITY);
        if measured_lufs.is_finite() && measured_lufs > GATE_LUFS {
            let wanted_db = (f64::from(self.target_lufs) - measured_lufs) as f32;
            let wanted_db = wanted_db.clamp(-GAIN_RANGE_DB, GAIN_RANGE_DB);
            self.gain_db += (wanted_db - self.gain_db) * self.step_fraction;
        }
        self.ramp_end_gain = decibels_to_amplitude(self.gain_db);
    }
}
