//! Now-playing titles for chat clients: the chat connections of this shard
//! that watch a live stream (`WatchStream`, protocol v1), and the newest
//! title of each stream as this shard has heard it.
//!
//! A metadata update (`POST /v1/live/{stream}/metadata`, Icecast's
//! `/admin/metadata`) may land on any shard. That shard sets the title in
//! the process-wide directory and announces it to every shard, itself
//! included ([`super::status::announce_now_playing`]: one
//! [`super::LiveMessage::NowPlaying`] each). Every shard keeps the newest
//! title per stream and, when it has watchers of the stream, frames the
//! event once and queues the same `Bytes` on each of them, as chat's
//! `Deliver` does for a room. The title never goes into the Ogg stream:
//! listeners' audio is not re-chained for it.
//!
//! Why a new watcher's first event comes from this shard's copy rather than
//! from the directory: the directory changes before the announcement
//! reaches this shard, so answering from it could send a title and then, a
//! moment later, the same title again, or an older one when two updates
//! race. This shard's copy is exactly what its watchers were sent, so a new
//! watcher joins the same sequence, in which `updated_at_ms` never
//! decreases (an announcement older than the newest known is dropped).
//!
//! Bounds: a connection watches at most [`WATCHED_STREAMS_MAX`] streams, so
//! the watcher lists hold at most that many entries per connection. Titles
//! are kept for live streams only, at most `live.streams_per_shard_max` ×
//! shards of them: when the table reaches that size, streams that are no
//! longer live are dropped from it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use veza_proto::chat::{ServerFrame, WATCHED_STREAMS_MAX};

use crate::chat::connection::ChatConnection;
use crate::chat::ConnRef;
use crate::metrics::ShardMetrics;
use crate::shard::Shard;

/// The newest title of one stream, as announced to this shard.
struct KnownTitle {
    title: String,
    updated_at_ms: i64,
}

/// The connection already watches [`WATCHED_STREAMS_MAX`] streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimitReached;

/// One shard's watchers of live streams and newest titles. `!Send`; lives
/// in its [`super::LiveShard`].
#[derive(Default)]
pub struct Watchers {
    /// Stream → the local connections watching it.
    by_stream: RefCell<HashMap<Arc<str>, Vec<Rc<ChatConnection>>>>,
    /// Connection → the streams it watches (at most `WATCHED_STREAMS_MAX`).
    by_connection: RefCell<HashMap<ConnRef, Vec<Arc<str>>>>,
    /// Stream → its newest title, for streams that are (or were lately) live.
    titles: RefCell<HashMap<Arc<str>, KnownTitle>>,
}

impl Watchers {
    /// Adds `connection` to the watchers of `stream`; watching a stream
    /// again changes nothing. The caller has checked the name.
    pub fn watch(
        &self,
        connection: &Rc<ChatConnection>,
        stream: &str,
    ) -> Result<(), WatchLimitReached> {
        let mut by_connection = self.by_connection.borrow_mut();
        let watched = by_connection.entry(connection.conn).or_default();
        if watched.iter().any(|name| &**name == stream) {
            return Ok(());
        }
        if watched.len() >= WATCHED_STREAMS_MAX {
            return Err(WatchLimitReached);
        }
        let mut by_stream = self.by_stream.borrow_mut();
        // One `Arc` per watched stream on this shard, shared by its entries.
        let name = match by_stream.get_key_value(stream) {
            Some((name, _)) => name.clone(),
            None => Arc::from(stream),
        };
        watched.push(name.clone());
        by_stream.entry(name).or_default().push(connection.clone());
        debug_assert!(watched.len() <= WATCHED_STREAMS_MAX);
        Ok(())
    }

    /// Removes `conn` from the watchers of `stream`, if it watched it.
    pub fn unwatch(&self, conn: ConnRef, stream: &str) {
        let name = {
            let mut by_connection = self.by_connection.borrow_mut();
            let Some(watched) = by_connection.get_mut(&conn) else {
                return;
            };
            let Some(index) = watched.iter().position(|name| &**name == stream) else {
                return;
            };
            let name = watched.swap_remove(index);
            if watched.is_empty() {
                by_connection.remove(&conn);
            }
            name
        };
        self.remove_watcher(&name, conn);
    }

    /// Removes `conn` from every stream it watches (its session ended).
    pub fn remove_connection(&self, conn: ConnRef) {
        let Some(watched) = self.by_connection.borrow_mut().remove(&conn) else {
            return;
        };
        for name in watched {
            self.remove_watcher(&name, conn);
        }
    }

