//! The live stream routes: create (the key is shown once), get, list (public
//! streams, or the caller's), change, rotate the key, delete.
//!
//! Visibility: a public stream is visible to anyone authenticated, a private
//! one only to its owner; for everyone else a private stream does not exist
//! (404, never 403, so names of private streams do not leak). Changing a
//! stream someone else owns and can see answers 403.
//!
//! Every route needs a user's own access token: API keys have no streams
//! scope (a stream key is a credential, so minting one stays with the user).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{is_valid_stream_name, stream_key, LiveConfig};
use crate::accounts::{store, Authenticated};
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::rooms::request::{check_text, page_limit, JsonObject, Path, Query};
use crate::rooms::responses::error_responses;
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_stream, list_streams))
        .routes(routes!(get_stream, update_stream, delete_stream))
        .routes(routes!(rotate_stream_key))
}

/// A JSON object, as `dsp` is given and returned.
type JsonMap = serde_json::Map<String, serde_json::Value>;

/// A live stream as anyone who may see it sees it (never with its key).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamView {
    /// The stream id.
    pub id: i64,
    /// The name, as in `/v1/live/{name}`.
    pub name: String,
    /// The owner.
    pub owner_user_id: i64,
    /// The title (may be empty).
    pub title: String,
    /// The description (may be empty).
    pub description: String,
    /// The genre (may be empty).
    pub genre: String,
    /// Visible to everyone; a private stream is visible to its owner only.
    pub is_public: bool,
    /// Broadcasts are recorded into a track.
    pub recording_enabled: bool,
    /// The DSP chain for raw PCM sources as given; null: the defaults.
    #[schema(value_type = Option<Object>)]
    pub dsp: Option<JsonMap>,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms of the last change (settings or key).
    pub updated_at_ms: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct StreamRow {
    pub(super) id: i64,
    name: String,
    pub(super) owner_user_id: i64,
    title: String,
    description: String,
    genre: String,
    is_public: i64,
    recording_enabled: i64,
    dsp_config_json: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

/// The columns of [`StreamRow`]; the key's hash is never among them.
const STREAM_COLUMNS: &str = "id, name, owner_user_id, title, description, genre, is_public, \
    recording_enabled, dsp_config_json, created_at_ms, updated_at_ms";

impl From<StreamRow> for StreamView {
    fn from(row: StreamRow) -> Self {
        StreamView {
            id: row.id,
            name: row.name,
            owner_user_id: row.owner_user_id,
            title: row.title,
            description: row.description,
            genre: row.genre,
            is_public: row.is_public != 0,
            recording_enabled: row.recording_enabled != 0,
            // Stored only from a JSON object, so parsing fails only for the
            // empty text that means "the defaults".
            dsp: serde_json::from_str(&row.dsp_config_json).ok(),
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        }
    }
}

/// A new stream with its key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedStream {
    /// The stream.
    #[serde(flatten)]
    pub stream: StreamView,
    /// The stream key (`vzs_...`) a source broadcasts with; shown only now
    /// and on rotation.
    pub stream_key: String,
}

/// A new key of a stream.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotatedStreamKey {
    /// The new stream key (`vzs_...`), shown only now; the previous key no
    /// longer authorises a source.
    pub stream_key: String,
}

/// A page of streams, by ascending id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamPage {
    /// The streams.
    pub streams: Vec<StreamView>,
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
    "malformed JSON, a name outside ^[a-z0-9][a-z0-9_-]{0,63}$, or a query parameter of the wrong type",
);
const UNAUTHORIZED: (u16, &str) = (401, "missing, invalid or expired credentials");
const FORBIDDEN: (u16, &str) = (
    403,
    "an API key (streams need a user's access token), or a stream the caller does not own",
);
const NOT_FOUND: (u16, &str) = (
    404,
    "no such stream (a private stream does not exist for anyone but its owner)",
);
const CONFLICT: (u16, &str) = (
    409,
    "`stream_name_taken`, or `too_many_streams` (live.streams_per_user_max)",
);
const TOO_LARGE: (u16, &str) = (413, "the body is over server.request_body_bytes_max");
const NOT_JSON: (u16, &str) = (415, "the body is not application/json");
const INVALID: (u16, &str) = (
    422,
    "well-formed JSON or parameters with refused values (the detail names the field)",
);

