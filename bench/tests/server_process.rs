//! Starting, sampling and stopping a real server process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use veza_bench::server_process::{
    free_loopback_port, Readiness, ServerLaunch, ServerProcess, StopOutcome,
};

fn peer_launch(port: u16, log_path: PathBuf, program: PathBuf) -> ServerLaunch {
    ServerLaunch {
        name: "peer".into(),
        program,
        args: vec![
            "--port".into(),
            port.to_string(),
            "--threads".into(),
            "1".into(),
        ],
        environment: vec![],
        cpus: vec![0],
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        readiness: Readiness::TcpConnect,
        ready_timeout: Duration::from_secs(10),
        log_path,
    }
}

#[test]
fn a_pinned_server_is_ready_sampled_and_stopped_by_sigterm() {
    let log_dir = tempfile::tempdir().unwrap();
    let port = free_loopback_port().unwrap();
    let program = PathBuf::from(env!("CARGO_BIN_EXE_bench-echo-peer"));
    let server =
        ServerProcess::start(&peer_launch(port, log_dir.path().join("peer.log"), program)).unwrap();
    let affinity = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    assert!(affinity
        .lines()
        .any(|line| line.starts_with("Cpus_allowed_list:") && line.ends_with("\t0")));
    let sample = server.sample().unwrap();
    assert!(sample.cpu_secs >= 0.0);
    assert!(sample.rss_kib > 0);
    assert!(matches!(
        server.stop(Duration::from_secs(5)),
        Ok(StopOutcome::Terminated(_))
    ));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port is closed"
    );
}

#[test]
fn a_missing_binary_or_a_server_that_exits_early_is_an_error_not_a_hang() {
    let log_dir = tempfile::tempdir().unwrap();
    let port = free_loopback_port().unwrap();
    let missing = peer_launch(
        port,
        log_dir.path().join("missing.log"),
        "/nonexistent/server".into(),
    );
    assert!(ServerProcess::start(&missing).is_err());
    let mut exits = peer_launch(port, log_dir.path().join("exits.log"), "/bin/false".into());
    exits.ready_timeout = Duration::from_secs(10);
    let error = ServerProcess::start(&exits).unwrap_err().to_string();
    assert!(error.contains("exited"), "{error}");
}
