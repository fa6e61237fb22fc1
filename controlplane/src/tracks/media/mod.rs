//! The track processing pipeline: one uploaded file in, an Ogg Opus ladder
//! and a waveform out. [`transcode`] blocks (it decodes, resamples, measures
//! and encodes on the calling thread) and is meant for the worker threads of
//! `tracks::jobs`, never for an async task.
//!
//! Codemap:
//! - `decode`: what the file is (probe, magic numbers), and its decoders:
//!   symphonia for WAV, FLAC, MP3 and Ogg Vorbis, libopus for Ogg Opus
//!   (symphonia 0.5 has no Opus decoder), all yielding stereo blocks.
//! - `reader`: [`transcode`]'s view of the input: stereo, 48 kHz (rubato),
//!   the duration bound and the truncation policy.
//! - `renditions`: one Ogg Opus file per rung, paged with RFC 7845 end
//!   trimming, and the staged-file guard (`.tmp`, fsync, rename, fsync the
//!   directory, or remove everything on error).
//! - `waveform`: BBC audiowaveform JSON (version 2, 8 bits).
//!
//! Decisions:
//! - **Two passes, bounded memory.** Pass 1 decodes and measures integrated
//!   loudness (EBU R128); pass 2 decodes again, applies the gain, limits the
//!   true peak and encodes. The decoded file is never held: memory is a few
//!   blocks of PCM, the encoders, and the waveform (2 bytes per pixel).
//! - **Always stereo out.** Mono is duplicated, more than two channels keep
//!   the first two (front left and right in every layout symphonia
//!   reports): one channel layout for players, the ladder and the meter.
//! - **Always 48 kHz out**, Opus' native rate; other rates go through an
//!   FFT resampler (rubato's `FftFixedInOut`), with its delay removed so
//!   the output lines up with the input sample for sample.
//! - **Deterministic output.** The same input and configuration produce the
//!   same bytes (serial numbers derive from the bitrate), so processing a
//!   track again does not change its ETag.
//! - **Duration bound** (`duration_max_seconds`): a container that claims a
//!   longer duration is refused before decoding, and decoding stops as soon
//!   as the decoded frames pass the bound, so a header that lies costs at
//!   most the bound's worth of CPU, never memory.
//! - **Truncated input** (see `reader`): when the container is broken
//!   before any audio decodes, [`MediaError::Truncated`]; when it breaks
//!   (or ends short of its claimed length) after at least
//!   [`TRUNCATED_AUDIO_MS_MIN`] of audio, the audio that is there becomes
//!   the track; less than that is [`MediaError::Truncated`].

mod decode;
mod reader;
mod renditions;
mod waveform;

use std::path::Path;

use veza_codec::dsp::{DspChain, DspConfig, EqConfig, LimiterConfig};
use veza_codec::opus_ladder::{OpusLadder, BITRATE_KBPS_MAX, BITRATE_KBPS_MIN, FRAME_SAMPLE_COUNT};
use veza_codec::opus_ladder::{RENDITION_COUNT_MAX, SAMPLE_RATE_HZ};

use reader::PcmReader;
use renditions::{RenditionWriter, StagedFiles};
use waveform::Waveform;

/// The output sample rate: Opus' native rate.
pub const OUTPUT_SAMPLE_RATE_HZ: u32 = SAMPLE_RATE_HZ;

/// The output channel count (see the module docs: always stereo).
pub const OUTPUT_CHANNEL_COUNT: u8 = 2;

/// The most the normalisation gain moves a track, either way, in dB: a
/// near-silent track is not lifted by 60 dB into its noise floor.
pub const GAIN_DB_MAX: f64 = 20.0;

/// How far below `true_peak_max_dbtp` the limiter holds the PCM it feeds
/// the encoders, in dB. Lossy coding overshoots: the decoded Opus of a
/// sharp transient peaks up to about 1 dB above its input at 64 kb/s (the
/// pipeline's tests measure 0.6–0.9 dB on clicks), so the ceiling the
/// listener hears is met with the margin AES TD1004 recommends for low
/// bitrates.
pub const ENCODER_HEADROOM_DB: f64 = 1.0;

/// Input loudness reported for a track quieter than EBU R128's absolute
/// gate (silence): its gain is 0 dB.
pub const LOUDNESS_FLOOR_LUFS: f64 = -70.0;

/// True peak reported for digital silence.
pub const TRUE_PEAK_FLOOR_DBTP: f64 = -120.0;

/// A file that breaks off after less audio than this is refused as
/// [`MediaError::Truncated`]; with at least this much, the audio that is
/// there becomes the track.
pub const TRUNCATED_AUDIO_MS_MIN: u64 = 1_000;

