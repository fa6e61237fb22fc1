//! Registration, the caller's account, password change.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ClientInfo;
use super::login_throttle::{account_key, ip_key};
use super::password::check_policy;
use super::store::{self, SessionsToRevoke, UserRow};
use super::Authenticated;
use crate::api::ErrorResponse;
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::state::AppState;

/// Usernames: 3 to 32 characters.
pub const USERNAME_LENGTH_MIN: usize = 3;
/// See [`USERNAME_LENGTH_MIN`].
pub const USERNAME_LENGTH_MAX: usize = 32;
/// Longest email address (RFC 5321's path limit).
pub const EMAIL_LENGTH_MAX: usize = 254;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(me))
        .routes(routes!(change_password))
}

/// `POST /v1/accounts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3–32 characters `[A-Za-z0-9_.-]`, starting with a letter or digit;
    /// unique ignoring case (case is kept for display).
    #[schema(
        min_length = 3,
        max_length = 32,
        pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )]
    pub username: String,
    /// An email address; unique ignoring case. The pattern is what
    /// [`check_email`] accepts, less its length limits per part.
    #[schema(
        min_length = 3,
        max_length = 254,
        pattern = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"
    )]
    pub email: String,
    /// `auth.password_length_min` (default 10) to 256 characters, not
    /// containing the username, not one repeated character.
    #[schema(min_length = 10, max_length = 256)]
    pub password: String,
}

/// An account as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    /// User id.
    pub id: i64,
    /// Username as registered.
    pub username: String,
    /// Email address as registered.
    pub email: String,
    /// Whether this is an instance admin (the first registered user is).
    pub is_admin: bool,
    /// Whether TOTP two-factor is on.
    pub totp_enabled: bool,
    /// Unix ms.
    pub created_at_ms: i64,
}

impl From<UserRow> for AccountView {
    fn from(user: UserRow) -> Self {
        Self {
            id: user.id,
            username: user.username,
            email: user.email,
            is_admin: user.is_admin,
            totp_enabled: user.totp_enabled,
            created_at_ms: user.created_at_ms,
        }
    }
}

/// `POST /v1/accounts/me/password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The password now.
    #[schema(max_length = 256)]
    pub current_password: String,
    /// The new password (same policy as at registration).
    #[schema(max_length = 256)]
    pub new_password: String,
}

/// Registers an account. The first account of an instance becomes its admin.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "registered", body = AccountView),
        (status = 400, description = "malformed JSON", body = ErrorResponse),
        (status = 409, description = "`username_taken` or `email_taken`", body = ErrorResponse),
        (status = 413, description = "body too large", body = ErrorResponse),
        (status = 415, description = "not JSON", body = ErrorResponse),
        (status = 422, description = "invalid username, email or password", body = ErrorResponse)))]
async fn register(
    State(state): State<AppState>,
    Json(request): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    check_username(&request.username)?;
    check_email(&request.email)?;
    check_policy(
        &request.password,
        &request.username,
        state.auth.config().password_length_min,
    )
    .map_err(|violation| ApiError::validation(violation.to_string()))?;
    let password_hash = state.auth.passwords.hash(request.password).await?;
    let user = insert_user(&state, &request.username, &request.email, &password_hash).await?;
    tracing::info!(
        user_id = user.id,
        is_admin = user.is_admin,
        "account registered"
    );
    Ok((StatusCode::CREATED, Json(user.into())))
}

async fn insert_user(
    state: &AppState,
    username: &str,
    email: &str,
    password_hash: &str,
) -> Result<UserRow, ApiError> {
    let now = now_ms();
    let mut transaction = state.db.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO users (username, username_key, email, email_key, password_hash, \
         is_admin, totp_enabled, created_at_ms) VALUES ($1, $2, $3, $4, $5, 0, 0, $6) RETURNING id",
    )
    .bind(username)
    .bind(username.to_lowercase())
    .bind(email)
    .bind(email.to_lowercase())
    .bind(password_hash)
    .bind(now)
    .fetch_one(&mut *transaction)
    .await;
    let id: i64 = match inserted {
        Ok(row) => row.try_get("id")?,
        Err(error) if store::is_unique_violation(&error) => {
            drop(transaction);
            return Err(which_is_taken(state, username).await);
        }
        Err(error) => return Err(error.into()),
    };
    // The claim row exists once: whoever inserts it first is the admin, even
    // when two first sign-ups race.
    let is_first = sqlx::query(
        "INSERT INTO instance_admin_claim (singleton, user_id) VALUES (1, $1) \
         ON CONFLICT (singleton) DO NOTHING",
    )
    .bind(id)
    .execute(&mut *transaction)
    .await?
    .rows_affected()
        == 1;
    if is_first {
        sqlx::query("UPDATE users SET is_admin = 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
    }
    transaction.commit().await?;
    Ok(UserRow {
        id,
        username: username.to_string(),
        email: email.to_string(),
        password_hash: password_hash.to_string(),
        is_admin: is_first,
        totp_enabled: false,
        created_at_ms: now,
    })
}

