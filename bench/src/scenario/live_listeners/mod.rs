//! `live-listeners`: one 64 kb/s Ogg Opus live stream, fed by ffmpeg, and N
//! listeners ramped in at R per second from several client processes;
//! Veza's data plane against icecast2 (issue #5's benchmark, issue #7's kit).
//!
//! Per run (one server): start the server (Veza: both processes and the
//! stream through REST; icecast2: a generated configuration), start the
//! source ([`source`]), wait until a listener gets `200`, start the
//! listener processes ([`listener_process`], [`listener_fleet`]), sample
//! the server over a quiet second (its CPU with the source alone), then
//! `go`: listener `i` connects at `start + i/R` (open loop, a timetable
//! fixed in advance) and all listen until `S` seconds after the last one's
//! start. The server's RSS is sampled every 250 ms (peak) and its CPU and
//! RSS just before the end (listeners still connected). Then the children
//! report, the source is stopped and the server too, all by PID; every
//! process is also stopped when its guard is dropped, so an error on any
//! path leaves nothing running.
//!
//! - [`ogg_listen`]: Ogg pages and the playout model (sans-IO).
//! - [`report`]: rows, targets, tables, JSON; `cli` the arguments.
//! - [`icecast`], [`veza_live`]: the two servers.

pub mod cli;
pub mod icecast;
pub mod listener_fleet;
pub mod listener_process;
pub mod ogg_listen;
pub mod report;
pub mod source;
pub mod veza_live;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::chat_servers::veza::{VezaLaunch, VezaServers};
use crate::chat_servers::{self, ChatServersError, ServerSamples};
use crate::load_generator::client_threads::{allowed_cpus, join_cpus};
use crate::load_generator::latency::{LatencyRecorder, LatencySummary};
use crate::server_process::{ServerError, ServerProcess};

use icecast::IcecastServer;
use listener_fleet::ListenerFleet;
use listener_process::{ListenerJob, ListenerProcessReport, LISTENERS_PER_PROCESS_MAX};
use report::LiveRunReport;
use source::SourceProcess;

/// How long the stream may take to answer `200` once the source started.
const STREAM_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long listener processes may take to start.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(20);

/// The quiet period that measures the server with the source alone.
const QUIET: Duration = Duration::from_secs(1);

/// Between `go` and the first listener: every child has read the line.
const GO_LEAD: Duration = Duration::from_millis(300);

/// The end sample is taken this long before the listeners stop, so that
/// no listener has closed yet.
const END_SAMPLE_LEAD: Duration = Duration::from_millis(200);

/// How often the server's RSS is sampled for its peak.
const PEAK_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// How long children may take to report after the end.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one readiness probe of the stream may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A server `live-listeners` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveServerKind {
    /// Veza's data plane (and control plane).
    Veza,
    /// icecast2.
    Icecast,
}

impl LiveServerKind {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            LiveServerKind::Veza => crate::report::VEZA_SERVER,
            LiveServerKind::Icecast => "icecast2",
        }
    }
}

/// The programs a run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveBinaries {
    /// `veza-dataplane`.
    pub dataplane: PathBuf,
    /// `veza-controlplane`.
    pub controlplane: PathBuf,
    /// `icecast2`.
    pub icecast: PathBuf,
    /// `ffmpeg`.
    pub ffmpeg: PathBuf,
}

/// Everything a `live-listeners` invocation asks for.
#[derive(Debug, Clone)]
pub struct LiveListenersOptions {
    /// Servers, in run order.
    pub servers: Vec<LiveServerKind>,
    /// The programs.
    pub binaries: LiveBinaries,
    /// Data-plane shards; icecast2 is pinned to as many CPUs.
    pub shards: usize,
    /// Listeners.
    pub n_listeners: usize,
    /// New listeners per second.
    pub ramp_per_second: f64,
    /// Listening after the last listener's start.
    pub hold: Duration,
    /// The source's bitrate.
    pub bitrate_kbps: u32,
    /// Listener processes.
    pub n_processes: usize,
    /// Audio a player buffers before playing, ms.
    pub playout_start_ms: u64,
}

