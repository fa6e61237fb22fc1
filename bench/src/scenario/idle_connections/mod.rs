//! `idle-connections`: how much memory the server spends per idle,
//! authenticated, subscribed connection. N connections (15,000 by default)
//! are opened from several client processes and source addresses
//! ([`super::connection_fleet`]), each `Auth`'d and subscribed to one room
//! (nats-server: `CONNECT`, `SUB`, `PING`/`PONG`), then held without
//! traffic.
//!
//! Per run (one server, one shard count): start and populate the server;
//! after a second, sample its RSS (`before`); open every connection and
//! sample (`after open`); hold them for the settle period, sample again
//! (`after settle`: the number reported), and take the CPU the server spent
//! holding idle connections; close them and sample once more after a second
//! (`after close`: memory the server gives back). Bytes per connection =
//! (after settle − before) ÷ connections opened.
//!
//! - [`report`]: the rows, table and JSON; `cli` the arguments.

pub mod cli;
pub mod report;

use std::time::{Duration, Instant};

use crate::chat_servers::{
    self, ChatServerKind, ChatServersError, RunningChatServer, ServerSamples,
};
use crate::client_process::{ClientEvent, ClientFleet, CloseReport, FleetError, OpenReport};
use crate::load_generator::client_threads::{allowed_cpus, join_cpus};

use super::connection_fleet::{FleetBinaries, FleetShape, JobMode};
use report::IdleRunReport;

/// How long all processes together may take to open their connections.
const OPEN_TIMEOUT: Duration = Duration::from_secs(300);

/// How long client processes may take to start.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the server is left alone before and after the connections.
const QUIET: Duration = Duration::from_secs(1);

/// Everything an `idle-connections` invocation asks for.
#[derive(Debug, Clone)]
pub struct IdleConnectionsOptions {
    /// Servers to run, in order.
    pub servers: Vec<ChatServerKind>,
    /// The binaries.
    pub binaries: FleetBinaries,
    /// Shard counts.
    pub shard_counts: Vec<usize>,
    /// The connections.
    pub shape: FleetShape,
    /// How long connections are held before the last sample.
    pub settle: Duration,
}

