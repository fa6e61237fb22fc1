//! One module per scenario. Each takes its options, starts the servers it
//! compares, runs load through [`crate::load_generator`], and returns
//! [`crate::report`] rows.
//!
//! - [`ws_echo`]: WebSocket echo, Veza against tokio-tungstenite.
//! - [`control_persist`]: persisted messages per second through the control
//!   protocol, on SQLite and PostgreSQL.
//! - [`chat_fanout`]: room fan-out over chat protocol v1, Veza against
//!   nats-server over WebSocket.

pub mod chat_fanout;
pub mod control_persist;
pub mod ws_echo;