async fn which_is_taken(state: &AppState, username: &str) -> ApiError {
    let username_taken = sqlx::query("SELECT 1 FROM users WHERE username_key = $1")
        .bind(username.to_lowercase())
        .fetch_optional(&state.db.pool)
        .await
        .map(|row| row.is_some());
    match username_taken {
        Ok(true) => ApiError::new(
            StatusCode::CONFLICT,
            "username_taken",
            "this username is taken",
        ),
        Ok(false) => ApiError::new(
            StatusCode::CONFLICT,
            "email_taken",
            "this email address is already registered",
        ),
        Err(error) => error.into(),
    }
}

/// The caller's account.
#[utoipa::path(get, path = "/v1/accounts/me", tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the account", body = AccountView),
        (status = 401, description = "no valid credentials", body = ErrorResponse)))]
async fn me(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<AccountView>, ApiError> {
    let user = store::user_by_id(&state.db, caller.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    Ok(Json(user.into()))
}

/// Changes the password and ends every other session of the account (their
/// access tokens are revoked at once, on data planes too).
#[utoipa::path(post, path = "/v1/accounts/me/password", tag = "accounts",
    security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "changed; other sessions ended"),
        (status = 400, description = "malformed JSON", body = ErrorResponse),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "`wrong_password`, or an API key", body = ErrorResponse),
        (status = 413, description = "body too large", body = ErrorResponse),
        (status = 415, description = "not JSON", body = ErrorResponse),
        (status = 422, description = "the new password breaks the policy", body = ErrorResponse),
        (status = 429, description = "too many wrong passwords: see Retry-After", body = ErrorResponse,
            headers(("Retry-After" = u64, description = "seconds to wait")))))]
async fn change_password(
    State(state): State<AppState>,
    caller: Authenticated,
    client: ClientInfo,
    Json(request): Json<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    caller.require_user_token()?;
    check_policy(
        &request.new_password,
        &caller.username,
        state.auth.config().password_length_min,
    )
    .map_err(|violation| ApiError::validation(violation.to_string()))?;
    let user = confirm_password(&state, caller.user_id, &client, request.current_password).await?;
    let password_hash = state.auth.passwords.hash(request.new_password).await?;
    let mut transaction = state.db.pool.begin().await?;
    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(&password_hash)
        .bind(user.id)
        .execute(&mut *transaction)
        .await?;
    let revoked = store::revoke_sessions_in(
        &mut transaction,
        SessionsToRevoke::AllBut {
            user_id: user.id,
            keep: caller.session_id,
        },
        "password_changed",
    )
    .await?;
    transaction.commit().await?;
    super::sessions::publish_revoked(&state, user.id, &revoked.tokens);
    tracing::info!(
        user_id = user.id,
        sessions_ended = revoked.sessions,
        "password changed"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Checks the caller's password again (for sensitive changes), throttled
/// like logins. 403 `wrong_password` when it does not match.
pub(super) async fn confirm_password(
    state: &AppState,
    user_id: i64,
    client: &ClientInfo,
    password: String,
) -> Result<UserRow, ApiError> {
    let user = store::user_by_id(&state.db, user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    let mut keys = vec![account_key(user.id)];
    keys.extend(client.ip.map(ip_key));
    let attempt = state.auth.admit_attempt(keys, now_ms())?;
    if !state
        .auth
        .passwords
        .verify(password, Some(user.password_hash.clone()))
        .await?
    {
        attempt.failed();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_password",
            "the password is wrong",
        ));
    }
    attempt.succeeded();
    Ok(user)
}

/// 3–32 of `[A-Za-z0-9_.-]`, starting with a letter or digit.
pub fn check_username(username: &str) -> Result<(), ApiError> {
    let length_ok = (USERNAME_LENGTH_MIN..=USERNAME_LENGTH_MAX).contains(&username.len());
    let characters_ok = username
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));
    let first_ok = username
        .bytes()
        .next()
        .is_some_and(|byte| byte.is_ascii_alphanumeric());
    if length_ok && characters_ok && first_ok {
        return Ok(());
    }
    Err(ApiError::validation(
        "a username has 3 to 32 characters: letters, digits, '_', '.', '-', starting with a letter or digit",
    ))
}

/// A plausible address: `local@domain`, the local part of RFC 5322's
/// unquoted characters, the domain of two or more DNS labels. Whether it
/// receives mail is not checked.
pub fn check_email(email: &str) -> Result<(), ApiError> {
    let refused =
        || ApiError::validation("the email address is not valid (expected name@example.org)");
    if email.len() > EMAIL_LENGTH_MAX {
        return Err(refused());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(refused)?;
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&byte));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        });
    if local_ok && domain_ok {
        Ok(())
    } else {
        Err(refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_short_plain_names() {
        for good in [
            "bob",
            "Alice_2",
            "d.j-x",
            "a23456789012345678901234567890ab",
        ] {
            assert!(check_username(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "",
            "_bob",
            ".bob",
            "bob smith",
            "bob'--",
            "robert'); DROP TABLE users;--",
            "émile",
            "a23456789012345678901234567890abc",
        ] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        for good in ["a@b.co", "o'brien+tag@mail.example.org", "X.Y@EXAMPLE.COM"] {
            assert!(check_email(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "a@b",
            "@b.co",
            "a@.co",
            "a@b..co",
            "a b@c.de",
            "a@-b.co",
            ".a@b.co",
            "a'; DROP TABLE users;--@x.org",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }
}