/// Why `idle-connections` could not run.
#[derive(Debug, thiserror::Error)]
pub enum IdleConnectionsError {
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

/// Runs every (shard count, server); one row each.
pub fn run(
    options: &IdleConnectionsOptions,
    mut progress: impl FnMut(&IdleRunReport),
) -> Result<Vec<IdleRunReport>, IdleConnectionsError> {
    let cpus = allowed_cpus()?;
    options
        .shape
        .validate()
        .map_err(IdleConnectionsError::InvalidOptions)?;
    if let Some(shards) = options
        .shard_counts
        .iter()
        .find(|&&n| n == 0 || n > cpus.len())
    {
        return Err(IdleConnectionsError::InvalidOptions(format!(
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

/// The samples of one run.
struct Samples {
    before: ServerSamples,
    after_open: ServerSamples,
    after_settle: ServerSamples,
    after_close: ServerSamples,
}

fn run_once(
    options: &IdleConnectionsOptions,
    server: ChatServerKind,
    shards: usize,
    allowed: &[usize],
) -> Result<IdleRunReport, IdleConnectionsError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (server_cpus, control_plane_cpus) = chat_servers::server_cpus(shards, allowed);
    let setup = options.shape.server_setup(
        server,
        &options.binaries,
        server_cpus.clone(),
        control_plane_cpus,
    );
    let (running, world) = RunningChatServer::start(&setup, &runtime)?;
    let mode = JobMode {
        wait_for_go: false,
        record_latencies: false,
        cpus: Vec::new(),
    };
    let jobs = options.shape.jobs(server, &world, mode);
    let with_logs = |source: FleetError| IdleConnectionsError::Clients {
        source,
        server_logs: running.log_tails(),
    };
    std::thread::sleep(QUIET);
    let before = running.sample().map_err(ChatServersError::from)?;
    let mut fleet = ClientFleet::spawn(&jobs).map_err(with_logs)?;
    fleet
        .next_events(PREPARE_TIMEOUT, "prepared")
        .map_err(with_logs)?;
    let opened = opened_reports(
        fleet
            .next_events(OPEN_TIMEOUT, "opened")
            .map_err(with_logs)?,
    );
    let after_open = running.sample().map_err(ChatServersError::from)?;
    let settle_started = Instant::now();
    std::thread::sleep(options.settle);
    let settle_secs = settle_started.elapsed().as_secs_f64();
    let after_settle = running.sample().map_err(ChatServersError::from)?;
    let closes = fleet.close().map_err(with_logs)?;
    std::thread::sleep(QUIET);
    let after_close = running.sample().map_err(ChatServersError::from)?;
    running.stop()?;
    let samples = Samples {
        before,
        after_open,
        after_settle,
        after_close,
    };
    Ok(report_row(
        options,
        server,
        &server_cpus,
        &opened,
        &closes,
        &samples,
        settle_secs,
    ))
}

fn opened_reports(events: Vec<ClientEvent>) -> Vec<OpenReport> {
    events
        .into_iter()
        .map(|event| match event {
            ClientEvent::Opened(report) => report,
            _ => OpenReport::default(),
        })
        .collect()
}

fn report_row(
    options: &IdleConnectionsOptions,
    server: ChatServerKind,
    server_cpus: &[usize],
    opened: &[OpenReport],
    closes: &[CloseReport],
    samples: &Samples,
    settle_secs: f64,
) -> IdleRunReport {
    let connections_opened: usize = opened.iter().map(|report| report.opened).sum();
    let mut close_codes = std::collections::BTreeMap::new();
    for close in closes {
        for (code, count) in &close.close_codes {
            *close_codes.entry(code.clone()).or_insert(0) += count;
        }
    }
    let rss = |sample: &ServerSamples| sample.fanout.rss_kib;
    let control_rss = |sample: &ServerSamples| sample.control_plane.map(|sample| sample.rss_kib);
    let grown_kib = rss(&samples.after_settle).saturating_sub(rss(&samples.before));
    let settle_cpu_secs = samples.after_settle.fanout.cpu_secs - samples.after_open.fanout.cpu_secs;
    IdleRunReport {
        server: server.name().into(),
        shards: server_cpus.len(),
        server_cpus: join_cpus(server_cpus),
        client_processes: opened.len(),
        subscribed: options.shape.subscribe,
        users: options.shape.n_users,
        rooms: options.shape.n_rooms,
        connections_requested: options.shape.n_connections,
        connections_opened,
        connections_failed: opened.iter().map(|report| report.failed).sum(),
        first_error: opened.iter().find_map(|report| report.first_error.clone()),
        open_secs: opened
            .iter()
            .map(|report| report.elapsed_ms / 1000.0)
            .fold(0.0, f64::max),
        server_rss_before_kib: rss(&samples.before),
        server_rss_after_open_kib: rss(&samples.after_open),
        server_rss_after_settle_kib: rss(&samples.after_settle),
        server_rss_after_close_kib: rss(&samples.after_close),
        rss_bytes_per_connection: (connections_opened > 0)
            .then(|| grown_kib as f64 * 1024.0 / connections_opened as f64),
        server_cpu_secs_opening: samples.after_open.fanout.cpu_secs
            - samples.before.fanout.cpu_secs,
        settle_secs,
        server_cpu_secs_settle: settle_cpu_secs,
        control_plane_rss_before_kib: control_rss(&samples.before),
        control_plane_rss_after_settle_kib: control_rss(&samples.after_settle),
        closed_by_server: closes.iter().map(|close| close.closed_by_server).sum(),
        close_codes,
        first_close: closes.iter().find_map(|close| close.first_close.clone()),
    }
}
