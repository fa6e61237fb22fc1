//! The track routes besides the upload: get, list, change, delete, and a
//! signed audio URL.
//!
//! Visibility: a public or unlisted track is visible to anyone
//! authenticated, a private one only to its owner; for everyone else a
//! private track does not exist (404, never 403, so ids of private tracks
//! say nothing). Changing a track someone else owns and can see answers 403.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{signed_url, MediaPaths, TracksConfig};
use crate::accounts::Authenticated;
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::events::ControlEvent;
use crate::rooms::request::{check_text, page_limit, JsonObject, Path, Query};
use crate::rooms::responses::error_responses;
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tracks))
        .routes(routes!(get_track, update_track, delete_track))
        .routes(routes!(create_signed_url))
}

/// Who may hear a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone.
    Public,
    /// Anyone with the link, which carries the track's link secret.
    Unlisted,
    /// The owner, or a signed URL.
    Private,
}

impl Visibility {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Unlisted => "unlisted",
            Visibility::Private => "private",
        }
    }

    /// The stored name back; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "public" => Some(Visibility::Public),
            "unlisted" => Some(Visibility::Unlisted),
            "private" => Some(Visibility::Private),
            _ => None,
        }
    }
}

/// One rendition as clients see it (the data plane serves it).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RenditionView {
    /// kb/s of the Opus ladder rung.
    pub bitrate_kbps: i64,
    /// The file's size.
    pub size_bytes: i64,
}

/// Where the data plane serves the track.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrackLinks {
    /// The audio (`?s={link_secret}` in the owner's view of an unlisted
    /// track).
    pub audio: String,
    /// The waveform JSON.
    pub waveform: String,
}

/// A track as anyone who may see it sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrackView {
    /// The track id.
    pub id: i64,
    /// The owner.
    pub owner_user_id: i64,
    /// The title (may be empty).
    pub title: String,
    /// The description (may be empty).
    pub description: String,
    /// The tags.
    pub tags: Vec<String>,
    /// Who may hear it.
    pub visibility: Visibility,
    /// `queued`, `processing`, `ready` or `failed`.
    #[schema(pattern = "^(queued|processing|ready|failed)$")]
    pub status: String,
    /// Processing progress, 0 to 1 (1 once ready).
    pub progress: f64,
    /// Why processing failed; null unless `failed`.
    pub failure_reason: Option<String>,
    /// Duration; null until ready.
    pub duration_ms: Option<i64>,
    /// The original's integrated loudness (EBU R128); null until ready.
    pub loudness_lufs: Option<f64>,
    /// The renditions, ascending bitrate; empty until ready.
    pub renditions: Vec<RenditionView>,
    /// Plays the data planes reported.
    pub play_count: i64,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms of the last change.
    pub updated_at_ms: i64,
    /// The secret an unlisted track's link carries; only in the owner's
    /// view of an unlisted track.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_secret: Option<String>,
    /// Where the data plane serves it.
    pub links: TrackLinks,
}

#[derive(sqlx::FromRow)]
pub(super) struct TrackRow {
    pub(super) id: i64,
    pub(super) owner_user_id: i64,
    title: String,
    description: String,
    tags: String,
    pub(super) visibility: String,
    pub(super) link_secret: String,
    status: String,
    failure_reason: Option<String>,
    progress: i64,
    duration_ms: Option<i64>,
    loudness_lufs: Option<f64>,
    play_count: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
}

const TRACK_COLUMNS: &str = "id, owner_user_id, title, description, tags, visibility, \
    link_secret, status, failure_reason, progress, duration_ms, loudness_lufs, play_count, \
    created_at_ms, updated_at_ms";

impl TrackRow {
    pub(super) fn is_visible_to(&self, viewer_id: i64) -> bool {
        self.visibility != "private" || self.owner_user_id == viewer_id
    }
}

/// The row of `track_id`, if any.
pub(super) async fn load_row(
    state: &AppState,
    track_id: i64,
) -> Result<Option<TrackRow>, ApiError> {
    Ok(
        sqlx::query_as(&format!("SELECT {TRACK_COLUMNS} FROM tracks WHERE id = $1"))
            .bind(track_id)
            .fetch_optional(&state.db.pool)
            .await?,
    )
}

/// The track `track_id` if `viewer_id` may see it; otherwise 404.
async fn load_visible(
    state: &AppState,
    track_id: i64,
    viewer_id: i64,
) -> Result<TrackRow, ApiError> {
    load_row(state, track_id)
        .await?
        .filter(|row| row.is_visible_to(viewer_id))
        .ok_or_else(|| ApiError::not_found("no such track"))
}

