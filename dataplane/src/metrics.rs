//! Per-shard metrics, merged on scrape into Prometheus text.
//!
//! Counters and gauges are atomics that only their shard writes (Relaxed
//! stores, no contention); any thread may read them, so a wedged shard's
//! counters still show. The loop-turn latency histogram is an hdrhistogram
//! owned by each shard and collected over the ring mesh at scrape time.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};

use hdrhistogram::Histogram;

/// Every configured bound whose hits are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `limits.connections_per_shard_max`.
    ConnectionsPerShard,
    /// `limits.http_head_bytes_max`.
    HttpHeadBytes,
    /// `limits.http_header_count_max`.
    HttpHeaderCount,
    /// `limits.http_target_bytes_max`.
    HttpTargetBytes,
    /// `limits.http_body_bytes_max`.
    HttpBodyBytes,
    /// `limits.header_read_timeout_ms`.
    HeaderReadTimeout,
    /// `limits.idle_timeout_ms`.
    IdleTimeout,
    /// `limits.websocket_frame_bytes_max`.
    WebsocketFrameBytes,
    /// `limits.websocket_message_bytes_max`.
    WebsocketMessageBytes,
    /// `limits.send_queue_bytes_max`.
    SendQueueBytes,
    /// `limits.websocket_pong_timeout_ms`.
    PongTimeout,
    /// `limits.send_queue_soft_bytes`: an ephemeral event was skipped.
    SendQueueSoftBytes,
    /// `chat.auth_timeout_ms`.
    ChatAuthTimeout,
    /// The runtime setting `messages_per_second` / `message_burst`.
    ChatSendRate,
    /// The runtime setting `connections_per_ip_per_minute`.
    ConnectionsPerIp,
    /// `chat.persist_queue_max`.
    ChatPersistQueue,
    /// `chat.subscriptions_per_connection_max`.
    ChatSubscriptions,
    /// `chat.room_queue_max`.
    ChatRoomQueue,
    /// `chat.rooms_owned_max`: a command for a room not loaded was refused.
    ChatRoomsOwned,
    /// `chat.mesh_retry_max`: a cross-shard chat message was dropped.
    ChatMeshRetry,
    /// The runtime setting `message_bytes_max`.
    ChatMessageBytes,
    /// `live.listener_queue_bytes_max`: a lagging listener was skipped ahead
    /// or disconnected (by `live.lagging_listener_policy`).
    LiveListenerQueue,
    /// `live.source_idle_timeout_ms`.
    LiveSourceIdle,
    /// `live.streams_per_shard_max`.
    LiveStreamsPerShard,
    /// `live.recording_buffer_bytes_max`: a recording was abandoned.
    LiveRecordingBuffer,
    /// `tracks.meta_cache_entries_max`: a cached track was evicted.
    TracksMetaCacheEntries,
    /// `tracks.read_buffers_per_shard`: a download waited for a read buffer
    /// (503 `tracks_busy` after `tracks.read_buffer_wait_ms_max`).
    TracksReadBuffers,
    /// `tracks.plays_tracks_max`: a play was dropped.
    TracksPlaysTracks,
    /// `tracks.open_files_max`: a kept file was closed to make room.
    TracksOpenFiles,
}

impl LimitKind {
    /// Every kind, in label order.
    pub const ALL: [LimitKind; 29] = [
        LimitKind::ConnectionsPerShard,
        LimitKind::HttpHeadBytes,
        LimitKind::HttpHeaderCount,
        LimitKind::HttpTargetBytes,
        LimitKind::HttpBodyBytes,
        LimitKind::HeaderReadTimeout,
        LimitKind::IdleTimeout,
        LimitKind::WebsocketFrameBytes,
        LimitKind::WebsocketMessageBytes,
        LimitKind::SendQueueBytes,
        LimitKind::PongTimeout,
        LimitKind::SendQueueSoftBytes,
        LimitKind::ChatAuthTimeout,
        LimitKind::ChatSendRate,
        LimitKind::ConnectionsPerIp,
        LimitKind::ChatPersistQueue,
        LimitKind::ChatSubscriptions,
        LimitKind::ChatRoomQueue,
        LimitKind::ChatRoomsOwned,
        LimitKind::ChatMeshRetry,
        LimitKind::ChatMessageBytes,
        LimitKind::LiveListenerQueue,
        LimitKind::LiveSourceIdle,
        LimitKind::LiveStreamsPerShard,
        LimitKind::LiveRecordingBuffer,
        LimitKind::TracksMetaCacheEntries,
        LimitKind::TracksReadBuffers,
        LimitKind::TracksPlaysTracks,
        LimitKind::TracksOpenFiles,
    ];