impl LiveListenersOptions {
    /// Checks the limits; the error names the option.
    pub fn validate(&self, n_cpus: usize) -> Result<(), String> {
        if self.n_listeners == 0 || self.n_processes == 0 {
            return Err("--listeners and --processes must be at least 1".into());
        }
        if self.n_listeners.div_ceil(self.n_processes) > LISTENERS_PER_PROCESS_MAX {
            return Err(format!(
                "at most {LISTENERS_PER_PROCESS_MAX} listeners per process (a process may hold \
                 20000 files): raise --processes"
            ));
        }
        if !(self.ramp_per_second.is_finite() && self.ramp_per_second > 0.0) {
            return Err("--ramp-per-second must be a positive number".into());
        }
        if self.shards == 0 || self.shards > n_cpus {
            return Err(format!("--shards must be 1..={n_cpus}"));
        }
        if !(6..=510).contains(&self.bitrate_kbps) {
            return Err("--bitrate-kbps must be 6..=510 (Opus)".into());
        }
        Ok(())
    }
}

/// Why `live-listeners` could not run.
#[derive(Debug, thiserror::Error)]
pub enum LiveListenersError {
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// Veza could not be started or set up.
    #[error(transparent)]
    Veza(#[from] ChatServersError),
    /// A server could not be started, sampled or stopped.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The source, the stream or the listener processes failed; the
    /// servers' log tails follow.
    #[error("{server}: {reason}\n{server_logs}")]
    Run {
        /// Which server ran.
        server: &'static str,
        /// What failed.
        reason: String,
        /// The end of the server's logs.
        server_logs: String,
    },
    /// A temporary directory, the CPU mask or a runtime could not be had.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs each server in turn; one row each.
pub fn run(
    options: &LiveListenersOptions,
    mut progress: impl FnMut(&LiveRunReport),
) -> Result<Vec<LiveRunReport>, LiveListenersError> {
    let cpus = allowed_cpus()?;
    options
        .validate(cpus.len())
        .map_err(LiveListenersError::InvalidOptions)?;
    let mut reports = Vec::new();
    for &server in &options.servers {
        let report = run_once(options, server, &cpus)?;
        progress(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// A started server.
enum RunningLiveServer {
    Veza(Box<VezaServers>),
    Icecast(IcecastServer),
}

impl RunningLiveServer {
    fn process(&self) -> &ServerProcess {
        match self {
            RunningLiveServer::Veza(servers) => servers.dataplane(),
            RunningLiveServer::Icecast(server) => server.process(),
        }
    }

    fn control_plane(&self) -> Option<&ServerProcess> {
        match self {
            RunningLiveServer::Veza(servers) => Some(servers.controlplane()),
            RunningLiveServer::Icecast(_) => None,
        }
    }

    fn sample(&self) -> Result<ServerSamples, ServerError> {
        chat_servers::sample(self.process(), self.control_plane())
    }

    fn log_tails(&self) -> String {
        match self {
            RunningLiveServer::Veza(servers) => servers.log_tails(),
            RunningLiveServer::Icecast(server) => server.log_tail(),
        }
    }

    fn stop(self) -> Result<(), LiveListenersError> {
        match self {
            RunningLiveServer::Veza(servers) => (*servers).stop()?,
            RunningLiveServer::Icecast(server) => server.stop()?,
        }
        Ok(())
    }
}

/// Where the source sends and listeners read, for one started server.
struct Endpoints {
    address: SocketAddr,
    source_destination: String,
    listener_path: String,
    server_settings: BTreeMap<String, String>,
}

fn run_once(
    options: &LiveListenersOptions,
    kind: LiveServerKind,
    allowed: &[usize],
) -> Result<LiveRunReport, LiveListenersError> {
    let (server_cpus, client_cpus) = chat_servers::server_cpus(options.shards, allowed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (running, endpoints) = match kind {
        LiveServerKind::Icecast => {
            let server =
                IcecastServer::start(&options.binaries.icecast, &server_cpus, options.n_listeners)?;
            let address = server.address();
            let endpoints = Endpoints {
                address,
                source_destination: source::icecast_destination(
                    server.source_password(),
                    address,
                    icecast::MOUNT,
                ),
                listener_path: icecast::MOUNT.into(),
                server_settings: BTreeMap::from([
                    (
                        "queue_size_bytes".into(),
                        icecast::QUEUE_SIZE_BYTES.to_string(),
                    ),
                    (
                        "burst_size_bytes".into(),
                        icecast::BURST_SIZE_BYTES.to_string(),
                    ),
                    ("burst_on_connect".into(), "1".into()),
                ]),
            };
            (RunningLiveServer::Icecast(server), endpoints)
        }
        LiveServerKind::Veza => {
            let launch = VezaLaunch {
                dataplane_bin: options.binaries.dataplane.clone(),
                controlplane_bin: options.binaries.controlplane.clone(),
                shard_cpus: server_cpus.clone(),
                controlplane_cpus: client_cpus.clone(),
                dataplane_environment: Vec::new(),
            };
            let (servers, stream_key) = veza_live::start(&launch, &runtime)?;
            let address = servers.dataplane_address().expect("the data plane started");
            let endpoints = Endpoints {
                address,
                source_destination: source::icecast_destination(
                    &stream_key,
                    address,
                    &veza_live::source_mount(),
                ),
                listener_path: veza_live::listener_path(options.bitrate_kbps),
                server_settings: BTreeMap::from([(
                    "configuration".into(),
                    "defaults (deploy/veza-dataplane.toml)".into(),
                )]),
            };
            (RunningLiveServer::Veza(Box::new(servers)), endpoints)
        }
    };
    let measured = measure(
        options,
        kind,
        &running,
        &endpoints,
        &server_cpus,
        &client_cpus,
    );
    let report = match measured {
        Ok(report) => report,
        Err(reason) => {
            return Err(LiveListenersError::Run {
                server: kind.name(),
                reason,
                server_logs: running.log_tails(),
            })
        }
    };
    running.stop()?;
    Ok(report)
}

/// The samples of one run.
struct Samples {
    idle_start: ServerSamples,
    before: ServerSamples,
    before_at: Instant,
    end: ServerSamples,
    end_at: Instant,
    rss_peak_kib: u64,
}

/// Source, listeners, samples; the source and the listener processes stop
/// on every path (their guards).
fn measure(
    options: &LiveListenersOptions,
    kind: LiveServerKind,
    running: &RunningLiveServer,
    endpoints: &Endpoints,
    server_cpus: &[usize],
    client_cpus: &[usize],
) -> Result<LiveRunReport, String> {
    let work_dir = tempfile::Builder::new()
        .prefix("veza-bench-live-")
        .tempdir()
        .map_err(|error| format!("create a work directory: {error}"))?;
    let mut source = SourceProcess::start(
        &options.binaries.ffmpeg,
        options.bitrate_kbps,
        &endpoints.source_destination,
        client_cpus,
        &work_dir.path().join("ffmpeg.log"),
    )
    .map_err(|error| format!("start {}: {error}", options.binaries.ffmpeg.display()))?;
    wait_for_stream(endpoints.address, &endpoints.listener_path, &mut source)?;
    let jobs = jobs(options, endpoints);
    let mut fleet = ListenerFleet::spawn(
        listener_process::SUBCOMMAND,
        "listener process",
        &jobs,
        client_cpus,
    )?;
    fleet.next_events(PREPARE_TIMEOUT, "prepared")?;
    let sample = || running.sample().map_err(|error| error.to_string());
    let idle_start = sample()?;
    std::thread::sleep(QUIET);
    let (before, before_at) = (sample()?, Instant::now());
    let start_unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|error| error.to_string())?
        .as_micros()
        + GO_LEAD.as_micros();
    let start = Instant::now() + GO_LEAD;
    fleet.tell_all(&format!("go {start_unix_us}"))?;
    let end = start + jobs[0].end_offset();
    let end_sample_at = end.checked_sub(END_SAMPLE_LEAD).unwrap_or(end).max(start);
    let mut rss_peak_kib = before.fanout.rss_kib;
    // Bounded by `end_sample_at`.
    while Instant::now() < end_sample_at {
        std::thread::sleep(
            PEAK_SAMPLE_INTERVAL.min(end_sample_at.saturating_duration_since(Instant::now())),
        );
        rss_peak_kib = rss_peak_kib.max(sample()?.fanout.rss_kib);
        source.check_running()?;
    }
    let (at_end, end_at) = (sample()?, Instant::now());
    rss_peak_kib = rss_peak_kib.max(at_end.fanout.rss_kib);
    source.check_running()?;
    let children = fleet.finish(end.saturating_duration_since(Instant::now()) + FINISH_TIMEOUT)?;
    source.stop();
    let samples = Samples {
        idle_start,
        before,
        before_at,
        end: at_end,
        end_at,
        rss_peak_kib,
    };
    let context = RunContext {
        options,
        kind,
        endpoints,
        server_cpus,
        client_cpus,
        n_processes: jobs.len(),
    };
    Ok(report_row(&context, &children, &samples))
}

fn jobs(options: &LiveListenersOptions, endpoints: &Endpoints) -> Vec<ListenerJob> {
    let n_processes = options.n_processes.min(options.n_listeners);
    (0..n_processes)
        .map(|process_idx| ListenerJob {
            address: endpoints.address,
            path: endpoints.listener_path.clone(),
            process_idx,
            n_processes,
            n_listeners_total: options.n_listeners,
            ramp_per_second: options.ramp_per_second,
            hold_secs: options.hold.as_secs_f64(),
            playout_start_ms: options.playout_start_ms,
        })
        .collect()
}

/// Polls `GET path` until it answers `200` (the source is live), checking
/// that the source still runs.
fn wait_for_stream(
    address: SocketAddr,
    path: &str,
    source: &mut SourceProcess,
) -> Result<(), String> {
    let deadline = Instant::now() + STREAM_READY_TIMEOUT;
    let mut last = String::from("no answer");
    // Bounded by the deadline.
    while Instant::now() < deadline {
        source.check_running()?;
        match probe_status(address, path) {
            Ok(200) => return Ok(()),
            Ok(status) => last = format!("HTTP {status}"),
            Err(error) => last = error.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "GET {path} did not answer 200 within {STREAM_READY_TIMEOUT:?} of the source starting \
         (last: {last}); is the live route there and did the source's PUT succeed?"
    ))
}

fn probe_status(address: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut status_line = [0u8; 12];
    stream.read_exact(&mut status_line)?;
    std::str::from_utf8(&status_line[9..12])
        .ok()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))
}

/// What a report row needs besides the measurements.
struct RunContext<'a> {
    options: &'a LiveListenersOptions,
    kind: LiveServerKind,
    endpoints: &'a Endpoints,
    server_cpus: &'a [usize],
    client_cpus: &'a [usize],
    n_processes: usize,
}

fn summary(values: impl Iterator<Item = u64>) -> LatencySummary {
    let mut recorder = LatencyRecorder::new();
    values.for_each(|value| recorder.record_us(value.max(1)));
    recorder.summary()
}

fn merge_counts(maps: impl Iterator<Item = BTreeMap<String, usize>>) -> BTreeMap<String, usize> {
    let mut merged = BTreeMap::new();
    for map in maps {
        for (kind, count) in map {
            *merged.entry(kind).or_insert(0) += count;
        }
    }
    merged
}

fn report_row(
    context: &RunContext<'_>,
    children: &[ListenerProcessReport],
    samples: &Samples,
) -> LiveRunReport {
    let options = context.options;
    let connected: usize = children.iter().map(|child| child.connected).sum();
    let listener_secs: f64 = children.iter().map(|child| child.listener_secs).sum();
    let window_secs = samples
        .end_at
        .duration_since(samples.before_at)
        .as_secs_f64();
    let server_cpu_secs = samples.end.fanout.cpu_secs - samples.before.fanout.cpu_secs;
    let idle_rate =
        (samples.before.fanout.cpu_secs - samples.idle_start.fanout.cpu_secs) / QUIET.as_secs_f64();
    let per_listener_sec = |cpu_secs: f64| (listener_secs > 0.0).then(|| cpu_secs / listener_secs);
    let grown_kib = samples
        .end
        .fanout
        .rss_kib
        .saturating_sub(samples.before.fanout.rss_kib);
    let eviction_counts = merge_counts(children.iter().map(|child| child.evictions.clone()));
    let error_counts = merge_counts(children.iter().map(|child| child.errors.clone()));
    let mut row = LiveRunReport {
        server: context.kind.name().into(),
        shards: context.server_cpus.len(),
        server_cpus: join_cpus(context.server_cpus),
        client_cpus: join_cpus(context.client_cpus),
        client_processes: context.n_processes,
        source_command: source::command_line_for_report(
            options.bitrate_kbps,
            &context.endpoints.source_destination,
        ),
        bitrate_kbps: options.bitrate_kbps,
        listener_path: context.endpoints.listener_path.clone(),
        server_settings: context.endpoints.server_settings.clone(),
        listeners_requested: options.n_listeners,
        ramp_per_second: options.ramp_per_second,
        hold_secs: options.hold.as_secs_f64(),
        playout_start_ms: options.playout_start_ms,
        listeners_connected: connected,
        ttfb: summary(
            children
                .iter()
                .flat_map(|child| child.ttfb_us.iter().copied()),
        ),
        time_to_first_audio: summary(
            children
                .iter()
                .flat_map(|child| child.first_audio_us.iter().copied()),
        ),
        schedule_lag: summary(
            children
                .iter()
                .flat_map(|child| child.schedule_lag_us.iter().copied()),
        ),
        stalls: children.iter().map(|child| child.stalls).sum(),
        listeners_with_stall: children
            .iter()
            .map(|child| child.listeners_with_stall)
            .sum(),
        stalled_ms: children.iter().map(|child| child.stalled_ms).sum(),
        never_played: children.iter().map(|child| child.never_played).sum(),
        discontinuities: children.iter().map(|child| child.discontinuities).sum(),
        evictions: eviction_counts.values().sum(),
        eviction_counts,
        errors: error_counts.values().sum(),
        error_counts,
        first_failure: children
            .iter()
            .find_map(|child| child.first_failure.clone()),
        bytes_received: children.iter().map(|child| child.bytes_received).sum(),
        pages_received: children.iter().map(|child| child.pages).sum(),
        listener_secs,
        window_secs,
        server_cpu_secs,
        server_cpu_secs_per_sec_idle: idle_rate,
        cpu_secs_per_listener_sec: per_listener_sec(server_cpu_secs),
        cpu_secs_per_listener_sec_net: per_listener_sec(server_cpu_secs - idle_rate * window_secs),
        server_rss_before_kib: samples.before.fanout.rss_kib,
        server_rss_end_kib: samples.end.fanout.rss_kib,
        server_rss_peak_kib: samples.rss_peak_kib,
        rss_bytes_per_listener: (connected > 0)
            .then(|| grown_kib as f64 * 1024.0 / connected as f64),
        control_plane_cpu_secs: samples
            .end
            .control_plane
            .zip(samples.before.control_plane)
            .map(|(end, before)| end.cpu_secs - before.cpu_secs),
        control_plane_rss_end_kib: samples.end.control_plane.map(|sample| sample.rss_kib),
        load_generator_cpu_secs: children.iter().map(|child| child.cpu_secs).sum(),
        targets: Vec::new(),
    };
    row.targets = report::run_targets(&row);
    row
}
