//! API keys for bots and integrations: `Authorization: Bearer vzk_...`,
//! limited to the scopes chosen at creation (see [`super::scopes`]). The key
//! is shown once; only its SHA-256 is stored.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::IdPath;
use super::secret::{self, API_KEY_PREFIX};
use super::{scopes, Authenticated};
use crate::api::ErrorResponse;
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::state::AppState;

/// Longest key name, in characters.
const NAME_LENGTH_MAX: usize = 64;

/// Characters of the key shown in listings (`vzk_` and 8 more), enough to
/// tell keys apart, far too few to guess the rest.
const SHOWN_PREFIX_LENGTH: usize = 12;

/// `last_used_at_ms` is written at most this often per key, so that a busy
/// bot does not turn every request into a database write.
const LAST_USED_WRITE_INTERVAL_MS: i64 = 60_000;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(delete_api_key))
}

/// `POST /v1/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// A label, 1–64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// One or more scopes, without repeats; `admin` for admins only.
    #[schema(value_type = std::collections::BTreeSet<ApiScope>, min_items = 1, max_items = 5)]
    pub scopes: Vec<ApiScope>,
}

/// A scope an API key can hold (see [`scopes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, ToSchema)]
pub enum ApiScope {
    /// Read rooms, memberships and room settings.
    #[serde(rename = "rooms:read")]
    RoomsRead,
    /// Create, change, join, leave and moderate rooms.
    #[serde(rename = "rooms:write")]
    RoomsWrite,
    /// Read message history and search it.
    #[serde(rename = "messages:read")]
    MessagesRead,
    /// Post, edit, delete and react to messages.
    #[serde(rename = "messages:write")]
    MessagesWrite,
    /// Call `/v1/admin/*` (instance admins only).
    #[serde(rename = "admin")]
    Admin,
}

impl ApiScope {
    /// The scope's name, one of [`scopes::ALL`].
    pub fn as_str(self) -> &'static str {
        match self {
            ApiScope::RoomsRead => scopes::ROOMS_READ,
            ApiScope::RoomsWrite => scopes::ROOMS_WRITE,
            ApiScope::MessagesRead => scopes::MESSAGES_READ,
            ApiScope::MessagesWrite => scopes::MESSAGES_WRITE,
            ApiScope::Admin => scopes::ADMIN,
        }
    }
}

/// A new key.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// Key id.
    pub id: i64,
    /// The key (`vzk_...`), shown only now.
    pub key: String,
    /// The label.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Unix ms.
    pub created_at_ms: i64,
}

/// A key as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// Key id.
    pub id: i64,
    /// The label.
    pub name: String,
    /// The key's first characters.
    pub key_prefix: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms, to the minute; none when never used.
    pub last_used_at_ms: Option<i64>,
}

/// `GET /v1/api-keys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    /// Newest first.
    pub api_keys: Vec<ApiKeyView>,
}

/// Creates an API key for the caller.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys",
    security(("bearer" = [])),
    request_body = CreateApiKeyRequest,
    responses(
        (status = 201, description = "created; the key is in the body, once", body = CreatedApiKey),
        (status = 400, description = "malformed JSON", body = ErrorResponse),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "an API key, or the `admin` scope asked by a non-admin", body = ErrorResponse),
        (status = 409, description = "`too_many_api_keys`", body = ErrorResponse),
        (status = 413, description = "body too large", body = ErrorResponse),
        (status = 415, description = "not JSON", body = ErrorResponse),
        (status = 422, description = "bad name or scopes", body = ErrorResponse)))]
