//! HTTP/1.1 as a client sees it: every limit answers with its status and a
//! JSON error body `{"error", "detail"}`, is counted in
//! `veza_limit_hits_total`, and (where the connection can no longer be
//! trusted) closes the connection; a request just inside a limit is served.
//! Keep-alive, pipelining, HEAD and the echo endpoint behave as in RFC 9112.
//! Every test runs on both drivers.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::http::{get_request, post_request, HttpConnection};
use support::metrics::{limit_hits, Metrics};
use support::{eventually, for_each_driver, TestServer};

/// Sends `request` on a new connection and asserts the error answer: status,
/// JSON body with `name`, `Connection: close`, then the TCP close.
fn check_refused(server: &TestServer, request: &[u8], status: u16, name: &str) {
    let mut connection = HttpConnection::open(server.addr());
    let response = connection.request(request);
    response.assert_error(status, name);
    response.assert_connection_close();
    connection.assert_closed_by_server(Duration::from_secs(2));
}

/// Asserts that `veza_limit_hits_total{limit}` (over all shards) reaches
/// `before + 1`.
fn assert_limit_counted_once(server: &TestServer, limit: &str, before: f64) {
    eventually(
        Duration::from_secs(2),
        &format!("limit {limit} is counted"),
        || {
            let hits = limit_hits(&server.metrics(), limit);
            (hits == before + 1.0)
                .then_some(())
                .ok_or(format!("{hits} hits, {before} before"))
        },
    );
}

/// A GET for `/health` whose head has `n_extra_headers` fields after `Host`,
/// each `X-Field-i: v`.
fn get_with_extra_headers(n_extra_headers: usize) -> Vec<u8> {
    let mut request = String::from("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for field_idx in 0..n_extra_headers {
        request.push_str(&format!("X-Field-{field_idx}: v\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// A GET for `/health` whose head is exactly `head_bytes` long, padded with
/// one `X-Fill` field.
fn get_with_head_of_length(head_bytes: usize) -> Vec<u8> {
    let prefix = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fill: ";
    let suffix = "\r\n\r\n";
    let fill = head_bytes - prefix.len() - suffix.len();
    let request = format!("{prefix}{}{suffix}", "f".repeat(fill));
    assert_eq!(request.len(), head_bytes);
    request.into_bytes()
}

#[test]
fn head_over_http_head_bytes_max_is_answered_431_head_too_large_and_counted() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[("VEZA_LIMITS_HTTP_HEAD_BYTES_MAX", "2048")]);
        let response = HttpConnection::open(server.addr()).request(&get_with_head_of_length(2048));
        assert_eq!(
            response.status, 200,
            "a head of exactly 2048 bytes is served"
        );
        let before = limit_hits(&server.metrics(), "http_head_bytes");
        check_refused(
            &server,
            &get_with_head_of_length(2049),
            431,
            "head_too_large",
        );
        assert_limit_counted_once(&server, "http_head_bytes", before);
    });
}

#[test]
fn head_over_the_default_8192_bytes_is_answered_431_head_too_large() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        check_refused(
            &server,
            &get_with_head_of_length(9000),
            431,
            "head_too_large",
        );
    });
}

#[test]
fn more_than_http_header_count_max_fields_are_answered_431_too_many_headers_and_counted() {
    // Host plus 63 fields is 64, the default maximum; one more is refused.
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let response = HttpConnection::open(server.addr()).request(&get_with_extra_headers(63));
        assert_eq!(response.status, 200, "64 header fields are served");
        let before = limit_hits(&server.metrics(), "http_header_count");
        check_refused(
            &server,
            &get_with_extra_headers(64),
            431,
            "too_many_headers",
        );
        assert_limit_counted_once(&server, "http_header_count", before);
    });
}

#[test]
fn target_over_http_target_bytes_max_is_answered_414_target_too_long_and_counted() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let at_limit = format!("/{}", "a".repeat(4095));
        let response = HttpConnection::open(server.addr()).request(&get_request(&at_limit));
        response.assert_error(404, "not_found");
        let before = limit_hits(&server.metrics(), "http_target_bytes");
        let over_limit = format!("/{}", "a".repeat(4096));
        check_refused(&server, &get_request(&over_limit), 414, "target_too_long");
        assert_limit_counted_once(&server, "http_target_bytes", before);
    });
}

