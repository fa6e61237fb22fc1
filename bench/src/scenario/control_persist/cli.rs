//! `veza-bench control-persist [options]`: the arguments, and the edge that
//! turns them into options, runs, prints the table and writes the JSON.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;

use crate::report::MachineDescription;

use super::report::{render_table, ControlPersistReport};
use super::{ControlPersistOptions, Database};

/// `--database`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatabaseChoice {
    /// Embedded SQLite in a temporary data directory.
    Sqlite,
    /// A fresh database on PostgreSQL.
    Postgres,
    /// SQLite, then PostgreSQL.
    Both,
}

/// The arguments of `veza-bench control-persist`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlPersistArgs {
    /// Which database(s) to run.
    #[arg(long, value_enum, default_value_t = DatabaseChoice::Both)]
    pub database: DatabaseChoice,
    /// The control plane binary [default: target/release/veza-controlplane].
    #[arg(long)]
    pub controlplane_bin: Option<PathBuf>,
    /// A PostgreSQL admin URL (postgres://user@host:port/db) on which a fresh
    /// database is created per run; without it a throw-away server is
    /// started with scripts/postgres-test-server.sh, pinned beside the
    /// control plane.
    #[arg(long)]
    pub database_url: Option<String>,
    /// The throw-away PostgreSQL script.
    #[arg(long, default_value = "scripts/postgres-test-server.sh")]
    pub postgres_script: PathBuf,
    /// Changes (new messages) per PersistBatch.
    #[arg(long, value_delimiter = ',', default_value = "1,64,512")]
    pub batch_sizes: Vec<usize>,
    /// Control connections (one data-plane shard and one room each).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Batches in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Bytes of each message's text.
    #[arg(long, default_value_t = 100)]
    pub body_bytes: usize,
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
    /// A tiny run for tests: batches of 64, 2 connections, 0.2 s warm-up,
    /// 1 s measured (on the databases asked for).
    #[arg(long)]
    pub smoke: bool,
}

/// Runs the scenario as the arguments say.
pub fn run_from_cli(args: ControlPersistArgs) -> anyhow::Result<()> {
    let options = options_from(&args)?;
    let machine = MachineDescription::read();
    eprintln!(
        "control-persist on {} x {} ({}), databases {:?}, batches {:?}, {} connections, {} in flight each",
        machine.nproc,
        machine.cpu_model,
        machine.kernel,
        options.databases.iter().map(|database| database.name()).collect::<Vec<_>>(),
        options.batch_sizes,
        options.n_connections,
        options.in_flight_per_connection,
    );
    let runs = super::run(&options, |run| {
        eprintln!(
            "  {} batch={}: {:.0} msg/s, {:.0} batch/s, p99 {} us, {} errors, durability {}",
            run.database,
            run.batch_changes,
            run.throughput_msgs_per_s,
            run.throughput_batches_per_s,
            run.batch_latency.p99_us,
            run.errors,
            if run.durability.passed {
                "ok"
            } else {
                "FAILED"
            },
        );
        for (kind, detail) in &run.error_details {
            eprintln!("    error {kind}: {detail}");
        }
        if run.is_noisy() {
            eprintln!(
                "  WARNING: other processes used {:.2} CPU-s during this {:.1} s window: noisy",
                run.other_tasks_cpu_secs, run.measured_secs
            );
        }
    })?;
    let report = ControlPersistReport {
        scenario: "control-persist".into(),
        command_line: std::env::args().collect(),
        machine,
        runs,
    };
    println!("{}", render_table(&report.runs));
    if let Some(path) = &args.json {
        report
            .write_json(path)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The options the arguments ask for.
pub fn options_from(args: &ControlPersistArgs) -> anyhow::Result<ControlPersistOptions> {
    let controlplane_bin = args.controlplane_bin.clone().unwrap_or_else(|| {
        Path::new("target")
            .join("release")
            .join("veza-controlplane")
    });
    let base = if args.smoke {
        ControlPersistOptions::smoke(controlplane_bin, args.postgres_script.clone())
    } else {
        ControlPersistOptions {
            batch_sizes: args.batch_sizes.clone(),
            n_connections: args.connections,
            warmup: seconds(args.warmup_secs, "--warmup-secs")?,
            duration: seconds(args.duration_secs, "--duration-secs")?,
            ..ControlPersistOptions::full(controlplane_bin, args.postgres_script.clone())
        }
    };
    let databases = match args.database {
        DatabaseChoice::Sqlite => vec![Database::Sqlite],
        DatabaseChoice::Postgres => vec![Database::Postgres],
        DatabaseChoice::Both => vec![Database::Sqlite, Database::Postgres],
    };
    Ok(ControlPersistOptions {
        databases,
        postgres_admin_url: args.database_url.clone(),
        in_flight_per_connection: args.in_flight,
        body_bytes: args.body_bytes,
        noisy_retries_max: args.noisy_retries,
        ..base
    })
}

fn seconds(secs: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .with_context(|| format!("{name} must be a non-negative number"))
}
