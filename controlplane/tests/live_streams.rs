//! Live streams over REST (create, get, list, change, rotate the key,
//! delete; names, visibility, ownership, the per-user limit) and over the
//! control protocol (`AuthorizeLiveSource`, as a data plane asks it when a
//! source connects). Every test runs on SQLite and PostgreSQL.

mod rooms_support;
mod support;

use std::time::Duration;

use bytes::BytesMut;
use rooms_support::{assert_error, call, register, start, User, FAST_HASHING};
use serde_json::{json, Value};
use support::{TestControlPlane, BACKENDS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use veza_proto::control::handshake::hello;
use veza_proto::control::{
    ClientFrame, FrameEncoder, LiveCredential, LiveSourceGrant, Request, RequestBody,
    RequestErrorCode, ResponseBody, ResponseResult, ServerFrame, ServerFrameDecoder,
    FRAME_BYTES_MAX_DEFAULT,
};

/// How long one protocol step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /v1/streams` with `body`; asserts 201 and returns the answer.
async fn create_stream(server: &TestControlPlane, owner: &User, body: Value) -> Value {
    let (status, created) = call(server, owner, "POST", "/v1/streams", Some(body)).await;
    assert_eq!(status, 201, "create stream: {created}");
    created
}

fn names(page: &Value) -> Vec<&str> {
    page["streams"]
        .as_array()
        .unwrap_or_else(|| panic!("no streams in {page}"))
        .iter()
        .map(|stream| stream["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn streams_are_created_read_listed_changed_rekeyed_and_deleted() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let listener = register(&server, "listener").await;
        let created = create_stream(
            &server,
            &owner,
            json!({"name": "night-shift", "title": " Night shift ", "genre": "ambient",
                   "description": "slow music", "dsp": {"limiter": {"ceiling_db": -1.0}}}),
        )
        .await;
        assert_eq!(created["name"], "night-shift", "{backend:?}");
        assert_eq!(created["title"], "Night shift", "texts are trimmed");
        assert_eq!(created["owner_user_id"], owner.id);
        assert_eq!(created["is_public"], true, "public by default");
        assert_eq!(
            created["recording_enabled"], false,
            "no recording by default"
        );
        assert_eq!(created["dsp"], json!({"limiter": {"ceiling_db": -1.0}}));
        let key = created["stream_key"].as_str().unwrap().to_string();
        assert!(key.starts_with("vzs_") && key.len() == 4 + 43, "{key}");
        let bare = create_stream(&server, &owner, json!({"name": "b2"})).await;
        assert_eq!(
            (bare["title"].as_str(), bare["dsp"].clone()),
            (Some(""), Value::Null)
        );

        let (status, seen) = call(&server, &listener, "GET", "/v1/streams/night-shift", None).await;
        assert_eq!(status, 200, "{seen}");
        assert_eq!(seen["title"], "Night shift");
        assert_eq!(
            seen.get("stream_key"),
            None,
            "the key is shown only at creation"
        );

        let (status, mine) = call(&server, &owner, "GET", "/v1/streams?owner=me", None).await;
        assert_eq!(status, 200, "{mine}");
        assert_eq!(names(&mine), ["night-shift", "b2"]);
        let (_, theirs) = call(&server, &listener, "GET", "/v1/streams?owner=me", None).await;
        assert_eq!(names(&theirs), Vec::<&str>::new());
        let (_, first) = call(&server, &owner, "GET", "/v1/streams?owner=me&limit=1", None).await;
        assert_eq!(names(&first), ["night-shift"]);
        let after = first["next_after"].as_i64().unwrap();
        let path = format!("/v1/streams?owner=me&limit=1&after={after}");
        let (_, second) = call(&server, &owner, "GET", &path, None).await;
        assert_eq!(
            (names(&second), second["next_after"].clone()),
            (vec!["b2"], Value::Null)
        );

        let (status, changed) = call(
            &server,
            &owner,
            "PATCH",
            "/v1/streams/night-shift",
            Some(
                json!({"title": "Late", "description": "", "is_public": false,
                        "recording_enabled": true, "dsp": null}),
            ),
        )
        .await;
        assert_eq!(status, 200, "{changed}");
        assert_eq!(
            (
                changed["title"].as_str(),
                changed["description"].as_str(),
                changed["genre"].as_str(),
                changed["is_public"].as_bool(),
                changed["recording_enabled"].as_bool(),
                changed["dsp"].clone(),
            ),
            (
                Some("Late"),
                Some(""),
                Some("ambient"),
                Some(false),
                Some(true),
                Value::Null
            ),
            "given fields change, absent ones stay, dsp null restores the defaults"
        );

        let (status, rotated) =
            call(&server, &owner, "POST", "/v1/streams/night-shift/key", None).await;
        assert_eq!(status, 200, "{rotated}");
        let new_key = rotated["stream_key"].as_str().unwrap();
        assert!(new_key.starts_with("vzs_") && new_key != key, "{rotated}");

        let (status, body) = call(&server, &owner, "DELETE", "/v1/streams/night-shift", None).await;
        assert_eq!(status, 204, "{body}");
        let (status, body) = call(&server, &owner, "GET", "/v1/streams/night-shift", None).await;
        assert_error(status, &body, 404, "a deleted stream is gone");
        let again = create_stream(&server, &listener, json!({"name": "night-shift"})).await;
        assert_eq!(
            again["owner_user_id"], listener.id,
            "the name is free again"
        );
    }
}

#[tokio::test]
async fn names_outside_the_rule_are_400_taken_names_409_and_oversized_settings_422() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let other = register(&server, "other").await;
        let too_long = "a".repeat(65);
        for name in [
            "",
            "Night",
            "-dash-first",
            "a b",
            "a.b",
            "é",
            too_long.as_str(),
        ] {
            let (status, body) = call(
                &server,
                &owner,
                "POST",
                "/v1/streams",
                Some(json!({"name": name})),
            )
            .await;
            assert_error(status, &body, 400, &format!("{backend:?} name {name:?}"));
            assert_eq!(body["error"], "invalid_stream_name");
            assert!(
                body["detail"].as_str().unwrap().contains("[a-z0-9]"),
                "the detail states the rule: {body}"
            );
        }
        create_stream(&server, &owner, json!({"name": "a".repeat(64)})).await;
        create_stream(&server, &owner, json!({"name": "radio-1"})).await;
        let (status, body) = call(
            &server,
            &other,
            "POST",
            "/v1/streams",
            Some(json!({"name": "radio-1"})),
        )
        .await;
        assert_error(status, &body, 409, "a taken name");
        assert_eq!(body["error"], "stream_name_taken");

        let big = json!({"name": "big", "dsp": {"padding": "x".repeat(4096)}});
        let (status, body) = call(&server, &owner, "POST", "/v1/streams", Some(big)).await;
        assert_error(status, &body, 422, "dsp over live.dsp_config_bytes_max");
        let long_title = json!({"name": "long", "title": "t".repeat(201)});
        let (status, body) = call(&server, &owner, "POST", "/v1/streams", Some(long_title)).await;
        assert_error(status, &body, 422, "title over live.title_chars_max");
        let not_object = json!({"name": "arr", "dsp": [1, 2]});
        let (status, body) = call(&server, &owner, "POST", "/v1/streams", Some(not_object)).await;
        assert_error(status, &body, 422, "dsp must be an object");
        let (status, body) = call(
            &server,
            &owner,
            "PATCH",
            "/v1/streams/radio-1",
            Some(json!({"dsp": {"padding": "x".repeat(4096)}})),
        )
        .await;
        assert_error(status, &body, 422, "PATCH dsp over the limit");
    }
}

