//! `control-persist`: persisted messages per second through the control
//! protocol, the path every chat message takes from a data-plane shard to
//! the database (`PersistBatch` → one transaction → `BatchPersisted`).
//!
//! Per run (one database, one batch size): start `veza-controlplane` pinned
//! to the first allowed CPU on a fresh SQLite data directory or a fresh
//! PostgreSQL database; create one user and one public room per connection
//! through the REST API (a message naming a missing room or author is
//! skipped, so both must exist); open `connections` control connections
//! over `<data_dir>/control.sock`, each saying `Hello` as one shard; then
//! each connection keeps `in_flight_per_connection` `PersistBatch` requests
//! of `batch_changes` new messages waiting (closed loop) from the start of
//! the warm-up to the end of the measured window. Batches count when their
//! send time falls in the window; latency runs from the send to
//! `BatchPersisted`, which the control plane sends only after the commit.
//! After the load, the last acknowledged seq of every room is read back with
//! `FetchHistory` (a durability sanity check), and the control plane stops.
//!
//! Each connection persists into a room of its own, as a data-plane shard
//! persists the rooms it owns, so connections share no seq counter.
//!
//! - [`protocol_client`]: the tokio client of the control protocol.
//! - [`workload`]: one client thread's connections and the closed loop.
//! - [`setup`]: databases, REST setup, the durability check.
//! - [`report`]: the report rows, table and JSON.
//! - [`cli`]: the `veza-bench control-persist` arguments.

pub mod cli;
pub mod protocol_client;
pub mod report;
pub mod setup;
pub mod workload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::load_generator::client_threads::{
    allowed_cpus, join_cpus, prepare_load, ClientPlacement, MeasurementWindow,
};
use crate::proc_stat::{machine_sample, process_sample, MachineSample, ProcError, ProcessSample};
use crate::server_process::{free_loopback_port, Readiness, ServerLaunch, ServerProcess};

use report::{finite_quotient, PersistRunReport};
use setup::{Population, SetupError, ThrowAwayPostgres};
use workload::{BatchPlan, ConnectionAssignment, PersistOutput, PersistThreadWorkload};

/// The most connections: a `Hello` announces at most 1024 shards.
pub const CONNECTIONS_MAX: usize = 1024;

/// The most batches in flight per connection: the control plane queues 64
/// batches per connection by default (`control.persist_batches_queued_max`)
/// and stops reading the connection past that.
pub const IN_FLIGHT_PER_CONNECTION_MAX: usize = 64;

/// The most changes per batch: the control plane's default
/// `control.batch_changes_max`.
pub const BATCH_CHANGES_MAX: usize = 4096;

/// The longest message text; with [`BATCH_CHANGES_MAX`] messages a frame
/// stays well under the 16 MiB frame limit.
pub const BODY_BYTES_MAX: usize = 2048;

/// How long acknowledgements may trail the end of the window before the
/// batches count as unanswered. A commit waits for an fsync, which a busy
/// disk can stretch to seconds.
const DRAIN: Duration = Duration::from_secs(5);

/// How long the control plane may take to migrate its database and become
/// ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long it may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Cheap password hashing: the benchmark registers one user and measures
/// persistence, not argon2.
const FAST_HASHING: [(&str, &str); 2] = [
    ("VEZA_AUTH_ARGON2_MEMORY_KIB", "64"),
    ("VEZA_AUTH_ARGON2_ITERATIONS", "1"),
];

/// Where the control plane keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// Embedded SQLite (WAL, `synchronous=FULL`) in a temporary data
    /// directory.
    Sqlite,
    /// A fresh database on a PostgreSQL server.
    Postgres,
}

impl Database {
    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Database::Sqlite => "sqlite",
            Database::Postgres => "postgres",
        }
    }
}

/// Everything a `control-persist` invocation asks for.
#[derive(Debug, Clone)]
pub struct ControlPersistOptions {
    /// The `veza-controlplane` binary.
    pub controlplane_bin: PathBuf,
    /// Databases to run, in order.
    pub databases: Vec<Database>,
    /// A PostgreSQL server's admin URL (a database it may create databases
    /// from); `None`: start a throw-away server with `postgres_script`.
    pub postgres_admin_url: Option<String>,
    /// `scripts/postgres-test-server.sh`.
    pub postgres_script: PathBuf,
    /// Batch sizes to run, in order.
    pub batch_sizes: Vec<usize>,
    /// Control connections per run.
    pub n_connections: usize,
    /// Batches in flight per connection.
    pub in_flight_per_connection: usize,
    /// Bytes of each message's text.
    pub body_bytes: usize,
    /// Load before measurement starts.
    pub warmup: Duration,
    /// The measured duration.
    pub duration: Duration,
    /// How many more times a noisy run may be repeated (the quietest
    /// attempt is reported).
    pub noisy_retries_max: usize,
}

