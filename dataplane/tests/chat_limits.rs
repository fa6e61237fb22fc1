//! Chat under bad input, abuse and failure: authentication close codes and
//! pushed revocations, malformed frames, rate limits (per connection and per
//! IP) that trigger and recover, a slow consumer closed while the room
//! carries on (and, short of that, spared typing and presence), and acknowledged messages surviving `kill -9` of the control
//! plane.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::chat::{closed_with, next_message, wait_for, ChatWorld, STEP};
use support::{eventually, for_each_driver, Driver, TestRuntime, TestServer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use veza_bench::chat_client::{ChatClient, ChatClientError};
use veza_bench::control_api::{HistoryQuery, RuntimeSettings};
use veza_proto::chat::{ClientFrame, ErrorCode, ServerFrame};
use veza_proto::close_code;

fn run(driver: Driver, env: &[(&str, &str)], test: impl AsyncFnOnce(ChatWorld)) {
    TestRuntime::new().run(async {
        let world = ChatWorld::start(driver, env).await;
        test(world).await;
    });
}

/// A raw WebSocket on `/v1/chat` (tokio-tungstenite), for bytes the client
/// library would never send.
async fn raw_socket(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "veza.v1".parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "veza.v1",
        "the server chose the subprotocol"
    );
    socket
}