/// The waveform file's name in the output directory.
pub const WAVEFORM_FILE_NAME: &str = "waveform.json";

/// Progress is reported when it has moved by at least this much.
const PROGRESS_STEP: f32 = 0.01;

/// The share of the progress range that pass 1 (measuring) covers.
const PASS_1_PROGRESS_SHARE: f32 = 0.4;

/// How to process a track; `tracks.*` in the control plane's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscodeConfig {
    /// The Opus rungs in kb/s, one file each; default 64, 96 and 160.
    pub ladder_bitrates_kbps: Vec<u32>,
    /// Integrated loudness (EBU R128) the output is normalised to, LUFS.
    pub loudness_target_lufs: f64,
    /// The highest true peak of the decoded renditions, dBTP; the PCM
    /// is limited [`ENCODER_HEADROOM_DB`] below it.
    pub true_peak_max_dbtp: f64,
    /// Longer inputs are refused (bomb protection).
    pub duration_max_seconds: u64,
    /// Audio per Ogg page of the renditions, ms.
    pub page_duration_ms: u32,
    /// 48 kHz frames per waveform pixel (4800: 10 pixels a second).
    pub waveform_samples_per_pixel: u32,
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        Self {
            ladder_bitrates_kbps: vec![64, 96, 160],
            loudness_target_lufs: -14.0,
            true_peak_max_dbtp: -1.0,
            duration_max_seconds: 3_600,
            page_duration_ms: 1_000,
            waveform_samples_per_pixel: 4_800,
        }
    }
}

impl TranscodeConfig {
    /// Checks every field's range; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let rungs = &self.ladder_bitrates_kbps;
        if rungs.is_empty() || rungs.len() > RENDITION_COUNT_MAX {
            return Err(format!(
                "ladder_bitrates_kbps needs 1 to {RENDITION_COUNT_MAX} rungs"
            ));
        }
        for (rung_idx, bitrate_kbps) in rungs.iter().enumerate() {
            if !(BITRATE_KBPS_MIN..=BITRATE_KBPS_MAX).contains(bitrate_kbps) {
                return Err(format!("ladder_bitrates_kbps: {bitrate_kbps} is outside {BITRATE_KBPS_MIN}..={BITRATE_KBPS_MAX}"));
            }
            if rungs[..rung_idx].contains(bitrate_kbps) {
                return Err(format!(
                    "ladder_bitrates_kbps: {bitrate_kbps} appears twice"
                ));
            }
        }
        // The ranges the DSP chain accepts for its gain target and ceiling.
        if !(-40.0..=-5.0).contains(&self.loudness_target_lufs) {
            return Err("loudness_target_lufs must be in [-40, -5]".into());
        }
        // The limiter's ceiling (this less ENCODER_HEADROOM_DB) must be in
        // the DSP chain's range, [-20, 0].
        if !(-19.0..=0.0).contains(&self.true_peak_max_dbtp) {
            return Err("true_peak_max_dbtp must be in [-19, 0]".into());
        }
        if self.duration_max_seconds == 0 || self.duration_max_seconds > 24 * 3_600 {
            return Err("duration_max_seconds must be in [1, 86400]".into());
        }
        if !(20..=10_000).contains(&self.page_duration_ms) {
            return Err("page_duration_ms must be in [20, 10000]".into());
        }
        if !(32..=1_000_000).contains(&self.waveform_samples_per_pixel) {
            return Err("waveform_samples_per_pixel must be in [32, 1000000]".into());
        }
        Ok(())
    }
}

/// One rendition written to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionFile {
    /// The rung, kb/s.
    pub bitrate_kbps: u32,
    /// `{bitrate_kbps}.opus`, relative to the output directory.
    pub file_name: String,
    /// The file's size.
    pub size_bytes: u64,
}

/// What [`transcode`] produced and measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscodeOutput {
    /// The decoded duration (after resampling, at 48 kHz), ms.
    pub duration_ms: i64,
    /// Integrated loudness of the input, LUFS ([`LOUDNESS_FLOOR_LUFS`] for
    /// silence).
    pub input_loudness_lufs: f64,
    /// The gain applied before the limiter, dB.
    pub applied_gain_db: f64,
    /// True peak of the PCM fed to the encoders, dBTP (at most
    /// `true_peak_max_dbtp - ENCODER_HEADROOM_DB`; [`TRUE_PEAK_FLOOR_DBTP`]
    /// for silence).
    pub output_true_peak_dbtp: f64,
    /// One file per rung, in the configuration's order.
    pub renditions: Vec<RenditionFile>,
    /// [`WAVEFORM_FILE_NAME`].
    pub waveform_file_name: String,
}

