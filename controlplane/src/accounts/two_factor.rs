//! TOTP two-factor authentication (RFC 6238: HMAC-SHA1, 6 digits, 30-second
//! steps) with one-time backup codes.
//!
//! A code is accepted for the current step or one step either side (clock
//! drift), and only for a step later than the last accepted one, so a code
//! seen over someone's shoulder cannot be replayed. The step is claimed
//! with a conditional UPDATE, so two logins racing with one code cannot
//! both win. Backup codes are stored as SHA-256 and each works once.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use totp_rs::{Algorithm, TOTP};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ClientInfo;
use super::secret;
use super::Authenticated;
use crate::api::ErrorResponse;
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::state::AppState;

/// Seconds per TOTP step.
pub const TOTP_STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const TOTP_DIGITS: usize = 6;
/// Secret length: 160 bits, as RFC 4226 recommends.
const TOTP_SECRET_BYTES: usize = 20;
/// Backup codes handed out at activation.
pub const BACKUP_CODE_COUNT: usize = 10;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_enrolment, disable))
        .routes(routes!(confirm_enrolment))
}

/// A started enrolment.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// The secret, base32 without padding, for manual entry.
    pub secret: String,
    /// `otpauth://totp/...` for a QR code.
    pub otpauth_uri: String,
}

/// `POST /v1/accounts/me/totp/confirm`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotpRequest {
    /// The 6-digit code the authenticator shows now.
    #[schema(pattern = "^[0-9]{6}$")]
    pub code: String,
}

/// TOTP is on.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupCodes {
    /// Ten one-time codes (`xxxx-xxxx-xxxx-xxxx`), shown only now; each can
    /// stand in for a TOTP code once.
    pub backup_codes: Vec<String>,
}

/// `DELETE /v1/accounts/me/totp`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableTotpRequest {
    /// The account's password.
    #[schema(max_length = 256)]
    pub password: String,
}

fn totp(secret: Vec<u8>, issuer: &str, account_name: &str) -> TOTP {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        TOTP_DIGITS,
        1,
        TOTP_STEP_SECONDS,
        secret,
        Some(issuer.to_string()),
        account_name.to_string(),
    )
}

/// The step (of current − 1, current, current + 1) whose code is `code`.
fn matching_step(secret: &[u8], code: &str, now_seconds: u64) -> Option<i64> {
    if code.len() != TOTP_DIGITS || !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let generator = totp(secret.to_vec(), "", "");
    let current = now_seconds / TOTP_STEP_SECONDS;
    [current.saturating_sub(1), current, current + 1]
        .into_iter()
        .find(|step| {
            constant_time_equal(
                generator.generate(step * TOTP_STEP_SECONDS).as_bytes(),
                code.as_bytes(),
            )
        })
        .map(|step| step as i64)
}

fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .fold(0u8, |difference, (x, y)| difference | (x ^ y))
            == 0
}

fn now_seconds() -> u64 {
    now_ms().max(0) as u64 / 1000
}

