//! What `chat-fanout` reports: one row per server run, Veza over NATS per
//! shard count, the tables, and the JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::load_generator::latency::LatencySummary;
use crate::report::{finite_ratio, MachineDescription, NOISY_RUN_CPU_FRACTION};

/// One server under one fan-out load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutRunReport {
    /// `veza` or `nats`.
    pub server: String,
    /// Data-plane shards, or nats-server's `GOMAXPROCS`.
    pub shards: usize,
    /// The CPUs the fanning-out process was pinned to.
    pub server_cpus: String,
    /// The CPUs of Veza's control plane (empty: unpinned); `None` for NATS.
    pub control_plane_cpus: Option<String>,
    /// Where the load generator ran.
    pub load_generator: String,
    /// Rooms.
    pub rooms: usize,
    /// Subscribers per room.
    pub subscribers_per_room: usize,
    /// Publishers per room.
    pub publishers_per_room: usize,
    /// All connections.
    pub connections: usize,
    /// Distinct users (Veza).
    pub users: usize,
    /// The fixed total publishing rate.
    pub rate_msgs_per_s: u64,
    /// Bytes of each message body.
    pub payload_bytes: usize,
    /// The measured window, seconds.
    pub measured_secs: f64,
    /// Messages written by publishers, over the run.
    pub messages_sent_total: u64,
    /// Of those, intended for the measured window.
    pub messages_sent_measured: u64,
    /// Messages acknowledged with `Sent` (Veza; 0 for NATS, which
    /// acknowledges nothing).
    pub messages_acknowledged_total: u64,
    /// Messages the server refused, by error code.
    pub messages_rejected_by_code: BTreeMap<String, u64>,
    /// `(sent − refused) × subscribers per room`: what should arrive.
    pub deliveries_expected_total: u64,
    /// First copies that arrived by the drain deadline.
    pub deliveries_received_total: u64,
    /// `expected − received`, never negative.
    pub deliveries_lost: u64,
    /// Repeated or out-of-order copies.
    pub duplicates: u64,
    /// Messages that belonged to no publisher of the subscriber's room.
    pub foreign_messages: u64,
    /// Deliveries of messages intended for the measured window.
    pub deliveries_measured: u64,
    /// `deliveries_measured / measured_secs`.
    pub deliveries_per_s: f64,
    /// Delivery latency (receipt − intended send), measured messages.
    pub latency: LatencySummary,
    /// Acknowledgement latency (`Sent` − intended send); `None` for NATS.
    pub ack_latency: Option<LatencySummary>,
    /// CPU seconds of the data plane or nats-server over the window.
    pub server_cpu_secs: f64,
    /// `deliveries_measured / server_cpu_secs`.
    pub deliveries_per_server_cpu_sec: Option<f64>,
    /// CPU seconds of Veza's control plane over the window.
    pub control_plane_cpu_secs: Option<f64>,
    /// Deliveries per CPU second of every server process (data plane and
    /// control plane for Veza).
    pub deliveries_per_all_server_cpu_sec: Option<f64>,
    /// RSS of the data plane or nats-server at the end of the window, KiB.
    pub server_rss_kib: u64,
    /// RSS of Veza's control plane, KiB.
    pub control_plane_rss_kib: Option<u64>,
    /// The load generator's CPU seconds over the window.
    pub load_generator_cpu_secs: f64,
    /// CPU seconds of every other task on the machine over the window.
    pub other_tasks_cpu_secs: f64,
    /// irq + softirq seconds over the window.
    pub interrupt_cpu_secs: f64,
    /// Steal seconds over the window.
    pub steal_cpu_secs: f64,
    /// Connections that failed during the run.
    pub failed_connections: u64,
    /// The first failure, as text.
    pub first_failure: Option<String>,
    /// What the data plane's own counters say about the run (Veza).
    pub dataplane_counters: Option<DataplaneCounters>,
    /// How many times this configuration ran (noisy retries).
    pub attempts: usize,
}

/// Differences of the data plane's `/metrics` counters from before the
/// clients connect to after the drain, summed over shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DataplaneCounters {
    /// `veza_chat_messages_sequenced_total`.
    pub messages_sequenced: f64,
    /// `veza_chat_deliveries_total` (event frames queued to subscribers).
    pub deliveries: f64,
    /// `veza_chat_persist_batches_total`.
    pub persist_batches: f64,
    /// Messages per persistence batch: the group commit's batch size.
    pub messages_per_persist_batch: Option<f64>,
    /// `veza_chat_persist_failures_total`.
    pub persist_failures: f64,
    /// `veza_limit_hits_total` (every limit).
    pub limit_hits: f64,
    /// `veza_ring_full_total`.
    pub ring_full: f64,
}

/// The counters [`DataplaneCounters`] is made of, in field order.
pub const DATAPLANE_COUNTER_SERIES: [&str; 6] = [
    "veza_chat_messages_sequenced_total",
    "veza_chat_deliveries_total",
    "veza_chat_persist_batches_total",
    "veza_chat_persist_failures_total",
    "veza_limit_hits_total",
    "veza_ring_full_total",
];

