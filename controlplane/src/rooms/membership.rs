//! Membership: join public rooms, invite to any room, leave, list members,
//! change roles (including transferring ownership).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::moderation::{record, AuditEntry};
use super::permissions::{access, Action, Role};
use super::request::{page_limit, JsonObject, Path, Query};
use super::responses::{ActionErrors, ReadErrors, WriteErrors};
use crate::accounts::{scopes, Authenticated};
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::events::ControlEvent;
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(join_room))
        .routes(routes!(invite_to_room))
        .routes(routes!(leave_room))
        .routes(routes!(list_members))
        .routes(routes!(set_role))
}

/// A member of a room.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberView {
    /// The user.
    pub user_id: i64,
    /// Their user name.
    pub username: String,
    /// Their role.
    pub role: Role,
    /// Unix ms when they joined.
    pub joined_at_ms: i64,
    /// Unix ms when their mute ends (`9223372036854775807`: until lifted);
    /// null when not muted.
    pub muted_until_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    user_id: i64,
    username: String,
    role: String,
    joined_at_ms: i64,
    muted_until_ms: Option<i64>,
}

impl From<MemberRow> for MemberView {
    fn from(row: MemberRow) -> Self {
        MemberView {
            user_id: row.user_id,
            username: row.username,
            role: Role::parse(&row.role).unwrap_or(Role::Member),
            joined_at_ms: row.joined_at_ms,
            muted_until_ms: row.muted_until_ms,
        }
    }
}

/// Members of room `$1` with mutes active at `$2`, filtered by `{filter}`.
const MEMBER_QUERY: &str = "SELECT m.user_id, u.username, m.role, m.joined_at_ms, \
      (SELECT COALESCE(t.until_ms, 9223372036854775807) FROM room_mutes t \
         WHERE t.room_id = m.room_id AND t.user_id = m.user_id \
           AND (t.until_ms IS NULL OR t.until_ms > $2)) AS muted_until_ms \
    FROM room_members m JOIN users u ON u.id = m.user_id WHERE m.room_id = $1";

async fn load_member(
    state: &AppState,
    room_id: i64,
    user_id: i64,
) -> Result<Option<MemberView>, ApiError> {
    let row: Option<MemberRow> = sqlx::query_as(&format!("{MEMBER_QUERY} AND m.user_id = $3"))
        .bind(room_id)
        .bind(now_ms())
        .bind(user_id)
        .fetch_optional(&state.db.pool)
        .await?;
    Ok(row.map(MemberView::from))
}

/// 422 unless `user_id` (from a request body) is a registered user. A body
/// naming nobody is refused as unprocessable; 404 is kept for paths, whose
/// resource is the thing that does not exist.
pub(crate) async fn require_user(state: &AppState, user_id: i64) -> Result<(), ApiError> {
    let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&state.db.pool)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::validation("user_id names no user"))
}

/// Adds `user_id` as a member unless they already are; true when added.
/// 409 when the room is full.
async fn add_member(
    state: &AppState,
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    room_id: i64,
    user_id: i64,
) -> Result<bool, ApiError> {
    let (is_member, member_count): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(CASE WHEN user_id = $2 THEN 1 ELSE 0 END), 0), COUNT(*) \
         FROM room_members WHERE room_id = $1",
    )
    .bind(room_id)
    .bind(user_id)
    .fetch_one(&mut **transaction)
    .await?;
    if is_member != 0 {
        return Ok(false);
    }
    if member_count >= state.config.chat.room_members_max {
        return Err(ApiError::conflict(
            "the room is full (chat.room_members_max)",
        ));
    }
    // ON CONFLICT: a concurrent join of the same user on PostgreSQL.
    let inserted = sqlx::query(
        "INSERT INTO room_members (room_id, user_id, role, joined_at_ms) VALUES ($1, $2, 'member', $3) \
         ON CONFLICT (room_id, user_id) DO NOTHING",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(now_ms())
    .execute(&mut **transaction)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Joins a public room (200 also when already a member). Banned users are
/// refused until the ban ends; private rooms need an invitation.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/join", tag = "membership",
    params(("room_id" = i64, Path, description = "The room id")),
    security(("bearer" = [])),
    responses((status = 200, description = "the caller's membership", body = MemberView), ActionErrors))]
