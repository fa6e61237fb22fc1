//! `track-ranges` end to end at a tiny scale: real nginx (and Veza's two
//! processes, the tracks uploaded and transcoded), client processes over
//! loopback, every answer checked, and a JSON report that must be complete
//! and self-consistent.

use std::process::Command;

use serde_json::Value;

mod support;
use support::{bench_bin, sibling_bin};

/// Runs `veza-bench track-ranges <args> --json <tmp>`; the report.
fn run_track_ranges(args: &[&str]) -> Value {
    let json_dir = tempfile::tempdir().unwrap();
    let json_path = json_dir.path().join("report.json");
    let output = Command::new(bench_bin())
        .arg("track-ranges")
        .args(args)
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("run veza-bench");
    assert!(
        output.status.success(),
        "veza-bench track-ranges failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(&json_path).expect("the JSON report was written");
    assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
    serde_json::from_str(&json).expect("valid JSON")
}

const TINY_RUN: [&str; 10] = [
    "--tracks",
    "3",
    "--connections",
    "4",
    "--rate",
    "200",
    "--duration-seconds",
    "2",
    "--warmup-seconds",
    "0.5",
];

/// Every measured request answered 206 with the right range, and the
/// numbers agree with each other.
fn check_run(run: &Value) {
    let server = run["server"].as_str().unwrap();
    assert_eq!(run["errors"], 0, "{server}: {run}");
    assert_eq!(run["connections"], 4, "{server}");
    assert_eq!(run["mode"], "open", "{server}");
    let requests = run["requests"].as_u64().unwrap();
    // 200/s for 2 s: the open loop sends on a timetable.
    assert!((380..=420).contains(&requests), "{server}: {requests}");
    let requests_per_s = run["requests_per_s"].as_f64().unwrap();
    assert!(
        (requests_per_s - requests as f64 / 2.0).abs() < 1e-6,
        "{server}"
    );
    let body_bytes = run["body_bytes"].as_u64().unwrap();
    assert!(
        body_bytes > 0 && body_bytes <= requests * 65_536,
        "{server}"
    );
    let latency: Vec<u64> = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"]
        .iter()
        .map(|key| run["latency"][key].as_u64().unwrap())
        .collect();
    assert!(latency[0] > 0, "{server}: {run}");
    assert!(
        latency.windows(2).all(|pair| pair[0] <= pair[1]),
        "{server}"
    );
    let cpu_secs = run["server_cpu_secs"].as_f64().unwrap();
    assert!(cpu_secs > 0.0, "{server}");
    let per_cpu_sec = run["requests_per_server_cpu_sec"].as_f64().unwrap();
    assert!(
        (per_cpu_sec * cpu_secs - requests as f64).abs() < 1.0,
        "{server}"
    );
    assert!(run["server_rss_kib"].as_u64().unwrap() > 0, "{server}");
    assert_eq!(run["tracks"], 3, "{server}");
    assert!(run["renditions"].as_u64().unwrap() >= 3, "{server}");
}

fn check_report(report: &Value) {
    assert_eq!(report["scenario"], "track-ranges");
    assert!(report["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert!(report["command_line"]
        .as_array()
        .unwrap()
        .iter()
        .any(|arg| arg == "track-ranges"));
}

#[test]
fn nginx_answers_every_range_of_synthetic_renditions() {
    let mut args = vec!["--server", "peer"];
    args.extend(TINY_RUN);
    let report = run_track_ranges(&args);
    check_report(&report);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["server"], "nginx");
    assert_eq!(runs[0]["media"], "synthetic");
    assert_eq!(runs[0]["renditions"], 9);
    assert_eq!(runs[0]["server_settings"]["sendfile"], "on");
    assert_eq!(runs[0]["request_path_example"], "/tracks/1/64.opus");
    check_run(&runs[0]);
    assert!(report["processing"].is_null());
    assert!(report["ratios"].as_array().unwrap().is_empty());
}

/// Needs the tracks API (`POST /v1/tracks`, `GET /v1/tracks/{id}`) and the
/// data plane's `GET /v1/tracks/{id}/audio?br=` with ranges: a 404 there
/// fails this test with the status in the message.
#[test]
fn veza_and_nginx_serve_the_same_renditions_and_are_compared() {
    let dataplane = sibling_bin("veza-dataplane");
    let controlplane = sibling_bin("veza-controlplane");
    let mut args = vec![
        "--server",
        "both",
        "--dataplane-bin",
        dataplane.to_str().unwrap(),
        "--controlplane-bin",
        controlplane.to_str().unwrap(),
    ];
    args.extend(TINY_RUN);
    let report = run_track_ranges(&args);
    check_report(&report);
    let runs = report["runs"].as_array().unwrap();
    let servers: Vec<&str> = runs
        .iter()
        .map(|run| run["server"].as_str().unwrap())
        .collect();
    assert_eq!(servers, ["veza", "nginx"]);
    for run in runs {
        check_run(run);
        assert_eq!(run["media"], "veza-transcoded");
    }
    assert_eq!(runs[0]["renditions"], runs[1]["renditions"]);
    assert_eq!(runs[0]["media_bytes"], runs[1]["media_bytes"]);
    assert!(runs[0]["control_plane_cpu_secs"].is_number());
    let processing = &report["processing"];
    assert_eq!(processing["tracks"], 3);
    assert!(processing["audio_secs"].as_f64().unwrap() >= 15.0);
    assert!(processing["audio_secs_per_cpu_sec"].as_f64().unwrap() > 0.0);
    let ratios = report["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 1);
    assert_eq!(ratios[0]["peer"], "nginx");
    for key in [
        "veza_over_peer_requests_per_s",
        "veza_over_peer_requests_per_server_cpu_sec",
        "veza_over_peer_requests_per_cpu_sec_all_processes",
        "veza_over_peer_p50",
        "veza_over_peer_p99",
    ] {
        assert!(ratios[0][key].as_f64().unwrap() > 0.0, "{key}: {ratios:?}");
    }
    let targets = ratios[0]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    assert!(targets.iter().all(|check| check["met"].is_boolean()));
}
