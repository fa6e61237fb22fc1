//! The track processing pipeline end to end: real files made by ffmpeg go
//! through `transcode`, and what comes out is checked with the tools a
//! listener's player would trust (opusinfo, ffprobe, ffmpeg's EBU R128
//! meter).
//!
//! Inputs are 4 s long so that the whole file stays well under a minute in
//! a debug build.

use std::path::{Path, PathBuf};
use std::process::Command;

use veza_controlplane::tracks::media::{
    self, transcode, MediaError, TranscodeConfig, TranscodeOutput,
};

/// Seconds of every generated input.
const SOURCE_SECONDS: f64 = 4.0;

/// A 48 kHz Opus frame, the duration tolerance.
const FRAME_SECONDS: f64 = 0.020;

/// Something like music, quiet (about −33 LUFS, so the gain is large),
/// with short clicks every half second that the gain pushes over the
/// ceiling, so the limiter has peaks to catch. The clicks carry little
/// energy: limiting them barely changes the loudness, as with real
/// transients. Stereo at `rate`.
fn music_like_source(rate: u32) -> String {
    let tones = "0.2*sin(2*PI*220*t)+0.1*sin(2*PI*330*t)*sin(2*PI*0.5*t)+0.05*(random(0)-0.5)";
    let clicks = "0.2*lt(mod(t\\,0.5)\\,0.0002)";
    format!(
        "aevalsrc=exprs='0.1*({tones})+{clicks}|0.1*({tones})-{clicks}':s={rate}:d={SOURCE_SECONDS}"
    )
}

fn run_ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg is installed (scripts/setup.sh)");
    assert!(status.success(), "ffmpeg {args:?} failed");
}

/// Generates `name` in `dir` from the music-like source at `rate`, through
/// the given output options (codec, channels).
fn generate(dir: &Path, name: &str, rate: u32, output_options: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let source = music_like_source(rate);
    let mut args = vec!["-f", "lavfi", "-i", &source];
    args.extend_from_slice(output_options);
    args.push(path.to_str().unwrap());
    run_ffmpeg(&args);
    path
}

fn small_config() -> TranscodeConfig {
    TranscodeConfig {
        duration_max_seconds: 60,
        ..TranscodeConfig::default()
    }
}

fn run(
    input: &Path,
    output_dir: &Path,
    config: &TranscodeConfig,
) -> Result<TranscodeOutput, MediaError> {
    let mut reports = Vec::new();
    let result = transcode(input, output_dir, config, &mut |fraction| {
        reports.push(fraction)
    });
    assert!(
        reports.windows(2).all(|pair| pair[0] <= pair[1]),
        "progress goes forward: {reports:?}"
    );
    assert!(reports
        .iter()
        .all(|fraction| (0.0..=1.0).contains(fraction)));
    assert!(
        reports.len() <= 110,
        "progress is reported about every 1%, not {} times",
        reports.len()
    );
    if result.is_ok() {
        assert_eq!(reports.last(), Some(&1.0));
    }
    result
}

struct Probe {
    codec_name: String,
    sample_rate: String,
    duration_seconds: f64,
}

