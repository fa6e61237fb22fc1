//! Likes and reposts, a user's mark on a track (both idempotent: `PUT` twice
//! is one mark, `DELETE` of no mark succeeds), the list of a user's likes,
//! and a track's counts.
//!
//! A like may be given to any track the caller may open (their own too, even
//! unprocessed). A repost puts the track into the feeds of the reposter's
//! followers, so it needs a public, processed track of someone else (422
//! otherwise: reposting one's own upload would show it twice).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::responses::{ActionErrors, ReadErrors};
use super::visibility::{
    load_openable, require_user, TrackSummary, LISTED_SQL, TRACK_SUMMARY_COLUMNS,
};
use crate::accounts::Authenticated;
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::rooms::request::{page_limit, Path, Query};
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(like_track, unlike_track))
        .routes(routes!(repost_track, unrepost_track))
        .routes(routes!(list_likes))
        .routes(routes!(track_stats))
}

/// Which mark, and the table that holds it.
#[derive(Debug, Clone, Copy)]
enum Mark {
    Like,
    Repost,
}

impl Mark {
    fn table(self) -> &'static str {
        match self {
            Mark::Like => "track_likes",
            Mark::Repost => "track_reposts",
        }
    }
}

async fn put_mark(
    state: &AppState,
    mark: Mark,
    user_id: i64,
    track_id: i64,
) -> Result<(), ApiError> {
    let mut transaction = state.db.begin_write().await?;
    // Through the tracks table, so a track deleted since it was checked adds
    // no row (instead of failing on the foreign key).
    sqlx::query(&format!(
        "INSERT INTO {} (user_id, track_id, created_at_ms) \
         SELECT $1, id, $3 FROM tracks WHERE id = $2 \
         ON CONFLICT (user_id, track_id) DO NOTHING",
        mark.table()
    ))
    .bind(user_id)
    .bind(track_id)
    .bind(now_ms())
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(())
}

async fn delete_mark(
    state: &AppState,
    mark: Mark,
    user_id: i64,
    track_id: i64,
) -> Result<(), ApiError> {
    let mut transaction = state.db.begin_write().await?;
    sqlx::query(&format!(
        "DELETE FROM {} WHERE user_id = $1 AND track_id = $2",
        mark.table()
    ))
    .bind(user_id)
    .bind(track_id)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(())
}

/// Likes a track (idempotent: liking it again keeps the first like's time).
#[utoipa::path(put, path = "/v1/tracks/{id}/like", tag = "social",
    params(("id" = i64, Path, description = "The track")),
    security(("bearer" = [])),
    responses((status = 204, description = "liked"), ActionErrors))]
