//! `chat-fanout`: R rooms × S subscribers per room, P publishers per room
//! publishing at a fixed total open-loop rate, on Veza (chat protocol v1 on
//! `GET /v1/chat`) and on nats-server (NATS over WebSocket), one fresh set of
//! server processes per (shard count, server).
//!
//! Per run: start the servers (see [`crate::chat_servers`] for placement);
//! for Veza, create the admin, unthrottled runtime settings, the users, the
//! rooms and the memberships through REST, then start the data plane and
//! check that it applies the settings; connect, authenticate and subscribe
//! every connection; publish for the warm-up, sample the servers' CPU,
//! publish for the measured window, sample again; stop publishing and let
//! deliveries drain; stop the servers.
//!
//! Latency is delivery time minus the INTENDED send time stamped in the
//! body ([`timetable`]); deliveries count when that time falls in the
//! measured window. Lost = expected deliveries (messages written and not
//! refused, times subscribers per room) minus first copies received by the
//! drain deadline.
//!
//! - [`timetable`]: publisher schedules and body stamps (sans-IO).
//! - [`workload`]: who connects where; per-thread counters.
//! - [`veza_load`], [`nats_load`]: one client thread's connections on each
//!   server.
//! - [`report`]: rows, ratios, table, JSON.
//! - [`cli`]: `veza-bench chat-fanout` arguments.

pub mod cli;
pub mod nats_load;
pub mod report;
pub mod timetable;
pub mod veza_load;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chat_servers::nats::NatsServer;
use crate::chat_servers::population::{
    populate, wait_until_settings_applied, Population, PopulationPlan,
};
use crate::chat_servers::veza::{VezaLaunch, VezaServers};
use crate::chat_servers::{self, ChatServerKind, ChatServersError, ServerSamples};
use crate::control_api::RuntimeSettings;
use crate::load_generator::client_threads::{
    allowed_cpus, join_cpus, prepare_load, ClientPlacement, LoadError, MeasurementWindow,
    ThreadWorkload,
};
use crate::proc_stat::{
    clock_ticks_per_second, machine_sample, process_sample, MachineSample, ProcError, ProcessSample,
};
use crate::server_process::ServerProcess;

use report::{DataplaneCounters, FanoutRunReport, DATAPLANE_COUNTER_SERIES};
use timetable::{PUBLISHERS_MAX, STAMP_BYTES};
use workload::{thread_share, FanoutShape, FanoutThreadOutput};

/// The largest body: the control plane's highest `message_bytes_max`.
pub const PAYLOAD_BYTES_MAX: usize = 65_536;

/// The most connections the load generator opens (it may hold 20,000
/// files; idle-connections spreads larger counts over processes).
pub const CONNECTIONS_MAX: usize = 16_000;

/// The highest rate one Veza connection may send at
/// (`messages_per_second` tops out at 10,000).
pub const RATE_PER_PUBLISHER_MAX: u64 = 10_000;

/// Distinct users when `--users` is not given: one per connection up to
/// this many (registering and logging in is two REST calls each).
pub const USERS_DEFAULT_MAX: usize = 1000;

/// How long deliveries may trail the end of the window.
const DRAIN: Duration = Duration::from_secs(3);

/// How long the data plane may take to apply the runtime settings.
const SETTINGS_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a `chat-fanout` invocation asks for.
#[derive(Debug, Clone)]
pub struct ChatFanoutOptions {
    /// Servers to run, in order.
    pub servers: Vec<ChatServerKind>,
    /// `veza-dataplane`.
    pub dataplane_bin: PathBuf,
    /// `veza-controlplane`.
    pub controlplane_bin: PathBuf,
    /// `nats-server`.
    pub nats_bin: PathBuf,
    /// Shard counts (nats-server: `GOMAXPROCS`), each pinned to CPUs 0..n.
    pub shard_counts: Vec<usize>,
    /// Rooms.
    pub n_rooms: usize,
    /// Subscribers per room.
    pub subscribers_per_room: usize,
    /// Publishers per room.
    pub publishers_per_room: usize,
    /// Distinct users; `None`: one per connection up to
    /// [`USERS_DEFAULT_MAX`].
    pub n_users: Option<usize>,
    /// Messages per second over all publishers.
    pub rate_msgs_per_s: u64,
    /// Bytes per message body.
    pub payload_bytes: usize,
    /// Load before measurement.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// How many more times a noisy run may be repeated.
    pub noisy_retries_max: usize,
}

