//! The account life cycle over real HTTP on both databases: register, login,
//! refresh rotation and reuse detection, sessions, logout, password change,
//! bad input, and durability across `kill -9`.

mod accounts_common;
mod support;

use accounts_common::{
    assert_error, login, login_with, register, register_and_login, start, Tokens, PASSWORD,
};
use serde_json::{json, Value};
use support::{TestControlPlane, BACKENDS};

async fn me(server: &TestControlPlane, access: &str) -> (u16, Value) {
    server
        .request("GET", "/v1/accounts/me", Some(access), None)
        .await
}

async fn refresh(server: &TestControlPlane, refresh_token: &str) -> (u16, Value) {
    server
        .request(
            "POST",
            "/v1/sessions/refresh",
            None,
            Some(json!({"refresh_token": refresh_token})),
        )
        .await
}

#[tokio::test]
async fn register_login_me_and_the_first_user_is_the_admin() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let alice = register(&server, "Alice").await;
        assert_eq!(
            (alice["username"].as_str(), alice["is_admin"].as_bool()),
            (Some("Alice"), Some(true))
        );
        assert_eq!(alice["email"], "Alice@example.org");
        let bob = register(&server, "bob").await;
        assert_eq!(
            bob["is_admin"], false,
            "{backend:?}: only the first user is admin"
        );

        let taken =
            json!({"username": "ALICE", "email": "other@example.org", "password": PASSWORD});
        assert_error(
            server
                .request("POST", "/v1/accounts", None, Some(taken))
                .await,
            409,
            "username_taken",
        );
        let email_taken =
            json!({"username": "carol", "email": "BOB@example.org", "password": PASSWORD});
        assert_error(
            server
                .request("POST", "/v1/accounts", None, Some(email_taken))
                .await,
            409,
            "email_taken",
        );

        // By username in any case, or by email.
        let by_name = login(&server, "alice").await;
        let by_email = login(&server, "ALICE@EXAMPLE.ORG").await;
        assert_ne!(by_name.session_id, by_email.session_id);
        let (status, body) = me(&server, &by_name.access).await;
        assert_eq!(status, 200);
        assert_eq!(
            (body["id"].as_i64(), body["is_admin"].as_bool()),
            (alice["id"].as_i64(), Some(true))
        );
        assert_eq!(body["totp_enabled"], false);

        assert_error(
            login_with(
                &server,
                json!({"login": "alice", "password": "wrong password!"}),
            )
            .await,
            401,
            "invalid_credentials",
        );
        assert_error(
            login_with(&server, json!({"login": "nobody", "password": PASSWORD})).await,
            401,
            "invalid_credentials",
        );
    }
}

