//! Operational endpoints: `/health`, `/ready`, `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

/// The operational routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

/// The process is alive.
#[utoipa::path(get, path = "/health", tag = "ops",
    responses((status = 200, description = "alive", content_type = "application/json", body = serde_json::Value)))]
async fn health() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

/// The database answers.
#[utoipa::path(get, path = "/ready", tag = "ops",
    responses(
        (status = 200, description = "ready", content_type = "application/json", body = serde_json::Value),
        (status = 503, description = "the database does not answer", body = crate::api::ErrorResponse)))]
async fn ready(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if !state.db.is_reachable().await {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the database does not answer",
        ));
    }
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ready"}"#,
    ))
}

/// Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(4096);
    state.metrics.render(&mut out);
    state.nodes.render_metrics(&mut out);
    state.auth.render_metrics(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