/// The track if `caller_id` owns it: 404 when they cannot see it, 403 when
/// they can but do not own it.
async fn load_owned(state: &AppState, track_id: i64, caller_id: i64) -> Result<TrackRow, ApiError> {
    let row = load_visible(state, track_id, caller_id).await?;
    if row.owner_user_id != caller_id {
        return Err(ApiError::forbidden("only the track's owner may do this"));
    }
    Ok(row)
}

/// The view of `row` for `viewer_id`, with its renditions.
pub(super) async fn view(
    state: &AppState,
    row: TrackRow,
    viewer_id: i64,
) -> Result<TrackView, ApiError> {
    let renditions: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT bitrate_kbps, size_bytes FROM track_renditions WHERE track_id = $1 \
         ORDER BY bitrate_kbps",
    )
    .bind(row.id)
    .fetch_all(&state.db.pool)
    .await?;
    let shows_secret = row.visibility == "unlisted" && row.owner_user_id == viewer_id;
    let link_secret = shows_secret.then(|| row.link_secret.clone());
    let audio = match &link_secret {
        Some(secret) => format!("/v1/tracks/{}/audio?s={secret}", row.id),
        None => format!("/v1/tracks/{}/audio", row.id),
    };
    Ok(TrackView {
        id: row.id,
        owner_user_id: row.owner_user_id,
        title: row.title,
        description: row.description,
        // Stored only from a JSON array of strings.
        tags: serde_json::from_str(&row.tags).unwrap_or_default(),
        visibility: Visibility::parse(&row.visibility).unwrap_or(Visibility::Private),
        status: row.status,
        progress: row.progress as f64 / 1000.0,
        failure_reason: row.failure_reason,
        duration_ms: row.duration_ms,
        loudness_lufs: row.loudness_lufs,
        renditions: renditions
            .into_iter()
            .map(|(bitrate_kbps, size_bytes)| RenditionView {
                bitrate_kbps,
                size_bytes,
            })
            .collect(),
        play_count: row.play_count,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
        link_secret,
        links: TrackLinks {
            audio,
            waveform: format!("/v1/tracks/{}/waveform", row.id),
        },
    })
}

/// The track `track_id` as its owner sees it.
pub(super) async fn owner_view(
    state: &AppState,
    track_id: i64,
    owner_id: i64,
) -> Result<TrackView, ApiError> {
    let row = load_row(state, track_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such track (it was deleted)"))?;
    view(state, row, owner_id).await
}

/// The trimmed `text` of `field`, refused (422) past `chars_max` or with
/// control characters.
pub(super) fn check_field(field: &str, text: &str, chars_max: usize) -> Result<String, ApiError> {
    let text = text.trim();
    check_text(field, text, chars_max)?;
    Ok(text.to_string())
}

/// Tags as stored (a JSON array): trimmed, empty ones dropped, at most
/// `tracks.tags_max` of at most `tracks.tag_chars_max` characters.
pub(super) fn check_tags(config: &TracksConfig, tags: &[String]) -> Result<String, ApiError> {
    let mut checked = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = check_field("tags", tag, config.tag_chars_max)?;
        if !tag.is_empty() && !checked.contains(&tag) {
            checked.push(tag);
        }
    }
    if checked.len() > config.tags_max {
        return Err(ApiError::validation(format!(
            "at most {} tags are allowed (tracks.tags_max)",
            config.tags_max
        )));
    }
    serde_json::to_string(&checked).map_err(ApiError::internal)
}

/// A page of tracks, by ascending id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrackPage {
    /// The tracks.
    pub tracks: Vec<TrackView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

macro_rules! error_set {
    ($(#[$doc:meta])* $name:ident: $($status:expr),+) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                error_responses(&[$($status),+])
            }
        }
    };
}

const BAD_REQUEST: (u16, &str) = (
    400,
    "malformed JSON, or a path or query parameter of the wrong type",
);
const UNAUTHORIZED: (u16, &str) = (401, "missing, invalid or expired credentials");
const FORBIDDEN: (u16, &str) = (
    403,
    "an API key (tracks need a user's access token), or a track the caller does not own",
);
const NOT_FOUND: (u16, &str) = (
    404,
    "no such track (a private track does not exist for anyone but its owner)",
);
const TOO_LARGE: (u16, &str) = (413, "the body is over server.request_body_bytes_max");
const NOT_JSON: (u16, &str) = (415, "the body is not application/json");
const INVALID: (u16, &str) = (
    422,
    "well-formed JSON or parameters with refused values (the detail names the field)",
);