#[tokio::test]
async fn refresh_rotates_and_reusing_a_rotated_token_revokes_the_whole_session() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let first = register_and_login(&server, "alice").await;
        let other = login(&server, "alice").await;

        let (status, body) = refresh(&server, &first.refresh).await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        let second = Tokens::from_body(&body);
        assert_eq!(
            second.session_id, first.session_id,
            "the same session (family)"
        );
        assert_ne!(second.refresh, first.refresh);
        assert_ne!(second.access, first.access);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 900);
        assert_eq!(me(&server, &second.access).await.0, 200);

        // The old refresh token again: someone else holds the family.
        assert_error(
            refresh(&server, &first.refresh).await,
            401,
            "refresh_token_reused",
        );
        assert_error(
            refresh(&server, &second.refresh).await,
            401,
            "session_revoked",
        );
        assert_error(me(&server, &second.access).await, 401, "token_revoked");
        assert_error(me(&server, &first.access).await, 401, "token_revoked");
        // Other sessions are untouched.
        assert_eq!(me(&server, &other.access).await.0, 200);
        let (status, _) = refresh(&server, &other.refresh).await;
        assert_eq!(status, 200);

        assert_error(
            refresh(&server, "vzr_not-a-token").await,
            401,
            "invalid_refresh_token",
        );
        let metrics = server
            .http
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("veza_refresh_token_reuse_total 1"),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn sessions_are_listed_revoked_one_by_one_and_ended_by_logout() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let first = register_and_login(&server, "alice").await;
        let second = login(&server, "alice").await;
        let bob = register_and_login(&server, "bob").await;

        let (status, body) = server
            .request("GET", "/v1/sessions", Some(&first.access), None)
            .await;
        assert_eq!(status, 200);
        let sessions = body["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 2, "{backend:?}: {body}");
        let current: Vec<bool> = sessions
            .iter()
            .map(|s| s["current"].as_bool().unwrap())
            .collect();
        assert_eq!(current.iter().filter(|c| **c).count(), 1);
        assert_eq!(sessions[0]["ip"], "127.0.0.1");

        let path = format!("/v1/sessions/{}", second.session_id);
        assert_eq!(
            server
                .request("DELETE", &path, Some(&first.access), None)
                .await
                .0,
            204
        );
        assert_error(me(&server, &second.access).await, 401, "token_revoked");
        assert_error(
            refresh(&server, &second.refresh).await,
            401,
            "session_revoked",
        );
        assert_error(
            server
                .request("DELETE", &path, Some(&first.access), None)
                .await,
            404,
            "not_found",
        );
        // Another user's session is not ours to end.
        let bobs = format!("/v1/sessions/{}", bob.session_id);
        assert_error(
            server
                .request("DELETE", &bobs, Some(&first.access), None)
                .await,
            404,
            "not_found",
        );
        assert_error(
            server
                .request("DELETE", "/v1/sessions/abc", Some(&first.access), None)
                .await,
            400,
            "bad_request",
        );

        assert_eq!(
            server
                .request("DELETE", "/v1/sessions/current", Some(&first.access), None)
                .await
                .0,
            204
        );
        assert_error(me(&server, &first.access).await, 401, "token_revoked");
        assert_error(
            refresh(&server, &first.refresh).await,
            401,
            "session_revoked",
        );
        assert_eq!(me(&server, &bob.access).await.0, 200);
    }
}

#[tokio::test]
async fn changing_the_password_ends_every_other_session() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let kept = register_and_login(&server, "alice").await;
        let ended = login(&server, "alice").await;
        let new_password = "a completely new passphrase";
        let change =
            |current: &str, new: &str| json!({"current_password": current, "new_password": new});

        assert_error(
            server
                .request(
                    "POST",
                    "/v1/accounts/me/password",
                    Some(&kept.access),
                    Some(change("wrong password!", new_password)),
                )
                .await,
            403,
            "wrong_password",
        );
        assert_error(
            server
                .request(
                    "POST",
                    "/v1/accounts/me/password",
                    Some(&kept.access),
                    Some(change(PASSWORD, "alice-is-great-2024")),
                )
                .await,
            422,
            "validation_failed",
        );
        let (status, _) = server
            .request(
                "POST",
                "/v1/accounts/me/password",
                Some(&kept.access),
                Some(change(PASSWORD, new_password)),
            )
            .await;
        assert_eq!(status, 204, "{backend:?}");

        assert_eq!(
            me(&server, &kept.access).await.0,
            200,
            "the caller's session stays"
        );
        assert_error(me(&server, &ended.access).await, 401, "token_revoked");
        assert_error(
            refresh(&server, &ended.refresh).await,
            401,
            "session_revoked",
        );
        assert_error(
            login_with(&server, json!({"login": "alice", "password": PASSWORD})).await,
            401,
            "invalid_credentials",
        );
        let (status, _) =
            login_with(&server, json!({"login": "alice", "password": new_password})).await;
        assert_eq!(status, 200);
    }
}

