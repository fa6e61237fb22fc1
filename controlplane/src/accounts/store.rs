//! SQL that several account routes (and the control server) share.

use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};

use crate::db::{now_ms, Database};

/// Revoked access tokens that have not expired yet: `(jti, expires_at_ms)`.
/// Data planes load these when they connect; later revocations are pushed
/// as `ControlEvent::TokensRevoked`.
pub async fn active_revocations(db: &Database) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT jti, expires_at_ms FROM access_tokens \
         WHERE revoked_at_ms IS NOT NULL AND expires_at_ms > $1",
    )
    .bind(now_ms())
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("jti")?, row.try_get("expires_at_ms")?)))
        .collect()
}

/// A user row.
#[derive(Debug, Clone)]
pub(crate) struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub totp_enabled: bool,
    pub created_at_ms: i64,
}

const USER_COLUMNS: &str =
    "id, username, email, password_hash, is_admin, totp_enabled, created_at_ms";

fn user_from_row(row: &AnyRow) -> Result<UserRow, sqlx::Error> {
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

/// The user with `id`.
pub(crate) async fn user_by_id(db: &Database, id: i64) -> Result<Option<UserRow>, sqlx::Error> {
    let query = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let row = sqlx::query(&query)
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// The user whose username or email is `login`, ignoring case.
pub(crate) async fn user_by_login(
    db: &Database,
    login: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    let key = login.to_lowercase();
    let query = format!(
        "SELECT {USER_COLUMNS} FROM users WHERE username_key = $1 OR email_key = $1 LIMIT 1"
    );
    let row = sqlx::query(&query)
        .bind(key)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// Which sessions to revoke.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SessionsToRevoke {
    /// One session of a user.
    One { user_id: i64, session_id: i64 },
    /// Every session of a user but `keep` (the caller's own).
    AllBut { user_id: i64, keep: Option<i64> },
}

/// What a revocation ended.
#[derive(Debug, Default)]
pub(crate) struct Revoked {
    /// Sessions revoked.
    pub sessions: u64,
    /// Their access tokens that had not expired: `(jti, expires_at_ms)`.
    pub tokens: Vec<(String, i64)>,
}

/// Marks sessions and their unexpired access tokens revoked, in one
/// transaction. The caller publishes the tokens once this returns.
pub(crate) async fn revoke_sessions(
    db: &Database,
    which: SessionsToRevoke,
    reason: &str,
) -> Result<Revoked, sqlx::Error> {
    let mut transaction = db.pool.begin().await?;
    let revoked = revoke_sessions_in(&mut transaction, which, reason).await?;
    transaction.commit().await?;
    Ok(revoked)
}

/// [`revoke_sessions`] inside the caller's transaction.
pub(crate) async fn revoke_sessions_in(
    transaction: &mut Transaction<'_, Any>,
    which: SessionsToRevoke,
    reason: &str,
) -> Result<Revoked, sqlx::Error> {
    let now = now_ms();
    let (user_id, session_id, keep) = match which {
        SessionsToRevoke::One {
            user_id,
            session_id,
        } => (user_id, Some(session_id), None),
        SessionsToRevoke::AllBut { user_id, keep } => (user_id, None, keep),
    };
    // -1 names no session: ids start at 1.
    let (only, keep) = (session_id.unwrap_or(-1), keep.unwrap_or(-1));
    let all = i64::from(session_id.is_none());
    let sessions = sqlx::query(
        "UPDATE sessions SET revoked_at_ms = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND revoked_at_ms IS NULL AND (id = $4 OR ($5 = 1 AND id <> $6))",
    )
    .bind(now)
    .bind(reason)
    .bind(user_id)
    .bind(only)
    .bind(all)
    .bind(keep)
    .execute(&mut **transaction)
    .await?
    .rows_affected();
    let rows = sqlx::query(
        "UPDATE access_tokens SET revoked_at_ms = $1 \
         WHERE user_id = $2 AND revoked_at_ms IS NULL AND expires_at_ms > $1 \
         AND (session_id = $3 OR ($4 = 1 AND session_id <> $5)) \
         RETURNING jti, expires_at_ms",
    )
    .bind(now)
    .bind(user_id)
    .bind(only)
    .bind(all)
    .bind(keep)
    .fetch_all(&mut **transaction)
    .await?;
    let tokens = rows
        .iter()
        .map(|row| Ok((row.try_get("jti")?, row.try_get("expires_at_ms")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Revoked { sessions, tokens })
}

/// Whether `error` is a unique-constraint violation.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|database_error| database_error.is_unique_violation())
}