error_set!(
    /// Reads of tracks.
    TrackReadErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, INVALID
);
error_set!(
    /// Changes of a track with a JSON body.
    TrackUpdateErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, TOO_LARGE, NOT_JSON, INVALID
);
error_set!(
    /// Actions on a track without a body.
    TrackActionErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND
);

/// Whose tracks to list.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrackOwner {
    /// The caller's tracks, whatever their visibility or status.
    Me,
}

/// Query of `GET /v1/tracks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTracksQuery {
    /// `me`: the caller's tracks. Absent: public tracks that are ready, and
    /// the caller's own.
    #[param(inline)]
    pub owner: Option<TrackOwner>,
    /// Tracks with ids above this one (the `next_after` of the previous page).
    pub after: Option<i64>,
    /// Page size, 1 to `tracks.page_items_max` (larger values are reduced).
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

/// Lists the caller's tracks (`owner=me`), or every track the caller may
/// find (ready public ones and the caller's own).
#[utoipa::path(get, path = "/v1/tracks", tag = "tracks",
    params(ListTracksQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of tracks", body = TrackPage), TrackReadErrors))]
async fn list_tracks(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<ListTracksQuery>,
) -> Result<Json<TrackPage>, ApiError> {
    auth.require_user_token()?;
    let config = &state.config.tracks;
    let limit = page_limit(
        query.limit,
        config.page_items_default,
        config.page_items_max,
    )?;
    let filter = match query.owner {
        Some(TrackOwner::Me) => "owner_user_id = $1",
        None => "((visibility = 'public' AND status = 'ready') OR owner_user_id = $1)",
    };
    let rows: Vec<TrackRow> = sqlx::query_as(&format!(
        "SELECT {TRACK_COLUMNS} FROM tracks WHERE {filter} AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(auth.user_id)
    .bind(query.after.unwrap_or(0))
    .bind(limit + 1)
    .fetch_all(&state.db.pool)
    .await?;
    let has_more = rows.len() as i64 > limit;
    let mut tracks = Vec::with_capacity(rows.len());
    for row in rows.into_iter().take(limit as usize) {
        tracks.push(view(&state, row, auth.user_id).await?);
    }
    let next_after = if has_more {
        tracks.last().map(|track| track.id)
    } else {
        None
    };
    Ok(Json(TrackPage { tracks, next_after }))
}

/// Gets a track: public and unlisted ones for anyone authenticated, private
/// ones for their owner.
#[utoipa::path(get, path = "/v1/tracks/{id}", tag = "tracks",
    params(("id" = i64, Path, description = "The track's id")),
    security(("bearer" = [])),
    responses((status = 200, description = "the track", body = TrackView), TrackReadErrors))]
async fn get_track(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(track_id): Path<i64>,
) -> Result<Json<TrackView>, ApiError> {
    auth.require_user_token()?;
    let row = load_visible(&state, track_id, auth.user_id).await?;
    Ok(Json(view(&state, row, auth.user_id).await?))
}

/// `PATCH /v1/tracks/{id}`: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTrack {
    /// New title (empty clears it).
    #[serde(default)]
    pub title: Option<String>,
    /// New description (empty clears it).
    #[serde(default)]
    pub description: Option<String>,
    /// New tags (replacing the old ones).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// New visibility; the link secret stays the same.
    #[serde(default)]
    pub visibility: Option<Visibility>,
}

/// Changes a track's metadata (the owner only). Data planes are told
/// (`TrackChanged`), so a visibility change holds for the next request.
#[utoipa::path(patch, path = "/v1/tracks/{id}", tag = "tracks",
    params(("id" = i64, Path, description = "The track's id")),
    request_body = UpdateTrack,
    security(("bearer" = [])),
    responses((status = 200, description = "the changed track", body = TrackView), TrackUpdateErrors))]
