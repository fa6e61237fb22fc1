//! Live streams: Icecast-like broadcasts a user owns, the stream keys their
//! sources present, and the answer to a data plane asking whether a source
//! may broadcast.
//!
//! Codemap:
//! - `stream`: the REST routes (`/v1/streams`): create, get, list, change,
//!   rotate the key, delete.
//! - [`stream_key`]: making a key, its stored form (SHA-256 hex) and the
//!   constant-time check.
//! - [`source`]: [`source::authorize`], the control protocol's
//!   `AuthorizeLiveSource` (a stream key, or a user the data plane already
//!   verified, who must own the stream).
//! - [`recorder`]: the control protocol's `AppendRecording` (a broadcast's
//!   highest rendition written to `{data_dir}/recordings/`), and the
//!   interruption of stale recordings at start.
//! - `recordings`: the REST routes listing a stream's recordings and
//!   serving a completed one's audio.
//!
//! Architecture Invariant: a stream key is never stored or logged; only its
//! SHA-256 is kept, so a database dump or a log gives no working key. A
//! rotation replaces the hash in one statement, so from its commit on the old
//! key authorises nothing (every `AuthorizeLiveSource` reads the database).

use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use veza_codec::config_layers;

use crate::config::ConfigError;
use crate::state::AppState;

pub mod recorder;
mod recordings;
pub mod source;
mod stream;
pub mod stream_key;

/// The stream name rule (`^[a-z0-9][a-z0-9_-]{0,63}$`), shared with the
/// data plane.
pub use veza_proto::chat::is_valid_stream_name;

/// `[live]`: bounds of live streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Streams one user may own; past it, creating one answers 409.
    pub streams_per_user_max: i64,
    /// Longest stream title, in characters.
    pub title_chars_max: usize,
    /// Longest stream description, in characters.
    pub description_chars_max: usize,
    /// Longest genre, in characters.
    pub genre_chars_max: usize,
    /// Largest DSP configuration (`dsp`, serialised as JSON), in bytes.
    pub dsp_config_bytes_max: usize,
    /// Streams in a page when the request gives no `limit`.
    pub page_items_default: i64,
    /// Most streams in a page.
    pub page_items_max: i64,
    /// Largest recording of one broadcast, in bytes; a chunk that would pass
    /// it is refused (`BadRequest`) and the recording is marked
    /// `interrupted` (what was written so far stays).
    pub recording_bytes_max: u64,
    /// At start, recordings still `recording` whose last chunk is older than
    /// this are marked `interrupted`: their broadcast ended while the control
    /// plane was away, so no last chunk will come.
    pub recording_stale_ms: i64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            streams_per_user_max: 20,
            title_chars_max: 200,
            description_chars_max: 4000,
            genre_chars_max: 64,
            dsp_config_bytes_max: 4096,
            page_items_default: 50,
            page_items_max: 100,
            recording_bytes_max: 4 * 1024 * 1024 * 1024,
            recording_stale_ms: 3_600_000,
        }
    }
}

impl LiveConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&str, i64, i64, i64); 9] = [
            (
                "live.streams_per_user_max",
                self.streams_per_user_max,
                1,
                100_000,
            ),
            ("live.title_chars_max", self.title_chars_max as i64, 1, 4096),
            (
                "live.description_chars_max",
                self.description_chars_max as i64,
                0,
                65_536,
            ),
            ("live.genre_chars_max", self.genre_chars_max as i64, 0, 256),
            // The grant carries the configuration to the data plane in one
            // control frame, so it stays far below control.frame_bytes_max.
            (
                "live.dsp_config_bytes_max",
                self.dsp_config_bytes_max as i64,
                2,
                1_048_576,
            ),
            ("live.page_items_max", self.page_items_max, 1, 10_000),
            (
                "live.page_items_default",
                self.page_items_default,
                1,
                self.page_items_max,
            ),
            (
                "live.recording_bytes_max",
                i64::try_from(self.recording_bytes_max).unwrap_or(i64::MAX),
                1024,
                1 << 50,
            ),
            // At least a minute, so that a restart never interrupts a
            // broadcast that is merely between two chunks.
            (
                "live.recording_stale_ms",
                self.recording_stale_ms,
                60_000,
                30 * 24 * 3_600_000,
            ),
        ];
        for (key, value, low, high) in checks {
            if value < low || value > high {
                return Err(config_layers::invalid(
                    key,
                    &format!("must be between {low} and {high}"),
                )
                .into());
            }
        }
        Ok(())
    }
}

/// The live stream routes, recordings included.
pub fn router() -> OpenApiRouter<AppState> {
    stream::router().merge(recordings::router())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_rule() {
        let longest = "a".repeat(64);
        for name in ["a", "0", "night-shift", "dj_set_2", longest.as_str()] {
            assert!(is_valid_stream_name(name), "{name:?} should be valid");
        }
        let too_long = "a".repeat(65);
        for name in [
            "",
            "-a",
            "_a",
            "Night",
            "a b",
            "a.b",
            "a/b",
            "é",
            too_long.as_str(),
        ] {
            assert!(!is_valid_stream_name(name), "{name:?} should be refused");
        }
    }

    #[test]
    fn default_live_config_is_valid_and_bad_values_name_their_key() {
        LiveConfig::default().validate().unwrap();
        let config = LiveConfig {
            streams_per_user_max: 0,
            ..LiveConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("live.streams_per_user_max"), "{error}");
    }
}
