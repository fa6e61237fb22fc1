//! Configuration: one TOML file with documented defaults, every key
//! overridable by a `VEZA_<SECTION>_<KEY>` environment variable.
//!
//! Precedence, lowest first: built-in defaults, the file given by
//! `--config PATH`, environment variables. Every value is validated before a
//! shard starts; an invalid one is reported with its key (`limits.idle_timeout_ms`)
//! and the reason, and the process exits with code 2.

use std::path::Path;

use serde::{Deserialize, Serialize};
use veza_codec::config_layers;

/// Why a configuration was refused. Always names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Unreadable {
        /// The path given with `--config`.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The file or a variable holds a malformed or out-of-range value.
    #[error(transparent)]
    Layer(#[from] config_layers::LayerError),
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening, shards, logging, shutdown.
    pub server: ServerConfig,
    /// Every bound on what a client may make the server hold or wait for.
    pub limits: LimitsConfig,
    /// The cross-shard ring mesh.
    pub mesh: MeshConfig,
    /// Stall detection of shard event loops.
    pub stall: StallConfig,
    /// Endpoints for tests and diagnosis; off in production.
    pub debug: DebugConfig,
    /// The connection to the control plane.
    pub control: ControlConfig,
    /// Chat rooms: backlogs, persistence, subscriptions, authentication.
    pub chat: ChatConfig,
    /// Live audio: sources, re-paging, the Opus ladder, listeners.
    pub live: LiveConfig,
    /// Stored tracks on demand: media directory, metadata cache, reads, plays.
    pub tracks: crate::tracks::TracksConfig,
}

/// What happens to a listener whose send queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaggingListenerPolicy {
    /// Drop the pages it has not started receiving and carry on from the
    /// next page (Icecast's behaviour for a lagging client is to drop it;
    /// skipping keeps listeners on flaky links playing).
    Skip,
    /// Close the connection.
    Disconnect,
}

/// `[live]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Audio a new listener receives at once, page-aligned (Icecast's
    /// `burst-size`), so players start without waiting for a buffer.
    pub burst_bytes: usize,
    /// Recent pages a stream keeps per rendition for bursts.
    pub recent_pages_bytes_max: usize,
    /// Audio per outgoing Ogg page. Longer pages mean fewer writes per
    /// listener; shorter ones less latency.
    pub page_duration_ms: u32,
    /// A listener's send queue; past it `lagging_listener_policy` applies.
    pub listener_queue_bytes_max: usize,
    /// `skip` or `disconnect`.
    pub lagging_listener_policy: LaggingListenerPolicy,
    /// How long listeners stay connected (hearing silence) after the source
    /// dropped, waiting for it to return.
    pub source_grace_ms: u64,
    /// A source that sends nothing for this long is disconnected.
    pub source_idle_timeout_ms: u64,
    /// Ingest bytes a source's shard may have sent to the stream's owner
    /// and not yet seen processed; past it the source is not read.
    pub source_window_bytes: usize,
    /// Largest Opus packet (or Ogg packet of headers) a source may send.
    pub packet_bytes_max: usize,
    /// The Opus ladder raw PCM sources are encoded to.
    pub ladder_bitrates_kbps: Vec<u32>,
    /// The rendition a listener gets without `?br=`: the nearest one.
    pub default_bitrate_kbps: u32,
    /// Streams one shard may own at once; past it new sources get 503.
    pub streams_per_shard_max: usize,
    /// Listeners a page is queued on per loop turn; between batches the
    /// shard serves I/O (new listeners, sources), so a page for thousands of
    /// listeners does not stall it.
    pub fanout_batch_max: usize,
    /// A recorded broadcast goes to the control plane in chunks of about
    /// this many bytes (whole pages).
    pub recording_chunk_bytes: usize,
    /// Recording bytes an owner shard holds per stream while the control
    /// plane is slow or away; past it the recording is abandoned (the
    /// broadcast goes on).
    pub recording_buffer_bytes_max: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            burst_bytes: 65_536,
            recent_pages_bytes_max: 262_144,
            page_duration_ms: 500,
            listener_queue_bytes_max: 262_144,
            lagging_listener_policy: LaggingListenerPolicy::Skip,
            source_grace_ms: 10_000,
            source_idle_timeout_ms: 10_000,
            source_window_bytes: 262_144,
            packet_bytes_max: 65_536,
            ladder_bitrates_kbps: vec![64, 96, 160],
            default_bitrate_kbps: 96,
            streams_per_shard_max: 256,
            fanout_batch_max: 512,
            recording_chunk_bytes: 65_536,
            recording_buffer_bytes_max: 16_777_216,
        }
    }
}

