//! `veza-bench control-persist --smoke --database sqlite` end to end: a real
//! `veza-controlplane`, real REST setup, real control connections, and a
//! JSON report that must be complete and self-consistent.

use std::process::Command;

use serde_json::Value;

mod support;
use support::{bench_bin, sibling_bin};

/// Changes per batch in the smoke run.
const SMOKE_BATCH_CHANGES: u64 = 64;

fn run_smoke() -> Value {
    let json_dir = tempfile::tempdir().unwrap();
    let json_path = json_dir.path().join("report.json");
    let output = Command::new(bench_bin())
        .args([
            "control-persist",
            "--smoke",
            "--database",
            "sqlite",
            "--json",
        ])
        .arg(&json_path)
        .arg("--controlplane-bin")
        .arg(sibling_bin("veza-controlplane"))
        .output()
        .expect("run veza-bench");
    assert!(
        output.status.success(),
        "veza-bench failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(&json_path).expect("the JSON report was written");
    assert!(
        !json.contains("NaN") && !json.contains("inf"),
        "no NaN or infinity: {json}"
    );
    serde_json::from_str(&json).expect("the report is valid JSON")
}

fn number(run: &Value, key: &str) -> f64 {
    run[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is a number: {run}"))
}

fn assert_latency_percentiles_are_ordered(run: &Value) {
    let latency = &run["batch_latency"];
    let percentiles: Vec<u64> = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"]
        .iter()
        .map(|key| latency[key].as_u64().expect("a percentile in µs"))
        .collect();
    assert!(percentiles[0] > 0, "{latency}");
    assert!(
        percentiles.windows(2).all(|pair| pair[0] <= pair[1]),
        "{latency}"
    );
}

#[test]
fn a_smoke_run_on_sqlite_acknowledges_every_batch_and_reads_the_last_one_back() {
    let report = run_smoke();
    assert_eq!(report["scenario"], "control-persist");
    assert!(report["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert!(report["command_line"].as_array().unwrap().len() > 1);
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "one database, one batch size");
    let run = &runs[0];
    assert_eq!(run["database"], "sqlite");
    assert_eq!(run["batch_changes"].as_u64(), Some(SMOKE_BATCH_CHANGES));
    assert_eq!(run["errors"].as_u64(), Some(0), "{run}");

    let batches_sent = run["batches_sent"].as_u64().unwrap();
    let batches_acknowledged = run["batches_acknowledged"].as_u64().unwrap();
    assert!(batches_sent > 0, "{run}");
    assert_eq!(
        batches_acknowledged, batches_sent,
        "every batch sent in the window is acknowledged"
    );
    let messages = run["messages_acknowledged"].as_u64().unwrap();
    assert_eq!(messages, batches_acknowledged * SMOKE_BATCH_CHANGES);
    let measured_secs = number(run, "measured_secs");
    let msgs_per_s = number(run, "throughput_msgs_per_s");
    assert!(msgs_per_s > 0.0);
    assert!((msgs_per_s - messages as f64 / measured_secs).abs() < 1e-6);
    let batches_per_s = number(run, "throughput_batches_per_s");
    assert!((msgs_per_s / batches_per_s - SMOKE_BATCH_CHANGES as f64).abs() < 1e-6);
    assert_latency_percentiles_are_ordered(run);

    assert!(run["server_rss_kib"].as_u64().unwrap() > 0);
    assert!(number(run, "server_cpu_secs") >= 0.0);
    assert!(
        run["database_cpu_secs"].is_null(),
        "SQLite runs inside the control plane"
    );

    let durability = &run["durability"];
    assert_eq!(durability["passed"], true, "{durability}");
    assert_eq!(durability["rooms_checked"], run["connections"]);
    assert!(durability["messages_acknowledged_total"].as_u64().unwrap() >= messages);
}