async fn create_api_key(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(request): Json<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    caller.require_user_token()?;
    check_name(&request.name)?;
    check_scopes(&request.scopes)?;
    let scope_names: Vec<String> = request
        .scopes
        .iter()
        .map(|scope| scope.as_str().to_string())
        .collect();
    if request.scopes.contains(&ApiScope::Admin) && !caller.is_admin {
        return Err(ApiError::forbidden(
            "only instance admins may create keys with the admin scope",
        ));
    }
    let held: i64 = sqlx::query("SELECT COUNT(*) AS held FROM api_keys WHERE user_id = $1")
        .bind(caller.user_id)
        .fetch_one(&state.db.pool)
        .await?
        .try_get("held")?;
    if held >= state.auth.config().api_keys_per_user_max as i64 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_api_keys",
            "delete a key before creating another",
        ));
    }
    let key = secret::random_token(API_KEY_PREFIX);
    let now = now_ms();
    let id: i64 = sqlx::query(
        "INSERT INTO api_keys (user_id, name, key_hash, key_prefix, scopes, created_at_ms, last_used_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, NULL) RETURNING id",
    )
    .bind(caller.user_id)
    .bind(&request.name)
    .bind(secret::sha256(&key))
    .bind(&key[..SHOWN_PREFIX_LENGTH])
    .bind(scope_names.join(" "))
    .bind(now)
    .fetch_one(&state.db.pool)
    .await?
    .try_get("id")?;
    tracing::info!(user_id = caller.user_id, api_key_id = id, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            id,
            key,
            name: request.name,
            scopes: scope_names,
            created_at_ms: now,
        }),
    ))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let length = name.chars().count();
    if length == 0 || length > NAME_LENGTH_MAX || name.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "name must have 1 to 64 characters, none of them control characters",
        ));
    }
    Ok(())
}

fn check_scopes(requested: &[ApiScope]) -> Result<(), ApiError> {
    if requested.is_empty() {
        return Err(ApiError::validation("scopes must name at least one scope"));
    }
    for (index, scope) in requested.iter().enumerate() {
        if requested[..index].contains(scope) {
            return Err(ApiError::validation(format!(
                "scope {} is listed twice",
                scope.as_str()
            )));
        }
    }
    Ok(())
}

/// The caller's API keys.
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller's keys", body = ApiKeyList),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "an API key", body = ErrorResponse)))]
async fn list_api_keys(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<ApiKeyList>, ApiError> {
    caller.require_user_token()?;
    let rows = sqlx::query(
        "SELECT id, name, key_prefix, scopes, created_at_ms, last_used_at_ms FROM api_keys \
         WHERE user_id = $1 ORDER BY id DESC",
    )
    .bind(caller.user_id)
    .fetch_all(&state.db.pool)
    .await?;
    let api_keys = rows
        .iter()
        .map(|row| {
            Ok(ApiKeyView {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                key_prefix: row.try_get("key_prefix")?,
                scopes: split_scopes(&row.try_get::<String, _>("scopes")?),
                created_at_ms: row.try_get("created_at_ms")?,
                last_used_at_ms: row.try_get("last_used_at_ms")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Json(ApiKeyList { api_keys }))
}

/// Deletes one of the caller's API keys; it stops working at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "key id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "the id is not an integer", body = ErrorResponse),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "an API key", body = ErrorResponse),
        (status = 404, description = "no such key of the caller", body = ErrorResponse)))]
async fn delete_api_key(
    State(state): State<AppState>,
    caller: Authenticated,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    caller.require_user_token()?;
    let deleted = sqlx::query("DELETE FROM api_keys WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(caller.user_id)
        .execute(&state.db.pool)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("no such API key"));
    }
    Ok(StatusCode::NO_CONTENT)
}

fn split_scopes(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_string).collect()
}

/// Authenticates `Authorization: Bearer vzk_...`.
pub(super) async fn authenticate(state: &AppState, key: &str) -> Result<Authenticated, ApiError> {
    let row = sqlx::query(
        "SELECT k.id, k.scopes, k.last_used_at_ms, u.id AS user_id, u.username, u.is_admin \
         FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1",
    )
    .bind(secret::sha256(key))
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "this API key is not known (or was deleted)",
        )
    })?;
    let key_id: i64 = row.try_get("id")?;
    let now = now_ms();
    let last_used: Option<i64> = row.try_get("last_used_at_ms")?;
    if last_used.is_none_or(|last_used| now - last_used >= LAST_USED_WRITE_INTERVAL_MS) {
        sqlx::query("UPDATE api_keys SET last_used_at_ms = $1 WHERE id = $2")
            .bind(now)
            .bind(key_id)
            .execute(&state.db.pool)
            .await?;
    }
    Ok(Authenticated {
        user_id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        session_id: None,
        token_id: None,
        scopes: Some(split_scopes(&row.try_get::<String, _>("scopes")?)),
    })
}
