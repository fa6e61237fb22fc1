//! Veza's control plane: a tokio process that owns every slow or stateful
//! thing the data plane must never do: the database, accounts and tokens,
//! rooms and permissions, message persistence, configuration. It serves a
//! JSON REST API and the binary control protocol for data planes.
//!
//! Architecture Invariant: the control plane knows nothing of shards,
//! sockets of clients or WebSocket framing; the data plane knows nothing of
//! SQL. They meet only in `veza_proto`'s control protocol.
#![warn(missing_docs)]

pub mod accounts;
pub mod api;
pub mod config;
pub mod control_server;
pub mod db;
pub mod error;
pub mod events;
pub mod live_streams;
pub mod metrics;
pub mod ops;
pub mod rooms;
pub mod server;
pub mod social;
pub mod state;
pub mod tracks;