    /// The `limit` label value.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::ConnectionsPerShard => "connections_per_shard",
            LimitKind::HttpHeadBytes => "http_head_bytes",
            LimitKind::HttpHeaderCount => "http_header_count",
            LimitKind::HttpTargetBytes => "http_target_bytes",
            LimitKind::HttpBodyBytes => "http_body_bytes",
            LimitKind::HeaderReadTimeout => "header_read_timeout",
            LimitKind::IdleTimeout => "idle_timeout",
            LimitKind::WebsocketFrameBytes => "websocket_frame_bytes",
            LimitKind::WebsocketMessageBytes => "websocket_message_bytes",
            LimitKind::SendQueueBytes => "send_queue_bytes",
            LimitKind::PongTimeout => "websocket_pong_timeout",
            LimitKind::SendQueueSoftBytes => "send_queue_soft_bytes",
            LimitKind::ChatAuthTimeout => "chat_auth_timeout",
            LimitKind::ChatSendRate => "chat_send_rate",
            LimitKind::ConnectionsPerIp => "connections_per_ip",
            LimitKind::ChatPersistQueue => "chat_persist_queue",
            LimitKind::ChatSubscriptions => "chat_subscriptions",
            LimitKind::ChatRoomQueue => "chat_room_queue",
            LimitKind::ChatRoomsOwned => "chat_rooms_owned",
            LimitKind::ChatMeshRetry => "chat_mesh_retry",
            LimitKind::ChatMessageBytes => "chat_message_bytes",
            LimitKind::LiveListenerQueue => "live_listener_queue",
            LimitKind::LiveSourceIdle => "live_source_idle",
            LimitKind::LiveStreamsPerShard => "live_streams_per_shard",
            LimitKind::LiveRecordingBuffer => "live_recording_buffer",
            LimitKind::TracksMetaCacheEntries => "tracks_meta_cache_entries",
            LimitKind::TracksReadBuffers => "tracks_read_buffers",
            LimitKind::TracksPlaysTracks => "tracks_plays_tracks",
            LimitKind::TracksOpenFiles => "tracks_open_files",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|kind| *kind == self)
            .expect("listed")
    }
}

/// Which monoio driver a shard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring.
    IoUring,
    /// epoll (monoio's legacy driver).
    Legacy,
}

impl DriverKind {
    /// The `driver` label value.
    pub fn label(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Legacy => "legacy",
        }
    }
}

/// One shard's counters. Written by that shard only; read by anyone.
#[derive(Default)]
pub struct ShardMetrics {
    /// Open connections.
    pub connections_open: AtomicI64,
    /// Accepted connections.
    pub connections_accepted_total: AtomicU64,
    /// Bytes read from sockets.
    pub bytes_received_total: AtomicU64,
    /// Bytes written to sockets.
    pub bytes_sent_total: AtomicU64,
    /// WebSocket messages and control frames received (after reassembly).
    pub websocket_frames_received_total: AtomicU64,
    /// WebSocket frames queued for sending.
    pub websocket_frames_sent_total: AtomicU64,
    /// HTTP requests parsed.
    pub http_requests_total: AtomicU64,
    /// Loop stalls over the budget.
    pub stalls_total: AtomicU64,
    /// Authenticated chat connections open.
    pub chat_connections: AtomicI64,
    /// Messages sequenced by rooms this shard owns.
    pub chat_messages_sequenced_total: AtomicU64,
    /// Chat event frames queued to local subscribers.
    pub chat_deliveries_total: AtomicU64,
    /// Persistence batches committed by the control plane.
    pub chat_persist_batches_total: AtomicU64,
    /// Persistence batches that failed and were retried.
    pub chat_persist_failures_total: AtomicU64,
    /// Changes waiting to be committed.
    pub chat_persist_queue_depth: AtomicI64,
    /// Rooms this shard owns (sequences) right now.
    pub chat_rooms_owned: AtomicI64,
    /// Track bodies sent from the page cache with `sendfile`.
    pub tracks_zero_copy_bodies_total: AtomicU64,
    /// Track bodies read into a read buffer and written.
    pub tracks_buffered_bodies_total: AtomicU64,
    /// Track files the shard keeps open.
    pub tracks_open_files: AtomicI64,
    /// Track metadata lookups sent to the control plane.
    pub tracks_lookups_total: AtomicU64,
    /// Requests that waited for another request's lookup of the same track.
    pub tracks_lookups_shared_total: AtomicU64,
    limit_hits_total: [AtomicU64; LimitKind::ALL.len()],
    driver: AtomicU8,
    /// The shard accepts connections.
    pub serving: AtomicBool,
    /// Nanoseconds since process start at the shard's last heartbeat.
    pub heartbeat_ns: AtomicU64,
}