impl ControlPersistOptions {
    /// The full benchmark: SQLite and PostgreSQL, batches of 1, 64 and 512,
    /// 4 connections with one batch in flight each, 1 s warm-up, 5 s.
    pub fn full(controlplane_bin: PathBuf, postgres_script: PathBuf) -> ControlPersistOptions {
        ControlPersistOptions {
            controlplane_bin,
            databases: vec![Database::Sqlite, Database::Postgres],
            postgres_admin_url: None,
            postgres_script,
            batch_sizes: vec![1, 64, 512],
            n_connections: 4,
            in_flight_per_connection: 1,
            body_bytes: 100,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            noisy_retries_max: 0,
        }
    }

    /// A run of a few seconds for tests: SQLite, batches of 64, 2
    /// connections, 0.2 s warm-up, 1 s measured.
    pub fn smoke(controlplane_bin: PathBuf, postgres_script: PathBuf) -> ControlPersistOptions {
        ControlPersistOptions {
            databases: vec![Database::Sqlite],
            batch_sizes: vec![64],
            n_connections: 2,
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            ..ControlPersistOptions::full(controlplane_bin, postgres_script)
        }
    }

    /// Checks every limit before any server starts.
    pub fn validate(&self) -> Result<(), ControlPersistError> {
        let invalid = |reason: String| Err(ControlPersistError::InvalidOptions(reason));
        if self.databases.is_empty() || self.batch_sizes.is_empty() {
            return invalid("databases and batch sizes must each name at least one".into());
        }
        if let Some(size) = self
            .batch_sizes
            .iter()
            .find(|&&size| !(1..=BATCH_CHANGES_MAX).contains(&size))
        {
            return invalid(format!("batch of {size}: must be 1..={BATCH_CHANGES_MAX}"));
        }
        if !(1..=CONNECTIONS_MAX).contains(&self.n_connections) {
            return invalid(format!("connections must be 1..={CONNECTIONS_MAX}"));
        }
        if !(1..=IN_FLIGHT_PER_CONNECTION_MAX).contains(&self.in_flight_per_connection) {
            return invalid(format!(
                "in-flight must be 1..={IN_FLIGHT_PER_CONNECTION_MAX}"
            ));
        }
        if !(1..=BODY_BYTES_MAX).contains(&self.body_bytes) {
            return invalid(format!("body must be 1..={BODY_BYTES_MAX} bytes"));
        }
        if self.duration.is_zero() {
            return invalid("duration must be positive".into());
        }
        Ok(())
    }
}

