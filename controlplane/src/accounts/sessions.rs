//! Login, refresh-token rotation, session listing and revocation.
//!
//! A session is a refresh-token family: login starts it with one refresh
//! token; each refresh marks the presented token used and hands out the
//! next. A used token presented again means two parties hold the family
//! (one of them a thief), so the whole session is revoked.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::{Any, Row as _, Transaction};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use veza_proto::access_token::AccessTokenClaims;

use super::extract::{ClientInfo, IdPath};
use super::login_throttle::{account_key, ip_key, unknown_login_key};
use super::secret::{self, REFRESH_TOKEN_PREFIX};
use super::store::{self, SessionsToRevoke, UserRow};
use super::Authenticated;
use crate::api::ErrorResponse;
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::events::ControlEvent;
use crate::state::AppState;

/// Rotated refresh tokens remembered per session for reuse detection; an
/// older one presented again is merely unknown.
const USED_REFRESH_TOKENS_KEPT_MAX: i64 = 64;

/// Longest `login` (an email address at most).
const LOGIN_LENGTH_MAX: usize = 254;

/// Longest `totp_code` (a backup code with separators, generously).
const TOTP_CODE_LENGTH_MAX: usize = 64;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login, list_sessions))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(revoke_session))
}

/// `POST /v1/sessions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Username or email address (case does not matter).
    #[schema(min_length = 1, max_length = 254)]
    pub login: String,
    /// The password.
    #[schema(max_length = 256)]
    pub password: String,
    /// With TOTP on: the 6-digit code, or an unused backup code.
    #[schema(max_length = 64)]
    pub totp_code: Option<String>,
}

/// `POST /v1/sessions/refresh`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The latest refresh token of the session.
    #[schema(max_length = 256)]
    pub refresh_token: String,
}

/// A new token pair.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// An EdDSA JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Opaque; trade it at `POST /v1/sessions/refresh` (once).
    pub refresh_token: String,
    /// The user.
    pub user_id: i64,
    /// The session.
    pub session_id: i64,
}

/// One live session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// Session id.
    pub id: i64,
    /// Login time, Unix ms.
    pub created_at_ms: i64,
    /// Last login or refresh, Unix ms.
    pub last_used_at_ms: i64,
    /// When its refresh token expires unless used, Unix ms.
    pub expires_at_ms: i64,
    /// The client's `User-Agent` at its last use.
    pub user_agent: String,
    /// The client's address at its last use.
    pub ip: String,
    /// Whether the caller's token belongs to it.
    pub current: bool,
}

/// `GET /v1/sessions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    /// Most recently used first.
    pub sessions: Vec<SessionView>,
}

/// Logs in: a new session with an access token and a refresh token.
/// Throttled per account and per client address.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "logged in", body = TokenResponse),
        (status = 400, description = "malformed JSON", body = ErrorResponse),
        (status = 401, description = "`invalid_credentials`, `totp_required` or `totp_invalid`", body = ErrorResponse),
        (status = 413, description = "body too large", body = ErrorResponse),
        (status = 415, description = "not JSON", body = ErrorResponse),
        (status = 422, description = "wrong types or lengths", body = ErrorResponse),
        (status = 429, description = "too many failures: see Retry-After", body = ErrorResponse,
            headers(("Retry-After" = u64, description = "seconds to wait")))))]
async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    Json(request): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    check_login_lengths(&request)?;
    let user = store::user_by_login(&state.db, &request.login).await?;
    let account = match &user {
        Some(user) => account_key(user.id),
        None => unknown_login_key(&request.login),
    };
    let mut keys = vec![account];
    keys.extend(client.ip.map(ip_key));
    let attempt = state.auth.admit_attempt(keys, now_ms())?;
    let password_hash = user.as_ref().map(|user| user.password_hash.clone());
    let password_matches = state
        .auth
        .passwords
        .verify(request.password, password_hash)
        .await?;
    let user = match user {
        Some(user) if password_matches => user,
        _ => {
            attempt.failed();
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "wrong login or password",
            ));
        }
    };
    if user.totp_enabled {
        let Some(code) = request.totp_code else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "totp_required",
                "this account needs a TOTP code (totp_code)",
            ));
        };
        if !super::two_factor::accept_login_code(&state, user.id, &code).await? {
            attempt.failed();
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "totp_invalid",
                "the TOTP code is wrong or was already used",
            ));
        }
    }
    attempt.succeeded();
    state.auth.count_login();
    let tokens = start_session(&state, &user, &client).await?;
    end_sessions_over_limit(&state, user.id).await?;
    Ok(Json(tokens))
}

