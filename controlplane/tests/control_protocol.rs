//! The control protocol as a data plane sees it: a real `veza-controlplane`
//! and a small tokio client built on `veza_proto::control`'s codec, over the
//! Unix socket and over TCP, on both databases.

mod rooms_support;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use veza_proto::control::handshake::hello;
use veza_proto::control::{
    ClientFrame, ErrorFrame, FrameEncoder, MessageChange, NewMessage, ProtocolErrorCode, Push,
    Request, RequestBody, RequestErrorCode, ResponseBody, ResponseResult, Role, ServerFrame,
    ServerFrameDecoder, Welcome, FRAME_BYTES_MAX_DEFAULT, PROTOCOL_VERSION,
};

use support::{Backend, TestControlPlane, BACKENDS};

/// How long one protocol step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A free loopback port for `control.tcp_listen`.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A control plane listening on its Unix socket and on TCP.
struct ControlPlane {
    server: TestControlPlane,
    tcp_address: String,
}

impl ControlPlane {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    async fn start_with(backend: Backend, extra_env: &[(&str, &str)]) -> Self {
        let tcp_address = format!("127.0.0.1:{}", free_port());
        let mut env = vec![("VEZA_CONTROL_TCP_LISTEN", tcp_address.as_str())];
        env.extend_from_slice(&rooms_support::FAST_HASHING);
        env.extend_from_slice(extra_env);
        let server = TestControlPlane::start(backend, &env).await;
        Self {
            server,
            tcp_address,
        }
    }

    fn socket_path(&self) -> PathBuf {
        self.server.data_dir.path().join("control.sock")
    }

    async fn connect_unix(&self) -> Client<UnixStream> {
        Client::new(UnixStream::connect(self.socket_path()).await.unwrap())
    }