/// Why `chat-fanout` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ChatFanoutError {
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The servers could not be started or set up.
    #[error(transparent)]
    Servers(#[from] ChatServersError),
    /// The load could not run; the servers' log tails follow.
    #[error("{source}\n{server_logs}")]
    Load {
        /// What failed.
        source: LoadError,
        /// The end of the servers' logs.
        server_logs: String,
    },
    /// Sampling this process or the machine failed.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// A runtime or the CPU mask could not be had.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ChatFanoutOptions {
    /// The load's shape.
    pub fn shape(&self) -> FanoutShape {
        let n_connections = self.n_rooms * (self.subscribers_per_room + self.publishers_per_room);
        FanoutShape {
            n_rooms: self.n_rooms,
            subscribers_per_room: self.subscribers_per_room,
            publishers_per_room: self.publishers_per_room,
            n_users: self
                .n_users
                .unwrap_or_else(|| n_connections.min(USERS_DEFAULT_MAX)),
            rate_msgs_per_s: self.rate_msgs_per_s,
            payload_bytes: self.payload_bytes,
        }
    }

    /// The settings Veza runs under: no rate limits, bodies up to the
    /// payload (at least 4096 bytes, which also tells the applied settings
    /// from the default 4000).
    pub fn settings(&self) -> RuntimeSettings {
        RuntimeSettings::unthrottled(self.payload_bytes.max(4096) as i64)
    }

    /// Checks every limit before any server starts.
    pub fn validate(&self, n_cpus_allowed: usize) -> Result<(), ChatFanoutError> {
        let invalid = |reason: String| Err(ChatFanoutError::InvalidOptions(reason));
        if self.servers.is_empty() || self.shard_counts.is_empty() {
            return invalid("servers and shards must each name at least one".into());
        }
        if let Some(shards) = self
            .shard_counts
            .iter()
            .find(|&&n| n == 0 || n > n_cpus_allowed)
        {
            return invalid(format!("{shards} shards: must be 1..={n_cpus_allowed}"));
        }
        if self.n_rooms == 0 || self.subscribers_per_room == 0 || self.publishers_per_room == 0 {
            return invalid("rooms, subscribers and publishers per room must be at least 1".into());
        }
        let shape = self.shape();
        if shape.n_connections() > CONNECTIONS_MAX {
            return invalid(format!(
                "{} connections: at most {CONNECTIONS_MAX} from one load generator",
                shape.n_connections()
            ));
        }
        if shape.n_publishers() > PUBLISHERS_MAX {
            return invalid(format!("at most {PUBLISHERS_MAX} publishers"));
        }
        if !(STAMP_BYTES..=PAYLOAD_BYTES_MAX).contains(&self.payload_bytes) {
            return invalid(format!(
                "payload must be {STAMP_BYTES}..={PAYLOAD_BYTES_MAX} bytes"
            ));
        }
        if self.rate_msgs_per_s == 0
            || self.rate_msgs_per_s > RATE_PER_PUBLISHER_MAX * shape.n_publishers() as u64
        {
            return invalid(format!(
                "rate must be 1..={} msg/s: at most {RATE_PER_PUBLISHER_MAX} per publisher",
                RATE_PER_PUBLISHER_MAX * shape.n_publishers() as u64
            ));
        }
        if shape.n_users == 0 || shape.n_users > shape.n_connections() {
            return invalid("users must be 1..=connections".into());
        }
        let plan = self.population_plan();
        if !plan.can_own_every_room() {
            return invalid("too many rooms for the users to own (100 each)".into());
        }
        if self.duration.is_zero() {
            return invalid("duration must be positive".into());
        }
        Ok(())
    }

    fn population_plan(&self) -> PopulationPlan {
        let shape = self.shape();
        PopulationPlan {
            n_users: shape.n_users,
            n_rooms: shape.n_rooms,
            memberships: shape.memberships(),
            settings: self.settings(),
        }
    }
}

/// Runs every (shard count, server) in order; one row each.
pub fn run(
    options: &ChatFanoutOptions,
    mut progress: impl FnMut(&FanoutRunReport),
) -> Result<Vec<FanoutRunReport>, ChatFanoutError> {
    let cpus = allowed_cpus()?;
    options.validate(cpus.len())?;
    let mut reports = Vec::new();
    for &shards in &options.shard_counts {
        for &server in &options.servers {
            let mut quietest = run_once(options, server, shards, &cpus)?;
            for attempt in 2..=options.noisy_retries_max + 1 {
                if !quietest.is_noisy() {
                    break;
                }
                let again = run_once(options, server, shards, &cpus)?;
                if again.disturbed_cpu_secs() < quietest.disturbed_cpu_secs() {
                    quietest = again;
                }
                quietest.attempts = attempt;
            }
            progress(&quietest);
            reports.push(quietest);
        }
    }
    Ok(reports)
}