fn ffprobe(path: &Path) -> Probe {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,sample_rate:format=duration",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "ffprobe {path:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    Probe {
        codec_name: json["streams"][0]["codec_name"].as_str().unwrap().into(),
        sample_rate: json["streams"][0]["sample_rate"].as_str().unwrap().into(),
        duration_seconds: json["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    }
}

/// Integrated loudness (LUFS) and true peak (dBTP) by ffmpeg's ebur128.
fn ffmpeg_loudness(path: &Path) -> (f64, f64) {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(path)
        .args(["-af", "ebur128=peak=true", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last_value = |label: &str| -> f64 {
        let line = stderr
            .lines()
            .rev()
            .find(|line| line.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} in {stderr}"));
        line.trim_start()[label.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (last_value("I:"), last_value("Peak:"))
}

/// Transcodes `input` and checks everything a listener would notice.
/// The EOS page's granule minus the OpusHead's pre-skip is the track's
/// length in samples at 48 kHz (RFC 7845 §4: end trimming), to within the
/// millisecond `duration_ms` is rounded to.
fn assert_end_trimmed_to_the_duration(path: &Path, duration_ms: i64) {
    let bytes = std::fs::read(path).unwrap();
    let mut offset = 0;
    let mut pre_skip = None;
    let mut last_granule = 0;
    while let Some((page, consumed)) = veza_codec::ogg::parse_page(&bytes[offset..]).unwrap() {
        if pre_skip.is_none() {
            pre_skip = Some(
                veza_codec::ogg::OpusHead::parse(page.body)
                    .unwrap()
                    .pre_skip,
            );
        }
        last_granule = page.granule_position;
        offset += consumed;
    }
    assert_eq!(offset, bytes.len(), "{path:?}: whole pages");
    let samples = last_granule - u64::from(pre_skip.unwrap());
    let expected = duration_ms as u64 * 48;
    assert!(
        samples.abs_diff(expected) <= 48,
        "{path:?}: the EOS granule gives {samples} samples, the duration {duration_ms} ms"
    );
}

fn check_ladder(input: &Path) {
    let output_dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let started = std::time::Instant::now();
    let output =
        run(input, output_dir.path(), &config).unwrap_or_else(|error| panic!("{input:?}: {error}"));
    eprintln!(
        "{input:?}: transcoded in {:?}: {output:?}",
        started.elapsed()
    );
    // Not ffprobe's idea of the input's duration: for MP3 it counts the
    // encoder's delay and padding, which gapless decoding removes.
    let source_seconds = SOURCE_SECONDS;
    assert!(
        (output.duration_ms as f64 / 1000.0 - source_seconds).abs() <= FRAME_SECONDS,
        "duration {} ms vs {source_seconds} s",
        output.duration_ms
    );
    assert!(
        output.input_loudness_lufs < -20.0,
        "the source is quiet: {}",
        output.input_loudness_lufs
    );
    assert!(output.applied_gain_db > 5.0);
    assert!(
        output.output_true_peak_dbtp
            <= config.true_peak_max_dbtp - media::ENCODER_HEADROOM_DB + 0.01,
        "limited: {}",
        output.output_true_peak_dbtp
    );
    let bitrates: Vec<u32> = output
        .renditions
        .iter()
        .map(|rendition| rendition.bitrate_kbps)
        .collect();
    assert_eq!(bitrates, config.ladder_bitrates_kbps);
    for rendition in &output.renditions {
        assert_eq!(
            rendition.file_name,
            format!("{}.opus", rendition.bitrate_kbps)
        );
        let path = output_dir.path().join(&rendition.file_name);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            rendition.size_bytes
        );
        assert_end_trimmed_to_the_duration(&path, output.duration_ms);
        let opusinfo = Command::new("opusinfo").arg(&path).output().unwrap();
        assert!(
            opusinfo.status.success(),
            "opusinfo {path:?}: {}",
            String::from_utf8_lossy(&opusinfo.stdout)
        );
        let probe = ffprobe(&path);
        assert_eq!(probe.codec_name, "opus");
        assert_eq!(probe.sample_rate, "48000");
        assert!(
            (probe.duration_seconds - source_seconds).abs() <= FRAME_SECONDS,
            "{path:?} lasts {} s, the source {source_seconds} s",
            probe.duration_seconds
        );
        let bitrate_kbps = rendition.size_bytes as f64 * 8.0 / probe.duration_seconds / 1000.0;
        let rung = f64::from(rendition.bitrate_kbps);
        assert!(
            (bitrate_kbps - rung).abs() <= 0.25 * rung,
            "{path:?}: {bitrate_kbps:.1} kb/s for the {rung} kb/s rung"
        );
        let (integrated_lufs, true_peak_dbtp) = ffmpeg_loudness(&path);
        assert!(
            (integrated_lufs - config.loudness_target_lufs).abs() <= 1.0,
            "{path:?}: {integrated_lufs} LUFS"
        );
        assert!(
            true_peak_dbtp <= config.true_peak_max_dbtp + 0.3,
            "{path:?}: true peak {true_peak_dbtp} dBTP"
        );
    }
    check_waveform(
        &output_dir.path().join(&output.waveform_file_name),
        &config,
        source_seconds,
    );
    let mut names: Vec<String> = std::fs::read_dir(output_dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["160.opus", "64.opus", "96.opus", "waveform.json"],
        "no stray files"
    );
}

fn check_waveform(path: &Path, config: &TranscodeConfig, source_seconds: f64) {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(json["version"], 2);
    assert_eq!(json["channels"], 1);
    assert_eq!(json["sample_rate"], 48_000);
    assert_eq!(json["bits"], 8);
    assert_eq!(json["samples_per_pixel"], config.waveform_samples_per_pixel);
    let length = json["length"].as_u64().unwrap();
    let expected = source_seconds * 48_000.0 / f64::from(config.waveform_samples_per_pixel);
    assert!(
        (length as f64 - expected).abs() <= 1.0,
        "length {length}, expected about {expected}"
    );
    let data = json["data"].as_array().unwrap();
    assert_eq!(data.len() as u64, 2 * length);
    let values: Vec<i64> = data.iter().map(|value| value.as_i64().unwrap()).collect();
    assert!(values.iter().all(|value| (-128..=127).contains(value)));
    assert!(
        values.chunks(2).all(|pair| pair[0] <= pair[1]),
        "min before max"
    );
    // Normalised and limited at −1 dBTP: loud, but not clipping.
    let peak = values.iter().map(|value| value.abs()).max().unwrap();
    assert!((20..=120).contains(&peak), "peak {peak}");
}

/// Asserts the failure, a user-facing reason, and an empty output directory.
fn check_refused(
    input: &Path,
    config: &TranscodeConfig,
    expected: fn(&MediaError) -> bool,
) -> MediaError {
    let output_dir = tempfile::tempdir().unwrap();
    let error = run(input, output_dir.path(), config).expect_err("refused");
    assert!(expected(&error), "{input:?}: unexpected error {error:?}");
    let reason = error.reason();
    assert!(
        reason.ends_with('.') && reason.len() > 20,
        "reason: {reason}"
    );
    assert_eq!(
        std::fs::read_dir(output_dir.path()).unwrap().count(),
        0,
        "no file left behind"
    );
    error
}

#[test]
fn wav_at_44_1_khz_is_resampled_normalised_and_laddered() {
    let dir = tempfile::tempdir().unwrap();
    check_ladder(&generate(
        dir.path(),
        "source.wav",
        44_100,
        &["-c:a", "pcm_s16le"],
    ));
}

#[test]
fn mono_flac_becomes_a_stereo_ladder() {
    let dir = tempfile::tempdir().unwrap();
    check_ladder(&generate(
        dir.path(),
        "source.flac",
        48_000,
        &["-ac", "1", "-c:a", "flac"],
    ));
}

#[test]
fn mp3_is_decoded_gaplessly_into_the_ladder() {
    let dir = tempfile::tempdir().unwrap();
    check_ladder(&generate(
        dir.path(),
        "source.mp3",
        44_100,
        &["-c:a", "libmp3lame", "-b:a", "192k"],
    ));
}

#[test]
fn ogg_vorbis_is_decoded_into_the_ladder() {
    let dir = tempfile::tempdir().unwrap();
    check_ladder(&generate(
        dir.path(),
        "source.ogg",
        44_100,
        &["-c:a", "libvorbis", "-q:a", "6"],
    ));
}

#[test]
fn ogg_opus_is_decoded_by_libopus_into_the_ladder() {
    let dir = tempfile::tempdir().unwrap();
    check_ladder(&generate(
        dir.path(),
        "source.opus",
        48_000,
        &["-c:a", "libopus", "-b:a", "128k"],
    ));
}

#[test]
fn digital_silence_gets_no_gain() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("silence.wav");
    run_ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=48000:cl=stereo",
        "-t",
        "1",
        input.to_str().unwrap(),
    ]);
    let output_dir = tempfile::tempdir().unwrap();
    let output = run(&input, output_dir.path(), &small_config()).unwrap();
    assert_eq!(output.applied_gain_db, 0.0);
    assert_eq!(output.input_loudness_lufs, media::LOUDNESS_FLOOR_LUFS);
    assert_eq!(output.duration_ms, 1_000);
}

#[test]
fn a_text_file_is_not_audio() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("notes.txt");
    std::fs::write(&input, "These are my lyrics, not my song.\n".repeat(50)).unwrap();
    check_refused(&input, &small_config(), |error| {
        matches!(error, MediaError::NotAudio)
    });
    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    check_refused(&empty, &small_config(), |error| {
        matches!(error, MediaError::NotAudio)
    });
}

#[test]
fn wav_and_flac_cut_in_the_header_are_truncated() {
    let dir = tempfile::tempdir().unwrap();
    for (name, options) in [
        ("source.wav", ["-c:a", "pcm_s16le"]),
        ("source.flac", ["-c:a", "flac"]),
    ] {
        let whole = generate(dir.path(), name, 44_100, &options);
        let bytes = std::fs::read(&whole).unwrap();
        let cut = dir.path().join(format!("cut-{name}"));
        std::fs::write(&cut, &bytes[..30]).unwrap();
        check_refused(&cut, &small_config(), |error| {
            matches!(error, MediaError::Truncated)
        });
    }
}

#[test]
fn wav_cut_after_a_few_milliseconds_of_audio_is_truncated_and_after_seconds_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let whole = generate(dir.path(), "source.wav", 48_000, &["-c:a", "pcm_s16le"]);
    let bytes = std::fs::read(&whole).unwrap();
    let barely = dir.path().join("barely.wav");
    std::fs::write(&barely, &bytes[..bytes.len() / 100]).unwrap();
    check_refused(&barely, &small_config(), |error| {
        matches!(error, MediaError::Truncated)
    });
    let half = dir.path().join("half.wav");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let output_dir = tempfile::tempdir().unwrap();
    let output = run(&half, output_dir.path(), &small_config()).unwrap();
    assert!(
        (output.duration_ms - 2_000).abs() <= 20,
        "{} ms",
        output.duration_ms
    );
}

#[test]
fn wav_claiming_hours_but_holding_a_second_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bomb.wav");
    let (rate, channels, bits) = (48_000u32, 2u16, 16u16);
    let block_align = channels * bits / 8;
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&u32::MAX.to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&channels.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    wav.extend_from_slice(&block_align.to_le_bytes());
    wav.extend_from_slice(&bits.to_le_bytes());
    wav.extend_from_slice(b"data");
    // About 6.2 hours at 192 kB/s.
    wav.extend_from_slice(&(u32::MAX - 64).to_le_bytes());
    for frame_idx in 0..rate {
        let sample = ((frame_idx as f32 * 0.05).sin() * 8_000.0) as i16;
        wav.extend_from_slice(&sample.to_le_bytes());
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    std::fs::write(&input, wav).unwrap();
    let config = small_config();
    let output_dir = tempfile::tempdir().unwrap();
    match run(&input, output_dir.path(), &config) {
        Err(MediaError::TooLong {
            seconds,
            max_seconds,
        }) => {
            assert!(seconds > 3_600, "the claimed length is reported: {seconds}");
            assert_eq!(max_seconds, config.duration_max_seconds);
            assert_eq!(std::fs::read_dir(output_dir.path()).unwrap().count(), 0);
        }
        Ok(output) => assert!(
            output.duration_ms <= 1_020,
            "only what is there: {} ms",
            output.duration_ms
        ),
        Err(other) => panic!("unexpected {other:?}"),
    }
}

#[test]
fn flac_whose_streaminfo_claims_hours_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "bomb.flac", 48_000, &["-c:a", "flac"]);
    let mut flac = std::fs::read(&input).unwrap();
    assert_eq!(&flac[..4], b"fLaC");
    assert_eq!(flac[4] & 0x7f, 0, "STREAMINFO is the first metadata block");
    // STREAMINFO starts at byte 8; bytes 18..26 hold sample rate (20 bits),
    // channels (3), bits per sample (5) and the total samples (36 bits).
    let mut packed = u64::from_be_bytes(flac[18..26].try_into().unwrap());
    let five_hours_of_samples: u64 = 48_000 * 3_600 * 5;
    packed = (packed & !((1u64 << 36) - 1)) | five_hours_of_samples;
    flac[18..26].copy_from_slice(&packed.to_be_bytes());
    std::fs::write(&input, &flac).unwrap();
    let error = check_refused(&input, &small_config(), |error| {
        matches!(error, MediaError::TooLong { .. })
    });
    match error {
        MediaError::TooLong { seconds, .. } => {
            assert_eq!(seconds, 5 * 3_600, "the claimed length is reported")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn input_longer_than_the_bound_is_too_long() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "long.flac", 48_000, &["-c:a", "flac"]);
    let config = TranscodeConfig {
        duration_max_seconds: 2,
        ..small_config()
    };
    let error = check_refused(&input, &config, |error| {
        matches!(error, MediaError::TooLong { .. })
    });
    assert!(error.reason().contains("0:02"), "{}", error.reason());
}

#[test]
fn aac_in_m4a_is_an_unsupported_codec() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "song.m4a", 44_100, &["-t", "1", "-c:a", "aac"]);
    let error = check_refused(&input, &small_config(), |error| {
        matches!(
            error,
            MediaError::UnsupportedCodec(_) | MediaError::NotAudio
        )
    });
    assert!(error.reason().contains("MP4"), "{}", error.reason());
}