impl LiveConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 11] = [
            (
                "live.recording_chunk_bytes",
                self.recording_chunk_bytes as u64,
            ),
            (
                "live.recording_buffer_bytes_max",
                self.recording_buffer_bytes_max as u64,
            ),
            ("live.fanout_batch_max", self.fanout_batch_max as u64),
            ("live.burst_bytes", self.burst_bytes as u64),
            ("live.page_duration_ms", self.page_duration_ms as u64),
            ("live.source_grace_ms", self.source_grace_ms),
            ("live.source_idle_timeout_ms", self.source_idle_timeout_ms),
            ("live.source_window_bytes", self.source_window_bytes as u64),
            ("live.packet_bytes_max", self.packet_bytes_max as u64),
            (
                "live.default_bitrate_kbps",
                self.default_bitrate_kbps as u64,
            ),
            (
                "live.streams_per_shard_max",
                self.streams_per_shard_max as u64,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.recording_buffer_bytes_max < 2 * self.recording_chunk_bytes {
            return Err(invalid(
                "live.recording_buffer_bytes_max",
                "must be at least twice live.recording_chunk_bytes",
            ));
        }
        if self.recording_chunk_bytes > 8 * 1024 * 1024 {
            return Err(invalid(
                "live.recording_chunk_bytes",
                "must be at most 8388608 (it travels in one control frame)",
            ));
        }
        if self.recent_pages_bytes_max < self.burst_bytes {
            return Err(invalid(
                "live.recent_pages_bytes_max",
                "must be at least live.burst_bytes",
            ));
        }
        // A burst plus the headers must fit a listener's queue with room for
        // live pages behind it.
        if self.listener_queue_bytes_max < 2 * self.burst_bytes {
            return Err(invalid(
                "live.listener_queue_bytes_max",
                "must be at least twice live.burst_bytes",
            ));
        }
        if !(20..=1000).contains(&self.page_duration_ms) {
            return Err(invalid(
                "live.page_duration_ms",
                "must be between 20 and 1000",
            ));
        }
        if self.ladder_bitrates_kbps.is_empty() || self.ladder_bitrates_kbps.len() > 8 {
            return Err(invalid(
                "live.ladder_bitrates_kbps",
                "must list 1 to 8 bitrates",
            ));
        }
        if let Some(bitrate) = self
            .ladder_bitrates_kbps
            .iter()
            .find(|bitrate| !(6..=510).contains(*bitrate))
        {
            return Err(invalid(
                "live.ladder_bitrates_kbps",
                &format!("{bitrate} is outside Opus's 6 to 510 kb/s"),
            ));
        }
        Ok(())
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address every shard's listener binds.
    pub listen_address: String,
    /// Port for HTTP and WebSocket.
    pub listen_port: u16,
    /// Number of shards; 0 means one per CPU in the process's affinity mask.
    pub shards: usize,
    /// Pin each shard thread to its CPU.
    pub pin_shards: bool,
    /// Listen backlog of each shard's socket.
    pub accept_backlog: u32,
    /// io_uring submission queue entries per shard.
    pub io_uring_entries: u32,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A `tracing` filter, for example `info` or `veza_dataplane=debug`.
    pub log_level: String,
    /// How long a graceful shutdown waits for connections to close.
    pub shutdown_drain_ms_max: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen_address: "0.0.0.0".into(),
            listen_port: 8080,
            shards: 0,
            pin_shards: true,
            accept_backlog: 4096,
            io_uring_entries: 1024,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_drain_ms_max: 10_000,
        }
    }
}

