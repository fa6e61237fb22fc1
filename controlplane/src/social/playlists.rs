//! Playlists: create, get (with the tracks the caller may see, in order),
//! change, delete, and the list operations (insert at a position or append,
//! remove a position, reorder), owner only.
//!
//! A playlist has the visibility of a track: public and unlisted playlists
//! may be opened by anyone with their id, private ones only by their owner
//! (404 for everyone else; 403 for changes by someone who can see it).
//!
//! Every list change loads the items (bounded by
//! `social.playlist_tracks_max`), applies a [`super::playlist_order`]
//! function and writes the list back as positions `0..n`, in one write
//! transaction that first touches the playlist row, so concurrent changes
//! of one playlist queue behind each other instead of interleaving.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::playlist_order::{self, OrderError, PlaylistItem};
use super::responses::{ActionErrors, ReadErrors, WriteErrors};
use super::visibility::{load_openable, may_list, TrackSummary, TRACK_SUMMARY_COLUMNS};
use crate::accounts::Authenticated;
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::rooms::request::{check_text, JsonObject, Path};
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_playlist))
        .routes(routes!(get_playlist, update_playlist, delete_playlist))
        .routes(routes!(add_playlist_track))
        .routes(routes!(remove_playlist_track))
        .routes(routes!(reorder_playlist))
}

/// Who may open a playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlaylistVisibility {
    /// Anyone.
    Public,
    /// Anyone with its id; not listed.
    Unlisted,
    /// Its owner only.
    Private,
}

impl PlaylistVisibility {
    fn as_str(self) -> &'static str {
        match self {
            PlaylistVisibility::Public => "public",
            PlaylistVisibility::Unlisted => "unlisted",
            PlaylistVisibility::Private => "private",
        }
    }
}

#[derive(sqlx::FromRow)]
struct PlaylistRow {
    id: i64,
    owner_user_id: i64,
    title: String,
    description: String,
    visibility: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

/// One track of a playlist as the caller sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlaylistEntry {
    /// Its index in the playlist (0 first), as `DELETE .../tracks/{position}`
    /// names it; positions of tracks the caller may not see are skipped.
    pub position: usize,
    /// When it was added (Unix ms).
    pub added_at_ms: i64,
    /// The track.
    pub track: TrackSummary,
}

/// A playlist with the tracks the caller may see, in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlaylistView {
    /// The playlist id.
    pub id: i64,
    /// The owner.
    pub owner_user_id: i64,
    /// The title.
    pub title: String,
    /// The description (may be empty).
    pub description: String,
    /// `public`, `unlisted` or `private`.
    pub visibility: String,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms of the last change (its fields or its tracks).
    pub updated_at_ms: i64,
    /// The tracks, by position.
    pub tracks: Vec<PlaylistEntry>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    added_at_ms: i64,
    #[sqlx(flatten)]
    track: TrackSummary,
}

async fn load_row(state: &AppState, playlist_id: i64) -> Result<Option<PlaylistRow>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT id, owner_user_id, title, description, visibility, created_at_ms, updated_at_ms \
         FROM playlists WHERE id = $1",
    )
    .bind(playlist_id)
    .fetch_optional(&state.db.pool)
    .await?)
}

/// The playlist if `viewer_user_id` may open it; otherwise 404.
async fn load_visible(
    state: &AppState,
    playlist_id: i64,
    viewer_user_id: i64,
) -> Result<PlaylistRow, ApiError> {
    load_row(state, playlist_id)
        .await?
        .filter(|row| row.owner_user_id == viewer_user_id || row.visibility != "private")
        .ok_or_else(|| ApiError::not_found("no such playlist"))
}

/// The playlist if `caller_id` owns it: 404 when they cannot see it, 403
/// when they can but do not own it.
async fn load_owned(
    state: &AppState,
    playlist_id: i64,
    caller_id: i64,
) -> Result<PlaylistRow, ApiError> {
    let row = load_visible(state, playlist_id, caller_id).await?;
    if row.owner_user_id != caller_id {
        return Err(ApiError::forbidden(
            "only the playlist's owner may change it",
        ));
    }
    Ok(row)
}

