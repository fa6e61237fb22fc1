//! The files a run serves: the renditions Veza's control plane made from
//! uploaded WAVs ([`super::veza_tracks`]), or, when nginx runs alone,
//! synthetic files of the sizes those renditions have on average. Range
//! serving does not look inside the files, so their bytes do not matter,
//! only their number and sizes.
//!
//! Also the uploads: one WAV per track, written here (a 44-byte header and
//! PCM samples), so that a thousand uploads need no thousand ffmpeg
//! processes. Each track differs: its own duration, tone and noise.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::range_request::{Rendition, RequestRng};

/// The ladder synthetic files follow: the data plane's default live
/// ladder, which the track ladder is expected to share.
pub const SYNTHETIC_LADDER_KBPS: [u32; 3] = [64, 96, 160];

/// The shortest track, seconds; track `i` lasts `MIN + i % SPREAD`.
const TRACK_SECONDS_MIN: u32 = 5;

/// How many distinct durations tracks cycle through (5..=20 s).
const TRACK_SECONDS_SPREAD: u32 = 16;

/// The uploads' sample rate (CD audio, so the control plane resamples to
/// Opus's 48 kHz as it would for most uploads).
const WAV_SAMPLE_RATE_HZ: u32 = 44_100;

/// The uploads' channels.
const WAV_CHANNELS: u16 = 2;

/// Where the files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaSource {
    /// Veza's control plane transcoded uploaded WAVs.
    Veza,
    /// Generated here with the sizes of [`SYNTHETIC_LADDER_KBPS`].
    Synthetic,
}

impl MediaSource {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            MediaSource::Veza => "veza-transcoded",
            MediaSource::Synthetic => "synthetic",
        }
    }
}

/// The renditions of a run and the directory that holds
/// `tracks/{id}/{kbps}.opus`.
#[derive(Debug)]
pub struct Catalogue {
    /// Every rendition, in track then bitrate order.
    pub renditions: Vec<Rendition>,
    /// The media directory (the static server's root).
    pub media_root: PathBuf,
    /// Where the files come from.
    pub source: MediaSource,
    /// Tracks in the catalogue.
    pub n_tracks: usize,
    /// The directory the files live in, removed when the catalogue is
    /// dropped (`None` while a running Veza still owns it).
    pub directory: Option<tempfile::TempDir>,
}

impl Catalogue {
    /// The sum of the renditions' sizes.
    pub fn total_bytes(&self) -> u64 {
        self.renditions
            .iter()
            .map(|rendition| rendition.size_bytes)
            .sum()
    }
}

/// How long track `track_idx` lasts.
pub fn track_seconds(track_idx: usize) -> u32 {
    TRACK_SECONDS_MIN + (track_idx as u32) % TRACK_SECONDS_SPREAD
}

/// Writes synthetic renditions for `n_tracks` tracks (ids `1..=n`) into a
/// new temporary directory.
pub fn synthetic(n_tracks: usize) -> std::io::Result<Catalogue> {
    let directory = tempfile::Builder::new()
        .prefix("veza-bench-media-")
        .tempdir()?;
    let media_root = directory.path().join("media");
    let mut renditions = Vec::with_capacity(n_tracks * SYNTHETIC_LADDER_KBPS.len());
    let mut rng = RequestRng::new(0x6d_6564_6961, 0);
    for track_idx in 0..n_tracks {
        let track_id = (track_idx + 1).to_string();
        let track_dir = media_root.join("tracks").join(&track_id);
        std::fs::create_dir_all(&track_dir)?;
        for bitrate_kbps in SYNTHETIC_LADDER_KBPS {
            // kb/s × 1000 / 8 bytes per second.
            let size_bytes = u64::from(track_seconds(track_idx)) * u64::from(bitrate_kbps) * 125;
            write_noise(
                &track_dir.join(format!("{bitrate_kbps}.opus")),
                size_bytes,
                &mut rng,
            )?;
            renditions.push(Rendition {
                track_id: track_id.clone(),
                bitrate_kbps,
                size_bytes,
            });
        }
    }
    Ok(Catalogue {
        renditions,
        media_root,
        source: MediaSource::Synthetic,
        n_tracks,
        directory: Some(directory),
    })
}

fn write_noise(path: &Path, size_bytes: u64, rng: &mut RequestRng) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut remaining = size_bytes;
    // Bounded by the size: each turn writes up to 8 bytes.
    while remaining > 0 {
        let word = rng.below(u64::MAX).to_le_bytes();
        let n_bytes = remaining.min(8) as usize;
        file.write_all(&word[..n_bytes])?;
        remaining -= n_bytes as u64;
    }
    file.flush()
}

/// A WAV file (PCM s16le, 44.1 kHz stereo) for track `track_idx`: a tone
/// of its own pitch under a little noise, [`track_seconds`] long.
pub fn wav_bytes(track_idx: usize) -> Vec<u8> {
    let n_frames = WAV_SAMPLE_RATE_HZ * track_seconds(track_idx);
    let data_bytes = n_frames * u32::from(WAV_CHANNELS) * 2;
    let mut wav = Vec::with_capacity(44 + data_bytes as usize);
    let byte_rate = WAV_SAMPLE_RATE_HZ * u32::from(WAV_CHANNELS) * 2;
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_bytes).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&WAV_CHANNELS.to_le_bytes());
    wav.extend_from_slice(&WAV_SAMPLE_RATE_HZ.to_le_bytes());
    wav.extend_from_slice(&byte_rate.to_le_bytes());
    wav.extend_from_slice(&(WAV_CHANNELS * 2).to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_bytes.to_le_bytes());
    // A semitone apart per track over two octaves from 110 Hz.
    let frequency_hz = 110.0 * 2f64.powf((track_idx % 24) as f64 / 12.0);
    let mut rng = RequestRng::new(0x77_6176, track_idx);
    for frame_idx in 0..n_frames {
        let phase = std::f64::consts::TAU * frequency_hz * f64::from(frame_idx)
            / f64::from(WAV_SAMPLE_RATE_HZ);
        for channel in 0..WAV_CHANNELS {
            let noise = rng.below(2001) as f64 - 1000.0;
            let tone = 8000.0 * (phase + f64::from(channel)).sin();
            wav.extend_from_slice(&((tone + noise) as i16).to_le_bytes());
        }
    }
    wav
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wav_has_its_header_and_its_duration() {
        let wav = wav_bytes(1);
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        let data_bytes = u32::from_le_bytes(wav[40..44].try_into().unwrap());
        assert_eq!(data_bytes as usize, wav.len() - 44);
        assert_eq!(data_bytes, 44_100 * 2 * 2 * 6);
        assert_ne!(wav_bytes(0)[44..1000], wav_bytes(2)[44..1000]);
    }

    #[test]
    fn synthetic_files_have_the_sizes_of_the_ladder() {
        let catalogue = synthetic(2).unwrap();
        assert_eq!(catalogue.renditions.len(), 6);
        let first = &catalogue.renditions[0];
        assert_eq!((first.track_id.as_str(), first.bitrate_kbps), ("1", 64));
        assert_eq!(first.size_bytes, 5 * 64 * 125);
        let path = catalogue.media_root.join("tracks/2/160.opus");
        assert_eq!(std::fs::metadata(path).unwrap().len(), 6 * 160 * 125);
    }
}