    /// How many streams `conn` watches.
    pub fn watched_count(&self, conn: ConnRef) -> usize {
        self.by_connection
            .borrow()
            .get(&conn)
            .map_or(0, |watched| watched.len())
    }

    fn remove_watcher(&self, stream: &str, conn: ConnRef) {
        let mut by_stream = self.by_stream.borrow_mut();
        if let Some(watchers) = by_stream.get_mut(stream) {
            watchers.retain(|watcher| watcher.conn != conn);
            if watchers.is_empty() {
                by_stream.remove(stream);
            }
        }
    }

    /// Keeps `title` as the stream's newest unless a newer one is known;
    /// false when the announcement is older and must not be delivered.
    fn remember(&self, shard: &Shard, stream: &Arc<str>, title: &str, updated_at_ms: i64) -> bool {
        let mut titles = self.titles.borrow_mut();
        if let Some(known) = titles.get_mut(stream) {
            if updated_at_ms < known.updated_at_ms {
                return false;
            }
            known.title.clear();
            known.title.push_str(title);
            known.updated_at_ms = updated_at_ms;
            return true;
        }
        let process = &shard.process;
        let titles_max = process.config.live.streams_per_shard_max * process.shard_count();
        if titles.len() >= titles_max {
            // Rare (only when the table is full), so the directory's lock
            // per entry is fine here.
            titles.retain(|name, _| process.live_directory.get(name).is_some());
        }
        // Every stream left is live and a stream is announced only while
        // live, so the table holds at most the live streams, plus this one.
        debug_assert!(titles.len() <= titles_max);
        titles.insert(
            stream.clone(),
            KnownTitle {
                title: title.to_owned(),
                updated_at_ms,
            },
        );
        true
    }
}

/// A title update for `stream` reached this shard: remember it and, unless
/// a newer one is known, queue it on every local watcher.
pub fn on_now_playing(shard: &Rc<Shard>, stream: Arc<str>, title: String, updated_at_ms: i64) {
    let watchers = &shard.live.watchers;
    if !watchers.remember(shard, &stream, &title, updated_at_ms) {
        return;
    }
    if !watchers.by_stream.borrow().contains_key(&stream) {
        return;
    }
    // Framed once, queued as the same `Bytes` on every watcher.
    let event = crate::chat::frame(&ServerFrame::NowPlaying {
        stream: stream.to_string(),
        title,
        updated_at_ms,
    });
    deliver(shard, &stream, &event);
}

/// Queues a framed `NowPlaying` event on every local watcher of `stream`.
pub fn deliver(shard: &Shard, stream: &str, event: &Bytes) {
    // Pushing never changes the watcher lists (a close only queues a close
    // frame; the connection leaves them when its session ends), so they are
    // read in place.
    let by_stream = shard.live.watchers.by_stream.borrow();
    let Some(watchers) = by_stream.get(stream) else {
        return;
    };
    let mut delivered = 0;
    for watcher in watchers {
        // Not ephemeral: never skipped at the send queue's soft bound; past
        // the hard bound the connection is closed with 4008, as for a
        // room's events.
        if watcher.push(shard, event) {
            delivered += 1;
        }
    }
    ShardMetrics::add(&shard.metrics.chat_deliveries_total, delivered);
}

/// The `NowPlaying` event a new watcher of `stream` gets after its `Ok`:
/// `None` unless the stream is live and has a non-empty title.
pub fn current_event(shard: &Shard, stream: &str) -> Option<Bytes> {
    let stats = shard.process.live_directory.get(stream)?;
    let titles = shard.live.watchers.titles.borrow();
    let known = titles.get(stream)?;
    // A title set during an earlier broadcast of the same name is not this
    // broadcast's.
    if known.title.is_empty() || known.updated_at_ms < stats.started_at_ms {
        return None;
    }
    Some(crate::chat::frame(&ServerFrame::NowPlaying {
        stream: stream.to_owned(),
        title: known.title.clone(),
        updated_at_ms: known.updated_at_ms,
    }))
}

#[cfg(test)]
mod tests {
    use veza_proto::chat::STREAM_NAME_BYTES_MAX;

    use crate::live::is_valid_stream_name;

    #[test]
    fn the_protocols_stream_name_limit_is_the_live_name_rule() {
        let longest = "a".repeat(STREAM_NAME_BYTES_MAX);
        assert!(is_valid_stream_name(&longest));
        assert!(!is_valid_stream_name(&format!("{longest}a")));
    }
}