/// The playlist as `viewer_user_id` sees it.
async fn view(
    state: &AppState,
    row: PlaylistRow,
    viewer_user_id: i64,
) -> Result<PlaylistView, ApiError> {
    let items: Vec<ItemRow> = sqlx::query_as(&format!(
        "SELECT i.added_at_ms, {TRACK_SUMMARY_COLUMNS} \
         FROM playlist_items i JOIN tracks t ON t.id = i.track_id \
         WHERE i.playlist_id = $1 ORDER BY i.position"
    ))
    .bind(row.id)
    .fetch_all(&state.db.pool)
    .await?;
    // Positions are indexes into the whole list (stored positions may have
    // a gap where a deleted track was), then the hidden ones are skipped.
    let tracks = items
        .into_iter()
        .enumerate()
        .filter(|(_, item)| may_list(item.track.access(), viewer_user_id, row.owner_user_id))
        .map(|(position, item)| PlaylistEntry {
            position,
            added_at_ms: item.added_at_ms,
            track: item.track,
        })
        .collect();
    Ok(PlaylistView {
        id: row.id,
        owner_user_id: row.owner_user_id,
        title: row.title,
        description: row.description,
        visibility: row.visibility,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
        tracks,
    })
}

async fn view_by_id(
    state: &AppState,
    playlist_id: i64,
    viewer_user_id: i64,
) -> Result<PlaylistView, ApiError> {
    let row = load_visible(state, playlist_id, viewer_user_id).await?;
    view(state, row, viewer_user_id).await
}

/// The trimmed title, 1 to `social.playlist_title_chars_max` characters.
fn check_title(state: &AppState, title: &str) -> Result<String, ApiError> {
    let title = title.trim();
    if title.is_empty() {
        return Err(ApiError::validation("title must not be empty"));
    }
    check_text("title", title, state.config.social.playlist_title_chars_max)?;
    Ok(title.to_string())
}

fn check_description(state: &AppState, description: &str) -> Result<String, ApiError> {
    let description = description.trim();
    check_text(
        "description",
        description,
        state.config.social.playlist_description_chars_max,
    )?;
    Ok(description.to_string())
}

/// `POST /v1/playlists`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlaylist {
    /// 1 to `social.playlist_title_chars_max` characters (trimmed).
    pub title: String,
    /// Up to `social.playlist_description_chars_max` characters (default empty).
    #[serde(default)]
    pub description: Option<String>,
    /// Who may open it.
    pub visibility: PlaylistVisibility,
}

/// Creates an empty playlist owned by the caller. Past
/// `social.playlists_per_user_max` the answer is 409 `too_many_playlists`.
#[utoipa::path(post, path = "/v1/playlists", tag = "social",
    request_body = CreatePlaylist,
    security(("bearer" = [])),
    responses((status = 201, description = "created", body = PlaylistView), WriteErrors))]
async fn create_playlist(
    State(state): State<AppState>,
    auth: Authenticated,
    JsonObject(request): JsonObject<CreatePlaylist>,
) -> Result<(StatusCode, Json<PlaylistView>), ApiError> {
    auth.require_user_token()?;
    let title = check_title(&state, &request.title)?;
    let description = check_description(&state, request.description.as_deref().unwrap_or(""))?;
    let playlists_max = state.config.social.playlists_per_user_max;
    let mut transaction = state.db.begin_write().await?;
    let (owned,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM playlists WHERE owner_user_id = $1")
            .bind(auth.user_id)
            .fetch_one(&mut *transaction)
            .await?;
    if owned >= playlists_max {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_playlists",
            format!(
                "you own {owned} playlists, the most allowed (social.playlists_per_user_max); delete one first"
            ),
        ));
    }
    let (playlist_id,): (i64,) = sqlx::query_as(
        "INSERT INTO playlists (owner_user_id, title, description, visibility, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
    )
    .bind(auth.user_id)
    .bind(&title)
    .bind(&description)
    .bind(request.visibility.as_str())
    .bind(now_ms())
    .fetch_one(&mut *transaction)
    .await?;
    transaction.commit().await?;
    let view = view_by_id(&state, playlist_id, auth.user_id).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Gets a playlist with its tracks in order, leaving out the tracks the
