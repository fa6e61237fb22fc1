//! `track-ranges`: HTTP range requests over many keep-alive connections
//! against stored track renditions; Veza's data plane against nginx
//! (issue #6's benchmark, issue #7's kit).
//!
//! Veza runs first when both run ([`veza_tracks`]): its control plane
//! transcodes `N` uploaded WAVs (timed: the processing throughput), then the
//! data plane serves `{data_dir}/media`. nginx ([`nginx`]) then serves the
//! same directory, so both answer for the same files; alone, nginx serves
//! synthetic files of the same sizes ([`media`]). Each server is pinned to
//! the same CPUs (`--shards` of them) and is a fresh process per run.
//!
//! Per run: start the client processes ([`range_fleet`], [`range_process`]),
//! which open their keep-alive connections from 127.0.0.x and report
//! `prepared`; then `go`: warm-up, the measured window (the server's CPU
//! and RSS sampled at its two ends), the drain. Every request is a uniform
//! rendition and a uniform `--range-bytes`-aligned range in it
//! ([`range_request`]), from a seeded generator, so both servers get the
//! same requests; every answer is checked (206, `Content-Range`, body
//! length). Every child process is stopped by PID on every path (its
//! guard), and temporary directories go with their owners.
//!
//! - [`report`]: rows, ratios, targets, tables, JSON; [`cli`] the arguments.

pub mod cli;
pub mod media;
pub mod nginx;
pub mod range_fleet;
pub mod range_process;
pub mod range_request;
pub mod report;
pub mod veza_tracks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::chat_servers;
use crate::load_generator::client_threads::{allowed_cpus, join_cpus};
use crate::proc_stat::ProcessSample;
use crate::server_process::ServerError;

use media::Catalogue;
use nginx::NginxServer;
use range_fleet::RangeFleet;
use range_process::{
    summarize, LoadShape, RangeJob, RangeProcessReport, CONNECTIONS_PER_PROCESS_MAX,
};
use range_request::PathStyle;
use report::RangeRunReport;
use veza_tracks::{ProcessingReport, VezaTracks, VezaTracksError};

/// How long client processes may take to open their connections.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(30);

/// Between `go` and the start: every child has read the line.
const GO_LEAD: Duration = Duration::from_millis(300);

/// After the window: how long answers are awaited.
const DRAIN: Duration = Duration::from_secs(3);

/// How long children may take to report after the drain.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// A server `track-ranges` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeServerKind {
    /// Veza's data plane (and control plane).
    Veza,
    /// nginx.
    Nginx,
}

impl RangeServerKind {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            RangeServerKind::Veza => crate::report::VEZA_SERVER,
            RangeServerKind::Nginx => "nginx",
        }
    }
}

/// The programs a run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeBinaries {
    /// `veza-dataplane`.
    pub dataplane: PathBuf,
    /// `veza-controlplane`.
    pub controlplane: PathBuf,
    /// `nginx`.
    pub nginx: PathBuf,
}

/// Everything a `track-ranges` invocation asks for.
#[derive(Debug, Clone)]
pub struct TrackRangesOptions {
    /// Servers, in run order (Veza first: it makes the files).
    pub servers: Vec<RangeServerKind>,
    /// The programs.
    pub binaries: RangeBinaries,
    /// Data-plane shards; nginx gets as many workers, on the same CPUs.
    pub shards: usize,
    /// Tracks uploaded (three renditions each on Veza's ladder).
    pub n_tracks: usize,
    /// Keep-alive connections.
    pub n_connections: usize,
    /// Open loop at a rate, or closed loop.
    pub load: LoadShape,
    /// Load before the window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Bytes per range.
    pub range_bytes: u64,
    /// Client processes.
    pub n_processes: usize,
    /// The request generator's seed.
    pub seed: u64,
}

