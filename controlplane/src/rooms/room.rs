//! Rooms: create, list (public ones, and mine), get, update, delete; and
//! direct-message rooms, created on demand, one per pair of users.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::permissions::{access, Action, Role};
use super::request::{check_text, page_limit, JsonObject, Path, Query};
use super::responses::{ActionErrors, ReadErrors, WriteErrors};
use super::settings;
use crate::accounts::{scopes, Authenticated};
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::events::ControlEvent;
use crate::state::AppState;

/// `rooms.kind` of an ordinary room.
pub(crate) const KIND_ROOM: &str = "room";
/// `rooms.kind` of a direct-message room.
pub(crate) const KIND_DM: &str = "dm";

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_room, list_rooms))
        .routes(routes!(get_room, update_room, delete_room))
        .routes(routes!(open_direct_messages))
}

/// What kind of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    /// A room with an owner and roles.
    Room,
    /// A direct-message room between two users.
    Dm,
}

/// A room as the caller sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoomView {
    /// The room id.
    pub id: i64,
    /// `room` or `dm`.
    pub kind: RoomKind,
    /// The name (empty for a direct-message room).
    pub name: String,
    /// The topic (may be empty).
    pub topic: String,
    /// Listed, readable by anyone and open to join.
    pub is_public: bool,
    /// Seconds a member waits between two messages (moderators are exempt).
    pub slow_mode_seconds: i64,
    /// The owner (none for a direct-message room).
    pub owner_id: Option<i64>,
    /// How many members.
    pub member_count: i64,
    /// The caller's role, when a member.
    pub my_role: Option<Role>,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms of the last settings change.
    pub updated_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct RoomRow {
    id: i64,
    kind: String,
    name: String,
    topic: String,
    is_public: i64,
    slow_mode_seconds: i64,
    owner_id: Option<i64>,
    member_count: i64,
    my_role: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl From<RoomRow> for RoomView {
    fn from(row: RoomRow) -> Self {
        RoomView {
            id: row.id,
            kind: if row.kind == KIND_DM {
                RoomKind::Dm
            } else {
                RoomKind::Room
            },
            name: row.name,
            topic: row.topic,
            is_public: row.is_public != 0,
            slow_mode_seconds: row.slow_mode_seconds,
            owner_id: row.owner_id,
            member_count: row.member_count,
            my_role: row.my_role.as_deref().and_then(Role::parse),
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        }
    }
}

/// The columns of [`RoomRow`] for a viewer bound as `$1`.
const ROOM_COLUMNS: &str = "r.id, r.kind, r.name, r.topic, r.is_public, r.slow_mode_seconds, \
    (SELECT o.user_id FROM room_members o WHERE o.room_id = r.id AND o.role = 'owner') AS owner_id, \
    (SELECT COUNT(*) FROM room_members c WHERE c.room_id = r.id) AS member_count, \
    (SELECT v.role FROM room_members v WHERE v.room_id = r.id AND v.user_id = $1) AS my_role, \
    r.created_at_ms, r.updated_at_ms";

/// Loads a room as `viewer_id` sees it.
pub(crate) async fn load_room(
    state: &AppState,
    room_id: i64,
    viewer_id: i64,
) -> Result<RoomView, ApiError> {
    let row: Option<RoomRow> = sqlx::query_as(&format!(
        "SELECT {ROOM_COLUMNS} FROM rooms r WHERE r.id = $2"
    ))
    .bind(viewer_id)
    .bind(room_id)
    .fetch_optional(&state.db.pool)
    .await?;
    row.map(RoomView::from)
        .ok_or_else(|| ApiError::not_found("no such room"))
}

/// `POST /v1/rooms`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// 1 to `chat.room_name_chars_max` characters.
    #[schema(min_length = 1)]
    pub name: String,
    /// Up to `chat.room_topic_chars_max` characters.
    #[serde(default)]
    pub topic: Option<String>,
    /// Listed, readable by anyone and open to join.
    pub is_public: bool,
    /// 0 to `chat.slow_mode_seconds_max`; absent: the runtime setting
    /// `slow_mode_default_seconds`.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub slow_mode_seconds: Option<i64>,
}