/// Why `control-persist` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ControlPersistError {
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The control plane could not be started or measured.
    #[error(transparent)]
    Server(#[from] crate::server_process::ServerError),
    /// The load could not run.
    #[error(transparent)]
    Load(#[from] crate::load_generator::client_threads::LoadError),
    /// The database, the REST setup or the durability check failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Sampling this process or the machine failed.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// Reading the CPU mask, making a directory or a runtime failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The CPUs of one run: the control plane (and a throw-away PostgreSQL) on
/// the first, the load generator on the rest.
struct Placement {
    server_cpus: Vec<usize>,
    client: ClientPlacement,
}

/// What stays up across runs: the runtime for setup and checks, and the
/// PostgreSQL server while PostgreSQL runs.
struct Session<'a> {
    options: &'a ControlPersistOptions,
    placement: Placement,
    runtime: tokio::runtime::Runtime,
    postgres: Option<ThrowAwayPostgres>,
    databases_created: usize,
}

/// Runs every (database, batch size) in order and returns one row each;
/// `progress` is told about each finished run.
pub fn run(
    options: &ControlPersistOptions,
    mut progress: impl FnMut(&PersistRunReport),
) -> Result<Vec<PersistRunReport>, ControlPersistError> {
    options.validate()?;
    let cpus = allowed_cpus()?;
    let server_cpus = cpus[..1].to_vec();
    let client = ClientPlacement::beside_server(&server_cpus, &cpus);
    let mut session = Session {
        options,
        placement: Placement {
            server_cpus,
            client,
        },
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        postgres: None,
        databases_created: 0,
    };
    let mut reports = Vec::new();
    for &database in &options.databases {
        for &batch_changes in &options.batch_sizes {
            let report = session.run_until_quiet(database, batch_changes)?;
            progress(&report);
            reports.push(report);
        }
        session.postgres = None;
    }
    Ok(reports)
}

/// Where one run's data lives; dropped (directory removed, database
/// dropped) after the run.
struct RunDatabase {
    data_dir: tempfile::TempDir,
    /// Empty for SQLite.
    database_url: String,
    /// The PostgreSQL database to drop afterwards.
    postgres_database: Option<String>,
}

impl Session<'_> {
    fn run_until_quiet(
        &mut self,
        database: Database,
        batch_changes: usize,
    ) -> Result<PersistRunReport, ControlPersistError> {
        let mut quietest = self.run_once(database, batch_changes)?;
        for attempt in 2..=self.options.noisy_retries_max + 1 {
            if !quietest.is_noisy() {
                break;
            }
            let again = self.run_once(database, batch_changes)?;
            if again.other_tasks_cpu_secs < quietest.other_tasks_cpu_secs {
                quietest = again;
            }
            quietest.attempts = attempt;
        }
        Ok(quietest)
    }

    fn run_once(
        &mut self,
        database: Database,
        batch_changes: usize,
    ) -> Result<PersistRunReport, ControlPersistError> {
        let run_database = self.prepare_database(database)?;
        let outcome = self.measure(database, &run_database, batch_changes);
        if let Some(name) = &run_database.postgres_database {
            let admin_url = self.postgres_admin_url().to_string();
            self.runtime.block_on(setup::bounded(
                "drop the database",
                setup::drop_database(&admin_url, name),
            ))?;
        }
        outcome
    }

    fn postgres_admin_url(&self) -> &str {
        match (&self.options.postgres_admin_url, &self.postgres) {
            (Some(url), _) => url,
            (None, Some(server)) => server.admin_url(),
            (None, None) => unreachable!("prepare_database starts the server first"),
        }
    }

    fn prepare_database(&mut self, database: Database) -> Result<RunDatabase, ControlPersistError> {
        let data_dir = tempfile::Builder::new()
            .prefix("veza-bench-control-")
            .tempdir()?;
        if database == Database::Sqlite {
            return Ok(RunDatabase {
                data_dir,
                database_url: String::new(),
                postgres_database: None,
            });
        }
        if self.options.postgres_admin_url.is_none() && self.postgres.is_none() {
            let cpus = join_cpus(&self.placement.server_cpus);
            self.postgres = Some(ThrowAwayPostgres::start(
                &self.options.postgres_script,
                &cpus,
            )?);
        }
        self.databases_created += 1;
        let name = format!(
            "veza_bench_{}_{}",
            std::process::id(),
            self.databases_created
        );
        let admin_url = self.postgres_admin_url().to_string();
        let database_url = self.runtime.block_on(setup::bounded(
            "create the database",
            setup::create_database(&admin_url, &name),
        ))?;
        Ok(RunDatabase {
            data_dir,
            database_url,
            postgres_database: Some(name),
        })
    }

    fn measure(
        &self,
        database: Database,
        run_database: &RunDatabase,
        batch_changes: usize,
    ) -> Result<PersistRunReport, ControlPersistError> {
        let port = free_loopback_port()?;
        let launch = self.launch(run_database, port);
        let process = ServerProcess::start(&launch)?;
        let base_url = format!("http://{}", launch.address);
        let population = self.runtime.block_on(setup::bounded(
            "create the user and rooms",
            setup::populate(&base_url, self.options.n_connections),
        ))?;
        let socket_path = run_database.data_dir.path().join("control.sock");
        let workloads = self.thread_workloads(&socket_path, &population, batch_changes);
        let prepared = prepare_load(&self.placement.client, workloads)?;
        let window =
            MeasurementWindow::starting_soon(self.options.warmup, self.options.duration, DRAIN);
        let running = prepared.start(window);
        sleep_until(window.measure_start);
        let before = CpuSamples::take(&process, self.postgres.as_ref())?;
        sleep_until(window.measure_end);
        let after = CpuSamples::take(&process, self.postgres.as_ref())?;
        let mut output = PersistOutput::default();
        for thread_output in running.join()? {
            output.merge(thread_output);
        }
        let durability = self.runtime.block_on(setup::bounded(
            "the durability check",
            setup::check_durability(&socket_path, &output.rooms),
        ))?;
        process.stop(STOP_DEADLINE)?;
        let row = RowInputs {
            database,
            batch_changes,
            window,
            output,
            cpu: after.since(&before),
            server_rss_kib: after.server.rss_kib,
            durability,
        };
        Ok(self.report_row(row))
    }

    fn launch(&self, run_database: &RunDatabase, port: u16) -> ServerLaunch {
        let data_dir = run_database.data_dir.path();
        let mut environment: Vec<(String, String)> = vec![
            ("VEZA_SERVER_LISTEN_ADDRESS".into(), "127.0.0.1".into()),
            ("VEZA_SERVER_LISTEN_PORT".into(), port.to_string()),
            (
                "VEZA_SERVER_DATA_DIR".into(),
                data_dir.display().to_string(),
            ),
            (
                "VEZA_SERVER_DATABASE_URL".into(),
                run_database.database_url.clone(),
            ),
            ("VEZA_SERVER_LOG_LEVEL".into(), "warn".into()),
        ];
        environment.extend(
            FAST_HASHING
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string())),
        );
        ServerLaunch {
            name: "veza-controlplane".into(),
            program: self.options.controlplane_bin.clone(),
            args: Vec::new(),
            environment,
            cpus: self.placement.server_cpus.clone(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            readiness: Readiness::HttpGet {
                path: "/ready".into(),
            },
            ready_timeout: READY_TIMEOUT,
            log_path: data_dir.join("controlplane.log"),
        }
    }

    /// Connections dealt round-robin over the client threads, connection
    /// `connection_idx` persisting into room `room_ids[connection_idx]`.
    fn thread_workloads(
        &self,
        socket_path: &Path,
        population: &Population,
        batch_changes: usize,
    ) -> Vec<PersistThreadWorkload> {
        let n_threads = self.placement.client.n_threads;
        let plan = BatchPlan {
            batch_changes,
            in_flight_per_connection: self.options.in_flight_per_connection,
            body_bytes: self.options.body_bytes,
            author_id: population.user_id,
        };
        (0..n_threads)
            .map(|thread_idx| PersistThreadWorkload {
                socket_path: socket_path.to_path_buf(),
                n_connections_total: self.options.n_connections,
                connections: (thread_idx..self.options.n_connections)
                    .step_by(n_threads)
                    .map(|connection_idx| ConnectionAssignment {
                        connection_idx,
                        room_id: population.room_ids[connection_idx],
                    })
                    .collect(),
                plan: plan.clone(),
            })
            .collect()
    }

    fn report_row(&self, row: RowInputs) -> PersistRunReport {
        let measured_secs = row.window.measured_secs();
        let output = &row.output;
        let messages = output.messages_acknowledged_measured;
        let all_cpu_secs = row.cpu.server_cpu_secs + row.cpu.database_cpu_secs.unwrap_or(0.0);
        let postgres_pinned = row.database == Database::Postgres && self.postgres.is_some();
        PersistRunReport {
            database: row.database.name().into(),
            batch_changes: row.batch_changes,
            connections: self.options.n_connections,
            in_flight_per_connection: self.options.in_flight_per_connection,
            body_bytes: self.options.body_bytes,
            server_cpus: join_cpus(&self.placement.server_cpus),
            database_cpus: postgres_pinned.then(|| join_cpus(&self.placement.server_cpus)),
            load_generator: self.placement.client.describe(),
            measured_secs,
            batches_sent: output.batches_sent_measured,
            batches_acknowledged: output.batches_acknowledged_measured,
            messages_acknowledged: messages,
            errors: output.errors.total(),
            error_counts: output.errors.by_kind.clone(),
            error_details: output.errors.first_detail_by_kind.clone(),
            throughput_msgs_per_s: messages as f64 / measured_secs,
            throughput_batches_per_s: output.batches_acknowledged_measured as f64 / measured_secs,
            batch_latency: output.latency.summary(),
            server_cpu_secs: row.cpu.server_cpu_secs,
            msgs_per_server_cpu_sec: finite_quotient(messages as f64, row.cpu.server_cpu_secs),
            server_rss_kib: row.server_rss_kib,
            database_cpu_secs: row.cpu.database_cpu_secs,
            msgs_per_server_and_database_cpu_sec: row
                .cpu
                .database_cpu_secs
                .and_then(|_| finite_quotient(messages as f64, all_cpu_secs)),
            load_generator_cpu_secs: row.cpu.load_generator_cpu_secs,
            other_tasks_cpu_secs: row.cpu.other_tasks_cpu_secs,
            interrupt_cpu_secs: row.cpu.interrupt_cpu_secs,
            durability: row.durability,
            attempts: 1,
        }
    }
}