/// Where a run's processes go.
struct RunPlacement {
    server_cpus: Vec<usize>,
    control_plane_cpus: Vec<usize>,
    client: ClientPlacement,
}

fn run_once(
    options: &ChatFanoutOptions,
    server: ChatServerKind,
    shards: usize,
    allowed: &[usize],
) -> Result<FanoutRunReport, ChatFanoutError> {
    let (server_cpus, control_plane_cpus) = chat_servers::server_cpus(shards, allowed);
    let placement = RunPlacement {
        client: ClientPlacement::beside_server(&server_cpus, allowed),
        server_cpus,
        control_plane_cpus,
    };
    match server {
        ChatServerKind::Veza => run_veza(options, &placement),
        ChatServerKind::Nats => run_nats(options, &placement),
    }
}

fn run_veza(
    options: &ChatFanoutOptions,
    placement: &RunPlacement,
) -> Result<FanoutRunReport, ChatFanoutError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let launch = VezaLaunch {
        dataplane_bin: options.dataplane_bin.clone(),
        controlplane_bin: options.controlplane_bin.clone(),
        shard_cpus: placement.server_cpus.clone(),
        controlplane_cpus: placement.control_plane_cpus.clone(),
        dataplane_environment: Vec::new(),
    };
    let mut servers = VezaServers::start_control_plane(&launch)?;
    let plan = options.population_plan();
    let population: Population = runtime.block_on(populate(servers.api(), &plan))?;
    servers.start_data_plane()?;
    let chat_url = servers.chat_url();
    runtime.block_on(wait_until_settings_applied(
        &chat_url,
        &population.admin.access_token,
        plan.settings.message_bytes_max as u32,
        placement.server_cpus.len() * 2,
        SETTINGS_TIMEOUT,
    ))?;
    let shape = options.shape();
    let roles = shape.connections();
    let tokens: Arc<Vec<String>> = Arc::new(
        population
            .users
            .iter()
            .map(|session| session.access_token.clone())
            .collect(),
    );
    let n_threads = placement.client.n_threads;
    let workloads = (0..n_threads)
        .map(|thread_idx| veza_load::VezaThreadWorkload {
            chat_url: chat_url.clone(),
            shape,
            roles: thread_share(&roles, thread_idx, n_threads),
            tokens: Arc::clone(&tokens),
            room_ids: population.room_ids.clone(),
        })
        .collect();
    let counters_before = dataplane_counters(&servers);
    let measured = measure(
        options,
        &placement.client,
        workloads,
        servers.dataplane(),
        Some(servers.controlplane()),
    )
    .map_err(|error| error.with_logs(|| servers.log_tails()))?;
    let counters_after = dataplane_counters(&servers);
    servers.stop()?;
    let mut row = report_row(options, ChatServerKind::Veza, placement, measured);
    row.dataplane_counters = counters_before.zip(counters_after).map(|(before, after)| {
        DataplaneCounters::from_differences(std::array::from_fn(|idx| after[idx] - before[idx]))
    });
    Ok(row)
}

fn run_nats(
    options: &ChatFanoutOptions,
    placement: &RunPlacement,
) -> Result<FanoutRunReport, ChatFanoutError> {
    let shape = options.shape();
    let server = NatsServer::start(
        &options.nats_bin,
        &placement.server_cpus,
        shape.n_connections() + 64,
    )?;
    let roles = shape.connections();
    let n_threads = placement.client.n_threads;
    let workloads = (0..n_threads)
        .map(|thread_idx| nats_load::NatsThreadWorkload {
            websocket_url: server.websocket_url(),
            shape,
            roles: thread_share(&roles, thread_idx, n_threads),
        })
        .collect();
    let measured = measure(
        options,
        &placement.client,
        workloads,
        server.process(),
        None,
    )
    .map_err(|error| error.with_logs(String::new))?;
    server.stop()?;
    Ok(report_row(
        options,
        ChatServerKind::Nats,
        placement,
        measured,
    ))
}

