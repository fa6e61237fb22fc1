//! The server's life as an operator sees it: health, readiness and metrics;
//! configuration refused with exit code 2 and the key named; graceful
//! shutdown on SIGTERM/SIGINT; stall detection; and the two ways the server
//! drops a WebSocket peer that does not keep up (no pong, full send queue).

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use support::http::{self, post_request, HttpConnection};
use support::metrics::{limit_hits, Metrics};
use support::raw_websocket::{client_frame, opcode, RawWebSocket};
use support::websocket::{connect, expect_close, next_data_message, send};
use support::{
    block_on, eventually, for_each_driver, within, Driver, ServerOptions, TestRuntime, TestServer,
};

/// Per-shard series every server exposes from its start.
const PER_SHARD_SERIES: [&str; 8] = [
    "veza_connections_open",
    "veza_connections_accepted_total",
    "veza_bytes_received_total",
    "veza_bytes_sent_total",
    "veza_websocket_frames_received_total",
    "veza_websocket_frames_sent_total",
    "veza_http_requests_total",
    "veza_shard_stalls_total",
];

/// Every `limit` label of `veza_limit_hits_total`.
const LIMITS: [&str; 10] = [
    "connections_per_shard",
    "http_head_bytes",
    "http_header_count",
    "http_target_bytes",
    "http_body_bytes",
    "header_read_timeout",
    "idle_timeout",
    "websocket_frame_bytes",
    "websocket_message_bytes",
    "send_queue_bytes",
];

#[test]
fn health_answers_200_with_status_ok_json() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let response = server.get("/health");
        assert_eq!(response.status, 200);
        assert!(
            response
                .header("content-type")
                .is_some_and(|value| value.starts_with("application/json")),
            "content-type {:?}",
            response.header("content-type")
        );
        assert_eq!(response.json(), serde_json::json!({"status": "ok"}));
    });
}

#[test]
fn ready_answers_200_when_every_shard_serves() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        assert_eq!(server.get("/ready").status, 200);
    });
}

#[test]
fn ready_answers_503_json_while_a_shard_is_stalled_and_200_after() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[("VEZA_DEBUG_ENDPOINTS_ENABLED", "true")]);
        let addr = server.addr();
        let stall = std::thread::spawn(move || {
            let mut connection = HttpConnection::open(addr);
            connection
                .request(&post_request("/debug/stall?ms=3000", b""))
                .status
        });
        std::thread::sleep(Duration::from_millis(200));
        // Probes that land on the stalled shard get no answer before their
        // timeout; a probe on the other shard must see that not every shard
        // serves. Sixteen probes at once all land on the stalled shard with
        // a chance of 1 in 65536.
        let probes: Vec<_> = (0..16)
            .map(|_| {
                std::thread::spawn(move || {
                    http::try_get(addr, "/ready", Duration::from_millis(1000))
                })
            })
            .collect();
        let answers: Vec<_> = probes
            .into_iter()
            .filter_map(|probe| probe.join().expect("a probe thread").ok())
            .collect();
        let statuses: Vec<u16> = answers.iter().map(|response| response.status).collect();
        let not_ready = answers.iter().find(|response| response.status == 503);
        let not_ready = not_ready.unwrap_or_else(|| {
            panic!("no 503 from /ready during the stall; answered statuses: {statuses:?}")
        });
        let name = not_ready.json()["error"]
            .as_str()
            .unwrap_or("(none)")
            .to_owned();
        not_ready.assert_error(503, &name);
        assert!(
            !statuses.contains(&200),
            "/ready must not say 200 while a shard is stalled: {statuses:?}"
        );
        assert_eq!(stall.join().expect("the stall request"), 200);
        eventually(
            Duration::from_secs(3),
            "/ready is 200 again after the stall",
            || {
                let status = server.get("/ready").status;
                (status == 200)
                    .then_some(())
                    .ok_or(format!("status {status}"))
            },
        );
    });
}

