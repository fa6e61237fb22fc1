//! Live audio broadcasts (DESIGN.md §4): Icecast-compatible sources on
//! `PUT`/`SOURCE /v1/live/{stream}`, listeners on `GET /v1/live/{stream}`.
//!
//! Who does what:
//! - The **source's shard** authenticates the source (stream key or the
//!   owner's bearer token, checked by the control plane), reads the request
//!   body and forwards it, in bounded windows, to the stream's owner
//!   ([`source`]).
//! - The **stream's owner shard** (the name hashed over the shards, see
//!   [`owner_of_stream`]) validates and re-pages Ogg Opus (or decodes raw
//!   PCM, runs the DSP chain and encodes the Opus ladder), keeps the header
//!   pages and a bounded ring of recent pages per rendition as shared
//!   `Bytes`, and sends one [`LiveMessage::Page`] per page to each shard
//!   with listeners of that rendition. When the source drops it fills the
//!   stream with silence for `live.source_grace_ms` ([`stream`]).
//! - Each **listener's shard** keeps a local copy of the headers and recent
//!   pages of the renditions its listeners hear, so a second listener there
//!   starts without asking the owner, and queues every page (the same
//!   `Bytes`) on each local listener ([`listener`]).
//!
//! Architecture Invariant: every live message goes through
//! [`crate::ordered_send::send`], FIFO per destination, so a listener shard
//! sees a rendition's `JoinReply` before its later pages, and pages in order.

pub mod listener;
pub mod now_playing;
pub mod recording;
pub mod source;
pub mod status;
pub mod stream;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use veza_proto::control::LiveSourceGrant;

use crate::shard::{Shard, ShardMessage};

/// A source connection anywhere in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceRef {
    /// The shard holding the source's connection.
    pub shard: u16,
    /// Its id there.
    pub id: u64,
}

/// What the source's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// `audio/ogg`: Ogg Opus, validated and re-paged, not re-encoded.
    OggOpus,
    /// `audio/L16;rate=48000;channels=N`: through the DSP chain and the ladder.
    Pcm {
        /// 1 or 2.
        channel_count: u8,
    },
}

/// The `ice-*` headers a source sent.
#[derive(Debug, Clone, Default)]
pub struct IceHeaders {
    /// `ice-name`.
    pub name: Option<String>,
    /// `ice-description`.
    pub description: Option<String>,
    /// `ice-genre`.
    pub genre: Option<String>,
    /// `ice-public`.
    pub public: Option<bool>,
    /// `ice-bitrate` (kb/s), the nominal bitrate of a pass-through stream.
    pub bitrate_kbps: Option<u32>,
}

/// A source asks the owner for the stream.
pub struct SourceStart {
    /// The stream.
    pub stream: Arc<str>,
    /// The source.
    pub source: SourceRef,
    /// What the control plane said about the stream.
    pub grant: LiveSourceGrant,
    /// The body's format.
    pub format: SourceFormat,
    /// The source's `ice-*` headers.
    pub ice: IceHeaders,
}

/// Why the owner refused a source.
#[derive(Debug, Clone)]
pub struct SourceRefusal {
    /// HTTP status for the source.
    pub status: u16,
    /// The JSON `error`.
    pub error: &'static str,
    /// The JSON `detail`.
    pub detail: String,
}

/// What the owner sends a listener shard for a new rendition subscription.
pub struct JoinAccepted {
    /// The rendition's index at the owner.
    pub rendition: u8,
    /// Every rendition's bitrate (kb/s; 0 when a pass-through source did
    /// not say), by index.
    pub bitrates_kbps: Vec<u32>,
    /// The OpusHead and OpusTags pages.
    pub header_pages: Bytes,
    /// Recent pages, oldest first, at most `live.recent_pages_bytes_max`.
    pub recent_pages: Vec<Bytes>,
    /// The stream's counters.
    pub stats: Arc<StreamStats>,
}

