//! Comments at a moment of a track (SoundCloud's signature): post, list by
//! timestamp or newest first, delete (the author or the track's owner).
//!
//! A comment's `timestamp_ms` must fall within the processed track
//! (`0..=duration_ms`), so commenting waits until the track is `ready`
//! (409 `track_not_ready`; only its owner can see it before).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page_cursor::{parse_after, PageCursor};
use super::responses::{ActionErrors, ReadErrors, WriteErrors};
use super::visibility::load_openable;
use crate::accounts::Authenticated;
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::rooms::request::{check_text, page_limit, JsonObject, Path, Query};
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_comment, list_comments))
        .routes(routes!(delete_comment))
}

/// A comment.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct CommentView {
    /// The comment id.
    pub id: i64,
    /// The track.
    pub track_id: i64,
    /// The author.
    pub user_id: i64,
    /// The author's name.
    pub username: String,
    /// The text.
    pub body: String,
    /// The moment of the track it is about, in ms from the start.
    pub timestamp_ms: i64,
    /// When it was posted (Unix ms).
    pub created_at_ms: i64,
}

const COMMENT_COLUMNS: &str =
    "c.id, c.track_id, c.user_id, u.username, c.body, c.timestamp_ms, c.created_at_ms";

/// `POST /v1/tracks/{id}/comments`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostComment {
    /// 1 to `social.comment_chars_max` characters (trimmed).
    pub body: String,
    /// The moment it is about: 0 to the track's `duration_ms`.
    #[schema(minimum = 0)]
    pub timestamp_ms: i64,
}

/// Comments on a track at a moment of it.
#[utoipa::path(post, path = "/v1/tracks/{id}/comments", tag = "social",
    params(("id" = i64, Path, description = "The track")),
    request_body = PostComment,
    security(("bearer" = [])),
    responses((status = 201, description = "posted", body = CommentView), WriteErrors))]
async fn post_comment(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(track_id): Path<i64>,
    JsonObject(request): JsonObject<PostComment>,
) -> Result<(StatusCode, Json<CommentView>), ApiError> {
    auth.require_user_token()?;
    let body = request.body.trim();
    if body.is_empty() {
        return Err(ApiError::validation("body must not be empty"));
    }
    check_text("body", body, state.config.social.comment_chars_max)?;
    let track = load_openable(&state, track_id, auth.user_id).await?;
    let duration_ms = match (track.status.as_str(), track.duration_ms) {
        ("ready", Some(duration_ms)) => duration_ms,
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "track_not_ready",
                "the track is not processed yet; comments need its duration",
            ))
        }
    };
    if !(0..=duration_ms).contains(&request.timestamp_ms) {
        return Err(ApiError::validation(format!(
            "timestamp_ms must be between 0 and the track's duration, {duration_ms}"
        )));
    }
    let mut transaction = state.db.begin_write().await?;
    let inserted: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO track_comments (track_id, user_id, body, timestamp_ms, created_at_ms) \
         SELECT id, $2, $3, $4, $5 FROM tracks WHERE id = $1 RETURNING id",
    )
    .bind(track_id)
    .bind(auth.user_id)
    .bind(body)
    .bind(request.timestamp_ms)
    .bind(now_ms())
    .fetch_optional(&mut *transaction)
    .await?;
    transaction.commit().await?;
    let (comment_id,) =
        inserted.ok_or_else(|| ApiError::not_found("no such track (it was deleted)"))?;
    let comment: CommentView = sqlx::query_as(&format!(
        "SELECT {COMMENT_COLUMNS} FROM track_comments c JOIN users u ON u.id = c.user_id \
         WHERE c.id = $1"
    ))
    .bind(comment_id)
    .fetch_one(&state.db.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(comment)))
}

/// The order of a page of comments.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommentOrder {
    /// By moment in the track, earliest first (as a player shows them).
    #[default]
    Timestamp,
    /// Newest first.
    Newest,
}

