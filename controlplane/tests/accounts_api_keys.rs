//! API keys over real HTTP on both databases: shown once, scoped, admin
//! routes need the `admin` scope and an admin, deleted keys stop at once.

mod accounts_common;
mod support;

use accounts_common::{assert_error, register_and_login, start};
use serde_json::{json, Value};
use support::{TestControlPlane, BACKENDS};

async fn create(
    server: &TestControlPlane,
    access: &str,
    name: &str,
    scopes: &[&str],
) -> (u16, Value) {
    server
        .request(
            "POST",
            "/v1/api-keys",
            Some(access),
            Some(json!({"name": name, "scopes": scopes})),
        )
        .await
}

#[tokio::test]
async fn api_keys_authenticate_with_their_scopes_until_deleted() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let admin = register_and_login(&server, "admin").await;
        let bob = register_and_login(&server, "bob").await;

        let (status, created) = create(
            &server,
            &bob.access,
            "bot",
            &["rooms:read", "messages:write"],
        )
        .await;
        assert_eq!(status, 201, "{backend:?}: {created}");
        let key = created["key"].as_str().unwrap().to_string();
        assert!(key.starts_with("vzk_") && key.len() >= 4 + 43, "{key}");
        assert_eq!(created["scopes"], json!(["rooms:read", "messages:write"]));

        let (status, me) = server
            .request("GET", "/v1/accounts/me", Some(&key), None)
            .await;
        assert_eq!((status, me["username"].as_str()), (200, Some("bob")));
        // Account management needs the user, not a key.
        assert_error(
            server
                .request("GET", "/v1/api-keys", Some(&key), None)
                .await,
            403,
            "forbidden",
        );
        assert_error(
            server
                .request("GET", "/v1/sessions", Some(&key), None)
                .await,
            403,
            "forbidden",
        );
        assert_error(
            server
                .request("GET", "/v1/admin/rate-limits", Some(&key), None)
                .await,
            403,
            "forbidden",
        );

        let (status, listed) = server
            .request("GET", "/v1/api-keys", Some(&bob.access), None)
            .await;
        assert_eq!(status, 200);
        let listed = &listed["api_keys"][0];
        assert_eq!(listed["name"], "bot");
        assert!(key.starts_with(listed["key_prefix"].as_str().unwrap()));
        assert!(listed.get("key").is_none(), "the key is shown only once");
        assert!(listed["last_used_at_ms"].is_i64(), "{listed}");

        let path = format!("/v1/api-keys/{}", created["id"]);
        assert_error(
            server
                .request("DELETE", &path, Some(&admin.access), None)
                .await,
            404,
            "not_found",
        );
        assert_eq!(
            server
                .request("DELETE", &path, Some(&bob.access), None)
                .await
                .0,
            204
        );
        assert_error(
            server
                .request("GET", "/v1/accounts/me", Some(&key), None)
                .await,
            401,
            "invalid_api_key",
        );
        assert_error(
            server
                .request("DELETE", &path, Some(&bob.access), None)
                .await,
            404,
            "not_found",
        );
        assert_error(
            server
                .request("GET", "/v1/accounts/me", Some("vzk_made_up"), None)
                .await,
            401,
            "invalid_api_key",
        );
    }
}

#[tokio::test]
async fn admin_routes_need_an_admin_and_the_admin_scope() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let admin = register_and_login(&server, "admin").await;
        let bob = register_and_login(&server, "bob").await;

        assert_error(
            create(&server, &bob.access, "sneaky", &["admin"]).await,
            403,
            "forbidden",
        );
        let (_, reader) = create(&server, &admin.access, "reader", &["rooms:read"]).await;
        let reader = reader["key"].as_str().unwrap();
        assert_error(
            server
                .request("GET", "/v1/admin/signing-keys", Some(reader), None)
                .await,
            403,
            "forbidden",
        );
        let (status, operator) = create(&server, &admin.access, "operator", &["admin"]).await;
        assert_eq!(status, 201, "{backend:?}");
        let operator = operator["key"].as_str().unwrap();
        assert_eq!(
            server
                .request("GET", "/v1/admin/signing-keys", Some(operator), None)
                .await
                .0,
            200
        );
        assert_eq!(
            server
                .request("GET", "/v1/admin/rate-limits", Some(operator), None)
                .await
                .0,
            200
        );
        assert_eq!(
            server
                .request("GET", "/v1/admin/rate-limits", Some(&admin.access), None)
                .await
                .0,
            200
        );
        assert_error(
            server
                .request("GET", "/v1/admin/rate-limits", Some(&bob.access), None)
                .await,
            403,
            "forbidden",
        );
    }
}

#[tokio::test]
async fn bad_key_requests_are_refused_with_422() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let bob = register_and_login(&server, "bob").await;
        let long_name = "n".repeat(65);
        for (name, scopes) in [
            ("bot", vec![]),
            ("bot", vec!["rooms:delete"]),
            ("bot", vec!["rooms:read", "rooms:read"]),
            ("", vec!["rooms:read"]),
            (long_name.as_str(), vec!["rooms:read"]),
            ("bot'; DROP TABLE api_keys;--\n", vec!["rooms:read"]),
        ] {
            let (status, body) = create(&server, &bob.access, name, &scopes).await;
            assert_eq!(status, 422, "{backend:?}: {name:?} {scopes:?} → {body}");
        }
        let (status, _) = server
            .request(
                "POST",
                "/v1/api-keys",
                Some(&bob.access),
                Some(json!({"name": "bot", "scopes": "rooms:read"})),
            )
            .await;
        assert_eq!(status, 422);
        let (_, listed) = server
            .request("GET", "/v1/api-keys", Some(&bob.access), None)
            .await;
        assert_eq!(listed["api_keys"], json!([]), "nothing was created");
    }
}
