//! `connect-storm`: M connections opened as fast as the clients can, from
//! several client processes started together ([`super::connection_fleet`]),
//! each `concurrency` connections at a time: TCP connect, WebSocket upgrade
//! (subprotocol `veza.v1`), `Auth` with an access token and `AuthOk`
//! (nats-server: upgrade, then `CONNECT` and a `PING`/`PONG`).
//!
//! Reported: connections per second (opened ÷ the time from `go` to the
//! last process done), the latency percentiles of the handshake (connect +
//! upgrade), of the authentication, and of both, and the server's CPU time
//! per connection over the storm (token verification is ~50 µs of it on
//! Veza, see BENCHMARKS.md). The client processes are pinned to the CPUs the
//! server leaves, when it leaves any.

pub mod cli;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::chat_servers::{self, ChatServerKind, ChatServersError, RunningChatServer};
use crate::client_process::{ClientEvent, ClientFleet, FleetError, OpenReport};
use crate::load_generator::client_threads::{allowed_cpus, join_cpus};
use crate::load_generator::latency::{LatencyRecorder, LatencySummary};
use crate::report::MachineDescription;

use super::connection_fleet::{FleetBinaries, FleetShape, JobMode};

/// How long the storm may take.
const STORM_TIMEOUT: Duration = Duration::from_secs(300);

/// How long client processes may take to start.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything a `connect-storm` invocation asks for.
#[derive(Debug, Clone)]
pub struct ConnectStormOptions {
    /// Servers to run, in order.
    pub servers: Vec<ChatServerKind>,
    /// The binaries.
    pub binaries: FleetBinaries,
    /// Shard counts.
    pub shard_counts: Vec<usize>,
    /// The connections.
    pub shape: FleetShape,
}

/// Why `connect-storm` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ConnectStormError {
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The servers could not be started or measured.
    #[error(transparent)]
    Servers(#[from] ChatServersError),
    /// The client processes failed; the servers' log tails follow.
    #[error("{source}\n{server_logs}")]
    Clients {
        /// What failed.
        source: FleetError,
        /// The end of the servers' logs.
        server_logs: String,
    },
    /// The CPU mask or a runtime could not be had.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One storm against one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StormRunReport {
    /// `veza` or `nats`.
    pub server: String,
    /// Shards (nats-server: `GOMAXPROCS`).
    pub shards: usize,
    /// The server's CPUs.
    pub server_cpus: String,
    /// The client processes' CPUs (empty: unpinned).
    pub client_cpus: String,
    /// Client processes.
    pub client_processes: usize,
    /// Connections each process opens at once.
    pub concurrency_per_process: usize,
    /// Connections asked for.
    pub connections_requested: usize,
    /// Connections open and authenticated.
    pub connections_opened: usize,
    /// Connections that failed.
    pub connections_failed: usize,
    /// The first failure, as text.
    pub first_error: Option<String>,
    /// From `go` to the last process done, seconds.
    pub storm_secs: f64,
    /// `connections_opened / storm_secs`.
    pub connections_per_s: f64,
    /// TCP connect + WebSocket upgrade.
    pub handshake_latency: LatencySummary,
    /// `Auth` → `AuthOk` (NATS: `CONNECT` → `PONG`).
    pub auth_latency: LatencySummary,
    /// Both together.
    pub total_latency: LatencySummary,
    /// Server CPU seconds over the storm.
    pub server_cpu_secs: f64,
    /// Server CPU per opened connection, µs.
    pub server_cpu_us_per_connection: Option<f64>,
    /// Veza's control plane CPU seconds over the storm.
    pub control_plane_cpu_secs: Option<f64>,
    /// Server RSS after the storm, KiB.
    pub server_rss_kib: u64,
    /// Connections the server closed before the clients did.
    pub closed_by_server: usize,
}

/// A whole `connect-storm` invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StormReport {
    /// `connect-storm`.
    pub scenario: String,
    /// The command line.
    pub command_line: Vec<String>,
    /// The machine.
    pub machine: MachineDescription,
    /// One row per run.
    pub runs: Vec<StormRunReport>,
}

impl StormReport {
    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }
}

/// Runs every (shard count, server); one row each.
pub fn run(
    options: &ConnectStormOptions,
    mut progress: impl FnMut(&StormRunReport),
) -> Result<Vec<StormRunReport>, ConnectStormError> {
    let cpus = allowed_cpus()?;
    options
        .shape
        .validate()
        .map_err(ConnectStormError::InvalidOptions)?;
    if let Some(shards) = options
        .shard_counts
        .iter()
        .find(|&&n| n == 0 || n > cpus.len())
    {
        return Err(ConnectStormError::InvalidOptions(format!(
            "{shards} shards: must be 1..={}",
            cpus.len()
        )));
    }
    let mut reports = Vec::new();
    for &shards in &options.shard_counts {
        for &server in &options.servers {
            let report = run_once(options, server, shards, &cpus)?;
            progress(&report);
            reports.push(report);
        }
    }
    Ok(reports)
}

