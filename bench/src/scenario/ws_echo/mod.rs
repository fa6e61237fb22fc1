//! `ws-echo`: N WebSocket connections send binary messages of a fixed size
//! to an echo endpoint and check every reply. The same load runs against
//! Veza (`GET /v1/echo` on `veza-dataplane`) and against the peer, an echo
//! server on tokio + tokio-tungstenite (`bench-echo-peer`), one fresh server
//! process per (shard count, payload size, server).
//!
//! Per run: start the server pinned to CPUs `0..shards`, connect every
//! client, load for the warm-up, sample the server's CPU seconds, load for
//! the measured duration, sample again, stop sending, drain replies, stop
//! the server. Messages count when their send time (closed loop) or
//! intended send time (open loop) falls in the measured window.
//!
//! - [`workload`]: one client thread's connections and counters.
//! - [`closed_loop`]: `pipeline` messages in flight per connection.
//! - [`open_loop`]: a fixed total rate, latency from the intended send time.

pub mod closed_loop;
pub mod open_loop;
pub mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::load_generator::client_threads::{
    allowed_cpus, join_cpus, prepare_load, ClientPlacement, MeasurementWindow,
};
use crate::load_generator::echo_payload::STAMP_BYTES;
use crate::load_generator::latency::LatencyRecorder;
use crate::load_generator::websocket_client::ConnectOptions;
use crate::proc_stat::{
    clock_ticks_per_second, machine_sample, process_sample, MachineSample, ProcError, ProcessSample,
};
use crate::report::{ModeReport, RunReport};
use crate::server_process::{free_loopback_port, Readiness, ServerLaunch, ServerProcess};

use workload::{ConnectionPlan, EchoErrorCounts, EchoThreadOutput, EchoThreadWorkload};

/// The largest payload a run may use: Veza's default frame limit.
pub const PAYLOAD_BYTES_MAX: usize = 1 << 20;

/// The most connections one run opens (the process may hold 20000 files).
pub const CONNECTIONS_MAX: usize = 16_384;

/// How long replies may trail the end of the window before they count as
/// unanswered.
const DRAIN: Duration = Duration::from_secs(3);

/// How long a server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a server may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// How long connect plus upgrade may take per connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The echo endpoint on both servers (the peer echoes on any path).
pub const ECHO_PATH: &str = "/v1/echo";

/// A server this scenario compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoServer {
    /// `veza-dataplane`.
    Veza,
    /// `bench-echo-peer` (tokio + tokio-tungstenite).
    Peer,
}

impl EchoServer {
    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            EchoServer::Veza => "veza",
            EchoServer::Peer => "peer",
        }
    }
}

/// How the clients pace their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Each connection keeps `pipeline` messages in flight, at saturation.
    Closed {
        /// Messages in flight per connection (at least 1).
        pipeline: usize,
    },
    /// A fixed total rate spread evenly over the connections.
    Open {
        /// Messages per second across all connections.
        rate_msgs_per_s: u64,
    },
}

/// Everything a `ws-echo` invocation asks for.
#[derive(Debug, Clone)]
pub struct WsEchoOptions {
    /// Which servers to run, in order.
    pub servers: Vec<EchoServer>,
    /// The `veza-dataplane` binary.
    pub veza_bin: PathBuf,
    /// The `bench-echo-peer` binary.
    pub peer_bin: PathBuf,
    /// Shard (worker thread) counts to run, each pinned to CPUs 0..n.
    pub shard_counts: Vec<usize>,
    /// Connections per run.
    pub n_connections: usize,
    /// Payload sizes to run.
    pub payload_sizes: Vec<usize>,
    /// Closed or open loop.
    pub mode: LoadMode,
    /// Load before measurement starts.
    pub warmup: Duration,
    /// The measured duration.
    pub duration: Duration,
    /// How many more times a noisy run may be repeated (the quietest
    /// attempt is reported).
    pub noisy_retries_max: usize,
}

