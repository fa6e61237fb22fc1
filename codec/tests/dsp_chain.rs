//! The live DSP chain against known signals: each block alone, then the
//! whole chain through both paths.

use std::f64::consts::TAU;

use ebur128::{EbuR128, Mode};
use veza_codec::dsp::{
    CompressorConfig, CompressorDetector, DspChain, DspConfig, DspConfigError, LimiterConfig,
};

const SAMPLE_RATE_HZ: u32 = 48_000;

/// A deterministic xorshift generator, so that a failure reproduces.
struct Noise(u32);

impl Noise {
    fn next_unit(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        (self.0 as f64 / u32::MAX as f64 * 2.0 - 1.0) as f32
    }
}

/// A stereo sine, both channels equal.
fn stereo_sine(
    frequency_hz: f64,
    amplitude: f64,
    phase_radians: f64,
    second_count: f64,
) -> Vec<f32> {
    let frame_count = (second_count * f64::from(SAMPLE_RATE_HZ)) as usize;
    (0..frame_count)
        .flat_map(|frame_idx| {
            let time_s = frame_idx as f64 / f64::from(SAMPLE_RATE_HZ);
            let value = (amplitude * (TAU * frequency_hz * time_s + phase_radians).sin()) as f32;
            [value, value]
        })
        .collect()
}

fn stereo_white_noise(amplitude: f32, second_count: usize, seed: u32) -> Vec<f32> {
    let mut noise = Noise(seed);
    (0..second_count * SAMPLE_RATE_HZ as usize * 2)
        .map(|_| amplitude * noise.next_unit())
        .collect()
}

/// Pink noise (Paul Kellett's economy filter), independent per channel.
fn stereo_pink_noise(amplitude: f32, second_count: usize, seed: u32) -> Vec<f32> {
    let mut noise = Noise(seed);
    let mut states = [[0.0f32; 3]; 2];
    let mut samples = Vec::with_capacity(second_count * SAMPLE_RATE_HZ as usize * 2);
    for _ in 0..second_count * SAMPLE_RATE_HZ as usize {
        for state in &mut states {
            let white = noise.next_unit();
            state[0] = 0.99765 * state[0] + white * 0.099_046;
            state[1] = 0.963 * state[1] + white * 0.296_516_4;
            state[2] = 0.57 * state[2] + white * 1.052_691_3;
            samples.push(amplitude * (state[0] + state[1] + state[2] + white * 0.1848) * 0.25);
        }
    }
    samples
}

/// Tones, a moving envelope and noise at the level of a loud master.
fn loud_mix(second_count: usize) -> Vec<f32> {
    let mut noise = Noise(0xdead_beef);
    let mut samples = Vec::with_capacity(second_count * SAMPLE_RATE_HZ as usize * 2);
    for frame_idx in 0..second_count * SAMPLE_RATE_HZ as usize {
        let time_s = frame_idx as f64 / f64::from(SAMPLE_RATE_HZ);
        let kick = (-(time_s % 0.5) * 30.0).exp() * (TAU * 55.0 * time_s).sin();
        let chord: f64 = [220.0, 277.18, 329.63, 3_520.0]
            .iter()
            .map(|frequency_hz| (TAU * frequency_hz * time_s).sin())
            .sum();
        for channel_idx in 0..2 {
            let value = 0.45 * kick
                + 0.12 * chord
                + 0.15 * f64::from(noise.next_unit()) * (1.0 + channel_idx as f64 * 0.2);
            samples.push(value as f32);
        }
    }
    samples
}

fn run(config: &DspConfig, input: &[f32]) -> Vec<f32> {
    let mut chain = DspChain::new(config, SAMPLE_RATE_HZ, 2).unwrap();
    let mut output = input.to_vec();
    chain.process(&mut output);
    output
}

/// A chain with only what the test sets: no limiter.
fn bare() -> DspConfig {
    DspConfig {
        limiter: LimiterConfig {
            enabled: false,
            ..LimiterConfig::default()
        },
        ..DspConfig::default()
    }
}

fn rms(samples: &[f32]) -> f64 {
    (samples
        .iter()
        .map(|sample| f64::from(*sample).powi(2))
        .sum::<f64>()
        / samples.len() as f64)
        .sqrt()
}