impl DataplaneCounters {
    /// The counters from the differences of [`DATAPLANE_COUNTER_SERIES`].
    pub fn from_differences(values: [f64; 6]) -> DataplaneCounters {
        let [messages_sequenced, deliveries, persist_batches, persist_failures, limit_hits, ring_full] =
            values;
        DataplaneCounters {
            messages_sequenced,
            deliveries,
            persist_batches,
            messages_per_persist_batch: (persist_batches > 0.0)
                .then(|| messages_sequenced / persist_batches),
            persist_failures,
            limit_hits,
            ring_full,
        }
    }
}

impl FanoutRunReport {
    /// Whether other processes or guests disturbed the window.
    pub fn is_noisy(&self) -> bool {
        self.disturbed_cpu_secs() > NOISY_RUN_CPU_FRACTION * self.measured_secs
    }

    /// CPU seconds taken from this run by other processes or guests.
    pub fn disturbed_cpu_secs(&self) -> f64 {
        self.other_tasks_cpu_secs + self.steal_cpu_secs
    }
}

/// Veza against nats-server at one shard count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutRatio {
    /// Shards of both.
    pub shards: usize,
    /// Veza's deliveries per data-plane CPU second.
    pub veza_deliveries_per_server_cpu_sec: Option<f64>,
    /// nats-server's deliveries per CPU second.
    pub nats_deliveries_per_server_cpu_sec: Option<f64>,
    /// Veza over NATS, data plane alone: the headline.
    pub veza_over_nats: Option<f64>,
    /// Veza (data plane + control plane) over NATS.
    pub veza_with_control_plane_over_nats: Option<f64>,
}

/// Pairs every NATS run with the Veza run of the same shard count.
pub fn ratios(runs: &[FanoutRunReport]) -> Vec<FanoutRatio> {
    runs.iter()
        .filter(|run| run.server == "nats")
        .filter_map(|nats| {
            let veza = runs
                .iter()
                .find(|run| run.server == "veza" && run.shards == nats.shards)?;
            Some(FanoutRatio {
                shards: nats.shards,
                veza_deliveries_per_server_cpu_sec: veza.deliveries_per_server_cpu_sec,
                nats_deliveries_per_server_cpu_sec: nats.deliveries_per_server_cpu_sec,
                veza_over_nats: finite_ratio(
                    veza.deliveries_per_server_cpu_sec,
                    nats.deliveries_per_server_cpu_sec,
                ),
                veza_with_control_plane_over_nats: finite_ratio(
                    veza.deliveries_per_all_server_cpu_sec,
                    nats.deliveries_per_server_cpu_sec,
                ),
            })
        })
        .collect()
}

/// A whole `chat-fanout` invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutReport {
    /// `chat-fanout`.
    pub scenario: String,
    /// The command line.
    pub command_line: Vec<String>,
    /// The machine.
    pub machine: MachineDescription,
    /// One row per run.
    pub runs: Vec<FanoutRunReport>,
    /// Veza over NATS per shard count.
    pub ratios: Vec<FanoutRatio>,
}

impl FanoutReport {
    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }
}

/// The human table, one line per run, then the ratios.
pub fn render(report: &FanoutReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:>6} {:>5} {:>9} {:>7} {:>6} {:>10} {:>10} {:>6} {:>4} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>6} {:>6} {:>11} {:>7} {:>7} {:>7}",
        "server", "shards", "rooms", "subs/room", "rate", "bytes", "deliv/s", "delivered", "lost", "dup", "p50us",
        "p90us", "p99us", "p99.9us", "max_us", "ack_p99", "cpu_s", "cp_s", "deliv/cpu_s", "rss_MiB", "load_s", "other_s"
    );
    for run in &report.runs {
        let _ = writeln!(
            out,
            "{:<6} {:>6} {:>5} {:>9} {:>7} {:>6} {:>10.0} {:>10} {:>6} {:>4} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>6.2} {:>6} {:>11} {:>7.1} {:>7.2} {:>7.2}",
            run.server,
            run.shards,
            run.rooms,
            run.subscribers_per_room,
            run.rate_msgs_per_s,
            run.payload_bytes,
            run.deliveries_per_s,
            run.deliveries_measured,
            run.deliveries_lost,
            run.duplicates,
            run.latency.p50_us,
            run.latency.p90_us,
            run.latency.p99_us,
            run.latency.p999_us,
            run.latency.max_us,
            run.ack_latency.map_or_else(|| "-".into(), |ack| ack.p99_us.to_string()),
            run.server_cpu_secs,
            run.control_plane_cpu_secs
                .map_or_else(|| "-".into(), |secs| format!("{secs:.2}")),
            optional(run.deliveries_per_server_cpu_sec, 0),
            run.server_rss_kib as f64 / 1024.0,
            run.load_generator_cpu_secs,
            run.other_tasks_cpu_secs,
        );
    }
    if !report.ratios.is_empty() {
        let _ = writeln!(
            out,
            "\n{:>6} {:>18} {:>18} {:>10} {:>22}",
            "shards", "veza_deliv/cpu_s", "nats_deliv/cpu_s", "veza/nats", "veza+control/nats"
        );
        for ratio in &report.ratios {
            let _ = writeln!(
                out,
                "{:>6} {:>18} {:>18} {:>10} {:>22}",
                ratio.shards,
                optional(ratio.veza_deliveries_per_server_cpu_sec, 0),
                optional(ratio.nats_deliveries_per_server_cpu_sec, 0),
                optional(ratio.veza_over_nats, 2),
                optional(ratio.veza_with_control_plane_over_nats, 2),
            );
        }
    }
    out
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |value| format!("{value:.decimals$}"))
}