fn check_name(state: &AppState, name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::validation("name must not be empty"));
    }
    check_text("name", name, state.config.chat.room_name_chars_max)?;
    Ok(name.to_string())
}

fn check_topic(state: &AppState, topic: &str) -> Result<String, ApiError> {
    check_text("topic", topic, state.config.chat.room_topic_chars_max)?;
    Ok(topic.trim().to_string())
}

fn check_slow_mode(state: &AppState, seconds: i64) -> Result<i64, ApiError> {
    let max = state.config.chat.slow_mode_seconds_max;
    if !(0..=max).contains(&seconds) {
        return Err(ApiError::validation(format!(
            "slow_mode_seconds must be between 0 and {max}"
        )));
    }
    Ok(seconds)
}

/// Creates a room; the caller becomes its owner.
#[utoipa::path(post, path = "/v1/rooms", tag = "rooms",
    request_body = CreateRoom,
    security(("bearer" = [])),
    responses((status = 201, description = "created", body = RoomView), WriteErrors))]
async fn create_room(
    State(state): State<AppState>,
    auth: Authenticated,
    JsonObject(request): JsonObject<CreateRoom>,
) -> Result<(StatusCode, Json<RoomView>), ApiError> {
    auth.require_scope(scopes::ROOMS_WRITE)?;
    let name = check_name(&state, &request.name)?;
    let topic = check_topic(&state, request.topic.as_deref().unwrap_or(""))?;
    let slow_mode_seconds = match request.slow_mode_seconds {
        Some(seconds) => check_slow_mode(&state, seconds)?,
        None => {
            settings::current(&state.db)
                .await?
                .1
                .slow_mode_default_seconds
        }
    };
    let mut transaction = state.db.begin_write().await?;
    let (owned,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM room_members WHERE user_id = $1 AND role = 'owner'")
            .bind(auth.user_id)
            .fetch_one(&mut *transaction)
            .await?;
    if owned >= state.config.chat.rooms_owned_per_user_max {
        return Err(ApiError::conflict(format!(
            "you already own {owned} rooms, the most allowed (chat.rooms_owned_per_user_max)"
        )));
    }
    let now = now_ms();
    let (room_id,): (i64,) = sqlx::query_as(
        "INSERT INTO rooms (kind, name, topic, is_public, slow_mode_seconds, created_at_ms, updated_at_ms) \
         VALUES ('room', $1, $2, $3, $4, $5, $5) RETURNING id",
    )
    .bind(&name)
    .bind(&topic)
    .bind(i64::from(request.is_public))
    .bind(slow_mode_seconds)
    .bind(now)
    .fetch_one(&mut *transaction)
    .await?;
    sqlx::query(
        "INSERT INTO room_members (room_id, user_id, role, joined_at_ms) VALUES ($1, $2, 'owner', $3)",
    )
    .bind(room_id)
    .bind(auth.user_id)
    .bind(now)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    state.events.publish(ControlEvent::RoomChanged { room_id });
    state.events.publish(ControlEvent::MembershipChanged {
        room_id,
        user_id: auth.user_id,
    });
    let room = load_room(&state, room_id, auth.user_id).await?;
    Ok((StatusCode::CREATED, Json(room)))
}

/// Which rooms to list.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListScope {
    /// Public rooms.
    #[default]
    Public,
    /// Rooms the caller is a member of (direct messages included).
    Mine,
}

/// Query of `GET /v1/rooms`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRoomsQuery {
    /// `public` (default) or `mine`.
    #[param(inline)]
    pub scope: Option<ListScope>,
    /// Rooms with ids above this one (the `next_after` of the previous page).
    pub after: Option<i64>,
    /// Page size, 1 to `chat.page_items_max` (larger values are reduced).
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

/// A page of rooms, by ascending id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoomPage {
    /// The rooms.
    pub rooms: Vec<RoomView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

