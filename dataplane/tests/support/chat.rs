//! Chat test world: a real control plane, a real two-shard data plane
//! connected to it, accounts made over REST, and clients speaking protocol
//! v1 through the Rust client library (`veza_bench::chat_client`).

use std::time::Duration;

use veza_bench::chat_client::{ChatClient, ChatClientError};
use veza_bench::control_api::{ControlApi, HistoryQuery, RuntimeSettings, Session};
use veza_proto::chat::{ClientFrame, MessageEvent, ServerFrame};

use super::control_plane::{data_plane_options, ControlPlane};
use super::{Driver, TestServer};

/// How long one client step may take.
pub const STEP: Duration = Duration::from_secs(10);

/// A control plane and a data plane connected to it.
pub struct ChatWorld {
    /// The control plane (dropped after the data plane).
    pub control: ControlPlane,
    /// The data plane.
    pub server: TestServer,
    /// REST client of the control plane.
    pub api: ControlApi,
    /// The instance admin (the first account).
    pub admin: Session,
}

impl ChatWorld {
    /// Starts both processes on `driver` with extra data plane environment.
    pub async fn start(driver: Driver, env: &[(&str, &str)]) -> ChatWorld {
        Self::start_with(driver, env, &[]).await
    }

    /// Starts both processes, with extra environment for each.
    pub async fn start_with(
        driver: Driver,
        env: &[(&str, &str)],
        control_env: &[(&str, &str)],
    ) -> ChatWorld {
        let control = tokio::task::block_in_place(|| ControlPlane::start_with(control_env));
        let options = data_plane_options(driver, &control).envs(env);
        let server = tokio::task::block_in_place(|| options.start());
        let api = ControlApi::new(format!("http://{}", control.rest_addr())).expect("REST client");
        let admin = api
            .register_and_login("admin")
            .await
            .expect("admin account");
        let world = ChatWorld {
            control,
            server,
            api,
            admin,
        };
        world.set_settings(RuntimeSettings::unthrottled(4000)).await;
        world
    }