/// Live messages between shards (a variant of [`ShardMessage`]).
pub enum LiveMessage {
    /// To the owner: a source wants to broadcast.
    SourceStart(Box<SourceStart>),
    /// To the source's shard.
    SourceStartReply {
        /// The source.
        source: SourceRef,
        /// Accepted, or why not.
        result: Result<Arc<StreamStats>, SourceRefusal>,
    },
    /// To the owner: body bytes of the current source.
    SourceData {
        /// The stream.
        stream: Arc<str>,
        /// The source (data of a replaced source is ignored).
        source: SourceRef,
        /// The bytes, as read.
        data: Bytes,
    },
    /// To the source's shard: the owner processed this many bytes.
    SourceProcessed {
        /// The source.
        source: SourceRef,
        /// Bytes processed.
        bytes: usize,
    },
    /// To the source's shard: its data was refused; answer and disconnect.
    SourceFailed {
        /// The source.
        source: SourceRef,
        /// Why.
        refusal: SourceRefusal,
    },
    /// To the owner: the source's body ended or its connection dropped.
    SourceEnd {
        /// The stream.
        stream: Arc<str>,
        /// The source.
        source: SourceRef,
    },
    /// To the owner: a listener shard wants a rendition of the stream.
    Join {
        /// The stream.
        stream: Arc<str>,
        /// `?br=`, if given.
        bitrate_kbps: Option<u32>,
        /// The listener shard.
        shard: u16,
    },
    /// To the listener shard: the answer to [`LiveMessage::Join`].
    JoinReply {
        /// The stream.
        stream: Arc<str>,
        /// Echoed from the join.
        bitrate_kbps: Option<u32>,
        /// `None`: the stream is not live.
        accepted: Option<Box<JoinAccepted>>,
    },
    /// To each listener shard of the rendition: a new page.
    Page {
        /// The stream.
        stream: Arc<str>,
        /// The rendition.
        rendition: u8,
        /// The Ogg page, shared by every listener.
        page: Bytes,
    },
    /// To the owner: the listener shard's last listener of a rendition left.
    Left {
        /// The stream.
        stream: Arc<str>,
        /// The rendition.
        rendition: u8,
        /// The listener shard.
        shard: u16,
    },
    /// To each listener shard: the stream ended (the source did not return
    /// within the grace period); listeners get what is queued, then EOF.
    Ended {
        /// The stream.
        stream: Arc<str>,
    },
    /// To every shard (the sender's included): the stream's now-playing
    /// title was set; delivered to the shard's chat watchers of the stream.
    NowPlaying {
        /// The stream.
        stream: Arc<str>,
        /// The title (cleaned by [`status::set_now_playing`]'s rule).
        title: String,
        /// When it was set, Unix ms.
        updated_at_ms: i64,
    },
}

/// The shard that owns `stream`.
pub fn owner_of_stream(stream: &str, shard_count: usize) -> usize {
    // FNV-1a: stable across processes and runs, so logs and tests can tell
    // where a stream lives.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in stream.bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shard_count as u64) as usize
}

/// Sends a live message in FIFO order per destination.
pub fn send(shard: &Rc<Shard>, destination: usize, message: LiveMessage) {
    crate::ordered_send::send(shard, destination, ShardMessage::Live(message));
}

/// Handles one live message addressed to this shard.
pub fn handle(shard: &Rc<Shard>, message: LiveMessage) {
    match message {
        LiveMessage::SourceStart(start) => stream::on_source_start(shard, *start),
        LiveMessage::SourceData {
            stream,
            source,
            data,
        } => stream::on_source_data(shard, &stream, source, data),
        LiveMessage::SourceEnd { stream, source } => stream::on_source_end(shard, &stream, source),
        LiveMessage::Join {
            stream,
            bitrate_kbps,
            shard: listener_shard,
        } => stream::on_join(shard, stream, bitrate_kbps, listener_shard),
        LiveMessage::Left {
            stream,
            rendition,
            shard: listener_shard,
        } => stream::on_left(shard, &stream, rendition, listener_shard),
        LiveMessage::SourceStartReply { source, result } => {
            source::on_start_reply(shard, source, result)
        }
        LiveMessage::SourceProcessed { source, bytes } => {
            source::on_processed(shard, source, bytes)
        }
        LiveMessage::SourceFailed { source, refusal } => source::on_failed(shard, source, refusal),
        LiveMessage::JoinReply {
            stream,
            bitrate_kbps,
            accepted,
        } => listener::on_join_reply(shard, stream, bitrate_kbps, accepted),
        LiveMessage::Page {
            stream,
            rendition,
            page,
        } => listener::on_page(shard, &stream, rendition, page),
        LiveMessage::Ended { stream } => listener::on_ended(shard, &stream),
        LiveMessage::NowPlaying {
            stream,
            title,
            updated_at_ms,
        } => now_playing::on_now_playing(shard, stream, title, updated_at_ms),
    }
}

/// One shard's live state. `!Send`; lives in its [`Shard`].
#[derive(Default)]
pub struct LiveShard {
    /// Streams this shard owns.
    pub owned: stream::OwnedStreams,
    /// Renditions this shard's listeners hear, and joins waiting for the owner.
    pub listening: listener::LocalRenditions,
    /// Source connections on this shard.
    pub sources: RefCell<HashMap<u64, Rc<source::SourceSlot>>>,
    /// The next source id.
    pub next_source_id: Cell<u64>,
    /// Chat connections watching streams' now-playing titles, and the titles.
    pub watchers: now_playing::Watchers,
}