impl ShardMetrics {
    /// Adds `value` to a counter. Only the owning shard calls this, so a
    /// plain load and store would do; `fetch_add` Relaxed costs the same on x86.
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// Counts one hit of `limit`.
    pub fn limit_hit(&self, limit: LimitKind) {
        self.limit_hits_total[limit.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Hits of `limit` so far.
    pub fn limit_hits(&self, limit: LimitKind) -> u64 {
        self.limit_hits_total[limit.index()].load(Ordering::Relaxed)
    }

    /// Records the shard's driver.
    pub fn set_driver(&self, driver: DriverKind) {
        self.driver.store(driver as u8 + 1, Ordering::Relaxed);
    }

    /// The shard's driver, once its runtime is built.
    pub fn driver(&self) -> Option<DriverKind> {
        match self.driver.load(Ordering::Relaxed) {
            1 => Some(DriverKind::IoUring),
            2 => Some(DriverKind::Legacy),
            _ => None,
        }
    }
}

/// A new loop-turn latency histogram, in nanoseconds up to 60 s.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Prometheus bucket bounds of the loop-turn histogram, in seconds.
const LOOP_TURN_BUCKETS_SECONDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// The mesh facts a scrape reports.
pub struct RingReport {
    /// Sending shard.
    pub from: usize,
    /// Receiving shard.
    pub to: usize,
    /// Messages waiting.
    pub depth: usize,
    /// Sends refused because the ring was full.
    pub full_total: u64,
    /// Messages published.
    pub sent_total: u64,
}

/// Name, Prometheus type, help text and reader of one per-shard series.
type CounterSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardMetrics) -> i64,
);

/// Renders every series. `loop_turn` is the merge of every shard's histogram
/// that answered; `missing_shards` lists those that did not in time.
pub fn render_prometheus(
    shards: &[std::sync::Arc<ShardMetrics>],
    rings: &[RingReport],
    loop_turn: &Histogram<u64>,
    missing_shards: &[usize],
) -> String {
    let mut out = String::with_capacity(8192);
    let counters: [CounterSeries; 20] = [
        ("veza_connections_open", "gauge", "Open connections.", |m| {
            m.connections_open.load(Ordering::Relaxed)
        }),
        (
            "veza_connections_accepted_total",
            "counter",
            "Accepted connections.",
            |m| m.connections_accepted_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_bytes_received_total",
            "counter",
            "Bytes read from sockets.",
            |m| m.bytes_received_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_bytes_sent_total",
            "counter",
            "Bytes written to sockets.",
            |m| m.bytes_sent_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_websocket_frames_received_total",
            "counter",
            "WebSocket frames received.",
            |m| m.websocket_frames_received_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_websocket_frames_sent_total",
            "counter",
            "WebSocket frames sent.",
            |m| m.websocket_frames_sent_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_http_requests_total",
            "counter",
            "HTTP requests parsed.",
            |m| m.http_requests_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_shard_stalls_total",
            "counter",
            "Event-loop stalls over stall.budget_ms.",
            |m| m.stalls_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_chat_connections",
            "gauge",
            "Authenticated chat connections.",
            |m| m.chat_connections.load(Ordering::Relaxed),
        ),
        (
            "veza_chat_messages_sequenced_total",
            "counter",
            "Messages sequenced by rooms the shard owns.",
            |m| m.chat_messages_sequenced_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_chat_deliveries_total",
            "counter",
            "Chat event frames queued to local subscribers.",
            |m| m.chat_deliveries_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_chat_persist_batches_total",
            "counter",
            "Persistence batches committed.",
            |m| m.chat_persist_batches_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_chat_persist_failures_total",
            "counter",
            "Persistence batches that failed and are retried.",
            |m| m.chat_persist_failures_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_chat_persist_queue_depth",
            "gauge",
            "Changes waiting for the control plane to commit them.",
            |m| m.chat_persist_queue_depth.load(Ordering::Relaxed),
        ),
        (
            "veza_chat_rooms_owned",
            "gauge",
            "Rooms the shard sequences.",
            |m| m.chat_rooms_owned.load(Ordering::Relaxed),
        ),
        (
            "veza_tracks_zero_copy_bodies_total",
            "counter",
            "Track bodies sent from the page cache with sendfile.",
            |m| m.tracks_zero_copy_bodies_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_tracks_buffered_bodies_total",
            "counter",
            "Track bodies read with io_uring into a read buffer and written.",
            |m| m.tracks_buffered_bodies_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_tracks_lookups_total",
            "counter",
            "Track metadata lookups sent to the control plane.",
            |m| m.tracks_lookups_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_tracks_lookups_shared_total",
            "counter",
            "Requests that waited for a lookup of the same track already in flight.",
            |m| m.tracks_lookups_shared_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_tracks_open_files",
            "gauge",
            "Track files the shard keeps open (tracks.open_files_max).",
            |m| m.tracks_open_files.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, read) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (shard_idx, metrics) in shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard_idx}\"}} {}", read(metrics));
        }
    }
    render_limits(&mut out, shards);
    render_drivers(&mut out, shards);
    render_rings(&mut out, rings);
    render_histogram(&mut out, "veza_loop_turn_latency_seconds", loop_turn);
    let _ = writeln!(
        out,
        "# HELP veza_scrape_missing_shards Shards that did not answer this scrape in time.\n# TYPE veza_scrape_missing_shards gauge\nveza_scrape_missing_shards {}",
        missing_shards.len()
    );
    out
}