/// `[limits]`: each one is counted in `veza_limit_hits_total{limit=...}` when hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections per shard; past it new ones get 503 and are closed.
    pub connections_per_shard_max: usize,
    /// Request line plus headers; past it 431.
    pub http_head_bytes_max: usize,
    /// Header fields per request; past it 431.
    pub http_header_count_max: usize,
    /// Request target length; past it 414.
    pub http_target_bytes_max: usize,
    /// Request body; past it 413.
    pub http_body_bytes_max: u64,
    /// Total time to receive a complete request head (slowloris); past it 408.
    pub header_read_timeout_ms: u64,
    /// Keep-alive connection idle time before it is closed.
    pub idle_timeout_ms: u64,
    /// Initial read buffer per connection, and the largest read a
    /// WebSocket session grows to under load.
    pub read_buffer_bytes: usize,
    /// The read size an idle WebSocket session shrinks to (its buffer is
    /// released and re-made this small when empty).
    pub websocket_idle_read_bytes: usize,
    /// One WebSocket frame's payload; past it close 1009.
    pub websocket_frame_bytes_max: usize,
    /// One (possibly fragmented) WebSocket message; past it close 1009.
    pub websocket_message_bytes_max: usize,
    /// Bytes queued for one connection; past it close 4008.
    pub send_queue_bytes_max: usize,
    /// Bytes queued for one connection past which it stops receiving
    /// ephemeral chat events (typing, presence); never above
    /// `send_queue_bytes_max`.
    pub send_queue_soft_bytes: usize,
    /// Idle time after which the server pings a WebSocket peer.
    pub websocket_ping_interval_ms: u64,
    /// Time a pinged peer has to send anything before it is closed with 4009.
    pub websocket_pong_timeout_ms: u64,
    /// After the server decides to close (an error, `Connection: close`, a
    /// close frame), how long it keeps reading and discarding what the peer
    /// still sends, so that the peer reads the answer before the socket is
    /// reset (nginx's lingering close).
    pub lingering_close_ms: u64,
    /// Most bytes discarded during a lingering close.
    pub lingering_close_bytes_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            connections_per_shard_max: 16_384,
            http_head_bytes_max: 8_192,
            http_header_count_max: 64,
            http_target_bytes_max: 4_096,
            http_body_bytes_max: 1_048_576,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            read_buffer_bytes: 16_384,
            websocket_idle_read_bytes: 512,
            websocket_frame_bytes_max: 1_048_576,
            websocket_message_bytes_max: 4_194_304,
            send_queue_bytes_max: 4_194_304,
            send_queue_soft_bytes: 1_048_576,
            websocket_ping_interval_ms: 30_000,
            websocket_pong_timeout_ms: 10_000,
            lingering_close_ms: 2_000,
            lingering_close_bytes_max: 1_048_576,
        }
    }
}

/// `[mesh]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// Messages each per-pair ring holds; a send to a full ring is refused and counted.
    pub ring_capacity: usize,
    /// Messages a shard takes from one ring per turn before yielding to its connections.
    pub drain_batch_max: usize,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            ring_capacity: 4_096,
            drain_batch_max: 256,
        }
    }
}