#[test]
fn metrics_expose_every_documented_series_for_every_shard() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let response = server.get("/metrics");
        assert_eq!(response.status, 200);
        let content_type = response.header("content-type").unwrap_or("");
        assert!(
            content_type.starts_with("text/plain"),
            "content-type {content_type:?}"
        );
        let metrics = Metrics::parse(&response.body_text());
        let mut missing = Vec::new();
        for shard in ["0", "1"] {
            for name in PER_SHARD_SERIES {
                if !metrics.has(name, &[("shard", shard)]) {
                    missing.push(format!("{name}{{shard=\"{shard}\"}}"));
                }
            }
            for limit in LIMITS {
                if !metrics.has(
                    "veza_limit_hits_total",
                    &[("shard", shard), ("limit", limit)],
                ) {
                    missing.push(format!(
                        "veza_limit_hits_total{{shard=\"{shard}\",limit=\"{limit}\"}}"
                    ));
                }
            }
            if !metrics.has(
                "veza_shard_driver",
                &[("shard", shard), ("driver", driver.metric_label())],
            ) {
                missing.push(format!("veza_shard_driver{{shard=\"{shard}\"}}"));
            }
        }
        for (from, to) in [("0", "1"), ("1", "0")] {
            for name in ["veza_ring_depth", "veza_ring_full_total"] {
                if !metrics.has(name, &[("from", from), ("to", to)]) {
                    missing.push(format!("{name}{{from=\"{from}\",to=\"{to}\"}}"));
                }
            }
        }
        for name in [
            "veza_loop_turn_latency_seconds_sum",
            "veza_loop_turn_latency_seconds_count",
        ] {
            if !metrics.has(name, &[]) {
                missing.push(name.to_owned());
            }
        }
        assert!(
            missing.is_empty(),
            "missing series: {missing:#?}\n--- /metrics ---\n{}",
            metrics.text
        );
    });
}

#[test]
fn loop_turn_latency_is_one_merged_cumulative_histogram() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        // Loop turns are sampled periodically, so the first samples may
        // come a moment after the start.
        let metrics = eventually(Duration::from_secs(3), "loop turns are sampled", || {
            let metrics = server.metrics();
            let count = metrics.sum("veza_loop_turn_latency_seconds_count", &[]);
            (count > 0.0)
                .then_some(metrics)
                .ok_or(format!("_count is {count}"))
        });
        let name = "veza_loop_turn_latency_seconds";
        assert!(
            metrics.text.contains(&format!("# TYPE {name} histogram")),
            "{name} is declared a histogram"
        );
        let buckets: Vec<_> = metrics
            .matching("veza_loop_turn_latency_seconds_bucket", &[])
            .collect();
        assert!(
            buckets
                .iter()
                .all(|bucket| !bucket.labels.contains_key("shard")),
            "the histogram is merged over shards: {}",
            metrics.lines_of(name)
        );
        let counts: Vec<f64> = buckets.iter().map(|bucket| bucket.value).collect();
        assert!(
            counts.windows(2).all(|pair| pair[0] <= pair[1]),
            "buckets are cumulative: {counts:?}"
        );
        let infinite = metrics.value("veza_loop_turn_latency_seconds_bucket", &[("le", "+Inf")]);
        let count = metrics.value("veza_loop_turn_latency_seconds_count", &[]);
        assert!(
            infinite.is_some(),
            "a +Inf bucket: {}",
            metrics.lines_of(name)
        );
        assert_eq!(infinite, count, "the +Inf bucket equals _count");
    });
}

#[test]
fn metrics_count_requests_bytes_and_websocket_frames() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let before = server.metrics();
        for _ in 0..5 {
            assert_eq!(server.get("/health").status, 200);
        }
        let mut socket = RawWebSocket::connect(server.addr());
        socket.assert_echoes(b"one");
        socket.assert_echoes(b"two");
        let after = server.metrics();
        let grew = |name: &str| after.sum(name, &[]) - before.sum(name, &[]);
        // Six requests: five GETs and the upgrade (the /metrics GETs of this
        // test come on top, so at least six).
        assert!(
            grew("veza_http_requests_total") >= 6.0,
            "requests grew by {}",
            grew("veza_http_requests_total")
        );
        assert!(grew("veza_connections_accepted_total") >= 6.0);
        assert!(grew("veza_bytes_received_total") > 0.0);
        assert!(grew("veza_bytes_sent_total") > 0.0);
        assert!(grew("veza_websocket_frames_received_total") >= 2.0);
        assert!(grew("veza_websocket_frames_sent_total") >= 2.0);
        let open = after.sum("veza_connections_open", &[]);
        assert!(
            open >= 1.0,
            "the WebSocket (and the scrape) are open, got {open}"
        );
    });
}