#[test]
fn body_over_http_body_bytes_max_is_answered_413_body_too_large_and_counted() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[("VEZA_LIMITS_HTTP_BODY_BYTES_MAX", "1000")]);
        let response =
            HttpConnection::open(server.addr()).request(&post_request("/v1/echo", &[b'b'; 1000]));
        assert_eq!(
            (response.status, response.body.len()),
            (200, 1000),
            "a body at the limit is echoed"
        );

        let before = limit_hits(&server.metrics(), "http_body_bytes");
        // Only the head: the announced length alone must be refused, before
        // any body byte is read.
        let head_only = "POST /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1001\r\n\r\n";
        check_refused(&server, head_only.as_bytes(), 413, "body_too_large");
        assert_limit_counted_once(&server, "http_body_bytes", before);
    });
}

#[test]
fn chunked_body_over_http_body_bytes_max_is_answered_413_body_too_large() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[("VEZA_LIMITS_HTTP_BODY_BYTES_MAX", "1000")]);
        let before = limit_hits(&server.metrics(), "http_body_bytes");
        let chunk = "a".repeat(501);
        let request = format!(
            "POST /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n\
             1f5\r\n{chunk}\r\n1f5\r\n{chunk}\r\n0\r\n\r\n"
        );
        check_refused(&server, request.as_bytes(), 413, "body_too_large");
        assert_limit_counted_once(&server, "http_body_bytes", before);
    });
}

#[test]
fn transfer_coding_other_than_chunked_is_answered_501_transfer_encoding_unsupported() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let request =
            "POST /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        check_refused(
            &server,
            request.as_bytes(),
            501,
            "transfer_encoding_unsupported",
        );
    });
}

#[test]
fn http_versions_other_than_1_0_and_1_1_are_answered_505_http_version_unsupported() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        for version in ["HTTP/1.2", "HTTP/2.0"] {
            let request = format!("GET /health {version}\r\nHost: 127.0.0.1\r\n\r\n");
            eprintln!("case: {version}");
            check_refused(&server, request.as_bytes(), 505, "http_version_unsupported");
        }
    });
}

#[test]
fn malformed_requests_are_answered_400_bad_request_and_closed() {
    let cases: [(&str, &str); 5] = [
        ("no request line", "GARBAGE\r\n\r\n"),
        ("header without a colon", "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nNoColonHere\r\n\r\n"),
        ("space before the colon", "GET /health HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n"),
        ("Content-Length not a number", "POST /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ten\r\n\r\n"),
        (
            "two different Content-Length values",
            "POST /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        ),
    ];
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        for (name, request) in cases {
            eprintln!("case: {name}");
            check_refused(&server, request.as_bytes(), 400, "bad_request");
        }
    });
}

#[test]
fn slowloris_head_is_answered_408_and_closed_while_other_clients_are_served() {
    // One shard, so the slow client and the normal one share a loop: the
    // slow one must not block it.
    for_each_driver(|driver| {
        let server = TestServer::start(
            driver,
            &[
                ("VEZA_SERVER_SHARDS", "1"),
                ("VEZA_LIMITS_HEADER_READ_TIMEOUT_MS", "1000"),
            ],
        );
        let before = limit_hits(&server.metrics(), "header_read_timeout");
        let connected_at = Instant::now();
        let mut slow = HttpConnection::open(server.addr());
        slow.send(b"GET /health HTTP/1.1\r\n");
        let writer = trickle_one_byte_every_200_ms(
            &slow,
            b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        );

        std::thread::sleep(Duration::from_millis(300));
        let normal = server.get("/health");
        assert_eq!(normal.status, 200, "a normal client is served meanwhile");
        assert!(
            connected_at.elapsed() < Duration::from_millis(1000),
            "the normal client must be served before the slow one times out"
        );

        let response = slow.read_response();
        let answered_after = connected_at.elapsed();
        writer.stop();
        response.assert_error(408, "header_read_timeout");
        response.assert_connection_close();
        slow.assert_closed_by_server(Duration::from_secs(1));
        let closed_after = connected_at.elapsed();
        assert!(
            answered_after >= Duration::from_millis(900),
            "answered after {answered_after:?}, before the 1000 ms budget"
        );
        assert!(
            closed_after <= Duration::from_millis(2500),
            "closed after {closed_after:?}; the budget was 1000 ms"
        );
        assert_limit_counted_once(&server, "header_read_timeout", before);
    });
}