error_set!(
    /// Reads of streams.
    StreamReadErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, INVALID
);
error_set!(
    /// Creating a stream.
    StreamCreateErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, CONFLICT, TOO_LARGE, NOT_JSON, INVALID
);
error_set!(
    /// Changing a stream's settings.
    StreamUpdateErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, TOO_LARGE, NOT_JSON, INVALID
);
error_set!(
    /// Actions on a stream without a body.
    StreamActionErrors: UNAUTHORIZED, FORBIDDEN, NOT_FOUND
);

/// 400 unless `name` follows the stream name rule.
fn check_name(name: &str) -> Result<(), ApiError> {
    if is_valid_stream_name(name) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_stream_name",
        "name must match ^[a-z0-9][a-z0-9_-]{0,63}$: 1 to 64 lower-case letters, digits, \
         '_' or '-', starting with a letter or digit",
    ))
}

/// The trimmed `text` of `field`, refused (422) past `chars_max` or with
/// control characters.
fn check_field(field: &str, text: &str, chars_max: usize) -> Result<String, ApiError> {
    let text = text.trim();
    check_text(field, text, chars_max)?;
    Ok(text.to_string())
}

/// `dsp` serialised for storage, refused (422) past
/// `live.dsp_config_bytes_max`. Its meaning is the data plane's codec's
/// business (it validates it before use), so it is stored as given.
fn check_dsp(config: &LiveConfig, dsp: &JsonMap) -> Result<String, ApiError> {
    let text = serde_json::to_string(dsp).map_err(ApiError::internal)?;
    if text.len() > config.dsp_config_bytes_max {
        return Err(ApiError::validation(format!(
            "dsp is {} bytes as JSON; at most {} are allowed (live.dsp_config_bytes_max)",
            text.len(),
            config.dsp_config_bytes_max
        )));
    }
    Ok(text)
}

/// The stream `name` if `viewer_id` may see it; otherwise 404.
pub(super) async fn load_visible(
    state: &AppState,
    name: &str,
    viewer_id: i64,
) -> Result<StreamRow, ApiError> {
    let not_found = || ApiError::not_found("no such stream");
    if !is_valid_stream_name(name) {
        return Err(not_found());
    }
    let row: Option<StreamRow> = sqlx::query_as(&format!(
        "SELECT {STREAM_COLUMNS} FROM live_streams WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(&state.db.pool)
    .await?;
    row.filter(|row| row.is_public != 0 || row.owner_user_id == viewer_id)
        .ok_or_else(not_found)
}

/// The stream `name` if `caller_id` owns it: 404 when the caller cannot see
/// it, 403 when they can but do not own it.
async fn load_owned(state: &AppState, name: &str, caller_id: i64) -> Result<StreamRow, ApiError> {
    let row = load_visible(state, name, caller_id).await?;
    if row.owner_user_id != caller_id {
        return Err(ApiError::forbidden("only the stream's owner may change it"));
    }
    Ok(row)
}

async fn load_by_id(state: &AppState, stream_id: i64) -> Result<StreamView, ApiError> {
    let row: Option<StreamRow> = sqlx::query_as(&format!(
        "SELECT {STREAM_COLUMNS} FROM live_streams WHERE id = $1"
    ))
    .bind(stream_id)
    .fetch_optional(&state.db.pool)
    .await?;
    row.map(StreamView::from)
        .ok_or_else(|| ApiError::not_found("no such stream"))
}

/// `POST /v1/streams`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// The name in `/v1/live/{name}`: 1 to 64 of `[a-z0-9_-]`, starting
    /// with a letter or digit; unique.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub name: String,
    /// Up to `live.title_chars_max` characters (default empty).
    #[serde(default)]
    pub title: Option<String>,
    /// Up to `live.description_chars_max` characters (default empty).
    #[serde(default)]
    pub description: Option<String>,
    /// Up to `live.genre_chars_max` characters (default empty).
    #[serde(default)]
    pub genre: Option<String>,
    /// Visible to everyone (default true).
    #[serde(default)]
    pub is_public: Option<bool>,
    /// Record broadcasts into a track (default false).
    #[serde(default)]
    pub recording_enabled: Option<bool>,
    /// The DSP chain for raw PCM sources: a JSON object of at most
    /// `live.dsp_config_bytes_max` bytes, stored as given and validated by
    /// the data plane. Absent or null: the defaults.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub dsp: Option<JsonMap>,
}

/// Creates a live stream owned by the caller; the answer holds its stream
/// key, shown only here (and on rotation).
///
/// Past `live.streams_per_user_max` the answer is 409 `too_many_streams`,
/// not 422: the request is valid, it conflicts with what the caller already
/// owns, and the same request succeeds once they delete a stream (as with
/// rooms and API keys).
#[utoipa::path(post, path = "/v1/streams", tag = "streams",
    request_body = CreateStream,
    security(("bearer" = [])),
    responses((status = 201, description = "created; the key is in the body, once", body = CreatedStream),
        StreamCreateErrors))]