    /// Replaces the runtime settings and waits until every shard applied them.
    pub async fn set_settings(&self, settings: RuntimeSettings) {
        let version = self
            .api
            .update_runtime_settings(&self.admin.access_token, &settings)
            .await
            .expect("settings update");
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let metrics = tokio::task::block_in_place(|| self.server.metrics());
            let applied = (0..self.server.shards()).all(|shard| {
                metrics.value(
                    "veza_control_config_version",
                    &[("shard", &shard.to_string())],
                ) == Some(version as f64)
            });
            if applied {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "settings version {version} did not reach every shard"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The chat URL.
    pub fn url(&self) -> String {
        self.server.ws_url(veza_proto::chat::CHAT_PATH)
    }

    /// A new account, logged in.
    pub async fn user(&self, name: &str) -> Session {
        self.api.register_and_login(name).await.expect("account")
    }

    /// A connected, authenticated client of `session`.
    pub async fn client(&self, session: &Session) -> ChatClient {
        let mut client = ChatClient::connect(&self.url()).await.expect("connect");
        client
            .authenticate(&session.access_token, STEP)
            .await
            .expect("authenticate");
        client
    }

    /// Authenticated chat connections per shard, from `/metrics`.
    pub fn chat_connections_per_shard(&self) -> Vec<f64> {
        let metrics = tokio::task::block_in_place(|| self.server.metrics());
        (0..self.server.shards())
            .map(|shard| {
                metrics
                    .value("veza_chat_connections", &[("shard", &shard.to_string())])
                    .unwrap_or(0.0)
            })
            .collect()
    }

    /// Clients of `sessions` (round robin) until every shard holds at least
    /// one and there are at least `count`; the kernel picks each
    /// connection's shard, so this keeps connecting until both are used.
    pub async fn clients_on_every_shard(
        &self,
        sessions: &[&Session],
        count: usize,
    ) -> Vec<(i64, ChatClient)> {
        let mut clients = Vec::new();
        for attempt in 0..64 {
            let session = sessions[attempt % sessions.len()];
            clients.push((session.user_id, self.client(session).await));
            if clients.len() >= count
                && self
                    .chat_connections_per_shard()
                    .iter()
                    .all(|connections| *connections >= 1.0)
            {
                return clients;
            }
        }
        panic!("64 connections never reached every shard");
    }
}

/// The next `Message` event, skipping other events; fails on anything else
/// that is not an event.
pub async fn next_message(client: &mut ChatClient) -> MessageEvent {
    loop {
        match client.next_frame(STEP).await.expect("a frame") {
            ServerFrame::Message(message) => return message,
            ServerFrame::Typing { .. } | ServerFrame::Presence { .. } => continue,
            other => panic!("expected a Message event, got {other:?}"),
        }
    }
}

/// The next frame that is not presence or typing.
pub async fn next_non_ephemeral(client: &mut ChatClient) -> ServerFrame {
    loop {
        match client.next_frame(STEP).await.expect("a frame") {
            ServerFrame::Typing { .. } | ServerFrame::Presence { .. } => continue,
            other => return other,
        }
    }
}

/// Waits for the server to close `client`; returns the close code.
pub async fn closed_with(client: &mut ChatClient) -> u16 {
    loop {
        match client.next_frame(STEP).await {
            Ok(_) => continue,
            Err(ChatClientError::Closed { code, .. }) => return code,
            Err(other) => panic!("expected a close, got {other}"),
        }
    }
}

/// Sends a plain message (its body is also its nonce) without waiting for
/// the acknowledgement; returns the request id.
pub async fn send_unacknowledged(client: &mut ChatClient, room_id: i64, body: &str) -> u32 {
    let request_id = client.next_request_id();
    client
        .send(&ClientFrame::Send {
            request_id,
            room_id,
            thread_parent_seq: 0,
            nonce: body.to_string(),
            mentions: vec![],
            body: body.to_string(),
        })
        .await
        .expect("send");
    request_id
}

impl ChatWorld {
    /// The stored messages of `room_id` as `(seq, body)`, ascending (the
    /// first 100, through REST).
    pub async fn stored_messages(&self, token: &str, room_id: i64) -> Vec<(i64, String)> {
        let page = self
            .api
            .history(
                token,
                room_id,
                HistoryQuery {
                    after_seq: Some(0),
                    limit: Some(100),
                    ..HistoryQuery::default()
                },
            )
            .await
            .expect("history");
        page.messages
            .into_iter()
            .map(|message| (message.seq, message.body))
            .collect()
    }

    /// A private room of `owner` with `members` invited into it.
    pub async fn private_room(&self, owner: &Session, name: &str, members: &[&Session]) -> i64 {
        let room_id = self
            .api
            .create_room(&owner.access_token, name, false)
            .await
            .expect("private room");
        for member in members {
            self.api
                .invite(&owner.access_token, room_id, member.user_id)
                .await
                .expect("invite");
        }
        room_id
    }

    /// `GET /v1/rooms/{room}/read-marker` as `session`: the status and the
    /// JSON body (`{"room_id", "seq", "last_seq"}` on 200).
    pub async fn read_marker(&self, session: &Session, room_id: i64) -> (u16, serde_json::Value) {
        let path = format!("/v1/rooms/{room_id}/read-marker");
        tokio::task::block_in_place(|| {
            self.control.rest(
                "GET",
                &path,
                Some(&session.access_token),
                serde_json::Value::Null,
            )
        })
    }
}

/// The room an event belongs to; `None` for replies.
pub fn event_room_id(frame: &ServerFrame) -> Option<i64> {
    match frame {
        ServerFrame::Message(message) => Some(message.room_id),
        ServerFrame::Edited { room_id, .. }
        | ServerFrame::Deleted { room_id, .. }
        | ServerFrame::Reaction { room_id, .. }
        | ServerFrame::Typing { room_id, .. }
        | ServerFrame::Presence { room_id, .. }
        | ServerFrame::Mention { room_id, .. }
        | ServerFrame::Removed { room_id, .. } => Some(*room_id),
        _ => None,
    }
}

/// Reads frames for up to `timeout` until `pick` accepts one and returns
/// what it made of it; the frames passed over are dropped. Fails naming
/// `what` (and the frames passed over) when none comes.
pub async fn wait_for<T>(
    client: &mut ChatClient,
    timeout: Duration,
    what: &str,
    mut pick: impl FnMut(&ServerFrame) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut passed_over = Vec::new();
    // Bounded by the deadline.
    loop {
        match client.next_frame_until(deadline).await {
            Ok(frame) => match pick(&frame) {
                Some(found) => return found,
                None => passed_over.push(frame),
            },
            Err(error) => panic!("waiting for {what}: {error}; passed over {passed_over:?}"),
        }
    }
}

/// Every frame that arrives within `window`: for checks that something
/// does *not* arrive. A close fails the test.
pub async fn frames_within(client: &mut ChatClient, window: Duration) -> Vec<ServerFrame> {
    let deadline = tokio::time::Instant::now() + window;
    let mut frames = Vec::new();
    // Bounded by the deadline.
    loop {
        match client.next_frame_until(deadline).await {
            Ok(frame) => frames.push(frame),
            Err(ChatClientError::Timeout) => return frames,
            Err(error) => panic!("while listening for {window:?}: {error}; got {frames:?}"),
        }
    }
}
