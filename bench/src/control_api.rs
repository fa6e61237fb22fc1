//! A small client of the control plane's JSON REST API (reqwest): what the
//! chat scenarios and the chat integration tests need to set up a world
//! before they connect to the data plane. Register and log in (an access
//! token and the user id), create and join rooms, open direct messages,
//! change roles, mute, kick and ban, change the runtime settings as the
//! instance admin, and read history back.
//!
//! Every call names its step in its error, with the status and body the
//! server answered, so a failed setup says what failed and why. The routes
//! and their bodies are those of `controlplane/src/accounts` and
//! `controlplane/src/rooms`; the OpenAPI document at `/v1/openapi.json` is
//! the reference.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How long one REST call may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The password every benchmark account gets: long enough for the
/// password policy and unrelated to any user name.
pub const BENCH_PASSWORD: &str = "tuba-glockenspiel-7-harp";

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlApiError {
    /// No answer: connection refused, timeout, body not readable.
    #[error("{step}: {reason}")]
    Transport {
        /// What was being done.
        step: &'static str,
        /// The transport error, as text.
        reason: String,
    },
    /// The server answered with another status than the step expects.
    #[error("{step}: HTTP {status}: {body}")]
    Status {
        /// What was being done.
        step: &'static str,
        /// The status.
        status: u16,
        /// The body (`{"error","detail"}` for Veza's errors).
        body: String,
    },
    /// The answer lacked a field the step needs.
    #[error("{step}: unexpected answer: {body}")]
    Malformed {
        /// What was being done.
        step: &'static str,
        /// The body.
        body: String,
    },
}

impl ControlApiError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ControlApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A registered account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Account {
    /// The user id.
    #[serde(rename = "id")]
    pub user_id: i64,
    /// The user name as registered.
    pub username: String,
    /// Whether this is an instance admin (the first account is).
    pub is_admin: bool,
}

/// A logged-in user: what a chat connection authenticates with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Session {
    /// The user id.
    pub user_id: i64,
    /// The EdDSA JWT access token (valid for `auth.access_token_ttl_seconds`).
    pub access_token: String,
}

/// A role in a room (`PUT /v1/rooms/{room}/members/{user}/role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomRole {
    /// Reads and posts.
    Member,
    /// Also deletes others' messages, mutes, kicks and invites.
    Moderator,
    /// Also bans and changes room settings.
    Admin,
    /// Also assigns admins; one per room.
    Owner,
}

/// The runtime settings data planes apply live (`PUT /v1/admin/settings`).
/// A change replaces the whole object, so every field is sent; the defaults
/// are the control plane's (`controlplane/src/rooms/settings.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeSettings {
    /// Sustained messages per second per connection, 0.1 to 10000.
    pub messages_per_second: f64,
    /// Token bucket size per connection, 1 to 100000.
    pub message_burst: i64,
    /// New connections per IP address per minute, 1 to 1000000.
    pub connections_per_ip_per_minute: i64,
    /// Slow mode of new rooms, 0 to 21600 seconds.
    pub slow_mode_default_seconds: i64,
    /// Largest message body in bytes, 1 to 65536.
    pub message_bytes_max: i64,
    /// Most messages in one history page, 1 to 1000.
    pub history_page_max: i64,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            messages_per_second: 5.0,
            message_burst: 10,
            connections_per_ip_per_minute: 60,
            slow_mode_default_seconds: 0,
            message_bytes_max: 4000,
            history_page_max: 100,
        }
    }
}

impl RuntimeSettings {
    /// The settings a benchmark runs under: every per-connection and per-IP
    /// rate limit at its highest allowed value, so that what is measured is
    /// the server and not its abuse protection, and bodies up to
    /// `message_bytes_max` bytes.
    pub fn unthrottled(message_bytes_max: i64) -> RuntimeSettings {
        RuntimeSettings {
            messages_per_second: 10_000.0,
            message_burst: 100_000,
            connections_per_ip_per_minute: 1_000_000,
            message_bytes_max,
            ..RuntimeSettings::default()
        }
    }
}

/// A page of history as REST returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HistoryPage {
    /// Ascending seq.
    pub messages: Vec<StoredMessage>,
    /// More lie beyond the page.
    pub has_more: bool,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoredMessage {
    /// The room.
    pub room_id: i64,
    /// Its place in the room's order.
    pub seq: i64,
    /// The sender.
    pub author_id: i64,
    /// The text; empty once deleted.
    pub body: String,
    /// The message this one replies to.
    pub thread_parent_seq: Option<i64>,
    /// Mentioned user ids.
    pub mentions: Vec<i64>,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms of the last edit.
    pub edited_at_ms: Option<i64>,
    /// Unix ms of the delete.
    pub deleted_at_ms: Option<i64>,
}

