//! `veza-bench idle-connections [options]`.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::report::MachineDescription;
use crate::scenario::chat_fanout::cli::{seconds, ChatServerBinaries, ChatServerChoice};
use crate::scenario::connection_fleet::{FleetBinaries, FleetShape};

use super::report::{render, IdleReport};
use super::IdleConnectionsOptions;

/// The arguments of `veza-bench idle-connections`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleConnectionsArgs {
    /// Which server(s) to run.
    #[arg(long, value_enum, default_value_t = ChatServerChoice::Both)]
    pub server: ChatServerChoice,
    /// Server binaries.
    #[command(flatten)]
    pub binaries: ChatServerBinaries,
    /// Shard counts (nats-server: GOMAXPROCS); the server is pinned to CPUs 0..shards.
    #[arg(long, value_delimiter = ',', default_value = "2")]
    pub shards: Vec<usize>,
    /// Idle connections to open.
    #[arg(long, default_value_t = 15_000)]
    pub connections: usize,
    /// Most connections per client process (a process may hold 20000 files).
    #[arg(long, default_value_t = 5000)]
    pub connections_per_process: usize,
    /// Connections each client process opens at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Distinct users the connections log in as.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Rooms the connections subscribe to (connection c: room c % rooms).
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Seconds the connections are held before the last sample.
    #[arg(long, default_value_t = 10.0)]
    pub settle_secs: f64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs the scenario as the arguments say.
pub fn run_from_cli(args: IdleConnectionsArgs) -> anyhow::Result<()> {
    let options = IdleConnectionsOptions {
        servers: args.server.servers(),
        binaries: FleetBinaries {
            dataplane: args.binaries.dataplane(),
            controlplane: args.binaries.controlplane(),
            nats: args.binaries.nats_bin.clone(),
        },
        shard_counts: args.shards.clone(),
        shape: FleetShape {
            n_connections: args.connections,
            connections_per_process: args.connections_per_process,
            processes_min: 2,
            concurrency: args.concurrency,
            n_users: args.users,
            n_rooms: args.rooms,
            subscribe: true,
        },
        settle: seconds(args.settle_secs, "--settle-secs")?,
    };
    let machine = MachineDescription::read();
    eprintln!(
        "idle-connections on {} x {} ({}): {} connections in {} processes, {} users, {} rooms, \
         shards {:?}, settle {:?}",
        machine.nproc,
        machine.cpu_model,
        machine.kernel,
        options.shape.n_connections,
        options.shape.processes().len(),
        options.shape.n_users,
        options.shape.n_rooms,
        options.shard_counts,
        options.settle,
    );
    let runs = super::run(&options, |run| {
        eprintln!(
            "  {} shards={}: {} of {} open in {:.1} s, {} B of server RSS per connection, \
             {} closed by the server",
            run.server,
            run.shards,
            run.connections_opened,
            run.connections_requested,
            run.open_secs,
            run.rss_bytes_per_connection.map_or(0.0, f64::round),
            run.closed_by_server,
        );
        for text in [&run.first_error, &run.first_close].into_iter().flatten() {
            eprintln!("    {text}");
        }
    })?;
    println!("{}", render(&runs));
    let report = IdleReport {
        scenario: "idle-connections".into(),
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