async fn next_server_frame(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Result<ServerFrame, (u16, String)> {
    loop {
        let message = tokio::time::timeout(STEP, socket.next())
            .await
            .expect("a frame in time");
        match message {
            Some(Ok(Message::Binary(payload))) => {
                return Ok(ServerFrame::decode(&payload).expect("valid server frame"))
            }
            Some(Ok(Message::Close(Some(close)))) => {
                return Err((close.code.into(), close.reason.to_string()))
            }
            Some(Ok(Message::Close(None))) | None => return Err((1005, String::new())),
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("websocket error: {error}"),
        }
    }
}

#[test]
fn authentication_failures_close_with_their_documented_codes() {
    for_each_driver(|driver| {
        TestRuntime::new().run(async {
            let world = ChatWorld::start_with(
                driver,
                &[("VEZA_CHAT_AUTH_TIMEOUT_MS", "500")],
                &[("VEZA_AUTH_ACCESS_TOKEN_TTL_SECONDS", "2")],
            )
            .await;
            let alice = world.user("alice").await;

            // Garbage token: 4001.
            let mut client = ChatClient::connect(&world.url()).await.unwrap();
            let error = client.authenticate("not-a-token", STEP).await.unwrap_err();
            assert_eq!(error.close_code(), Some(close_code::AUTH_FAILED), "{error}");

            // A token with a forged signature: 4001.
            let mut forged = alice.access_token.clone();
            let last = forged.pop().unwrap();
            forged.push(if last == 'A' { 'B' } else { 'A' });
            let mut client = ChatClient::connect(&world.url()).await.unwrap();
            let error = client.authenticate(&forged, STEP).await.unwrap_err();
            assert_eq!(error.close_code(), Some(close_code::AUTH_FAILED), "{error}");

            // No Auth at all: 4004 after chat.auth_timeout_ms.
            let mut client = ChatClient::connect(&world.url()).await.unwrap();
            assert_eq!(closed_with(&mut client).await, close_code::AUTH_TIMEOUT);

            // A command before Auth: Error NotAuthenticated, connection alive.
            let mut socket = raw_socket(&world.url()).await;
            let subscribe = ClientFrame::Subscribe {
                request_id: 9,
                room_id: 1,
                since_seq: -1,
            };
            socket
                .send(Message::Binary(subscribe.to_bytes()))
                .await
                .unwrap();
            match next_server_frame(&mut socket).await {
                Ok(ServerFrame::Error {
                    request_id, code, ..
                }) => assert_eq!((request_id, code), (9, ErrorCode::NotAuthenticated)),
                other => panic!("expected NotAuthenticated, got {other:?}"),
            }
            let auth = ClientFrame::Auth {
                request_id: 10,
                token: alice.access_token.clone(),
            };
            socket.send(Message::Binary(auth.to_bytes())).await.unwrap();
            match next_server_frame(&mut socket).await {
                Ok(ServerFrame::AuthOk {
                    request_id,
                    user_id,
                    ..
                }) => assert_eq!((request_id, user_id), (10, alice.user_id)),
                other => panic!("expected AuthOk, got {other:?}"),
            }

            // A connected user's session revoked over REST: 4003 on the
            // open connection (pushed), and 4003 when the token is reused.
            let bob = world.user("bob").await;
            let mut connected = world.client(&bob).await;
            let (status, body) = tokio::task::block_in_place(|| {
                world.control.rest(
                    "DELETE",
                    "/v1/sessions/current",
                    Some(&bob.access_token),
                    serde_json::json!({}),
                )
            });
            assert!(status == 204 || status == 200, "logout: {status} {body}");
            assert_eq!(closed_with(&mut connected).await, close_code::TOKEN_REVOKED);
            let mut client = ChatClient::connect(&world.url()).await.unwrap();
            let error = client
                .authenticate(&bob.access_token, STEP)
                .await
                .unwrap_err();
            assert_eq!(
                error.close_code(),
                Some(close_code::TOKEN_REVOKED),
                "{error}"
            );

            // An expired token (the TTL is 2 s here): 4002.
            tokio::time::sleep(Duration::from_millis(3_100)).await;
            let mut client = ChatClient::connect(&world.url()).await.unwrap();
            let error = client
                .authenticate(&alice.access_token, STEP)
                .await
                .unwrap_err();
            assert_eq!(
                error.close_code(),
                Some(close_code::TOKEN_EXPIRED),
                "{error}"
            );
        });
    });
}

#[test]
fn a_data_plane_without_a_control_plane_refuses_chat_with_4005() {
    for_each_driver(|driver| {
        let server = TestServer::start(driver, &[]);
        TestRuntime::new().run(async {
            let url = server.ws_url("/v1/chat");
            let mut client = ChatClient::connect(&url).await.unwrap();
            let error = client.authenticate("any", STEP).await.unwrap_err();
            assert_eq!(
                error.close_code(),
                Some(close_code::CHAT_UNAVAILABLE),
                "{error}"
            );
        });
    });
}

#[test]
fn malformed_and_unknown_frames_get_errors_and_the_connection_survives() {
    for_each_driver(|driver| {
        run(driver, &[], async |world| {
            let alice = world.user("alice").await;
            let room = world
                .api
                .create_room(&alice.access_token, "robust", true)
                .await
                .unwrap();
            let mut socket = raw_socket(&world.url()).await;
            let auth = ClientFrame::Auth {
                request_id: 1,
                token: alice.access_token.clone(),
            };
            socket.send(Message::Binary(auth.to_bytes())).await.unwrap();
            assert!(matches!(
                next_server_frame(&mut socket).await,
                Ok(ServerFrame::AuthOk { .. })
            ));
            let cases: [(&[u8], u32, ErrorCode); 4] = [
                // Send cut short after its request id.
                (&[0x04, 0, 0, 0, 7, 0], 7, ErrorCode::Malformed),
                // Unknown opcode with a request id.
                (&[0x7e, 0, 0, 0, 8], 8, ErrorCode::UnknownOpcode),
                // Too short to hold a request id.
                (&[0x02, 0], 0, ErrorCode::Malformed),
                // Subscribe with trailing bytes.
                (
                    &[
                        0x02, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff,
                        0xff, 0xff, 0xff, 0xaa,
                    ],
                    9,
                    ErrorCode::Malformed,
                ),
            ];
            for (bytes, expected_id, expected_code) in cases {
                socket
                    .send(Message::Binary(bytes.to_vec().into()))
                    .await
                    .unwrap();
                match next_server_frame(&mut socket).await {
                    Ok(ServerFrame::Error {
                        request_id, code, ..
                    }) => assert_eq!(
                        (request_id, code),
                        (expected_id, expected_code),
                        "for {bytes:02x?}"
                    ),
                    other => panic!("expected an Error for {bytes:02x?}, got {other:?}"),
                }
            }
            // Out of order: a second Auth.
            socket.send(Message::Binary(auth.to_bytes())).await.unwrap();
            assert!(matches!(
                next_server_frame(&mut socket).await,
                Ok(ServerFrame::Error {
                    code: ErrorCode::AlreadyAuthenticated,
                    ..
                })
            ));
            // Values refused: an empty body, an oversized nonce.
            for (body, nonce) in [("  ", "n"), ("hi", &"x".repeat(65)[..])] {
                let send = ClientFrame::Send {
                    request_id: 20,
                    room_id: room,
                    thread_parent_seq: 0,
                    nonce: nonce.to_owned(),
                    mentions: vec![],
                    body: body.to_owned(),
                };
                socket.send(Message::Binary(send.to_bytes())).await.unwrap();
                assert!(matches!(
                    next_server_frame(&mut socket).await,
                    Ok(ServerFrame::Error {
                        code: ErrorCode::Invalid,
                        request_id: 20,
                        ..
                    })
                ));
            }
            // The connection still works.
            let subscribe = ClientFrame::Subscribe {
                request_id: 30,
                room_id: room,
                since_seq: -1,
            };
            socket
                .send(Message::Binary(subscribe.to_bytes()))
                .await
                .unwrap();
            assert!(matches!(
                next_server_frame(&mut socket).await,
                Ok(ServerFrame::Subscribed { request_id: 30, .. })
            ));
            // A text frame ends it with 1003.
            socket.send(Message::Text("hello".into())).await.unwrap();
            let (code, _) = loop {
                match next_server_frame(&mut socket).await {
                    Ok(_) => continue,
                    Err(close) => break close,
                }
            };
            assert_eq!(code, close_code::UNSUPPORTED_DATA);
        });
    });
}

#[test]
fn send_rate_limits_trigger_recover_and_close_persistent_abuse() {
    for_each_driver(|driver| {
        run(
            driver,
            &[("VEZA_CHAT_RATE_LIMIT_STRIKES_MAX", "5")],
            async |world| {
                world
                    .set_settings(RuntimeSettings {
                        messages_per_second: 4.0,
                        message_burst: 3,
                        ..RuntimeSettings::unthrottled(4000)
                    })
                    .await;
                let alice = world.user("alice").await;
                let room = world
                    .api
                    .create_room(&alice.access_token, "calm", true)
                    .await
                    .unwrap();
                let mut client = world.client(&alice).await;
                for number in 0..3 {
                    client
                        .send_message(room, &format!("burst {number}"), "", STEP)
                        .await
                        .unwrap();
                }
                let error = client
                    .send_message(room, "one too many", "", STEP)
                    .await
                    .unwrap_err();
                match error {
                    ChatClientError::Server {
                        code: ErrorCode::RateLimited,
                        retry_after_ms,
                        ..
                    } => {
                        assert!(
                            (1..=300).contains(&retry_after_ms),
                            "4/s refills in at most 250 ms, got {retry_after_ms}"
                        )
                    }
                    other => panic!("expected RateLimited, got {other}"),
                }
                // It recovers after the hint.
                tokio::time::sleep(Duration::from_millis(300)).await;
                client
                    .send_message(room, "after the wait", "", STEP)
                    .await
                    .unwrap();
                // Persistent abuse: more refusals in a row than allowed.
                let mut code = None;
                for number in 0..20 {
                    match client
                        .send_message(room, &format!("spam {number}"), "", STEP)
                        .await
                    {
                        Ok(_) | Err(ChatClientError::Server { .. }) => continue,
                        Err(error) => {
                            code = error.close_code();
                            break;
                        }
                    }
                }
                assert_eq!(code, Some(close_code::POLICY_VIOLATION));
                // Other connections of the same user are unaffected.
                let mut other = world.client(&alice).await;
                other
                    .send_message(room, "still here", "", STEP)
                    .await
                    .unwrap();
            },
        );
    });
}

#[test]
fn history_pages_draw_from_the_send_rate_limit_and_recover() {
    for_each_driver(|driver| {
        run(driver, &[], async |world| {
            world
                .set_settings(RuntimeSettings {
                    messages_per_second: 4.0,
                    message_burst: 3,
                    ..RuntimeSettings::unthrottled(4000)
                })
                .await;
            let alice = world.user("alice").await;
            let room = world
                .api
                .create_room(&alice.access_token, "archive", true)
                .await
                .unwrap();
            let mut client = world.client(&alice).await;
            let seq = client
                .send_message(room, "old news", "", STEP)
                .await
                .unwrap();
            // The send took one token; two pages take the rest.
            for _ in 0..2 {
                let page = client.history(room, 0, -1, 10, STEP).await.unwrap();
                assert_eq!(page.len(), 1);
                assert_eq!(page[0].seq, seq);
            }
            match client.history(room, 0, -1, 10, STEP).await {
                Err(ChatClientError::Server {
                    code: ErrorCode::RateLimited,
                    retry_after_ms,
                    ..
                }) => assert!((1..=300).contains(&retry_after_ms), "{retry_after_ms}"),
                other => panic!("expected RateLimited, got {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let page = client.history(room, 0, -1, 10, STEP).await.unwrap();
            assert_eq!(page.len(), 1, "the connection carries on after the wait");
        });
    });
}

#[test]
fn a_shard_holding_its_most_rooms_refuses_another_and_keeps_serving_the_loaded_one() {
    for_each_driver(|driver| {
        run(
            driver,
            &[
                ("VEZA_SERVER_SHARDS", "1"),
                ("VEZA_CHAT_ROOMS_OWNED_MAX", "1"),
            ],
            async |world| {
                let alice = world.user("alice").await;
                let first = world
                    .api
                    .create_room(&alice.access_token, "first", true)
                    .await
                    .unwrap();
                let second = world
                    .api
                    .create_room(&alice.access_token, "second", true)
                    .await
                    .unwrap();
                let mut client = world.client(&alice).await;
                client.subscribe(first, -1, STEP).await.unwrap();
                // Refused twice: a refused Subscribe leaves no pending
                // subscription behind ("already subscribed" otherwise).
                for _ in 0..2 {
                    match client.subscribe(second, -1, STEP).await {
                        Err(ChatClientError::Server {
                            code: ErrorCode::Unavailable,
                            retry_after_ms,
                            ..
                        }) => assert!(retry_after_ms > 0),
                        other => panic!("expected Unavailable, got {other:?}"),
                    }
                }
                match client.send_message(second, "nowhere", "", STEP).await {
                    Err(ChatClientError::Server {
                        code: ErrorCode::Unavailable,
                        ..
                    }) => {}
                    other => panic!("expected Unavailable, got {other:?}"),
                }
                let seq = client
                    .send_message(first, "still served", "", STEP)
                    .await
                    .unwrap();
                assert_eq!(next_message(&mut client).await.seq, seq);
                let metrics = tokio::task::block_in_place(|| world.server.metrics());
                assert_eq!(
                    metrics.sum("veza_limit_hits_total", &[("limit", "chat_rooms_owned")]),
                    3.0
                );
            },
        );
    });
}

#[test]
fn new_connections_per_ip_are_limited_with_429() {
    run(Driver::IoUring, &[], async |world| {
        let alice = world.user("alice").await;
        // 4 per minute over 2 shards: at most 2 per shard's bucket.
        world
            .set_settings(RuntimeSettings {
                connections_per_ip_per_minute: 4,
                ..RuntimeSettings::unthrottled(4000)
            })
            .await;
        let mut admitted = Vec::new();
        let mut refused = None;
        for _ in 0..12 {
            match ChatClient::connect(&world.url()).await {
                Ok(client) => admitted.push(client),
                Err(error) => {
                    refused = Some(error.to_string());
                    break;
                }
            }
        }
        let refused = refused.expect("a connection past the limit is refused");
        assert!(refused.contains("429"), "refused with 429: {refused}");
        assert!(
            admitted.len() <= 4,
            "at most 4 admitted, got {}",
            admitted.len()
        );
        let metrics = tokio::task::block_in_place(|| world.server.metrics());
        assert!(metrics.sum("veza_limit_hits_total", &[("limit", "connections_per_ip")]) >= 1.0);
        // Admitted connections work.
        let mut client = admitted.pop().unwrap();
        client
            .authenticate(&alice.access_token, STEP)
            .await
            .unwrap();
    });
}

#[test]
fn a_client_that_stops_reading_is_closed_and_the_room_carries_on() {
    for_each_driver(|driver| {
        run(
            driver,
            &[
                ("VEZA_LIMITS_SEND_QUEUE_BYTES_MAX", "1048576"),
                ("VEZA_LIMITS_SEND_QUEUE_SOFT_BYTES", "262144"),
            ],
            async |world| {
                world
                    .set_settings(RuntimeSettings::unthrottled(65_536))
                    .await;
                let alice = world.user("alice").await;
                let room = world
                    .api
                    .create_room(&alice.access_token, "firehose", true)
                    .await
                    .unwrap();
                let mut publisher = world.client(&alice).await;
                let mut healthy = world.client(&alice).await;
                let mut stalled = world.client(&alice).await;
                healthy.subscribe(room, -1, STEP).await.unwrap();
                stalled.subscribe(room, -1, STEP).await.unwrap();
                // 400 messages of 60 KiB (24 MB): far more than the socket
                // buffers and the 1 MiB queue of a client that never reads.
                let body = "x".repeat(60 * 1024);
                let total = 400;
                let reader = tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    while seqs.len() < total {
                        seqs.push(next_message(&mut healthy).await.seq);
                    }
                    seqs
                });
                // The publisher waits for each acknowledgement: a steady
                // stream a reading client keeps up with.
                for _ in 0..total {
                    publisher.send_message(room, &body, "", STEP).await.unwrap();
                }
                let seqs = tokio::time::timeout(Duration::from_secs(30), reader)
                    .await
                    .expect("the healthy subscriber keeps up")
                    .unwrap();
                assert_eq!(seqs, (1..=total as i64).collect::<Vec<_>>());
                // The stalled one finds, after what its socket buffered, close 4008.
                assert_eq!(
                    closed_with(&mut stalled).await,
                    close_code::SEND_QUEUE_OVERFLOW
                );
                let metrics = tokio::task::block_in_place(|| world.server.metrics());
                assert!(
                    metrics.sum("veza_limit_hits_total", &[("limit", "send_queue_bytes")]) >= 1.0
                );
                // It resumes without a gap.
                let mut resumed = world.client(&alice).await;
                let (_, subscribed) = resumed
                    .subscribe(room, total as i64 - 3, STEP)
                    .await
                    .unwrap();
                assert_eq!(subscribed.head_seq, total as i64);
                assert_eq!(subscribed.replayed, 3);
            },
        );
    });
}

#[test]
fn a_client_past_the_soft_bound_misses_typing_but_keeps_every_message() {
    for_each_driver(|driver| {
        run(
            driver,
            &[
                ("VEZA_LIMITS_SEND_QUEUE_BYTES_MAX", "67108864"),
                ("VEZA_LIMITS_SEND_QUEUE_SOFT_BYTES", "262144"),
            ],
            async |world| {
                world
                    .set_settings(RuntimeSettings::unthrottled(65_536))
                    .await;
                let alice = world.user("alice").await;
                let bob = world.user("bob").await;
                let room = world
                    .api
                    .create_room(&alice.access_token, "backlogged", true)
                    .await
                    .unwrap();
                let mut publisher = world.client(&alice).await;
                let mut healthy = world.client(&bob).await;
                let mut lagging = world.client(&bob).await;
                healthy.subscribe(room, -1, STEP).await.unwrap();
                lagging.subscribe(room, -1, STEP).await.unwrap();
                // 24 MB the lagging client does not read yet: more than its
                // socket buffers hold, so well past the 256 KiB soft bound
                // of its queue, and well short of the 64 MiB hard bound.
                let body = "x".repeat(60 * 1024);
                let total = 400;
                let reader = tokio::spawn(async move {
                    for seq in 1..=total {
                        assert_eq!(next_message(&mut healthy).await.seq, seq);
                    }
                    healthy
                });
                for _ in 0..total {
                    publisher.send_message(room, &body, "", STEP).await.unwrap();
                }
                let mut healthy = tokio::time::timeout(Duration::from_secs(30), reader)
                    .await
                    .expect("the healthy subscriber keeps up")
                    .unwrap();
                let soft_hits = || {
                    tokio::task::block_in_place(|| world.server.metrics()).sum(
                        "veza_limit_hits_total",
                        &[("limit", "send_queue_soft_bytes")],
                    )
                };
                let skipped_before = soft_hits();
                // Typing reaches the reading client and skips the lagging one.
                publisher.typing(room, STEP).await.unwrap();
                let typist = wait_for(&mut healthy, STEP, "alice typing", |frame| match frame {
                    ServerFrame::Typing { room_id, user_id } if *room_id == room => Some(*user_id),
                    _ => None,
                })
                .await;
                assert_eq!(typist, alice.user_id);
                tokio::task::block_in_place(|| {
                    eventually(STEP, "the lagging client's skipped typing counted", || {
                        let skipped = soft_hits();
                        (skipped > skipped_before).then_some(()).ok_or(format!(
                            "{skipped} soft-bound hits, {skipped_before} before"
                        ))
                    })
                });
                // It still gets every message, in order, and not the typing.
                let mut seq = 0;
                while seq < total {
                    match lagging
                        .next_frame(STEP)
                        .await
                        .expect("the lagging client stays open")
                    {
                        ServerFrame::Message(message) => {
                            seq += 1;
                            assert_eq!(message.seq, seq);
                        }
                        ServerFrame::Presence { .. } => {}
                        other => panic!("after message {seq}, expected a message: {other:?}"),
                    }
                }
                // Drained, it gets typing again.
                publisher.typing(room, STEP).await.unwrap();
                let typist = wait_for(&mut lagging, STEP, "alice typing", |frame| match frame {
                    ServerFrame::Typing { room_id, user_id } if *room_id == room => Some(*user_id),
                    ServerFrame::Presence { .. } => None,
                    other => panic!("expected typing, got {other:?}"),
                })
                .await;
                assert_eq!(typist, alice.user_id);
            },
        );
    });
}

#[test]
fn acknowledged_messages_survive_kill_9_of_the_control_plane() {
    for_each_driver(|driver| {
        TestRuntime::new().run(async {
            let mut world = ChatWorld::start(driver, &[]).await;
            let alice = world.user("alice").await;
            let room = world
                .api
                .create_room(&alice.access_token, "durable", true)
                .await
                .unwrap();
            let mut sender = world.client(&alice).await;
            sender.subscribe(room, -1, STEP).await.unwrap();
            let total = 300;
            let mut acked = BTreeSet::new();
            for number in 0..total {
                let request_id = sender.next_request_id();
                sender
                    .send(&ClientFrame::Send {
                        request_id,
                        room_id: room,
                        thread_parent_seq: 0,
                        nonce: format!("n{number}"),
                        mentions: vec![],
                        body: format!("durable {number}"),
                    })
                    .await
                    .unwrap();
                if number == total / 3 {
                    tokio::task::block_in_place(|| world.control.kill());
                }
                if number == 2 * total / 3 {
                    tokio::task::block_in_place(|| world.control.spawn());
                }
            }
            // Every message is eventually acknowledged (the data plane kept
            // them and retried), and fan-out never waited for the commit.
            let mut delivered = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
            while acked.len() < total || delivered < total {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "acked {} delivered {delivered}",
                    acked.len()
                );
                match sender.next_frame(Duration::from_secs(30)).await.unwrap() {
                    ServerFrame::Sent { seq, .. } => {
                        acked.insert(seq);
                    }
                    ServerFrame::Message(_) => delivered += 1,
                    _ => {}
                }
            }
            let mut stored = BTreeSet::new();
            let mut after = 0;
            loop {
                let page = world
                    .api
                    .history(
                        &alice.access_token,
                        room,
                        HistoryQuery {
                            after_seq: Some(after),
                            limit: Some(100),
                            ..HistoryQuery::default()
                        },
                    )
                    .await
                    .unwrap();
                if page.messages.is_empty() {
                    break;
                }
                for message in &page.messages {
                    stored.insert(message.seq);
                    after = message.seq;
                }
            }
            assert!(
                acked.is_subset(&stored),
                "acknowledged but not stored: {:?}",
                acked.difference(&stored).collect::<Vec<_>>()
            );
            assert_eq!(stored.len(), total, "every message stored once");
        });
    });
}
