//! `veza-bench live-listeners [options]`: the arguments, and the edge that
//! runs the scenario, prints the tables and writes the JSON.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::report::MachineDescription;
use crate::scenario::chat_fanout::cli::{seconds, ChatServerBinaries};

use super::icecast::DEFAULT_ICECAST_BIN;
use super::report::{ratios, render, LiveListenersReport};
use super::source::DEFAULT_FFMPEG_BIN;
use super::{LiveBinaries, LiveListenersOptions, LiveServerKind};

/// `--server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LiveServerChoice {
    /// Veza's data plane (and control plane).
    Veza,
    /// icecast2.
    Peer,
    /// Veza, then icecast2.
    Both,
}

impl LiveServerChoice {
    /// The servers, in run order.
    pub fn servers(self) -> Vec<LiveServerKind> {
        match self {
            LiveServerChoice::Veza => vec![LiveServerKind::Veza],
            LiveServerChoice::Peer => vec![LiveServerKind::Icecast],
            LiveServerChoice::Both => vec![LiveServerKind::Veza, LiveServerKind::Icecast],
        }
    }
}

/// The arguments of `veza-bench live-listeners`.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveListenersArgs {
    /// Which server(s) to run.
    #[arg(long, value_enum, default_value_t = LiveServerChoice::Both)]
    pub server: LiveServerChoice,
    /// Veza's binaries (`--nats-bin` is unused here).
    #[command(flatten)]
    pub binaries: ChatServerBinaries,
    /// icecast2 (Debian package `icecast2`).
    #[arg(long, default_value = DEFAULT_ICECAST_BIN)]
    pub icecast_bin: PathBuf,
    /// ffmpeg, the source.
    #[arg(long, default_value = DEFAULT_FFMPEG_BIN)]
    pub ffmpeg_bin: PathBuf,
    /// Data-plane shards; the server is pinned to CPUs 0..shards (icecast2
    /// too), listeners and the source to the others.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Listeners.
    #[arg(long, default_value_t = 1000)]
    pub listeners: usize,
    /// New listeners per second (open loop).
    #[arg(long, default_value_t = 500.0)]
    pub ramp_per_second: f64,
    /// Seconds of listening after the last listener's start.
    #[arg(long, default_value_t = 10.0)]
    pub duration_seconds: f64,
    /// The source's Opus bitrate.
    #[arg(long, default_value_t = 64)]
    pub bitrate_kbps: u32,
    /// Listener processes (a process may hold 20000 files).
    #[arg(long, default_value_t = 2)]
    pub processes: usize,
    /// Audio a listener buffers before playing, ms.
    #[arg(long, default_value_t = 2000)]
    pub playout_start_ms: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs the scenario as the arguments say.
pub fn run_from_cli(args: LiveListenersArgs) -> anyhow::Result<()> {
    let options = LiveListenersOptions {
        servers: args.server.servers(),
        binaries: LiveBinaries {
            dataplane: args.binaries.dataplane(),
            controlplane: args.binaries.controlplane(),
            icecast: args.icecast_bin.clone(),
            ffmpeg: args.ffmpeg_bin.clone(),
        },
        shards: args.shards,
        n_listeners: args.listeners,
        ramp_per_second: args.ramp_per_second,
        hold: seconds(args.duration_seconds, "--duration-seconds")?,
        bitrate_kbps: args.bitrate_kbps,
        n_processes: args.processes,
        playout_start_ms: args.playout_start_ms,
    };
    let machine = MachineDescription::read();
    eprintln!(
        "live-listeners on {} x {} ({}): {} listeners at {}/s in {} processes, {} kb/s, \
         {} s after the last, {} shard(s)",
        machine.nproc,
        machine.cpu_model,
        machine.kernel,
        options.n_listeners,
        options.ramp_per_second,
        options.n_processes,
        options.bitrate_kbps,
        options.hold.as_secs_f64(),
        options.shards,
    );
    let runs = super::run(&options, |run| {
        eprintln!(
            "  {}: {} of {} connected, {} stalls, {} evictions, {} errors, TTFB p99 {:.2} ms",
            run.server,
            run.listeners_connected,
            run.listeners_requested,
            run.stalls,
            run.evictions,
            run.errors,
            run.ttfb.p99_us as f64 / 1000.0,
        );
        if let Some(text) = &run.first_failure {
            eprintln!("    first failure: {text}");
        }
    })?;
    let report = LiveListenersReport {
        scenario: "live-listeners".into(),
        command_line: std::env::args().collect(),
        machine,
        ratios: ratios(&runs),
        runs,
    };
    println!("{}", render(&report.runs, &report.ratios));
    if let Some(path) = &args.json {
        report
            .write_json(path)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