#[test]
fn each_shard_reports_the_driver_it_runs_on() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let metrics = server.metrics();
        let series: Vec<_> = metrics.matching("veza_shard_driver", &[]).collect();
        assert_eq!(
            series.len(),
            2,
            "one driver series per shard: {}",
            metrics.lines_of("veza_shard_driver")
        );
        for sample in series {
            assert_eq!(sample.labels["driver"], driver.metric_label());
            assert_eq!(sample.value, 1.0);
        }
    });
}

// Configuration is validated before any driver starts, so these run once.

/// Runs the binary with `env` and `args` and expects exit code 2 with
/// `key` named on stderr.
fn check_config_refused(options: ServerOptions, key: &str) {
    let exited = options.run_expecting_exit(Duration::from_secs(5));
    assert_eq!(
        exited.status.code(),
        Some(2),
        "exit status; stderr:\n{}",
        exited.stderr
    );
    assert!(
        exited.stderr.contains(key),
        "stderr must name {key:?}, it said:\n{}",
        exited.stderr
    );
}

#[test]
fn invalid_environment_values_exit_with_code_2_naming_the_key() {
    let cases = [
        (
            "VEZA_LIMITS_HTTP_HEAD_BYTES_MAX",
            "abc",
            "limits.http_head_bytes_max",
        ),
        (
            "VEZA_LIMITS_HTTP_HEAD_BYTES_MAX",
            "0",
            "limits.http_head_bytes_max",
        ),
        (
            "VEZA_LIMITS_IDLE_TIMEOUT_MS",
            "-5",
            "limits.idle_timeout_ms",
        ),
        ("VEZA_SERVER_LOG_FORMAT", "xml", "server.log_format"),
        (
            "VEZA_DEBUG_ENDPOINTS_ENABLED",
            "maybe",
            "debug.endpoints_enabled",
        ),
    ];
    for (variable, value, key) in cases {
        eprintln!("case: {variable}={value}");
        check_config_refused(
            ServerOptions::new(Driver::IoUring).env(variable, value),
            key,
        );
    }
}

#[test]
fn config_file_with_an_unknown_key_exits_with_code_2_naming_it() {
    let file = config_file("[limits]\nhttp_head_bytes_maxx = 10\n");
    check_config_refused(
        ServerOptions::new(Driver::IoUring)
            .arg("--config")
            .arg(file.path()),
        "http_head_bytes_maxx",
    );
}

#[test]
fn config_file_with_a_bad_value_exits_with_code_2_naming_the_key() {
    let zero = config_file("[limits]\nhttp_head_bytes_max = 0\n");
    check_config_refused(
        ServerOptions::new(Driver::IoUring)
            .arg("--config")
            .arg(zero.path()),
        "limits.http_head_bytes_max",
    );
    let wrong_type = config_file("[limits]\nidle_timeout_ms = \"soon\"\n");
    check_config_refused(
        ServerOptions::new(Driver::IoUring)
            .arg("--config")
            .arg(wrong_type.path()),
        "idle_timeout_ms",
    );
}

#[test]
fn config_file_values_are_applied() {
    for_each_driver(|driver| {
        let file = config_file("[limits]\nhttp_target_bytes_max = 100\n");
        let server = ServerOptions::new(driver)
            .arg("--config")
            .arg(file.path())
            .start();
        let at_limit = format!("/{}", "a".repeat(99));
        server.get(&at_limit).assert_error(404, "not_found");
        let over_limit = format!("/{}", "a".repeat(100));
        server.get(&over_limit).assert_error(414, "target_too_long");
    });
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("create a config file");
    file.write_all(text.as_bytes())
        .expect("write the config file");
    file
}

#[test]
fn sigterm_closes_every_websocket_with_1001_and_exits_0() {
    for_each_driver(|driver| {
        let mut server = TestServer::start(driver, &[]);
        let url = server.ws_url("/v1/echo");
        let runtime = TestRuntime::new();
        let mut clients = runtime.run(async {
            let mut clients = Vec::new();
            for client_idx in 0..3 {
                let mut client = connect(&url).await;
                send(&mut client, Message::text(format!("client {client_idx}"))).await;
                next_data_message(&mut client).await;
                clients.push(client);
            }
            clients
        });
        let signalled_at = Instant::now();
        server.signal(libc::SIGTERM);
        runtime.run(async {
            // Read all three concurrently: each answers the close as it
            // arrives, which is what lets the server finish draining.
            let tasks: Vec<_> = clients
                .drain(..)
                .map(|mut client| {
                    tokio::spawn(async move { expect_close(&mut client, 1001).await })
                })
                .collect();
            for task in tasks {
                within("a client to see 1001", task)
                    .await
                    .expect("the client task");
            }
        });
        let status = server.wait_for_exit(Duration::from_secs(5));
        assert!(status.is_some(), "still running 5 s after SIGTERM");
        assert_eq!(status.unwrap().code(), Some(0), "exit status after SIGTERM");
        eprintln!("exited {:?} after SIGTERM", signalled_at.elapsed());
    });
}

