//! `veza-bench ws-echo --smoke` end to end: real servers, real sockets, and
//! a JSON report that must be complete and self-consistent.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod support;
use support::{bench_bin, sibling_bin};

const PAYLOAD_SIZES: [u64; 3] = [20, 1024, 16384];

fn peer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bench-echo-peer"))
}

fn run_smoke(extra_args: &[&str], veza: Option<&Path>) -> Value {
    let json_dir = tempfile::tempdir().unwrap();
    let json_path = json_dir.path().join("report.json");
    let mut command = Command::new(bench_bin());
    command
        .args(["ws-echo", "--smoke", "--json"])
        .arg(&json_path)
        .arg("--peer-bin")
        .arg(peer_bin());
    command.args(extra_args);
    if let Some(veza) = veza {
        command.arg("--veza-bin").arg(veza);
    }
    let output = command.output().expect("run veza-bench");
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
        .unwrap_or_else(|| panic!("{key} is a number in {run}"))
}

fn check_run(run: &Value) {
    assert!(number(run, "messages") > 0.0, "messages were echoed: {run}");
    assert_eq!(number(run, "errors"), 0.0, "no errors: {run}");
    assert_eq!(number(run, "connections"), 4.0);
    assert_eq!(run["mode"], "closed");
    let latency = &run["latency"];
    let percentiles: Vec<f64> = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"]
        .iter()
        .map(|key| number(latency, key))
        .collect();
    assert!(
        percentiles.windows(2).all(|pair| pair[0] <= pair[1]),
        "ordered percentiles: {latency}"
    );
    assert!(
        percentiles[0] > 0.0,
        "a loopback round trip takes at least a microsecond"
    );
    let measured_secs = number(run, "measured_secs");
    let throughput = number(run, "throughput_msgs_per_s");
    assert!((throughput * measured_secs - number(run, "messages")).abs() < 1.0);
    let server_cpu_secs = number(run, "server_cpu_secs");
    assert!(server_cpu_secs > 0.0 && server_cpu_secs <= measured_secs * 2.0 + 0.1);
    let per_cpu_sec = number(run, "msgs_per_server_cpu_sec");
    assert!((per_cpu_sec * server_cpu_secs - number(run, "messages")).abs() < 1.0);
    assert!(number(run, "server_rss_kib") > 0.0);
}

fn check_machine(report: &Value) {
    assert_eq!(report["scenario"], "ws-echo");
    assert!(number(&report["machine"], "nproc") >= 1.0);
    assert!(report["machine"]["cpu_model"]
        .as_str()
        .is_some_and(|model| !model.is_empty()));
    assert!(report["machine"]["kernel"]
        .as_str()
        .is_some_and(|kernel| !kernel.is_empty()));
    let command_line = report["command_line"]
        .as_array()
        .expect("the command line is recorded");
    assert!(command_line.iter().any(|arg| arg == "--smoke"));
}

#[test]
fn smoke_run_against_the_peer_alone_reports_every_payload_size() {
    let report = run_smoke(&["--server", "peer", "--shards", "1"], None);
    check_machine(&report);
    let runs = report["runs"].as_array().unwrap();
    let payloads: Vec<u64> = runs
        .iter()
        .map(|run| run["payload_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(payloads, PAYLOAD_SIZES);
    runs.iter().for_each(check_run);
    assert_eq!(
        report["ratios"].as_array().unwrap().len(),
        0,
        "no Veza run, no ratio"
    );
}

#[test]
fn smoke_run_of_both_servers_reports_a_ratio_per_payload_size_and_shard_count() {
    let veza = sibling_bin("veza-dataplane");
    let report = run_smoke(&["--server", "both", "--shards", "1,2"], Some(&veza));
    check_machine(&report);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2 * 2 * PAYLOAD_SIZES.len());
    runs.iter().for_each(check_run);
    let ratios = report["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 2 * PAYLOAD_SIZES.len());
    for shards in [1, 2] {
        for payload_bytes in PAYLOAD_SIZES {
            let ratio = ratios
                .iter()
                .find(|ratio| ratio["shards"] == shards && ratio["payload_bytes"] == payload_bytes)
                .unwrap_or_else(|| panic!("a ratio for {shards} shard(s), {payload_bytes} B"));
            let veza = number(ratio, "veza_msgs_per_server_cpu_sec");
            let peer = number(ratio, "peer_msgs_per_server_cpu_sec");
            let quotient = number(ratio, "veza_over_peer_msgs_per_server_cpu_sec");
            assert!(
                (quotient - veza / peer).abs() < 1e-9 * quotient.max(1.0),
                "{ratio}"
            );
        }
    }
}