/// The data plane's [`DATAPLANE_COUNTER_SERIES`] now.
fn dataplane_counters(servers: &VezaServers) -> Option<[f64; 6]> {
    let mut values = [0.0; 6];
    for (value, name) in values.iter_mut().zip(DATAPLANE_COUNTER_SERIES) {
        *value = servers.dataplane_metric_sum(name)?;
    }
    Some(values)
}

/// What one run measured.
struct Measured {
    window: MeasurementWindow,
    output: FanoutThreadOutput,
    servers_before: ServerSamples,
    servers_after: ServerSamples,
    load_generator_before: ProcessSample,
    load_generator_after: ProcessSample,
    machine_before: MachineSample,
    machine_after: MachineSample,
}

/// A failure while measuring, before the servers' logs are attached.
enum MeasureError {
    Load(LoadError),
    Other(ChatFanoutError),
}

impl MeasureError {
    fn with_logs(self, logs: impl FnOnce() -> String) -> ChatFanoutError {
        match self {
            MeasureError::Load(source) => ChatFanoutError::Load {
                source,
                server_logs: logs(),
            },
            MeasureError::Other(error) => error,
        }
    }
}

impl From<ChatServersError> for MeasureError {
    fn from(error: ChatServersError) -> Self {
        MeasureError::Other(error.into())
    }
}

impl From<ProcError> for MeasureError {
    fn from(error: ProcError) -> Self {
        MeasureError::Other(error.into())
    }
}

fn measure<W: ThreadWorkload<Output = FanoutThreadOutput>>(
    options: &ChatFanoutOptions,
    client: &ClientPlacement,
    workloads: Vec<W>,
    fanout: &ServerProcess,
    control_plane: Option<&ServerProcess>,
) -> Result<Measured, MeasureError> {
    let prepared = prepare_load(client, workloads).map_err(MeasureError::Load)?;
    let window = MeasurementWindow::starting_soon(options.warmup, options.duration, DRAIN);
    let running = prepared.start(window);
    sleep_until(window.measure_start);
    let servers_before =
        chat_servers::sample(fanout, control_plane).map_err(ChatServersError::from)?;
    let load_generator_before = process_sample(std::process::id())?;
    let machine_before = machine_sample()?;
    sleep_until(window.measure_end);
    let servers_after =
        chat_servers::sample(fanout, control_plane).map_err(ChatServersError::from)?;
    let load_generator_after = process_sample(std::process::id())?;
    let machine_after = machine_sample()?;
    let mut output = FanoutThreadOutput::default();
    for thread_output in running.join().map_err(MeasureError::Load)? {
        output.merge(&thread_output);
    }
    Ok(Measured {
        window,
        output,
        servers_before,
        servers_after,
        load_generator_before,
        load_generator_after,
        machine_before,
        machine_after,
    })
}