fn run_once(
    options: &ConnectStormOptions,
    server: ChatServerKind,
    shards: usize,
    allowed: &[usize],
) -> Result<StormRunReport, ConnectStormError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (server_cpus, client_cpus) = chat_servers::server_cpus(shards, allowed);
    let setup = options.shape.server_setup(
        server,
        &options.binaries,
        server_cpus.clone(),
        client_cpus.clone(),
    );
    let (running, world) = RunningChatServer::start(&setup, &runtime)?;
    let mode = JobMode {
        wait_for_go: true,
        record_latencies: true,
        cpus: client_cpus.clone(),
    };
    let jobs = options.shape.jobs(server, &world, mode);
    let with_logs = |source: FleetError| ConnectStormError::Clients {
        source,
        server_logs: running.log_tails(),
    };
    let mut fleet = ClientFleet::spawn(&jobs).map_err(with_logs)?;
    fleet
        .next_events(PREPARE_TIMEOUT, "prepared")
        .map_err(with_logs)?;
    let before = running.sample().map_err(ChatServersError::from)?;
    let started = Instant::now();
    fleet.tell_all("go").map_err(with_logs)?;
    let events = fleet
        .next_events(STORM_TIMEOUT, "opened")
        .map_err(with_logs)?;
    let storm_secs = started.elapsed().as_secs_f64();
    let after = running.sample().map_err(ChatServersError::from)?;
    let closes = fleet.close().map_err(with_logs)?;
    running.stop()?;
    let opened: Vec<OpenReport> = events
        .into_iter()
        .map(|event| match event {
            ClientEvent::Opened(report) => report,
            _ => OpenReport::default(),
        })
        .collect();
    let connections_opened: usize = opened.iter().map(|report| report.opened).sum();
    let latencies = Latencies::merge(&opened);
    let server_cpu_secs = after.fanout.cpu_secs - before.fanout.cpu_secs;
    Ok(StormRunReport {
        server: server.name().into(),
        shards,
        server_cpus: join_cpus(&server_cpus),
        client_cpus: join_cpus(&client_cpus),
        client_processes: opened.len(),
        concurrency_per_process: options.shape.concurrency,
        connections_requested: options.shape.n_connections,
        connections_opened,
        connections_failed: opened.iter().map(|report| report.failed).sum(),
        first_error: opened.iter().find_map(|report| report.first_error.clone()),
        storm_secs,
        connections_per_s: connections_opened as f64 / storm_secs,
        handshake_latency: latencies.handshake.summary(),
        auth_latency: latencies.auth.summary(),
        total_latency: latencies.total.summary(),
        server_cpu_secs,
        server_cpu_us_per_connection: (connections_opened > 0)
            .then(|| server_cpu_secs * 1e6 / connections_opened as f64),
        control_plane_cpu_secs: after
            .control_plane
            .zip(before.control_plane)
            .map(|(after, before)| after.cpu_secs - before.cpu_secs),
        server_rss_kib: after.fanout.rss_kib,
        closed_by_server: closes.iter().map(|close| close.closed_by_server).sum(),
    })
}

/// The per-connection times of every process, as histograms.
struct Latencies {
    handshake: LatencyRecorder,
    auth: LatencyRecorder,
    total: LatencyRecorder,
}

impl Latencies {
    fn merge(reports: &[OpenReport]) -> Latencies {
        let mut latencies = Latencies {
            handshake: LatencyRecorder::new(),
            auth: LatencyRecorder::new(),
            total: LatencyRecorder::new(),
        };
        for report in reports {
            for (&handshake_us, &auth_us) in report.handshake_us.iter().zip(&report.auth_us) {
                latencies.handshake.record_us(handshake_us);
                latencies.auth.record_us(auth_us);
                latencies.total.record_us(handshake_us + auth_us);
            }
        }
        latencies
    }
}

/// The human table.
pub fn render(runs: &[StormRunReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:>6} {:>5} {:>7} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "server",
        "shards",
        "procs",
        "opened",
        "failed",
        "storm_s",
        "conn/s",
        "hs_p50us",
        "hs_p99us",
        "auth_p50",
        "auth_p99",
        "all_p50",
        "all_p90",
        "all_p99",
        "all_p99.9",
        "all_max",
        "cpu_us/conn"
    );
    for run in runs {
        let _ = writeln!(
            out,
            "{:<6} {:>6} {:>5} {:>7} {:>6} {:>8.2} {:>9.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
            run.server,
            run.shards,
            run.client_processes,
            run.connections_opened,
            run.connections_failed,
            run.storm_secs,
            run.connections_per_s,
            run.handshake_latency.p50_us,
            run.handshake_latency.p99_us,
            run.auth_latency.p50_us,
            run.auth_latency.p99_us,
            run.total_latency.p50_us,
            run.total_latency.p90_us,
            run.total_latency.p99_us,
            run.total_latency.p999_us,
            run.total_latency.max_us,
            run.server_cpu_us_per_connection
                .map_or_else(|| "-".into(), |us| format!("{us:.0}")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_of_every_process_are_merged_per_connection() {
        let reports = [
            OpenReport {
                opened: 2,
                handshake_us: vec![100, 200],
                auth_us: vec![50, 60],
                ..OpenReport::default()
            },
            OpenReport {
                opened: 1,
                handshake_us: vec![300],
                auth_us: vec![70],
                ..OpenReport::default()
            },
        ];
        let latencies = Latencies::merge(&reports);
        assert_eq!(latencies.total.count(), 3);
        assert_eq!(latencies.handshake.summary().max_us, 300);
        assert!((369..=371).contains(&latencies.total.summary().max_us));
    }
}