/// Sends a raw body with optional content type.
async fn raw_post(
    server: &TestControlPlane,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    // A fresh client each time: the server may answer before reading the
    // body and close the connection, which a pooled client would reuse.
    let client = reqwest::Client::new();
    let mut request = client.post(server.url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx_and_changes_nothing() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let json_type = Some("application/json");
        assert_error(
            raw_post(
                &server,
                "/v1/accounts",
                json_type,
                b"{\"username\": ".to_vec(),
            )
            .await,
            400,
            "malformed_json",
        );
        assert_error(
            raw_post(&server, "/v1/sessions", None, b"{}".to_vec()).await,
            415,
            "unsupported_media_type",
        );

        let cases = [
            json!({"username": 5, "email": "a@example.org", "password": PASSWORD}),
            json!({"username": "carol", "email": "c@example.org", "password": PASSWORD, "is_admin": true}),
            json!({"username": "robert'); DROP TABLE users;--", "email": "r@example.org", "password": PASSWORD}),
            json!({"username": "x' OR '1'='1", "email": "x@example.org", "password": PASSWORD}),
            json!({"username": "carol", "email": "c'; DELETE FROM users;--@example.org", "password": PASSWORD}),
            json!({"username": "carol", "email": "not-an-email", "password": PASSWORD}),
            json!({"username": "ca", "email": "c@example.org", "password": PASSWORD}),
            json!({"username": "carol", "email": "c@example.org", "password": "short"}),
            json!({"username": "carol", "email": "c@example.org", "password": "zzzzzzzzzzzzzzzz"}),
            json!({"username": "carol", "email": "c@example.org", "password": "my name is carol!"}),
            json!({"username": "carol", "email": "c@example.org", "password": "x".repeat(300)}),
        ];
        for case in cases {
            let (status, body) = server
                .request("POST", "/v1/accounts", None, Some(case.clone()))
                .await;
            assert_eq!(status, 422, "{backend:?}: {case} → {body}");
            TestControlPlane::assert_error_shape(&body);
        }
        assert_error(
            login_with(
                &server,
                json!({"login": "carol", "password": PASSWORD, "extra": 1}),
            )
            .await,
            422,
            "validation_failed",
        );
        assert_error(
            login_with(
                &server,
                json!({"login": "' OR 1=1 --", "password": "' OR 1=1 --"}),
            )
            .await,
            401,
            "invalid_credentials",
        );

        // Nothing was created: the next account is still the first one.
        let first = register(&server, "carol").await;
        assert_eq!(
            first["is_admin"], true,
            "{backend:?}: an earlier bad request created a user"
        );
    }
}

#[tokio::test]
async fn an_oversize_body_gets_a_json_413() {
    let server = start(support::Backend::Sqlite, &[]).await;
    let oversize = format!("{{\"username\": \"{}\"}}", "a".repeat(200_000)).into_bytes();
    let (status, body) =
        raw_post(&server, "/v1/accounts", Some("application/json"), oversize).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].is_string(),
        "the 413 body is not JSON: tower-http's RequestBodyLimitLayer in api.rs answers \
         plain text before any route runs"
    );
    // Nothing was created.
    assert_eq!(register(&server, "carol").await["is_admin"], true);
    // The unread rest of an oversize body makes the connection unusable, so
    // the 413 says so; a pooling client then opens a new one for its next
    // request instead of failing it.
    let response = server
        .http
        .post(server.url("/v1/accounts"))
        .header("content-type", "application/json")
        .body(vec![b' '; 300_000])
        .send()
        .await
        .expect("the 413 reaches the client");
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(
        response.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "a 413 must close the connection"
    );
    for name in ["dave", "erin", "frank"] {
        assert_eq!(register(&server, name).await["is_admin"], false);
    }
}

#[tokio::test]
async fn acknowledged_accounts_sessions_and_revocations_survive_kill_9() {
    for backend in BACKENDS {
        let mut server = start(backend, &[]).await;
        let kept = register_and_login(&server, "alice").await;
        let revoked = login(&server, "alice").await;
        let path = format!("/v1/sessions/{}", revoked.session_id);
        assert_eq!(
            server
                .request("DELETE", &path, Some(&kept.access), None)
                .await
                .0,
            204
        );
        register(&server, "bob").await;

        server.kill_hard();
        server.restart().await;

        login(&server, "bob").await;
        // The signing key survived, so tokens issued before still verify...
        assert_eq!(me(&server, &kept.access).await.0, 200, "{backend:?}");
        // ...and revocations survived too.
        assert_error(me(&server, &revoked.access).await, 401, "token_revoked");
        let (status, _) = refresh(&server, &kept.refresh).await;
        assert_eq!(status, 200);
    }
}