/// Why a track could not be processed. [`MediaError::reason`] is the
/// sentence users see; `Display` is for logs.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Not an audio file of any format we know.
    #[error("not an audio file")]
    NotAudio,
    /// Audio, but in a format or codec we do not decode.
    #[error("unsupported audio format: {0}")]
    UnsupportedCodec(String),
    /// The container breaks off before (enough) audio.
    #[error("truncated before any audio")]
    Truncated,
    /// Longer than `duration_max_seconds`.
    #[error("{seconds} s is longer than the {max_seconds} s limit")]
    TooLong {
        /// The claimed duration, or how far decoding got before it stopped.
        seconds: u64,
        /// The limit.
        max_seconds: u64,
    },
    /// The audio is malformed.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// The encoder or the DSP chain failed (our side).
    #[error("encoding failed: {0}")]
    Encode(String),
    /// Reading the input or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The job was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The [`TranscodeConfig`] is out of range (a configuration mistake,
    /// caught here as well as at start).
    #[error("invalid transcode configuration: {0}")]
    Config(String),
}

impl MediaError {
    /// One sentence for the track's `failure_reason`, shown to its owner.
    pub fn reason(&self) -> String {
        const FORMATS: &str = "WAV, FLAC, MP3, Ogg Vorbis or Ogg Opus";
        match self {
            MediaError::NotAudio => {
                format!("The file is not audio in a format we recognise ({FORMATS}).")
            }
            MediaError::UnsupportedCodec(codec) => {
                format!(
                    "The file's audio format ({codec}) is not supported; please upload {FORMATS}."
                )
            }
            MediaError::Truncated => {
                "The file ends before its audio does; it seems truncated or damaged.".into()
            }
            MediaError::TooLong {
                seconds,
                max_seconds,
            } => format!(
                "The track lasts {} or more, longer than the limit of {}.",
                minutes_seconds(*seconds),
                minutes_seconds(*max_seconds)
            ),
            MediaError::Decode(detail) => {
                format!("The audio could not be decoded ({detail}); the file may be damaged.")
            }
            MediaError::Encode(_) | MediaError::Io(_) | MediaError::Config(_) => {
                "Processing failed on our side; please try again later.".into()
            }
            MediaError::Cancelled => "Processing was cancelled.".into(),
        }
    }
}

fn minutes_seconds(seconds: u64) -> String {
    format!("{}:{:02}", seconds / 60, seconds % 60)
}

/// Decodes `input`, normalises its loudness, limits its true peak and
/// writes the Opus ladder and the waveform into `output_dir` (which must
/// exist). `progress` hears 0 to 1: pass 1 covers 0–0.4, pass 2 0.4–1.
///
/// On success every file is fsynced and renamed into place and the
/// directory fsynced; on error nothing is left in `output_dir` that this
/// call created (files of an earlier run with the same names are replaced
/// only on success).
pub fn transcode(
    input: &Path,
    output_dir: &Path,
    config: &TranscodeConfig,
    progress: &mut dyn FnMut(f32),
) -> Result<TranscodeOutput, MediaError> {
    config.validate().map_err(MediaError::Config)?;
    let mut reporter = ProgressReporter::new(progress);
    let input_loudness_lufs = measure_loudness(input, config, &mut reporter)?;
    let applied_gain_db = if input_loudness_lufs.is_finite() {
        (config.loudness_target_lufs - input_loudness_lufs).clamp(-GAIN_DB_MAX, GAIN_DB_MAX)
    } else {
        0.0
    };
    let mut staged = StagedFiles::new(output_dir);
    let encoded = encode(input, config, applied_gain_db, &mut staged, &mut reporter)?;
    staged.commit()?;
    reporter.report(1.0);
    Ok(TranscodeOutput {
        duration_ms: (encoded.frame_count * 1000 / u64::from(OUTPUT_SAMPLE_RATE_HZ)) as i64,
        input_loudness_lufs: if input_loudness_lufs.is_finite() {
            input_loudness_lufs
        } else {
            LOUDNESS_FLOOR_LUFS
        },
        applied_gain_db,
        output_true_peak_dbtp: encoded.true_peak_dbtp,
        renditions: encoded.renditions,
        waveform_file_name: WAVEFORM_FILE_NAME.into(),
    })
}

