//! Veza's data plane: thread-per-core shards on monoio serving HTTP/1.1 and
//! WebSocket. See ARCHITECTURE.md at the repository root for the codemap.
//!
//! Architecture Invariant: nothing here blocks a shard. No blocking syscalls
//! on shard threads (the one exception is `/debug/stall`, which exists to
//! test stall detection and is off by default), no database, no locks on the
//! hot path.
#![warn(missing_docs)]

pub mod chat;
pub mod config;
pub mod control_client;
pub mod http_connection;
pub mod live;
pub mod local_event;
pub mod metrics;
pub mod ordered_send;
pub mod preflight;
pub mod ring_mesh;
pub mod routes;
pub mod send_queue;
pub mod server;
pub mod shard;
pub mod tracks;
pub mod websocket_session;
