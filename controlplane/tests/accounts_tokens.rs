//! Access tokens over real HTTP on both databases: forged, expired and
//! garbage tokens are refused with a JSON 401; signing keys rotate without
//! invalidating the tokens already issued, and old keys leave once their
//! tokens have expired.

mod accounts_common;
mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use accounts_common::{assert_error, login, register_and_login, start};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde_json::{json, Value};
use support::{TestControlPlane, BACKENDS};
use veza_proto::access_token::{self, AccessTokenClaims};

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

fn claims_of(token: &str) -> Value {
    let claims = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

/// A token with arbitrary header and claims, signed by `key`.
fn forge(header: &Value, claims: &Value, key: &SigningKey) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// GET /v1/accounts/me with a raw Authorization header; asserts a JSON 401
/// with `WWW-Authenticate: Bearer` and returns the error name.
async fn refused(server: &TestControlPlane, authorization: Option<&str>) -> String {
    let mut request = server.http.get(server.url("/v1/accounts/me"));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        401,
        "{authorization:?} accepted"
    );
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(
        challenge.unwrap_or_default().starts_with("Bearer"),
        "no WWW-Authenticate: Bearer"
    );
    let body: Value = response.json().await.unwrap();
    TestControlPlane::assert_error_shape(&body);
    body["error"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn forged_and_garbage_tokens_get_a_json_401() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let tokens = register_and_login(&server, "alice").await;
        let bob = register_and_login(&server, "bob").await;
        let header = header_of(&bob.access);
        assert_eq!(
            (header["alg"].as_str(), header["typ"].as_str()),
            (Some("EdDSA"), Some("JWT"))
        );
        let mut claims = claims_of(&bob.access);
        assert_eq!(
            (claims["name"].as_str(), claims["adm"].as_bool()),
            (Some("bob"), Some(false))
        );
        assert_eq!(claims["sub"], claims["uid"].to_string());

        // Bob makes himself admin: the payload no longer matches the signature.
        claims["adm"] = json!(true);
        let parts: Vec<&str> = bob.access.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            parts[2]
        );
        assert_eq!(
            refused(&server, Some(&format!("Bearer {tampered}"))).await,
            "token_bad_signature"
        );

        let stranger = SigningKey::from_bytes(&[9; 32]);
        let ours = forge(&header, &claims, &stranger);
        assert_eq!(
            refused(&server, Some(&format!("Bearer {ours}"))).await,
            "token_bad_signature"
        );
        let unknown_kid = forge(
            &json!({"alg": "EdDSA", "typ": "JWT", "kid": "not-ours"}),
            &claims,
            &stranger,
        );
        assert_eq!(
            refused(&server, Some(&format!("Bearer {unknown_kid}"))).await,
            "token_unknown_key"
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": header["kid"]}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert_eq!(
            refused(&server, Some(&format!("Bearer {none}"))).await,
            "token_wrong_algorithm"
        );

        for garbage in [
            "Bearer abc",
            "Bearer a.b.c",
            "Bearer ....",
            "Bearer ",
            "Basic YWxpY2U6cHc=",
            "abc",
            "Bearer vzk_nope",
        ] {
            refused(&server, Some(garbage)).await;
        }
        assert_eq!(refused(&server, None).await, "unauthorized");
        assert_eq!(
            server
                .request("GET", "/v1/accounts/me", Some(&tokens.access), None)
                .await
                .0,
            200,
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn expired_tokens_get_401_token_expired() {
    for backend in BACKENDS {
        let server = start(backend, &[("VEZA_AUTH_ACCESS_TOKEN_TTL_SECONDS", "1")]).await;
        let tokens = register_and_login(&server, "alice").await;
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert_eq!(
            refused(&server, Some(&format!("Bearer {}", tokens.access))).await,
            "token_expired"
        );
        // The refresh token outlives it.
        let (status, body) = server
            .request(
                "POST",
                "/v1/sessions/refresh",
                None,
                Some(json!({"refresh_token": tokens.refresh})),
            )
            .await;
        assert_eq!(status, 200, "{backend:?}: {body}");
    }
}

async fn signing_keys(server: &TestControlPlane, access: &str) -> Vec<Value> {
    let (status, body) = server
        .request("GET", "/v1/admin/signing-keys", Some(access), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["keys"].as_array().unwrap().clone()
}

#[tokio::test]
async fn rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key() {
    for backend in BACKENDS {
        let mut server = start(backend, &[]).await;
        let admin = register_and_login(&server, "admin").await;
        let bob = register_and_login(&server, "bob").await;
        let old_kid = header_of(&admin.access)["kid"]
            .as_str()
            .unwrap()
            .to_string();
        let keys = signing_keys(&server, &admin.access).await;
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0]["kid"].as_str(), keys[0]["status"].as_str()),
            (Some(old_kid.as_str()), Some("active"))
        );

        assert_error(
            server
                .request(
                    "POST",
                    "/v1/admin/signing-keys/rotate",
                    Some(&bob.access),
                    None,
                )
                .await,
            403,
            "forbidden",
        );
        assert_error(
            server
                .request("GET", "/v1/admin/signing-keys", Some(&bob.access), None)
                .await,
            403,
            "forbidden",
        );
        let (status, new_key) = server
            .request(
                "POST",
                "/v1/admin/signing-keys/rotate",
                Some(&admin.access),
                None,
            )
            .await;
        assert_eq!(status, 201, "{backend:?}: {new_key}");
        let new_kid = new_key["kid"].as_str().unwrap().to_string();
        assert_ne!(new_kid, old_kid);

        assert_eq!(
            server
                .request("GET", "/v1/accounts/me", Some(&bob.access), None)
                .await
                .0,
            200,
            "old token still valid"
        );
        let fresh = login(&server, "bob").await;
        assert_eq!(header_of(&fresh.access)["kid"], new_kid.as_str());
        let keys = signing_keys(&server, &admin.access).await;
        let statuses: Vec<(&str, &str)> = keys
            .iter()
            .map(|k| (k["kid"].as_str().unwrap(), k["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            statuses,
            [(new_kid.as_str(), "active"), (old_kid.as_str(), "retired")]
        );
        assert_eq!(
            keys[1]["valid_until_ms"].as_i64().unwrap()
                - keys[1]["retired_at_ms"].as_i64().unwrap(),
            900_000
        );

        // The published public key verifies the token as a data plane would.
        let public_key: [u8; 32] = URL_SAFE_NO_PAD
            .decode(keys[0]["public_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let verifying_key = VerifyingKey::from_bytes(&public_key).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = access_token::verify(
            &fresh.access,
            |kid| (kid == new_kid).then_some(verifying_key),
            now,
        )
        .unwrap();
        assert_eq!(
            (claims.uid, claims.name.as_str(), claims.sid),
            (bob.user_id, "bob", fresh.session_id)
        );

        let directory = server.data_dir.path().join("signing-keys");
        assert_eq!(
            std::fs::metadata(&directory).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for kid in [&old_kid, &new_kid] {
            let mode = std::fs::metadata(directory.join(format!("{kid}.key")))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{kid}");
        }

        server.restart().await;
        let fresh = login(&server, "bob").await;
        assert_eq!(
            header_of(&fresh.access)["kid"],
            new_kid.as_str(),
            "the active key survives a restart"
        );
        assert_eq!(
            server
                .request("GET", "/v1/accounts/me", Some(&bob.access), None)
                .await
                .0,
            200
        );
    }
}

#[tokio::test]
async fn a_retired_key_is_dropped_once_its_tokens_have_expired() {
    for backend in BACKENDS {
        let server = start(backend, &[("VEZA_AUTH_ACCESS_TOKEN_TTL_SECONDS", "1")]).await;
        let admin = register_and_login(&server, "admin").await;
        let old_kid = header_of(&admin.access)["kid"]
            .as_str()
            .unwrap()
            .to_string();
        let key_file = server
            .data_dir
            .path()
            .join("signing-keys")
            .join(format!("{old_kid}.key"));
        let old_key = SigningKey::from_pkcs8_der(&std::fs::read(&key_file).unwrap()).unwrap();
        let (status, _) = server
            .request(
                "POST",
                "/v1/admin/signing-keys/rotate",
                Some(&admin.access),
                None,
            )
            .await;
        assert_eq!(status, 201, "{backend:?}");
        tokio::time::sleep(Duration::from_millis(1_200)).await;

        // A token made now with the retired key (as a thief of the file
        // would) is refused: the key is no longer offered.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = AccessTokenClaims {
            sub: admin.user_id.to_string(),
            uid: admin.user_id,
            name: "admin".into(),
            adm: true,
            sid: admin.session_id,
            jti: "made-by-hand".into(),
            iat: now,
            exp: now + 60,
        };
        let late = access_token::sign(&claims, &old_kid, &old_key);
        assert_eq!(
            refused(&server, Some(&format!("Bearer {late}"))).await,
            "token_unknown_key"
        );

        let fresh = login(&server, "admin").await;
        let keys = signing_keys(&server, &fresh.access).await;
        assert_eq!(keys[1]["status"], "expired", "{keys:?}");
    }
}