async fn create_stream(
    State(state): State<AppState>,
    auth: Authenticated,
    JsonObject(request): JsonObject<CreateStream>,
) -> Result<(StatusCode, Json<CreatedStream>), ApiError> {
    auth.require_user_token()?;
    let config = &state.config.live;
    check_name(&request.name)?;
    let title = check_field(
        "title",
        request.title.as_deref().unwrap_or(""),
        config.title_chars_max,
    )?;
    let description = check_field(
        "description",
        request.description.as_deref().unwrap_or(""),
        config.description_chars_max,
    )?;
    let genre = check_field(
        "genre",
        request.genre.as_deref().unwrap_or(""),
        config.genre_chars_max,
    )?;
    let dsp_config_json = match &request.dsp {
        Some(dsp) => check_dsp(config, dsp)?,
        None => String::new(),
    };
    let stream_key = stream_key::generate();
    let mut transaction = state.db.begin_write().await?;
    let (owned,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM live_streams WHERE owner_user_id = $1")
            .bind(auth.user_id)
            .fetch_one(&mut *transaction)
            .await?;
    if owned >= config.streams_per_user_max {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_streams",
            format!(
                "you already own {owned} streams, the most allowed (live.streams_per_user_max); delete one first"
            ),
        ));
    }
    let now = now_ms();
    let inserted: Result<(i64,), sqlx::Error> = sqlx::query_as(
        "INSERT INTO live_streams (name, owner_user_id, title, description, genre, is_public, \
           recording_enabled, stream_key_hash, dsp_config_json, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id",
    )
    .bind(&request.name)
    .bind(auth.user_id)
    .bind(&title)
    .bind(&description)
    .bind(&genre)
    .bind(i64::from(request.is_public.unwrap_or(true)))
    .bind(i64::from(request.recording_enabled.unwrap_or(false)))
    .bind(stream_key::hash(&stream_key))
    .bind(&dsp_config_json)
    .bind(now)
    .fetch_one(&mut *transaction)
    .await;
    let stream_id = match inserted {
        Ok((stream_id,)) => stream_id,
        Err(error) if store::is_unique_violation(&error) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "stream_name_taken",
                format!("a stream named {:?} exists already", request.name),
            ));
        }
        Err(error) => return Err(error.into()),
    };
    transaction.commit().await?;
    tracing::info!(stream_id, name = %request.name, owner_user_id = auth.user_id, "live stream created");
    let stream = load_by_id(&state, stream_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedStream { stream, stream_key }),
    ))
}

/// Whose streams to list.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamOwner {
    /// The caller's streams, public and private.
    Me,
}

