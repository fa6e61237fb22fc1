//! The human-readable tables printed after a scenario.

use std::fmt::Write as _;

use super::{RatioReport, RunReport};

/// One line per run: throughput, latency percentiles (µs), server CPU.
pub fn render_runs(runs: &[RunReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:>6} {:>7} {:>5} {:<8} {:>10} {:>6} {:>10} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>11} {:>8} {:>7} {:>7}",
        "server", "shards", "payload", "conns", "mode", "messages", "errors", "msg/s", "p50us", "p90us",
        "p99us", "p99.9us", "max_us", "cpu_s", "msg/cpu_s", "rss_MiB", "load_s", "other_s"
    );
    for run in runs {
        let mode = match (&run.mode.pipeline, &run.mode.rate_msgs_per_s) {
            (Some(pipeline), _) => format!("closed{pipeline}"),
            (_, Some(rate)) => format!("open{}k", rate / 1000),
            _ => run.mode.mode.clone(),
        };
        let _ = writeln!(
            out,
            "{:<6} {:>6} {:>7} {:>5} {:<8} {:>10} {:>6} {:>10.0} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7.2} {:>11} {:>8.1} {:>7.2} {:>7.2}",
            run.server,
            run.shards,
            run.payload_bytes,
            run.connections,
            mode,
            run.messages,
            run.errors,
            run.throughput_msgs_per_s,
            run.latency.p50_us,
            run.latency.p90_us,
            run.latency.p99_us,
            run.latency.p999_us,
            run.latency.max_us,
            run.server_cpu_secs,
            optional(run.msgs_per_server_cpu_sec, 0),
            run.server_rss_kib as f64 / 1024.0,
            run.load_generator_cpu_secs,
            run.other_tasks_cpu_secs,
        );
    }
    out
}

/// One line per configuration: Veza over peer.
pub fn render_ratios(ratios: &[RatioReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:>6} {:>7} {:>15} {:>15} {:>16} {:>16}",
        "peer",
        "shards",
        "payload",
        "veza_msg/cpu_s",
        "peer_msg/cpu_s",
        "veza/peer_cpu",
        "veza/peer_msg/s"
    );
    for ratio in ratios {
        let _ = writeln!(
            out,
            "{:<6} {:>6} {:>7} {:>15} {:>15} {:>16} {:>16}",
            ratio.peer,
            ratio.shards,
            ratio.payload_bytes,
            optional(ratio.veza_msgs_per_server_cpu_sec, 0),
            optional(ratio.peer_msgs_per_server_cpu_sec, 0),
            optional(ratio.veza_over_peer_msgs_per_server_cpu_sec, 2),
            optional(ratio.veza_over_peer_throughput, 2),
        );
    }
    out
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |value| format!("{value:.decimals$}"))
}
