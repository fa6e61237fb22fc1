//! A client that breaks the WebSocket protocol is closed with the close code
//! RFC 6455 asks for, then the server closes TCP, and nothing else is lost:
//! the next connection still echoes. Frames are built by hand (no client
//! library would send them). Every test runs on both drivers.
//!
//! Codes: 1002 protocol error, 1007 invalid UTF-8, 1009 too big.

mod support;

use std::time::Duration;

use support::http::HttpConnection;
use support::metrics::limit_hits;
use support::raw_websocket::{
    client_frame, close_payload, encode_frame, encode_header, opcode, upgrade_request,
    RawWebSocket, HANDSHAKE_KEY, MASK_KEY,
};
use support::{eventually, for_each_driver, TestServer};

/// Sends `bytes` on a fresh WebSocket, expects the server's close frame with
/// `code` and the TCP close after it, then checks that a new connection
/// still echoes. `case` names the input in failure messages.
fn check_closes_with(server: &TestServer, case: &str, bytes: &[u8], code: u16) {
    eprintln!("case: {case}");
    let mut socket = RawWebSocket::connect(server.addr());
    socket.send(bytes);
    socket.expect_close(code);
    RawWebSocket::connect(server.addr())
        .assert_echoes(format!("still serving after {case}").as_bytes());
}

/// A masked text frame, or the first fragment of a text message if `fin` is
/// false.
fn text(fin: bool, payload: &[u8]) -> Vec<u8> {
    client_frame(opcode::TEXT, fin, payload)
}

fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

#[test]
fn unmasked_client_frame_is_closed_with_1002() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let unmasked = encode_frame(true, 0, opcode::TEXT, None, b"hello");
        check_closes_with(&server, "unmasked text frame", &unmasked, 1002);
    });
}

#[test]
fn reserved_bits_without_a_negotiated_extension_are_closed_with_1002() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        for (name, rsv_bits) in [("RSV1", 0b100), ("RSV2", 0b010), ("RSV3", 0b001)] {
            let frame = encode_frame(true, rsv_bits, opcode::TEXT, Some(MASK_KEY), b"hello");
            check_closes_with(&server, &format!("{name} set"), &frame, 1002);
        }
    });
}

#[test]
fn reserved_opcodes_are_closed_with_1002() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        for reserved in (3..=7).chain(11..=15) {
            let frame = encode_frame(true, 0, reserved, Some(MASK_KEY), b"");
            check_closes_with(&server, &format!("opcode {reserved}"), &frame, 1002);
        }
    });
}

#[test]
fn control_frames_with_more_than_125_payload_bytes_are_closed_with_1002() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        for (name, control) in [("ping", opcode::PING), ("pong", opcode::PONG)] {
            let frame = client_frame(control, true, &[b'x'; 126]);
            check_closes_with(&server, &format!("{name} of 126 bytes"), &frame, 1002);
        }
        let long_close = client_frame(opcode::CLOSE, true, &close_payload(1000, &"x".repeat(124)));
        check_closes_with(&server, "close of 126 bytes", &long_close, 1002);
    });
}

#[test]
fn fragmented_control_frames_are_closed_with_1002() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        for (name, control) in [("ping", opcode::PING), ("pong", opcode::PONG)] {
            let frame = client_frame(control, false, b"part");
            check_closes_with(&server, &format!("{name} without FIN"), &frame, 1002);
        }
    });
}

#[test]
fn continuation_without_a_started_message_is_closed_with_1002() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        for fin in [true, false] {
            let frame = client_frame(opcode::CONTINUATION, fin, b"orphan");
            check_closes_with(
                &server,
                &format!("lone continuation, FIN {fin}"),
                &frame,
                1002,
            );
        }
    });
}

#[test]
fn new_data_frame_inside_a_fragmented_message_is_closed_with_1002() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        for (name, interrupting) in [("text", opcode::TEXT), ("binary", opcode::BINARY)] {
            let frames = concat(&[
                text(false, b"first half"),
                client_frame(interrupting, true, b"intruder"),
            ]);
            check_closes_with(
                &server,
                &format!("{name} inside a fragmented text"),
                &frames,
                1002,
            );
        }
    });
}

