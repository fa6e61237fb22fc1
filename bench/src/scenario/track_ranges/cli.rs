//! `veza-bench track-ranges [options]`: the arguments, and the edge that
//! runs the scenario, prints the tables and writes the JSON.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::load_generator::client_threads::allowed_cpus;
use crate::report::MachineDescription;
use crate::scenario::chat_fanout::cli::seconds;

use super::nginx::DEFAULT_NGINX_BIN;
use super::range_process::LoadShape;
use super::report::{ratios, render, TrackRangesReport};
use super::{RangeBinaries, RangeServerKind, TrackRangesOptions};

/// `--server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RangeServerChoice {
    /// Veza's data plane (and control plane, which makes the files).
    Veza,
    /// nginx, on synthetic files of the same sizes.
    Peer,
    /// Veza, then nginx on the files Veza made.
    Both,
}

impl RangeServerChoice {
    /// The servers, in run order.
    pub fn servers(self) -> Vec<RangeServerKind> {
        match self {
            RangeServerChoice::Veza => vec![RangeServerKind::Veza],
            RangeServerChoice::Peer => vec![RangeServerKind::Nginx],
            RangeServerChoice::Both => vec![RangeServerKind::Veza, RangeServerKind::Nginx],
        }
    }
}

/// The arguments of `veza-bench track-ranges`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrackRangesArgs {
    /// Which server(s) to run.
    #[arg(long, value_enum, default_value_t = RangeServerChoice::Both)]
    pub server: RangeServerChoice,
    /// The data plane [default: target/release/veza-dataplane].
    #[arg(long)]
    pub dataplane_bin: Option<PathBuf>,
    /// The control plane [default: target/release/veza-controlplane].
    #[arg(long)]
    pub controlplane_bin: Option<PathBuf>,
    /// nginx (Debian package `nginx-light`; installed when missing and
    /// running as root).
    #[arg(long, default_value = DEFAULT_NGINX_BIN)]
    pub nginx_bin: PathBuf,
    /// Data-plane shards; the server is pinned to CPUs 0..shards (nginx
    /// too, with as many workers), clients and the control plane to the
    /// others.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Tracks uploaded (about three renditions each).
    #[arg(long, default_value_t = 334)]
    pub tracks: usize,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Requests per second over all connections (open loop; latency from
    /// the scheduled send).
    #[arg(long, required_unless_present = "closed", conflicts_with = "closed")]
    pub rate: Option<f64>,
    /// Closed loop instead: each connection sends again on each answer
    /// (saturation).
    #[arg(long)]
    pub closed: bool,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_seconds: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration_seconds: f64,
    /// Bytes per range; ranges start at multiples of it.
    #[arg(long, default_value_t = 65_536)]
    pub range_bytes: u64,
    /// Client processes [default: one per CPU the server does not have].
    #[arg(long)]
    pub processes: Option<usize>,
    /// The request generator's seed (the same requests for every server).
    #[arg(long, default_value_t = 6)]
    pub seed: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn release_bin(name: &str) -> PathBuf {
    Path::new("target").join("release").join(name)
}

/// Runs the scenario as the arguments say.
pub fn run_from_cli(args: TrackRangesArgs) -> anyhow::Result<()> {
    let n_cpus = allowed_cpus().context("read the CPU mask")?.len();
    let load = match args.rate {
        Some(rate_per_second) if !args.closed => LoadShape::Open { rate_per_second },
        _ => LoadShape::Closed,
    };
    let options = TrackRangesOptions {
        servers: args.server.servers(),
        binaries: RangeBinaries {
            dataplane: args
                .dataplane_bin
                .clone()
                .unwrap_or_else(|| release_bin("veza-dataplane")),
            controlplane: args
                .controlplane_bin
                .clone()
                .unwrap_or_else(|| release_bin("veza-controlplane")),
            nginx: args.nginx_bin.clone(),
        },
        shards: args.shards,
        n_tracks: args.tracks,
        n_connections: args.connections,
        load,
        warmup: seconds(args.warmup_seconds, "--warmup-seconds")?,
        duration: seconds(args.duration_seconds, "--duration-seconds")?,
        range_bytes: args.range_bytes,
        n_processes: args
            .processes
            .unwrap_or(n_cpus.saturating_sub(args.shards).max(1)),
        seed: args.seed,
    };
    let machine = MachineDescription::read();
    eprintln!(
        "track-ranges on {} x {} ({}): {} tracks, {} connections in {} processes, {:?}, \
         {} B ranges, {} s warm-up + {} s, {} shard(s)",
        machine.nproc,
        machine.cpu_model,
        machine.kernel,
        options.n_tracks,
        options.n_connections,
        options.n_processes,
        options.load,
        options.range_bytes,
        options.warmup.as_secs_f64(),
        options.duration.as_secs_f64(),
        options.shards,
    );
    let outcome = super::run(&options, |run| {
        eprintln!(
            "  {}: {} requests ({:.0}/s), {} errors, p99 {:.2} ms, {:.2} server CPU-s",
            run.server,
            run.requests,
            run.requests_per_s,
            run.errors,
            run.latency.p99_us as f64 / 1000.0,
            run.server_cpu_secs,
        );
    })?;
    let report = TrackRangesReport {
        scenario: "track-ranges".into(),
        command_line: std::env::args().collect(),
        machine,
        processing: outcome.processing,
        ratios: ratios(&outcome.runs),
        runs: outcome.runs,
    };
    println!("{}", render(&report));
    if let Some(path) = &args.json {
        report
            .write_json(path)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
