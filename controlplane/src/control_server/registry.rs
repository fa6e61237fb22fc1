//! Which data planes are connected, with per-connection counters, for
//! `GET /v1/admin/nodes` and `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One connected data-plane shard. Counters are written by its connection
/// task and read by scrapes.
#[derive(Debug)]
pub struct NodeConnection {
    /// Unique per connection since start.
    pub connection_id: u64,
    /// The node's name from `Hello`.
    pub node_id: String,
    /// The shard this connection serves.
    pub shard_idx: u32,
    /// How many shards the node runs.
    pub shard_count: u32,
    /// `unix` or `tcp`.
    pub transport: &'static str,
    /// The TCP peer address; empty on a Unix socket.
    pub peer: String,
    /// When the handshake completed (Unix milliseconds).
    pub connected_since_ms: i64,
    /// Requests answered (successfully or not).
    pub requests_served: AtomicU64,
    /// Batches committed.
    pub batches_persisted: AtomicU64,
    /// Changes in committed batches.
    pub messages_persisted: AtomicU64,
    /// Pushes queued for this connection.
    pub pushes_sent: AtomicU64,
}

/// One node connection as `GET /v1/admin/nodes` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    /// The node's name.
    pub node_id: String,
    /// The shard this connection serves.
    pub shard_idx: u32,
    /// How many shards the node runs.
    pub shard_count: u32,
    /// `unix` or `tcp`.
    pub transport: String,
    /// The TCP peer address; empty on a Unix socket.
    pub peer: String,
    /// When the connection's handshake completed (Unix milliseconds).
    pub connected_since_ms: i64,
    /// Requests answered on this connection.
    pub requests_served: u64,
    /// Batches committed for this connection.
    pub batches_persisted: u64,
    /// Changes in those batches.
    pub messages_persisted: u64,
    /// Pushes sent on this connection.
    pub pushes_sent: u64,
}

/// Connected data planes and process-wide control counters.
#[derive(Default)]
pub struct NodeRegistry {
    connections: Mutex<BTreeMap<u64, Arc<NodeConnection>>>,
    next_connection_id: AtomicU64,
    /// Connections accepted (before the handshake).
    pub accepted_total: AtomicU64,
    /// Connections refused at `control.connections_max`.
    pub refused_total: AtomicU64,
    /// Frames that failed validation or broke the protocol.
    pub frame_errors_total: AtomicU64,
    /// Batches committed.
    pub batches_persisted_total: AtomicU64,
    /// Changes in committed batches.
    pub messages_persisted_total: AtomicU64,
    /// Requests answered.
    pub requests_total: AtomicU64,
    /// Requests answered with an error.
    pub request_errors_total: AtomicU64,
    /// `Resync` pushes sent because a connection fell behind.
    pub resyncs_total: AtomicU64,
    /// Live sources allowed to broadcast (`AuthorizeLiveSource` granted).
    pub live_sources_granted_total: AtomicU64,
    /// Live sources refused: no such stream, a wrong key, not the owner.
    pub live_sources_refused_total: AtomicU64,
    /// Connections in progress (handshake or registered), for
    /// `control.connections_max`.
    pub open_connections: AtomicU64,
}

impl NodeRegistry {
    /// A fresh connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Lists a connection after its handshake.
    pub fn register(&self, connection: Arc<NodeConnection>) {
        self.lock().insert(connection.connection_id, connection);
    }

    /// Removes a closed connection.
    pub fn deregister(&self, connection_id: u64) {
        self.lock().remove(&connection_id);
    }

    /// Connected shards.
    pub fn connection_count(&self) -> usize {
        self.lock().len()
    }

    /// Every connected shard, by node then shard.
    pub fn list(&self) -> Vec<NodeView> {
        let mut views: Vec<NodeView> = self
            .lock()
            .values()
            .map(|connection| NodeView {
                node_id: connection.node_id.clone(),
                shard_idx: connection.shard_idx,
                shard_count: connection.shard_count,
                transport: connection.transport.to_owned(),
                peer: connection.peer.clone(),
                connected_since_ms: connection.connected_since_ms,
                requests_served: connection.requests_served.load(Ordering::Relaxed),
                batches_persisted: connection.batches_persisted.load(Ordering::Relaxed),
                messages_persisted: connection.messages_persisted.load(Ordering::Relaxed),
                pushes_sent: connection.pushes_sent.load(Ordering::Relaxed),
            })
            .collect();
        views.sort_by(|left, right| {
            (&left.node_id, left.shard_idx).cmp(&(&right.node_id, right.shard_idx))
        });
        views
    }

    /// Renders the control series in Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        };
        gauge(
            out,
            "veza_control_connections",
            "Data-plane shards connected over the control protocol.",
            self.connection_count() as u64,
        );
        let series: [(&str, &str, &AtomicU64); 10] = [
            (
                "veza_control_connections_accepted_total",
                "Control connections accepted.",
                &self.accepted_total,
            ),
            (
                "veza_control_connections_refused_total",
                "Control connections refused at control.connections_max.",
                &self.refused_total,
            ),
            (
                "veza_control_frame_errors_total",
                "Control frames that failed validation or broke the protocol.",
                &self.frame_errors_total,
            ),
            (
                "veza_control_batches_persisted_total",
                "Message batches committed for data planes.",
                &self.batches_persisted_total,
            ),
            (
                "veza_control_messages_persisted_total",
                "Changes in committed batches.",
                &self.messages_persisted_total,
            ),
            (
                "veza_control_requests_total",
                "Control requests answered.",
                &self.requests_total,
            ),
            (
                "veza_control_request_errors_total",
                "Control requests answered with an error.",
                &self.request_errors_total,
            ),
            (
                "veza_control_resyncs_total",
                "Resync pushes sent to data planes that fell behind.",
                &self.resyncs_total,
            ),
            (
                "veza_control_live_sources_granted_total",
                "Live sources allowed to broadcast.",
                &self.live_sources_granted_total,
            ),
            (
                "veza_control_live_sources_refused_total",
                "Live sources refused (no such stream, wrong key, not the owner).",
                &self.live_sources_refused_total,
            ),
        ];
        for (name, help, value) in series {
            counter(out, name, help, value);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<NodeConnection>>> {
        // A panic while holding this lock cannot leave the map half-changed
        // (each operation is one insert or remove), so a poisoned lock is used as is.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl NodeConnection {
    /// Counts one answered request.
    pub fn count_request(&self, registry: &NodeRegistry, failed: bool) {
        self.requests_served.fetch_add(1, Ordering::Relaxed);
        registry.requests_total.fetch_add(1, Ordering::Relaxed);
        if failed {
            registry
                .request_errors_total
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one committed batch of `changes` changes.
    pub fn count_batch(&self, registry: &NodeRegistry, changes: u64) {
        self.batches_persisted.fetch_add(1, Ordering::Relaxed);
        self.messages_persisted
            .fetch_add(changes, Ordering::Relaxed);
        registry
            .batches_persisted_total
            .fetch_add(1, Ordering::Relaxed);
        registry
            .messages_persisted_total
            .fetch_add(changes, Ordering::Relaxed);
    }
}
