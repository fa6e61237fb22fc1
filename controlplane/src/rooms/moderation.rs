//! Moderation: mutes (until a time or until lifted), kicks, bans (until a
//! time or for ever), and the audit log that records them with every role
//! and settings change. Each change is pushed to data planes after commit.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::permissions::{access, Action, RoomAccess};
use super::request::{check_text, page_limit, JsonObject, Path, Query};
use super::responses::{ActionErrors, ReadErrors, WriteErrors};
use crate::accounts::{scopes, Authenticated};
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::events::ControlEvent;
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(mute))
        .routes(routes!(unmute))
        .routes(routes!(kick))
        .routes(routes!(ban))
        .routes(routes!(unban))
        .routes(routes!(audit_log))
}

/// One audit log row to write.
pub(crate) struct AuditEntry<'a> {
    pub room_id: i64,
    pub actor_id: i64,
    /// `mute`, `unmute`, `kick`, `ban`, `unban`, `invite`, `role_change`,
    /// `ownership_transfer` or `room_update`.
    pub action: &'static str,
    pub target_user_id: Option<i64>,
    pub reason: &'a str,
    /// What changed, as a JSON object.
    pub detail: serde_json::Value,
    pub expires_at_ms: Option<i64>,
}

/// Writes an audit log row in the transaction of the change it records.
pub(crate) async fn record(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    entry: AuditEntry<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO room_audit_log \
           (room_id, actor_id, action, target_user_id, reason, detail, expires_at_ms, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(entry.room_id)
    .bind(entry.actor_id)
    .bind(entry.action)
    .bind(entry.target_user_id)
    .bind(entry.reason)
    .bind(entry.detail.to_string())
    .bind(entry.expires_at_ms)
    .bind(now_ms())
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// `POST /v1/rooms/{room_id}/mutes` and `/bans`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sanction {
    /// Who.
    pub user_id: i64,
    /// 1 to `chat.moderation_duration_seconds_max`; absent: a mute lasts
    /// until lifted, a ban for ever.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub duration_seconds: Option<i64>,
    /// Why (shown in the audit log), up to `chat.moderation_reason_chars_max`
    /// characters.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/rooms/{room_id}/kicks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Kick {
    /// Who.
    pub user_id: i64,
    /// Why (shown in the audit log).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A mute or ban in force.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SanctionView {
    /// The room.
    pub room_id: i64,
    /// Who.
    pub user_id: i64,
    /// Unix ms when it ends; null: until lifted (mute) or for ever (ban).
    pub until_ms: Option<i64>,
    /// Why.
    pub reason: String,
    /// Who imposed it.
    pub created_by: i64,
    /// Unix ms.
    pub created_at_ms: i64,
}

/// The checked parts of a mute or ban request.
struct CheckedSanction {
    until_ms: Option<i64>,
    reason: String,
}

fn check_sanction(
    state: &AppState,
    duration_seconds: Option<i64>,
    reason: Option<&str>,
) -> Result<CheckedSanction, ApiError> {
    let chat = &state.config.chat;
    let reason = reason.unwrap_or("").trim();
    check_text("reason", reason, chat.moderation_reason_chars_max)?;
    let until_ms = match duration_seconds {
        None => None,
        Some(seconds) if (1..=chat.moderation_duration_seconds_max).contains(&seconds) => {
            Some(now_ms() + seconds * 1000)
        }
        Some(_) => {
            return Err(ApiError::validation(format!(
                "duration_seconds must be between 1 and {} (or absent: no end)",
                chat.moderation_duration_seconds_max
            )))
        }
    };
    Ok(CheckedSanction {
        until_ms,
        reason: reason.to_string(),
    })
}

/// The caller's and the target's standing, after the permission check.
async fn check_actor_on_target(
    state: &AppState,
    auth: &Authenticated,
    room_id: i64,
    user_id: i64,
    action: Action,
) -> Result<RoomAccess, ApiError> {
    auth.require_scope(scopes::ROOMS_WRITE)?;
    let actor = access(&state.db, room_id, auth.user_id).await?;
    actor.require_member()?;
    let target = access(&state.db, room_id, user_id).await?;
    actor.require(action, target.rights.role)?;
    Ok(target)
}

/// Mutes a member (moderators and above, on lower roles): they keep reading
/// but cannot post until the mute ends. A new mute replaces the old one.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/mutes", tag = "moderation",
    params(("room_id" = i64, Path, description = "The room id")),
    request_body = Sanction,
    security(("bearer" = [])),
    responses((status = 201, description = "muted", body = SanctionView), WriteErrors))]