fn check_login_lengths(request: &LoginRequest) -> Result<(), ApiError> {
    if request.login.is_empty() || request.login.chars().count() > LOGIN_LENGTH_MAX {
        return Err(ApiError::validation("login must have 1 to 254 characters"));
    }
    if request.password.chars().count() > super::PASSWORD_LENGTH_MAX {
        return Err(ApiError::validation(
            "password must have at most 256 characters",
        ));
    }
    if request
        .totp_code
        .as_ref()
        .is_some_and(|code| code.len() > TOTP_CODE_LENGTH_MAX)
    {
        return Err(ApiError::validation(
            "totp_code must have at most 64 characters",
        ));
    }
    Ok(())
}

async fn start_session(
    state: &AppState,
    user: &UserRow,
    client: &ClientInfo,
) -> Result<TokenResponse, ApiError> {
    let now = now_ms();
    let refresh_ttl_ms = (state.auth.config().refresh_token_ttl_seconds as i64) * 1000;
    let refresh_token = secret::random_token(REFRESH_TOKEN_PREFIX);
    let mut transaction = state.db.pool.begin().await?;
    let session_id: i64 = sqlx::query(
        "INSERT INTO sessions (user_id, created_at_ms, last_used_at_ms, expires_at_ms, \
         user_agent, ip) VALUES ($1, $2, $2, $3, $4, $5) RETURNING id",
    )
    .bind(user.id)
    .bind(now)
    .bind(now + refresh_ttl_ms)
    .bind(&client.user_agent)
    .bind(client.ip_text())
    .fetch_one(&mut *transaction)
    .await?
    .try_get("id")?;
    insert_refresh_token(&mut transaction, &refresh_token, session_id, now).await?;
    let (access_token, expires_in) =
        issue_access_token(&mut transaction, state, user, session_id, now).await?;
    transaction.commit().await?;
    tracing::info!(user_id = user.id, session_id, "session started");
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
        refresh_token,
        user_id: user.id,
        session_id,
    })
}

async fn insert_refresh_token(
    transaction: &mut Transaction<'_, Any>,
    refresh_token: &str,
    session_id: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at_ms, used_at_ms) \
         VALUES ($1, $2, $3, NULL)",
    )
    .bind(secret::sha256(refresh_token))
    .bind(session_id)
    .bind(now)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// Signs an access token for `session_id` and records its id, so that
/// ending the session can revoke it. Returns the token and its lifetime.
async fn issue_access_token(
    transaction: &mut Transaction<'_, Any>,
    state: &AppState,
    user: &UserRow,
    session_id: i64,
    now: i64,
) -> Result<(String, u64), sqlx::Error> {
    let ttl_seconds = state.auth.config().access_token_ttl_seconds;
    let issued_at = now.div_euclid(1000);
    let claims = AccessTokenClaims {
        sub: user.id.to_string(),
        uid: user.id,
        name: user.username.clone(),
        adm: user.is_admin,
        sid: session_id,
        jti: secret::random_token_id(),
        iat: issued_at,
        exp: issued_at + ttl_seconds as i64,
    };
    sqlx::query(
        "INSERT INTO access_tokens (jti, session_id, user_id, expires_at_ms, revoked_at_ms) \
         VALUES ($1, $2, $3, $4, NULL)",
    )
    .bind(&claims.jti)
    .bind(session_id)
    .bind(user.id)
    .bind(claims.exp * 1000)
    .execute(&mut **transaction)
    .await?;
    Ok((state.auth.sign_access_token(&claims), ttl_seconds))
}

/// Ends the least recently used sessions past `sessions_per_user_max`, and
/// deletes rows of sessions whose tokens can no longer be valid.
async fn end_sessions_over_limit(state: &AppState, user_id: i64) -> Result<(), ApiError> {
    let now = now_ms();
    let limit = state.auth.config().sessions_per_user_max as i64;
    let live: i64 = sqlx::query(
        "SELECT COUNT(*) AS live FROM sessions \
         WHERE user_id = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2",
    )
    .bind(user_id)
    .bind(now)
    .fetch_one(&state.db.pool)
    .await?
    .try_get("live")?;
    if live > limit {
        let oldest = sqlx::query(
            "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at_ms IS NULL \
             AND expires_at_ms > $2 ORDER BY last_used_at_ms ASC, id ASC LIMIT $3",
        )
        .bind(user_id)
        .bind(now)
        .bind(live - limit)
        .fetch_all(&state.db.pool)
        .await?;
        for row in oldest {
            let session_id: i64 = row.try_get("id")?;
            let which = SessionsToRevoke::One {
                user_id,
                session_id,
            };
            revoke_and_publish(state, which, "session_limit").await?;
        }
    }
    let forgettable_before = now - super::auth_state::ttl_ms(state.auth.config());
    sqlx::query(
        "DELETE FROM sessions WHERE user_id = $1 AND (expires_at_ms < $2 \
         OR (revoked_at_ms IS NOT NULL AND revoked_at_ms < $2))",
    )
    .bind(user_id)
    .bind(forgettable_before)
    .execute(&state.db.pool)
    .await?;
    Ok(())
}