#[tokio::test]
async fn private_streams_exist_only_for_their_owner_and_only_the_owner_changes_a_stream() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let other = register(&server, "other").await;
        create_stream(&server, &owner, json!({"name": "open"})).await;
        create_stream(
            &server,
            &owner,
            json!({"name": "hidden", "is_public": false}),
        )
        .await;

        let (status, body) = call(&server, &other, "GET", "/v1/streams/hidden", None).await;
        assert_error(status, &body, 404, &format!("{backend:?} private GET"));
        let (status, _) = call(&server, &owner, "GET", "/v1/streams/hidden", None).await;
        assert_eq!(status, 200, "the owner sees a private stream");
        let (_, visible) = call(&server, &other, "GET", "/v1/streams", None).await;
        assert_eq!(names(&visible), ["open"], "private streams are not listed");
        let (_, visible) = call(&server, &owner, "GET", "/v1/streams", None).await;
        assert_eq!(names(&visible), ["open", "hidden"]);

        let patch = Some(json!({"title": "mine now"}));
        let (status, body) =
            call(&server, &other, "PATCH", "/v1/streams/open", patch.clone()).await;
        assert_error(status, &body, 403, "PATCH of someone else's stream");
        let (status, body) = call(&server, &other, "POST", "/v1/streams/open/key", None).await;
        assert_error(status, &body, 403, "rotating someone else's key");
        let (status, body) = call(&server, &other, "DELETE", "/v1/streams/open", None).await;
        assert_error(status, &body, 403, "deleting someone else's stream");
        let (status, body) = call(&server, &other, "PATCH", "/v1/streams/hidden", patch).await;
        assert_error(status, &body, 404, "a private stream stays hidden on PATCH");
        let (status, body) = call(&server, &other, "DELETE", "/v1/streams/hidden", None).await;
        assert_error(
            status,
            &body,
            404,
            "a private stream stays hidden on DELETE",
        );
        let (_, open) = call(&server, &owner, "GET", "/v1/streams/open", None).await;
        assert_eq!(open["title"], "", "nothing changed");

        let (status, api_key) = call(
            &server,
            &owner,
            "POST",
            "/v1/api-keys",
            Some(json!({"name": "bot", "scopes": ["rooms:read", "rooms:write"]})),
        )
        .await;
        assert_eq!(status, 201, "{api_key}");
        let bot_key = api_key["key"].as_str().unwrap();
        let (status, body) = server
            .request("GET", "/v1/streams/open", Some(bot_key), None)
            .await;
        assert_error(status, &body, 403, "streams need a user's access token");
        let (status, body) = server.request("GET", "/v1/streams/open", None, None).await;
        assert_error(status, &body, 401, "no credentials");
    }
}