impl TrackRangesOptions {
    /// Checks the limits; the error names the option.
    pub fn validate(&self, n_cpus: usize) -> Result<(), String> {
        if self.n_tracks == 0 || self.n_connections == 0 || self.n_processes == 0 {
            return Err("--tracks, --connections and --processes must be at least 1".into());
        }
        if self
            .n_connections
            .div_ceil(self.n_processes.min(self.n_connections))
            > CONNECTIONS_PER_PROCESS_MAX
        {
            return Err(format!(
                "at most {CONNECTIONS_PER_PROCESS_MAX} connections per process: raise --processes"
            ));
        }
        if self.shards == 0 || self.shards > n_cpus {
            return Err(format!("--shards must be 1..={n_cpus}"));
        }
        if !(4096..=16 << 20).contains(&self.range_bytes) {
            return Err("--range-bytes must be 4096..=16 MiB".into());
        }
        if self.duration.is_zero() {
            return Err("--duration-seconds must be above 0".into());
        }
        match self.load {
            LoadShape::Open { rate_per_second }
                if !(rate_per_second.is_finite() && rate_per_second > 0.0) =>
            {
                Err("--rate must be a positive number".into())
            }
            _ => Ok(()),
        }
    }
}

/// Why `track-ranges` could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrackRangesError {
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// Veza could not be started or set up; its logs follow.
    #[error("veza setup: {error}\n{server_logs}")]
    VezaSetup {
        /// What failed.
        error: VezaTracksError,
        /// The end of its logs.
        server_logs: String,
    },
    /// Veza could not be started or stopped.
    #[error(transparent)]
    Veza(#[from] VezaTracksError),
    /// nginx is missing and could not be installed.
    #[error("{0}")]
    MissingPeer(String),
    /// A server could not be started, sampled or stopped.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The load failed; the server's log tails follow.
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

/// What a whole invocation measured.
#[derive(Debug, Clone)]
pub struct TrackRangesOutcome {
    /// One row per server.
    pub runs: Vec<RangeRunReport>,
    /// Veza's upload processing, when Veza ran.
    pub processing: Option<ProcessingReport>,
}

/// Runs each server in turn; one row each.
pub fn run(
    options: &TrackRangesOptions,
    mut progress: impl FnMut(&RangeRunReport),
) -> Result<TrackRangesOutcome, TrackRangesError> {
    let cpus = allowed_cpus()?;
    options
        .validate(cpus.len())
        .map_err(TrackRangesError::InvalidOptions)?;
    if options.servers.contains(&RangeServerKind::Nginx) {
        nginx::ensure_installed(&options.binaries.nginx).map_err(TrackRangesError::MissingPeer)?;
    }
    let (server_cpus, client_cpus) = chat_servers::server_cpus(options.shards, &cpus);
    let placement = Placement {
        server_cpus: &server_cpus,
        client_cpus: &client_cpus,
    };
    let mut outcome = TrackRangesOutcome {
        runs: Vec::new(),
        processing: None,
    };
    let mut catalogue: Option<Catalogue> = None;
    for &server in &options.servers {
        let report = match server {
            RangeServerKind::Veza => {
                let (report, made, processing) = run_veza(options, &placement)?;
                outcome.processing = Some(processing);
                catalogue = Some(made);
                report
            }
            RangeServerKind::Nginx => {
                let files = match catalogue.take() {
                    Some(files) => files,
                    None => media::synthetic(options.n_tracks)?,
                };
                let report = run_nginx(options, &placement, &files);
                catalogue = Some(files);
                report?
            }
        };
        progress(&report);
        outcome.runs.push(report);
    }
    Ok(outcome)
}

/// Where the server and the clients run.
struct Placement<'a> {
    server_cpus: &'a [usize],
    client_cpus: &'a [usize],
}

