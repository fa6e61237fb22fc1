//! The DSP chain's configuration: what a broadcaster (or the operator's
//! defaults) may set, with the range of every field checked before a chain
//! is built, and every error naming the field.

use serde::{Deserialize, Serialize};

/// The live stream's DSP chain: input gain, three-band EQ, an optional
/// compressor, an optional loudness target and a true-peak limiter, in that
/// order.
///
/// The default does nothing audible to a signal that stays under the
/// ceiling: unity gain, a flat EQ, no compressor, no loudness target, and
/// the limiter on at -1 dBTP so that the Opus encoders are never fed overs.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DspConfig {
    /// Gain applied first, in dB, [-24, 24].
    pub gain_db: f32,
    /// The three-band equaliser.
    pub eq: EqConfig,
    /// The compressor; `None` leaves the dynamics alone.
    pub compressor: Option<CompressorConfig>,
    /// The true-peak limiter, last in the chain.
    pub limiter: LimiterConfig,
    /// When set, a slow gain (at most ±10 dB) steers the momentary loudness
    /// towards this many LUFS, [-40, -5]; it sits before the limiter.
    pub loudness_target_lufs: Option<f32>,
}

/// Three RBJ audio-EQ-cookbook biquads: a low shelf, a peaking mid band and
/// a high shelf. A band at 0 dB is skipped, not run as an identity filter.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EqConfig {
    /// Low shelf corner, [10, 20000] Hz and below Nyquist.
    pub low_shelf_frequency_hz: f32,
    /// Low shelf gain, [-18, 18] dB.
    pub low_shelf_gain_db: f32,
    /// Peaking band centre, [10, 20000] Hz and below Nyquist.
    pub mid_frequency_hz: f32,
    /// Peaking band quality factor (centre over bandwidth), [0.1, 10].
    pub mid_q: f32,
    /// Peaking band gain at its centre, [-18, 18] dB.
    pub mid_gain_db: f32,
    /// High shelf corner, [10, 20000] Hz and below Nyquist.
    pub high_shelf_frequency_hz: f32,
    /// High shelf gain, [-18, 18] dB.
    pub high_shelf_gain_db: f32,
}

/// How the compressor measures level; both are stereo-linked (one gain for
/// every channel, so the image does not move).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressorDetector {
    /// The largest absolute sample across channels: catches transients.
    #[default]
    Peak,
    /// The root of the mean square across channels, averaged over about
    /// 20 ms before attack and release: follows perceived level.
    Rms,
}

/// A feed-forward, hard-knee compressor.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressorConfig {
    /// Level above which the gain is reduced, [-60, 0] dB.
    pub threshold_db: f32,
    /// Input dB over the threshold per output dB over it, [1, 100].
    pub ratio: f32,
    /// Time constant of the detector rising, [0.1, 500] ms.
    pub attack_ms: f32,
    /// Time constant of the detector falling, [1, 5000] ms.
    pub release_ms: f32,
    /// Gain added after compression, [0, 24] dB.
    pub makeup_db: f32,
    /// Peak or RMS detection.
    pub detector: CompressorDetector,
}

/// The true-peak limiter: inter-sample peaks are estimated at 4x
/// oversampling and the gain falls before a peak arrives.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimiterConfig {
    /// Off passes the signal through with no delay.
    pub enabled: bool,
    /// The highest true peak let out, [-20, 0] dBTP.
    pub ceiling_dbtp: f32,
    /// How early the gain starts falling before a peak, [0.5, 10] ms; the
    /// chain's latency follows from it.
    pub lookahead_ms: f32,
    /// Time constant of the gain recovering after a peak, [1, 1000] ms.
    pub release_ms: f32,
}

impl Default for DspConfig {
    fn default() -> Self {
        Self {
            gain_db: 0.0,
            eq: EqConfig::default(),
            compressor: None,
            limiter: LimiterConfig::default(),
            loudness_target_lufs: None,
        }
    }
}

impl Default for EqConfig {
    fn default() -> Self {
        Self {
            low_shelf_frequency_hz: 120.0,
            low_shelf_gain_db: 0.0,
            mid_frequency_hz: 1_000.0,
            mid_q: 0.7,
            mid_gain_db: 0.0,
            high_shelf_frequency_hz: 8_000.0,
            high_shelf_gain_db: 0.0,
        }
    }
}

impl Default for CompressorConfig {
    fn default() -> Self {
        Self {
            threshold_db: -18.0,
            ratio: 3.0,
            attack_ms: 10.0,
            release_ms: 150.0,
            makeup_db: 0.0,
            detector: CompressorDetector::Peak,
        }
    }
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ceiling_dbtp: -1.0,
            lookahead_ms: 1.5,
            release_ms: 50.0,
        }
    }
}