/// Lists public rooms, or the caller's rooms.
#[utoipa::path(get, path = "/v1/rooms", tag = "rooms",
    params(ListRoomsQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of rooms", body = RoomPage), ReadErrors))]
async fn list_rooms(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<ListRoomsQuery>,
) -> Result<Json<RoomPage>, ApiError> {
    auth.require_scope(scopes::ROOMS_READ)?;
    let chat = &state.config.chat;
    let limit = page_limit(query.limit, chat.page_items_default, chat.page_items_max)?;
    let filter = match query.scope.unwrap_or_default() {
        ListScope::Public => "r.kind = 'room' AND r.is_public = 1",
        ListScope::Mine => {
            "EXISTS (SELECT 1 FROM room_members mine WHERE mine.room_id = r.id AND mine.user_id = $1)"
        }
    };
    let rows: Vec<RoomRow> = sqlx::query_as(&format!(
        "SELECT {ROOM_COLUMNS} FROM rooms r WHERE {filter} AND r.id > $2 ORDER BY r.id LIMIT $3"
    ))
    .bind(auth.user_id)
    .bind(query.after.unwrap_or(0))
    .bind(limit + 1)
    .fetch_all(&state.db.pool)
    .await?;
    let mut rooms: Vec<RoomView> = rows.into_iter().map(RoomView::from).collect();
    let next_after = if rooms.len() as i64 > limit {
        rooms.truncate(limit as usize);
        rooms.last().map(|room| room.id)
    } else {
        None
    };
    Ok(Json(RoomPage { rooms, next_after }))
}

/// Gets a room: members, or anyone for a public room.
#[utoipa::path(get, path = "/v1/rooms/{room_id}", tag = "rooms",
    params(("room_id" = i64, Path, description = "The room id")),
    security(("bearer" = [])),
    responses((status = 200, description = "the room", body = RoomView), ReadErrors))]
async fn get_room(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
) -> Result<Json<RoomView>, ApiError> {
    auth.require_scope(scopes::ROOMS_READ)?;
    access(&state.db, room_id, auth.user_id)
        .await?
        .require_readable()?;
    Ok(Json(load_room(&state, room_id, auth.user_id).await?))
}

/// `PATCH /v1/rooms/{room_id}`: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoom {
    /// New name.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub name: Option<String>,
    /// New topic (empty clears it).
    #[serde(default)]
    pub topic: Option<String>,
    /// New slow mode, 0 to `chat.slow_mode_seconds_max`.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub slow_mode_seconds: Option<i64>,
    /// Public or private.
    #[serde(default)]
    pub is_public: Option<bool>,
}

/// Changes a room's settings (admins and the owner).
#[utoipa::path(patch, path = "/v1/rooms/{room_id}", tag = "rooms",
    params(("room_id" = i64, Path, description = "The room id")),
    request_body = UpdateRoom,
    security(("bearer" = [])),
    responses((status = 200, description = "the changed room", body = RoomView), WriteErrors))]
async fn update_room(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
    JsonObject(request): JsonObject<UpdateRoom>,
) -> Result<Json<RoomView>, ApiError> {
    auth.require_scope(scopes::ROOMS_WRITE)?;
    let access = access(&state.db, room_id, auth.user_id).await?;
    access.require(Action::ChangeSettings, None)?;
    let name = request
        .name
        .as_deref()
        .map(|name| check_name(&state, name))
        .transpose()?;
    let topic = request
        .topic
        .as_deref()
        .map(|topic| check_topic(&state, topic))
        .transpose()?;
    let slow_mode_seconds = request
        .slow_mode_seconds
        .map(|seconds| check_slow_mode(&state, seconds))
        .transpose()?;
    let mut transaction = state.db.begin_write().await?;
    sqlx::query(
        "UPDATE rooms SET name = COALESCE($2, name), topic = COALESCE($3, topic), \
           slow_mode_seconds = COALESCE($4, slow_mode_seconds), is_public = COALESCE($5, is_public), \
           updated_at_ms = $6 WHERE id = $1",
    )
    .bind(room_id)
    .bind(&name)
    .bind(&topic)
    .bind(slow_mode_seconds)
    .bind(request.is_public.map(i64::from))
    .bind(now_ms())
    .execute(&mut *transaction)
    .await?;
    let detail = serde_json::json!({
        "name": name, "topic": topic,
        "slow_mode_seconds": slow_mode_seconds, "is_public": request.is_public,
    });
    super::moderation::record(
        &mut transaction,
        super::moderation::AuditEntry {
            room_id,
            actor_id: auth.user_id,
            action: "room_update",
            target_user_id: None,
            reason: "",
            detail,
            expires_at_ms: None,
        },
    )
    .await?;
    transaction.commit().await?;
    state.events.publish(ControlEvent::RoomChanged { room_id });
    Ok(Json(load_room(&state, room_id, auth.user_id).await?))
}

