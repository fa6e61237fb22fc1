//! Admin routes of accounts: signing keys and login throttle state.

use axum::extract::State;
use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth_state::ttl_ms;
use super::extract::Query;
use super::signing_keys::{self, SigningKeyRow};
use super::Authenticated;
use crate::api::ErrorResponse;
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::events::ControlEvent;
use crate::state::AppState;

/// Throttle entries listed at most (the table may hold far more).
const THROTTLE_ENTRIES_LISTED_MAX: usize = 1_000;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_signing_keys))
        .routes(routes!(rotate_signing_key))
        .routes(routes!(list_rate_limits, reset_rate_limits))
}

/// A signing key.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyView {
    /// Key id (the JWT header's `kid`).
    pub kid: String,
    /// Ed25519 public key, base64url without padding.
    pub public_key: String,
    /// `active` (signs new tokens), `retired` (verifies tokens it signed
    /// until `valid_until_ms`) or `expired` (no longer offered).
    pub status: String,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms; none while active.
    pub retired_at_ms: Option<i64>,
    /// Unix ms after which no token it signed is valid; none while active.
    pub valid_until_ms: Option<i64>,
}

/// `GET /v1/admin/signing-keys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyList {
    /// Newest first.
    pub keys: Vec<SigningKeyView>,
}

fn view(row: SigningKeyRow, ttl_ms: i64, now: i64) -> SigningKeyView {
    let valid_until_ms = row.valid_until_ms(ttl_ms);
    let status = match valid_until_ms {
        None => "active",
        Some(until) if until > now => "retired",
        Some(_) => "expired",
    };
    SigningKeyView {
        kid: row.kid,
        public_key: URL_SAFE_NO_PAD.encode(row.public_key),
        status: status.into(),
        created_at_ms: row.created_at_ms,
        retired_at_ms: row.retired_at_ms,
        valid_until_ms,
    }
}

/// Every access-token signing key.
#[utoipa::path(get, path = "/v1/admin/signing-keys", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "keys, newest first", body = SigningKeyList),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "not an instance admin (or an API key without `admin`)", body = ErrorResponse)))]
async fn list_signing_keys(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<SigningKeyList>, ApiError> {
    caller.require_admin()?;
    let ttl = ttl_ms(state.auth.config());
    let now = now_ms();
    let keys = signing_keys::list(&state.db)
        .await?
        .into_iter()
        .map(|row| view(row, ttl, now))
        .collect();
    Ok(Json(SigningKeyList { keys }))
}

/// Makes a new active signing key. The previous one keeps verifying the
/// tokens it signed until they expire; data planes are told at once.
#[utoipa::path(post, path = "/v1/admin/signing-keys/rotate", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the new active key", body = SigningKeyView),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "not an instance admin (or an API key without `admin`)", body = ErrorResponse)))]
async fn rotate_signing_key(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<(StatusCode, Json<SigningKeyView>), ApiError> {
    caller.require_admin()?;
    let kid = state
        .auth
        .rotate_signing_key(&state.db)
        .await
        .map_err(ApiError::internal)?;
    state.events.publish(ControlEvent::SigningKeysChanged);
    tracing::info!(%kid, by = caller.user_id, "signing key rotated");
    let ttl = ttl_ms(state.auth.config());
    let row = signing_keys::list(&state.db)
        .await?
        .into_iter()
        .find(|row| row.kid == kid)
        .ok_or_else(|| ApiError::internal("the new signing key is not in the table"))?;
    Ok((StatusCode::CREATED, Json(view(row, ttl, now_ms()))))
}

/// One account or address in the login throttle.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitEntry {
    /// `account:<user id>`, `login:<unknown name>` or `ip:<address>` (IPv6
    /// as its /64).
    pub key: String,
    /// Consecutive failures counted.
    pub failures: u32,
    /// Unix ms.
    pub last_failure_ms: i64,
    /// Unix ms until which attempts get 429; none when not delayed.
    pub blocked_until_ms: Option<i64>,
}

/// `GET /v1/admin/rate-limits`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitList {
    /// Most recent failure first, at most 1000.
    pub entries: Vec<RateLimitEntry>,
    /// Entries held in all.
    pub entries_held: usize,
    /// `auth.throttle_entries_max`.
    pub entries_max: usize,
}

/// `DELETE /v1/admin/rate-limits` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ResetRateLimits {
    /// Reset only this entry; without it, all of them.
    pub key: Option<String>,
}

/// The login throttle's entries.
#[utoipa::path(get, path = "/v1/admin/rate-limits", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "throttle entries", body = RateLimitList),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "not an instance admin (or an API key without `admin`)", body = ErrorResponse)))]
async fn list_rate_limits(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<RateLimitList>, ApiError> {
    caller.require_admin()?;
    let now = now_ms();
    let (snapshot, entries_held) = state.auth.with_throttle(|throttle| {
        (
            throttle.snapshot(now, THROTTLE_ENTRIES_LISTED_MAX),
            throttle.len(),
        )
    });
    let entries = snapshot
        .into_iter()
        .map(|entry| RateLimitEntry {
            key: entry.key,
            failures: entry.failures,
            last_failure_ms: entry.last_failure_ms,
            blocked_until_ms: entry.blocked_until_ms,
        })
        .collect();
    Ok(Json(RateLimitList {
        entries,
        entries_held,
        entries_max: state.auth.config().throttle_entries_max,
    }))
}

/// Resets the login throttle: one entry (`?key=`) or all.
#[utoipa::path(delete, path = "/v1/admin/rate-limits", tag = "admin",
    security(("bearer" = [])),
    params(ResetRateLimits),
    responses(
        (status = 204, description = "reset"),
        (status = 400, description = "unknown query parameters", body = ErrorResponse),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "not an instance admin (or an API key without `admin`)", body = ErrorResponse),
        (status = 404, description = "no entry with this key", body = ErrorResponse)))]
async fn reset_rate_limits(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(query): Query<ResetRateLimits>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    match query.key {
        Some(key) => {
            if !state.auth.with_throttle(|throttle| throttle.remove(&key)) {
                return Err(ApiError::not_found("no throttle entry with this key"));
            }
        }
        None => state.auth.with_throttle(|throttle| throttle.clear()),
    }
    tracing::info!(by = caller.user_id, "login throttle reset");
    Ok(StatusCode::NO_CONTENT)
}
