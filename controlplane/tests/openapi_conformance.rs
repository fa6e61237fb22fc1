//! The OpenAPI document matches the implementation: schemathesis (from PyPI)
//! generates requests from `/v1/openapi.json` for every operation, on both
//! databases, and fails on any server error, undocumented status code,
//! response that does not match its schema, or missing JSON error body.
//!
//! Two exclusions, and why:
//! - the check `positive_data_acceptance` (ST202), because some refusals are
//!   business rules no schema can state: the password policy, a wrong TOTP
//!   code, a user id that names nobody. They answer a documented 422.
//! - the operations that revoke the run's own credential (logout, revoke a
//!   session, delete an API key): after them every request is a 401 and the
//!   rest of the run would test nothing.

mod support;

use std::process::Command;

use serde_json::json;
use support::{TestControlPlane, BACKENDS};

const EXAMPLES_PER_OPERATION: &str = "15";

async fn admin_token(server: &TestControlPlane) -> String {
    let (status, body) = server
        .request(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"username": "schema_admin", "email": "admin@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .request(
            "POST",
            "/v1/sessions",
            None,
            Some(json!({"login": "schema_admin", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_or_schema_mismatch_on_either_database() {
    let version = Command::new("schemathesis").arg("--version").output();
    assert!(
        version.is_ok_and(|output| output.status.success()),
        "schemathesis is not installed: run `bash scripts/setup.sh` (the test command does)"
    );
    for backend in BACKENDS {
        let server = TestControlPlane::start(
            backend,
            &[
                ("VEZA_AUTH_ARGON2_MEMORY_KIB", "64"),
                ("VEZA_AUTH_ARGON2_ITERATIONS", "1"),
                ("VEZA_SERVER_LOG_LEVEL", "warn"),
            ],
        )
        .await;
        let token = admin_token(&server).await;
        let schema_url = server.url("/v1/openapi.json");
        let output = tokio::task::spawn_blocking(move || {
            Command::new("schemathesis")
                .args(["run", &schema_url])
                .args(["--header", &format!("Authorization: Bearer {token}")])
                .args([
                    "--checks",
                    "all",
                    "--exclude-checks",
                    "positive_data_acceptance",
                ])
                .args(["--exclude-operation-id", "logout"])
                .args(["--exclude-operation-id", "revoke_session"])
                .args(["--exclude-operation-id", "delete_api_key"])
                .args([
                    "--max-examples",
                    EXAMPLES_PER_OPERATION,
                    "--seed",
                    "20261121",
                ])
                .args(["--request-timeout", "10", "--no-color"])
                .env("SCHEMATHESIS_HOOKS", "")
                .output()
                .expect("schemathesis runs")
        })
        .await
        .unwrap();
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{backend:?}: schemathesis found failures:\n{report}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            server.log()
        );
        assert!(
            !report.contains("Authentication failed"),
            "{backend:?}: the run lost its credential, so it tested little:\n{report}"
        );
    }
}