/// Accepts a login's second factor: a TOTP code of a step later than the
/// last accepted one, or an unused backup code (then used up).
pub(super) async fn accept_login_code(
    state: &AppState,
    user_id: i64,
    code: &str,
) -> Result<bool, ApiError> {
    let code = code.trim();
    if code.len() == TOTP_DIGITS {
        let row = sqlx::query("SELECT totp_secret FROM users WHERE id = $1 AND totp_enabled = 1")
            .bind(user_id)
            .fetch_optional(&state.db.pool)
            .await?;
        let Some(secret) = row
            .map(|row| row.try_get::<Option<Vec<u8>>, _>("totp_secret"))
            .transpose()?
            .flatten()
        else {
            return Ok(false);
        };
        let Some(step) = matching_step(&secret, code, now_seconds()) else {
            return Ok(false);
        };
        let claimed = sqlx::query(
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_enabled = 1 \
             AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(user_id)
        .execute(&state.db.pool)
        .await?;
        return Ok(claimed.rows_affected() == 1);
    }
    let used = sqlx::query(
        "UPDATE totp_backup_codes SET used_at_ms = $1 \
         WHERE user_id = $2 AND code_hash = $3 AND used_at_ms IS NULL",
    )
    .bind(now_ms())
    .bind(user_id)
    .bind(secret::sha256(&secret::normalize_backup_code(code)))
    .execute(&state.db.pool)
    .await?;
    Ok(used.rows_affected() == 1)
}

/// Starts TOTP enrolment: a new secret, active once confirmed with a code.
/// Starting again replaces an unconfirmed secret.
#[utoipa::path(post, path = "/v1/accounts/me/totp", tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "enrolment started: add the secret to an authenticator, then confirm", body = TotpEnrolment),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "an API key", body = ErrorResponse),
        (status = 409, description = "`totp_already_enabled`", body = ErrorResponse)))]
async fn start_enrolment(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<TotpEnrolment>, ApiError> {
    caller.require_user_token()?;
    let secret_bytes = secret::random_bytes(TOTP_SECRET_BYTES);
    let updated =
        sqlx::query("UPDATE users SET totp_pending_secret = $1 WHERE id = $2 AND totp_enabled = 0")
            .bind(&secret_bytes)
            .bind(caller.user_id)
            .execute(&state.db.pool)
            .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "totp_already_enabled",
            "two-factor is already on: disable it first",
        ));
    }
    let generator = totp(
        secret_bytes,
        &state.auth.config().totp_issuer,
        &caller.username,
    );
    Ok(Json(TotpEnrolment {
        secret: generator.get_secret_base32(),
        otpauth_uri: generator.get_url(),
    }))
}

/// Confirms enrolment with a current code: TOTP is on from now, and ten
/// backup codes are returned (once).
#[utoipa::path(post, path = "/v1/accounts/me/totp/confirm", tag = "accounts",
    security(("bearer" = [])),
    request_body = ConfirmTotpRequest,
    responses(
        (status = 200, description = "TOTP is on", body = BackupCodes),
        (status = 400, description = "malformed JSON", body = ErrorResponse),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "an API key", body = ErrorResponse),
        (status = 409, description = "`totp_not_pending`: no enrolment started, or already on", body = ErrorResponse),
        (status = 413, description = "body too large", body = ErrorResponse),
        (status = 415, description = "not JSON", body = ErrorResponse),
        (status = 422, description = "`totp_invalid`: the code does not match, or wrong types", body = ErrorResponse)))]
async fn confirm_enrolment(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(request): Json<ConfirmTotpRequest>,
) -> Result<Json<BackupCodes>, ApiError> {
    caller.require_user_token()?;
    let pending: Option<Vec<u8>> =
        sqlx::query("SELECT totp_pending_secret FROM users WHERE id = $1 AND totp_enabled = 0")
            .bind(caller.user_id)
            .fetch_optional(&state.db.pool)
            .await?
            .map(|row| row.try_get::<Option<Vec<u8>>, _>("totp_pending_secret"))
            .transpose()?
            .flatten();
    let Some(pending) = pending else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "totp_not_pending",
            "start enrolment first (POST /v1/accounts/me/totp)",
        ));
    };
    let Some(step) = matching_step(&pending, request.code.trim(), now_seconds()) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "totp_invalid",
            "the code does not match the new secret",
        ));
    };
    let backup_codes: Vec<String> = (0..BACKUP_CODE_COUNT)
        .map(|_| secret::random_backup_code())
        .collect();
    let mut transaction = state.db.pool.begin().await?;
    let activated = sqlx::query(
        "UPDATE users SET totp_secret = totp_pending_secret, totp_pending_secret = NULL, \
         totp_enabled = 1, totp_last_step = $1 WHERE id = $2 AND totp_enabled = 0 AND totp_pending_secret = $3",
    )
    .bind(step)
    .bind(caller.user_id)
    .bind(&pending)
    .execute(&mut *transaction)
    .await?;
    if activated.rows_affected() == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "totp_not_pending",
            "the enrolment changed meanwhile: start again",
        ));
    }
    sqlx::query("DELETE FROM totp_backup_codes WHERE user_id = $1")
        .bind(caller.user_id)
        .execute(&mut *transaction)
        .await?;
    for code in &backup_codes {
        sqlx::query(
            "INSERT INTO totp_backup_codes (user_id, code_hash, used_at_ms) VALUES ($1, $2, NULL)",
        )
        .bind(caller.user_id)
        .bind(secret::sha256(&secret::normalize_backup_code(code)))
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await?;
    tracing::info!(user_id = caller.user_id, "two-factor enabled");
    Ok(Json(BackupCodes { backup_codes }))
}

