//! `veza-bench chat-fanout [options]`: the arguments, and the edge that
//! runs the scenario, prints the table and writes the JSON.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::chat_servers::nats::DEFAULT_NATS_BIN;
use crate::chat_servers::ChatServerKind;
use crate::report::MachineDescription;

use super::report::{ratios, render, FanoutReport};
use super::ChatFanoutOptions;

/// `--server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChatServerChoice {
    /// Veza's data plane and control plane.
    Veza,
    /// nats-server over WebSocket.
    Nats,
    /// Veza, then nats-server.
    Both,
}

impl ChatServerChoice {
    /// The servers, in run order.
    pub fn servers(self) -> Vec<ChatServerKind> {
        match self {
            ChatServerChoice::Veza => vec![ChatServerKind::Veza],
            ChatServerChoice::Nats => vec![ChatServerKind::Nats],
            ChatServerChoice::Both => vec![ChatServerKind::Veza, ChatServerKind::Nats],
        }
    }
}

/// Where the server binaries are; shared by the chat scenarios.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatServerBinaries {
    /// The data plane [default: target/release/veza-dataplane].
    #[arg(long)]
    pub dataplane_bin: Option<PathBuf>,
    /// The control plane [default: target/release/veza-controlplane].
    #[arg(long)]
    pub controlplane_bin: Option<PathBuf>,
    /// nats-server (Debian package `nats-server`).
    #[arg(long, default_value = DEFAULT_NATS_BIN)]
    pub nats_bin: PathBuf,
}

impl ChatServerBinaries {
    /// The data plane binary.
    pub fn dataplane(&self) -> PathBuf {
        self.dataplane_bin
            .clone()
            .unwrap_or_else(|| Path::new("target").join("release").join("veza-dataplane"))
    }

    /// The control plane binary.
    pub fn controlplane(&self) -> PathBuf {
        self.controlplane_bin.clone().unwrap_or_else(|| {
            Path::new("target")
                .join("release")
                .join("veza-controlplane")
        })
    }
}

/// The arguments of `veza-bench chat-fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatFanoutArgs {
    /// Which server(s) to run.
    #[arg(long, value_enum, default_value_t = ChatServerChoice::Both)]
    pub server: ChatServerChoice,
    /// Server binaries.
    #[command(flatten)]
    pub binaries: ChatServerBinaries,
    /// Shard counts (nats-server: GOMAXPROCS); the server is pinned to CPUs 0..shards.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub shards: Vec<usize>,
    /// Rooms.
    #[arg(long, default_value_t = 2)]
    pub rooms: usize,
    /// Subscribed connections per room.
    #[arg(long, default_value_t = 50)]
    pub subscribers_per_room: usize,
    /// Publishing connections per room.
    #[arg(long, default_value_t = 1)]
    pub publishers_per_room: usize,
    /// Distinct users the connections log in as [default: one per
    /// connection, at most 1000].
    #[arg(long)]
    pub users: Option<usize>,
    /// Messages per second over all publishers (open loop).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Bytes per message body (at least 32: the stamp).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Seconds of load before measurement.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration_secs: f64,
    /// Runs again, up to this many times, a run during which other
    /// processes used more than 5% of a CPU; the quietest attempt is kept.
    #[arg(long, default_value_t = 0)]
    pub noisy_retries: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs the scenario as the arguments say.
pub fn run_from_cli(args: ChatFanoutArgs) -> anyhow::Result<()> {
    let options = options_from(&args)?;
    let machine = MachineDescription::read();
    let shape = options.shape();
    eprintln!(
        "chat-fanout on {} x {} ({}): {} rooms x {} subscribers + {} publishers, {} users, \
         {} msg/s of {} B, shards {:?}",
        machine.nproc,
        machine.cpu_model,
        machine.kernel,
        shape.n_rooms,
        shape.subscribers_per_room,
        shape.publishers_per_room,
        shape.n_users,
        shape.rate_msgs_per_s,
        shape.payload_bytes,
        options.shard_counts,
    );
    let runs = super::run(&options, |run| {
        eprintln!(
            "  {} shards={}: {:.0} deliveries/s, p99 {} us, {} lost, {} failed connections, \
             {:.0} deliveries/server-CPU-s",
            run.server,
            run.shards,
            run.deliveries_per_s,
            run.latency.p99_us,
            run.deliveries_lost,
            run.failed_connections,
            run.deliveries_per_server_cpu_sec.unwrap_or(0.0),
        );
        if let Some(counters) = &run.dataplane_counters {
            eprintln!(
                "    data plane: {:.0} messages sequenced in {:.0} persist batches ({:.1} per batch), \
                 {:.0} persist failures, {:.0} limit hits, {:.0} full rings",
                counters.messages_sequenced,
                counters.persist_batches,
                counters.messages_per_persist_batch.unwrap_or(0.0),
                counters.persist_failures,
                counters.limit_hits,
                counters.ring_full,
            );
        }
        if let Some(failure) = &run.first_failure {
            eprintln!("    first failure: {failure}");
        }
        if run.is_noisy() {
            eprintln!(
                "  WARNING: other processes used {:.2} CPU-s and steal {:.2} during this window: noisy",
                run.other_tasks_cpu_secs, run.steal_cpu_secs
            );
        }
    })?;
    let report = FanoutReport {
        scenario: "chat-fanout".into(),
        command_line: std::env::args().collect(),
        machine,
        ratios: ratios(&runs),
        runs,
    };
    println!("{}", render(&report));
    if let Some(path) = &args.json {
        report
            .write_json(path)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The options the arguments ask for.
pub fn options_from(args: &ChatFanoutArgs) -> anyhow::Result<ChatFanoutOptions> {
    Ok(ChatFanoutOptions {
        servers: args.server.servers(),
        dataplane_bin: args.binaries.dataplane(),
        controlplane_bin: args.binaries.controlplane(),
        nats_bin: args.binaries.nats_bin.clone(),
        shard_counts: args.shards.clone(),
        n_rooms: args.rooms,
        subscribers_per_room: args.subscribers_per_room,
        publishers_per_room: args.publishers_per_room,
        n_users: args.users,
        rate_msgs_per_s: args.rate,
        payload_bytes: args.payload_bytes,
        warmup: seconds(args.warmup_secs, "--warmup-secs")?,
        duration: seconds(args.duration_secs, "--duration-secs")?,
        noisy_retries_max: args.noisy_retries,
    })
}

/// Seconds from the command line as a duration.
pub fn seconds(secs: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .with_context(|| format!("{name} must be a non-negative number"))
}
