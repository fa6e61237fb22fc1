//! What `control-persist` reports: one [`PersistRunReport`] per (database,
//! batch size), the machine and the command line, as a human table and as
//! JSON.
//!
//! Like [`crate::report`], a report never holds NaN or infinity: a quotient
//! whose divisor is zero is `None` (JSON `null`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::load_generator::latency::LatencySummary;
use crate::report::{MachineDescription, NOISY_RUN_CPU_FRACTION};

use super::setup::DurabilityCheck;

/// One control plane process under one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistRunReport {
    /// `sqlite` or `postgres`.
    pub database: String,
    /// Changes (new messages) per `PersistBatch`.
    pub batch_changes: usize,
    /// Control connections (each one data-plane shard with its own room).
    pub connections: usize,
    /// Batches in flight per connection (closed loop).
    pub in_flight_per_connection: usize,
    /// Bytes of each message's text.
    pub body_bytes: usize,
    /// The CPUs the control plane was pinned to, as given to `taskset -c`.
    pub server_cpus: String,
    /// The CPUs the throw-away PostgreSQL server was pinned to; `None` for
    /// SQLite (inside the control plane) and for a server given by URL.
    pub database_cpus: Option<String>,
    /// Where the load generator ran.
    pub load_generator: String,
    /// The measured window in seconds (warm-up excluded).
    pub measured_secs: f64,
    /// Batches sent in the window.
    pub batches_sent: u64,
    /// Of those, batches acknowledged with every change persisted.
    pub batches_acknowledged: u64,
    /// Messages in the acknowledged batches.
    pub messages_acknowledged: u64,
    /// All errors of the run (warm-up included).
    pub errors: u64,
    /// Errors by kind.
    pub error_counts: BTreeMap<String, u64>,
    /// The first explanation seen of each kind of error.
    pub error_details: BTreeMap<String, String>,
    /// `messages_acknowledged / measured_secs`.
    pub throughput_msgs_per_s: f64,
    /// `batches_acknowledged / measured_secs`.
    pub throughput_batches_per_s: f64,
    /// Send → `BatchPersisted` per batch, in microseconds.
    pub batch_latency: LatencySummary,
    /// The control plane's user + system CPU seconds over the window.
    pub server_cpu_secs: f64,
    /// `messages_acknowledged / server_cpu_secs`.
    pub msgs_per_server_cpu_sec: Option<f64>,
    /// The control plane's resident set at the end of the window, in KiB.
    pub server_rss_kib: u64,
    /// CPU seconds of the throw-away PostgreSQL server's processes over the
    /// window; `None` for SQLite and for a server given by URL.
    pub database_cpu_secs: Option<f64>,
    /// `messages_acknowledged / (server_cpu_secs + database_cpu_secs)`.
    pub msgs_per_server_and_database_cpu_sec: Option<f64>,
    /// The load generator's CPU seconds over the window.
    pub load_generator_cpu_secs: f64,
    /// CPU seconds of every other task on the machine over the window.
    pub other_tasks_cpu_secs: f64,
    /// irq + softirq CPU seconds over the window.
    pub interrupt_cpu_secs: f64,
    /// The last acknowledged seq of every room read back after the run.
    pub durability: DurabilityCheck,
    /// How many times this configuration ran (more than 1 after noisy runs).
    pub attempts: usize,
}

impl PersistRunReport {
    /// Whether other processes used enough CPU during the window to
    /// disturb the numbers.
    pub fn is_noisy(&self) -> bool {
        self.other_tasks_cpu_secs > NOISY_RUN_CPU_FRACTION * self.measured_secs
    }
}

/// A whole invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlPersistReport {
    /// `control-persist`.
    pub scenario: String,
    /// The command line, as given.
    pub command_line: Vec<String>,
    /// The machine.
    pub machine: MachineDescription,
    /// One row per run, in the order they ran.
    pub runs: Vec<PersistRunReport>,
}

impl ControlPersistReport {
    /// Writes the report as pretty JSON to `path`.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }
}

/// `numerator / denominator`, or `None` when that is not a finite number.
pub fn finite_quotient(numerator: f64, denominator: f64) -> Option<f64> {
    let quotient = numerator / denominator;
    (quotient.is_finite() && denominator > 0.0).then_some(quotient)
}

/// One line per run.
pub fn render_table(runs: &[PersistRunReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>5} {:>5} {:>4} {:>9} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>6} {:>6} {:>9} {:>8} {:>12} {:>7} {:>6} {:>7}",
        "database", "batch", "conns", "infl", "msg/s", "batch/s", "p50us", "p90us", "p99us",
        "p99.9us", "max_us", "errors", "cpu_s", "msg/cpu_s", "db_cpu_s", "msg/all_cpu_s",
        "rss_MiB", "load_s", "other_s"
    );
    for run in runs {
        let latency = &run.batch_latency;
        let _ = writeln!(
            out,
            "{:<8} {:>5} {:>5} {:>4} {:>9.0} {:>8.0} {:>7} {:>7} {:>7} {:>8} {:>8} {:>6} {:>6.2} {:>9} {:>8} {:>12} {:>7.1} {:>6.2} {:>7.2}",
            run.database,
            run.batch_changes,
            run.connections,
            run.in_flight_per_connection,
            run.throughput_msgs_per_s,
            run.throughput_batches_per_s,
            latency.p50_us,
            latency.p90_us,
            latency.p99_us,
            latency.p999_us,
            latency.max_us,
            run.errors,
            run.server_cpu_secs,
            optional(run.msgs_per_server_cpu_sec, 0),
            optional(run.database_cpu_secs, 2),
            optional(run.msgs_per_server_and_database_cpu_sec, 0),
            run.server_rss_kib as f64 / 1024.0,
            run.load_generator_cpu_secs,
            run.other_tasks_cpu_secs,
        );
    }
    out
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |value| format!("{value:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quotient_over_zero_is_none_not_infinite() {
        assert_eq!(finite_quotient(10.0, 4.0), Some(2.5));
        assert_eq!(finite_quotient(10.0, 0.0), None);
        assert_eq!(finite_quotient(0.0, 0.0), None);
    }
}