/// Turns TOTP off (the password is asked again) and drops the backup codes.
#[utoipa::path(delete, path = "/v1/accounts/me/totp", tag = "accounts",
    security(("bearer" = [])),
    request_body = DisableTotpRequest,
    responses(
        (status = 204, description = "TOTP is off"),
        (status = 400, description = "malformed JSON", body = ErrorResponse),
        (status = 401, description = "no valid credentials", body = ErrorResponse),
        (status = 403, description = "`wrong_password`, or an API key", body = ErrorResponse),
        (status = 409, description = "`totp_not_enabled`", body = ErrorResponse),
        (status = 413, description = "body too large", body = ErrorResponse),
        (status = 415, description = "not JSON", body = ErrorResponse),
        (status = 422, description = "wrong types", body = ErrorResponse),
        (status = 429, description = "too many wrong passwords: see Retry-After", body = ErrorResponse,
            headers(("Retry-After" = u64, description = "seconds to wait")))))]
async fn disable(
    State(state): State<AppState>,
    caller: Authenticated,
    client: ClientInfo,
    Json(request): Json<DisableTotpRequest>,
) -> Result<StatusCode, ApiError> {
    caller.require_user_token()?;
    let user =
        super::account::confirm_password(&state, caller.user_id, &client, request.password).await?;
    if !user.totp_enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "totp_not_enabled",
            "two-factor is not on",
        ));
    }
    let mut transaction = state.db.pool.begin().await?;
    sqlx::query(
        "UPDATE users SET totp_enabled = 0, totp_secret = NULL, totp_pending_secret = NULL, \
         totp_last_step = NULL WHERE id = $1",
    )
    .bind(user.id)
    .execute(&mut *transaction)
    .await?;
    sqlx::query("DELETE FROM totp_backup_codes WHERE user_id = $1")
        .bind(user.id)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    tracing::info!(user_id = user.id, "two-factor disabled");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_sha1_vector() {
        // RFC 6238 appendix B, SHA1 secret "12345678901234567890", T = 59 s:
        // 94287082 in 8 digits, so 287082 in 6.
        let secret = b"12345678901234567890";
        assert_eq!(matching_step(secret, "287082", 59), Some(1));
    }

    #[test]
    fn codes_match_one_step_either_side_only() {
        let secret = [7u8; 20];
        let generator = totp(secret.to_vec(), "Veza", "alice");
        let now = 1_700_000_000u64;
        let step = (now / 30) as i64;
        for (offset, expected) in [
            (-30i64, Some(step - 1)),
            (0, Some(step)),
            (30, Some(step + 1)),
        ] {
            let code = generator.generate((now as i64 + offset) as u64);
            assert_eq!(matching_step(&secret, &code, now), expected);
        }
        let far = generator.generate(now + 90);
        assert_eq!(matching_step(&secret, &far, now), None);
        assert_eq!(matching_step(&secret, "12345", now), None);
        assert_eq!(matching_step(&secret, "abcdef", now), None);
    }
}