/// A thread that writes `bytes` to `connection`'s socket one byte every
/// 200 ms until stopped, the last byte is sent, or a write fails.
struct Trickle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trickle {
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the trickle thread does not panic");
        }
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn trickle_one_byte_every_200_ms(connection: &HttpConnection, bytes: &[u8]) -> Trickle {
    let mut stream = connection.stream().try_clone().expect("clone the socket");
    let bytes = bytes.to_vec();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_seen = stop.clone();
    let thread = std::thread::spawn(move || {
        for byte in bytes {
            std::thread::sleep(Duration::from_millis(200));
            if stop_seen.load(Ordering::Relaxed) || stream.write_all(&[byte]).is_err() {
                return;
            }
        }
    });
    Trickle {
        stop,
        thread: Some(thread),
    }
}

#[test]
fn new_connection_that_sends_nothing_is_closed_after_header_read_timeout() {
    // The first request head is due header_read_timeout_ms after the
    // accept; idle_timeout_ms is for keep-alive connections between
    // requests. Otherwise a client holds a slot for the idle timeout by
    // connecting and saying nothing.
    for_each_driver(|driver| {
        let server = TestServer::start(
            driver,
            &[
                ("VEZA_LIMITS_HEADER_READ_TIMEOUT_MS", "1000"),
                ("VEZA_LIMITS_IDLE_TIMEOUT_MS", "60000"),
            ],
        );
        let connected_at = Instant::now();
        let (mut stream, _) = HttpConnection::open(server.addr()).into_parts();
        let mut said = Vec::new();
        let outcome = read_until_closed(&mut stream, Duration::from_secs(3), &mut said);
        let silent_for = connected_at.elapsed();
        assert!(
            outcome.is_ok(),
            "a connection that sent nothing is still open after 3 s: {outcome:?}"
        );
        assert!(
            said.is_empty() || said.starts_with(b"HTTP/1.1 408"),
            "before closing the server may only say 408, said {:?}",
            String::from_utf8_lossy(&said)
        );
        assert!(
            silent_for >= Duration::from_millis(900),
            "closed after {silent_for:?}, before the 1000 ms budget"
        );
    });
}

#[test]
fn idle_keep_alive_connection_is_closed_after_idle_timeout_and_counted() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[("VEZA_LIMITS_IDLE_TIMEOUT_MS", "500")]);
        let before = limit_hits(&server.metrics(), "idle_timeout");
        let mut connection = HttpConnection::open(server.addr());
        assert_eq!(connection.request(&get_request("/health")).status, 200);
        let idle_since = Instant::now();
        let (mut stream, leftover) = connection.into_parts();
        assert!(leftover.is_empty(), "nothing after the response");
        // The server may close silently or say 408 first; either way the
        // socket must end, and not before the idle budget.
        let mut said = Vec::new();
        let outcome = read_until_closed(&mut stream, Duration::from_secs(3), &mut said);
        let idle_for = idle_since.elapsed();
        assert!(
            outcome.is_ok(),
            "idle connection still open after 3 s: {outcome:?}"
        );
        assert!(
            said.is_empty() || said.starts_with(b"HTTP/1.1 408"),
            "before closing the server may only say 408, said {:?}",
            String::from_utf8_lossy(&said)
        );
        assert!(
            (Duration::from_millis(450)..=Duration::from_millis(2000)).contains(&idle_for),
            "closed after {idle_for:?} idle, the budget was 500 ms"
        );
        assert_limit_counted_once(&server, "idle_timeout", before);
    });
}