fn peak(samples: &[f32]) -> f64 {
    samples
        .iter()
        .fold(0.0f64, |peak, sample| peak.max(f64::from(sample.abs())))
}

fn decibels(ratio: f64) -> f64 {
    20.0 * ratio.log10()
}

/// The gain in dB of the last half of the output over the last half of the
/// input (after the filters have settled).
fn settled_gain_db(input: &[f32], output: &[f32]) -> f64 {
    let half = input.len() / 2;
    decibels(rms(&output[half..]) / rms(&input[half..]))
}

fn true_peak_dbtp(interleaved: &[f32]) -> f64 {
    let mut meter = EbuR128::new(2, SAMPLE_RATE_HZ, Mode::TRUE_PEAK).unwrap();
    meter.add_frames_f32(interleaved).unwrap();
    let linear = meter.true_peak(0).unwrap().max(meter.true_peak(1).unwrap());
    decibels(linear)
}

fn integrated_lufs(interleaved: &[f32]) -> f64 {
    let mut meter = EbuR128::new(2, SAMPLE_RATE_HZ, Mode::I).unwrap();
    meter.add_frames_f32(interleaved).unwrap();
    meter.loudness_global().unwrap()
}

fn assert_near(measured: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (measured - expected).abs() <= tolerance,
        "{what}: measured {measured:.3}, expected {expected:.3} ± {tolerance}"
    );
}

#[test]
fn input_gain_multiplies_every_sample_exactly() {
    let input = stereo_white_noise(0.1, 1, 7);
    let config = DspConfig {
        gain_db: 6.0,
        ..bare()
    };
    let factor = 10f32.powf(6.0 / 20.0);
    let output = run(&config, &input);
    for (input_sample, output_sample) in input.iter().zip(&output) {
        assert_eq!(*output_sample, input_sample * factor);
    }
}

#[test]
fn peaking_eq_at_plus_6_db_lifts_a_1_khz_sine_by_6_db() {
    let mut config = bare();
    config.eq.mid_gain_db = 6.0;
    let input = stereo_sine(1_000.0, 0.25, 0.0, 1.0);
    assert_near(
        settled_gain_db(&input, &run(&config, &input)),
        6.0,
        0.2,
        "1 kHz",
    );
}

#[test]
fn peaking_eq_leaves_sines_far_from_its_band_unchanged() {
    let mut config = bare();
    config.eq.mid_gain_db = 6.0;
    config.eq.mid_q = 2.0;
    for frequency_hz in [40.0, 18_000.0] {
        let input = stereo_sine(frequency_hz, 0.25, 0.0, 1.0);
        assert_near(
            settled_gain_db(&input, &run(&config, &input)),
            0.0,
            0.2,
            &format!("{frequency_hz} Hz"),
        );
    }
}

#[test]
fn low_shelf_lifts_low_frequencies_by_its_gain_and_leaves_highs() {
    let mut config = bare();
    config.eq.low_shelf_gain_db = 6.0;
    let low = stereo_sine(20.0, 0.25, 0.0, 2.0);
    assert_near(
        settled_gain_db(&low, &run(&config, &low)),
        6.0,
        0.3,
        "20 Hz",
    );
    let high = stereo_sine(5_000.0, 0.25, 0.0, 1.0);
    assert_near(
        settled_gain_db(&high, &run(&config, &high)),
        0.0,
        0.2,
        "5 kHz",
    );
}

#[test]
fn high_shelf_cuts_near_nyquist_by_its_gain_and_leaves_lows() {
    let mut config = bare();
    config.eq.high_shelf_gain_db = -6.0;
    let high = stereo_sine(20_000.0, 0.25, 0.0, 1.0);
    assert_near(
        settled_gain_db(&high, &run(&config, &high)),
        -6.0,
        0.3,
        "20 kHz",
    );
    let low = stereo_sine(200.0, 0.25, 0.0, 1.0);
    assert_near(
        settled_gain_db(&low, &run(&config, &low)),
        0.0,
        0.2,
        "200 Hz",
    );
}