/// Query of `GET /v1/streams`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListStreamsQuery {
    /// `me`: the caller's streams, public and private. Absent: every stream
    /// the caller may see (the public ones and the caller's own).
    #[param(inline)]
    pub owner: Option<StreamOwner>,
    /// Streams with ids above this one (the `next_after` of the previous page).
    pub after: Option<i64>,
    /// Page size, 1 to `live.page_items_max` (larger values are reduced).
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

/// Lists the caller's streams (`owner=me`), or every stream the caller may
/// see (public ones and the caller's own).
#[utoipa::path(get, path = "/v1/streams", tag = "streams",
    params(ListStreamsQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of streams", body = StreamPage), StreamReadErrors))]
async fn list_streams(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<ListStreamsQuery>,
) -> Result<Json<StreamPage>, ApiError> {
    auth.require_user_token()?;
    let config = &state.config.live;
    let limit = page_limit(
        query.limit,
        config.page_items_default,
        config.page_items_max,
    )?;
    let filter = match query.owner {
        Some(StreamOwner::Me) => "owner_user_id = $1",
        None => "(is_public = 1 OR owner_user_id = $1)",
    };
    let rows: Vec<StreamRow> = sqlx::query_as(&format!(
        "SELECT {STREAM_COLUMNS} FROM live_streams WHERE {filter} AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(auth.user_id)
    .bind(query.after.unwrap_or(0))
    .bind(limit + 1)
    .fetch_all(&state.db.pool)
    .await?;
    let mut streams: Vec<StreamView> = rows.into_iter().map(StreamView::from).collect();
    let next_after = if streams.len() as i64 > limit {
        streams.truncate(limit as usize);
        streams.last().map(|stream| stream.id)
    } else {
        None
    };
    Ok(Json(StreamPage {
        streams,
        next_after,
    }))
}

/// Gets a stream (without its key): public streams for anyone, private ones
/// for their owner.
#[utoipa::path(get, path = "/v1/streams/{name}", tag = "streams",
    params(("name" = String, Path, description = "The stream's name")),
    security(("bearer" = [])),
    responses((status = 200, description = "the stream", body = StreamView), StreamReadErrors))]
async fn get_stream(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(name): Path<String>,
) -> Result<Json<StreamView>, ApiError> {
    auth.require_user_token()?;
    Ok(Json(
        load_visible(&state, &name, auth.user_id).await?.into(),
    ))
}

/// `PATCH /v1/streams/{name}`: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStream {
    /// New title (empty clears it).
    #[serde(default)]
    pub title: Option<String>,
    /// New description (empty clears it).
    #[serde(default)]
    pub description: Option<String>,
    /// New genre (empty clears it).
    #[serde(default)]
    pub genre: Option<String>,
    /// Public or private.
    #[serde(default)]
    pub is_public: Option<bool>,
    /// Record broadcasts or not.
    #[serde(default)]
    pub recording_enabled: Option<bool>,
    /// A new DSP chain (a JSON object); null: back to the defaults; absent:
    /// unchanged.
    #[serde(default, deserialize_with = "present_or_null")]
    #[schema(value_type = Option<Object>)]
    pub dsp: Option<Option<JsonMap>>,
}

/// Tells a field given as `null` (`Some(None)`) from an absent one (`None`,
/// through `#[serde(default)]`).
fn present_or_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Changes a stream's settings (the owner only). Takes effect for the next
/// broadcast; one in progress keeps the settings it started with.
#[utoipa::path(patch, path = "/v1/streams/{name}", tag = "streams",
    params(("name" = String, Path, description = "The stream's name")),
    request_body = UpdateStream,
    security(("bearer" = [])),
    responses((status = 200, description = "the changed stream", body = StreamView), StreamUpdateErrors))]