/// Which part of a room's history to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Messages with seq below this one.
    pub before_seq: Option<i64>,
    /// Messages with seq above this one.
    pub after_seq: Option<i64>,
    /// Page size (the server caps it at `history_page_max`).
    pub limit: Option<i64>,
}

/// The control plane's REST API at one base URL.
#[derive(Debug, Clone)]
pub struct ControlApi {
    http: reqwest::Client,
    base_url: String,
}

impl ControlApi {
    /// A client of the API at `base_url` (`http://127.0.0.1:8081`).
    pub fn new(base_url: impl Into<String>) -> Result<ControlApi, ControlApiError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| ControlApiError::Transport {
                step: "build the HTTP client",
                reason: error.to_string(),
            })?;
        let base_url = base_url.into().trim_end_matches('/').to_string();
        Ok(ControlApi { http, base_url })
    }

    /// The base URL calls go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST /v1/accounts`: registers an account (201).
    pub async fn register(
        &self,
        username: &str,
        email: &str,
        password: &str,
    ) -> Result<Account, ControlApiError> {
        let body = json!({"username": username, "email": email, "password": password});
        self.call(
            "register",
            reqwest::Method::POST,
            "/v1/accounts",
            None,
            Some(body),
            &[201],
        )
        .await
    }

    /// `POST /v1/sessions`: logs in (200).
    pub async fn login(&self, login: &str, password: &str) -> Result<Session, ControlApiError> {
        let body = json!({"login": login, "password": password});
        self.call(
            "log in",
            reqwest::Method::POST,
            "/v1/sessions",
            None,
            Some(body),
            &[200],
        )
        .await
    }

    /// Registers `username` (email `<username>@example.org`, password
    /// [`BENCH_PASSWORD`]) and logs it in.
    pub async fn register_and_login(&self, username: &str) -> Result<Session, ControlApiError> {
        let email = format!("{username}@example.org");
        self.register(username, &email, BENCH_PASSWORD).await?;
        self.login(username, BENCH_PASSWORD).await
    }

    /// `POST /v1/rooms`: creates a room owned by the caller; its id.
    pub async fn create_room(
        &self,
        token: &str,
        name: &str,
        is_public: bool,
    ) -> Result<i64, ControlApiError> {
        let body = json!({"name": name, "is_public": is_public});
        let room: Value = self
            .call(
                "create room",
                reqwest::Method::POST,
                "/v1/rooms",
                Some(token),
                Some(body),
                &[201],
            )
            .await?;
        id_of("create room", &room)
    }

    /// `PATCH /v1/rooms/{room}` with `slow_mode_seconds` (owners and
    /// admins): one message per member per that many seconds.
    pub async fn set_slow_mode(
        &self,
        token: &str,
        room_id: i64,
        seconds: i64,
    ) -> Result<(), ControlApiError> {
        let path = format!("/v1/rooms/{room_id}");
        self.call_ignoring_body(
            "set slow mode",
            reqwest::Method::PATCH,
            &path,
            Some(token),
            Some(json!({ "slow_mode_seconds": seconds })),
            &[200],
        )
        .await
    }

    /// `POST /v1/rooms/{room}/join`: joins a public room (200, also when
    /// already a member).
    pub async fn join_room(&self, token: &str, room_id: i64) -> Result<(), ControlApiError> {
        let path = format!("/v1/rooms/{room_id}/join");
        self.call_ignoring_body(
            "join room",
            reqwest::Method::POST,
            &path,
            Some(token),
            None,
            &[200],
        )
        .await
    }

    /// `POST /v1/rooms/{room}/invites`: adds a user to a room (moderators
    /// and above); 201 when added, 200 when already a member.
    pub async fn invite(
        &self,
        token: &str,
        room_id: i64,
        user_id: i64,
    ) -> Result<(), ControlApiError> {
        let path = format!("/v1/rooms/{room_id}/invites");
        let body = json!({"user_id": user_id});
        self.call_ignoring_body(
            "invite",
            reqwest::Method::POST,
            &path,
            Some(token),
            Some(body),
            &[200, 201],
        )
        .await
    }

    /// `POST /v1/dms`: the direct-message room with `other_user_id`
    /// (created on the first call); its id.
    pub async fn open_dm(&self, token: &str, other_user_id: i64) -> Result<i64, ControlApiError> {
        let body = json!({"user_id": other_user_id});
        let room: Value = self
            .call(
                "open DM",
                reqwest::Method::POST,
                "/v1/dms",
                Some(token),
                Some(body),
                &[200, 201],
            )
            .await?;
        id_of("open DM", &room)
    }

    /// `PUT /v1/rooms/{room}/members/{user}/role`.
    pub async fn set_role(
        &self,
        token: &str,
        room_id: i64,
        user_id: i64,
        role: RoomRole,
    ) -> Result<(), ControlApiError> {
        let path = format!("/v1/rooms/{room_id}/members/{user_id}/role");
        let body = json!({"role": role});
        self.call_ignoring_body(
            "set role",
            reqwest::Method::PUT,
            &path,
            Some(token),
            Some(body),
            &[200],
        )
        .await
    }

    /// `POST /v1/rooms/{room}/mutes` (201); `None`: until lifted.
    pub async fn mute(
        &self,
        token: &str,
        room_id: i64,
        user_id: i64,
        duration_seconds: Option<i64>,
    ) -> Result<(), ControlApiError> {
        let path = format!("/v1/rooms/{room_id}/mutes");
        let body = json!({"user_id": user_id, "duration_seconds": duration_seconds});
        self.call_ignoring_body(
            "mute",
            reqwest::Method::POST,
            &path,
            Some(token),
            Some(body),
            &[201],
        )
        .await
    }

    /// `DELETE /v1/rooms/{room}/mutes/{user}` (204).
    pub async fn unmute(
        &self,
        token: &str,
        room_id: i64,
        user_id: i64,
    ) -> Result<(), ControlApiError> {
        let path = format!("/v1/rooms/{room_id}/mutes/{user_id}");
        self.call_ignoring_body(
            "unmute",
            reqwest::Method::DELETE,
            &path,
            Some(token),
            None,
            &[204],
        )
        .await
    }

    /// `POST /v1/rooms/{room}/kicks` (204).
    pub async fn kick(
        &self,
        token: &str,
        room_id: i64,
        user_id: i64,
    ) -> Result<(), ControlApiError> {
        let path = format!("/v1/rooms/{room_id}/kicks");
        let body = json!({"user_id": user_id});
        self.call_ignoring_body(
            "kick",
            reqwest::Method::POST,
            &path,
            Some(token),
            Some(body),
            &[204],
        )
        .await
    }

    /// `POST /v1/rooms/{room}/bans` (201); `None`: for ever.
    pub async fn ban(
        &self,
        token: &str,
        room_id: i64,
        user_id: i64,
        duration_seconds: Option<i64>,
    ) -> Result<(), ControlApiError> {
        let path = format!("/v1/rooms/{room_id}/bans");
        let body = json!({"user_id": user_id, "duration_seconds": duration_seconds});
        self.call_ignoring_body(
            "ban",
            reqwest::Method::POST,
            &path,
            Some(token),
            Some(body),
            &[201],
        )
        .await
    }

    /// `GET /v1/admin/settings` (instance admins): the version and settings.
    pub async fn runtime_settings(
        &self,
        admin_token: &str,
    ) -> Result<(i64, RuntimeSettings), ControlApiError> {
        let version: SettingsVersion = self
            .call(
                "read settings",
                reqwest::Method::GET,
                "/v1/admin/settings",
                Some(admin_token),
                None,
                &[200],
            )
            .await?;
        Ok((version.version, version.settings))
    }

    /// `PUT /v1/admin/settings` (instance admins): replaces the runtime
    /// settings, which the control plane pushes to every data plane; the
    /// new version.
    pub async fn update_runtime_settings(
        &self,
        admin_token: &str,
        settings: &RuntimeSettings,
    ) -> Result<i64, ControlApiError> {
        let body = json!({ "settings": settings });
        let version: SettingsVersion = self
            .call(
                "update settings",
                reqwest::Method::PUT,
                "/v1/admin/settings",
                Some(admin_token),
                Some(body),
                &[200],
            )
            .await?;
        Ok(version.version)
    }

    /// `GET /v1/rooms/{room}/messages`: a page of stored history.
    pub async fn history(
        &self,
        token: &str,
        room_id: i64,
        query: HistoryQuery,
    ) -> Result<HistoryPage, ControlApiError> {
        let mut parameters = Vec::new();
        let named = [
            ("before", query.before_seq),
            ("after", query.after_seq),
            ("limit", query.limit),
        ];
        for (name, value) in named {
            if let Some(value) = value {
                parameters.push(format!("{name}={value}"));
            }
        }
        let mut path = format!("/v1/rooms/{room_id}/messages");
        if !parameters.is_empty() {
            path = format!("{path}?{}", parameters.join("&"));
        }
        self.call(
            "read history",
            reqwest::Method::GET,
            &path,
            Some(token),
            None,
            &[200],
        )
        .await
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        step: &'static str,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        expected_statuses: &[u16],
    ) -> Result<T, ControlApiError> {
        let text = self
            .call_text(step, method, path, token, body, expected_statuses)
            .await?;
        serde_json::from_str(&text).map_err(|_| ControlApiError::Malformed { step, body: text })
    }

    async fn call_ignoring_body(
        &self,
        step: &'static str,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        expected_statuses: &[u16],
    ) -> Result<(), ControlApiError> {
        self.call_text(step, method, path, token, body, expected_statuses)
            .await
            .map(drop)
    }

    async fn call_text(
        &self,
        step: &'static str,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        expected_statuses: &[u16],
    ) -> Result<String, ControlApiError> {
        let mut request = self.request(method, path, token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, text) = send(step, request).await?;
        if !expected_statuses.contains(&status) {
            return Err(ControlApiError::Status {
                step,
                status,
                body: text,
            });
        }
        Ok(text)
    }
}