fn compressor(detector: CompressorDetector) -> DspConfig {
    DspConfig {
        compressor: Some(CompressorConfig {
            threshold_db: -30.0,
            ratio: 4.0,
            attack_ms: 1.0,
            release_ms: 500.0,
            makeup_db: 0.0,
            detector,
        }),
        ..bare()
    }
}

#[test]
fn compressor_at_ratio_4_brings_a_sine_20_db_over_threshold_to_5_db_over() {
    // Peak detector: the sine's peak is at -10 dBFS, 20 dB over -30.
    let input = stereo_sine(1_000.0, 10f64.powf(-10.0 / 20.0), 0.0, 2.0);
    let output = run(&compressor(CompressorDetector::Peak), &input);
    let settled = &output[output.len() / 2..];
    assert_near(decibels(peak(settled)), -25.0, 0.5, "output peak dBFS");
}

#[test]
fn rms_compressor_at_ratio_4_brings_a_sine_20_db_over_threshold_to_5_db_over() {
    // RMS detector: the sine's RMS is at -10 dBFS, 20 dB over -30.
    let amplitude = 10f64.powf(-10.0 / 20.0) * std::f64::consts::SQRT_2;
    let input = stereo_sine(1_000.0, amplitude, 0.0, 2.0);
    let output = run(&compressor(CompressorDetector::Rms), &input);
    let settled = &output[output.len() / 2..];
    assert_near(decibels(rms(settled)), -25.0, 0.5, "output RMS dBFS");
}

#[test]
fn compressor_leaves_a_sine_under_threshold_alone() {
    let input = stereo_sine(1_000.0, 10f64.powf(-40.0 / 20.0), 0.0, 1.0);
    let output = run(&compressor(CompressorDetector::Peak), &input);
    assert_near(settled_gain_db(&input, &output), 0.0, 0.01, "gain dB");
}

fn limited() -> DspConfig {
    DspConfig::default()
}

#[test]
fn limiter_holds_inter_sample_peaks_of_a_quarter_rate_sine_under_the_ceiling() {
    // At fs/4 with a 45° phase every sample is ±0.707 while the waveform
    // between them reaches 1.0: the sample peak misses 3 dB.
    let input = stereo_sine(12_000.0, 1.0, TAU / 8.0, 2.0);
    assert!(decibels(peak(&input)) < -2.9);
    assert!(
        true_peak_dbtp(&input) > -0.2,
        "the input's true peak is about 0 dBTP"
    );
    let output = run(&limited(), &input);
    let output_dbtp = true_peak_dbtp(&output);
    assert!(
        output_dbtp <= -0.9,
        "true peak {output_dbtp:.3} dBTP over the -1 dBTP ceiling"
    );
    // And it limits rather than mutes: within a dB of the ceiling.
    assert!(output_dbtp > -2.0, "true peak {output_dbtp:.3} dBTP");
}

#[test]
fn limiter_holds_a_mix_overdriven_by_12_db_under_the_ceiling() {
    let config = DspConfig {
        gain_db: 12.0,
        ..limited()
    };
    let input = loud_mix(5);
    assert!(
        true_peak_dbtp(&input) + 12.0 > 6.0,
        "the drive really overdrives"
    );
    let output = run(&config, &input);
    let output_dbtp = true_peak_dbtp(&output);
    assert!(
        output_dbtp <= -0.9,
        "true peak {output_dbtp:.3} dBTP over the -1 dBTP ceiling"
    );
}

#[test]
fn limiter_delays_by_its_latency_and_leaves_quiet_audio_untouched() {
    let input = stereo_white_noise(0.1, 1, 3);
    let mut chain = DspChain::new(&limited(), SAMPLE_RATE_HZ, 2).unwrap();
    // 1.5 ms lookahead at 48 kHz is 72 frames, plus 10 for the interpolator.
    assert_eq!(chain.latency_samples(), 82);
    let mut output = input.clone();
    chain.process(&mut output);
    let delay = chain.latency_samples() * 2;
    assert!(output[..delay].iter().all(|sample| *sample == 0.0));
    assert_eq!(&output[delay..], &input[..input.len() - delay]);
}