    async fn connect_tcp(&self) -> Client<TcpStream> {
        Client::new(TcpStream::connect(&self.tcp_address).await.unwrap())
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .server
            .http
            .get(self.server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
            .parse()
            .unwrap()
    }
}

/// A test client: raw frames in and out.
struct Client<S> {
    stream: S,
    buffer: BytesMut,
    decoder: ServerFrameDecoder,
    encoder: FrameEncoder,
    next_request_id: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            buffer: BytesMut::new(),
            decoder: ServerFrameDecoder::new(FRAME_BYTES_MAX_DEFAULT),
            encoder: FrameEncoder::new(FRAME_BYTES_MAX_DEFAULT),
            next_request_id: 1,
        }
    }

    async fn send(&mut self, frame: &ClientFrame) {
        let mut out = BytesMut::new();
        self.encoder.encode(frame, &mut out).unwrap();
        self.send_raw(&out).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame; `None` once the server closed the connection.
    async fn receive(&mut self) -> Option<ServerFrame> {
        tokio::time::timeout(STEP_TIMEOUT, async {
            loop {
                if let Some(frame) = self.decoder.decode(&mut self.buffer).unwrap() {
                    return Some(frame);
                }
                match self.stream.read_buf(&mut self.buffer).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the server answers in time")
    }

    async fn handshake(&mut self, node_id: &str) -> Welcome {
        self.send(&ClientFrame::Hello(hello(node_id, 0, 1))).await;
        match self.receive().await {
            Some(ServerFrame::Welcome(welcome)) => welcome,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Sends a request and returns its response, keeping pushes that come
    /// first in `pushes`.
    async fn request(&mut self, body: RequestBody, pushes: &mut Vec<Push>) -> ResponseResult {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.send(&ClientFrame::Request(Request { request_id, body }))
            .await;
        loop {
            match self.receive().await {
                Some(ServerFrame::Response(response)) => {
                    assert_eq!(response.request_id, request_id);
                    return response.result;
                }
                Some(ServerFrame::Push(push)) => pushes.push(push),
                other => panic!("expected a response, got {other:?}"),
            }
        }
    }

    /// Expects an error frame, then the end of the connection.
    async fn expect_error_and_close(&mut self) -> ErrorFrame {
        let error = match self.receive().await {
            Some(ServerFrame::Error(error)) => error,
            other => panic!("expected an error frame, got {other:?}"),
        };
        assert_eq!(
            self.receive().await,
            None,
            "the server closes after an error frame"
        );
        error
    }
}

#[tokio::test]
async fn the_handshake_welcomes_this_version_over_unix_and_tcp_on_both_databases() {
    for backend in BACKENDS {
        let control = ControlPlane::start(backend).await;
        let mut unix = control.connect_unix().await;
        let welcome = unix.handshake("node-unix").await;
        assert_eq!(welcome.protocol_version, PROTOCOL_VERSION);
        assert_eq!(welcome.server_version, env!("CARGO_PKG_VERSION"));
        let mut tcp = control.connect_tcp().await;
        tcp.handshake("node-tcp").await;
        assert_eq!(
            control.metric("veza_control_connections").await,
            2.0,
            "{backend:?}"
        );
        drop(unix);
        drop(tcp);
        for _ in 0..100 {
            if control.metric("veza_control_connections").await == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(control.metric("veza_control_connections").await, 0.0);
    }
}

#[tokio::test]
async fn a_different_protocol_version_is_refused_with_an_error_frame_and_a_close() {
    let control = ControlPlane::start(Backend::Sqlite).await;
    let mut client = control.connect_unix().await;
    let mut old = hello("node-old", 0, 1);
    old.protocol_version = PROTOCOL_VERSION + 1;
    client.send(&ClientFrame::Hello(old)).await;
    let error = client.expect_error_and_close().await;
    assert_eq!(error.code, ProtocolErrorCode::VersionMismatch);
    assert!(
        error.message.contains(&PROTOCOL_VERSION.to_string()),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_request_before_hello_and_a_second_hello_are_refused() {
    let control = ControlPlane::start(Backend::Sqlite).await;
    let mut early = control.connect_unix().await;
    early
        .send(&ClientFrame::Request(Request {
            request_id: 1,
            body: RequestBody::FetchConfig,
        }))
        .await;
    assert_eq!(
        early.expect_error_and_close().await.code,
        ProtocolErrorCode::UnexpectedFrame
    );
    let mut twice = control.connect_tcp().await;
    twice.handshake("node-a").await;
    twice.send(&ClientFrame::Hello(hello("node-a", 0, 1))).await;
    assert_eq!(
        twice.expect_error_and_close().await.code,
        ProtocolErrorCode::UnexpectedFrame
    );
}

#[tokio::test]
async fn malformed_and_oversize_frames_close_only_their_connection() {
    let control = ControlPlane::start_with(
        Backend::Sqlite,
        &[("VEZA_CONTROL_FRAME_BYTES_MAX", "65536")],
    )
    .await;
    let mut healthy = control.connect_unix().await;
    healthy.handshake("node-healthy").await;

    let mut garbage = control.connect_unix().await;
    garbage.handshake("node-garbage").await;
    let mut frame = BytesMut::new();
    frame.put_u32(16);
    frame.extend_from_slice(&[0xA5; 16]);
    garbage.send_raw(&frame).await;
    assert_eq!(
        garbage.expect_error_and_close().await.code,
        ProtocolErrorCode::MalformedFrame
    );

    let mut oversize = control.connect_tcp().await;
    let mut prefix = BytesMut::new();
    prefix.put_u32(65_537);
    oversize.send_raw(&prefix).await;
    assert_eq!(
        oversize.expect_error_and_close().await.code,
        ProtocolErrorCode::FrameTooLarge
    );

    let mut pushes = Vec::new();
    let answer = healthy
        .request(RequestBody::FetchRevocations, &mut pushes)
        .await;
    assert!(
        matches!(answer, ResponseResult::Ok(_) | ResponseResult::Err(_)),
        "the healthy connection still gets answers"
    );
    assert!(control.metric("veza_control_frame_errors_total").await >= 2.0);
    assert_eq!(control.metric("veza_control_connections").await, 1.0);
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_handshake_timeout() {
    let control = ControlPlane::start_with(
        Backend::Sqlite,
        &[("VEZA_CONTROL_HANDSHAKE_TIMEOUT_MS", "200")],
    )
    .await;
    let mut silent = control.connect_unix().await;
    assert_eq!(
        silent.expect_error_and_close().await.code,
        ProtocolErrorCode::HandshakeTimeout
    );
}

#[tokio::test]
async fn requests_are_answered_by_id_with_limits_enforced() {
    let control =
        ControlPlane::start_with(Backend::Sqlite, &[("VEZA_CONTROL_HISTORY_LIMIT_MAX", "50")])
            .await;
    let mut client = control.connect_unix().await;
    client.handshake("node-a").await;
    let mut pushes = Vec::new();
    let answer = client
        .request(
            RequestBody::FetchHistory {
                room_id: 1,
                before_seq: None,
                after_seq: None,
                limit: 51,
            },
            &mut pushes,
        )
        .await;
    match answer {
        ResponseResult::Err(error) => {
            assert_eq!(error.code, RequestErrorCode::BadRequest);
            assert!(
                error.message.contains("history_limit_max"),
                "{}",
                error.message
            );
        }
        other => panic!("a limit over the bound must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn the_socket_is_private_and_a_stale_socket_file_is_replaced() {
    let socket_dir = tempfile::tempdir().unwrap();
    let socket_path = socket_dir.path().join("stale.sock");
    // A crashed control plane leaves its socket file behind with no listener.
    drop(std::os::unix::net::UnixListener::bind(&socket_path).unwrap());
    assert!(socket_path.exists());
    let control = ControlPlane::start_with(
        Backend::Sqlite,
        &[("VEZA_CONTROL_SOCKET_PATH", socket_path.to_str().unwrap())],
    )
    .await;
    let mode = std::fs::metadata(&socket_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let mut client = Client::new(UnixStream::connect(&socket_path).await.unwrap());
    client.handshake("node-a").await;
    drop(control);
}

#[tokio::test]
async fn the_node_list_is_for_admins_only() {
    let control = ControlPlane::start(Backend::Sqlite).await;
    let (status, body) = control
        .server
        .request("GET", "/v1/admin/nodes", None, None)
        .await;
    assert_eq!(status, 401);
    TestControlPlane::assert_error_shape(&body);
}

async fn fetch(
    client: &mut Client<impl AsyncRead + AsyncWrite + Unpin>,
    body: RequestBody,
) -> ResponseBody {
    let mut pushes = Vec::new();
    match client.request(body, &mut pushes).await {
        ResponseResult::Ok(body) => body,
        ResponseResult::Err(error) => panic!("request refused: {error:?}"),
    }
}

/// Receives frames until a push matching `wanted` arrives.
async fn expect_push(
    client: &mut Client<impl AsyncRead + AsyncWrite + Unpin>,
    wanted: impl Fn(&Push) -> bool,
) -> Push {
    loop {
        match client.receive().await {
            Some(ServerFrame::Push(push)) if wanted(&push) => return push,
            Some(ServerFrame::Push(_)) => {}
            other => panic!("expected a push, got {other:?}"),
        }
    }
}

fn new_message(room_id: i64, seq: i64, author_id: i64, body: &str) -> MessageChange {
    MessageChange::New(NewMessage {
        room_id,
        seq,
        author_id,
        client_nonce: format!("nonce-{seq}"),
        body: body.into(),
        thread_parent_seq: None,
        mentions: Vec::new(),
        created_at_ms: 1_700_000_000_000 + seq,
    })
}

#[tokio::test]
async fn a_batch_is_acknowledged_once_committed_and_survives_a_hard_kill_on_both_databases() {
    for backend in BACKENDS {
        let mut control = ControlPlane::start(backend).await;
        let owner = rooms_support::register(&control.server, "owner").await;
        let room_id = rooms_support::create_room(&control.server, &owner, "lobby", true).await;
        let mut client = control.connect_unix().await;
        client.handshake("node-a").await;
        let mut reply = new_message(room_id, 2, owner.id, "a reply");
        if let MessageChange::New(message) = &mut reply {
            message.thread_parent_seq = Some(1);
            message.mentions = vec![owner.id];
        }
        let batch = vec![
            new_message(room_id, 1, owner.id, "first draft"),
            reply,
            MessageChange::Edit {
                room_id,
                seq: 1,
                editor_id: owner.id,
                body: "hello, lobby".into(),
                edited_at_ms: 1_700_000_000_100,
            },
            MessageChange::ReactionAdd {
                room_id,
                seq: 2,
                user_id: owner.id,
                emoji: "🎺".into(),
            },
        ];
        let persisted = fetch(
            &mut client,
            RequestBody::PersistBatch {
                changes: batch.clone(),
            },
        )
        .await;
        assert_eq!(
            persisted,
            ResponseBody::BatchPersisted {
                changes_persisted: 4
            },
            "{backend:?}"
        );
        // Sending it again after a lost acknowledgement changes nothing.
        fetch(&mut client, RequestBody::PersistBatch { changes: batch }).await;

        control.server.kill_hard();
        control.server.restart().await;
        let mut client = control.connect_unix().await;
        client.handshake("node-a").await;
        let history = fetch(
            &mut client,
            RequestBody::FetchHistory {
                room_id,
                before_seq: None,
                after_seq: None,
                limit: 50,
            },
        )
        .await;
        let ResponseBody::History { messages } = history else {
            panic!("expected history, got {history:?}");
        };
        assert_eq!(messages.len(), 2, "{backend:?}: {messages:?}");
        assert_eq!(
            (messages[0].seq, messages[0].body.as_str()),
            (1, "hello, lobby")
        );
        assert!(messages[0].edited_at_ms.is_some());
        assert_eq!(messages[1].thread_parent_seq, Some(1));
        assert_eq!(messages[1].mentions, vec![owner.id]);
        assert_eq!(messages[1].reactions.len(), 1);
        assert_eq!(messages[1].reactions[0].count, 1);

        let (status, page) = rooms_support::call(
            &control.server,
            &owner,
            "GET",
            &format!("/v1/rooms/{room_id}/messages"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["messages"].as_array().map(Vec::len), Some(2), "{page}");
        assert_eq!(page["messages"][0]["body"], "hello, lobby");
    }
}

#[tokio::test]
async fn seq_reservations_start_past_stored_and_reserved_seqs_and_survive_a_hard_kill_on_both_databases(
) {
    for backend in BACKENDS {
        let mut control = ControlPlane::start(backend).await;
        let owner = rooms_support::register(&control.server, "owner").await;
        let room_id = rooms_support::create_room(&control.server, &owner, "lobby", true).await;
        let mut client = control.connect_unix().await;
        client.handshake("node-a").await;
        let reserve = |count| RequestBody::ReserveSeqs { room_id, count };

        // A new room: the first block starts at 1.
        let first = fetch(&mut client, reserve(10)).await;
        assert_eq!(
            first,
            ResponseBody::SeqsReserved { first: 1, last: 10 },
            "{backend:?}"
        );
        // Seqs 1-3 are stored; the next block still starts after 10, the
        // reservation, not after 3.
        let batch = (1..=3)
            .map(|seq| new_message(room_id, seq, owner.id, "m"))
            .collect();
        fetch(&mut client, RequestBody::PersistBatch { changes: batch }).await;
        let second = fetch(&mut client, reserve(10)).await;
        assert_eq!(
            second,
            ResponseBody::SeqsReserved {
                first: 11,
                last: 20
            },
            "{backend:?}"
        );

        // The reservation is durable: after a hard kill the next one
        // starts after 20.
        control.server.kill_hard();
        control.server.restart().await;
        let mut client = control.connect_unix().await;
        client.handshake("node-a").await;
        let third = fetch(&mut client, reserve(5)).await;
        assert_eq!(
            third,
            ResponseBody::SeqsReserved {
                first: 21,
                last: 25
            },
            "{backend:?}"
        );

        // A release naming another reservation changes nothing; the owner's
        // release gives back everything after its head (never below the
        // stored seqs).
        let stale = fetch(
            &mut client,
            RequestBody::ReleaseSeqs {
                room_id,
                reserved: 20,
                head: 3,
            },
        )
        .await;
        assert_eq!(stale, ResponseBody::SeqsReleased);
        assert_eq!(
            fetch(&mut client, reserve(1)).await,
            ResponseBody::SeqsReserved {
                first: 26,
                last: 26
            },
            "{backend:?}"
        );
        fetch(
            &mut client,
            RequestBody::ReleaseSeqs {
                room_id,
                reserved: 26,
                head: 2,
            },
        )
        .await;
        assert_eq!(
            fetch(&mut client, reserve(4)).await,
            ResponseBody::SeqsReserved { first: 4, last: 7 },
            "{backend:?}: back to the newest stored seq, 3"
        );

        // Bad requests.
        let mut pushes = Vec::new();
        for (body, code) in [
            (reserve(0), RequestErrorCode::BadRequest),
            (
                RequestBody::ReserveSeqs {
                    room_id: room_id + 1000,
                    count: 1,
                },
                RequestErrorCode::NotFound,
            ),
        ] {
            match client.request(body, &mut pushes).await {
                ResponseResult::Err(error) => assert_eq!(error.code, code, "{backend:?}"),
                other => panic!("{backend:?}: expected {code:?}, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn rights_keys_config_and_revocations_are_fetched_and_tokens_verify_with_the_keys() {
    for backend in BACKENDS {
        let control = ControlPlane::start(backend).await;
        let owner = rooms_support::register(&control.server, "owner").await;
        let room_id = rooms_support::create_room(&control.server, &owner, "lobby", false).await;
        let stranger = rooms_support::register(&control.server, "stranger").await;
        let mut client = control.connect_tcp().await;
        client.handshake("node-a").await;

        let ResponseBody::Rights(rights) = fetch(
            &mut client,
            RequestBody::LookupRights {
                room_id,
                user_id: owner.id,
            },
        )
        .await
        else {
            panic!("expected rights");
        };
        assert!(
            rights.room_exists && rights.can_post && rights.can_moderate,
            "{rights:?}"
        );
        assert_eq!(rights.role, Some(Role::Owner));
        let ResponseBody::Rights(rights) = fetch(
            &mut client,
            RequestBody::LookupRights {
                room_id,
                user_id: stranger.id,
            },
        )
        .await
        else {
            panic!("expected rights");
        };
        assert_eq!(
            (rights.role, rights.can_read, rights.can_post),
            (None, false, false),
            "a private room"
        );
        let ResponseBody::Rights(rights) = fetch(
            &mut client,
            RequestBody::LookupRights {
                room_id: 999_999,
                user_id: owner.id,
            },
        )
        .await
        else {
            panic!("expected rights");
        };
        assert!(!rights.room_exists);

        let ResponseBody::SigningKeys { keys } =
            fetch(&mut client, RequestBody::FetchSigningKeys).await
        else {
            panic!("expected keys");
        };
        assert!(!keys.is_empty());
        let claims = veza_proto::access_token::verify(
            &owner.token,
            |kid| {
                keys.iter()
                    .find(|key| key.kid == kid)
                    .and_then(|key| ed25519_dalek::VerifyingKey::from_bytes(&key.public_key).ok())
            },
            (veza_controlplane::db::now_ms() / 1000) as i64,
        )
        .expect("a token the control plane issued verifies with the keys it hands out");
        assert_eq!(claims.uid, owner.id);

        let ResponseBody::Config { version, settings } =
            fetch(&mut client, RequestBody::FetchConfig).await
        else {
            panic!("expected config");
        };
        assert_eq!(version, 0, "never changed");
        assert!(settings.integer("message_burst").is_some(), "{settings:?}");

        let (status, body) = rooms_support::call(
            &control.server,
            &stranger,
            "DELETE",
            "/v1/sessions/current",
            None,
        )
        .await;
        assert!(status == 204 || status == 200, "logout: {status} {body}");
        let revoked = expect_push(&mut client, |push| {
            matches!(push, Push::TokensRevoked { .. })
        })
        .await;
        let Push::TokensRevoked { user_id, .. } = revoked else {
            unreachable!()
        };
        assert_eq!(user_id, stranger.id);
        let ResponseBody::Revocations { revocations } =
            fetch(&mut client, RequestBody::FetchRevocations).await
        else {
            panic!("expected revocations");
        };
        assert_eq!(revocations.len(), 1, "{backend:?}: {revocations:?}");
    }
}

#[tokio::test]
async fn settings_changes_and_key_rotations_reach_connected_clients_as_pushes() {
    for backend in BACKENDS {
        let control = ControlPlane::start(backend).await;
        let admin = rooms_support::register(&control.server, "admin").await;
        let mut unix = control.connect_unix().await;
        unix.handshake("node-a").await;
        let mut tcp = control.connect_tcp().await;
        tcp.handshake("node-b").await;

        let (status, body) = rooms_support::call(
            &control.server,
            &admin,
            "PUT",
            "/v1/admin/settings",
            Some(serde_json::json!({"settings": {"message_burst": 42}})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        for client_pushes in [
            expect_push(&mut unix, |push| matches!(push, Push::ConfigChanged { .. })).await,
            expect_push(&mut tcp, |push| matches!(push, Push::ConfigChanged { .. })).await,
        ] {
            let Push::ConfigChanged { version, settings } = client_pushes else {
                unreachable!()
            };
            assert_eq!(version, 1, "{backend:?}");
            assert_eq!(settings.integer("message_burst"), Some(42));
        }

        let (status, body) = rooms_support::call(
            &control.server,
            &admin,
            "POST",
            "/v1/admin/signing-keys/rotate",
            None,
        )
        .await;
        assert!(status == 200 || status == 201, "rotate: {status} {body}");
        let Push::SigningKeysChanged { keys } = expect_push(&mut unix, |push| {
            matches!(push, Push::SigningKeysChanged { .. })
        })
        .await
        else {
            unreachable!()
        };
        assert_eq!(keys.len(), 2, "the new key and the retired one: {keys:?}");

        let (status, nodes) =
            rooms_support::call(&control.server, &admin, "GET", "/v1/admin/nodes", None).await;
        assert_eq!(status, 200, "{nodes}");
        let names: Vec<&str> = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|node| node["node_id"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["node-a", "node-b"]);
        assert!(
            nodes["nodes"][0]["pushes_sent"].as_u64().unwrap() >= 2,
            "{nodes}"
        );
        let stranger = rooms_support::register(&control.server, "stranger").await;
        let (status, _) =
            rooms_support::call(&control.server, &stranger, "GET", "/v1/admin/nodes", None).await;
        assert_eq!(status, 403);
    }
}