/// Query of `GET /v1/tracks/{id}/comments`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListCommentsQuery {
    /// `timestamp` (default) or `newest`.
    #[param(inline)]
    pub order: Option<CommentOrder>,
    /// The `next_after` of the previous page, in the same order.
    #[param(pattern = "^-?[0-9]+_-?[0-9]+$")]
    pub after: Option<String>,
    /// Page size, 1 to `social.page_items_max` (larger values are reduced).
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

/// A page of comments.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommentPage {
    /// The comments.
    pub comments: Vec<CommentView>,
    /// Pass as `after` (with the same `order`) for the next page; null on
    /// the last page.
    pub next_after: Option<String>,
}

/// Lists a track's comments by moment in the track or newest first.
#[utoipa::path(get, path = "/v1/tracks/{id}/comments", tag = "social",
    params(("id" = i64, Path, description = "The track"), ListCommentsQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of comments", body = CommentPage), ReadErrors))]
async fn list_comments(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(track_id): Path<i64>,
    Query(query): Query<ListCommentsQuery>,
) -> Result<Json<CommentPage>, ApiError> {
    auth.require_user_token()?;
    let config = &state.config.social;
    let limit = page_limit(
        query.limit,
        config.page_items_default,
        config.page_items_max,
    )?;
    let after = parse_after(query.after.as_deref())?;
    load_openable(&state, track_id, auth.user_id).await?;
    let order = query.order.unwrap_or_default();
    // Without `after`, a cursor before the first item of the order.
    let (filter, order_by, start) = match order {
        CommentOrder::Timestamp => (
            "(c.timestamp_ms > $2 OR (c.timestamp_ms = $2 AND c.id > $3))",
            "c.timestamp_ms, c.id",
            PageCursor { time_ms: -1, id: 0 },
        ),
        CommentOrder::Newest => (
            "(c.created_at_ms < $2 OR (c.created_at_ms = $2 AND c.id < $3))",
            "c.created_at_ms DESC, c.id DESC",
            PageCursor {
                time_ms: i64::MAX,
                id: i64::MAX,
            },
        ),
    };
    let cursor = after.unwrap_or(start);
    let mut comments: Vec<CommentView> = sqlx::query_as(&format!(
        "SELECT {COMMENT_COLUMNS} FROM track_comments c JOIN users u ON u.id = c.user_id \
         WHERE c.track_id = $1 AND {filter} ORDER BY {order_by} LIMIT $4"
    ))
    .bind(track_id)
    .bind(cursor.time_ms)
    .bind(cursor.id)
    .bind(limit + 1)
    .fetch_all(&state.db.pool)
    .await?;
    let next_after = if comments.len() as i64 > limit {
        comments.truncate(limit as usize);
        comments.last().map(|comment| {
            let time_ms = match order {
                CommentOrder::Timestamp => comment.timestamp_ms,
                CommentOrder::Newest => comment.created_at_ms,
            };
            PageCursor {
                time_ms,
                id: comment.id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(CommentPage {
        comments,
        next_after,
    }))
}

/// Deletes a comment: its author or the track's owner may.
#[utoipa::path(delete, path = "/v1/tracks/{id}/comments/{comment_id}", tag = "social",
    params(("id" = i64, Path, description = "The track"),
        ("comment_id" = i64, Path, description = "The comment")),
    security(("bearer" = [])),
    responses((status = 204, description = "deleted"), ActionErrors))]
async fn delete_comment(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((track_id, comment_id)): Path<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    auth.require_user_token()?;
    let track = load_openable(&state, track_id, auth.user_id).await?;
    let author: Option<(i64,)> =
        sqlx::query_as("SELECT user_id FROM track_comments WHERE id = $1 AND track_id = $2")
            .bind(comment_id)
            .bind(track_id)
            .fetch_optional(&state.db.pool)
            .await?;
    let (author_user_id,) = author.ok_or_else(|| ApiError::not_found("no such comment"))?;
    if author_user_id != auth.user_id && track.owner_user_id != auth.user_id {
        return Err(ApiError::forbidden(
            "only the comment's author or the track's owner may delete it",
        ));
    }
    let mut transaction = state.db.begin_write().await?;
    sqlx::query("DELETE FROM track_comments WHERE id = $1 AND track_id = $2")
        .bind(comment_id)
        .bind(track_id)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