#[derive(Deserialize)]
struct SettingsVersion {
    version: i64,
    settings: RuntimeSettings,
}

async fn send(
    step: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<(u16, String), ControlApiError> {
    let transport = |error: reqwest::Error| ControlApiError::Transport {
        step,
        reason: error.to_string(),
    };
    let response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(transport)?;
    Ok((status, text))
}

fn id_of(step: &'static str, value: &Value) -> Result<i64, ControlApiError> {
    value["id"]
        .as_i64()
        .ok_or_else(|| ControlApiError::Malformed {
            step,
            body: value.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// Serves one HTTP request with `status` and `body`, and returns the
    /// request's head and body as text.
    async fn answer_once(
        status_line: &'static str,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            // Bounded: the client sends one small request and waits.
            loop {
                let n_read = stream.read(&mut chunk).await.unwrap();
                request.extend_from_slice(&chunk[..n_read]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|line| {
                            line.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|value| value.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if rest.len() >= length {
                        break;
                    }
                }
                if n_read == 0 {
                    break;
                }
            }
            let response = format!(
                "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&request).to_string()
        });
        (base_url, server)
    }

    #[tokio::test]
    async fn login_sends_the_credentials_and_returns_token_and_user() {
        let (base_url, server) = answer_once(
            "200 OK",
            r#"{"access_token":"eyJ.x.y","token_type":"Bearer","expires_in":900,"refresh_token":"r","user_id":7,"session_id":3}"#,
        )
        .await;
        let api = ControlApi::new(base_url).unwrap();
        let session = api.login("ada", BENCH_PASSWORD).await.unwrap();
        assert_eq!(
            session,
            Session {
                user_id: 7,
                access_token: "eyJ.x.y".into()
            }
        );
        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /v1/sessions HTTP/1.1"),
            "{request}"
        );
        assert!(request.contains(r#""login":"ada""#), "{request}");
    }

    #[tokio::test]
    async fn a_refusal_names_the_step_status_and_body() {
        let (base_url, server) = answer_once(
            "403 Forbidden",
            r#"{"error":"forbidden","detail":"instance admins only"}"#,
        )
        .await;
        let api = ControlApi::new(base_url).unwrap();
        let error = api
            .update_runtime_settings("token", &RuntimeSettings::unthrottled(4000))
            .await
            .unwrap_err();
        assert_eq!(error.status(), Some(403));
        let text = error.to_string();
        assert!(text.starts_with("update settings: HTTP 403"), "{text}");
        assert!(text.contains("instance admins only"), "{text}");
        let request = server.await.unwrap();
        assert!(request.starts_with("PUT /v1/admin/settings"), "{request}");
        assert!(request
            .to_ascii_lowercase()
            .contains("authorization: bearer token"));
        assert!(
            request.contains(r#""messages_per_second":10000.0"#),
            "{request}"
        );
    }

    #[tokio::test]
    async fn history_passes_only_the_bounds_it_is_given() {
        let (base_url, server) = answer_once(
            "200 OK",
            r#"{"messages":[{"room_id":4,"seq":9,"author_id":2,"body":"hi","thread_parent_seq":null,"mentions":[],"created_at_ms":1,"edited_at_ms":null,"deleted_at_ms":null,"reactions":[]}],"has_more":false}"#,
        )
        .await;
        let api = ControlApi::new(format!("{base_url}/")).unwrap();
        let query = HistoryQuery {
            before_seq: Some(10),
            limit: Some(1),
            ..HistoryQuery::default()
        };
        let page = api.history("token", 4, query).await.unwrap();
        assert_eq!(page.messages.len(), 1);
        assert_eq!(page.messages[0].seq, 9);
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /v1/rooms/4/messages?before=10&limit=1 HTTP/1.1"),
            "{request}"
        );
    }

    #[test]
    fn unthrottled_settings_raise_every_rate_limit_to_its_maximum() {
        let settings = RuntimeSettings::unthrottled(65_536);
        assert_eq!(settings.messages_per_second, 10_000.0);
        assert_eq!(settings.message_burst, 100_000);
        assert_eq!(settings.connections_per_ip_per_minute, 1_000_000);
        assert_eq!(settings.message_bytes_max, 65_536);
        assert_eq!(
            settings.history_page_max,
            RuntimeSettings::default().history_page_max
        );
    }
}