fn check_loudness_target(input: &[f32], what: &str) {
    let measured_input_lufs = integrated_lufs(input);
    assert_near(measured_input_lufs, -30.0, 0.5, &format!("{what} input"));
    let config = DspConfig {
        loudness_target_lufs: Some(-23.0),
        ..limited()
    };
    let output = run(&config, input);
    let last_five_seconds = &output[output.len() - 5 * SAMPLE_RATE_HZ as usize * 2..];
    assert_near(
        integrated_lufs(last_five_seconds),
        -23.0,
        1.0,
        &format!("{what} output"),
    );
}

/// The amplitude that puts `signal` (generated at amplitude 1) at -30 LUFS.
fn scaled_to_minus_30_lufs(signal: Vec<f32>) -> Vec<f32> {
    let scale = 10f64.powf((-30.0 - integrated_lufs(&signal)) / 20.0) as f32;
    signal.into_iter().map(|sample| sample * scale).collect()
}

#[test]
fn loudness_target_brings_white_noise_at_minus_30_lufs_to_minus_23() {
    check_loudness_target(
        &scaled_to_minus_30_lufs(stereo_white_noise(1.0, 20, 11)),
        "white noise",
    );
}

#[test]
fn loudness_target_brings_pink_noise_at_minus_30_lufs_to_minus_23() {
    check_loudness_target(
        &scaled_to_minus_30_lufs(stereo_pink_noise(1.0, 20, 13)),
        "pink noise",
    );
}

fn everything_on() -> DspConfig {
    let mut config = DspConfig {
        gain_db: 3.0,
        compressor: Some(CompressorConfig::default()),
        loudness_target_lufs: Some(-16.0),
        ..DspConfig::default()
    };
    config.eq.low_shelf_gain_db = 3.0;
    config.eq.mid_gain_db = -2.0;
    config.eq.high_shelf_gain_db = 2.0;
    config
}

#[test]
fn vectorised_and_scalar_paths_give_the_same_answer() {
    let mut signals = vec![
        ("loud mix", loud_mix(3)),
        ("white noise", stereo_white_noise(0.5, 2, 5)),
    ];
    signals.push((
        "quarter-rate sine",
        stereo_sine(12_000.0, 1.0, TAU / 8.0, 1.0),
    ));
    for (what, input) in signals {
        for config in [
            everything_on(),
            limited(),
            compressor(CompressorDetector::Rms),
        ] {
            let mut vectorised_chain = DspChain::new(&config, SAMPLE_RATE_HZ, 2).unwrap();
            let mut scalar_chain = DspChain::new(&config, SAMPLE_RATE_HZ, 2).unwrap();
            let mut vectorised = input.clone();
            let mut scalar = input.clone();
            // Uneven pieces, so that chunk edges and remainders are covered.
            for (vectorised_piece, scalar_piece) in vectorised
                .chunks_mut(2 * 999)
                .zip(scalar.chunks_mut(2 * 999))
            {
                vectorised_chain.process(vectorised_piece);
                scalar_chain.process_scalar(scalar_piece);
            }
            let difference_max = vectorised
                .iter()
                .zip(&scalar)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                difference_max < 1e-4,
                "{what}: paths differ by {difference_max}"
            );
        }
    }
}

#[test]
fn mono_vectorised_and_scalar_paths_give_the_same_answer() {
    let input: Vec<f32> = loud_mix(2).into_iter().step_by(2).collect();
    let mut vectorised_chain = DspChain::new(&everything_on(), SAMPLE_RATE_HZ, 1).unwrap();
    let mut scalar_chain = DspChain::new(&everything_on(), SAMPLE_RATE_HZ, 1).unwrap();
    let mut vectorised = input.clone();
    let mut scalar = input;
    vectorised_chain.process(&mut vectorised);
    scalar_chain.process_scalar(&mut scalar);
    let difference_max = vectorised
        .iter()
        .zip(&scalar)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(difference_max < 1e-4, "paths differ by {difference_max}");
}

#[test]
fn output_does_not_depend_on_how_the_input_is_split() {
    let input = loud_mix(2);
    let whole = run(&everything_on(), &input);
    for piece_frame_count in [1, 7, 256, 333, 4_800, 5_000] {
        let mut chain = DspChain::new(&everything_on(), SAMPLE_RATE_HZ, 2).unwrap();
        let mut pieced = input.clone();
        for piece in pieced.chunks_mut(piece_frame_count * 2) {
            chain.process(piece);
        }
        assert!(pieced == whole, "pieces of {piece_frame_count} frames");
    }
}