/// Tells every local listener and source that the shard shuts down.
pub fn begin_shutdown(shard: &Shard) {
    listener::finish_all(shard);
}

/// Counters of one rendition, written by the shards serving it.
#[derive(Debug, Default)]
pub struct RenditionStats {
    /// kb/s (0 when a pass-through source did not say).
    pub bitrate_kbps: AtomicU64,
    /// Listeners now.
    pub listeners: AtomicI64,
}

/// Counters of one live stream, shared by every shard (atomics; the text
/// fields change only on source start and metadata updates).
#[derive(Debug)]
pub struct StreamStats {
    /// The stream's name.
    pub name: Arc<str>,
    /// Its id in the control plane.
    pub stream_id: i64,
    /// Title, description and genre (from the control plane, overridden by
    /// the source's `ice-*` headers).
    pub info: Mutex<StreamInfo>,
    /// `audio/ogg` or `audio/L16`.
    pub source_content_type: Mutex<String>,
    /// A source is sending now (false during the grace period).
    pub source_connected: AtomicBool,
    /// When the current or last source connected (Unix ms).
    pub source_connected_at_ms: AtomicI64,
    /// When the stream went live (Unix ms).
    pub started_at_ms: i64,
    /// Sources that connected over the stream's life.
    pub source_connections: AtomicU64,
    /// Per rendition.
    pub renditions: Vec<RenditionStats>,
    /// Most listeners at once.
    pub peak_listeners: AtomicU64,
    /// Listeners that connected over the stream's life.
    pub listener_connections: AtomicU64,
    /// Bytes queued to listeners.
    pub bytes_out: AtomicU64,
    /// Lagging listeners skipped ahead.
    pub skips: AtomicU64,
    /// Lagging listeners disconnected.
    pub evictions: AtomicU64,
    /// Pages the owner produced.
    pub pages: AtomicU64,
}

/// The descriptive fields of a stream.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamInfo {
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Genre.
    pub genre: String,
    /// Listed in directories.
    pub public: bool,
    /// The now-playing title (metadata updates).
    pub now_playing: String,
}

impl StreamStats {
    /// Listeners over every rendition.
    pub fn listeners(&self) -> i64 {
        self.renditions
            .iter()
            .map(|rendition| rendition.listeners.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a listener in (or out, with -1) of `rendition`.
    pub fn count_listener(&self, rendition: u8, delta: i64) {
        if let Some(stats) = self.renditions.get(rendition as usize) {
            stats.listeners.fetch_add(delta, Ordering::Relaxed);
        }
        if delta > 0 {
            self.listener_connections.fetch_add(1, Ordering::Relaxed);
            let now = self.listeners().max(0) as u64;
            self.peak_listeners.fetch_max(now, Ordering::Relaxed);
        }
    }
}

/// Every live stream of the process, for the status endpoint and metrics.
/// Locked only when a stream starts or ends and on status reads, never per
/// page.
#[derive(Debug, Default)]
pub struct Directory {
    streams: Mutex<BTreeMap<Arc<str>, Arc<StreamStats>>>,
}

impl Directory {
    /// Lists a stream that went live.
    pub fn insert(&self, stats: Arc<StreamStats>) {
        self.lock().insert(stats.name.clone(), stats);
    }

    /// Removes a stream that ended.
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// A stream's counters, if it is live.
    pub fn get(&self, name: &str) -> Option<Arc<StreamStats>> {
        self.lock().get(name).cloned()
    }

    /// Every live stream, by name.
    pub fn all(&self) -> Vec<Arc<StreamStats>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Arc<str>, Arc<StreamStats>>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (single inserts and removes), so a poisoned lock is used as is.
        self.streams
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Unix time in milliseconds.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Whether `name` is a valid stream name (the control plane's rule).
pub use veza_proto::chat::is_valid_stream_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_spread_over_shards_and_stay_put() {
        let mut seen = [0usize; 4];
        for index in 0..400 {
            seen[owner_of_stream(&format!("stream-{index}"), 4)] += 1;
        }
        for count in seen {
            assert!((60..=140).contains(&count), "uneven spread {seen:?}");
        }
        assert_eq!(owner_of_stream("radio", 4), owner_of_stream("radio", 4));
        assert_eq!(owner_of_stream("radio", 1), 0);
    }

    #[test]
    fn stream_names_follow_the_control_planes_rule() {
        for good in ["a", "radio-1", "night_shift", "0day"] {
            assert!(is_valid_stream_name(good), "{good}");
        }
        for bad in ["", "-x", "Radio", "a/b", "..", &"x".repeat(65)] {
            assert!(!is_valid_stream_name(bad), "{bad}");
        }
    }
}