#[tokio::test]
async fn a_user_owns_at_most_live_streams_per_user_max_streams() {
    for backend in BACKENDS {
        let mut env = FAST_HASHING.to_vec();
        env.push(("VEZA_LIVE_STREAMS_PER_USER_MAX", "2"));
        let server = TestControlPlane::start(backend, &env).await;
        let owner = register(&server, "owner").await;
        let other = register(&server, "other").await;
        create_stream(&server, &owner, json!({"name": "one"})).await;
        create_stream(&server, &owner, json!({"name": "two"})).await;
        let (status, body) = call(
            &server,
            &owner,
            "POST",
            "/v1/streams",
            Some(json!({"name": "three"})),
        )
        .await;
        assert_error(status, &body, 409, &format!("{backend:?} past the limit"));
        assert_eq!(body["error"], "too_many_streams");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("live.streams_per_user_max"),
            "{body}"
        );
        create_stream(&server, &other, json!({"name": "three"})).await;
        let (status, _) = call(&server, &owner, "DELETE", "/v1/streams/one", None).await;
        assert_eq!(status, 204);
        create_stream(&server, &owner, json!({"name": "four"})).await;
    }
}

/// A data plane's side of the control protocol, enough to ask
/// `AuthorizeLiveSource` over the Unix socket.
struct DataPlane {
    stream: UnixStream,
    buffer: BytesMut,
    decoder: ServerFrameDecoder,
    next_request_id: u64,
}