#[test]
fn silence_dc_denormals_and_non_finite_input_never_produce_nan_or_infinity() {
    let frame_count = SAMPLE_RATE_HZ as usize;
    let inputs: Vec<(&str, Vec<f32>)> = vec![
        ("silence", vec![0.0; frame_count * 2]),
        ("DC", vec![0.9; frame_count * 2]),
        ("negative DC", vec![-1.0; frame_count * 2]),
        ("denormals", vec![1e-40; frame_count * 2]),
        ("tiny noise", stereo_white_noise(1e-30, 1, 9)),
        (
            "NaN and infinities",
            (0..frame_count * 2)
                .map(|idx| [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5][idx % 4])
                .collect(),
        ),
    ];
    for (what, input) in inputs {
        for config in [everything_on(), limited(), bare()] {
            let mut chain = DspChain::new(&config, SAMPLE_RATE_HZ, 2).unwrap();
            let mut vectorised = input.clone();
            chain.process(&mut vectorised);
            let mut chain = DspChain::new(&config, SAMPLE_RATE_HZ, 2).unwrap();
            let mut scalar = input.clone();
            chain.process_scalar(&mut scalar);
            for output in [vectorised, scalar] {
                assert!(output.iter().all(|sample| sample.is_finite()), "{what}");
            }
        }
        if what == "silence" {
            assert!(run(&everything_on(), &input)
                .iter()
                .all(|sample| *sample == 0.0));
        }
    }
}

#[test]
fn invalid_settings_are_refused_naming_the_field() {
    let mut config = DspConfig::default();
    config.limiter.ceiling_dbtp = 3.0;
    assert!(matches!(
        config.validate(),
        Err(DspConfigError::OutOfRange {
            field: "limiter.ceiling_dbtp",
            ..
        })
    ));
    let config = DspConfig {
        compressor: Some(CompressorConfig {
            ratio: 0.5,
            ..CompressorConfig::default()
        }),
        ..DspConfig::default()
    };
    let error = config.validate().unwrap_err();
    assert_eq!(
        error.to_string(),
        "dsp.compressor.ratio = 0.5 is outside [1, 100]"
    );
    let mut config = DspConfig::default();
    config.eq.mid_q = f32::NAN;
    assert!(matches!(
        config.validate(),
        Err(DspConfigError::OutOfRange {
            field: "eq.mid_q",
            ..
        })
    ));
}

#[test]
fn eq_frequencies_must_be_below_nyquist_and_channels_mono_or_stereo() {
    let config = DspConfig::default();
    assert!(matches!(
        DspChain::new(&config, 16_000, 2),
        Err(DspConfigError::AboveNyquist {
            field: "eq.high_shelf_frequency_hz",
            ..
        })
    ));
    assert!(matches!(
        DspChain::new(&config, 48_000, 3),
        Err(DspConfigError::ChannelCount { channel_count: 3 })
    ));
    assert!(matches!(
        DspChain::new(&config, 4_000, 2),
        Err(DspConfigError::SampleRate { .. })
    ));
}

#[test]
fn config_reads_from_toml_with_defaults_and_refuses_unknown_fields() {
    let config: DspConfig = toml::from_str(
        "gain_db = 2.0\nloudness_target_lufs = -16.0\n[eq]\nmid_gain_db = 3.0\n[compressor]\nratio = 4.0\n[limiter]\nceiling_dbtp = -2.0\n",
    )
    .unwrap();
    assert_eq!(config.eq.mid_frequency_hz, 1_000.0);
    assert_eq!(config.eq.mid_gain_db, 3.0);
    assert_eq!(config.compressor.as_ref().unwrap().ratio, 4.0);
    assert_eq!(config.compressor.as_ref().unwrap().threshold_db, -18.0);
    assert!(config.limiter.enabled);
    assert_eq!(config.limiter.lookahead_ms, 1.5);
    config.validate().unwrap();
    assert!(toml::from_str::<DspConfig>("[limiter]\nceiling = -1.0\n").is_err());
}
