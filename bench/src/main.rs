//! `veza-bench <scenario> [options]`: runs a benchmark scenario against Veza
//! and its peer, prints a table, and optionally writes JSON.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use veza_bench::report::{compute_ratios, table, MachineDescription, ScenarioReport};
use veza_bench::scenario::chat_fanout::cli::ChatFanoutArgs;
use veza_bench::scenario::connect_storm::cli::ConnectStormArgs;
use veza_bench::scenario::control_persist::cli::{run_from_cli, ControlPersistArgs};
use veza_bench::scenario::idle_connections::cli::IdleConnectionsArgs;
use veza_bench::scenario::live_listeners::cli::LiveListenersArgs;
use veza_bench::scenario::track_ranges::cli::TrackRangesArgs;
use veza_bench::scenario::ws_echo::{self, EchoServer, LoadMode, WsEchoOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "veza-bench", about = "Veza's benchmark scenarios", version)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// WebSocket echo: Veza against a tokio-tungstenite echo server.
    WsEcho(WsEchoArgs),
    /// Persisted messages per second through the control protocol, on SQLite and PostgreSQL.
    ControlPersist(ControlPersistArgs),
    /// Chat room fan-out: Veza (protocol v1) against nats-server over WebSocket.
    ChatFanout(ChatFanoutArgs),
    /// Server memory per idle authenticated, subscribed chat connection.
    IdleConnections(IdleConnectionsArgs),
    /// Connections (handshake + auth) per second, opened as fast as possible.
    ConnectStorm(ConnectStormArgs),
    /// Listeners of one Ogg Opus live stream: Veza against icecast2.
    LiveListeners(LiveListenersArgs),
    /// HTTP range requests on track renditions: Veza against nginx.
    TrackRanges(TrackRangesArgs),
    /// Internal: one client process of track-ranges (reads its job on
    /// stdin).
    #[command(hide = true, name = "track-range-process")]
    TrackRangeProcess,
    /// Internal: one listener process of live-listeners (reads its job on
    /// stdin).
    #[command(hide = true, name = "live-listener-process")]
    LiveListenerProcess,
    /// Internal: one client process of idle-connections or connect-storm
    /// (reads its job on stdin).
    #[command(hide = true, name = "client-process")]
    ClientProcess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServerChoice {
    Veza,
    Peer,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeChoice {
    Closed,
    Open,
}

#[derive(Debug, clap::Args)]
struct WsEchoArgs {
    /// Which server(s) to run.
    #[arg(long, value_enum, default_value_t = ServerChoice::Both)]
    server: ServerChoice,
    /// The Veza binary [default: target/release/veza-dataplane].
    #[arg(long)]
    veza_bin: Option<PathBuf>,
    /// The peer binary [default: bench-echo-peer next to this executable].
    #[arg(long)]
    peer_bin: Option<PathBuf>,
    /// Shard counts to run; the server is pinned to CPUs 0..shards.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    shards: Vec<usize>,
    /// Connections per run.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Payload sizes in bytes (at least 16: the stamp).
    #[arg(long, value_delimiter = ',', default_value = "20,1024,16384")]
    payload_sizes: Vec<usize>,
    /// closed: `--pipeline` messages in flight per connection, at
    /// saturation; open: a fixed total `--rate`.
    #[arg(long, value_enum, default_value_t = ModeChoice::Closed)]
    mode: ModeChoice,
    /// Messages in flight per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Total messages per second over all connections (open loop).
    #[arg(long, required_if_eq("mode", "open"))]
    rate: Option<u64>,
    /// Seconds of load before measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runs again, up to this many times, a run during which other
    /// processes used more than 5% of a CPU; the quietest attempt is kept.
    #[arg(long, default_value_t = 0)]
    noisy_retries: usize,
    /// A tiny run for tests: 4 connections, 0.2 s warm-up, 1 s measured.
    #[arg(long)]
    smoke: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::WsEcho(args) => run_ws_echo(args),
        Scenario::ControlPersist(args) => run_from_cli(args),
        Scenario::ChatFanout(args) => veza_bench::scenario::chat_fanout::cli::run_from_cli(args),
        Scenario::IdleConnections(args) => {
            veza_bench::scenario::idle_connections::cli::run_from_cli(args)
        }
        Scenario::ConnectStorm(args) => {
            veza_bench::scenario::connect_storm::cli::run_from_cli(args)
        }
        Scenario::LiveListeners(args) => {
            veza_bench::scenario::live_listeners::cli::run_from_cli(args)
        }
        Scenario::LiveListenerProcess => {
            Ok(veza_bench::scenario::live_listeners::listener_process::run_from_stdin()?)
        }
        Scenario::TrackRanges(args) => veza_bench::scenario::track_ranges::cli::run_from_cli(args),
        Scenario::TrackRangeProcess => {
            Ok(veza_bench::scenario::track_ranges::range_process::run_from_stdin()?)
        }
        Scenario::ClientProcess => Ok(veza_bench::client_process::worker::run_from_stdin()?),
    }
}