impl DataPlane {
    async fn connect(server: &TestControlPlane) -> Self {
        let socket = server.data_dir.path().join("control.sock");
        let mut data_plane = Self {
            stream: UnixStream::connect(socket).await.unwrap(),
            buffer: BytesMut::new(),
            decoder: ServerFrameDecoder::new(FRAME_BYTES_MAX_DEFAULT),
            next_request_id: 1,
        };
        data_plane
            .send(&ClientFrame::Hello(hello("live-test", 0, 1)))
            .await;
        match data_plane.receive().await {
            ServerFrame::Welcome(_) => data_plane,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn send(&mut self, frame: &ClientFrame) {
        let mut out = BytesMut::new();
        FrameEncoder::new(FRAME_BYTES_MAX_DEFAULT)
            .encode(frame, &mut out)
            .unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    async fn receive(&mut self) -> ServerFrame {
        tokio::time::timeout(STEP_TIMEOUT, async {
            loop {
                if let Some(frame) = self.decoder.decode(&mut self.buffer).unwrap() {
                    return frame;
                }
                let read = self.stream.read_buf(&mut self.buffer).await.unwrap();
                assert!(read > 0, "the control plane closed the connection");
            }
        })
        .await
        .expect("the control plane answers in time")
    }

    /// Asks whether `credential` may broadcast on `stream_name`; pushes that
    /// arrive first are skipped.
    async fn authorize(&mut self, stream_name: &str, credential: LiveCredential) -> ResponseResult {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let body = RequestBody::AuthorizeLiveSource {
            stream_name: stream_name.to_string(),
            credential,
        };
        self.send(&ClientFrame::Request(Request { request_id, body }))
            .await;
        loop {
            match self.receive().await {
                ServerFrame::Response(response) => {
                    assert_eq!(response.request_id, request_id);
                    return response.result;
                }
                ServerFrame::Push(_) => {}
                other => panic!("expected a response, got {other:?}"),
            }
        }
    }
}

fn key(text: &str) -> LiveCredential {
    LiveCredential::StreamKey(text.to_string())
}

fn expect_grant(result: ResponseResult, context: &str) -> LiveSourceGrant {
    match result {
        ResponseResult::Ok(ResponseBody::LiveSource(grant)) => grant,
        other => panic!("{context}: expected a grant, got {other:?}"),
    }
}

fn expect_refusal(result: ResponseResult, code: RequestErrorCode, context: &str) {
    match result {
        ResponseResult::Err(error) => assert_eq!(error.code, code, "{context}: {error:?}"),
        other => panic!("{context}: expected {code:?}, got {other:?}"),
    }
}

async fn metric(server: &TestControlPlane, name: &str) -> f64 {
    let text = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_control_protocol_authorises_the_current_key_and_the_owner_only() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let other = register(&server, "other").await;
        let dsp = json!({"eq": [{"frequency_hz": 100.0, "gain_db": 3.0}]});
        let created = create_stream(
            &server,
            &owner,
            json!({"name": "studio", "title": "Studio A", "recording_enabled": true,
                   "is_public": false, "dsp": dsp}),
        )
        .await;
        let old_key = created["stream_key"].as_str().unwrap().to_string();
        let mut data_plane = DataPlane::connect(&server).await;

        let grant = expect_grant(
            data_plane.authorize("studio", key(&old_key)).await,
            &format!("{backend:?} the right key"),
        );
        assert_eq!(
            grant,
            LiveSourceGrant {
                stream_id: created["id"].as_i64().unwrap(),
                name: "studio".into(),
                owner_user_id: owner.id,
                title: "Studio A".into(),
                recording_enabled: true,
                dsp_config_json: dsp.to_string(),
            }
        );
        let wrong = format!("{}x", old_key);
        expect_refusal(
            data_plane.authorize("studio", key(&wrong)).await,
            RequestErrorCode::Denied,
            "a wrong key",
        );
        expect_refusal(
            data_plane.authorize("studio", key("")).await,
            RequestErrorCode::Denied,
            "an empty key",
        );

        let (status, rotated) = call(&server, &owner, "POST", "/v1/streams/studio/key", None).await;
        assert_eq!(status, 200, "{rotated}");
        let new_key = rotated["stream_key"].as_str().unwrap();
        expect_refusal(
            data_plane.authorize("studio", key(&old_key)).await,
            RequestErrorCode::Denied,
            "the key before rotation",
        );
        expect_grant(
            data_plane.authorize("studio", key(new_key)).await,
            "the rotated key",
        );

        let owner_grant = expect_grant(
            data_plane
                .authorize("studio", LiveCredential::User { user_id: owner.id })
                .await,
            "the owner's verified token",
        );
        assert_eq!(owner_grant.owner_user_id, owner.id);
        expect_refusal(
            data_plane
                .authorize("studio", LiveCredential::User { user_id: other.id })
                .await,
            RequestErrorCode::Denied,
            "another user",
        );
        expect_refusal(
            data_plane.authorize("no-such-stream", key(new_key)).await,
            RequestErrorCode::NotFound,
            "an unknown stream",
        );
        expect_refusal(
            data_plane
                .authorize("Not A Name/..", LiveCredential::User { user_id: owner.id })
                .await,
            RequestErrorCode::NotFound,
            "a name outside the rule",
        );
        assert_eq!(
            metric(&server, "veza_control_live_sources_granted_total").await,
            3.0
        );
        assert_eq!(
            metric(&server, "veza_control_live_sources_refused_total").await,
            6.0
        );
        assert!(
            !server.log().contains(new_key) && !server.log().contains(&old_key),
            "stream keys never reach the log"
        );

        let (status, _) = call(&server, &owner, "DELETE", "/v1/streams/studio", None).await;
        assert_eq!(status, 204);
        expect_refusal(
            data_plane.authorize("studio", key(new_key)).await,
            RequestErrorCode::NotFound,
            "a deleted stream",
        );
    }
}

#[tokio::test]
async fn an_instance_admin_may_not_broadcast_on_someone_elses_stream() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let admin = register(&server, "admin").await;
        let owner = register(&server, "owner").await;
        create_stream(&server, &owner, json!({"name": "theirs"})).await;
        let mut data_plane = DataPlane::connect(&server).await;
        expect_refusal(
            data_plane
                .authorize("theirs", LiveCredential::User { user_id: admin.id })
                .await,
            RequestErrorCode::Denied,
            &format!("{backend:?} the instance admin"),
        );
    }
}
