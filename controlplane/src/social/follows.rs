//! Follows: `PUT`/`DELETE /v1/users/{user_id}/follow` (idempotent; following
//! oneself is 422; past `social.following_per_user_max` 409), and the pages
//! of a user's followers and of the people they follow, newest first.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::marks::NewestFirstQuery;
use super::responses::{ActionErrors, ReadErrors};
use super::visibility::require_user;
use crate::accounts::Authenticated;
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::rooms::request::{page_limit, Path, Query};
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(follow_user, unfollow_user))
        .routes(routes!(list_followers))
        .routes(routes!(list_following))
}

/// Follows a user: their uploads and reposts come into the caller's feed.
#[utoipa::path(put, path = "/v1/users/{user_id}/follow", tag = "social",
    params(("user_id" = i64, Path, description = "The user to follow")),
    security(("bearer" = [])),
    responses((status = 204, description = "followed"), ActionErrors))]
async fn follow_user(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(user_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    auth.require_user_token()?;
    if user_id == auth.user_id {
        return Err(ApiError::validation("you cannot follow yourself"));
    }
    require_user(&state, user_id).await?;
    let following_max = state.config.social.following_per_user_max;
    let mut transaction = state.db.begin_write().await?;
    let (following,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM follows WHERE follower_user_id = $1")
            .bind(auth.user_id)
            .fetch_one(&mut *transaction)
            .await?;
    let (already,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM follows WHERE follower_user_id = $1 AND followee_user_id = $2",
    )
    .bind(auth.user_id)
    .bind(user_id)
    .fetch_one(&mut *transaction)
    .await?;
    if already == 0 && following >= following_max {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_follows",
            format!(
                "you follow {following} people, the most allowed (social.following_per_user_max); unfollow someone first"
            ),
        ));
    }
    // Through the users table, so a user deleted since the check adds no row.
    sqlx::query(
        "INSERT INTO follows (follower_user_id, followee_user_id, created_at_ms) \
         SELECT $1, id, $3 FROM users WHERE id = $2 \
         ON CONFLICT (follower_user_id, followee_user_id) DO NOTHING",
    )
    .bind(auth.user_id)
    .bind(user_id)
    .bind(now_ms())
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops following a user (204 also when the caller did not follow them).
#[utoipa::path(delete, path = "/v1/users/{user_id}/follow", tag = "social",
    params(("user_id" = i64, Path, description = "The user to stop following")),
    security(("bearer" = [])),
    responses((status = 204, description = "not followed (any more)"), ActionErrors))]
async fn unfollow_user(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(user_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    auth.require_user_token()?;
    require_user(&state, user_id).await?;
    let mut transaction = state.db.begin_write().await?;
    sqlx::query("DELETE FROM follows WHERE follower_user_id = $1 AND followee_user_id = $2")
        .bind(auth.user_id)
        .bind(user_id)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user in a list of followers or followed people.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct FollowEntry {
    /// The user.
    pub user_id: i64,
    /// Their name.
    pub username: String,
    /// When the follow began (Unix ms).
    pub followed_at_ms: i64,
    /// The paging key (the follow's id).
    #[serde(skip)]
    follow_id: i64,
}

/// A page of users, newest follow first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FollowPage {
    /// The users.
    pub users: Vec<FollowEntry>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

/// Which side of the follows a page lists.
#[derive(Debug, Clone, Copy)]
enum Side {
    /// Who follows the user.
    Followers,
    /// Whom the user follows.
    Following,
}

async fn follow_page(
    state: &AppState,
    user_id: i64,
    side: Side,
    query: NewestFirstQuery,
) -> Result<FollowPage, ApiError> {
    let config = &state.config.social;
    let limit = page_limit(
        query.limit,
        config.page_items_default,
        config.page_items_max,
    )?;
    require_user(state, user_id).await?;
    let (listed, by) = match side {
        Side::Followers => ("follower_user_id", "followee_user_id"),
        Side::Following => ("followee_user_id", "follower_user_id"),
    };
    let mut users: Vec<FollowEntry> = sqlx::query_as(&format!(
        "SELECT u.id AS user_id, u.username, f.created_at_ms AS followed_at_ms, f.id AS follow_id \
         FROM follows f JOIN users u ON u.id = f.{listed} \
         WHERE f.{by} = $1 AND f.id < $2 ORDER BY f.id DESC LIMIT $3"
    ))
    .bind(user_id)
    .bind(query.after.unwrap_or(i64::MAX))
    .bind(limit + 1)
    .fetch_all(&state.db.pool)
    .await?;
    let next_after = if users.len() as i64 > limit {
        users.truncate(limit as usize);
        users.last().map(|user| user.follow_id)
    } else {
        None
    };
    Ok(FollowPage { users, next_after })
}

/// The people who follow a user, newest follower first.
#[utoipa::path(get, path = "/v1/users/{user_id}/followers", tag = "social",
    params(("user_id" = i64, Path, description = "The user"), NewestFirstQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of followers", body = FollowPage), ReadErrors))]
async fn list_followers(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(user_id): Path<i64>,
    Query(query): Query<NewestFirstQuery>,
) -> Result<Json<FollowPage>, ApiError> {
    auth.require_user_token()?;
    Ok(Json(
        follow_page(&state, user_id, Side::Followers, query).await?,
    ))
}

/// The people a user follows, newest follow first.
#[utoipa::path(get, path = "/v1/users/{user_id}/following", tag = "social",
    params(("user_id" = i64, Path, description = "The user"), NewestFirstQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of followed users", body = FollowPage), ReadErrors))]
async fn list_following(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(user_id): Path<i64>,
    Query(query): Query<NewestFirstQuery>,
) -> Result<Json<FollowPage>, ApiError> {
    auth.require_user_token()?;
    Ok(Json(
        follow_page(&state, user_id, Side::Following, query).await?,
    ))
}
