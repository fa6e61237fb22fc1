//! `veza-bench connect-storm [options]`.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::report::MachineDescription;
use crate::scenario::chat_fanout::cli::{ChatServerBinaries, ChatServerChoice};
use crate::scenario::connection_fleet::{FleetBinaries, FleetShape};

use super::{render, ConnectStormOptions, StormReport};

/// The arguments of `veza-bench connect-storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectStormArgs {
    /// Which server(s) to run.
    #[arg(long, value_enum, default_value_t = ChatServerChoice::Both)]
    pub server: ChatServerChoice,
    /// Server binaries.
    #[command(flatten)]
    pub binaries: ChatServerBinaries,
    /// Shard counts (nats-server: GOMAXPROCS); the server is pinned to CPUs 0..shards.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub shards: Vec<usize>,
    /// Connections to open.
    #[arg(long, default_value_t = 5000)]
    pub connections: usize,
    /// Client processes (at least; more when a process would hold over 5000).
    #[arg(long, default_value_t = 2)]
    pub processes: usize,
    /// Connections each client process opens at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Distinct users the connections log in as.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Also subscribe each connection to a room (one of 10) in the storm.
    #[arg(long)]
    pub subscribe: bool,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs the scenario as the arguments say.
pub fn run_from_cli(args: ConnectStormArgs) -> anyhow::Result<()> {
    let options = ConnectStormOptions {
        servers: args.server.servers(),
        binaries: FleetBinaries {
            dataplane: args.binaries.dataplane(),
            controlplane: args.binaries.controlplane(),
            nats: args.binaries.nats_bin.clone(),
        },
        shard_counts: args.shards.clone(),
        shape: FleetShape {
            n_connections: args.connections,
            connections_per_process: 5000,
            processes_min: args.processes.max(1),
            concurrency: args.concurrency,
            n_users: args.users,
            n_rooms: 10,
            subscribe: args.subscribe,
        },
    };
    let machine = MachineDescription::read();
    eprintln!(
        "connect-storm on {} x {} ({}): {} connections from {} processes, {} at once each, shards {:?}",
        machine.nproc,
        machine.cpu_model,
        machine.kernel,
        options.shape.n_connections,
        options.shape.processes().len(),
        options.shape.concurrency,
        options.shard_counts,
    );
    let runs = super::run(&options, |run| {
        eprintln!(
            "  {} shards={}: {} of {} in {:.2} s = {:.0} connections/s, p99 {} us",
            run.server,
            run.shards,
            run.connections_opened,
            run.connections_requested,
            run.storm_secs,
            run.connections_per_s,
            run.total_latency.p99_us,
        );
        if let Some(error) = &run.first_error {
            eprintln!("    first error: {error}");
        }
    })?;
    println!("{}", render(&runs));
    let report = StormReport {
        scenario: "connect-storm".into(),
        command_line: std::env::args().collect(),
        machine,
        runs,
    };
    if let Some(path) = &args.json {
        report
            .write_json(path)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
