//! Tracks on demand: uploads streamed to disk, processed off the request
//! path by a fixed pool of worker threads into an Ogg Opus ladder and a
//! waveform, served by the data plane from the media directory both
//! processes share.
//!
//! Codemap:
//! - [`media`]: the blocking pipeline (decode, loudness, transcode, waveform).
//! - `upload`: `POST /v1/tracks`, raw or multipart, streamed chunk by chunk
//!   to `uploads/*.part`, then the row, the original moved to
//!   `originals/{id}` and the job queued, in that order.
//! - [`jobs`]: the bounded job queue, the worker threads, recovery at start.
//! - `track`: the other REST routes (get, list, change, delete, signed URL).
//! - [`signed_url`]: the message a signed audio URL's signature covers.
//! - [`lookup`]: the control protocol's `LookupTrack` and `RecordPlays`.
//!
//! Files under `tracks.media_dir`:
//! - `uploads/{random}.part`: an upload being received; removed when the
//!   upload fails, swept at start.
//! - `originals/{track_id}`: the uploaded file until the track is processed
//!   (kept afterwards, so a track can be processed again; removed with the
//!   track or when processing fails).
//! - `tracks/{track_id}/{bitrate}.opus`, `tracks/{track_id}/waveform.json`:
//!   what the data plane serves; written by the pipeline, fsynced before the
//!   track turns `ready`.
//!
//! Architecture Invariant: a track is `ready` only after every file it names
//! is written and fsynced, and the data plane is only ever told about ready
//! tracks (`LookupTrack` answers `NotFound` otherwise), so no listener sees a
//! half-written rendition. A queued or processing track survives a crash: its
//! original is on disk before its row commits, and at start every such track
//! is queued again.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use veza_codec::config_layers;

use crate::config::{Config, ConfigError};
use crate::state::AppState;

pub mod media;

pub mod jobs;
pub mod lookup;
pub mod recording_import;
pub mod signed_url;
mod track;
mod upload;

pub use jobs::TrackJobs;

/// `[tracks]`: uploads, processing and signed URLs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracksConfig {
    /// Where uploads, originals and renditions live; empty:
    /// `{server.data_dir}/media`. The data plane reads the same directory.
    pub media_dir: String,
    /// Largest upload, in bytes; past it 413 and nothing is kept.
    pub upload_bytes_max: u64,
    /// Tracks waiting for a worker; past it uploads answer 503.
    pub job_queue_max: usize,
    /// Worker threads processing tracks (std threads, never the runtime's).
    pub workers: usize,
    /// The Opus ladder, ascending kb/s.
    pub ladder_bitrates_kbps: Vec<u32>,
    /// Loudness every track is normalised to (EBU R128 integrated), LUFS.
    pub loudness_target_lufs: f64,
    /// Highest true peak after normalisation, dBTP.
    pub true_peak_max_dbtp: f64,
    /// Longest track; a longer upload fails.
    pub duration_max_seconds: u64,
    /// Duration of audio in one Ogg page of a rendition.
    pub page_duration_ms: u32,
    /// Longest lifetime of a signed audio URL.
    pub signed_url_seconds_max: u64,
    /// Longest title, in characters.
    pub title_chars_max: usize,
    /// Longest description, in characters.
    pub description_chars_max: usize,
    /// Most tags on one track.
    pub tags_max: usize,
    /// Longest tag, in characters.
    pub tag_chars_max: usize,
    /// Tracks in a page when the request gives no `limit`.
    pub page_items_default: i64,
    /// Most tracks in a page.
    pub page_items_max: i64,
}

impl Default for TracksConfig {
    fn default() -> Self {
        Self {
            media_dir: String::new(),
            upload_bytes_max: 512 * 1024 * 1024,
            job_queue_max: 256,
            workers: 1,
            ladder_bitrates_kbps: vec![64, 96, 160],
            loudness_target_lufs: -14.0,
            true_peak_max_dbtp: -1.0,
            duration_max_seconds: 3600,
            page_duration_ms: 1000,
            signed_url_seconds_max: 7 * 24 * 3600,
            title_chars_max: 200,
            description_chars_max: 4000,
            tags_max: 20,
            tag_chars_max: 64,
            page_items_default: 50,
            page_items_max: 100,
        }
    }
}