/// Why a DSP configuration, sample rate or channel count was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DspConfigError {
    /// A field outside its range (or not a number).
    #[error("dsp.{field} = {value} is outside [{min}, {max}]")]
    OutOfRange {
        /// The field's path, e.g. `limiter.ceiling_dbtp`.
        field: &'static str,
        /// The value given.
        value: f32,
        /// The lowest accepted value.
        min: f32,
        /// The highest accepted value.
        max: f32,
    },
    /// An EQ frequency at or above half the sample rate.
    #[error("dsp.{field} = {frequency_hz} Hz is not below Nyquist ({nyquist_hz} Hz)")]
    AboveNyquist {
        /// The field's path, e.g. `eq.high_shelf_frequency_hz`.
        field: &'static str,
        /// The frequency given.
        frequency_hz: f32,
        /// Half the sample rate.
        nyquist_hz: f32,
    },
    /// A sample rate the chain does not run at.
    #[error("the DSP chain runs at 8000 to 192000 Hz, not {sample_rate_hz} Hz")]
    SampleRate {
        /// The rate given.
        sample_rate_hz: u32,
    },
    /// The chain is mono or stereo.
    #[error("the DSP chain takes 1 or 2 channels, not {channel_count}")]
    ChannelCount {
        /// The channel count given.
        channel_count: u8,
    },
}

/// The sample rates a chain may be built for.
pub(crate) const SAMPLE_RATE_HZ_RANGE: std::ops::RangeInclusive<u32> = 8_000..=192_000;

fn check(field: &'static str, value: f32, min: f32, max: f32) -> Result<(), DspConfigError> {
    // `contains` is false for NaN, so a NaN is refused here too.
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(DspConfigError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

impl DspConfig {
    /// Checks every field's range; the first field out of range is named.
    pub fn validate(&self) -> Result<(), DspConfigError> {
        check("gain_db", self.gain_db, -24.0, 24.0)?;
        self.eq.validate()?;
        if let Some(compressor) = &self.compressor {
            compressor.validate()?;
        }
        self.limiter.validate()?;
        if let Some(target_lufs) = self.loudness_target_lufs {
            check("loudness_target_lufs", target_lufs, -40.0, -5.0)?;
        }
        Ok(())
    }

    /// [`DspConfig::validate`], then the EQ frequencies against Nyquist.
    pub(crate) fn validate_for_sample_rate(
        &self,
        sample_rate_hz: u32,
    ) -> Result<(), DspConfigError> {
        self.validate()?;
        if !SAMPLE_RATE_HZ_RANGE.contains(&sample_rate_hz) {
            return Err(DspConfigError::SampleRate { sample_rate_hz });
        }
        let nyquist_hz = sample_rate_hz as f32 / 2.0;
        for (field, frequency_hz) in self.eq.frequencies_hz() {
            if frequency_hz >= nyquist_hz {
                return Err(DspConfigError::AboveNyquist {
                    field,
                    frequency_hz,
                    nyquist_hz,
                });
            }
        }
        Ok(())
    }
}

impl EqConfig {
    fn frequencies_hz(&self) -> [(&'static str, f32); 3] {
        [
            ("eq.low_shelf_frequency_hz", self.low_shelf_frequency_hz),
            ("eq.mid_frequency_hz", self.mid_frequency_hz),
            ("eq.high_shelf_frequency_hz", self.high_shelf_frequency_hz),
        ]
    }

    fn validate(&self) -> Result<(), DspConfigError> {
        for (field, frequency_hz) in self.frequencies_hz() {
            check(field, frequency_hz, 10.0, 20_000.0)?;
        }
        check("eq.low_shelf_gain_db", self.low_shelf_gain_db, -18.0, 18.0)?;
        check("eq.mid_q", self.mid_q, 0.1, 10.0)?;
        check("eq.mid_gain_db", self.mid_gain_db, -18.0, 18.0)?;
        check(
            "eq.high_shelf_gain_db",
            self.high_shelf_gain_db,
            -18.0,
            18.0,
        )
    }
}

impl CompressorConfig {
    fn validate(&self) -> Result<(), DspConfigError> {
        check("compressor.threshold_db", self.threshold_db, -60.0, 0.0)?;
        check("compressor.ratio", self.ratio, 1.0, 100.0)?;
        check("compressor.attack_ms", self.attack_ms, 0.1, 500.0)?;
        check("compressor.release_ms", self.release_ms, 1.0, 5_000.0)?;
        check("compressor.makeup_db", self.makeup_db, 0.0, 24.0)
    }
}

impl LimiterConfig {
    fn validate(&self) -> Result<(), DspConfigError> {
        check("limiter.ceiling_dbtp", self.ceiling_dbtp, -20.0, 0.0)?;
        check("limiter.lookahead_ms", self.lookahead_ms, 0.5, 10.0)?;
        check("limiter.release_ms", self.release_ms, 1.0, 1_000.0)
    }
}