/// Pass 1: the input's integrated loudness (−∞ for silence). Only
/// `Mode::I`: the true peak that matters is the output's, measured in
/// pass 2 after the limiter.
fn measure_loudness(
    input: &Path,
    config: &TranscodeConfig,
    reporter: &mut ProgressReporter<'_>,
) -> Result<f64, MediaError> {
    let mut reader = PcmReader::open(input, config.duration_max_seconds)?;
    let mut meter = ebur128::EbuR128::new(
        u32::from(OUTPUT_CHANNEL_COUNT),
        OUTPUT_SAMPLE_RATE_HZ,
        ebur128::Mode::I,
    )
    .map_err(|error| MediaError::Encode(format!("loudness meter: {error}")))?;
    let mut block = Vec::new();
    while reader.read(&mut block)? {
        meter
            .add_frames_f32(&block)
            .map_err(|error| MediaError::Encode(format!("loudness meter: {error}")))?;
        reporter.report(PASS_1_PROGRESS_SHARE * reader.progress());
    }
    meter
        .loudness_global()
        .map_err(|error| MediaError::Encode(format!("loudness meter: {error}")))
}

/// What pass 2 wrote and measured.
struct Encoded {
    frame_count: u64,
    true_peak_dbtp: f64,
    renditions: Vec<RenditionFile>,
}

