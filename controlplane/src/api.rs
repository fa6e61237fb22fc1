//! The REST API: every area's routes merged into one router, with the
//! OpenAPI 3.1 document generated from the same route declarations (so the
//! document cannot drift from the implementation), request ids, a body limit
//! and a JSON 404/405.

use axum::http::{HeaderName, StatusCode};
use axum::routing::get;
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::state::AppState;

/// The JSON body of every error, for the OpenAPI document.
#[derive(utoipa::ToSchema, serde::Serialize)]
pub struct ErrorResponse {
    /// Stable machine-readable name.
    pub error: String,
    /// Human-readable sentence.
    pub detail: String,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Veza control plane", version = "1", description = "Accounts, tokens, rooms, permissions, messages, live streams, tracks and configuration."),
    components(schemas(ErrorResponse)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The routers that implement the API and the whole OpenAPI document:
/// the routes under `server.request_body_bytes_max`, and the routes that
/// stream large bodies under their own limit (track uploads).
pub fn router_and_document() -> (Router<AppState>, Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::ops::router())
        .merge(crate::accounts::router())
        .merge(crate::rooms::router())
        .merge(crate::live_streams::router())
        .merge(crate::tracks::router())
        .merge(crate::social::router())
        .merge(crate::control_server::router())
        .split_for_parts();
    let (streaming_router, streaming_document) = crate::tracks::upload_router().split_for_parts();
    document.merge(streaming_document);
    (router, streaming_router, document)
}

/// The REST application.
pub fn app(state: AppState) -> Router {
    let (router, streaming_router, document) = router_and_document();
    let document = std::sync::Arc::new(document);
    let request_id = HeaderName::from_static("x-request-id");
    router
        .route(
            "/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { axum::Json((*document).clone()) }
            }),
        )
        // Only the routes so far: uploads count their own bytes.
        .layer(RequestBodyLimitLayer::new(
            state.config.server.request_body_bytes_max,
        ))
        .merge(
            streaming_router
                .layer(axum::extract::DefaultBodyLimit::disable())
                .layer(axum::middleware::map_response(close_after_refused_upload)),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::count,
        ))
        // Outside the limit layer, so it sees (and reshapes) that layer's 413.
        .layer(axum::middleware::map_response(json_payload_too_large))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// An upload refused before its body was read (queue full, too large, bad
/// type) leaves that body on the wire, so the connection cannot carry
/// another request: say `Connection: close`, or a pooling client would
/// send its next request on it and fail.
async fn close_after_refused_upload(
    mut response: axum::response::Response,
) -> axum::response::Response {
    if response.status().is_client_error() || response.status().is_server_error() {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The body-limit layer answers an over-long `Content-Length` with plain text
/// before any route runs; give that answer our JSON error shape. Every 413
/// also says `Connection: close` (as nginx does): the unread rest of the body
/// is still on the wire, so the connection cannot carry another request, and a
/// client that reused it would see its next request fail.
async fn json_payload_too_large(response: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    let mut response = if is_json {
        response
    } else {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is over server.request_body_bytes_max",
        )
        .into_response()
    };
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}