#[test]
fn close_frame_with_a_one_byte_payload_is_closed_with_1002() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let frame = client_frame(opcode::CLOSE, true, &[0x03]);
        check_closes_with(&server, "close with one byte", &frame, 1002);
    });
}

#[test]
fn close_frame_with_a_code_not_allowed_on_the_wire_is_closed_with_1002() {
    // 1005, 1006 and 1015 are for local use only; 1004 and 1016–2999 are
    // reserved; 0–999 and 5000+ are not close codes at all.
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let frame = client_frame(opcode::CLOSE, true, &close_payload(code, ""));
            check_closes_with(&server, &format!("close code {code}"), &frame, 1002);
        }
    });
}

#[test]
fn client_close_is_echoed_with_the_same_code_and_tcp_closed() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        for code in [1000, 1001, 3000, 4999] {
            let frame = client_frame(opcode::CLOSE, true, &close_payload(code, "bye"));
            check_closes_with(&server, &format!("client close {code}"), &frame, code);
        }
    });
}

#[test]
fn client_close_without_a_code_is_answered_and_tcp_closed() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let mut socket = RawWebSocket::connect(server.addr());
        socket.send(&client_frame(opcode::CLOSE, true, b""));
        let answer = socket.read_until_close();
        assert!(
            answer.payload.is_empty() || answer.close_code() == Some(1000),
            "an empty close is answered with an empty close or 1000, got {}",
            answer.summary()
        );
        socket.expect_tcp_closed();
    });
}

#[test]
fn invalid_utf8_in_a_text_message_is_closed_with_1007() {
    let cases: [(&str, &[u8]); 5] = [
        ("byte 0xFF", b"valid then \xFF"),
        ("overlong slash", b"\xC0\xAF"),
        (
            "UTF-16 surrogate",
            b"\xCE\xBA\xE1\xBD\xB9\xED\xA0\x80edited",
        ),
        ("beyond U+10FFFF", b"\xF4\x90\x80\x80"),
        ("truncated at the end", b"caf\xC3"),
    ];
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        for (name, payload) in cases {
            check_closes_with(&server, name, &text(true, payload), 1007);
        }
    });
}

#[test]
fn invalid_utf8_split_across_fragments_is_closed_with_1007() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        // 0xC3 starts a two-byte sequence; 0x28 '(' cannot continue it.
        let bad_continuation = concat(&[
            text(false, "héllo ".as_bytes()),
            client_frame(opcode::CONTINUATION, false, b"\xC3"),
            client_frame(opcode::CONTINUATION, true, b"\x28 rest"),
        ]);
        check_closes_with(
            &server,
            "bad continuation byte in the next fragment",
            &bad_continuation,
            1007,
        );
        // The message ends in the middle of a three-byte sequence.
        let truncated = concat(&[
            text(false, b"ends with half a euro "),
            client_frame(opcode::CONTINUATION, true, b"\xE2\x82"),
        ]);
        check_closes_with(
            &server,
            "message ends inside a code point",
            &truncated,
            1007,
        );
    });
}

#[test]
fn invalid_utf8_in_a_first_fragment_is_refused_before_the_message_ends() {
    // The check is incremental: the server does not wait for (and buffer) a
    // message that is already known to be invalid.
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        check_closes_with(
            &server,
            "0xFF in an unfinished text message",
            &text(false, b"\xFF"),
            1007,
        );
    });
}

const SMALL_WEBSOCKET_LIMITS: [(&str, &str); 2] = [
    ("VEZA_LIMITS_WEBSOCKET_FRAME_BYTES_MAX", "1024"),
    ("VEZA_LIMITS_WEBSOCKET_MESSAGE_BYTES_MAX", "4096"),
];

#[test]
fn frame_at_the_frame_limit_is_echoed_and_one_byte_more_is_closed_with_1009_and_counted() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &SMALL_WEBSOCKET_LIMITS);
        RawWebSocket::connect(server.addr()).assert_echoes(&[7; 1024]);
        let hits_before = limit_hits(&server.metrics(), "websocket_frame_bytes");
        let oversize = client_frame(opcode::BINARY, true, &[7; 1025]);
        check_closes_with(&server, "binary frame of 1025 bytes", &oversize, 1009);
        eventually(
            Duration::from_secs(2),
            "the frame limit hit is counted",
            || {
                let hits = limit_hits(&server.metrics(), "websocket_frame_bytes");
                (hits == hits_before + 1.0)
                    .then_some(())
                    .ok_or(format!("{hits} hits, {hits_before} before"))
            },
        );
    });
}

