//! `/v1/echo` behaves as a conforming WebSocket endpoint for a well-behaved
//! client (tokio-tungstenite): every message comes back unchanged and in
//! order, fragments are reassembled, pings are answered, the close handshake
//! completes, and subprotocols are negotiated. Every test runs on both
//! drivers.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use support::raw_websocket::{client_frame, opcode, RawWebSocket};
use support::websocket::{
    connect, connect_offering, expect_end, next_data_message, next_message, send,
};
use support::{block_on, eventually, for_each_driver, within, TestServer};

/// Payload lengths at each boundary of the frame length encoding (7-bit,
/// 16-bit, 64-bit) and a message near the default frame limit.
const PAYLOAD_LENGTHS: [usize; 7] = [0, 1, 125, 126, 65_535, 65_536, 1_000_000];

/// ASCII text of exactly `length` bytes, varied so that a shifted or
/// truncated echo cannot compare equal.
fn text_of_length(length: usize) -> String {
    (0..length)
        .map(|index| char::from(b'a' + (index % 26) as u8))
        .collect()
}

/// Bytes of exactly `length`, covering every byte value.
fn bytes_of_length(length: usize) -> Vec<u8> {
    (0..length).map(|index| (index * 31 % 251) as u8).collect()
}

#[test]
fn text_messages_come_back_unchanged_at_every_length_encoding_boundary() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        block_on(async {
            let mut client = connect(&server.ws_url("/v1/echo")).await;
            for length in PAYLOAD_LENGTHS {
                let text = text_of_length(length);
                send(&mut client, Message::text(text.clone())).await;
                match next_data_message(&mut client).await {
                    Message::Text(echo) => {
                        assert!(echo.as_str() == text, "text of {length} bytes changed")
                    }
                    other => panic!("text of {length} bytes came back as {other:?}"),
                }
            }
        });
    });
}

#[test]
fn binary_messages_come_back_unchanged_at_every_length_encoding_boundary() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        block_on(async {
            let mut client = connect(&server.ws_url("/v1/echo")).await;
            for length in PAYLOAD_LENGTHS {
                let payload = bytes_of_length(length);
                send(&mut client, Message::binary(payload.clone())).await;
                match next_data_message(&mut client).await {
                    Message::Binary(echo) => {
                        assert!(echo == payload, "binary of {length} bytes changed")
                    }
                    other => panic!("binary of {length} bytes came back as {other:?}"),
                }
            }
        });
    });
}

#[test]
fn multi_byte_utf8_text_comes_back_unchanged() {
    let text = "héllo wörld — ☃ 日本語 𝄞 🎵 ∑";
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        block_on(async {
            let mut client = connect(&server.ws_url("/v1/echo")).await;
            send(&mut client, Message::text(text)).await;
            assert_eq!(next_data_message(&mut client).await, Message::text(text));
        });
    });
}

#[test]
fn fragmented_text_split_inside_a_code_point_is_reassembled_into_one_message() {
    // "ö" is 0xC3 0xB6: the first fragment ends between its two bytes, which
    // is legal as long as the whole message is valid UTF-8.
    let text = "Hello, wörld";
    let split_at = text.find('ö').unwrap() + 1;
    let (first, rest) = text.as_bytes().split_at(split_at);
    let (middle, last) = rest.split_at(3);
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        block_on(async {
            let mut client = connect(&server.ws_url("/v1/echo")).await;
            let fragments = [
                Frame::message(first.to_vec(), OpCode::Data(Data::Text), false),
                Frame::message(middle.to_vec(), OpCode::Data(Data::Continue), false),
                Frame::message(last.to_vec(), OpCode::Data(Data::Continue), true),
            ];
            for fragment in fragments {
                send(&mut client, Message::Frame(fragment)).await;
            }
            assert_eq!(next_data_message(&mut client).await, Message::text(text));
        });
    });
}

#[test]
fn fragmented_binary_with_a_ping_between_fragments_is_reassembled_and_the_ping_answered() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        block_on(async {
            let mut client = connect(&server.ws_url("/v1/echo")).await;
            let frames = [
                Message::Frame(Frame::message(
                    vec![1, 2, 3],
                    OpCode::Data(Data::Binary),
                    false,
                )),
                Message::Ping(Bytes::from_static(b"between fragments")),
                Message::Frame(Frame::message(
                    vec![4, 5],
                    OpCode::Data(Data::Continue),
                    false,
                )),
                Message::Frame(Frame::message(vec![6], OpCode::Data(Data::Continue), true)),
            ];
            for frame in frames {
                send(&mut client, frame).await;
            }
            // A control frame may be answered before the message it
            // interrupted is complete, so both orders are correct.
            let mut replies = vec![
                next_message(&mut client).await,
                next_message(&mut client).await,
            ];
            replies.sort_by_key(|message| !message.is_pong());
            assert_eq!(
                replies,
                [
                    Message::Pong(Bytes::from_static(b"between fragments")),
                    Message::binary(vec![1, 2, 3, 4, 5, 6]),
                ]
            );
        });
    });
}

#[test]
fn ping_is_answered_with_a_pong_carrying_the_same_payload() {
    let payloads = [Vec::new(), b"hello".to_vec(), vec![0xAB; 125]];
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        block_on(async {
            let mut client = connect(&server.ws_url("/v1/echo")).await;
            for payload in &payloads {
                send(&mut client, Message::Ping(Bytes::from(payload.clone()))).await;
                assert_eq!(
                    next_message(&mut client).await,
                    Message::Pong(Bytes::from(payload.clone())),
                    "pong for a ping of {} bytes",
                    payload.len()
                );
            }
        });
    });
}

