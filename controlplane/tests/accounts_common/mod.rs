//! Helpers shared by the `accounts_*` integration tests: a server with cheap
//! password hashing, and register / login shortcuts.
#![allow(dead_code)]

use serde_json::{json, Value};

use crate::support::{Backend, TestControlPlane};

/// A password that passes the policy for every username used in tests.
pub const PASSWORD: &str = "correct horse battery staple";

/// argon2id at its cheapest: tests check behaviour, not hashing cost (the
/// default parameters take seconds per hash in a debug build).
pub const CHEAP_HASHING: [(&str, &str); 2] = [
    ("VEZA_AUTH_ARGON2_MEMORY_KIB", "64"),
    ("VEZA_AUTH_ARGON2_ITERATIONS", "1"),
];

/// Starts a server with cheap hashing and `extra_env`.
pub async fn start(backend: Backend, extra_env: &[(&str, &str)]) -> TestControlPlane {
    let mut env: Vec<(&str, &str)> = CHEAP_HASHING.to_vec();
    env.extend_from_slice(extra_env);
    TestControlPlane::start(backend, &env).await
}

/// Registers `username` (email `<username>@example.org`, [`PASSWORD`]).
pub async fn register(server: &TestControlPlane, username: &str) -> Value {
    let (status, body) = server
        .request(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"username": username, "email": format!("{username}@example.org"), "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 201, "register {username}: {body}");
    body
}

/// A session's tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub session_id: i64,
    pub user_id: i64,
}

impl Tokens {
    pub fn from_body(body: &Value) -> Self {
        Self {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_string(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_string(),
            session_id: body["session_id"].as_i64().expect("session_id"),
            user_id: body["user_id"].as_i64().expect("user_id"),
        }
    }
}

/// Logs in with [`PASSWORD`]; asserts 200.
pub async fn login(server: &TestControlPlane, login: &str) -> Tokens {
    let (status, body) = login_with(server, json!({"login": login, "password": PASSWORD})).await;
    assert_eq!(status, 200, "login {login}: {body}");
    Tokens::from_body(&body)
}

/// `POST /v1/sessions` with `body`.
pub async fn login_with(server: &TestControlPlane, body: Value) -> (u16, Value) {
    server
        .request("POST", "/v1/sessions", None, Some(body))
        .await
}

/// Registers and logs in.
pub async fn register_and_login(server: &TestControlPlane, username: &str) -> Tokens {
    register(server, username).await;
    login(server, username).await
}

/// Asserts `status` and the error name of a JSON error body.
#[track_caller]
pub fn assert_error(response: (u16, Value), status: u16, error: &str) {
    let (actual_status, body) = response;
    TestControlPlane::assert_error_shape(&body);
    assert_eq!(
        (actual_status, body["error"].as_str().unwrap()),
        (status, error),
        "{body}"
    );
}