/// Reads everything until the peer closes or `limit` passes, collecting
/// what it said into `said`.
fn read_until_closed(
    stream: &mut std::net::TcpStream,
    limit: Duration,
    said: &mut Vec<u8>,
) -> Result<(), String> {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 4096];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!(
                "still open; it said {:?}",
                String::from_utf8_lossy(said)
            ));
        }
        stream
            .set_read_timeout(Some(remaining))
            .expect("set a read timeout");
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n_read) => said.extend_from_slice(&chunk[..n_read]),
            Err(error) if support::http::is_reset(&error) => return Ok(()),
            Err(error) if support::http::is_timeout(&error) => continue,
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// `GET /metrics` on an open connection: with every slot taken, a new
/// connection would be refused.
fn metrics_over(connection: &mut HttpConnection) -> Metrics {
    let response = connection.request(&get_request("/metrics"));
    assert_eq!(
        response.status,
        200,
        "GET /metrics: {}",
        response.body_text()
    );
    Metrics::parse(&response.body_text())
}

#[test]
fn connection_over_connections_per_shard_max_is_answered_503_and_a_freed_slot_is_reused() {
    for_each_driver(|driver| {
        let server = TestServer::start(
            driver,
            &[
                ("VEZA_SERVER_SHARDS", "1"),
                ("VEZA_LIMITS_CONNECTIONS_PER_SHARD_MAX", "2"),
            ],
        );
        // The harness's own probe connections may still be closing, so the
        // two admitted connections are retried until they are served.
        let mut admitted = Vec::new();
        while admitted.len() < 2 {
            admitted.push(eventually(
                Duration::from_secs(2),
                "a connection is admitted",
                || {
                    let mut connection = HttpConnection::open(server.addr());
                    let response = connection.request(&get_request("/health"));
                    (response.status == 200)
                        .then_some(connection)
                        .ok_or(format!("status {}", response.status))
                },
            ));
        }
        let before = limit_hits(&metrics_over(&mut admitted[1]), "connections_per_shard");

        let mut third = HttpConnection::open(server.addr());
        let response = third.read_response();
        response.assert_error(503, "connection_limit");
        third.assert_closed_by_server(Duration::from_secs(2));
        let hits = limit_hits(&metrics_over(&mut admitted[1]), "connections_per_shard");
        assert_eq!(hits, before + 1.0, "the refused connection is counted");

        drop(admitted.remove(0));
        eventually(
            Duration::from_secs(2),
            "the freed slot admits a new connection",
            || {
                let response = server.get("/health");
                (response.status == 200)
                    .then_some(())
                    .ok_or(format!("status {}", response.status))
            },
        );
        let still = admitted[0].request(&get_request("/health"));
        assert_eq!(
            still.status, 200,
            "the connection that stayed open is still served"
        );
    });
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order_on_the_same_connection() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let mut connection = HttpConnection::open(server.addr());
        let mut requests = get_request("/health");
        requests.extend(post_request("/v1/echo", b"first body"));
        requests.extend(get_request("/no-such-path"));
        requests.extend(b"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        requests.extend(post_request("/v1/echo", b"second body"));
        connection.send(&requests);

        assert_eq!(connection.read_response().json()["status"], "ok");
        assert_eq!(connection.read_response().body, b"first body");
        connection.read_response().assert_error(404, "not_found");
        let head = connection.read_response_to_head();
        assert_eq!(head.status, 200);
        assert_eq!(connection.read_response().body, b"second body");
        // Still open for more.
        assert_eq!(connection.request(&get_request("/health")).status, 200);
    });
}

#[test]
fn pipelined_requests_whose_answers_outgrow_the_output_bound_all_arrive_in_order() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let mut connection = HttpConnection::open(server.addr());
        // 64 echoes of 4 KiB each: 256 KiB of answers, four times the
        // 64 KiB the server keeps before flushing mid-pipeline.
        let mut requests = Vec::new();
        for index in 0..64u8 {
            requests.extend(post_request("/v1/echo", &[index; 4096]));
        }
        connection.send(&requests);
        for index in 0..64u8 {
            let response = connection.read_response();
            assert_eq!(response.status, 200);
            assert_eq!(
                response.body,
                vec![index; 4096],
                "answer {index} out of order or damaged"
            );
        }
        assert_eq!(connection.request(&get_request("/health")).status, 200);
    });
}