#[test]
fn sigterm_drain_gives_up_on_silent_clients_after_shutdown_drain_ms_max_and_refuses_new_ones() {
    for_each_driver(|driver| {
        let mut server =
            TestServer::start(driver, &[("VEZA_SERVER_SHUTDOWN_DRAIN_MS_MAX", "1500")]);
        let mut silent = RawWebSocket::connect(server.addr());
        silent.assert_echoes(b"alive");
        let signalled_at = Instant::now();
        server.signal(libc::SIGTERM);
        let close = silent.read_until_close();
        assert_eq!(close.close_code(), Some(1001), "shutdown close code");
        // The silent client never answers; meanwhile nobody new is served.
        // The close came from one shard; the pause lets every shard see the
        // shutdown before the probe.
        std::thread::sleep(Duration::from_millis(200));
        match http::try_get(server.addr(), "/health", Duration::from_millis(300)) {
            Err(_) => {}
            Ok(response) => assert_eq!(
                response.status, 503,
                "a new request during the drain was served"
            ),
        }
        let status = server.wait_for_exit(Duration::from_millis(1500 + 2500));
        let exited_after = signalled_at.elapsed();
        assert!(
            status.is_some(),
            "still running {exited_after:?} after SIGTERM with a 1500 ms drain"
        );
        assert_eq!(
            status.unwrap().code(),
            Some(0),
            "exit status after the drain"
        );
        assert!(
            exited_after >= Duration::from_millis(1200),
            "exited after {exited_after:?}: the drain must wait for clients"
        );
        silent.expect_tcp_closed();
    });
}

#[test]
fn sigint_with_no_clients_exits_0_promptly() {
    for_each_driver(|driver| {
        let mut server = TestServer::start(driver, &[]);
        server.signal(libc::SIGINT);
        let status = server.wait_for_exit(Duration::from_secs(3));
        assert_eq!(
            status.and_then(|status| status.code()),
            Some(0),
            "exit status after SIGINT"
        );
    });
}

#[test]
fn shard_blocked_past_the_stall_budget_is_counted_as_stalled() {
    for_each_driver(|driver| {
        let server = TestServer::start(
            driver,
            &[
                ("VEZA_DEBUG_ENDPOINTS_ENABLED", "true"),
                ("VEZA_STALL_BUDGET_MS", "50"),
                ("VEZA_STALL_CHECK_INTERVAL_MS", "10"),
            ],
        );
        let before = server.metrics().sum("veza_shard_stalls_total", &[]);
        let started = Instant::now();
        let response =
            HttpConnection::open(server.addr()).request(&post_request("/debug/stall?ms=300", b""));
        assert_eq!(response.status, 200, "body: {}", response.body_text());
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "the stall lasted {:?}",
            started.elapsed()
        );
        eventually(Duration::from_secs(2), "the stall is counted", || {
            let stalls = server.metrics().sum("veza_shard_stalls_total", &[]);
            (stalls > before)
                .then_some(())
                .ok_or(format!("{stalls} stalls, {before} before"))
        });
    });
}

#[test]
fn debug_stall_endpoint_is_not_found_unless_debug_endpoints_are_enabled() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let started = Instant::now();
        let response =
            HttpConnection::open(server.addr()).request(&post_request("/debug/stall?ms=2000", b""));
        response.assert_error(404, "not_found");
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "the shard must not stall"
        );
    });
}