impl TracksConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, why: &str| Err(config_layers::invalid(key, why).into());
        let integer_checks: [(&str, i64, i64, i64); 11] = [
            (
                "tracks.upload_bytes_max",
                i64::try_from(self.upload_bytes_max).unwrap_or(i64::MAX),
                1024,
                1 << 40,
            ),
            ("tracks.job_queue_max", self.job_queue_max as i64, 1, 65_536),
            ("tracks.workers", self.workers as i64, 1, 64),
            (
                "tracks.duration_max_seconds",
                self.duration_max_seconds as i64,
                1,
                24 * 3600,
            ),
            (
                "tracks.page_duration_ms",
                i64::from(self.page_duration_ms),
                20,
                10_000,
            ),
            (
                "tracks.signed_url_seconds_max",
                self.signed_url_seconds_max as i64,
                1,
                365 * 24 * 3600,
            ),
            (
                "tracks.title_chars_max",
                self.title_chars_max as i64,
                1,
                4096,
            ),
            (
                "tracks.description_chars_max",
                self.description_chars_max as i64,
                0,
                65_536,
            ),
            ("tracks.tags_max", self.tags_max as i64, 0, 256),
            ("tracks.tag_chars_max", self.tag_chars_max as i64, 1, 256),
            ("tracks.page_items_max", self.page_items_max, 1, 10_000),
        ];
        for (key, value, low, high) in integer_checks {
            if value < low || value > high {
                return invalid(key, &format!("must be between {low} and {high}"));
            }
        }
        if !(1..=self.page_items_max).contains(&self.page_items_default) {
            return invalid(
                "tracks.page_items_default",
                "must be between 1 and tracks.page_items_max",
            );
        }
        let ladder = &self.ladder_bitrates_kbps;
        if ladder.is_empty()
            || ladder.len() > 8
            || ladder.windows(2).any(|pair| pair[0] >= pair[1])
            || ladder.iter().any(|&kbps| !(6..=510).contains(&kbps))
        {
            return invalid(
                "tracks.ladder_bitrates_kbps",
                "must be 1 to 8 ascending bitrates, each 6 to 510 kb/s (Opus' range)",
            );
        }
        if !(-70.0..=0.0).contains(&self.loudness_target_lufs) {
            return invalid("tracks.loudness_target_lufs", "must be between -70 and 0");
        }
        if !(-20.0..=0.0).contains(&self.true_peak_max_dbtp) {
            return invalid("tracks.true_peak_max_dbtp", "must be between -20 and 0");
        }
        // The pipeline's own bounds, so a value it would refuse for every
        // track stops the start instead.
        if let Err(why) = jobs::transcode_config(self).validate() {
            return invalid("tracks", &why);
        }
        Ok(())
    }
}

/// Where a track's files live; every path is under the media directory.
#[derive(Debug, Clone)]
pub struct MediaPaths {
    root: PathBuf,
}

impl MediaPaths {
    /// The media directory of `config` (`tracks.media_dir`, or
    /// `{server.data_dir}/media` when that is empty).
    pub fn new(config: &Config) -> Self {
        let root = if config.tracks.media_dir.is_empty() {
            config.data_dir().join("media")
        } else {
            PathBuf::from(&config.tracks.media_dir)
        };
        Self { root }
    }

    /// The media directory.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Uploads being received.
    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// Originals of tracks.
    pub fn originals(&self) -> PathBuf {
        self.root.join("originals")
    }

    /// The original of `track_id`.
    pub fn original(&self, track_id: i64) -> PathBuf {
        self.originals().join(track_id.to_string())
    }

    /// The directory of `track_id`'s renditions and waveform.
    pub fn track_directory(&self, track_id: i64) -> PathBuf {
        self.root.join(track_relative_directory(track_id))
    }
}

/// `tracks/{track_id}`: a track's output directory relative to the media
/// directory, as the data plane is told.
pub fn track_relative_directory(track_id: i64) -> String {
    format!("tracks/{track_id}")
}

/// The track routes.
pub fn router() -> OpenApiRouter<AppState> {
    track::router()
}

/// The upload route, apart from the others because it carries its own body
/// limit (`tracks.upload_bytes_max`, counted while streaming) instead of the
/// router's `server.request_body_bytes_max`.
pub fn upload_router() -> OpenApiRouter<AppState> {
    upload::router()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_the_upload_and_the_list_on_one_path() {
        let (_, _, document) = crate::api::router_and_document();
        let item = &document.paths.paths["/v1/tracks"];
        assert!(item.get.is_some(), "GET /v1/tracks is documented");
        let upload = item.post.as_ref().expect("POST /v1/tracks is documented");
        let body = upload.request_body.as_ref().expect("the upload has a body");
        for content_type in ["application/octet-stream", "multipart/form-data"] {
            assert!(body.content.contains_key(content_type), "{content_type}");
        }
    }

    #[test]
    fn default_tracks_config_is_valid_and_bad_values_name_their_key() {
        TracksConfig::default().validate().unwrap();
        for (config, key) in [
            (
                TracksConfig {
                    workers: 0,
                    ..TracksConfig::default()
                },
                "tracks.workers",
            ),
            (
                TracksConfig {
                    ladder_bitrates_kbps: vec![96, 64],
                    ..TracksConfig::default()
                },
                "tracks.ladder_bitrates_kbps",
            ),
            (
                TracksConfig {
                    loudness_target_lufs: 3.0,
                    ..TracksConfig::default()
                },
                "tracks.loudness_target_lufs",
            ),
        ] {
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error} should name {key}");
        }
    }
}