#[test]
fn head_answers_the_headers_of_get_without_a_body() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let get = server.get("/health");
        let mut connection = HttpConnection::open(server.addr());
        // HEAD then GET in one write: had the server sent a body after the
        // HEAD answer, the GET answer would not parse.
        let mut requests = b"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec();
        requests.extend(get_request("/health"));
        connection.send(&requests);
        let head = connection.read_response_to_head();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-length"), get.header("content-length"));
        assert_eq!(head.header("content-type"), get.header("content-type"));
        let after = connection.read_response();
        assert_eq!((after.status, after.body), (200, get.body));
    });
}

#[test]
fn post_echo_with_content_length_returns_the_same_bytes_as_octet_stream() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let mut connection = HttpConnection::open(server.addr());
        for length in [0, 1, 1000, 1_000_000] {
            let body: Vec<u8> = (0..length).map(|index| (index * 7 % 256) as u8).collect();
            let response = connection.request(&post_request("/v1/echo", &body));
            assert_eq!(response.status, 200, "echo of {length} bytes");
            assert_eq!(
                response.header("content-type"),
                Some("application/octet-stream")
            );
            assert!(response.body == body, "echo of {length} bytes changed");
        }
    });
}

#[test]
fn post_echo_with_a_chunked_body_returns_the_joined_chunks() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let mut connection = HttpConnection::open(server.addr());
        let request =
            "POST /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                       5\r\nhello\r\n7\r\n, world\r\nA\r\n0123456789\r\n0\r\n\r\n";
        let response = connection.request(request.as_bytes());
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(response.body_text(), "hello, world0123456789");
        // The connection is reusable after a chunked body.
        assert_eq!(connection.request(&get_request("/health")).status, 200);
    });
}

#[test]
fn chunk_extensions_and_trailer_fields_are_not_part_of_the_echoed_body() {
    // RFC 9112 §7.1.1: a recipient ignores chunk extensions it does not know.
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let request =
            "POST /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                       5;name=value\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n";
        let response = HttpConnection::open(server.addr()).request(request.as_bytes());
        assert_eq!(
            (response.status, response.body_text()),
            (200, "hello".to_owned())
        );
    });
}

#[test]
fn unknown_path_is_404_not_found_and_the_connection_stays_usable() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let mut connection = HttpConnection::open(server.addr());
        for path in ["/", "/nope", "/v1/echo/extra", "/healthz"] {
            connection
                .request(&get_request(path))
                .assert_error(404, "not_found");
        }
        assert_eq!(connection.request(&get_request("/health")).status, 200);
    });
}

#[test]
fn wrong_method_on_a_known_path_is_405_method_not_allowed_and_the_connection_stays_usable() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let mut connection = HttpConnection::open(server.addr());
        for (method, path) in [
            ("DELETE", "/health"),
            ("POST", "/ready"),
            ("PUT", "/metrics"),
            ("DELETE", "/v1/echo"),
        ] {
            let request =
                format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
            eprintln!("case: {method} {path}");
            connection
                .request(request.as_bytes())
                .assert_error(405, "method_not_allowed");
        }
        assert_eq!(connection.request(&get_request("/health")).status, 200);
    });
}

#[test]
fn http_1_0_request_is_served_and_the_connection_closed() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let mut connection = HttpConnection::open(server.addr());
        let response = connection.request(b"GET /health HTTP/1.0\r\n\r\n");
        assert_eq!(response.status, 200);
        connection.assert_closed_by_server(Duration::from_secs(2));
    });
}

#[test]
fn connection_close_request_is_answered_then_closed() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let mut connection = HttpConnection::open(server.addr());
        let response = connection
            .request(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        assert_eq!(response.status, 200);
        response.assert_connection_close();
        connection.assert_closed_by_server(Duration::from_secs(2));
    });
}