/// Trades a refresh token for a new pair. Presenting an already used one
/// revokes its whole session (401 `refresh_token_reused`).
#[utoipa::path(post, path = "/v1/sessions/refresh", tag = "sessions",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "the next token pair; the presented refresh token is now used", body = TokenResponse),
        (status = 400, description = "malformed JSON", body = ErrorResponse),
        (status = 401, description = "`invalid_refresh_token`, `refresh_token_expired`, `session_revoked` or `refresh_token_reused`", body = ErrorResponse),
        (status = 413, description = "body too large", body = ErrorResponse),
        (status = 415, description = "not JSON", body = ErrorResponse),
        (status = 422, description = "wrong types", body = ErrorResponse)))]
async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    Json(request): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let now = now_ms();
    let token_hash = secret::sha256(&request.refresh_token);
    let mut transaction = state.db.pool.begin().await?;
    // Writing first takes SQLite's write lock at once, and makes two
    // refreshes with the same token race for one row: one wins, the other
    // is reuse.
    let claimed = sqlx::query(
        "UPDATE refresh_tokens SET used_at_ms = $1 WHERE token_hash = $2 AND used_at_ms IS NULL \
         RETURNING session_id",
    )
    .bind(now)
    .bind(&token_hash)
    .fetch_optional(&mut *transaction)
    .await?;
    let Some(claimed) = claimed else {
        drop(transaction);
        return Err(refused_refresh(&state, &token_hash).await);
    };
    let session_id: i64 = claimed.try_get("session_id")?;
    let session =
        sqlx::query("SELECT user_id, expires_at_ms, revoked_at_ms FROM sessions WHERE id = $1")
            .bind(session_id)
            .fetch_one(&mut *transaction)
            .await?;
    if session
        .try_get::<Option<i64>, _>("revoked_at_ms")?
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_revoked",
            "this session was ended",
        ));
    }
    if session.try_get::<i64, _>("expires_at_ms")? <= now {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "refresh_token_expired",
            "this refresh token has expired: log in again",
        ));
    }
    let user_id: i64 = session.try_get("user_id")?;
    let user = user_in(&mut transaction, user_id).await?;
    let tokens = rotate(&mut transaction, &state, &user, session_id, &client, now).await?;
    transaction.commit().await?;
    Ok(Json(tokens))
}

async fn user_in(
    transaction: &mut Transaction<'_, Any>,
    user_id: i64,
) -> Result<UserRow, ApiError> {
    let row = sqlx::query(
        "SELECT id, username, email, password_hash, is_admin, totp_enabled, created_at_ms \
         FROM users WHERE id = $1",
    )
    .bind(user_id)
    .fetch_optional(&mut **transaction)
    .await?
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
            "the account no longer exists",
        )
    })?;
    Ok(UserRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        totp_enabled: row.try_get::<i64, _>("totp_enabled")? != 0,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

/// The rest of a refresh: the next refresh token, an access token, the
/// session's last use, and pruning of what the session no longer needs.
async fn rotate(
    transaction: &mut Transaction<'_, Any>,
    state: &AppState,
    user: &UserRow,
    session_id: i64,
    client: &ClientInfo,
    now: i64,
) -> Result<TokenResponse, ApiError> {
    let refresh_ttl_ms = (state.auth.config().refresh_token_ttl_seconds as i64) * 1000;
    let refresh_token = secret::random_token(REFRESH_TOKEN_PREFIX);
    insert_refresh_token(transaction, &refresh_token, session_id, now).await?;
    sqlx::query(
        "UPDATE sessions SET last_used_at_ms = $1, expires_at_ms = $2, user_agent = $3, ip = $4 \
         WHERE id = $5",
    )
    .bind(now)
    .bind(now + refresh_ttl_ms)
    .bind(&client.user_agent)
    .bind(client.ip_text())
    .bind(session_id)
    .execute(&mut **transaction)
    .await?;
    let (access_token, expires_in) =
        issue_access_token(transaction, state, user, session_id, now).await?;
    sqlx::query(
        "DELETE FROM refresh_tokens WHERE session_id = $1 AND used_at_ms IS NOT NULL \
         AND token_hash NOT IN (SELECT token_hash FROM refresh_tokens WHERE session_id = $1 \
         ORDER BY created_at_ms DESC LIMIT $2)",
    )
    .bind(session_id)
    .bind(USED_REFRESH_TOKENS_KEPT_MAX)
    .execute(&mut **transaction)
    .await?;
    sqlx::query("DELETE FROM access_tokens WHERE session_id = $1 AND expires_at_ms <= $2")
        .bind(session_id)
        .bind(now)
        .execute(&mut **transaction)
        .await?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
        refresh_token,
        user_id: user.id,
        session_id,
    })
}