async fn update_stream(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(name): Path<String>,
    JsonObject(request): JsonObject<UpdateStream>,
) -> Result<Json<StreamView>, ApiError> {
    auth.require_user_token()?;
    let config = &state.config.live;
    let stream = load_owned(&state, &name, auth.user_id).await?;
    let optional_field = |field: &str, text: &Option<String>, chars_max: usize| {
        text.as_deref()
            .map(|text| check_field(field, text, chars_max))
            .transpose()
    };
    let title = optional_field("title", &request.title, config.title_chars_max)?;
    let description = optional_field(
        "description",
        &request.description,
        config.description_chars_max,
    )?;
    let genre = optional_field("genre", &request.genre, config.genre_chars_max)?;
    let dsp_config_json = match &request.dsp {
        None => None,
        Some(None) => Some(String::new()),
        Some(Some(dsp)) => Some(check_dsp(config, dsp)?),
    };
    let mut transaction = state.db.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE live_streams SET title = COALESCE($3, title), \
           description = COALESCE($4, description), genre = COALESCE($5, genre), \
           is_public = COALESCE($6, is_public), recording_enabled = COALESCE($7, recording_enabled), \
           dsp_config_json = COALESCE($8, dsp_config_json), updated_at_ms = $9 \
         WHERE id = $1 AND owner_user_id = $2",
    )
    .bind(stream.id)
    .bind(auth.user_id)
    .bind(&title)
    .bind(&description)
    .bind(&genre)
    .bind(request.is_public.map(i64::from))
    .bind(request.recording_enabled.map(i64::from))
    .bind(&dsp_config_json)
    .bind(now_ms())
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    transaction.commit().await?;
    if updated == 0 {
        return Err(ApiError::not_found("no such stream (it was deleted)"));
    }
    Ok(Json(load_by_id(&state, stream.id).await?))
}

/// Gives a stream a new key (the owner only). From this answer on the
/// previous key authorises no source; a broadcast already running is not
/// interrupted.
#[utoipa::path(post, path = "/v1/streams/{name}/key", tag = "streams",
    params(("name" = String, Path, description = "The stream's name")),
    security(("bearer" = [])),
    responses((status = 200, description = "the new key, shown once", body = RotatedStreamKey),
        StreamActionErrors))]
async fn rotate_stream_key(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(name): Path<String>,
) -> Result<Json<RotatedStreamKey>, ApiError> {
    auth.require_user_token()?;
    let stream = load_owned(&state, &name, auth.user_id).await?;
    let stream_key = stream_key::generate();
    let mut transaction = state.db.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE live_streams SET stream_key_hash = $3, updated_at_ms = $4 \
         WHERE id = $1 AND owner_user_id = $2",
    )
    .bind(stream.id)
    .bind(auth.user_id)
    .bind(stream_key::hash(&stream_key))
    .bind(now_ms())
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    transaction.commit().await?;
    if updated == 0 {
        return Err(ApiError::not_found("no such stream (it was deleted)"));
    }
    tracing::info!(stream_id = stream.id, name = %stream.name, "live stream key rotated");
    Ok(Json(RotatedStreamKey { stream_key }))
}

/// Deletes a stream (the owner only); its name becomes free.
#[utoipa::path(delete, path = "/v1/streams/{name}", tag = "streams",
    params(("name" = String, Path, description = "The stream's name")),
    security(("bearer" = [])),
    responses((status = 204, description = "deleted"), StreamActionErrors))]
async fn delete_stream(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require_user_token()?;
    let stream = load_owned(&state, &name, auth.user_id).await?;
    let mut transaction = state.db.begin_write().await?;
    let deleted = sqlx::query("DELETE FROM live_streams WHERE id = $1 AND owner_user_id = $2")
        .bind(stream.id)
        .bind(auth.user_id)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
    transaction.commit().await?;
    if deleted == 0 {
        return Err(ApiError::not_found("no such stream (it was deleted)"));
    }
    tracing::info!(stream_id = stream.id, name = %stream.name, "live stream deleted");
    // Its recordings' rows went with it (ON DELETE CASCADE); their files go now.
    super::recorder::remove_stream_files(&state.config.data_dir(), stream.id).await;
    Ok(StatusCode::NO_CONTENT)
}