/// What one run measured, before it becomes a report row.
struct RowInputs {
    database: Database,
    batch_changes: usize,
    window: MeasurementWindow,
    output: PersistOutput,
    cpu: CpuUsage,
    server_rss_kib: u64,
    durability: setup::DurabilityCheck,
}

/// CPU time of the control plane, the database server, this process and
/// the machine at one instant.
struct CpuSamples {
    server: ProcessSample,
    database_cpu_secs_by_pid: Option<HashMap<u32, f64>>,
    load_generator: ProcessSample,
    machine: MachineSample,
}

/// CPU seconds used between two [`CpuSamples`].
struct CpuUsage {
    server_cpu_secs: f64,
    database_cpu_secs: Option<f64>,
    load_generator_cpu_secs: f64,
    other_tasks_cpu_secs: f64,
    interrupt_cpu_secs: f64,
}

impl CpuSamples {
    fn take(
        server: &ServerProcess,
        postgres: Option<&ThrowAwayPostgres>,
    ) -> Result<CpuSamples, ControlPersistError> {
        Ok(CpuSamples {
            server: server.sample()?,
            database_cpu_secs_by_pid: postgres.map(ThrowAwayPostgres::cpu_secs_by_pid),
            load_generator: process_sample(std::process::id())?,
            machine: machine_sample()?,
        })
    }

