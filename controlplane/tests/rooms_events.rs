//! The changes data planes must hear about: each room, membership,
//! moderation and settings change publishes its `ControlEvent` after its
//! transaction commits. The server runs in this process so the test can
//! subscribe to its event hub. Runs on SQLite and PostgreSQL.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection;
use support::{Backend, BACKENDS};
use tokio::sync::broadcast::Receiver;
use veza_controlplane::config::Config;
use veza_controlplane::events::ControlEvent;
use veza_controlplane::rooms::permissions::rights;
use veza_controlplane::state::AppState;

struct InProcess {
    state: AppState,
    base_url: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _data_dir: tempfile::TempDir,
}

async fn fresh_postgres_database() -> String {
    let admin_url = std::env::var("VEZA_TEST_POSTGRES_URL")
        .expect("VEZA_TEST_POSTGRES_URL is not set: run the tests with `bash scripts/test.sh`");
    let name = format!(
        "veza_events_{}_{}",
        std::process::id(),
        veza_controlplane::db::now_ms()
    );
    let mut connection = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut connection)
        .await
        .unwrap();
    format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0)
}

impl InProcess {
    async fn start(backend: Backend) -> InProcess {
        let data_dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let database_url = match backend {
            Backend::Sqlite => String::new(),
            Backend::Postgres => fresh_postgres_database().await,
        };
        let env = [
            ("VEZA_SERVER_LISTEN_PORT", port.to_string()),
            (
                "VEZA_SERVER_DATA_DIR",
                data_dir.path().display().to_string(),
            ),
            ("VEZA_SERVER_DATABASE_URL", database_url),
            ("VEZA_AUTH_ARGON2_MEMORY_KIB", "64".into()),
            ("VEZA_AUTH_ARGON2_ITERATIONS", "1".into()),
        ];
        let config = Config::load(None, env.map(|(key, value)| (key.to_string(), value))).unwrap();
        let state = veza_controlplane::server::build_state(config)
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(veza_controlplane::server::serve(
            state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        let server = InProcess {
            state,
            base_url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            stop: Some(stop),
            _data_dir: data_dir,
        };
        for _ in 0..200 {
            if server
                .http
                .get(format!("{}/ready", server.base_url))
                .send()
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("in-process control plane not ready");
    }

    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    /// Registers and logs in; returns (user id, access token).
    async fn register(&self, name: &str) -> (i64, String) {
        let password = "tuba-glockenspiel-7-harp";
        let (status, account) = self
            .call("", "POST", "/v1/accounts", Some(json!({"username": name, "email": format!("{name}@example.org"), "password": password})))
            .await;
        assert_eq!(status, 201, "{account}");
        let (status, session) = self
            .call(
                "",
                "POST",
                "/v1/sessions",
                Some(json!({"login": name, "password": password})),
            )
            .await;
        assert_eq!(status, 200, "{session}");
        (
            account["id"].as_i64().unwrap(),
            session["access_token"].as_str().unwrap().to_string(),
        )
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// (token, method, path, body, the events it must publish).
type Step<'a> = (
    &'a str,
    &'static str,
    String,
    Option<Value>,
    Vec<ControlEvent>,
);

fn drain(events: &mut Receiver<ControlEvent>) -> Vec<ControlEvent> {
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_publishes_its_event_after_commit() {
    use ControlEvent::{ConfigChanged, MembershipChanged, ModerationChanged, RoomChanged};
    for backend in BACKENDS {
        let server = InProcess::start(backend).await;
        let (admin_id, admin) = server.register("root").await;
        let (member_id, member) = server.register("member").await;
        let mut events = server.state.events.subscribe();

        // A listener that reads the database the moment a moderation event
        // arrives: it must already see the change.
        let mut watcher = server.state.events.subscribe();
        let db = server.state.db.clone();
        let seen_on_push = tokio::spawn(async move {
            loop {
                if let Ok(ModerationChanged { room_id, user_id }) = watcher.recv().await {
                    return rights(&db, room_id, user_id).await.unwrap().muted_until_ms;
                }
            }
        });

        let (status, room) = server
            .call(
                &admin,
                "POST",
                "/v1/rooms",
                Some(json!({"name": "Events", "is_public": true})),
            )
            .await;
        assert_eq!(status, 201);
        let room_id = room["id"].as_i64().unwrap();
        assert_eq!(
            drain(&mut events),
            [
                RoomChanged { room_id },
                MembershipChanged {
                    room_id,
                    user_id: admin_id
                }
            ],
            "{backend:?}"
        );

        let steps: Vec<Step> = vec![
            (
                &member,
                "POST",
                format!("/v1/rooms/{room_id}/join"),
                None,
                vec![MembershipChanged {
                    room_id,
                    user_id: member_id,
                }],
            ),
            (
                &member,
                "POST",
                format!("/v1/rooms/{room_id}/join"),
                None,
                vec![],
            ),
            (
                &admin,
                "PUT",
                format!("/v1/rooms/{room_id}/members/{member_id}/role"),
                Some(json!({"role": "moderator"})),
                vec![MembershipChanged {
                    room_id,
                    user_id: member_id,
                }],
            ),
            (
                &admin,
                "PUT",
                format!("/v1/rooms/{room_id}/members/{member_id}/role"),
                Some(json!({"role": "member"})),
                vec![MembershipChanged {
                    room_id,
                    user_id: member_id,
                }],
            ),
            (
                &admin,
                "POST",
                format!("/v1/rooms/{room_id}/mutes"),
                Some(json!({"user_id": member_id})),
                vec![ModerationChanged {
                    room_id,
                    user_id: member_id,
                }],
            ),
            (
                &admin,
                "DELETE",
                format!("/v1/rooms/{room_id}/mutes/{member_id}"),
                None,
                vec![ModerationChanged {
                    room_id,
                    user_id: member_id,
                }],
            ),
            (
                &admin,
                "POST",
                format!("/v1/rooms/{room_id}/kicks"),
                Some(json!({"user_id": member_id})),
                vec![MembershipChanged {
                    room_id,
                    user_id: member_id,
                }],
            ),
            (
                &admin,
                "POST",
                format!("/v1/rooms/{room_id}/invites"),
                Some(json!({"user_id": member_id})),
                vec![MembershipChanged {
                    room_id,
                    user_id: member_id,
                }],
            ),
            (
                &admin,
                "POST",
                format!("/v1/rooms/{room_id}/bans"),
                Some(json!({"user_id": member_id})),
                vec![
                    ModerationChanged {
                        room_id,
                        user_id: member_id,
                    },
                    MembershipChanged {
                        room_id,
                        user_id: member_id,
                    },
                ],
            ),
            (
                &admin,
                "DELETE",
                format!("/v1/rooms/{room_id}/bans/{member_id}"),
                None,
                vec![ModerationChanged {
                    room_id,
                    user_id: member_id,
                }],
            ),
            (
                &admin,
                "PATCH",
                format!("/v1/rooms/{room_id}"),
                Some(json!({"topic": "live"})),
                vec![RoomChanged { room_id }],
            ),
            (
                &admin,
                "PUT",
                "/v1/admin/settings".to_string(),
                Some(json!({"settings": {"message_burst": 3}})),
                vec![ConfigChanged { version: 1 }],
            ),
            (
                &admin,
                "DELETE",
                format!("/v1/rooms/{room_id}"),
                None,
                vec![RoomChanged { room_id }],
            ),
        ];
        for (token, method, path, body, expected) in steps {
            let (status, answer) = server.call(token, method, &path, body).await;
            assert!(
                status < 300,
                "{backend:?} {method} {path}: {status} {answer}"
            );
            assert_eq!(drain(&mut events), expected, "{backend:?} {method} {path}");
        }
        assert_eq!(
            seen_on_push.await.unwrap(),
            Some(i64::MAX),
            "{backend:?}: the mute was committed before its push"
        );

        let (status, _) = server
            .call(
                &member,
                "POST",
                "/v1/rooms",
                Some(json!({"name": "x", "is_public": "no"})),
            )
            .await;
        assert_eq!(status, 422);
        assert_eq!(drain(&mut events), [], "refused requests publish nothing");
    }
}