/// Why an unclaimable refresh token is refused; a used one revokes its
/// session.
async fn refused_refresh(state: &AppState, token_hash: &[u8]) -> ApiError {
    let row = sqlx::query(
        "SELECT r.session_id, s.user_id FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id \
         WHERE r.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&state.db.pool)
    .await;
    let (session_id, user_id): (i64, i64) = match row {
        Ok(Some(row)) => match (row.try_get("session_id"), row.try_get("user_id")) {
            (Ok(session_id), Ok(user_id)) => (session_id, user_id),
            (Err(error), _) | (_, Err(error)) => return error.into(),
        },
        Ok(None) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "this refresh token is not known",
            )
        }
        Err(error) => return error.into(),
    };
    state.auth.count_refresh_token_reuse();
    tracing::warn!(
        user_id,
        session_id,
        "refresh token reused: revoking its session"
    );
    let which = SessionsToRevoke::One {
        user_id,
        session_id,
    };
    if let Err(error) = revoke_and_publish(state, which, "refresh_token_reused").await {
        return error;
    }
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "refresh_token_reused",
        "this refresh token was already used: the session has been revoked",
    )
}

/// Revokes sessions, then remembers and pushes their tokens' revocation.
pub(super) async fn revoke_and_publish(
    state: &AppState,
    which: SessionsToRevoke,
    reason: &str,
) -> Result<store::Revoked, ApiError> {
    let user_id = match which {
        SessionsToRevoke::One { user_id, .. } | SessionsToRevoke::AllBut { user_id, .. } => user_id,
    };
    let revoked = store::revoke_sessions(&state.db, which, reason).await?;
    publish_revoked(state, user_id, &revoked.tokens);
    Ok(revoked)
}

/// Remembers committed revocations and pushes them to data planes.
pub(super) fn publish_revoked(state: &AppState, user_id: i64, tokens: &[(String, i64)]) {
    let Some(expires_at_ms) = tokens.iter().map(|(_, expires_at_ms)| *expires_at_ms).max() else {
        return;
    };
    state.auth.note_revoked(tokens);
    state.events.publish(ControlEvent::TokensRevoked {
        token_ids: tokens.iter().map(|(jti, _)| jti.clone()).collect(),
        user_id,
        expires_at_ms,
    });
}

/// The caller's live sessions.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "live sessions", body = SessionList),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "an API key", body = ErrorResponse)))]
async fn list_sessions(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<SessionList>, ApiError> {
    caller.require_user_token()?;
    let rows = sqlx::query(
        "SELECT id, created_at_ms, last_used_at_ms, expires_at_ms, user_agent, ip FROM sessions \
         WHERE user_id = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2 \
         ORDER BY last_used_at_ms DESC, id DESC",
    )
    .bind(caller.user_id)
    .bind(now_ms())
    .fetch_all(&state.db.pool)
    .await?;
    let sessions = rows
        .iter()
        .map(|row| {
            let id: i64 = row.try_get("id")?;
            Ok(SessionView {
                id,
                created_at_ms: row.try_get("created_at_ms")?,
                last_used_at_ms: row.try_get("last_used_at_ms")?,
                expires_at_ms: row.try_get("expires_at_ms")?,
                user_agent: row.try_get("user_agent")?,
                ip: row.try_get("ip")?,
                current: caller.session_id == Some(id),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Json(SessionList { sessions }))
}

/// Logs out: ends the caller's session and revokes its access tokens.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "logged out"),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "an API key", body = ErrorResponse)))]
async fn logout(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<StatusCode, ApiError> {
    caller.require_user_token()?;
    let session_id = caller
        .session_id
        .ok_or_else(|| ApiError::forbidden("this token has no session"))?;
    let which = SessionsToRevoke::One {
        user_id: caller.user_id,
        session_id,
    };
    revoke_and_publish(&state, which, "logout").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends one of the caller's sessions and revokes its access tokens.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "session id")),
    responses(
        (status = 204, description = "ended"),
        (status = 400, description = "the id is not an integer", body = ErrorResponse),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "an API key", body = ErrorResponse),
        (status = 404, description = "no such live session of the caller", body = ErrorResponse)))]
async fn revoke_session(
    State(state): State<AppState>,
    caller: Authenticated,
    IdPath(session_id): IdPath,
) -> Result<StatusCode, ApiError> {
    caller.require_user_token()?;
    let which = SessionsToRevoke::One {
        user_id: caller.user_id,
        session_id,
    };
    let revoked = revoke_and_publish(&state, which, "revoked_by_user").await?;
    if revoked.sessions == 0 {
        return Err(ApiError::not_found("no such live session"));
    }
    Ok(StatusCode::NO_CONTENT)
}