#[test]
fn peer_silent_after_an_idle_ping_is_closed_with_4009_while_a_ponging_client_stays() {
    for_each_driver(|driver| {
        let server = TestServer::start(
            driver,
            &[
                ("VEZA_LIMITS_WEBSOCKET_PING_INTERVAL_MS", "300"),
                ("VEZA_LIMITS_WEBSOCKET_PONG_TIMEOUT_MS", "300"),
            ],
        );
        let addr = server.addr();
        let url = server.ws_url("/v1/echo");
        block_on(async {
            let mut answering = connect(&url).await;
            let silent = tokio::task::spawn_blocking(move || {
                let connected_at = Instant::now();
                let mut silent = RawWebSocket::connect(addr);
                let first = silent.expect_frame();
                assert_eq!(
                    first.opcode,
                    opcode::PING,
                    "an idle peer is pinged first: {}",
                    first.summary()
                );
                let pinged_after = connected_at.elapsed();
                let close = silent.read_until_close();
                let closed_after = connected_at.elapsed();
                assert_eq!(
                    close.close_code(),
                    Some(4009),
                    "close code for a silent peer"
                );
                // The server waits a while for the close handshake, then
                // closes TCP.
                silent.expect_tcp_closed();
                (pinged_after, closed_after)
            });
            // tungstenite answers each ping while the stream is polled, so
            // the answering client is polled for as long as the silent one
            // takes to be dropped.
            let mut silent = std::pin::pin!(silent);
            let mut n_pings = 0;
            let (pinged_after, closed_after) = within("the silent peer to be dropped", async {
                loop {
                    tokio::select! {
                        outcome = &mut silent => break outcome.expect("the silent peer"),
                        message = answering.next() => match message {
                            Some(Ok(Message::Ping(_))) => n_pings += 1,
                            other => panic!("the answering client must stay open, got {other:?}"),
                        },
                    }
                }
            })
            .await;
            assert!(n_pings >= 1, "the idle answering client was pinged too");
            assert!(
                pinged_after >= Duration::from_millis(250),
                "pinged after {pinged_after:?}, before the 300 ms interval"
            );
            assert!(
                (Duration::from_millis(550)..=Duration::from_millis(2000)).contains(&closed_after),
                "close frame after {closed_after:?}: ping at 300 ms, then 300 ms to answer"
            );
            send(&mut answering, Message::text("still here")).await;
            assert_eq!(
                next_data_message(&mut answering).await,
                Message::text("still here")
            );
        });
    });
}

#[test]
fn client_that_never_reads_is_dropped_at_send_queue_bytes_max_while_others_keep_echoing() {
    const SEND_QUEUE_BYTES_MAX: usize = 65_536;
    const FLOOD_BYTES_MAX: usize = 64 * 1024 * 1024;
    for_each_driver(|driver| {
        let server = TestServer::start(
            driver,
            &[(
                "VEZA_LIMITS_SEND_QUEUE_BYTES_MAX",
                &SEND_QUEUE_BYTES_MAX.to_string(),
            )],
        );
        let url = server.ws_url("/v1/echo");
        let runtime = TestRuntime::new();
        let mut bystander = runtime.run(async { connect(&url).await });
        let before = limit_hits(&server.metrics(), "send_queue_bytes");

        // A small receive window makes the echo back up in the server.
        let connection = HttpConnection::open_with_receive_buffer(server.addr(), 4096);
        let (mut flooder, _) = RawWebSocket::handshake_on(connection, &[]);
        let message = client_frame(opcode::BINARY, true, &[0x5A; 16 * 1024]);
        let mut n_sent_bytes = 0;
        let flood_error = loop {
            if n_sent_bytes >= FLOOD_BYTES_MAX {
                panic!("the server took {n_sent_bytes} bytes from a client that reads nothing and kept it open");
            }
            match flooder.try_send(&message) {
                Ok(()) => n_sent_bytes += message.len(),
                Err(error) => break error,
            }
        };
        assert!(
            http::is_reset(&flood_error),
            "the flood must end because the server closed the connection, it ended with: {flood_error} \
             (a timeout means the server stopped reading instead)"
        );
        eprintln!("the server closed the flooder after {n_sent_bytes} bytes");
        eventually(
            Duration::from_secs(2),
            "the send queue limit is counted",
            || {
                let hits = limit_hits(&server.metrics(), "send_queue_bytes");
                (hits >= before + 1.0)
                    .then_some(())
                    .ok_or(format!("{hits} hits, {before} before"))
            },
        );
        runtime.run(async {
            send(&mut bystander, Message::text("unaffected")).await;
            assert_eq!(
                next_data_message(&mut bystander).await,
                Message::text("unaffected")
            );
        });
    });
}