/// `[chat]`: every bound of the chat layer. Rate limits and the message size
/// come from the control plane's runtime settings instead (changed live).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Time a new chat connection has to send `Auth`; past it close 4004.
    pub auth_timeout_ms: u64,
    /// Events a room's owner shard keeps in memory for resume (messages,
    /// edits, deletes, reactions). Events not yet persisted are never evicted.
    pub room_backlog_max: usize,
    /// Changes an owner shard holds waiting for the control plane to commit
    /// them; past it sends are refused with `Unavailable`.
    pub persist_queue_max: usize,
    /// Changes in one `PersistBatch` (group commit).
    pub persist_batch_max: usize,
    /// How long the first change of a batch waits for others to join it
    /// (0: commit at once). Trades acknowledgement latency for fewer commits.
    pub persist_linger_ms: u64,
    /// Seqs an owner shard reserves for a room at once (`ReserveSeqs`,
    /// durable before any of them is assigned; the next block is asked for
    /// when half of this one is used). A room sequences between half and
    /// one and a half blocks while the control plane is away; after a crash
    /// of the data plane its seqs skip at most two blocks.
    pub seq_reserve_block: u32,
    /// Rooms one connection may be subscribed to.
    pub subscriptions_per_connection_max: usize,
    /// Commands refused in a row for rate limiting before the connection is
    /// closed with 1008.
    pub rate_limit_strikes_max: u32,
    /// How long an owner shard trusts a cached permission lookup (pushes
    /// invalidate it sooner).
    pub rights_cache_ttl_ms: u64,
    /// Most messages replayed on a resume; a client further behind pages
    /// with `History`.
    pub resume_messages_max: usize,
    /// Commands waiting at one room's owner; past it `Unavailable`.
    pub room_queue_max: usize,
    /// Rooms one shard holds loaded (owned: sequencing, backlog, rights
    /// cache); a command for one more is refused with `Unavailable` until
    /// an idle room unloads.
    pub rooms_owned_max: usize,
    /// Cross-shard chat messages held for a full ring, per destination
    /// shard; past it they are dropped and counted.
    pub mesh_retry_max: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            auth_timeout_ms: 10_000,
            room_backlog_max: 1_024,
            persist_queue_max: 16_384,
            persist_batch_max: 512,
            persist_linger_ms: 2,
            seq_reserve_block: 1024,
            subscriptions_per_connection_max: 256,
            rate_limit_strikes_max: 32,
            rights_cache_ttl_ms: 60_000,
            resume_messages_max: 1_000,
            room_queue_max: 8_192,
            rooms_owned_max: 50_000,
            mesh_retry_max: 65_536,
        }
    }
}

/// `[stall]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StallConfig {
    /// How often each shard's heartbeat timer fires; its lateness is the loop-turn latency.
    pub check_interval_ms: u64,
    /// A loop that does not turn for longer than this is logged and counted as a stall.
    pub budget_ms: u64,
}

impl Default for StallConfig {
    fn default() -> Self {
        Self {
            check_interval_ms: 10,
            budget_ms: 50,
        }
    }
}

/// `[debug]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Serves `POST /debug/stall?ms=N`, which blocks a shard on purpose.
    pub endpoints_enabled: bool,
}

/// `[control]`: each shard keeps its own connection to the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// `unix:/path/control.sock` or `tcp:ip:port`. Empty: no control plane
    /// (standalone; `/ready` does not wait for one).
    pub address: String,
    /// This node's name in the control plane's node list. Empty: the host name.
    pub node_id: String,
    /// Time a connection attempt may take.
    pub connect_timeout_ms: u64,
    /// Time a request may wait for its answer; past it the caller gets a timeout.
    pub request_timeout_ms: u64,
    /// First delay before reconnecting; it doubles after each failure.
    pub reconnect_delay_ms_min: u64,
    /// Largest delay before reconnecting.
    pub reconnect_delay_ms_max: u64,
    /// Requests one shard may have waiting for answers; past it requests fail at once.
    pub requests_in_flight_max: usize,
    /// The largest control frame sent or accepted.
    pub frame_bytes_max: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            address: String::new(),
            node_id: String::new(),
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
            reconnect_delay_ms_min: 100,
            reconnect_delay_ms_max: 10_000,
            requests_in_flight_max: 4_096,
            frame_bytes_max: 16_777_216,
        }
    }
}

