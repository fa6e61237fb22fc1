//! `[tracks]`: serving stored tracks on demand.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `[tracks]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracksConfig {
    /// The media directory the control plane writes renditions and
    /// waveforms into (`{control data_dir}/media`). Empty: tracks are not
    /// served (503 `tracks_unavailable`).
    pub media_dir: String,
    /// Track metadata entries one shard caches; past it an entry is evicted.
    pub meta_cache_entries_max: usize,
    /// How long cached metadata is used before it is looked up again (a
    /// `TrackChanged` push drops it sooner).
    pub meta_cache_ttl_ms: u64,
    /// File read buffers one shard owns; a download holds one while it
    /// runs, and further downloads wait for one.
    pub read_buffers_per_shard: usize,
    /// Bytes of one read buffer: the file is read and written in chunks of
    /// this size.
    pub read_buffer_bytes: usize,
    /// How long a download waits for a free read buffer before it is
    /// answered 503.
    pub read_buffer_wait_ms_max: u64,
    /// Bodies already in the page cache go from it to the socket with
    /// `sendfile(2)` (no copy through user space); others, and all bodies
    /// when false, are read with io_uring into the read buffers.
    pub zero_copy: bool,
    /// Rendition and waveform files one shard keeps open (nginx's
    /// `open_file_cache`); past it the oldest is closed. 0: every request
    /// opens its file.
    pub open_files_max: usize,
    /// How long a kept file is used before it is opened again (a
    /// `TrackChanged` push closes it sooner).
    pub open_files_ttl_ms: u64,
    /// How often a shard reports the plays it counted to the control plane.
    pub plays_report_interval_ms: u64,
    /// Tracks with unreported plays one shard keeps; plays of further
    /// tracks are dropped until the next report.
    pub plays_tracks_max: usize,
    /// `Cache-Control` of public tracks (their URLs name immutable renditions).
    pub cache_control_public: String,
    /// `Cache-Control` of unlisted and private tracks.
    pub cache_control_private: String,
}

impl Default for TracksConfig {
    fn default() -> Self {
        Self {
            media_dir: String::new(),
            meta_cache_entries_max: 65_536,
            meta_cache_ttl_ms: 60_000,
            read_buffers_per_shard: 256,
            read_buffer_bytes: 65_536,
            read_buffer_wait_ms_max: 5_000,
            zero_copy: true,
            open_files_max: 1_024,
            open_files_ttl_ms: 60_000,
            plays_report_interval_ms: 5_000,
            plays_tracks_max: 65_536,
            cache_control_public: "public, max-age=31536000, immutable".into(),
            cache_control_private: "private, max-age=0".into(),
        }
    }
}

impl TracksConfig {
    /// Whether tracks are served.
    pub fn is_enabled(&self) -> bool {
        !self.media_dir.is_empty()
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 8] = [
            (
                "tracks.meta_cache_entries_max",
                self.meta_cache_entries_max as u64,
            ),
            ("tracks.meta_cache_ttl_ms", self.meta_cache_ttl_ms),
            (
                "tracks.read_buffers_per_shard",
                self.read_buffers_per_shard as u64,
            ),
            ("tracks.read_buffer_bytes", self.read_buffer_bytes as u64),
            (
                "tracks.read_buffer_wait_ms_max",
                self.read_buffer_wait_ms_max,
            ),
            (
                "tracks.plays_report_interval_ms",
                self.plays_report_interval_ms,
            ),
            ("tracks.open_files_ttl_ms", self.open_files_ttl_ms),
            ("tracks.plays_tracks_max", self.plays_tracks_max as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if !(4096..=16 * 1024 * 1024).contains(&self.read_buffer_bytes) {
            return Err(invalid(
                "tracks.read_buffer_bytes",
                "must be between 4096 and 16777216",
            ));
        }
        if !self.media_dir.is_empty() && !self.media_dir.starts_with('/') {
            return Err(invalid("tracks.media_dir", "must be an absolute path"));
        }
        for (key, value) in [
            ("tracks.cache_control_public", &self.cache_control_public),
            ("tracks.cache_control_private", &self.cache_control_private),
        ] {
            if value.is_empty() || value.bytes().any(|byte| byte.is_ascii_control()) {
                return Err(invalid(key, "must be a non-empty header value"));
            }
        }
        Ok(())
    }
}

fn invalid(key: &str, reason: &str) -> ConfigError {
    veza_codec::config_layers::invalid(key, reason).into()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn tracks_are_off_by_default_and_bad_values_name_their_key() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert!(!config.tracks.is_enabled());
        for (variable, value, key) in [
            (
                "VEZA_TRACKS_READ_BUFFER_BYTES",
                "100",
                "tracks.read_buffer_bytes",
            ),
            (
                "VEZA_TRACKS_READ_BUFFERS_PER_SHARD",
                "0",
                "tracks.read_buffers_per_shard",
            ),
            (
                "VEZA_TRACKS_MEDIA_DIR",
                "relative/media",
                "tracks.media_dir",
            ),
            (
                "VEZA_TRACKS_META_CACHE_TTL_MS",
                "0",
                "tracks.meta_cache_ttl_ms",
            ),
            (
                "VEZA_TRACKS_OPEN_FILES_TTL_MS",
                "0",
                "tracks.open_files_ttl_ms",
            ),
        ] {
            let error = Config::load(None, vec![(variable.into(), value.into())]).unwrap_err();
            assert!(error.to_string().contains(key), "{error} should name {key}");
        }
        let config = Config::load(
            None,
            vec![("VEZA_TRACKS_MEDIA_DIR".into(), "/srv/veza/media".into())],
        )
        .unwrap();
        assert!(config.tracks.is_enabled());
    }
}
