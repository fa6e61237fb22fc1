//! Veza's benchmark kit: a load generator, the servers it is compared with,
//! and one module per scenario. The `veza-bench` binary is a thin CLI over
//! this library.
//!
//! Codemap:
//!
//! - [`load_generator`]: the reusable client side. Pinned std threads that
//!   each run a tokio `current_thread` runtime ([`load_generator::client_threads`]),
//!   a hand-written WebSocket client ([`load_generator::websocket_client`]),
//!   latency histograms ([`load_generator::latency`]) and stamped, verifiable
//!   payloads ([`load_generator::echo_payload`]).
//! - [`server_process`]: starts a server binary pinned with `taskset`, waits
//!   until it is ready, reads its CPU seconds and RSS from `/proc`, stops it
//!   by PID.
//! - [`proc_stat`]: CPU seconds and RSS of a process, and the machine's
//!   CPU time, from `/proc`.
//! - [`scenario`]: one module per scenario (`ws-echo`, `control-persist`,
//!   `chat-fanout`, `idle-connections`, `connect-storm`); each turns its
//!   options into runs of servers and load and returns report rows.
//! - [`chat_client`]: the Rust client of chat protocol v1 (tokio +
//!   tokio-tungstenite), also used by the data plane's chat tests;
//!   [`control_api`]: the control plane's REST API.
//! - [`nats_client`]: NATS over WebSocket, the chat scenarios' peer.
//! - [`chat_servers`]: starting Veza's two processes or nats-server for a
//!   chat run, and populating Veza through REST.
//! - [`client_process`]: client load spread over child processes (one
//!   process may hold only 20,000 open files).
//! - [`report`]: the machine description, the human table and the JSON file.
//!
//! Architecture Invariant: the load generator never measures a server's CPU
//! and the server process module never generates load; a scenario joins them
//! over one measurement window ([`load_generator::client_threads::MeasurementWindow`]).
//!
//! Architecture Invariant: every load run is bounded in time. Sending stops
//! at the end of the window and waiting for replies stops at the drain
//! deadline, whatever the server does.
#![warn(missing_docs)]

pub mod chat_client;
pub mod chat_servers;
pub mod client_process;
pub mod control_api;
pub mod load_generator;
pub mod nats_client;
pub mod proc_stat;
pub mod process_fleet;
pub mod report;
pub mod scenario;
pub mod server_process;