async fn join_room(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
) -> Result<Json<MemberView>, ApiError> {
    auth.require_scope(scopes::ROOMS_WRITE)?;
    let access = access(&state.db, room_id, auth.user_id).await?;
    access.require_readable()?;
    if access.rights.role.is_none() && access.is_dm {
        return Err(ApiError::not_found("no such room"));
    }
    let mut transaction = state.db.begin_write().await?;
    let added = add_member(&state, &mut transaction, room_id, auth.user_id).await?;
    transaction.commit().await?;
    if added {
        state.events.publish(ControlEvent::MembershipChanged {
            room_id,
            user_id: auth.user_id,
        });
    }
    let member = load_member(&state, room_id, auth.user_id).await?;
    member
        .map(Json)
        .ok_or_else(|| ApiError::conflict("the membership changed meanwhile; try again"))
}

/// `POST /v1/rooms/{room_id}/invites`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    /// The user to add.
    pub user_id: i64,
}

/// Adds someone to the room (moderators and above): 201 when added, 200 when
/// already a member; 409 while they are banned.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/invites", tag = "membership",
    params(("room_id" = i64, Path, description = "The room id")),
    request_body = Invite,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "already a member", body = MemberView),
        (status = 201, description = "added", body = MemberView),
        WriteErrors))]
async fn invite_to_room(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
    JsonObject(request): JsonObject<Invite>,
) -> Result<(StatusCode, Json<MemberView>), ApiError> {
    auth.require_scope(scopes::ROOMS_WRITE)?;
    access(&state.db, room_id, auth.user_id)
        .await?
        .require(Action::Invite, None)?;
    require_user(&state, request.user_id).await?;
    let invitee = access(&state.db, room_id, request.user_id).await?;
    if invitee.rights.banned {
        return Err(ApiError::conflict(
            "that user is banned from this room until the ban ends or is lifted",
        ));
    }
    let mut transaction = state.db.begin_write().await?;
    let added = add_member(&state, &mut transaction, room_id, request.user_id).await?;
    if added {
        record(
            &mut transaction,
            AuditEntry {
                room_id,
                actor_id: auth.user_id,
                action: "invite",
                target_user_id: Some(request.user_id),
                reason: "",
                detail: serde_json::json!({}),
                expires_at_ms: None,
            },
        )
        .await?;
    }
    transaction.commit().await?;
    if added {
        state.events.publish(ControlEvent::MembershipChanged {
            room_id,
            user_id: request.user_id,
        });
    }
    let member = load_member(&state, room_id, request.user_id)
        .await?
        .ok_or_else(|| ApiError::conflict("the membership changed meanwhile; try again"))?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(member)))
}

/// Leaves a room. The owner must first transfer ownership or delete the
/// room; direct-message rooms cannot be left.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/leave", tag = "membership",
    params(("room_id" = i64, Path, description = "The room id")),
    security(("bearer" = [])),
    responses((status = 204, description = "left"), ActionErrors))]