fn run_veza(
    options: &TrackRangesOptions,
    placement: &Placement<'_>,
) -> Result<(RangeRunReport, Catalogue, ProcessingReport), TrackRangesError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The control plane runs beside the clients, as in the chat scenarios.
    let mut veza =
        VezaTracks::start_control_plane(&options.binaries.controlplane, placement.client_cpus)?;
    eprintln!(
        "  veza: uploading {} tracks and waiting for their renditions",
        options.n_tracks
    );
    let setup = runtime
        .block_on(veza.upload_tracks(options.n_tracks))
        .and_then(|uploaded| {
            veza.start_data_plane(&options.binaries.dataplane, placement.server_cpus)?;
            Ok(uploaded)
        });
    let (renditions, processing) = setup.map_err(|error| TrackRangesError::VezaSetup {
        error,
        server_logs: veza.log_tails(),
    })?;
    eprintln!(
        "  veza: {} renditions ready, {:.0} s of audio in {:.2} control-plane CPU-s",
        renditions.len(),
        processing.audio_secs,
        processing.control_plane_cpu_secs
    );
    let mut catalogue = Catalogue {
        renditions,
        media_root: veza.media_root(),
        source: media::MediaSource::Veza,
        n_tracks: options.n_tracks,
        directory: None,
    };
    let target = Target {
        kind: RangeServerKind::Veza,
        address: veza.dataplane_address().expect("the data plane started"),
        path_style: PathStyle::Veza,
        settings: BTreeMap::from([(
            "configuration".into(),
            "defaults (deploy/veza-dataplane.toml)".into(),
        )]),
    };
    let sample = || -> Result<(ProcessSample, Option<ProcessSample>), ServerError> {
        Ok((
            veza.dataplane().sample()?,
            Some(veza.controlplane().sample()?),
        ))
    };
    let measured = measure(options, placement, &catalogue, &target, sample);
    let report = measured.map_err(|reason| TrackRangesError::Run {
        server: target.kind.name(),
        reason,
        server_logs: veza.log_tails(),
    })?;
    catalogue.directory = Some(veza.stop()?);
    Ok((report, catalogue, processing))
}

fn run_nginx(
    options: &TrackRangesOptions,
    placement: &Placement<'_>,
    catalogue: &Catalogue,
) -> Result<RangeRunReport, TrackRangesError> {
    let server = NginxServer::start(
        &options.binaries.nginx,
        placement.server_cpus,
        &catalogue.media_root,
    )?;
    let target = Target {
        kind: RangeServerKind::Nginx,
        address: server.address(),
        path_style: PathStyle::StaticFiles,
        settings: nginx::settings(placement.server_cpus.len(), server.version()),
    };
    let sample = || -> Result<(ProcessSample, Option<ProcessSample>), ServerError> {
        Ok((server.sample()?, None))
    };
    let measured = measure(options, placement, catalogue, &target, sample);
    let report = measured.map_err(|reason| TrackRangesError::Run {
        server: target.kind.name(),
        reason,
        server_logs: server.log_tail(),
    })?;
    server.stop()?;
    Ok(report)
}

/// The server a run loads.
struct Target {
    kind: RangeServerKind,
    address: SocketAddr,
    path_style: PathStyle,
    settings: BTreeMap<String, String>,
}

/// The server's samples at the window's two ends.
struct WindowSamples {
    before: (ProcessSample, Option<ProcessSample>),
    end: (ProcessSample, Option<ProcessSample>),
    window_secs: f64,
}

/// Client processes, `go`, samples at the window's ends, reports; the
/// children stop on every path (the fleet's guard).
fn measure(
    options: &TrackRangesOptions,
    placement: &Placement<'_>,
    catalogue: &Catalogue,
    target: &Target,
    sample: impl Fn() -> Result<(ProcessSample, Option<ProcessSample>), ServerError>,
) -> Result<RangeRunReport, String> {
    let jobs = jobs(options, catalogue, target);
    let mut fleet = RangeFleet::spawn(
        range_process::SUBCOMMAND,
        "client process",
        &jobs,
        placement.client_cpus,
    )?;
    fleet.next_events(PREPARE_TIMEOUT, "prepared")?;
    let start_unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|error| error.to_string())?
        .as_micros()
        + GO_LEAD.as_micros();
    let start = Instant::now() + GO_LEAD;
    fleet.tell_all(&format!("go {start_unix_us}"))?;
    let measure_start = start + options.warmup;
    let measure_end = measure_start + options.duration;
    let sample = || sample().map_err(|error| error.to_string());
    std::thread::sleep(measure_start.saturating_duration_since(Instant::now()));
    let (before, before_at) = (sample()?, Instant::now());
    std::thread::sleep(measure_end.saturating_duration_since(Instant::now()));
    let (end, end_at) = (sample()?, Instant::now());
    let children = fleet.finish(DRAIN + FINISH_TIMEOUT)?;
    let samples = WindowSamples {
        before,
        end,
        window_secs: end_at.duration_since(before_at).as_secs_f64(),
    };
    Ok(report_row(
        options, placement, catalogue, target, &children, &samples,
    ))
}