/// caller may not see.
#[utoipa::path(get, path = "/v1/playlists/{playlist_id}", tag = "social",
    params(("playlist_id" = i64, Path, description = "The playlist")),
    security(("bearer" = [])),
    responses((status = 200, description = "the playlist", body = PlaylistView), ReadErrors))]
async fn get_playlist(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(playlist_id): Path<i64>,
) -> Result<Json<PlaylistView>, ApiError> {
    auth.require_user_token()?;
    Ok(Json(view_by_id(&state, playlist_id, auth.user_id).await?))
}

/// `PATCH /v1/playlists/{playlist_id}`: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlaylist {
    /// New title (1 character at least).
    #[serde(default)]
    pub title: Option<String>,
    /// New description (empty clears it).
    #[serde(default)]
    pub description: Option<String>,
    /// New visibility.
    #[serde(default)]
    pub visibility: Option<PlaylistVisibility>,
}

/// Changes a playlist's title, description or visibility (the owner only).
#[utoipa::path(patch, path = "/v1/playlists/{playlist_id}", tag = "social",
    params(("playlist_id" = i64, Path, description = "The playlist")),
    request_body = UpdatePlaylist,
    security(("bearer" = [])),
    responses((status = 200, description = "the changed playlist", body = PlaylistView), WriteErrors))]
async fn update_playlist(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(playlist_id): Path<i64>,
    JsonObject(request): JsonObject<UpdatePlaylist>,
) -> Result<Json<PlaylistView>, ApiError> {
    auth.require_user_token()?;
    load_owned(&state, playlist_id, auth.user_id).await?;
    let title = request
        .title
        .as_deref()
        .map(|title| check_title(&state, title))
        .transpose()?;
    let description = request
        .description
        .as_deref()
        .map(|description| check_description(&state, description))
        .transpose()?;
    let mut transaction = state.db.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE playlists SET title = COALESCE($3, title), \
           description = COALESCE($4, description), visibility = COALESCE($5, visibility), \
           updated_at_ms = $6 \
         WHERE id = $1 AND owner_user_id = $2",
    )
    .bind(playlist_id)
    .bind(auth.user_id)
    .bind(&title)
    .bind(&description)
    .bind(request.visibility.map(PlaylistVisibility::as_str))
    .bind(now_ms())
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    transaction.commit().await?;
    if updated == 0 {
        return Err(ApiError::not_found("no such playlist (it was deleted)"));
    }
    Ok(Json(view_by_id(&state, playlist_id, auth.user_id).await?))
}

/// Deletes a playlist (the owner only); its tracks stay.
#[utoipa::path(delete, path = "/v1/playlists/{playlist_id}", tag = "social",
    params(("playlist_id" = i64, Path, description = "The playlist")),
    security(("bearer" = [])),
    responses((status = 204, description = "deleted"), ActionErrors))]