impl ControlConfig {
    /// Whether a control plane is configured.
    pub fn is_configured(&self) -> bool {
        !self.address.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 5] = [
            ("control.connect_timeout_ms", self.connect_timeout_ms),
            ("control.request_timeout_ms", self.request_timeout_ms),
            (
                "control.reconnect_delay_ms_min",
                self.reconnect_delay_ms_min,
            ),
            (
                "control.requests_in_flight_max",
                self.requests_in_flight_max as u64,
            ),
            ("control.frame_bytes_max", self.frame_bytes_max as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if let Err(reason) = crate::control_client::ControlAddress::parse(&self.address) {
            return Err(invalid("control.address", &reason));
        }
        if self.reconnect_delay_ms_max < self.reconnect_delay_ms_min {
            return Err(invalid(
                "control.reconnect_delay_ms_max",
                "must be at least control.reconnect_delay_ms_min",
            ));
        }
        if self.frame_bytes_max < 4096 || self.frame_bytes_max > u32::MAX as usize {
            return Err(invalid(
                "control.frame_bytes_max",
                "must be between 4096 and 4294967295",
            ));
        }
        if self.node_id.len() > veza_proto::control::handshake::NODE_ID_BYTES_MAX {
            return Err(invalid("control.node_id", "must be at most 128 bytes"));
        }
        Ok(())
    }
}

impl Config {
    /// Loads defaults, then `path` if given, then `VEZA_*` variables from `env`, then validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text =
            match path {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|error| {
                    ConfigError::Unreadable {
                        path: path.display().to_string(),
                        reason: error.to_string(),
                    }
                })?),
                None => None,
            };
        let path_name = path
            .map(|path| path.display().to_string())
            .unwrap_or_default();
        let document = text.as_deref().map(|text| (path_name.as_str(), text));
        let (config, warnings) = config_layers::load::<Config>(document, env)?;
        for warning in warnings {
            eprintln!("warning: {warning}");
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every value's range. Types were already checked by serde.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        let positive: [(&str, u64); 25] = [
            (
                "limits.connections_per_shard_max",
                limits.connections_per_shard_max as u64,
            ),
            (
                "limits.http_head_bytes_max",
                limits.http_head_bytes_max as u64,
            ),
            (
                "limits.http_header_count_max",
                limits.http_header_count_max as u64,
            ),
            (
                "limits.http_target_bytes_max",
                limits.http_target_bytes_max as u64,
            ),
            (
                "limits.header_read_timeout_ms",
                limits.header_read_timeout_ms,
            ),
            ("limits.idle_timeout_ms", limits.idle_timeout_ms),
            (
                "limits.websocket_frame_bytes_max",
                limits.websocket_frame_bytes_max as u64,
            ),
            (
                "limits.websocket_message_bytes_max",
                limits.websocket_message_bytes_max as u64,
            ),
            (
                "limits.send_queue_bytes_max",
                limits.send_queue_bytes_max as u64,
            ),
            (
                "limits.websocket_ping_interval_ms",
                limits.websocket_ping_interval_ms,
            ),
            (
                "limits.websocket_pong_timeout_ms",
                limits.websocket_pong_timeout_ms,
            ),
            ("mesh.ring_capacity", self.mesh.ring_capacity as u64),
            ("mesh.drain_batch_max", self.mesh.drain_batch_max as u64),
            ("stall.check_interval_ms", self.stall.check_interval_ms),
            ("stall.budget_ms", self.stall.budget_ms),
            ("chat.auth_timeout_ms", self.chat.auth_timeout_ms),
            ("chat.room_backlog_max", self.chat.room_backlog_max as u64),
            ("chat.persist_queue_max", self.chat.persist_queue_max as u64),
            ("chat.persist_batch_max", self.chat.persist_batch_max as u64),
            (
                "chat.seq_reserve_block",
                u64::from(self.chat.seq_reserve_block),
            ),
            (
                "chat.subscriptions_per_connection_max",
                self.chat.subscriptions_per_connection_max as u64,
            ),
            (
                "chat.rate_limit_strikes_max",
                self.chat.rate_limit_strikes_max as u64,
            ),
            ("chat.room_queue_max", self.chat.room_queue_max as u64),
            ("chat.rooms_owned_max", self.chat.rooms_owned_max as u64),
            ("chat.mesh_retry_max", self.chat.mesh_retry_max as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if limits.http_head_bytes_max > 1 << 20 {
            return Err(invalid(
                "limits.http_head_bytes_max",
                "must be at most 1048576",
            ));
        }
        if limits.websocket_idle_read_bytes < 64 {
            return Err(invalid(
                "limits.websocket_idle_read_bytes",
                "must be at least 64",
            ));
        }
        if limits.read_buffer_bytes < 1024 {
            return Err(invalid("limits.read_buffer_bytes", "must be at least 1024"));
        }
        if limits.websocket_message_bytes_max < limits.websocket_frame_bytes_max {
            return Err(invalid(
                "limits.websocket_message_bytes_max",
                "must be at least limits.websocket_frame_bytes_max",
            ));
        }
        if self
            .server
            .listen_address
            .parse::<std::net::IpAddr>()
            .is_err()
        {
            return Err(invalid(
                "server.listen_address",
                "must be an IPv4 or IPv6 address",
            ));
        }
        if self.server.shards > 1024 {
            return Err(invalid("server.shards", "must be at most 1024"));
        }
        if self.server.accept_backlog == 0 {
            return Err(invalid("server.accept_backlog", "must be greater than 0"));
        }
        if !self.server.io_uring_entries.is_power_of_two() || self.server.io_uring_entries < 8 {
            return Err(invalid(
                "server.io_uring_entries",
                "must be a power of two of at least 8",
            ));
        }
        if self.stall.budget_ms < self.stall.check_interval_ms {
            return Err(invalid(
                "stall.budget_ms",
                "must be at least stall.check_interval_ms",
            ));
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.server.log_level) {
            return Err(invalid("server.log_level", &error.to_string()));
        }
        self.live.validate()?;
        self.tracks.validate()?;
        self.control.validate()
    }
}