/// Connections dealt to processes in contiguous blocks.
fn jobs(options: &TrackRangesOptions, catalogue: &Catalogue, target: &Target) -> Vec<RangeJob> {
    let n_processes = options.n_processes.min(options.n_connections);
    let per_process = options.n_connections / n_processes;
    let extra = options.n_connections % n_processes;
    let mut first = 0;
    (0..n_processes)
        .map(|process_idx| {
            let n_connections = per_process + usize::from(process_idx < extra);
            let job = RangeJob {
                address: target.address,
                path_style: target.path_style,
                renditions: catalogue.renditions.clone(),
                range_bytes: options.range_bytes,
                connection_idx_first: first,
                n_connections,
                n_connections_total: options.n_connections,
                load: options.load,
                warmup_secs: options.warmup.as_secs_f64(),
                duration_secs: options.duration.as_secs_f64(),
                drain_secs: DRAIN.as_secs_f64(),
                seed: options.seed,
            };
            first += n_connections;
            job
        })
        .collect()
}

fn merge_counts(maps: impl Iterator<Item = BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
    let mut merged = BTreeMap::new();
    for map in maps {
        for (kind, count) in map {
            *merged.entry(kind).or_insert(0) += count;
        }
    }
    merged
}

fn report_row(
    options: &TrackRangesOptions,
    placement: &Placement<'_>,
    catalogue: &Catalogue,
    target: &Target,
    children: &[RangeProcessReport],
    samples: &WindowSamples,
) -> RangeRunReport {
    let requests: u64 = children.iter().map(|child| child.requests).sum();
    let server_cpu_secs = samples.end.0.cpu_secs - samples.before.0.cpu_secs;
    let control_plane_cpu_secs = samples
        .end
        .1
        .zip(samples.before.1)
        .map(|(end, before)| end.cpu_secs - before.cpu_secs);
    let per_cpu_sec = |cpu_secs: f64| (cpu_secs > 0.0).then(|| requests as f64 / cpu_secs);
    let error_counts = merge_counts(children.iter().map(|child| child.errors.clone()));
    let (mode, rate_requested_per_s) = match options.load {
        LoadShape::Open { rate_per_second } => ("open", Some(rate_per_second)),
        LoadShape::Closed => ("closed", None),
    };
    RangeRunReport {
        server: target.kind.name().into(),
        shards: placement.server_cpus.len(),
        server_cpus: join_cpus(placement.server_cpus),
        client_cpus: join_cpus(placement.client_cpus),
        client_processes: children.len(),
        connections: options.n_connections,
        mode: mode.into(),
        rate_requested_per_s,
        range_bytes: options.range_bytes,
        tracks: catalogue.n_tracks,
        renditions: catalogue.renditions.len(),
        media: catalogue.source.name().into(),
        media_bytes: catalogue.total_bytes(),
        request_path_example: target.path_style.path(&catalogue.renditions[0]),
        server_settings: target.settings.clone(),
        warmup_secs: options.warmup.as_secs_f64(),
        window_secs: samples.window_secs,
        requests,
        requests_per_s: requests as f64 / options.duration.as_secs_f64(),
        body_bytes: children.iter().map(|child| child.body_bytes).sum(),
        latency: summarize(
            children
                .iter()
                .flat_map(|child| child.latency_us_counts.iter().copied()),
        ),
        schedule_lag: summarize(
            children
                .iter()
                .flat_map(|child| child.schedule_lag_us_counts.iter().copied()),
        ),
        errors: error_counts.values().sum(),
        error_counts,
        first_error: children.iter().find_map(|child| child.first_error.clone()),
        reconnects: children.iter().map(|child| child.reconnects).sum(),
        server_cpu_secs,
        requests_per_server_cpu_sec: per_cpu_sec(server_cpu_secs),
        control_plane_cpu_secs,
        requests_per_cpu_sec_all_processes: per_cpu_sec(
            server_cpu_secs + control_plane_cpu_secs.unwrap_or(0.0),
        ),
        server_rss_kib: samples.end.0.rss_kib,
        control_plane_rss_kib: samples.end.1.map(|sample| sample.rss_kib),
        load_generator_cpu_secs: children.iter().map(|child| child.cpu_secs).sum(),
    }
}