async fn leave_room(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    auth.require_scope(scopes::ROOMS_WRITE)?;
    let access = access(&state.db, room_id, auth.user_id).await?;
    let role = access.require_member()?;
    if access.is_dm {
        return Err(ApiError::conflict("direct-message rooms cannot be left"));
    }
    if role == Role::Owner {
        return Err(ApiError::conflict(
            "the owner must transfer ownership or delete the room before leaving",
        ));
    }
    sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2 AND role <> 'owner'")
        .bind(room_id)
        .bind(auth.user_id)
        .execute(&state.db.pool)
        .await?;
    state.events.publish(ControlEvent::MembershipChanged {
        room_id,
        user_id: auth.user_id,
    });
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /v1/rooms/{room_id}/members`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MembersQuery {
    /// Members with user ids above this one (`next_after` of the last page).
    pub after: Option<i64>,
    /// Page size, 1 to `chat.page_items_max` (larger values are reduced).
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

/// A page of members by ascending user id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberPage {
    /// The members.
    pub members: Vec<MemberView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

/// Lists members (whoever may read the room).
#[utoipa::path(get, path = "/v1/rooms/{room_id}/members", tag = "membership",
    params(("room_id" = i64, Path, description = "The room id"), MembersQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of members", body = MemberPage), ReadErrors))]
async fn list_members(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
    Query(query): Query<MembersQuery>,
) -> Result<Json<MemberPage>, ApiError> {
    auth.require_scope(scopes::ROOMS_READ)?;
    access(&state.db, room_id, auth.user_id)
        .await?
        .require_readable()?;
    let chat = &state.config.chat;
    let limit = page_limit(query.limit, chat.page_items_default, chat.page_items_max)?;
    let rows: Vec<MemberRow> = sqlx::query_as(&format!(
        "{MEMBER_QUERY} AND m.user_id > $3 ORDER BY m.user_id LIMIT $4"
    ))
    .bind(room_id)
    .bind(now_ms())
    .bind(query.after.unwrap_or(0))
    .bind(limit + 1)
    .fetch_all(&state.db.pool)
    .await?;
    let mut members: Vec<MemberView> = rows.into_iter().map(MemberView::from).collect();
    let next_after = if members.len() as i64 > limit {
        members.truncate(limit as usize);
        members.last().map(|member| member.user_id)
    } else {
        None
    };
    Ok(Json(MemberPage {
        members,
        next_after,
    }))
}

/// `PUT /v1/rooms/{room_id}/members/{user_id}/role`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// The new role. `owner` transfers ownership: the caller (the owner)
    /// becomes admin.
    pub role: Role,
}

/// Changes a member's role, per the permission table.
#[utoipa::path(put, path = "/v1/rooms/{room_id}/members/{user_id}/role", tag = "membership",
    params(("room_id" = i64, Path, description = "The room id"),
           ("user_id" = i64, Path, description = "The member")),
    request_body = SetRole,
    security(("bearer" = [])),
    responses((status = 200, description = "the member with the new role", body = MemberView), WriteErrors))]
async fn set_role(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((room_id, user_id)): Path<(i64, i64)>,
    JsonObject(request): JsonObject<SetRole>,
) -> Result<Json<MemberView>, ApiError> {
    auth.require_scope(scopes::ROOMS_WRITE)?;
    let actor = access(&state.db, room_id, auth.user_id).await?;
    actor.require_member()?;
    let target = access(&state.db, room_id, user_id).await?;
    let Some(target_role) = target.rights.role else {
        actor.require(Action::assign(request.role), None)?;
        return Err(ApiError::not_found(
            "that user is not a member of this room",
        ));
    };
    actor.require(Action::assign(request.role), Some(target_role))?;
    let change = RoleChange {
        room_id,
        actor_id: auth.user_id,
        user_id,
        from: target_role,
        to: request.role,
    };
    let mut transaction = state.db.begin_write().await?;
    change_role(&mut transaction, &change).await?;
    transaction.commit().await?;
    state
        .events
        .publish(ControlEvent::MembershipChanged { room_id, user_id });
    if request.role == Role::Owner {
        state.events.publish(ControlEvent::MembershipChanged {
            room_id,
            user_id: auth.user_id,
        });
        state.events.publish(ControlEvent::RoomChanged { room_id });
    }
    load_member(&state, room_id, user_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("that user is not a member of this room"))
}

/// A checked role change.
struct RoleChange {
    room_id: i64,
    actor_id: i64,
    user_id: i64,
    from: Role,
    to: Role,
}

/// Writes a role change (for `owner`, the actor steps down to admin) and its
/// audit row. Each update names the role it was checked against, so a
/// concurrent change makes it match nothing and the request answers 409.
async fn change_role(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    change: &RoleChange,
) -> Result<(), ApiError> {
    let mut unchanged = false;
    if change.to == Role::Owner {
        unchanged |= sqlx::query(
            "UPDATE room_members SET role = 'admin' WHERE room_id = $1 AND user_id = $2 AND role = 'owner'",
        )
        .bind(change.room_id)
        .bind(change.actor_id)
        .execute(&mut **transaction)
        .await?
        .rows_affected()
            == 0;
    }
    unchanged |= sqlx::query(
        "UPDATE room_members SET role = $3 WHERE room_id = $1 AND user_id = $2 AND role = $4",
    )
    .bind(change.room_id)
    .bind(change.user_id)
    .bind(change.to.as_str())
    .bind(change.from.as_str())
    .execute(&mut **transaction)
    .await?
    .rows_affected()
        == 0;
    if unchanged {
        return Err(ApiError::conflict("the roles changed meanwhile; try again"));
    }
    let action = if change.to == Role::Owner {
        "ownership_transfer"
    } else {
        "role_change"
    };
    record(
        transaction,
        AuditEntry {
            room_id: change.room_id,
            actor_id: change.actor_id,
            action,
            target_user_id: Some(change.user_id),
            reason: "",
            detail: serde_json::json!({"from": change.from, "to": change.to}),
            expires_at_ms: None,
        },
    )
    .await?;
    Ok(())
}