fn render_limits(out: &mut String, shards: &[std::sync::Arc<ShardMetrics>]) {
    let name = "veza_limit_hits_total";
    let _ = writeln!(
        out,
        "# HELP {name} Times a configured limit was hit.\n# TYPE {name} counter"
    );
    for (shard_idx, metrics) in shards.iter().enumerate() {
        for limit in LimitKind::ALL {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{shard_idx}\",limit=\"{}\"}} {}",
                limit.label(),
                metrics.limit_hits(limit)
            );
        }
    }
}

fn render_drivers(out: &mut String, shards: &[std::sync::Arc<ShardMetrics>]) {
    let name = "veza_shard_driver";
    let _ = writeln!(
        out,
        "# HELP {name} The I/O driver each shard runs (1 = active).\n# TYPE {name} gauge"
    );
    for (shard_idx, metrics) in shards.iter().enumerate() {
        if let Some(driver) = metrics.driver() {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{shard_idx}\",driver=\"{}\"}} 1",
                driver.label()
            );
        }
    }
}

fn render_rings(out: &mut String, rings: &[RingReport]) {
    let _ = writeln!(out, "# HELP veza_ring_depth Messages waiting in a cross-shard ring.\n# TYPE veza_ring_depth gauge");
    for ring in rings {
        let _ = writeln!(
            out,
            "veza_ring_depth{{from=\"{}\",to=\"{}\"}} {}",
            ring.from, ring.to, ring.depth
        );
    }
    let _ = writeln!(out, "# HELP veza_ring_full_total Sends refused because a cross-shard ring was full.\n# TYPE veza_ring_full_total counter");
    for ring in rings {
        let _ = writeln!(
            out,
            "veza_ring_full_total{{from=\"{}\",to=\"{}\"}} {}",
            ring.from, ring.to, ring.full_total
        );
    }
    let _ = writeln!(out, "# HELP veza_ring_messages_total Messages published into a cross-shard ring.\n# TYPE veza_ring_messages_total counter");
    for ring in rings {
        let _ = writeln!(
            out,
            "veza_ring_messages_total{{from=\"{}\",to=\"{}\"}} {}",
            ring.from, ring.to, ring.sent_total
        );
    }
}

fn render_histogram(out: &mut String, name: &str, histogram: &Histogram<u64>) {
    let _ = writeln!(
        out,
        "# HELP {name} Lateness of each shard's heartbeat timer: how long a loop turn kept it waiting.\n# TYPE {name} histogram"
    );
    for bound_seconds in LOOP_TURN_BUCKETS_SECONDS {
        let bound_ns = (bound_seconds * 1e9) as u64;
        let count = if histogram.is_empty() {
            0
        } else {
            histogram.count_between(0, bound_ns)
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound_seconds}\"}} {count}");
    }
    let total = histogram.len();
    let sum_seconds = histogram.mean() * total as f64 / 1e9;
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {sum_seconds}\n{name}_count {total}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn rendering_reports_every_shard_limit_and_merged_histogram() {
        let shards = vec![
            Arc::new(ShardMetrics::default()),
            Arc::new(ShardMetrics::default()),
        ];
        shards[1].limit_hit(LimitKind::HttpBodyBytes);
        shards[0].set_driver(DriverKind::Legacy);
        let mut histogram = new_latency_histogram();
        histogram.record(2_000_000).unwrap(); // 2 ms
        let text = render_prometheus(&shards, &[], &histogram, &[]);
        assert!(text.contains("veza_limit_hits_total{shard=\"1\",limit=\"http_body_bytes\"} 1"));
        assert!(text.contains("veza_limit_hits_total{shard=\"0\",limit=\"http_body_bytes\"} 0"));
        assert!(text.contains("veza_shard_driver{shard=\"0\",driver=\"legacy\"} 1"));
        assert!(text.contains("veza_loop_turn_latency_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("veza_loop_turn_latency_seconds_bucket{le=\"0.0025\"} 1"));
        assert!(text.contains("veza_loop_turn_latency_seconds_count 1"));
    }
}