async fn mute(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
    JsonObject(request): JsonObject<Sanction>,
) -> Result<(StatusCode, Json<SanctionView>), ApiError> {
    let target =
        check_actor_on_target(&state, &auth, room_id, request.user_id, Action::Mute).await?;
    if target.rights.role.is_none() {
        return Err(ApiError::validation("user_id is not a member of this room"));
    }
    let checked = check_sanction(&state, request.duration_seconds, request.reason.as_deref())?;
    let view = impose(
        &state,
        &auth,
        room_id,
        request.user_id,
        SanctionKind::Mute,
        checked,
    )
    .await?;
    state.events.publish(ControlEvent::ModerationChanged {
        room_id,
        user_id: request.user_id,
    });
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lifts a mute (404 when not muted).
#[utoipa::path(delete, path = "/v1/rooms/{room_id}/mutes/{user_id}", tag = "moderation",
    params(("room_id" = i64, Path, description = "The room id"),
           ("user_id" = i64, Path, description = "The muted user")),
    security(("bearer" = [])),
    responses((status = 204, description = "unmuted"), ActionErrors))]
async fn unmute(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((room_id, user_id)): Path<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    let target = check_actor_on_target(&state, &auth, room_id, user_id, Action::Mute).await?;
    if target.rights.muted_until_ms.is_none() {
        return Err(ApiError::not_found("that user is not muted in this room"));
    }
    lift(&state, &auth, room_id, user_id, SanctionKind::Mute).await?;
    state
        .events
        .publish(ControlEvent::ModerationChanged { room_id, user_id });
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a member (moderators and above, on lower roles); they may rejoin
/// a public room.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/kicks", tag = "moderation",
    params(("room_id" = i64, Path, description = "The room id")),
    request_body = Kick,
    security(("bearer" = [])),
    responses((status = 204, description = "kicked"), WriteErrors))]
async fn kick(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
    JsonObject(request): JsonObject<Kick>,
) -> Result<StatusCode, ApiError> {
    let target =
        check_actor_on_target(&state, &auth, room_id, request.user_id, Action::Kick).await?;
    let Some(target_role) = target.rights.role else {
        return Err(ApiError::validation("user_id is not a member of this room"));
    };
    let checked = check_sanction(&state, None, request.reason.as_deref())?;
    let mut transaction = state.db.begin_write().await?;
    let removed =
        sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2 AND role = $3")
            .bind(room_id)
            .bind(request.user_id)
            .bind(target_role.as_str())
            .execute(&mut *transaction)
            .await?
            .rows_affected();
    if removed == 0 {
        return Err(ApiError::conflict(
            "the membership changed meanwhile; try again",
        ));
    }
    record(
        &mut transaction,
        AuditEntry {
            room_id,
            actor_id: auth.user_id,
            action: "kick",
            target_user_id: Some(request.user_id),
            reason: &checked.reason,
            detail: serde_json::json!({"role": target_role}),
            expires_at_ms: None,
        },
    )
    .await?;
    transaction.commit().await?;
    state.events.publish(ControlEvent::MembershipChanged {
        room_id,
        user_id: request.user_id,
    });
    Ok(StatusCode::NO_CONTENT)
}

/// Bans a user (admins and the owner, on lower roles or non-members): their
/// membership ends, and they cannot read, join or be invited until the ban
/// ends. A new ban replaces the old one.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/bans", tag = "moderation",
    params(("room_id" = i64, Path, description = "The room id")),
    request_body = Sanction,
    security(("bearer" = [])),
    responses((status = 201, description = "banned", body = SanctionView), WriteErrors))]
