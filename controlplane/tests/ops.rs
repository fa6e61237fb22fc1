//! Operational endpoints and start-up behaviour on both databases.

mod support;

use support::{TestControlPlane, BACKENDS};

#[tokio::test]
async fn health_ready_metrics_and_openapi_answer_on_both_databases() {
    for backend in BACKENDS {
        let server = TestControlPlane::start(backend, &[]).await;
        let (status, body) = server.request("GET", "/health", None, None).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("ok")),
            "{backend:?}"
        );
        let (status, _) = server.request("GET", "/ready", None, None).await;
        assert_eq!(status, 200, "{backend:?}");
        let (status, document) = server.request("GET", "/v1/openapi.json", None, None).await;
        assert_eq!(status, 200);
        assert_eq!(document["openapi"], "3.1.0");
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
            metrics.contains("veza_rest_requests_total{class=\"2xx\"}"),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let server = TestControlPlane::start(support::Backend::Sqlite, &[]).await;
    let (status, body) = server.request("GET", "/v1/nothing-here", None, None).await;
    assert_eq!(status, 404);
    TestControlPlane::assert_error_shape(&body);
    let (status, body) = server.request("DELETE", "/health", None, None).await;
    assert_eq!(status, 405);
    TestControlPlane::assert_error_shape(&body);
}

#[test]
fn invalid_configuration_exits_with_code_2_naming_the_key() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_veza-controlplane"))
        .env("VEZA_SERVER_LISTEN_PORT", "not-a-port")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.listen_port"), "{stderr}");
}