/// Deletes a room with its history (the owner only).
#[utoipa::path(delete, path = "/v1/rooms/{room_id}", tag = "rooms",
    params(("room_id" = i64, Path, description = "The room id")),
    security(("bearer" = [])),
    responses((status = 204, description = "deleted"), ActionErrors))]
async fn delete_room(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    auth.require_scope(scopes::ROOMS_WRITE)?;
    access(&state.db, room_id, auth.user_id)
        .await?
        .require(Action::DeleteRoom, None)?;
    let mut transaction = state.db.begin_write().await?;
    // Messages first, row by row, so the SQLite full-text index's delete
    // trigger sees each one (cascades would do it too, but this does not
    // depend on how the engine fires triggers for foreign-key actions).
    sqlx::query("DELETE FROM messages WHERE room_id = $1")
        .bind(room_id)
        .execute(&mut *transaction)
        .await?;
    sqlx::query("DELETE FROM rooms WHERE id = $1")
        .bind(room_id)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    state.events.publish(ControlEvent::RoomChanged { room_id });
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/dms`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenDirectMessages {
    /// The other user.
    pub user_id: i64,
}

/// The direct-message room between the caller and another user: created on
/// the first call (201), the same room on every later call from either side
/// (200).
#[utoipa::path(post, path = "/v1/dms", tag = "rooms",
    request_body = OpenDirectMessages,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the existing room", body = RoomView),
        (status = 201, description = "created", body = RoomView),
        WriteErrors))]
async fn open_direct_messages(
    State(state): State<AppState>,
    auth: Authenticated,
    JsonObject(request): JsonObject<OpenDirectMessages>,
) -> Result<(StatusCode, Json<RoomView>), ApiError> {
    auth.require_scope(scopes::ROOMS_WRITE)?;
    if request.user_id == auth.user_id {
        return Err(ApiError::validation(
            "user_id must be someone else: a direct-message room has two people",
        ));
    }
    super::membership::require_user(&state, request.user_id).await?;
    let (low, high) = (
        auth.user_id.min(request.user_id),
        auth.user_id.max(request.user_id),
    );
    let dm_key = format!("{low}:{high}");
    let now = now_ms();
    let mut transaction = state.db.begin_write().await?;
    let created = sqlx::query(
        "INSERT INTO rooms (kind, name, topic, is_public, slow_mode_seconds, dm_key, created_at_ms, updated_at_ms) \
         VALUES ('dm', '', '', 0, 0, $1, $2, $2) ON CONFLICT (dm_key) DO NOTHING",
    )
    .bind(&dm_key)
    .bind(now)
    .execute(&mut *transaction)
    .await?
    .rows_affected()
        == 1;
    let (room_id,): (i64,) = sqlx::query_as("SELECT id FROM rooms WHERE dm_key = $1")
        .bind(&dm_key)
        .fetch_one(&mut *transaction)
        .await?;
    for user_id in [low, high] {
        sqlx::query(
            "INSERT INTO room_members (room_id, user_id, role, joined_at_ms) VALUES ($1, $2, 'member', $3) \
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await?;
    if created {
        state.events.publish(ControlEvent::RoomChanged { room_id });
        for user_id in [low, high] {
            state
                .events
                .publish(ControlEvent::MembershipChanged { room_id, user_id });
        }
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(load_room(&state, room_id, auth.user_id).await?),
    ))
}
