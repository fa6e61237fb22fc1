//! What live streams are doing: the JSON status (`GET /v1/live`,
//! `GET /v1/live/{stream}/status`), Prometheus series, and now-playing
//! metadata updates (`POST /v1/live/{stream}/metadata`, Icecast's
//! `/admin/metadata?mount=...&mode=updinfo&song=...`), which are set here
//! and announced to every shard for the chat clients watching the stream
//! ([`super::now_playing`]).

use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use super::{unix_now_ms, LiveMessage, StreamInfo, StreamStats};
use crate::shard::Shard;

/// One stream in the status document. The shape is stable: fields are only
/// ever added.
#[derive(Debug, Serialize)]
pub struct StreamStatus {
    /// The stream's name.
    pub name: String,
    /// Its id in the control plane.
    pub stream_id: i64,
    /// Title, description, genre, public, now playing.
    #[serde(flatten)]
    pub info: StreamInfo,
    /// The source.
    pub source: SourceStatus,
    /// When the stream went live (Unix ms).
    pub started_at_ms: i64,
    /// Listeners now.
    pub listeners: i64,
    /// Most listeners at once.
    pub peak_listeners: u64,
    /// Listener connections over the stream's life.
    pub listener_connections: u64,
    /// Per rendition.
    pub renditions: Vec<RenditionStatus>,
    /// Bytes queued to listeners.
    pub bytes_out: u64,
    /// Pages produced.
    pub pages: u64,
    /// Lagging listeners skipped ahead.
    pub skips: u64,
    /// Lagging listeners disconnected.
    pub evictions: u64,
}

/// The source part of [`StreamStatus`].
#[derive(Debug, Serialize)]
pub struct SourceStatus {
    /// `live` (a source sends) or `grace` (it dropped; listeners hear silence).
    pub state: &'static str,
    /// The source's `Content-Type`.
    pub content_type: String,
    /// When the current or last source connected (Unix ms).
    pub connected_at_ms: i64,
    /// Sources that connected over the stream's life.
    pub connections: u64,
}

/// One rendition in [`StreamStatus`].
#[derive(Debug, Serialize)]
pub struct RenditionStatus {
    /// kb/s (0: a pass-through source that did not say).
    pub bitrate_kbps: u64,
    /// Listeners now.
    pub listeners: i64,
}

/// The status of one stream.
pub fn stream_status(stats: &StreamStats) -> StreamStatus {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    StreamStatus {
        name: stats.name.to_string(),
        stream_id: stats.stream_id,
        info: stats
            .info
            .lock()
            .map(|info| info.clone())
            .unwrap_or_default(),
        source: SourceStatus {
            state: if stats.source_connected.load(Ordering::Relaxed) {
                "live"
            } else {
                "grace"
            },
            content_type: stats
                .source_content_type
                .lock()
                .map(|value| value.clone())
                .unwrap_or_default(),
            connected_at_ms: stats.source_connected_at_ms.load(Ordering::Relaxed),
            connections: load(&stats.source_connections),
        },
        started_at_ms: stats.started_at_ms,
        listeners: stats.listeners(),
        peak_listeners: load(&stats.peak_listeners),
        listener_connections: load(&stats.listener_connections),
        renditions: stats
            .renditions
            .iter()
            .map(|rendition| RenditionStatus {
                bitrate_kbps: rendition.bitrate_kbps.load(Ordering::Relaxed),
                listeners: rendition.listeners.load(Ordering::Relaxed),
            })
            .collect(),
        bytes_out: load(&stats.bytes_out),
        pages: load(&stats.pages),
        skips: load(&stats.skips),
        evictions: load(&stats.evictions),
    }
}

/// `{"streams":[...]}` for every live stream.
pub fn status_document(streams: &[std::sync::Arc<StreamStats>]) -> String {
    #[derive(Serialize)]
    struct Document {
        streams: Vec<StreamStatus>,
    }
    let document = Document {
        streams: streams.iter().map(|stats| stream_status(stats)).collect(),
    };
    serde_json::to_string(&document).unwrap_or_else(|_| "{\"streams\":[]}".to_owned())
}

/// Appends the live streams' Prometheus series.
pub fn render_prometheus(streams: &[std::sync::Arc<StreamStats>], out: &mut String) {
    out.push_str("# HELP veza_live_streams Live streams (a source sends or is in its grace period).\n# TYPE veza_live_streams gauge\n");
    let _ = writeln!(out, "veza_live_streams {}", streams.len());
    let series: [(&str, &str, &str); 6] = [
        (
            "veza_live_listeners",
            "gauge",
            "Listeners now, per stream and bitrate.",
        ),
        (
            "veza_live_peak_listeners",
            "gauge",
            "Most listeners at once.",
        ),
        (
            "veza_live_bytes_out_total",
            "counter",
            "Bytes queued to listeners.",
        ),
        (
            "veza_live_skips_total",
            "counter",
            "Lagging listeners skipped ahead to a page boundary.",
        ),
        (
            "veza_live_evictions_total",
            "counter",
            "Lagging listeners disconnected.",
        ),
        (
            "veza_live_source_connected",
            "gauge",
            "1 while a source sends, 0 in the grace period.",
        ),
    ];
    for (name, kind, help) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for stats in streams {
            let stream = escape_label(&stats.name);
            match name {
                "veza_live_listeners" => {
                    for rendition in &stats.renditions {
                        let _ = writeln!(
                            out,
                            "{name}{{stream=\"{stream}\",bitrate_kbps=\"{}\"}} {}",
                            rendition.bitrate_kbps.load(Ordering::Relaxed),
                            rendition.listeners.load(Ordering::Relaxed)
                        );
                    }
                }
                _ => {
                    let value = match name {
                        "veza_live_peak_listeners" => stats.peak_listeners.load(Ordering::Relaxed),
                        "veza_live_bytes_out_total" => stats.bytes_out.load(Ordering::Relaxed),
                        "veza_live_skips_total" => stats.skips.load(Ordering::Relaxed),
                        "veza_live_evictions_total" => stats.evictions.load(Ordering::Relaxed),
                        _ => stats.source_connected.load(Ordering::Relaxed) as u64,
                    };
                    let _ = writeln!(out, "{name}{{stream=\"{stream}\"}} {value}");
                }
            }
        }
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Longest now-playing title kept, in characters.
const NOW_PLAYING_CHARS_MAX: usize = 256;

/// Sets the now-playing title (bounded to 256 characters, control
/// characters dropped).
pub fn set_now_playing(stats: &StreamStats, title: &str) {
    let clean = clean_now_playing(title);
    if let Ok(mut info) = stats.info.lock() {
        info.now_playing = clean;
    }
}

/// Tells every shard, this one included, that `stream` now plays `title`
/// (cleaned as [`set_now_playing`] does), for the chat connections watching
/// it. Call it after [`set_now_playing`].
pub fn announce_now_playing(shard: &Rc<Shard>, stream: &Arc<str>, title: &str) {
    let title = clean_now_playing(title);
    let updated_at_ms = unix_now_ms();
    for destination in 0..shard.process.shard_count() {
        super::send(
            shard,
            destination,
            LiveMessage::NowPlaying {
                stream: stream.clone(),
                title: title.clone(),
                updated_at_ms,
            },
        );
    }
}

/// The title as kept: control characters dropped, at most
/// [`NOW_PLAYING_CHARS_MAX`] characters.
fn clean_now_playing(title: &str) -> String {
    title
        .chars()
        .filter(|character| !character.is_control())
        .take(NOW_PLAYING_CHARS_MAX)
        .collect()
}