async fn like_track(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(track_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    auth.require_user_token()?;
    load_openable(&state, track_id, auth.user_id).await?;
    put_mark(&state, Mark::Like, auth.user_id, track_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes a like back (204 also when there was none).
#[utoipa::path(delete, path = "/v1/tracks/{id}/like", tag = "social",
    params(("id" = i64, Path, description = "The track")),
    security(("bearer" = [])),
    responses((status = 204, description = "not liked (any more)"), ActionErrors))]
async fn unlike_track(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(track_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    auth.require_user_token()?;
    load_openable(&state, track_id, auth.user_id).await?;
    delete_mark(&state, Mark::Like, auth.user_id, track_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reposts a track into the feeds of the caller's followers (idempotent). The
/// track must be public, processed and someone else's (422 otherwise).
#[utoipa::path(put, path = "/v1/tracks/{id}/repost", tag = "social",
    params(("id" = i64, Path, description = "The track")),
    security(("bearer" = [])),
    responses((status = 204, description = "reposted"), ActionErrors))]
async fn repost_track(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(track_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    auth.require_user_token()?;
    let track = load_openable(&state, track_id, auth.user_id).await?;
    if track.owner_user_id == auth.user_id {
        return Err(ApiError::validation(
            "you cannot repost your own track: your followers see your uploads already",
        ));
    }
    if track.visibility != "public" || track.status != "ready" {
        return Err(ApiError::validation(
            "only public, processed tracks can be reposted",
        ));
    }
    put_mark(&state, Mark::Repost, auth.user_id, track_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes a repost back (204 also when there was none).
#[utoipa::path(delete, path = "/v1/tracks/{id}/repost", tag = "social",
    params(("id" = i64, Path, description = "The track")),
    security(("bearer" = [])),
    responses((status = 204, description = "not reposted (any more)"), ActionErrors))]
async fn unrepost_track(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(track_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    auth.require_user_token()?;
    load_openable(&state, track_id, auth.user_id).await?;
    delete_mark(&state, Mark::Repost, auth.user_id, track_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of a page listed newest first by an integer cursor.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NewestFirstQuery {
    /// The `next_after` of the previous page (absent: the newest).
    pub after: Option<i64>,
    /// Page size, 1 to `social.page_items_max` (larger values are reduced).
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

/// A liked track.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct LikedTrack {
    /// When the like was given (Unix ms).
    pub liked_at_ms: i64,
    /// The track.
    #[sqlx(flatten)]
    pub track: TrackSummary,
    /// The paging key (the like's id).
    #[serde(skip)]
    like_id: i64,
}

/// A page of likes, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LikePage {
    /// The likes.
    pub likes: Vec<LikedTrack>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

/// The tracks a user liked, newest like first, leaving out those the caller
/// may not see (private and unprocessed tracks of others; unlisted tracks
/// unless the caller owns them or the list is the caller's).
#[utoipa::path(get, path = "/v1/users/{user_id}/likes", tag = "social",
    params(("user_id" = i64, Path, description = "The user"), NewestFirstQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of likes", body = LikePage), ReadErrors))]
async fn list_likes(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(user_id): Path<i64>,
    Query(query): Query<NewestFirstQuery>,
) -> Result<Json<LikePage>, ApiError> {
    auth.require_user_token()?;
    let config = &state.config.social;
    let limit = page_limit(
        query.limit,
        config.page_items_default,
        config.page_items_max,
    )?;
    require_user(&state, user_id).await?;
    let mut likes: Vec<LikedTrack> = sqlx::query_as(&format!(
        "SELECT l.id AS like_id, l.created_at_ms AS liked_at_ms, {TRACK_SUMMARY_COLUMNS} \
         FROM track_likes l JOIN tracks t ON t.id = l.track_id \
         WHERE l.user_id = $2 AND {LISTED_SQL} AND l.id < $3 \
         ORDER BY l.id DESC LIMIT $4"
    ))
    .bind(auth.user_id)
    .bind(user_id)
    .bind(query.after.unwrap_or(i64::MAX))
    .bind(limit + 1)
    .fetch_all(&state.db.pool)
    .await?;
    let next_after = if likes.len() as i64 > limit {
        likes.truncate(limit as usize);
        likes.last().map(|like| like.like_id)
    } else {
        None
    };
    Ok(Json(LikePage { likes, next_after }))
}

/// A track's counts.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct TrackStats {
    /// Plays counted so far (reported by data planes).
    pub play_count: i64,
    /// Likes.
    pub like_count: i64,
    /// Reposts.
    pub repost_count: i64,
    /// Comments.
    pub comment_count: i64,
}

/// A track's play, like, repost and comment counts.
#[utoipa::path(get, path = "/v1/tracks/{id}/stats", tag = "social",
    params(("id" = i64, Path, description = "The track")),
    security(("bearer" = [])),
    responses((status = 200, description = "the counts", body = TrackStats), ReadErrors))]
async fn track_stats(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(track_id): Path<i64>,
) -> Result<Json<TrackStats>, ApiError> {
    auth.require_user_token()?;
    load_openable(&state, track_id, auth.user_id).await?;
    let stats: Option<TrackStats> = sqlx::query_as(
        "SELECT t.play_count, \
           (SELECT COUNT(*) FROM track_likes l WHERE l.track_id = t.id) AS like_count, \
           (SELECT COUNT(*) FROM track_reposts r WHERE r.track_id = t.id) AS repost_count, \
           (SELECT COUNT(*) FROM track_comments c WHERE c.track_id = t.id) AS comment_count \
         FROM tracks t WHERE t.id = $1",
    )
    .bind(track_id)
    .fetch_optional(&state.db.pool)
    .await?;
    stats
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such track (it was deleted)"))
}