async fn delete_playlist(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(playlist_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    auth.require_user_token()?;
    load_owned(&state, playlist_id, auth.user_id).await?;
    let mut transaction = state.db.begin_write().await?;
    let deleted = sqlx::query("DELETE FROM playlists WHERE id = $1 AND owner_user_id = $2")
        .bind(playlist_id)
        .bind(auth.user_id)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
    transaction.commit().await?;
    if deleted == 0 {
        return Err(ApiError::not_found("no such playlist (it was deleted)"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// An item with what the owner's view of it depends on.
#[derive(sqlx::FromRow)]
struct StoredItem {
    track_id: i64,
    added_at_ms: i64,
    owner_user_id: i64,
    visibility: String,
    status: String,
}

/// Runs `change` on the items of a playlist the caller owns, in one write
/// transaction, and writes the result back as positions `0..n`.
async fn change_items<T>(
    state: &AppState,
    playlist_id: i64,
    caller_id: i64,
    change: impl FnOnce(&mut Vec<PlaylistItem>, &[StoredItem]) -> Result<T, OrderError>,
) -> Result<T, ApiError> {
    let mut transaction = state.db.begin_write().await?;
    // Touching the row first makes concurrent changes of this playlist wait
    // for each other (a row lock on PostgreSQL; SQLite has one writer).
    let touched =
        sqlx::query("UPDATE playlists SET updated_at_ms = $3 WHERE id = $1 AND owner_user_id = $2")
            .bind(playlist_id)
            .bind(caller_id)
            .bind(now_ms())
            .execute(&mut *transaction)
            .await?
            .rows_affected();
    if touched == 0 {
        return Err(ApiError::not_found("no such playlist (it was deleted)"));
    }
    let stored: Vec<StoredItem> = sqlx::query_as(
        "SELECT i.track_id, i.added_at_ms, t.owner_user_id, t.visibility, t.status \
         FROM playlist_items i JOIN tracks t ON t.id = i.track_id \
         WHERE i.playlist_id = $1 ORDER BY i.position",
    )
    .bind(playlist_id)
    .fetch_all(&mut *transaction)
    .await?;
    let mut items: Vec<PlaylistItem> = stored
        .iter()
        .map(|item| PlaylistItem {
            track_id: item.track_id,
            added_at_ms: item.added_at_ms,
        })
        .collect();
    let outcome = change(&mut items, &stored).map_err(order_error)?;
    sqlx::query("DELETE FROM playlist_items WHERE playlist_id = $1")
        .bind(playlist_id)
        .execute(&mut *transaction)
        .await?;
    // Rows per statement: 4 bind parameters each stays far below both
    // databases' parameter limits.
    const ROWS_PER_INSERT: usize = 250;
    for (chunk_index, chunk) in items.chunks(ROWS_PER_INSERT).enumerate() {
        let values: Vec<String> = (0..chunk.len())
            .map(|row| {
                let base = row * 4;
                format!(
                    "(${}, ${}, ${}, ${})",
                    base + 1,
                    base + 2,
                    base + 3,
                    base + 4
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO playlist_items (playlist_id, position, track_id, added_at_ms) VALUES {}",
            values.join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for (row, item) in chunk.iter().enumerate() {
            let position = (chunk_index * ROWS_PER_INSERT + row) as i64;
            insert = insert
                .bind(playlist_id)
                .bind(position)
                .bind(item.track_id)
                .bind(item.added_at_ms);
        }
        insert
            .execute(&mut *transaction)
            .await
            .map_err(track_deleted_meanwhile)?;
    }
    transaction.commit().await?;
    Ok(outcome)
}

/// A track deleted between reading the list and writing it back (possible
/// on PostgreSQL only, where track deletions do not wait for this writer).
fn track_deleted_meanwhile(error: sqlx::Error) -> ApiError {
    let is_foreign_key = error
        .as_database_error()
        .is_some_and(|database_error| database_error.is_foreign_key_violation());
    if is_foreign_key {
        return ApiError::conflict("a track of the playlist was deleted meanwhile; try again");
    }
    error.into()
}

fn order_error(error: OrderError) -> ApiError {
    let detail = error.to_string();
    match error {
        OrderError::AlreadyPresent { .. } => {
            ApiError::new(StatusCode::CONFLICT, "track_already_in_playlist", detail)
        }
        OrderError::Full { .. } => ApiError::new(StatusCode::CONFLICT, "playlist_full", detail),
        OrderError::NoSuchPosition { .. } => ApiError::not_found(detail),
        OrderError::PositionPastEnd { .. } | OrderError::NotAPermutation { .. } => {
            ApiError::validation(detail)
        }
    }
}

/// `POST /v1/playlists/{playlist_id}/tracks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPlaylistTrack {
    /// A track the caller may open.
    pub track_id: i64,
    /// Where to insert it (0 first; the length of the playlist, or absent:
    /// at the end).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub position: Option<usize>,
}

/// Adds a track to a playlist (the owner only), at `position` or at the end.
/// A track is in a playlist at most once (409 `track_already_in_playlist`);
/// past `social.playlist_tracks_max` 409 `playlist_full`.
#[utoipa::path(post, path = "/v1/playlists/{playlist_id}/tracks", tag = "social",
    params(("playlist_id" = i64, Path, description = "The playlist")),
    request_body = AddPlaylistTrack,
    security(("bearer" = [])),
    responses((status = 200, description = "the changed playlist", body = PlaylistView), WriteErrors))]
async fn add_playlist_track(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(playlist_id): Path<i64>,
    JsonObject(request): JsonObject<AddPlaylistTrack>,
) -> Result<Json<PlaylistView>, ApiError> {
    auth.require_user_token()?;
    load_owned(&state, playlist_id, auth.user_id).await?;
    load_openable(&state, request.track_id, auth.user_id).await?;
    let items_max = state.config.social.playlist_tracks_max as usize;
    let item = PlaylistItem {
        track_id: request.track_id,
        added_at_ms: now_ms(),
    };
    change_items(&state, playlist_id, auth.user_id, |items, _| {
        playlist_order::insert(items, item, request.position, items_max)
    })
    .await?;
    Ok(Json(view_by_id(&state, playlist_id, auth.user_id).await?))
}

/// Removes the track at `position` (the owner only); later tracks move up.
#[utoipa::path(delete, path = "/v1/playlists/{playlist_id}/tracks/{position}", tag = "social",
    params(("playlist_id" = i64, Path, description = "The playlist"),
        ("position" = usize, Path, description = "The index of the track (0 first)")),
    security(("bearer" = [])),
    responses((status = 204, description = "removed"), ActionErrors))]
async fn remove_playlist_track(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((playlist_id, position)): Path<(i64, usize)>,
) -> Result<StatusCode, ApiError> {
    auth.require_user_token()?;
    load_owned(&state, playlist_id, auth.user_id).await?;
    change_items(&state, playlist_id, auth.user_id, |items, _| {
        playlist_order::remove(items, position)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/playlists/{playlist_id}/order`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReorderPlaylist {
    /// Every track of the playlist the caller sees, each once, in the new
    /// order.
    pub track_ids: Vec<i64>,
}

/// Reorders a playlist (the owner only): `track_ids` must be a permutation
/// of the tracks the owner sees in it (422 otherwise); tracks hidden from
/// the owner keep their positions.
#[utoipa::path(put, path = "/v1/playlists/{playlist_id}/order", tag = "social",
    params(("playlist_id" = i64, Path, description = "The playlist")),
    request_body = ReorderPlaylist,
    security(("bearer" = [])),
    responses((status = 200, description = "the reordered playlist", body = PlaylistView), WriteErrors))]
async fn reorder_playlist(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(playlist_id): Path<i64>,
    JsonObject(request): JsonObject<ReorderPlaylist>,
) -> Result<Json<PlaylistView>, ApiError> {
    auth.require_user_token()?;
    load_owned(&state, playlist_id, auth.user_id).await?;
    let owner = auth.user_id;
    change_items(&state, playlist_id, owner, |items, stored| {
        let visible: Vec<i64> = stored
            .iter()
            .filter(|item| {
                let access = super::visibility::TrackAccess {
                    owner_user_id: item.owner_user_id,
                    visibility: &item.visibility,
                    status: &item.status,
                };
                may_list(access, owner, owner)
            })
            .map(|item| item.track_id)
            .collect();
        playlist_order::reorder(
            items,
            |track_id| visible.contains(&track_id),
            &request.track_ids,
        )
    })
    .await?;
    Ok(Json(view_by_id(&state, playlist_id, auth.user_id).await?))
}
