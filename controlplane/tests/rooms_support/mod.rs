//! What the rooms tests share: a server with cheap password hashing, users
//! registered and logged in through the real REST API, rooms, and direct
//! access to the server's database for the message store.
#![allow(dead_code)]

use serde_json::{json, Value};
use veza_controlplane::db::Database;

use crate::support::{Backend, TestControlPlane};

/// Cheap argon2 parameters: these tests register many users, and hashing
/// strength is the accounts tests' concern.
pub const FAST_HASHING: [(&str, &str); 2] = [
    ("VEZA_AUTH_ARGON2_MEMORY_KIB", "64"),
    ("VEZA_AUTH_ARGON2_ITERATIONS", "1"),
];

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    /// User id.
    pub id: i64,
    /// User name.
    pub name: String,
    /// Access token.
    pub token: String,
}

/// Starts a server on `backend` with fast hashing.
pub async fn start(backend: Backend) -> TestControlPlane {
    TestControlPlane::start(backend, &FAST_HASHING).await
}

/// Registers `name` and logs in. The first user of a server is the instance
/// admin.
pub async fn register(server: &TestControlPlane, name: &str) -> User {
    let password = "tuba-glockenspiel-7-harp";
    let (status, account) = server
        .request(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"username": name, "email": format!("{name}@example.org"), "password": password})),
        )
        .await;
    assert_eq!(status, 201, "register {name}: {account}");
    let (status, session) = server
        .request(
            "POST",
            "/v1/sessions",
            None,
            Some(json!({"login": name, "password": password})),
        )
        .await;
    assert_eq!(status, 200, "login {name}: {session}");
    User {
        id: account["id"].as_i64().expect("account id"),
        name: name.to_string(),
        token: session["access_token"]
            .as_str()
            .expect("access token")
            .to_string(),
    }
}

/// `POST /v1/rooms`; returns the room id.
pub async fn create_room(
    server: &TestControlPlane,
    owner: &User,
    name: &str,
    is_public: bool,
) -> i64 {
    let (status, room) = server
        .request(
            "POST",
            "/v1/rooms",
            Some(&owner.token),
            Some(json!({"name": name, "is_public": is_public})),
        )
        .await;
    assert_eq!(status, 201, "create room: {room}");
    room["id"].as_i64().unwrap()
}

/// Sends a request as `user`.
pub async fn call(
    server: &TestControlPlane,
    user: &User,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    server.request(method, path, Some(&user.token), body).await
}

/// Joins, or when the room is private has `inviter` add them, then gives
/// them `role` (as the owner).
pub async fn add_member(
    server: &TestControlPlane,
    room_id: i64,
    owner: &User,
    user: &User,
    role: &str,
) {
    let (status, body) = call(
        server,
        owner,
        "POST",
        &format!("/v1/rooms/{room_id}/invites"),
        Some(json!({"user_id": user.id})),
    )
    .await;
    assert!(status == 201 || status == 200, "invite: {status} {body}");
    if role != "member" {
        let (status, body) = call(
            server,
            owner,
            "PUT",
            &format!("/v1/rooms/{room_id}/members/{}/role", user.id),
            Some(json!({"role": role})),
        )
        .await;
        assert_eq!(status, 200, "set role {role}: {body}");
    }
}

/// Opens the server's database from the test process, as the control
/// protocol's persistence would use it.
pub async fn open_database(server: &TestControlPlane) -> Database {
    let url = match server.backend {
        Backend::Sqlite => String::new(),
        Backend::Postgres => server.database_url.clone(),
    };
    Database::open(&url, server.data_dir.path(), 2)
        .await
        .expect("open the server's database")
}

/// Asserts an error status with the JSON error shape.
pub fn assert_error(status: u16, body: &Value, expected: u16, context: &str) {
    assert_eq!(status, expected, "{context}: {body}");
    assert!(
        body["error"].is_string() && body["detail"].is_string(),
        "{context}: not a JSON error body: {body}"
    );
}