fn run_ws_echo(args: WsEchoArgs) -> anyhow::Result<()> {
    let options = ws_echo_options(&args)?;
    let machine = MachineDescription::read();
    eprintln!(
        "ws-echo on {} x {} ({}), servers {:?}, shards {:?}, payloads {:?}, {} connections, {:?}",
        machine.nproc,
        machine.cpu_model,
        machine.kernel,
        options
            .servers
            .iter()
            .map(|server| server.name())
            .collect::<Vec<_>>(),
        options.shard_counts,
        options.payload_sizes,
        options.n_connections,
        options.mode,
    );
    let runs = ws_echo::run(&options, |run| {
        eprintln!(
            "  {} shards={} payload={} B: {:.0} msg/s, {:.0} msg/server-CPU-s, p99 {} us, \
             {} errors, attempt(s) {}, load generator: {}",
            run.server,
            run.shards,
            run.payload_bytes,
            run.throughput_msgs_per_s,
            run.msgs_per_server_cpu_sec.unwrap_or(0.0),
            run.latency.p99_us,
            run.errors,
            run.attempts,
            run.load_generator
        );
        if run.is_noisy() {
            eprintln!(
                "  WARNING: other processes used {:.2} CPU-s and steal took {:.2} during this \
                 {:.1} s window: noisy",
                run.other_tasks_cpu_secs, run.steal_cpu_secs, run.measured_secs
            );
        }
    })?;
    let report = ScenarioReport {
        scenario: "ws-echo".into(),
        command_line: std::env::args().collect(),
        machine,
        ratios: compute_ratios(&runs),
        runs,
    };
    println!("{}", table::render_runs(&report.runs));
    if !report.ratios.is_empty() {
        println!("{}", table::render_ratios(&report.ratios));
    }
    if let Some(path) = &args.json {
        report
            .write_json(path)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

fn ws_echo_options(args: &WsEchoArgs) -> anyhow::Result<WsEchoOptions> {
    let servers = match args.server {
        ServerChoice::Veza => vec![EchoServer::Veza],
        ServerChoice::Peer => vec![EchoServer::Peer],
        ServerChoice::Both => vec![EchoServer::Veza, EchoServer::Peer],
    };
    let mode = match args.mode {
        ModeChoice::Closed => LoadMode::Closed {
            pipeline: args.pipeline,
        },
        ModeChoice::Open => LoadMode::Open {
            rate_msgs_per_s: args.rate.context("--rate")?,
        },
    };
    let (n_connections, warmup_secs, duration_secs) = if args.smoke {
        (4, 0.2, 1.0)
    } else {
        (args.connections, args.warmup_secs, args.duration_secs)
    };
    let seconds = |secs: f64, name: &str| {
        Duration::try_from_secs_f64(secs)
            .with_context(|| format!("{name} must be a non-negative number"))
    };
    Ok(WsEchoOptions {
        servers,
        veza_bin: args.veza_bin.clone().unwrap_or_else(default_veza_bin),
        peer_bin: args.peer_bin.clone().map_or_else(default_peer_bin, Ok)?,
        shard_counts: args.shards.clone(),
        n_connections,
        payload_sizes: args.payload_sizes.clone(),
        mode,
        warmup: seconds(warmup_secs, "--warmup-secs")?,
        noisy_retries_max: args.noisy_retries,
        duration: seconds(duration_secs, "--duration-secs")?,
    })
}

fn default_veza_bin() -> PathBuf {
    Path::new("target").join("release").join("veza-dataplane")
}

fn default_peer_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locate the current executable")?;
    Ok(exe.with_file_name("bench-echo-peer"))
}
