//! What a scenario reports: one [`RunReport`] per server run, the ratio of
//! Veza to its peer per configuration, and the machine. Rendered as a human
//! table ([`table`]) and, on request, as JSON.
//!
//! Architecture Invariant: a report never holds NaN or infinity. A quotient
//! whose divisor is zero is `None` (JSON `null`).

pub mod machine;
pub mod table;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::load_generator::latency::LatencySummary;

pub use machine::MachineDescription;

/// The server name whose results are the numerator of every ratio.
pub const VEZA_SERVER: &str = "veza";

/// The share of one CPU that other processes may use during a measured
/// window before the run counts as noisy.
pub const NOISY_RUN_CPU_FRACTION: f64 = 0.05;

/// The pacing of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeReport {
    /// `closed` or `open`.
    pub mode: String,
    /// Messages in flight per connection (closed loop).
    pub pipeline: Option<usize>,
    /// The fixed total rate (open loop).
    pub rate_msgs_per_s: Option<u64>,
}

/// One server process under one load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// `veza` or the peer's name.
    pub server: String,
    /// Shards (Veza) or worker threads (peer).
    pub shards: usize,
    /// The CPUs the server was pinned to, as given to `taskset -c`.
    pub server_cpus: String,
    /// Where the load generator ran.
    pub load_generator: String,
    /// Bytes per message.
    pub payload_bytes: usize,
    /// Connections open during the run.
    pub connections: usize,
    /// Closed or open loop, with its parameter.
    #[serde(flatten)]
    pub mode: ModeReport,
    /// The measured window in seconds (warm-up excluded).
    pub measured_secs: f64,
    /// Messages sent in the window and echoed correctly.
    pub messages: u64,
    /// All errors of the run (warm-up included).
    pub errors: u64,
    /// Errors by kind.
    pub error_counts: BTreeMap<String, u64>,
    /// `messages / measured_secs`.
    pub throughput_msgs_per_s: f64,
    /// Latency of the measured messages.
    pub latency: LatencySummary,
    /// The server's user + system CPU seconds over the window.
    pub server_cpu_secs: f64,
    /// `messages / server_cpu_secs`; `None` when no CPU time was seen.
    pub msgs_per_server_cpu_sec: Option<f64>,
    /// The server's resident set at the end of the window, in KiB.
    pub server_rss_kib: u64,
    /// The load generator's CPU seconds over the window: near
    /// `measured_secs` times its threads means the client, not the server,
    /// may be the limit.
    pub load_generator_cpu_secs: f64,
    /// CPU seconds of every other task on the machine over the window (a
    /// compiler, say): more than a few hundredths means a noisy run.
    pub other_tasks_cpu_secs: f64,
    /// irq + softirq CPU seconds over the window, charged to no process.
    /// Loopback TCP does part of both sides' work here.
    pub interrupt_cpu_secs: f64,
    /// CPU seconds the hypervisor gave to other guests during the window
    /// (steal): like `other_tasks_cpu_secs`, a sign of a noisy run.
    pub steal_cpu_secs: f64,
    /// How many times this configuration ran; more than 1 when earlier
    /// attempts were noisy and `--noisy-retries` allowed another.
    pub attempts: usize,
}

impl RunReport {
    /// Whether other processes used enough CPU during the window to
    /// disturb the numbers.
    pub fn is_noisy(&self) -> bool {
        self.disturbed_cpu_secs() > NOISY_RUN_CPU_FRACTION * self.measured_secs
    }

    /// CPU seconds taken from this run by other processes or other guests.
    pub fn disturbed_cpu_secs(&self) -> f64 {
        self.other_tasks_cpu_secs + self.steal_cpu_secs
    }
}

/// Veza against one peer under the same configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatioReport {
    /// The peer's name.
    pub peer: String,
    /// Shards of both servers.
    pub shards: usize,
    /// Bytes per message.
    pub payload_bytes: usize,
    /// Veza's messages per server CPU-second.
    pub veza_msgs_per_server_cpu_sec: Option<f64>,
    /// The peer's messages per server CPU-second.
    pub peer_msgs_per_server_cpu_sec: Option<f64>,
    /// Veza over peer, messages per server CPU-second: the headline number.
    pub veza_over_peer_msgs_per_server_cpu_sec: Option<f64>,
    /// Veza over peer, messages per second.
    pub veza_over_peer_throughput: Option<f64>,
}

