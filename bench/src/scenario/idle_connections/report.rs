//! What `idle-connections` reports: one row per server run, the table, the
//! JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::report::MachineDescription;

/// One server holding one fleet of idle connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleRunReport {
    /// `veza` or `nats`.
    pub server: String,
    /// Shards (nats-server: `GOMAXPROCS`).
    pub shards: usize,
    /// The CPUs the server was pinned to.
    pub server_cpus: String,
    /// Client processes.
    pub client_processes: usize,
    /// Whether each connection subscribed to a room.
    pub subscribed: bool,
    /// Distinct users (Veza).
    pub users: usize,
    /// Rooms.
    pub rooms: usize,
    /// Connections asked for.
    pub connections_requested: usize,
    /// Connections open, authenticated and subscribed.
    pub connections_opened: usize,
    /// Connections that failed to open.
    pub connections_failed: usize,
    /// The first failure, as text.
    pub first_error: Option<String>,
    /// The slowest process's time to open its share, seconds.
    pub open_secs: f64,
    /// Server RSS before any client connection, KiB.
    pub server_rss_before_kib: u64,
    /// Right after every connection opened.
    pub server_rss_after_open_kib: u64,
    /// After the settle period: the number per connection uses this one.
    pub server_rss_after_settle_kib: u64,
    /// A second after every connection closed.
    pub server_rss_after_close_kib: u64,
    /// (after settle − before) ÷ connections opened, bytes.
    pub rss_bytes_per_connection: Option<f64>,
    /// Server CPU seconds spent opening (handshakes, tokens, subscribes).
    pub server_cpu_secs_opening: f64,
    /// The settle period, seconds.
    pub settle_secs: f64,
    /// Server CPU seconds spent holding idle connections over it.
    pub server_cpu_secs_settle: f64,
    /// Veza's control plane RSS before, KiB.
    pub control_plane_rss_before_kib: Option<u64>,
    /// Veza's control plane RSS after the settle period, KiB.
    pub control_plane_rss_after_settle_kib: Option<u64>,
    /// Connections the server closed while they were held.
    pub closed_by_server: usize,
    /// Those by close code.
    pub close_codes: BTreeMap<String, usize>,
    /// The first such close, as text.
    pub first_close: Option<String>,
}

/// A whole `idle-connections` invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleReport {
    /// `idle-connections`.
    pub scenario: String,
    /// The command line.
    pub command_line: Vec<String>,
    /// The machine.
    pub machine: MachineDescription,
    /// One row per run.
    pub runs: Vec<IdleRunReport>,
}

impl IdleReport {
    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }
}

/// The human table.
pub fn render(runs: &[IdleRunReport]) -> String {
    let mut out = String::new();
    let _ =
        writeln!(
        out,
        "{:<6} {:>6} {:>5} {:>7} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>9} {:>7}",
        "server", "shards", "procs", "opened", "failed", "open_s", "rss0_MiB", "open_MiB",
        "settle_MiB", "close_MiB", "B/conn", "open_cpu", "idle_cpu%", "closed"
    );
    for run in runs {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let _ = writeln!(
            out,
            "{:<6} {:>6} {:>5} {:>7} {:>6} {:>6.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10} {:>8.2} {:>9.2} {:>7}",
            run.server,
            run.shards,
            run.client_processes,
            run.connections_opened,
            run.connections_failed,
            run.open_secs,
            mib(run.server_rss_before_kib),
            mib(run.server_rss_after_open_kib),
            mib(run.server_rss_after_settle_kib),
            mib(run.server_rss_after_close_kib),
            run.rss_bytes_per_connection
                .map_or_else(|| "-".into(), |bytes| format!("{bytes:.0}")),
            run.server_cpu_secs_opening,
            100.0 * run.server_cpu_secs_settle / run.settle_secs.max(f64::MIN_POSITIVE),
            run.closed_by_server,
        );
    }
    out
}