async fn ban(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
    JsonObject(request): JsonObject<Sanction>,
) -> Result<(StatusCode, Json<SanctionView>), ApiError> {
    let target =
        check_actor_on_target(&state, &auth, room_id, request.user_id, Action::Ban).await?;
    super::membership::require_user(&state, request.user_id).await?;
    let checked = check_sanction(&state, request.duration_seconds, request.reason.as_deref())?;
    let view = impose(
        &state,
        &auth,
        room_id,
        request.user_id,
        SanctionKind::Ban,
        checked,
    )
    .await?;
    state.events.publish(ControlEvent::ModerationChanged {
        room_id,
        user_id: request.user_id,
    });
    if target.rights.role.is_some() {
        state.events.publish(ControlEvent::MembershipChanged {
            room_id,
            user_id: request.user_id,
        });
    }
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lifts a ban (404 when not banned).
#[utoipa::path(delete, path = "/v1/rooms/{room_id}/bans/{user_id}", tag = "moderation",
    params(("room_id" = i64, Path, description = "The room id"),
           ("user_id" = i64, Path, description = "The banned user")),
    security(("bearer" = [])),
    responses((status = 204, description = "unbanned"), ActionErrors))]
async fn unban(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((room_id, user_id)): Path<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    let target = check_actor_on_target(&state, &auth, room_id, user_id, Action::Ban).await?;
    if !target.rights.banned {
        return Err(ApiError::not_found(
            "that user is not banned from this room",
        ));
    }
    lift(&state, &auth, room_id, user_id, SanctionKind::Ban).await?;
    state
        .events
        .publish(ControlEvent::ModerationChanged { room_id, user_id });
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SanctionKind {
    Mute,
    Ban,
}

impl SanctionKind {
    fn table(self) -> &'static str {
        match self {
            SanctionKind::Mute => "room_mutes",
            SanctionKind::Ban => "room_bans",
        }
    }

    fn by_column(self) -> &'static str {
        match self {
            SanctionKind::Mute => "muted_by",
            SanctionKind::Ban => "banned_by",
        }
    }

    fn name(self) -> &'static str {
        match self {
            SanctionKind::Mute => "mute",
            SanctionKind::Ban => "ban",
        }
    }
}

/// Stores a mute or ban (a ban also ends the membership) with its audit row.
async fn impose(
    state: &AppState,
    auth: &Authenticated,
    room_id: i64,
    user_id: i64,
    kind: SanctionKind,
    checked: CheckedSanction,
) -> Result<SanctionView, ApiError> {
    let now = now_ms();
    let mut transaction = state.db.begin_write().await?;
    sqlx::query(&format!(
        "INSERT INTO {table} (room_id, user_id, until_ms, reason, {by}, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (room_id, user_id) DO UPDATE SET until_ms = excluded.until_ms, \
           reason = excluded.reason, {by} = excluded.{by}, created_at_ms = excluded.created_at_ms",
        table = kind.table(),
        by = kind.by_column(),
    ))
    .bind(room_id)
    .bind(user_id)
    .bind(checked.until_ms)
    .bind(&checked.reason)
    .bind(auth.user_id)
    .bind(now)
    .execute(&mut *transaction)
    .await?;
    if kind == SanctionKind::Ban {
        sqlx::query(
            "DELETE FROM room_members WHERE room_id = $1 AND user_id = $2 AND role <> 'owner'",
        )
        .bind(room_id)
        .bind(user_id)
        .execute(&mut *transaction)
        .await?;
    }
    record(
        &mut transaction,
        AuditEntry {
            room_id,
            actor_id: auth.user_id,
            action: kind.name(),
            target_user_id: Some(user_id),
            reason: &checked.reason,
            detail: serde_json::json!({}),
            expires_at_ms: checked.until_ms,
        },
    )
    .await?;
    transaction.commit().await?;
    Ok(SanctionView {
        room_id,
        user_id,
        until_ms: checked.until_ms,
        reason: checked.reason,
        created_by: auth.user_id,
        created_at_ms: now,
    })
}

