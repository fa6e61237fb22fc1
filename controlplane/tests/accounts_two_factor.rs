//! TOTP two-factor over real HTTP on both databases: enrolment with an
//! otpauth URI, login with a code, replay refused, backup codes once,
//! disabling with the password.

mod accounts_common;
mod support;

use accounts_common::{assert_error, login_with, register_and_login, start, PASSWORD};
use serde_json::json;
use support::{TestControlPlane, BACKENDS};
use totp_rs::TOTP;

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Enrols `access`'s user and returns the generator and the backup codes.
async fn enrol(server: &TestControlPlane, access: &str) -> (TOTP, Vec<String>) {
    let (status, enrolment) = server
        .request("POST", "/v1/accounts/me/totp", Some(access), None)
        .await;
    assert_eq!(status, 200, "{enrolment}");
    let uri = enrolment["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Veza:alice?"), "{uri}");
    assert!(
        uri.contains(&format!("secret={}", enrolment["secret"].as_str().unwrap())),
        "{uri}"
    );
    assert!(uri.contains("issuer=Veza"), "{uri}");
    let totp = TOTP::from_url(uri).unwrap();

    let confirm = |code: String| json!({"code": code});
    let wrong = if totp.generate(now_seconds()) == "000000" {
        "111111"
    } else {
        "000000"
    };
    assert_error(
        server
            .request(
                "POST",
                "/v1/accounts/me/totp/confirm",
                Some(access),
                Some(confirm(wrong.into())),
            )
            .await,
        422,
        "totp_invalid",
    );
    let (status, body) = server
        .request(
            "POST",
            "/v1/accounts/me/totp/confirm",
            Some(access),
            Some(confirm(totp.generate(now_seconds()))),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let backup_codes: Vec<String> = body["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(backup_codes.len(), 10);
    (totp, backup_codes)
}

#[tokio::test]
async fn totp_enrolment_login_replay_and_backup_codes() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let tokens = register_and_login(&server, "alice").await;
        let (totp, backup_codes) = enrol(&server, &tokens.access).await;
        assert_error(
            server
                .request("POST", "/v1/accounts/me/totp", Some(&tokens.access), None)
                .await,
            409,
            "totp_already_enabled",
        );
        assert_error(
            server
                .request(
                    "POST",
                    "/v1/accounts/me/totp/confirm",
                    Some(&tokens.access),
                    Some(json!({"code": "123456"})),
                )
                .await,
            409,
            "totp_not_pending",
        );
        let (_, me) = server
            .request("GET", "/v1/accounts/me", Some(&tokens.access), None)
            .await;
        assert_eq!(me["totp_enabled"], true);

        let with_code =
            |code: &str| json!({"login": "alice", "password": PASSWORD, "totp_code": code});
        assert_error(
            login_with(&server, json!({"login": "alice", "password": PASSWORD})).await,
            401,
            "totp_required",
        );
        assert_error(
            login_with(&server, with_code("12345x")).await,
            401,
            "totp_invalid",
        );
        // The code that confirmed enrolment is spent: its step was used.
        let current = totp.generate(now_seconds());
        assert_error(
            login_with(&server, with_code(&current)).await,
            401,
            "totp_invalid",
        );
        // The next step's code is accepted (one step of drift), once.
        let next = totp.generate(now_seconds() + 30);
        let (status, body) = login_with(&server, with_code(&next)).await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        assert_error(
            login_with(&server, with_code(&next)).await,
            401,
            "totp_invalid",
        );

        let (status, _) = login_with(&server, with_code(&backup_codes[0])).await;
        assert_eq!(status, 200, "a backup code stands in for a TOTP code");
        assert_error(
            login_with(&server, with_code(&backup_codes[0])).await,
            401,
            "totp_invalid",
        );
        let shouted = backup_codes[1].replace('-', "").to_uppercase();
        let (status, _) = login_with(&server, with_code(&shouted)).await;
        assert_eq!(status, 200, "backup codes ignore case and dashes");
        // A wrong password with a right code is still a wrong password.
        let next_again = totp.generate(now_seconds() + 30);
        assert_error(
            login_with(
                &server,
                json!({"login": "alice", "password": "wrong password!", "totp_code": next_again}),
            )
            .await,
            401,
            "invalid_credentials",
        );
    }
}

#[tokio::test]
async fn disabling_totp_needs_the_password() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let tokens = register_and_login(&server, "alice").await;
        assert_error(
            server
                .request(
                    "DELETE",
                    "/v1/accounts/me/totp",
                    Some(&tokens.access),
                    Some(json!({"password": PASSWORD})),
                )
                .await,
            409,
            "totp_not_enabled",
        );
        enrol(&server, &tokens.access).await;
        assert_error(
            server
                .request(
                    "DELETE",
                    "/v1/accounts/me/totp",
                    Some(&tokens.access),
                    Some(json!({"password": "wrong password!"})),
                )
                .await,
            403,
            "wrong_password",
        );
        let (status, _) = server
            .request(
                "DELETE",
                "/v1/accounts/me/totp",
                Some(&tokens.access),
                Some(json!({"password": PASSWORD})),
            )
            .await;
        assert_eq!(status, 204, "{backend:?}");
        let (status, _) =
            login_with(&server, json!({"login": "alice", "password": PASSWORD})).await;
        assert_eq!(status, 200);
    }
}