async fn update_track(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(track_id): Path<i64>,
    JsonObject(request): JsonObject<UpdateTrack>,
) -> Result<Json<TrackView>, ApiError> {
    auth.require_user_token()?;
    let config = &state.config.tracks;
    let track = load_owned(&state, track_id, auth.user_id).await?;
    let title = request
        .title
        .as_deref()
        .map(|text| check_field("title", text, config.title_chars_max))
        .transpose()?;
    let description = request
        .description
        .as_deref()
        .map(|text| check_field("description", text, config.description_chars_max))
        .transpose()?;
    let tags = request
        .tags
        .as_deref()
        .map(|tags| check_tags(config, tags))
        .transpose()?;
    let mut transaction = state.db.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE tracks SET title = COALESCE($3, title), description = COALESCE($4, description), \
           tags = COALESCE($5, tags), visibility = COALESCE($6, visibility), updated_at_ms = $7 \
         WHERE id = $1 AND owner_user_id = $2",
    )
    .bind(track.id)
    .bind(auth.user_id)
    .bind(&title)
    .bind(&description)
    .bind(&tags)
    .bind(request.visibility.map(Visibility::as_str))
    .bind(now_ms())
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    transaction.commit().await?;
    if updated == 0 {
        return Err(ApiError::not_found("no such track (it was deleted)"));
    }
    state
        .events
        .publish(ControlEvent::TrackChanged { track_id });
    Ok(Json(owner_view(&state, track_id, auth.user_id).await?))
}

/// Deletes a track and its files (the owner only). A track still being
/// processed is deleted too: its worker finds the row gone and removes what
/// it wrote.
#[utoipa::path(delete, path = "/v1/tracks/{id}", tag = "tracks",
    params(("id" = i64, Path, description = "The track's id")),
    security(("bearer" = [])),
    responses((status = 204, description = "deleted"), TrackActionErrors))]
async fn delete_track(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(track_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    auth.require_user_token()?;
    let track = load_owned(&state, track_id, auth.user_id).await?;
    let mut transaction = state.db.begin_write().await?;
    let deleted = sqlx::query("DELETE FROM tracks WHERE id = $1 AND owner_user_id = $2")
        .bind(track.id)
        .bind(auth.user_id)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
    transaction.commit().await?;
    if deleted == 0 {
        return Err(ApiError::not_found("no such track (it was deleted)"));
    }
    tracing::info!(track_id, owner_user_id = auth.user_id, "track deleted");
    // The row (and its renditions, ON DELETE CASCADE) is gone, so no data
    // plane is told about the files from here on; they go now.
    let paths = MediaPaths::new(&state.config);
    let removed =
        tokio::task::spawn_blocking(move || super::jobs::remove_track_files(&paths, track_id))
            .await;
    if let Err(error) = removed {
        tracing::error!(%error, track_id, "removing a deleted track's files failed");
    }
    state
        .events
        .publish(ControlEvent::TrackChanged { track_id });
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/tracks/{id}/signed-url`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedUrlRequest {
    /// Lifetime of the URL, 1 to `tracks.signed_url_seconds_max` seconds.
    #[schema(minimum = 1)]
    pub expires_in_seconds: i64,
}

/// A signed audio URL.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignedUrl {
    /// `/v1/tracks/{id}/audio?exp={unix_s}&kid={kid}&sig={base64url}`, on
    /// the data plane.
    pub url: String,
    /// When it stops working, Unix ms.
    pub expires_at_ms: i64,
}

/// Makes a URL anyone may fetch the track's audio with until it expires
/// (the owner only), whatever the track's visibility. It is signed with the
/// access-token signing key; the data plane verifies it with the public keys
/// it already holds.
#[utoipa::path(post, path = "/v1/tracks/{id}/signed-url", tag = "tracks",
    params(("id" = i64, Path, description = "The track's id")),
    request_body = SignedUrlRequest,
    security(("bearer" = [])),
    responses((status = 200, description = "the signed URL", body = SignedUrl), TrackUpdateErrors))]
async fn create_signed_url(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(track_id): Path<i64>,
    JsonObject(request): JsonObject<SignedUrlRequest>,
) -> Result<Json<SignedUrl>, ApiError> {
    auth.require_user_token()?;
    let seconds_max = state.config.tracks.signed_url_seconds_max as i64;
    if !(1..=seconds_max).contains(&request.expires_in_seconds) {
        return Err(ApiError::validation(format!(
            "expires_in_seconds must be between 1 and {seconds_max} (tracks.signed_url_seconds_max)"
        )));
    }
    let track = load_owned(&state, track_id, auth.user_id).await?;
    let expires_at_s = now_ms() / 1000 + request.expires_in_seconds;
    let (kid, signature) = signed_url::sign(&state, track.id, expires_at_s).await?;
    Ok(Json(SignedUrl {
        url: format!(
            "/v1/tracks/{}/audio?exp={expires_at_s}&kid={kid}&sig={signature}",
            track.id
        ),
        expires_at_ms: expires_at_s * 1000,
    }))
}