fn report_row(
    options: &ChatFanoutOptions,
    server: ChatServerKind,
    placement: &RunPlacement,
    measured: Measured,
) -> FanoutRunReport {
    let shape = options.shape();
    let output = &measured.output;
    let measured_secs = measured.window.measured_secs();
    let server_cpu_secs =
        in_ticks(measured.servers_after.fanout.cpu_secs - measured.servers_before.fanout.cpu_secs);
    let control_plane_cpu_secs = measured
        .servers_after
        .control_plane
        .zip(measured.servers_before.control_plane)
        .map(|(after, before)| in_ticks(after.cpu_secs - before.cpu_secs));
    let load_generator_cpu_secs =
        in_ticks(measured.load_generator_after.cpu_secs - measured.load_generator_before.cpu_secs);
    let machine_task_secs =
        in_ticks(measured.machine_after.task_secs - measured.machine_before.task_secs);
    let accounted =
        server_cpu_secs + control_plane_cpu_secs.unwrap_or(0.0) + load_generator_cpu_secs;
    let expected = (output.sent_total.saturating_sub(output.rejected_total()))
        * shape.subscribers_per_room as u64;
    let per_cpu =
        |cpu_secs: f64| (cpu_secs > 0.0).then(|| output.deliveries_measured as f64 / cpu_secs);
    let is_veza = server == ChatServerKind::Veza;
    FanoutRunReport {
        server: server.name().into(),
        shards: placement.server_cpus.len(),
        server_cpus: join_cpus(&placement.server_cpus),
        control_plane_cpus: is_veza.then(|| join_cpus(&placement.control_plane_cpus)),
        load_generator: placement.client.describe(),
        rooms: shape.n_rooms,
        subscribers_per_room: shape.subscribers_per_room,
        publishers_per_room: shape.publishers_per_room,
        connections: shape.n_connections(),
        users: if is_veza { shape.n_users } else { 0 },
        rate_msgs_per_s: shape.rate_msgs_per_s,
        payload_bytes: shape.payload_bytes,
        measured_secs,
        messages_sent_total: output.sent_total,
        messages_sent_measured: output.sent_measured,
        messages_acknowledged_total: output.acknowledged_total,
        messages_rejected_by_code: output.rejected_by_code.clone(),
        deliveries_expected_total: expected,
        deliveries_received_total: output.deliveries_total,
        deliveries_lost: expected.saturating_sub(output.deliveries_total),
        duplicates: output.duplicates,
        foreign_messages: output.foreign_messages,
        deliveries_measured: output.deliveries_measured,
        deliveries_per_s: output.deliveries_measured as f64 / measured_secs,
        latency: output.latency.summary(),
        ack_latency: is_veza.then(|| output.ack_latency.summary()),
        server_cpu_secs,
        deliveries_per_server_cpu_sec: per_cpu(server_cpu_secs),
        control_plane_cpu_secs,
        deliveries_per_all_server_cpu_sec: per_cpu(
            server_cpu_secs + control_plane_cpu_secs.unwrap_or(0.0),
        ),
        server_rss_kib: measured.servers_after.fanout.rss_kib,
        control_plane_rss_kib: measured
            .servers_after
            .control_plane
            .map(|sample| sample.rss_kib),
        load_generator_cpu_secs,
        // Ticks of processes and of the machine are rounded separately, so
        // the difference can dip a tick below zero.
        other_tasks_cpu_secs: in_ticks((machine_task_secs - accounted).max(0.0)),
        interrupt_cpu_secs: in_ticks(
            measured.machine_after.interrupt_secs - measured.machine_before.interrupt_secs,
        ),
        steal_cpu_secs: in_ticks(
            measured.machine_after.steal_secs - measured.machine_before.steal_secs,
        ),
        failed_connections: output.failed_connections,
        first_failure: output.first_failure.clone(),
        dataplane_counters: None,
        attempts: 1,
    }
}

/// Rounds a difference of tick counts to whole ticks.
fn in_ticks(secs: f64) -> f64 {
    let ticks_per_second = clock_ticks_per_second();
    (secs * ticks_per_second).round() / ticks_per_second
}

fn sleep_until(instant: Instant) {
    std::thread::sleep(instant.saturating_duration_since(Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ChatFanoutOptions {
        ChatFanoutOptions {
            servers: vec![ChatServerKind::Veza, ChatServerKind::Nats],
            dataplane_bin: "veza-dataplane".into(),
            controlplane_bin: "veza-controlplane".into(),
            nats_bin: "nats-server".into(),
            shard_counts: vec![1],
            n_rooms: 2,
            subscribers_per_room: 50,
            publishers_per_room: 1,
            n_users: None,
            rate_msgs_per_s: 1000,
            payload_bytes: 100,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            noisy_retries_max: 0,
        }
    }

    #[test]
    fn the_small_run_of_the_issue_is_valid() {
        let options = options();
        options.validate(2).unwrap();
        let shape = options.shape();
        assert_eq!(shape.n_connections(), 102);
        assert_eq!(shape.n_users, 102);
        assert_eq!(options.settings().message_bytes_max, 4096);
    }

    /// One way to break the options.
    type Breakage = fn(&mut ChatFanoutOptions);

    #[test]
    fn each_limit_is_enforced_with_its_name() {
        let cases: [(Breakage, &str); 7] = [
            (|o| o.shard_counts = vec![3], "3 shards"),
            (|o| o.n_rooms = 0, "rooms"),
            (|o| o.payload_bytes = STAMP_BYTES - 1, "payload"),
            (|o| o.rate_msgs_per_s = 20_001, "per publisher"),
            (|o| o.subscribers_per_room = CONNECTIONS_MAX, "connections"),
            (|o| o.n_users = Some(0), "users"),
            (
                |o| {
                    o.n_rooms = 300;
                    o.subscribers_per_room = 1;
                    o.n_users = Some(1);
                },
                "own",
            ),
        ];
        for (change, expected) in cases {
            let mut invalid = options();
            change(&mut invalid);
            let error = invalid.validate(2).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