/// Pass 2: gain, limiter, ladder, pagers, waveform; files staged as `.tmp`.
fn encode(
    input: &Path,
    config: &TranscodeConfig,
    gain_db: f64,
    staged: &mut StagedFiles,
    reporter: &mut ProgressReporter<'_>,
) -> Result<Encoded, MediaError> {
    let mut reader = PcmReader::open(input, config.duration_max_seconds)?;
    let mut ladder = OpusLadder::new(&config.ladder_bitrates_kbps, OUTPUT_CHANNEL_COUNT)
        .map_err(|error| MediaError::Encode(error.to_string()))?;
    let page_duration_samples = config.page_duration_ms * (OUTPUT_SAMPLE_RATE_HZ / 1000);
    let mut writers = config
        .ladder_bitrates_kbps
        .iter()
        .map(|&bitrate_kbps| {
            RenditionWriter::create(
                staged,
                bitrate_kbps,
                ladder.pre_skip(),
                page_duration_samples,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ceiling_dbtp = config.true_peak_max_dbtp - ENCODER_HEADROOM_DB;
    let mut stage = NormaliseStage::new(gain_db, ceiling_dbtp)?;
    let mut waveform = Waveform::new(config.waveform_samples_per_pixel);
    let mut block = Vec::new();
    let mut sink = |block: &[f32], ladder: &mut OpusLadder, writers: &mut [RenditionWriter]| {
        waveform.push(block);
        ladder
            .push_pcm(block, &mut |rendition_idx, packet, _samples| {
                writers[rendition_idx].push_packet(packet)
            })
            .map_err(|error| MediaError::Encode(error.to_string()))
    };
    while reader.read(&mut block)? {
        stage.process(&mut block)?;
        sink(stage.output(&block), &mut ladder, &mut writers)?;
        reporter.report(PASS_1_PROGRESS_SHARE + (1.0 - PASS_1_PROGRESS_SHARE) * reader.progress());
    }
    stage.flush(&mut block)?;
    sink(stage.output(&block), &mut ladder, &mut writers)?;
    let frame_count = stage.frames_out;
    // Enough silence after the audio that the decoder, which lags by the
    // pre-skip, gets every source sample out; end trimming removes the rest.
    let frames_needed = frame_count + u64::from(ladder.pre_skip());
    let frames_padded =
        frames_needed.div_ceil(FRAME_SAMPLE_COUNT as u64) * FRAME_SAMPLE_COUNT as u64;
    let padding =
        vec![0.0; (frames_padded - frame_count) as usize * usize::from(OUTPUT_CHANNEL_COUNT)];
    ladder
        .push_pcm(&padding, &mut |rendition_idx, packet, _samples| {
            writers[rendition_idx].push_packet(packet)
        })
        .map_err(|error| MediaError::Encode(error.to_string()))?;
    debug_assert_eq!(ladder.pending_sample_count(), 0);
    let mut renditions = Vec::with_capacity(writers.len());
    for writer in writers {
        // The EOS granule is pre-skip + the source's frames; the padding
        // after them is trimmed by the decoder.
        renditions.push(writer.finish(frame_count)?);
    }
    waveform.write(staged)?;
    Ok(Encoded {
        frame_count,
        true_peak_dbtp: stage.true_peak_dbtp()?,
        renditions,
    })
}

/// Gain and true-peak limiter (the live DSP chain with everything else
/// off), the limiter's delay removed, and the output's true peak measured.
struct NormaliseStage {
    chain: DspChain,
    /// Output frames still to drop: the limiter's lookahead delay.
    latency_frames_remaining: usize,
    /// Frames of the current block to drop (the start of the delay).
    skip_frames: usize,
    frames_in: u64,
    frames_out: u64,
    peak_meter: ebur128::EbuR128,
}

impl NormaliseStage {
    fn new(gain_db: f64, ceiling_dbtp: f64) -> Result<Self, MediaError> {
        let dsp_config = DspConfig {
            gain_db: gain_db as f32,
            eq: EqConfig::default(),
            compressor: None,
            limiter: LimiterConfig {
                enabled: true,
                ceiling_dbtp: ceiling_dbtp as f32,
                ..LimiterConfig::default()
            },
            loudness_target_lufs: None,
        };
        let chain = DspChain::new(&dsp_config, OUTPUT_SAMPLE_RATE_HZ, OUTPUT_CHANNEL_COUNT)
            .map_err(|error| MediaError::Encode(format!("DSP chain: {error}")))?;
        let peak_meter = ebur128::EbuR128::new(
            u32::from(OUTPUT_CHANNEL_COUNT),
            OUTPUT_SAMPLE_RATE_HZ,
            ebur128::Mode::TRUE_PEAK,
        )
        .map_err(|error| MediaError::Encode(format!("true-peak meter: {error}")))?;
        Ok(Self {
            latency_frames_remaining: chain.latency_samples(),
            chain,
            skip_frames: 0,
            frames_in: 0,
            frames_out: 0,
            peak_meter,
        })
    }

    /// Processes a block in place; [`NormaliseStage::output`] then gives
    /// the part of it that is audio (not the limiter's initial delay).
    fn process(&mut self, block: &mut [f32]) -> Result<(), MediaError> {
        let channels = usize::from(OUTPUT_CHANNEL_COUNT);
        self.frames_in += (block.len() / channels) as u64;
        self.chain.process(block);
        let frames = block.len() / channels;
        self.skip_frames = self.latency_frames_remaining.min(frames);
        self.latency_frames_remaining -= self.skip_frames;
        let output = &block[self.skip_frames * channels..];
        self.frames_out += (output.len() / channels) as u64;
        self.peak_meter
            .add_frames_f32(output)
            .map_err(|error| MediaError::Encode(format!("true-peak meter: {error}")))
    }

    /// Pushes the limiter's delay out with silence into `block`, so that
    /// exactly as many frames come out as went in.
    fn flush(&mut self, block: &mut Vec<f32>) -> Result<(), MediaError> {
        let frames_missing = (self.frames_in - self.frames_out) as usize;
        let latency = self.chain.latency_samples();
        block.clear();
        block.resize(latency * usize::from(OUTPUT_CHANNEL_COUNT), 0.0);
        self.process(block)?;
        // Keep only the delayed audio, not the silence behind it.
        let channels = usize::from(OUTPUT_CHANNEL_COUNT);
        let kept = (self.skip_frames + frames_missing) * channels;
        self.frames_out -= ((block.len() - kept) / channels) as u64;
        block.truncate(kept);
        Ok(())
    }

    fn output<'a>(&self, block: &'a [f32]) -> &'a [f32] {
        &block[self.skip_frames * usize::from(OUTPUT_CHANNEL_COUNT)..]
    }

    fn true_peak_dbtp(&self) -> Result<f64, MediaError> {
        let mut peak: f64 = 0.0;
        for channel in 0..u32::from(OUTPUT_CHANNEL_COUNT) {
            let channel_peak = self
                .peak_meter
                .true_peak(channel)
                .map_err(|error| MediaError::Encode(format!("true-peak meter: {error}")))?;
            peak = peak.max(channel_peak);
        }
        Ok(if peak > 0.0 {
            (20.0 * peak.log10()).max(TRUE_PEAK_FLOOR_DBTP)
        } else {
            TRUE_PEAK_FLOOR_DBTP
        })
    }
}

/// Calls the caller's progress callback when the fraction has moved by at
/// least [`PROGRESS_STEP`] (so at most about a hundred times per job).
struct ProgressReporter<'a> {
    callback: &'a mut dyn FnMut(f32),
    last_reported: f32,
}

impl<'a> ProgressReporter<'a> {
    fn new(callback: &'a mut dyn FnMut(f32)) -> Self {
        callback(0.0);
        Self {
            callback,
            last_reported: 0.0,
        }
    }

    fn report(&mut self, fraction: f32) {
        let fraction = fraction.clamp(0.0, 1.0);
        if fraction - self.last_reported >= PROGRESS_STEP
            || (fraction == 1.0 && self.last_reported < 1.0)
        {
            self.last_reported = fraction;
            (self.callback)(fraction);
        }
    }
}
