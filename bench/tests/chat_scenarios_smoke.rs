//! `chat-fanout`, `idle-connections` and `connect-storm` end to end at a
//! tiny scale: real Veza processes (control plane + data plane) and a real
//! nats-server, real sockets, client processes, and JSON reports that must
//! be complete and self-consistent.

use std::process::Command;

use serde_json::Value;

mod support;
use support::{bench_bin, sibling_bin};

/// Runs `veza-bench <args> --json <tmp>` against both servers and returns
/// the report.
fn run_scenario(args: &[&str]) -> Value {
    let json_dir = tempfile::tempdir().unwrap();
    let json_path = json_dir.path().join("report.json");
    let output = Command::new(bench_bin())
        .args(args)
        .arg("--dataplane-bin")
        .arg(sibling_bin("veza-dataplane"))
        .arg("--controlplane-bin")
        .arg(sibling_bin("veza-controlplane"))
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("run veza-bench");
    assert!(
        output.status.success(),
        "veza-bench failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(&json_path).expect("the JSON report was written");
    assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
    serde_json::from_str(&json).expect("valid JSON")
}

fn servers(report: &Value) -> Vec<&str> {
    report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|run| run["server"].as_str().expect("a server name"))
        .collect()
}

#[test]
fn fanout_delivers_every_message_to_every_subscriber_on_both_servers() {
    let report = run_scenario(&[
        "chat-fanout",
        "--rooms",
        "2",
        "--subscribers-per-room",
        "5",
        "--rate",
        "200",
        "--warmup-secs",
        "0.2",
        "--duration-secs",
        "1",
    ]);
    assert_eq!(report["scenario"], "chat-fanout");
    assert_eq!(servers(&report), ["veza", "nats"]);
    for run in report["runs"].as_array().unwrap() {
        let expected = run["deliveries_expected_total"].as_u64().unwrap();
        assert!(expected > 0, "{run}");
        assert_eq!(
            run["deliveries_received_total"].as_u64(),
            Some(expected),
            "{run}"
        );
        assert_eq!(run["deliveries_lost"].as_u64(), Some(0), "{run}");
        assert_eq!(run["duplicates"].as_u64(), Some(0), "{run}");
        assert_eq!(run["failed_connections"].as_u64(), Some(0), "{run}");
        assert_eq!(
            expected,
            run["messages_sent_total"].as_u64().unwrap() * 5,
            "five subscribers per room receive each message: {run}"
        );
        let latency = &run["latency"];
        assert!(latency["p50_us"].as_u64().unwrap() <= latency["max_us"].as_u64().unwrap());
    }
    let veza = &report["runs"][0];
    assert_eq!(
        veza["messages_acknowledged_total"], veza["messages_sent_total"],
        "Veza acknowledges every message once persisted: {veza}"
    );
    assert!(veza["control_plane_cpu_secs"].is_number());
    assert_eq!(report["ratios"].as_array().unwrap().len(), 1);
}

#[test]
fn idle_connections_are_held_and_measured_on_both_servers() {
    let report = run_scenario(&[
        "idle-connections",
        "--connections",
        "300",
        "--settle-secs",
        "1",
        "--shards",
        "1",
    ]);
    assert_eq!(servers(&report), ["veza", "nats"]);
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(run["connections_opened"].as_u64(), Some(300), "{run}");
        assert_eq!(run["client_processes"].as_u64(), Some(2), "{run}");
        assert_eq!(run["closed_by_server"].as_u64(), Some(0), "{run}");
        assert!(
            run["rss_bytes_per_connection"].as_f64().unwrap() > 0.0,
            "{run}"
        );
    }
}

#[test]
fn a_connect_storm_reports_rates_and_latencies_on_both_servers() {
    let report = run_scenario(&["connect-storm", "--connections", "300"]);
    assert_eq!(servers(&report), ["veza", "nats"]);
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(run["connections_opened"].as_u64(), Some(300), "{run}");
        assert!(run["connections_per_s"].as_f64().unwrap() > 0.0, "{run}");
        let total = &run["total_latency"];
        assert!(total["p50_us"].as_u64().unwrap() > 0, "{run}");
        assert!(total["p99_us"].as_u64().unwrap() <= total["max_us"].as_u64().unwrap());
    }
}
