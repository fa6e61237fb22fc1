//! `live-listeners` end to end at a tiny scale: a real ffmpeg source, real
//! icecast2 (and Veza's two processes), listener processes over loopback,
//! and a JSON report that must be complete and self-consistent.

use std::process::Command;

use serde_json::Value;

mod support;
use support::{bench_bin, sibling_bin};

/// Runs `veza-bench live-listeners <args> --json <tmp>`; the report.
fn run_live_listeners(args: &[&str]) -> Value {
    let json_dir = tempfile::tempdir().unwrap();
    let json_path = json_dir.path().join("report.json");
    let output = Command::new(bench_bin())
        .arg("live-listeners")
        .args(args)
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("run veza-bench");
    assert!(
        output.status.success(),
        "veza-bench live-listeners failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(&json_path).expect("the JSON report was written");
    assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
    serde_json::from_str(&json).expect("valid JSON")
}

fn percentiles_are_ordered(run: &Value, name: &str) {
    let summary = &run[name];
    let values: Vec<u64> = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"]
        .iter()
        .map(|key| {
            summary[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}.{key}"))
        })
        .collect();
    assert!(values[0] > 0, "{name}: {summary}");
    assert!(
        values.windows(2).all(|pair| pair[0] <= pair[1]),
        "{name}: {summary}"
    );
}

/// Every listener connected, heard audio, was never evicted, and the
/// server's numbers are there.
fn check_run(run: &Value, listeners: u64) {
    let server = run["server"].as_str().unwrap();
    assert_eq!(run["listeners_requested"], listeners, "{server}");
    assert_eq!(run["listeners_connected"], listeners, "{server}: {run}");
    assert_eq!(run["evictions"], 0, "{server}: {run}");
    assert_eq!(run["errors"], 0, "{server}: {run}");
    assert!(run["bytes_received"].as_u64().unwrap() > 0, "{server}");
    assert!(
        run["pages_received"].as_u64().unwrap() >= 3 * listeners,
        "{server}"
    );
    percentiles_are_ordered(run, "ttfb");
    percentiles_are_ordered(run, "time_to_first_audio");
    assert!(
        run["time_to_first_audio"]["max_us"].as_u64() >= run["ttfb"]["p50_us"].as_u64(),
        "audio comes after the first byte"
    );
    assert!(run["listener_secs"].as_f64().unwrap() > 0.0, "{server}");
    assert!(run["server_rss_end_kib"].as_u64().unwrap() > 0, "{server}");
    assert!(run["server_rss_peak_kib"].as_u64() >= run["server_rss_end_kib"].as_u64());
    assert!(run["cpu_secs_per_listener_sec"].is_number(), "{server}");
    assert!(run["source_command"].as_str().unwrap().contains("libopus"));
    assert!(
        !run["source_command"].as_str().unwrap().contains("bench-"),
        "password hidden"
    );
    let targets = run["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 3, "{server}");
    assert!(targets.iter().all(|check| check["target"].is_string()));
}

fn check_report(report: &Value) {
    assert_eq!(report["scenario"], "live-listeners");
    assert!(report["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert!(report["command_line"]
        .as_array()
        .unwrap()
        .iter()
        .any(|arg| arg == "live-listeners"));
}

#[test]
fn twenty_icecast2_listeners_connect_hear_audio_and_are_never_evicted() {
    let report = run_live_listeners(&[
        "--server",
        "peer",
        "--listeners",
        "20",
        "--ramp-per-second",
        "20",
        "--duration-seconds",
        "3",
        "--processes",
        "2",
    ]);
    check_report(&report);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["server"], "icecast2");
    assert_eq!(runs[0]["client_processes"], 2);
    assert_eq!(runs[0]["server_settings"]["burst_size_bytes"], "65535");
    check_run(&runs[0], 20);
    assert!(report["ratios"].as_array().unwrap().is_empty());
}

/// Needs Veza's live route (`POST /v1/streams`, the source `PUT` and
/// `GET /v1/live/{name}`): a 404 there fails this test with the status in
/// the message.
#[test]
fn veza_and_icecast2_serve_the_same_listeners_and_are_compared() {
    let dataplane = sibling_bin("veza-dataplane");
    let controlplane = sibling_bin("veza-controlplane");
    let report = run_live_listeners(&[
        "--server",
        "both",
        "--listeners",
        "20",
        "--ramp-per-second",
        "20",
        "--duration-seconds",
        "3",
        "--processes",
        "2",
        "--dataplane-bin",
        dataplane.to_str().unwrap(),
        "--controlplane-bin",
        controlplane.to_str().unwrap(),
    ]);
    check_report(&report);
    let runs = report["runs"].as_array().unwrap();
    let servers: Vec<&str> = runs
        .iter()
        .map(|run| run["server"].as_str().unwrap())
        .collect();
    assert_eq!(servers, ["veza", "icecast2"]);
    for run in runs {
        check_run(run, 20);
    }
    assert_eq!(runs[0]["listener_path"], "/v1/live/bench?br=64");
    let ratios = report["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 1);
    assert_eq!(ratios[0]["peer"], "icecast2");
    assert!(ratios[0]["target"]["target"].is_string());
}