#[test]
fn fragmented_message_at_the_message_limit_is_echoed_and_over_it_is_closed_with_1009_and_counted() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &SMALL_WEBSOCKET_LIMITS);
        let at_limit = concat(&[
            client_frame(opcode::BINARY, false, &[1; 1024]),
            client_frame(opcode::CONTINUATION, false, &[2; 1024]),
            client_frame(opcode::CONTINUATION, false, &[3; 1024]),
            client_frame(opcode::CONTINUATION, true, &[4; 1024]),
        ]);
        let mut socket = RawWebSocket::connect(server.addr());
        socket.send(&at_limit);
        let (message_opcode, payload) = socket.read_message();
        assert_eq!((message_opcode, payload.len()), (opcode::BINARY, 4096));
        assert_eq!(
            payload,
            [[1; 1024], [2; 1024], [3; 1024], [4; 1024]].concat()
        );

        let hits_before = limit_hits(&server.metrics(), "websocket_message_bytes");
        // Five frames under the frame limit that add up to 5000 bytes.
        let mut over_limit = client_frame(opcode::BINARY, false, &[1; 1000]);
        for fragment_idx in 1..5 {
            let fin = fragment_idx == 4;
            over_limit.extend(client_frame(opcode::CONTINUATION, fin, &[1; 1000]));
        }
        check_closes_with(
            &server,
            "message of five 1000-byte fragments",
            &over_limit,
            1009,
        );
        eventually(
            Duration::from_secs(2),
            "the message limit hit is counted",
            || {
                let hits = limit_hits(&server.metrics(), "websocket_message_bytes");
                (hits == hits_before + 1.0)
                    .then_some(())
                    .ok_or(format!("{hits} hits, {hits_before} before"))
            },
        );
    });
}

#[test]
fn frame_header_announcing_a_terabyte_is_refused_from_the_header_alone() {
    // Nothing but the header is sent: a server that waited for the payload
    // (or tried to allocate it) would time this test out.
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let header = encode_header(true, 0, opcode::BINARY, Some(MASK_KEY), 1 << 40);
        check_closes_with(&server, "header announcing 2^40 bytes", &header, 1009);
    });
}

#[test]
fn upgrade_without_a_key_is_refused_with_400_websocket_key_missing() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let mut connection = HttpConnection::open(server.addr());
        let response = connection.request(&upgrade_request(&[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
        ]));
        response.assert_error(400, "websocket_key_missing");
        response.assert_connection_close();
        connection.assert_closed_by_server(Duration::from_secs(2));
    });
}

#[test]
fn upgrade_with_a_key_that_is_not_16_base64_bytes_is_refused_with_400_websocket_key_invalid() {
    // "AAAAAAAAAAAAAAAAAAAA" is valid base64 of 15 bytes, not 16.
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        for key in ["not base64!", "AAAAAAAAAAAAAAAAAAAA"] {
            let mut connection = HttpConnection::open(server.addr());
            let response = connection.request(&upgrade_request(&[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", key),
                ("Sec-WebSocket-Version", "13"),
            ]));
            response.assert_error(400, "websocket_key_invalid");
            response.assert_connection_close();
            connection.assert_closed_by_server(Duration::from_secs(2));
        }
    });
}

#[test]
fn upgrade_with_an_unsupported_version_is_refused_with_426_naming_version_13() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let mut connection = HttpConnection::open(server.addr());
        let response = connection.request(&upgrade_request(&[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", HANDSHAKE_KEY),
            ("Sec-WebSocket-Version", "8"),
        ]));
        assert_eq!(response.status, 426, "body: {}", response.body_text());
        assert_eq!(response.header("sec-websocket-version"), Some("13"));
        let body = response.json();
        assert!(
            body["error"].as_str().is_some_and(|name| !name.is_empty())
                && body["detail"].is_string(),
            "426 carries the JSON error shape, got {body}"
        );
    });
}