/// Why `ws-echo` could not run.
#[derive(Debug, thiserror::Error)]
pub enum WsEchoError {
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A server could not be started or measured.
    #[error(transparent)]
    Server(#[from] crate::server_process::ServerError),
    /// The load could not run.
    #[error(transparent)]
    Load(#[from] crate::load_generator::client_threads::LoadError),
    /// Sampling this process or the machine failed.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// Reading the CPU mask or picking a port failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl WsEchoOptions {
    /// Checks every limit before any server starts.
    pub fn validate(&self, n_cpus_allowed: usize) -> Result<(), WsEchoError> {
        let invalid = |reason: String| Err(WsEchoError::InvalidOptions(reason));
        if self.servers.is_empty() || self.shard_counts.is_empty() || self.payload_sizes.is_empty()
        {
            return invalid("servers, shards and payload sizes must each name at least one".into());
        }
        if let Some(&shards) = self
            .shard_counts
            .iter()
            .find(|&&n| n == 0 || n > n_cpus_allowed)
        {
            return invalid(format!(
                "{shards} shards: must be 1..={n_cpus_allowed} (CPUs allowed)"
            ));
        }
        if let Some(&bytes) = self
            .payload_sizes
            .iter()
            .find(|&&bytes| !(STAMP_BYTES..=PAYLOAD_BYTES_MAX).contains(&bytes))
        {
            return invalid(format!(
                "payload of {bytes} B: must be {STAMP_BYTES}..={PAYLOAD_BYTES_MAX}"
            ));
        }
        if !(1..=CONNECTIONS_MAX).contains(&self.n_connections) {
            return invalid(format!("connections must be 1..={CONNECTIONS_MAX}"));
        }
        match self.mode {
            LoadMode::Closed { pipeline: 0 } => invalid("pipeline must be at least 1".into()),
            LoadMode::Open { rate_msgs_per_s: 0 } => {
                invalid("rate must be at least 1 msg/s".into())
            }
            _ if self.duration.is_zero() => invalid("duration must be positive".into()),
            _ => Ok(()),
        }
    }
}

/// Runs every (shard count, payload size, server) combination in order and
/// returns one report row each. `progress` is told about each finished run.
pub fn run(
    options: &WsEchoOptions,
    mut progress: impl FnMut(&RunReport),
) -> Result<Vec<RunReport>, WsEchoError> {
    let cpus = allowed_cpus()?;
    options.validate(cpus.len())?;
    let mut reports = Vec::new();
    for &shards in &options.shard_counts {
        let server_cpus = &cpus[..shards];
        let placement = ClientPlacement::beside_server(server_cpus, &cpus);
        for &payload_bytes in &options.payload_sizes {
            for &server in &options.servers {
                let report =
                    run_until_quiet(options, server, server_cpus, &placement, payload_bytes)?;
                progress(&report);
                reports.push(report);
            }
        }
    }
    Ok(reports)
}

fn server_launch(
    options: &WsEchoOptions,
    server: EchoServer,
    server_cpus: &[usize],
    port: u16,
) -> ServerLaunch {
    let shards = server_cpus.len().to_string();
    let log_name = format!(
        "veza-bench-{}-{}-{port}.log",
        std::process::id(),
        server.name()
    );
    let (program, args, environment, readiness) = match server {
        EchoServer::Veza => (
            options.veza_bin.clone(),
            vec![],
            vec![
                ("VEZA_SERVER_LISTEN_ADDRESS".into(), "127.0.0.1".into()),
                ("VEZA_SERVER_LISTEN_PORT".into(), port.to_string()),
                ("VEZA_SERVER_SHARDS".into(), shards),
                ("VEZA_SERVER_LOG_LEVEL".into(), "warn".into()),
            ],
            Readiness::HttpGet {
                path: "/ready".into(),
            },
        ),
        EchoServer::Peer => (
            options.peer_bin.clone(),
            vec![
                "--port".into(),
                port.to_string(),
                "--threads".into(),
                shards,
            ],
            vec![],
            Readiness::TcpConnect,
        ),
    };
    ServerLaunch {
        name: server.name().into(),
        program,
        args,
        environment,
        cpus: server_cpus.to_vec(),
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        readiness,
        ready_timeout: READY_TIMEOUT,
        log_path: std::env::temp_dir().join(log_name),
    }
}

fn thread_workloads(
    options: &WsEchoOptions,
    placement: &ClientPlacement,
    address: SocketAddr,
    payload_bytes: usize,
) -> Vec<EchoThreadWorkload> {
    let plan = ConnectionPlan {
        payload_bytes,
        mode: options.mode,
        n_connections_total: options.n_connections,
    };
    let connect_options = ConnectOptions {
        address,
        path: ECHO_PATH.into(),
        handshake_timeout: HANDSHAKE_TIMEOUT,
        payload_bytes_max: PAYLOAD_BYTES_MAX,
    };
    (0..placement.n_threads)
        .map(|thread_idx| EchoThreadWorkload {
            connect_options: connect_options.clone(),
            connection_idxs: (thread_idx..options.n_connections)
                .step_by(placement.n_threads)
                .collect(),
            plan: plan.clone(),
        })
        .collect()
}

/// Runs one configuration, again while other processes disturb it and
/// retries remain, and keeps the quietest attempt.
fn run_until_quiet(
    options: &WsEchoOptions,
    server: EchoServer,
    server_cpus: &[usize],
    placement: &ClientPlacement,
    payload_bytes: usize,
) -> Result<RunReport, WsEchoError> {
    let mut quietest = run_once(options, server, server_cpus, placement, payload_bytes)?;
    for attempt in 2..=options.noisy_retries_max + 1 {
        if !quietest.is_noisy() {
            break;
        }
        let again = run_once(options, server, server_cpus, placement, payload_bytes)?;
        if again.disturbed_cpu_secs() < quietest.disturbed_cpu_secs() {
            quietest = again;
        }
        quietest.attempts = attempt;
    }
    Ok(quietest)
}

fn run_once(
    options: &WsEchoOptions,
    server: EchoServer,
    server_cpus: &[usize],
    placement: &ClientPlacement,
    payload_bytes: usize,
) -> Result<RunReport, WsEchoError> {
    let port = free_loopback_port()?;
    let launch = server_launch(options, server, server_cpus, port);
    let process = ServerProcess::start(&launch)?;
    let workloads = thread_workloads(options, placement, launch.address, payload_bytes);
    let prepared = prepare_load(placement, workloads)?;
    let window = MeasurementWindow::starting_soon(options.warmup, options.duration, DRAIN);
    let running = prepared.start(window);
    sleep_until(window.measure_start);
    let before = CpuSamples::take(&process)?;
    sleep_until(window.measure_end);
    let after = CpuSamples::take(&process)?;
    let outputs = running.join()?;
    process.stop(STOP_DEADLINE)?;
    let _ = std::fs::remove_file(&launch.log_path);
    let (messages, errors, latency) = merge_outputs(outputs);
    let measured_secs = window.measured_secs();
    let cpu = after.since(&before);
    Ok(RunReport {
        server: server.name().into(),
        shards: server_cpus.len(),
        server_cpus: join_cpus(server_cpus),
        load_generator: placement.describe(),
        payload_bytes,
        connections: options.n_connections,
        mode: mode_report(options.mode),
        measured_secs,
        messages,
        errors: errors.total(),
        error_counts: errors.by_kind(),
        throughput_msgs_per_s: messages as f64 / measured_secs,
        latency: latency.summary(),
        server_cpu_secs: cpu.server_cpu_secs,
        msgs_per_server_cpu_sec: (cpu.server_cpu_secs > 0.0)
            .then(|| messages as f64 / cpu.server_cpu_secs),
        server_rss_kib: after.server.rss_kib,
        load_generator_cpu_secs: cpu.load_generator_cpu_secs,
        other_tasks_cpu_secs: cpu.other_tasks_cpu_secs,
        interrupt_cpu_secs: cpu.interrupt_cpu_secs,
        steal_cpu_secs: cpu.steal_cpu_secs,
        attempts: 1,
    })
}

/// CPU time of the server, this process and the machine at one instant.
struct CpuSamples {
    server: ProcessSample,
    load_generator: ProcessSample,
    machine: MachineSample,
}

/// CPU seconds used between two [`CpuSamples`].
struct CpuUsage {
    server_cpu_secs: f64,
    load_generator_cpu_secs: f64,
    other_tasks_cpu_secs: f64,
    interrupt_cpu_secs: f64,
    steal_cpu_secs: f64,
}

impl CpuSamples {
    fn take(server: &ServerProcess) -> Result<CpuSamples, WsEchoError> {
        Ok(CpuSamples {
            server: server.sample()?,
            load_generator: process_sample(std::process::id())?,
            machine: machine_sample()?,
        })
    }

    fn since(&self, before: &CpuSamples) -> CpuUsage {
        let server_cpu_secs = in_ticks(self.server.cpu_secs - before.server.cpu_secs);
        let load_generator_cpu_secs =
            in_ticks(self.load_generator.cpu_secs - before.load_generator.cpu_secs);
        let task_secs = in_ticks(self.machine.task_secs - before.machine.task_secs);
        // Ticks of processes and of the machine are rounded separately, so
        // the difference can dip a tick below zero.
        let other_tasks_cpu_secs =
            in_ticks((task_secs - server_cpu_secs - load_generator_cpu_secs).max(0.0));
        let interrupt_cpu_secs =
            in_ticks(self.machine.interrupt_secs - before.machine.interrupt_secs);
        let steal_cpu_secs = in_ticks(self.machine.steal_secs - before.machine.steal_secs);
        CpuUsage {
            server_cpu_secs,
            load_generator_cpu_secs,
            other_tasks_cpu_secs,
            interrupt_cpu_secs,
            steal_cpu_secs,
        }
    }
}

/// Rounds a difference of tick counts to whole ticks, dropping the float
/// noise of the subtraction.
fn in_ticks(secs: f64) -> f64 {
    let ticks_per_second = clock_ticks_per_second();
    (secs * ticks_per_second).round() / ticks_per_second
}

fn mode_report(mode: LoadMode) -> ModeReport {
    match mode {
        LoadMode::Closed { pipeline } => ModeReport {
            mode: "closed".into(),
            pipeline: Some(pipeline),
            rate_msgs_per_s: None,
        },
        LoadMode::Open { rate_msgs_per_s } => ModeReport {
            mode: "open".into(),
            pipeline: None,
            rate_msgs_per_s: Some(rate_msgs_per_s),
        },
    }
}

fn merge_outputs(outputs: Vec<EchoThreadOutput>) -> (u64, EchoErrorCounts, LatencyRecorder) {
    let mut messages = 0;
    let mut errors = EchoErrorCounts::default();
    let mut latency = LatencyRecorder::new();
    for output in outputs {
        messages += output.messages_measured;
        errors.add(&output.errors);
        latency.merge(&output.latency);
    }
    (messages, errors, latency)
}

fn sleep_until(instant: std::time::Instant) {
    std::thread::sleep(instant.saturating_duration_since(std::time::Instant::now()));
}