#[test]
fn client_close_1000_is_echoed_and_the_server_closes_tcp() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        block_on(async {
            let mut client = connect(&server.ws_url("/v1/echo")).await;
            let close = CloseFrame {
                code: CloseCode::Normal,
                reason: "done".into(),
            };
            within("sending close", client.close(Some(close)))
                .await
                .expect("send the close frame");
            match next_message(&mut client).await {
                Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1000),
                other => panic!("expected the close frame echoed, got {other:?}"),
            }
            expect_end(&mut client).await;
        });
    });
}

#[test]
fn subprotocol_veza_echo_is_chosen_from_the_offered_list() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        block_on(async {
            let (mut client, response) =
                connect_offering(&server.ws_url("/v1/echo"), "foo, veza.echo").await;
            let chosen = response.headers().get("sec-websocket-protocol");
            assert_eq!(
                chosen.map(|value| value.to_str().unwrap()),
                Some("veza.echo")
            );
            send(&mut client, Message::text("negotiated")).await;
            assert_eq!(
                next_data_message(&mut client).await,
                Message::text("negotiated")
            );
        });
    });
}

#[test]
fn unsupported_subprotocol_offer_still_upgrades_without_choosing_one() {
    // Raw handshake: tungstenite refuses a 101 that names no protocol after
    // the client offered some, though RFC 6455 §4.2.2 allows the server to
    // choose none.
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let (mut socket, response) =
            RawWebSocket::handshake(server.addr(), &[("Sec-WebSocket-Protocol", "foo")]);
        assert_eq!(response.header("sec-websocket-protocol"), None);
        socket.assert_echoes(b"no subprotocol");
    });
}

#[test]
fn upgrade_without_a_subprotocol_offer_gets_no_protocol_header() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let (mut socket, response) = RawWebSocket::handshake(server.addr(), &[]);
        assert_eq!(response.header("sec-websocket-protocol"), None);
        assert!(
            response.header_has_token("upgrade", "websocket"),
            "{:?}",
            response.headers
        );
        assert!(
            response.header_has_token("connection", "upgrade"),
            "{:?}",
            response.headers
        );
        socket.assert_echoes(b"plain");
    });
}

#[test]
fn two_hundred_messages_sent_without_waiting_come_back_in_order() {
    const N_MESSAGES: usize = 200;
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        block_on(async {
            let mut client = connect(&server.ws_url("/v1/echo")).await;
            let messages: Vec<Message> = (0..N_MESSAGES)
                .map(|index| match index % 2 {
                    0 => Message::text(format!("message {index} {}", "x".repeat(index))),
                    _ => Message::binary(bytes_of_length(index * 10)),
                })
                .collect();
            // Queue everything, then flush once: all 200 are in flight before
            // the first reply is read.
            for message in &messages {
                within("queueing a message", client.feed(message.clone()))
                    .await
                    .expect("queue a message");
            }
            within("flushing", client.flush()).await.expect("flush");
            for (index, expected) in messages.iter().enumerate() {
                let echo = next_data_message(&mut client).await;
                assert!(
                    &echo == expected,
                    "message {index} came back out of order or changed"
                );
            }
        });
    });
}

#[test]
fn two_hundred_concurrent_connections_across_both_shards_all_echo() {
    const N_CONNECTIONS: usize = 200;
    const N_MESSAGES_EACH: usize = 3;
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let baseline = server.metrics();
        let url = server.ws_url("/v1/echo");
        block_on(async {
            let mut clients = Vec::with_capacity(N_CONNECTIONS);
            for _ in 0..N_CONNECTIONS {
                clients.push(connect(&url).await);
            }
            let tasks: Vec<_> = clients
                .into_iter()
                .enumerate()
                .map(|(client_idx, mut client)| {
                    tokio::spawn(async move {
                        for message_idx in 0..N_MESSAGES_EACH {
                            let text = format!("client {client_idx} message {message_idx}");
                            send(&mut client, Message::text(text.clone())).await;
                            assert_eq!(next_data_message(&mut client).await, Message::text(text));
                        }
                        within("closing", client.close(None)).await.expect("close");
                        while let Some(Ok(_)) = within("the end", client.next()).await {}
                    })
                })
                .collect();
            for task in tasks {
                within("a client task", task)
                    .await
                    .expect("a client task panicked");
            }
        });
        let after = server.metrics();
        for shard in ["0", "1"] {
            let accepted = |metrics: &support::metrics::Metrics| {
                metrics.sum("veza_connections_accepted_total", &[("shard", shard)])
            };
            assert!(
                accepted(&after) > accepted(&baseline),
                "shard {shard} accepted none of the {N_CONNECTIONS} connections:\n{}",
                after.lines_of("veza_connections_accepted_total")
            );
        }
        let open_before = baseline.sum("veza_connections_open", &[]);
        eventually(
            Duration::from_secs(5),
            "open connections return to the baseline",
            || {
                let open = server.metrics().sum("veza_connections_open", &[]);
                (open <= open_before)
                    .then_some(())
                    .ok_or(format!("{open} open, {open_before} before"))
            },
        );
    });
}

#[test]
fn raw_client_sees_echoes_as_unmasked_final_frames_of_the_same_opcode() {
    // The view from the wire: what a minimal client relies on.
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        let mut socket = RawWebSocket::connect(server.addr());
        socket.send(&client_frame(opcode::TEXT, true, b"wire"));
        let frame = socket.expect_frame();
        assert_eq!(
            (frame.fin, frame.rsv_bits, frame.opcode),
            (true, 0, opcode::TEXT)
        );
        assert_eq!(frame.payload, b"wire");
    });
}
