//! The feed: tracks uploaded or reposted by the people the caller follows,
//! newest first by the time of the upload or repost.
//!
//! Only public, processed tracks appear (unlisted and private ones never,
//! whoever follows whom). A track appears once, as its newest event among
//! the people followed: an upload (at its `created_at_ms`) or a repost (at
//! the repost's time); on equal times an upload wins over a repost, and of
//! reposts the lowest user id. The feed is ordered by `(at_ms, track_id)`
//! descending and paged by that pair ([`super::page_cursor`]), so a page
//! never repeats a track of an earlier page: a track's newest event only
//! moves forward in time, above any cursor already handed out. (A track
//! reposted again after a page was read shows at the top of a fresh feed.)
//!
//! The work is bounded by the people followed
//! (`social.following_per_user_max`) and their uploads and reposts.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page_cursor::{parse_after, PageCursor};
use super::responses::ReadErrors;
use super::visibility::{TrackSummary, TRACK_SUMMARY_COLUMNS};
use crate::accounts::Authenticated;
use crate::error::{ApiError, Json};
use crate::rooms::request::{page_limit, Query};
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_feed))
}

/// What brought a track into the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FeedItemType {
    /// Someone the caller follows uploaded it.
    Upload,
    /// Someone the caller follows reposted it.
    Repost,
}

/// One track of the feed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedItem {
    /// Upload or repost.
    #[serde(rename = "type")]
    pub item_type: FeedItemType,
    /// Who uploaded or reposted it.
    pub by_user_id: i64,
    /// When (Unix ms).
    pub at_ms: i64,
    /// The track.
    pub track: TrackSummary,
}

#[derive(sqlx::FromRow)]
struct FeedRow {
    kind_rank: i64,
    by_user_id: i64,
    at_ms: i64,
    #[sqlx(flatten)]
    track: TrackSummary,
}

/// A page of the feed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedPage {
    /// The tracks, newest event first.
    pub items: Vec<FeedItem>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<String>,
}

/// Query of `GET /v1/feed`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The `next_after` of the previous page (absent: the newest).
    #[param(pattern = "^-?[0-9]+_-?[0-9]+$")]
    pub after: Option<String>,
    /// Page size, 1 to `social.page_items_max` (larger values are reduced).
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

/// Every upload (`kind_rank` 0) and repost (1) of a public, processed track
/// by someone `$1` follows; then each track's newest event; then the page
/// after the cursor (`$2`, `$3`), at most `$4` rows.
const FEED_SQL: &str = "WITH events AS ( \
       SELECT t.id AS track_id, CAST(0 AS BIGINT) AS kind_rank, t.owner_user_id AS by_user_id, t.created_at_ms AS at_ms \
       FROM follows f JOIN tracks t ON t.owner_user_id = f.followee_user_id \
       WHERE f.follower_user_id = $1 AND t.status = 'ready' AND t.visibility = 'public' \
     UNION ALL \
       SELECT r.track_id, CAST(1 AS BIGINT) AS kind_rank, r.user_id AS by_user_id, r.created_at_ms AS at_ms \
       FROM follows f JOIN track_reposts r ON r.user_id = f.followee_user_id \
         JOIN tracks t ON t.id = r.track_id \
       WHERE f.follower_user_id = $1 AND t.status = 'ready' AND t.visibility = 'public' \
     ), newest AS ( \
       SELECT e.track_id, e.kind_rank, e.by_user_id, e.at_ms, ROW_NUMBER() OVER ( \
         PARTITION BY e.track_id ORDER BY e.at_ms DESC, e.kind_rank, e.by_user_id) AS event_rank \
       FROM events e \
     ) \
     SELECT n.kind_rank, n.by_user_id, n.at_ms, {columns} \
     FROM newest n JOIN tracks t ON t.id = n.track_id \
     WHERE n.event_rank = 1 AND (n.at_ms < $2 OR (n.at_ms = $2 AND n.track_id < $3)) \
     ORDER BY n.at_ms DESC, n.track_id DESC LIMIT $4";

/// The caller's feed: public, processed tracks uploaded or reposted by the
/// people they follow, newest first, each track once.
#[utoipa::path(get, path = "/v1/feed", tag = "social",
    params(FeedQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of the feed", body = FeedPage), ReadErrors))]
async fn get_feed(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<FeedQuery>,
) -> Result<Json<FeedPage>, ApiError> {
    auth.require_user_token()?;
    let config = &state.config.social;
    let limit = page_limit(
        query.limit,
        config.page_items_default,
        config.page_items_max,
    )?;
    let cursor = parse_after(query.after.as_deref())?.unwrap_or(PageCursor {
        time_ms: i64::MAX,
        id: i64::MAX,
    });
    let rows: Vec<FeedRow> = sqlx::query_as(&FEED_SQL.replace("{columns}", TRACK_SUMMARY_COLUMNS))
        .bind(auth.user_id)
        .bind(cursor.time_ms)
        .bind(cursor.id)
        .bind(limit + 1)
        .fetch_all(&state.db.pool)
        .await?;
    let mut items: Vec<FeedItem> = rows
        .into_iter()
        .map(|row| FeedItem {
            item_type: if row.kind_rank == 0 {
                FeedItemType::Upload
            } else {
                FeedItemType::Repost
            },
            by_user_id: row.by_user_id,
            at_ms: row.at_ms,
            track: row.track,
        })
        .collect();
    let next_after = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|item| {
            PageCursor {
                time_ms: item.at_ms,
                id: item.track.id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(FeedPage { items, next_after }))
}
