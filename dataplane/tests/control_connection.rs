//! The data plane connected to a real control plane (`veza-controlplane`,
//! built from this workspace), on both drivers: `/ready` waits for the
//! control plane, follows it going away and coming back (reconnect with
//! backoff), and a settings change made over the control plane's REST API
//! reaches every shard as a push.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::control_plane::{data_plane_options, ControlPlane};
use support::http;
use support::{eventually, for_each_driver, free_loopback_port, ServerOptions, TestServer};

/// How long a shard may take to (re)connect: the reconnect delay is capped
/// at 400 ms in these tests, plus the control plane's start.
use support::control_plane::CONNECT_TIMEOUT;

fn ready_status(addr: SocketAddr) -> Result<(u16, Value), String> {
    http::try_get(addr, "/ready", Duration::from_millis(500))
        .map(|response| {
            let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            (response.status, body)
        })
        .map_err(|error| error.to_string())
}

fn expect_not_ready(addr: SocketAddr, what: &str) {
    eventually(CONNECT_TIMEOUT, what, || match ready_status(addr)? {
        (503, body) if body["detail"] == "control plane not connected" => {
            assert_eq!(body["error"], "not_ready");
            Ok(())
        }
        (status, body) => Err(format!("{status} {body}")),
    });
}

fn expect_ready(addr: SocketAddr, what: &str) {
    eventually(CONNECT_TIMEOUT, what, || match ready_status(addr)? {
        (200, _) => Ok(()),
        (status, body) => Err(format!("{status} {body}")),
    });
}

/// Every shard reports `value` for the per-shard series `name`.
fn expect_every_shard(server: &TestServer, name: &str, value: f64) {
    eventually(
        CONNECT_TIMEOUT,
        &format!("{name} = {value} on every shard"),
        || {
            let metrics = server.metrics();
            for shard in 0..server.shards() {
                let shard = shard.to_string();
                if metrics.value(name, &[("shard", &shard)]) != Some(value) {
                    return Err(metrics.lines_of(name));
                }
            }
            Ok(())
        },
    );
}

#[test]
fn ready_follows_the_control_plane_and_settings_changes_reach_every_shard() {
    for_each_driver(|driver| {
        // The data plane starts first: it serves, but is not ready.
        let mut control = ControlPlane::start();
        control.kill();
        let port = free_loopback_port();
        let options =
            data_plane_options(driver, &control).env("VEZA_SERVER_LISTEN_PORT", &port.to_string());
        let starting = std::thread::spawn(move || options.start());
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        expect_not_ready(addr, "/ready says 503 while no control plane listens");

        control.spawn();
        let server = starting
            .join()
            .expect("the data plane became ready once connected");
        expect_every_shard(&server, "veza_control_connected", 1.0);
        expect_every_shard(&server, "veza_control_config_version", 0.0);

        let token = control.admin_token();
        let (status, body) = control.rest(
            "PUT",
            "/v1/admin/settings",
            Some(&token),
            json!({"settings": {"message_burst": 42}}),
        );
        assert_eq!(status, 200, "{body}");
        expect_every_shard(&server, "veza_control_config_version", 1.0);
        let (status, nodes) = control.rest("GET", "/v1/admin/nodes", Some(&token), Value::Null);
        assert_eq!(status, 200, "{nodes}");
        let shards: Vec<i64> = nodes["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter(|node| node["node_id"] == "test-node")
            .map(|node| node["shard_idx"].as_i64().unwrap())
            .collect();
        assert_eq!(shards, [0, 1], "{nodes}");

        control.kill();
        expect_not_ready(
            server.addr(),
            "/ready says 503 once the control plane is gone",
        );
        expect_every_shard(&server, "veza_control_connected", 0.0);
        assert_eq!(
            server.get("/health").status,
            200,
            "the data plane keeps serving"
        );

        control.spawn();
        expect_ready(
            server.addr(),
            "/ready says 200 again after the control plane restarts",
        );
        expect_every_shard(&server, "veza_control_connected", 1.0);
        expect_every_shard(&server, "veza_control_config_version", 1.0);
        let metrics = server.metrics();
        assert!(
            metrics.value("veza_control_connects_total", &[("shard", "0")]) >= Some(2.0),
            "{}",
            metrics.lines_of("veza_control_connects_total")
        );
    });
}

#[test]
fn a_data_plane_without_a_control_plane_is_ready_on_its_own() {
    for_each_driver(|driver| {
        let server = ServerOptions::new(driver).start();
        let (status, _) = ready_status(server.addr()).expect("/ready answers");
        assert_eq!(status, 200);
        expect_every_shard(&server, "veza_control_connected", 0.0);
    });
}

#[test]
fn an_unreachable_control_plane_is_retried_without_stalling_the_shards() {
    for_each_driver(|driver| {
        let control = ControlPlane::start();
        let started = Instant::now();
        let port = free_loopback_port();
        let mut control_gone = control;
        control_gone.kill();
        let options = data_plane_options(driver, &control_gone)
            .env("VEZA_SERVER_LISTEN_PORT", &port.to_string());
        let starting = std::thread::spawn(move || options.start());
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        expect_not_ready(addr, "/ready says 503 while no control plane listens");
        // While it retries, the shards keep serving and do not stall.
        std::thread::sleep(Duration::from_millis(800));
        let health = http::get(addr, "/health");
        assert_eq!(health.status, 200);
        let metrics = support::metrics::Metrics::fetch(addr);
        assert!(
            metrics.value("veza_control_disconnects_total", &[("shard", "0")]) >= Some(2.0),
            "it retried: {}",
            metrics.lines_of("veza_control_disconnects_total")
        );
        assert_eq!(metrics.sum("veza_shard_stalls_total", &[]), 0.0);
        control_gone.spawn();
        let server = starting.join().expect("ready once the control plane is up");
        assert!(started.elapsed() < Duration::from_secs(60));
        drop(server);
    });
}