fn invalid(key: &str, reason: &str) -> ConfigError {
    config_layers::invalid(key, reason).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check_refused(pairs: &[(&str, &str)], expected_key: &str) {
        let error = Config::load(None, env(pairs)).unwrap_err();
        assert!(
            error.to_string().contains(expected_key),
            "error {error} should name {expected_key}"
        );
    }

    #[test]
    fn defaults_are_valid_and_documented_ports_hold() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert_eq!(config.server.listen_port, 8080);
        assert_eq!(config, Config::default());
    }

    #[test]
    fn environment_overrides_keys_with_underscores() {
        let config = Config::load(
            None,
            env(&[
                ("VEZA_LIMITS_HTTP_HEAD_BYTES_MAX", "4096"),
                ("VEZA_SERVER_LISTEN_PORT", "9000"),
                ("VEZA_DEBUG_ENDPOINTS_ENABLED", "true"),
                ("VEZA_SERVER_LOG_FORMAT", "json"),
            ]),
        )
        .unwrap();
        assert_eq!(config.limits.http_head_bytes_max, 4096);
        assert_eq!(config.server.listen_port, 9000);
        assert!(config.debug.endpoints_enabled);
        assert_eq!(config.server.log_format, LogFormat::Json);
    }

    #[test]
    fn invalid_values_name_their_key() {
        check_refused(
            &[("VEZA_LIMITS_HTTP_HEAD_BYTES_MAX", "abc")],
            "limits.http_head_bytes_max",
        );
        check_refused(
            &[("VEZA_LIMITS_HTTP_HEAD_BYTES_MAX", "0")],
            "limits.http_head_bytes_max",
        );
        check_refused(&[("VEZA_SERVER_LISTEN_PORT", "70000")], "listen_port");
        check_refused(
            &[("VEZA_SERVER_LISTEN_ADDRESS", "not-an-ip")],
            "server.listen_address",
        );
        check_refused(&[("VEZA_SERVER_LOG_FORMAT", "yaml")], "log_format");
        check_refused(
            &[("VEZA_DEBUG_ENDPOINTS_ENABLED", "maybe")],
            "debug.endpoints_enabled",
        );
        check_refused(&[("VEZA_MESH_RING_CAPACITY", "-1")], "ring_capacity");
        check_refused(&[("VEZA_CONTROL_ADDRESS", "http://x")], "control.address");
        check_refused(
            &[("VEZA_CONTROL_RECONNECT_DELAY_MS_MAX", "50")],
            "control.reconnect_delay_ms_max",
        );
    }

    #[test]
    fn file_values_apply_and_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("veza.toml");
        std::fs::write(&path, "[server]\nlisten_port = 9100\nshards = 1\n").unwrap();
        let config = Config::load(Some(&path), env(&[("VEZA_SERVER_SHARDS", "2")])).unwrap();
        assert_eq!(config.server.listen_port, 9100);
        assert_eq!(config.server.shards, 2);
    }

    #[test]
    fn documented_example_file_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/veza-dataplane.toml");
        let config = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(
            config,
            Config::default(),
            "deploy/veza-dataplane.toml must document the defaults"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        for ((section, key), _) in config_layers::known_keys::<Config>() {
            assert!(
                text.contains(&format!("\n{key} = ")),
                "{section}.{key} is not documented"
            );
        }
    }

    #[test]
    fn live_values_out_of_range_name_their_key() {
        check_refused(
            &[("VEZA_LIVE_PAGE_DURATION_MS", "5")],
            "live.page_duration_ms",
        );
        check_refused(
            &[("VEZA_LIVE_LISTENER_QUEUE_BYTES_MAX", "65536")],
            "live.listener_queue_bytes_max",
        );
        check_refused(
            &[("VEZA_LIVE_RECENT_PAGES_BYTES_MAX", "1024")],
            "live.recent_pages_bytes_max",
        );
        check_refused(
            &[("VEZA_LIVE_SOURCE_GRACE_MS", "0")],
            "live.source_grace_ms",
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("veza.toml");
        std::fs::write(&path, "[live]\nladder_bitrates_kbps = [64, 900]\n").unwrap();
        let error = Config::load(Some(&path), Vec::new()).unwrap_err();
        assert!(
            error.to_string().contains("ladder_bitrates_kbps"),
            "{error}"
        );
        std::fs::write(&path, "[live]\nlagging_listener_policy = \"drop\"\n").unwrap();
        let error = Config::load(Some(&path), Vec::new()).unwrap_err();
        assert!(
            error.to_string().contains("lagging_listener_policy"),
            "{error}"
        );
    }

    #[test]
    fn file_with_wrong_type_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("veza.toml");
        std::fs::write(&path, "[limits]\nidle_timeout_ms = \"soon\"\n").unwrap();
        let error = Config::load(Some(&path), Vec::new()).unwrap_err();
        assert!(error.to_string().contains("idle_timeout_ms"), "{error}");
    }

    #[test]
    fn file_with_unknown_key_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("veza.toml");
        std::fs::write(&path, "[limits]\nhttp_head_bytes_maximum = 1\n").unwrap();
        let error = Config::load(Some(&path), Vec::new()).unwrap_err();
        assert!(
            error.to_string().contains("http_head_bytes_maximum"),
            "{error}"
        );
    }
}