/// Deletes a mute or ban with its audit row.
async fn lift(
    state: &AppState,
    auth: &Authenticated,
    room_id: i64,
    user_id: i64,
    kind: SanctionKind,
) -> Result<(), ApiError> {
    let mut transaction = state.db.begin_write().await?;
    sqlx::query(&format!(
        "DELETE FROM {} WHERE room_id = $1 AND user_id = $2",
        kind.table()
    ))
    .bind(room_id)
    .bind(user_id)
    .execute(&mut *transaction)
    .await?;
    let action = match kind {
        SanctionKind::Mute => "unmute",
        SanctionKind::Ban => "unban",
    };
    record(
        &mut transaction,
        AuditEntry {
            room_id,
            actor_id: auth.user_id,
            action,
            target_user_id: Some(user_id),
            reason: "",
            detail: serde_json::json!({}),
            expires_at_ms: None,
        },
    )
    .await?;
    transaction.commit().await?;
    Ok(())
}

/// Query of the audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditLogQuery {
    /// Entries with ids below this one (`next_before` of the last page).
    pub before: Option<i64>,
    /// Page size, 1 to `chat.page_items_max` (larger values are reduced).
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

/// One audit log entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntryView {
    /// Entry id (increasing).
    pub id: i64,
    /// The room.
    pub room_id: i64,
    /// Who acted (null once their account is gone).
    pub actor_id: Option<i64>,
    /// `mute`, `unmute`, `kick`, `ban`, `unban`, `invite`, `role_change`,
    /// `ownership_transfer` or `room_update`.
    pub action: String,
    /// Whom it was aimed at.
    pub target_user_id: Option<i64>,
    /// The reason given.
    pub reason: String,
    /// What changed, e.g. `{"from":"member","to":"moderator"}`.
    pub detail: serde_json::Value,
    /// When a timed mute or ban ends.
    pub expires_at_ms: Option<i64>,
    /// Unix ms.
    pub created_at_ms: i64,
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditLogPage {
    /// The entries.
    pub entries: Vec<AuditEntryView>,
    /// Pass as `before` for the next (older) page; null on the last page.
    pub next_before: Option<i64>,
}

type AuditRow = (
    i64,
    i64,
    Option<i64>,
    String,
    Option<i64>,
    String,
    String,
    Option<i64>,
    i64,
);

/// The room's audit log (room admins and the owner, and instance admins).
#[utoipa::path(get, path = "/v1/rooms/{room_id}/audit-log", tag = "moderation",
    params(("room_id" = i64, Path, description = "The room id"), AuditLogQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of entries", body = AuditLogPage), ReadErrors))]
async fn audit_log(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
    Query(query): Query<AuditLogQuery>,
) -> Result<Json<AuditLogPage>, ApiError> {
    auth.require_scope(scopes::ROOMS_READ)?;
    let access = access(&state.db, room_id, auth.user_id).await?;
    let instance_admin = auth.require_admin().is_ok();
    if !(instance_admin && access.rights.room_exists) {
        access.require(Action::ViewAuditLog, None)?;
    }
    let chat = &state.config.chat;
    let limit = page_limit(query.limit, chat.page_items_default, chat.page_items_max)?;
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT id, room_id, actor_id, action, target_user_id, reason, detail, expires_at_ms, created_at_ms \
         FROM room_audit_log WHERE room_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(room_id)
    .bind(query.before.unwrap_or(i64::MAX))
    .bind(limit + 1)
    .fetch_all(&state.db.pool)
    .await?;
    let mut entries: Vec<AuditEntryView> = rows
        .into_iter()
        .map(|row| AuditEntryView {
            id: row.0,
            room_id: row.1,
            actor_id: row.2,
            action: row.3,
            target_user_id: row.4,
            reason: row.5,
            detail: serde_json::from_str(&row.6).unwrap_or_default(),
            expires_at_ms: row.7,
            created_at_ms: row.8,
        })
        .collect();
    let next_before = if entries.len() as i64 > limit {
        entries.truncate(limit as usize);
        entries.last().map(|entry| entry.id)
    } else {
        None
    };
    Ok(Json(AuditLogPage {
        entries,
        next_before,
    }))
}
