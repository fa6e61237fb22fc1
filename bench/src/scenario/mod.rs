//! One module per scenario. Each takes its options, starts the servers it
//! compares, runs load through [`crate::load_generator`], and returns
//! [`crate::report`] rows.
//!
//! - [`ws_echo`]: WebSocket echo, Veza against tokio-tungstenite.
//! - [`control_persist`]: persisted messages per second through the control
//!   protocol, on SQLite and PostgreSQL.
//! - [`chat_fanout`]: room fan-out over chat protocol v1, Veza against
//!   nats-server over WebSocket.
//! - [`idle_connections`]: server memory per idle authenticated, subscribed
//!   connection, Veza against nats-server.
//! - [`connect_storm`]: connections (handshake + auth) per second and their
//!   latency.
//! - [`live_listeners`]: listeners of one Ogg Opus live stream ramped in,
//!   Veza against icecast2: time to first byte and audio, stalls, CPU and
//!   memory per listener.
//! - [`track_ranges`]: HTTP range requests against stored track
//!   renditions over keep-alive connections, Veza against nginx, and the
//!   control plane's transcoding throughput.
//! - [`connection_fleet`]: what the last two share (client processes,
//!   users, rooms).

pub mod chat_fanout;
pub mod connect_storm;
pub mod connection_fleet;
pub mod control_persist;
pub mod idle_connections;
pub mod live_listeners;
pub mod track_ranges;
pub mod ws_echo;