/// A whole invocation: what ran, where, and what it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// The scenario's CLI name, for example `ws-echo`.
    pub scenario: String,
    /// The command line, as given.
    pub command_line: Vec<String>,
    /// The machine.
    pub machine: MachineDescription,
    /// One row per run, in the order they ran.
    pub runs: Vec<RunReport>,
    /// One row per (peer, shards, payload) that has a Veza run too.
    pub ratios: Vec<RatioReport>,
}

/// `numerator / denominator`, or `None` when that is not a finite number.
pub fn finite_ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    let ratio = numerator? / denominator?;
    ratio.is_finite().then_some(ratio)
}

/// Pairs every non-Veza run with the Veza run of the same shards, payload
/// and mode, in the order the peer runs appear.
pub fn compute_ratios(runs: &[RunReport]) -> Vec<RatioReport> {
    let same_configuration = |veza: &RunReport, peer: &RunReport| {
        veza.shards == peer.shards
            && veza.payload_bytes == peer.payload_bytes
            && veza.connections == peer.connections
            && veza.mode == peer.mode
    };
    let veza_runs: Vec<&RunReport> = runs
        .iter()
        .filter(|run| run.server == VEZA_SERVER)
        .collect();
    runs.iter()
        .filter(|run| run.server != VEZA_SERVER)
        .filter_map(|peer| {
            let veza = veza_runs
                .iter()
                .find(|veza| same_configuration(veza, peer))?;
            Some(RatioReport {
                peer: peer.server.clone(),
                shards: peer.shards,
                payload_bytes: peer.payload_bytes,
                veza_msgs_per_server_cpu_sec: veza.msgs_per_server_cpu_sec,
                peer_msgs_per_server_cpu_sec: peer.msgs_per_server_cpu_sec,
                veza_over_peer_msgs_per_server_cpu_sec: finite_ratio(
                    veza.msgs_per_server_cpu_sec,
                    peer.msgs_per_server_cpu_sec,
                ),
                veza_over_peer_throughput: finite_ratio(
                    Some(veza.throughput_msgs_per_s),
                    Some(peer.throughput_msgs_per_s),
                ),
            })
        })
        .collect()
}

impl ScenarioReport {
    /// Writes the report as pretty JSON to `path`.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        server: &str,
        shards: usize,
        payload_bytes: usize,
        msgs_per_cpu_sec: Option<f64>,
    ) -> RunReport {
        RunReport {
            server: server.into(),
            shards,
            server_cpus: "0".into(),
            load_generator: "1 thread(s) pinned to CPUs 1".into(),
            payload_bytes,
            connections: 64,
            mode: ModeReport {
                mode: "closed".into(),
                pipeline: Some(1),
                rate_msgs_per_s: None,
            },
            measured_secs: 5.0,
            messages: 1000,
            errors: 0,
            error_counts: BTreeMap::new(),
            throughput_msgs_per_s: 200.0,
            latency: LatencySummary::default(),
            server_cpu_secs: 1.0,
            msgs_per_server_cpu_sec: msgs_per_cpu_sec,
            server_rss_kib: 4096,
            load_generator_cpu_secs: 1.0,
            other_tasks_cpu_secs: 0.0,
            interrupt_cpu_secs: 0.1,
            steal_cpu_secs: 0.0,
            attempts: 1,
        }
    }

    #[test]
    fn each_peer_run_is_paired_with_the_veza_run_of_its_configuration() {
        let runs = [
            run("veza", 1, 20, Some(300.0)),
            run("peer", 1, 20, Some(100.0)),
            run("veza", 1, 1024, Some(200.0)),
            run("peer", 1, 1024, Some(400.0)),
            run("peer", 2, 20, Some(100.0)),
        ];
        let ratios = compute_ratios(&runs);
        assert_eq!(
            ratios.len(),
            2,
            "the 2-shard peer run has no Veza run to pair with"
        );
        assert_eq!(ratios[0].veza_over_peer_msgs_per_server_cpu_sec, Some(3.0));
        assert_eq!(ratios[1].payload_bytes, 1024);
        assert_eq!(ratios[1].veza_over_peer_msgs_per_server_cpu_sec, Some(0.5));
        assert_eq!(ratios[1].veza_over_peer_throughput, Some(1.0));
    }

    #[test]
    fn a_ratio_over_zero_or_missing_cpu_is_null_not_infinite() {
        assert_eq!(finite_ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(finite_ratio(None, Some(2.0)), None);
        let runs = [run("veza", 1, 20, Some(10.0)), run("peer", 1, 20, None)];
        let json = serde_json::to_string(&compute_ratios(&runs)).unwrap();
        assert!(json.contains("\"veza_over_peer_msgs_per_server_cpu_sec\":null"));
    }
}