    fn since(&self, before: &CpuSamples) -> CpuUsage {
        let server_cpu_secs = self.server.cpu_secs - before.server.cpu_secs;
        let database_cpu_secs = match (
            &before.database_cpu_secs_by_pid,
            &self.database_cpu_secs_by_pid,
        ) {
            (Some(before), Some(after)) => Some(setup::cpu_secs_between(before, after)),
            _ => None,
        };
        let load_generator_cpu_secs = self.load_generator.cpu_secs - before.load_generator.cpu_secs;
        let task_secs = self.machine.task_secs - before.machine.task_secs;
        let accounted_secs =
            server_cpu_secs + database_cpu_secs.unwrap_or(0.0) + load_generator_cpu_secs;
        CpuUsage {
            server_cpu_secs,
            database_cpu_secs,
            load_generator_cpu_secs,
            // Ticks of processes and of the machine are rounded separately,
            // so the difference can dip a tick below zero.
            other_tasks_cpu_secs: (task_secs - accounted_secs).max(0.0),
            interrupt_cpu_secs: self.machine.interrupt_secs - before.machine.interrupt_secs,
        }
    }
}

fn sleep_until(instant: Instant) {
    std::thread::sleep(instant.saturating_duration_since(Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ControlPersistOptions {
        ControlPersistOptions::full("veza-controlplane".into(), "pg.sh".into())
    }

    #[test]
    fn the_full_and_smoke_options_are_valid() {
        options().validate().unwrap();
        ControlPersistOptions::smoke("a".into(), "b".into())
            .validate()
            .unwrap();
    }

    /// One way to break the options.
    type Breakage = fn(&mut ControlPersistOptions);

    #[test]
    fn each_limit_is_enforced_with_its_name() {
        let cases: [(Breakage, &str); 6] = [
            (|o| o.batch_sizes = vec![0], "batch of 0"),
            (|o| o.batch_sizes = vec![BATCH_CHANGES_MAX + 1], "batch of"),
            (|o| o.n_connections = CONNECTIONS_MAX + 1, "connections"),
            (|o| o.in_flight_per_connection = 0, "in-flight"),
            (|o| o.body_bytes = BODY_BYTES_MAX + 1, "body"),
            (|o| o.databases.clear(), "databases"),
        ];
        for (change, expected) in cases {
            let mut invalid = options();
            change(&mut invalid);
            let error = invalid.validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
