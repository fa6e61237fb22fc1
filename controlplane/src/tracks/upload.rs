//! `POST /v1/tracks`: an upload, as a raw body (`audio/*` or
//! `application/octet-stream`, metadata in the query) or as
//! `multipart/form-data` (metadata fields and a `file` part).
//!
//! The body is streamed chunk by chunk to `uploads/{random}.part`, never held
//! in memory, and counted against `tracks.upload_bytes_max` (the route is
//! outside the router's JSON body limit). Order of effects, so that a failed
//! or abandoned upload leaves nothing: a place in the job queue is reserved
//! first (full: 503 before any byte is read); the part file is removed on
//! every exit but success (a guard, so a client hanging up counts too);
//! the file is fsynced, then inside the transaction that inserts the row it
//! is renamed to `originals/{id}` and the directory fsynced, then the commit,
//! then the job takes its reserved place.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::jobs::JobSlot;
use super::track::{check_field, check_tags, owner_view, TrackView, Visibility};
use super::MediaPaths;
use crate::accounts::secret;
use crate::accounts::Authenticated;
use crate::db::now_ms;
use crate::error::{ApiError, Json};
use crate::rooms::request::Query;
use crate::rooms::responses::error_responses;
use crate::state::AppState;

/// Seconds a client is told to wait when the job queue is full.
const QUEUE_FULL_RETRY_AFTER_SECONDS: u64 = 10;

/// Largest text field of a multipart upload, in bytes (a description of
/// `tracks.description_chars_max` characters fits well below it).
const FORM_FIELD_BYTES_MAX: usize = 256 * 1024;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upload_track))
}

/// Metadata of a raw upload, in the query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Up to `tracks.title_chars_max` characters (default empty).
    pub title: Option<String>,
    /// Up to `tracks.description_chars_max` characters (default empty).
    pub description: Option<String>,
    /// Comma-separated tags.
    pub tags: Option<String>,
    /// `public` (default), `unlisted` or `private`.
    #[param(inline)]
    pub visibility: Option<Visibility>,
}

/// A multipart upload (for the OpenAPI document).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// Up to `tracks.title_chars_max` characters.
    title: Option<String>,
    /// Up to `tracks.description_chars_max` characters.
    description: Option<String>,
    /// Comma-separated tags.
    tags: Option<String>,
    /// `public` (default), `unlisted` or `private`.
    visibility: Option<Visibility>,
    /// The audio: WAV, FLAC, MP3, Ogg Vorbis or Ogg Opus.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

const ERRORS: [(u16, &str); 7] = [
    (400, "an empty upload, a multipart body without a `file` part, malformed multipart, or a query parameter of the wrong type"),
    (401, "missing, invalid or expired credentials"),
    (403, "an API key (uploads need a user's access token)"),
    (413, "the upload is over tracks.upload_bytes_max; nothing was kept"),
    (415, "the body is not audio/*, application/octet-stream or multipart/form-data"),
    (422, "metadata with refused values (the detail names the field)"),
    (503, "the processing queue is full (tracks.job_queue_max); retry after Retry-After seconds"),
];

/// Errors of the upload.
pub struct UploadErrors;

impl utoipa::IntoResponses for UploadErrors {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        error_responses(&ERRORS)
    }
}

/// Uploads a track. The answer (202) comes once the upload is stored and
/// queued; processing follows (`status` turns `processing`, then `ready` or
/// `failed`; poll `GET /v1/tracks/{id}`).
#[utoipa::path(post, path = "/v1/tracks", tag = "tracks",
    params(UploadQuery),
    request_body(content(
        (Vec<u8> = "application/octet-stream"),
        (UploadForm = "multipart/form-data"),
    ), description = "the audio as the raw body (`audio/*` or `application/octet-stream`; \
        metadata in the query), or a multipart form with a `file` part"),
    security(("bearer" = [])),
    responses((status = 202, description = "stored and queued for processing", body = TrackView),
        UploadErrors))]
async fn upload_track(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<UploadQuery>,
    request: Request,
) -> Result<(StatusCode, Json<TrackView>), ApiError> {
    auth.require_user_token()?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_multipart = content_type.starts_with("multipart/form-data");
    if !(is_multipart
        || content_type.starts_with("audio/")
        || content_type.starts_with("application/octet-stream"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the audio as audio/*, application/octet-stream or multipart/form-data",
        ));
    }
    let upload_bytes_max = state.config.tracks.upload_bytes_max;
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > upload_bytes_max) {
        return Err(too_large(upload_bytes_max));
    }
    let slot = state.tracks.reserve().ok_or_else(queue_full)?;
    let mut part = PartFile::create(&MediaPaths::new(&state.config)).await?;
    let metadata = if is_multipart {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        receive_form(multipart, &mut part, upload_bytes_max).await?
    } else {
        part.receive_body(request.into_body(), upload_bytes_max)
            .await?;
        query
    };
    if part.bytes == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_upload",
            "the upload holds no bytes",
        ));
    }
    let metadata = Metadata::check(&state, metadata)?;
    let track_id = store(&state, auth.user_id, &metadata, part).await?;
    // The answer shows the track as accepted (`queued`): it is read before
    // a worker can take the job, which is queued when the guard drops (also
    // if this request is cancelled meanwhile).
    let queue_job = QueueOnDrop(Some((slot, track_id)));
    let view = owner_view(&state, track_id, auth.user_id).await;
    drop(queue_job);
    tracing::info!(
        track_id,
        owner_user_id = auth.user_id,
        "track uploaded and queued"
    );
    Ok((StatusCode::ACCEPTED, Json(view?)))
}

/// Queues a stored track's job when dropped.
struct QueueOnDrop(Option<(JobSlot, i64)>);

impl Drop for QueueOnDrop {
    fn drop(&mut self) {
        if let Some((slot, track_id)) = self.0.take() {
            slot.enqueue(track_id);
        }
    }
}

fn too_large(upload_bytes_max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
        format!("the upload is over {upload_bytes_max} bytes (tracks.upload_bytes_max)"),
    )
}

fn queue_full() -> ApiError {
    ApiError {
        retry_after_seconds: Some(QUEUE_FULL_RETRY_AFTER_SECONDS),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "track_queue_full",
            "too many tracks are waiting to be processed (tracks.job_queue_max); retry later",
        )
    }
}

/// Reads a multipart form: text fields into the metadata, `file` into the
/// part file.
async fn receive_form(
    mut multipart: Multipart,
    part: &mut PartFile,
    upload_bytes_max: u64,
) -> Result<UploadQuery, ApiError> {
    let malformed = |error: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(format!("malformed multipart body: {}", error.body_text()))
    };
    let mut metadata = UploadQuery::default();
    let mut has_file = false;
    while let Some(mut field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            if has_file {
                return Err(ApiError::bad_request("only one `file` part is allowed"));
            }
            has_file = true;
            while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                part.write(&chunk, upload_bytes_max).await?;
            }
            continue;
        }
        let mut text = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            if text.len() + chunk.len() > FORM_FIELD_BYTES_MAX {
                return Err(ApiError::validation(format!(
                    "{name} is over {FORM_FIELD_BYTES_MAX} bytes"
                )));
            }
            text.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(text)
            .map_err(|_| ApiError::validation(format!("{name} is not UTF-8")))?;
        match name.as_str() {
            "title" => metadata.title = Some(text),
            "description" => metadata.description = Some(text),
            "tags" => metadata.tags = Some(text),
            "visibility" => {
                metadata.visibility = Some(Visibility::parse(text.trim()).ok_or_else(|| {
                    ApiError::validation("visibility must be public, unlisted or private")
                })?)
            }
            _ => {
                return Err(ApiError::validation(format!(
                    "unknown field {name:?}: expected title, description, tags, visibility and file"
                )))
            }
        }
    }
    if !has_file {
        return Err(ApiError::bad_request("the form has no `file` part"));
    }
    Ok(metadata)
}

/// Checked metadata of a new track.
struct Metadata {
    title: String,
    description: String,
    tags_json: String,
    visibility: Visibility,
}

impl Metadata {
    fn check(state: &AppState, metadata: UploadQuery) -> Result<Self, ApiError> {
        let config = &state.config.tracks;
        let tags: Vec<String> = metadata
            .tags
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::to_string)
            .collect();
        Ok(Self {
            title: check_field(
                "title",
                metadata.title.as_deref().unwrap_or(""),
                config.title_chars_max,
            )?,
            description: check_field(
                "description",
                metadata.description.as_deref().unwrap_or(""),
                config.description_chars_max,
            )?,
            tags_json: check_tags(config, &tags)?,
            visibility: metadata.visibility.unwrap_or(Visibility::Public),
        })
    }
}

/// Inserts the row and moves the upload to `originals/{id}` in one
/// transaction; returns the track id. The caller queues the job.
async fn store(
    state: &AppState,
    owner_user_id: i64,
    metadata: &Metadata,
    part: PartFile,
) -> Result<i64, ApiError> {
    let paths = MediaPaths::new(&state.config);
    let link_secret = base64_url(&secret::random_bytes(16));
    let now = now_ms();
    let mut transaction = state.db.begin_write().await?;
    let (track_id,): (i64,) = sqlx::query_as(
        "INSERT INTO tracks (owner_user_id, title, description, tags, visibility, link_secret, \
           status, progress, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7, $7) RETURNING id",
    )
    .bind(owner_user_id)
    .bind(&metadata.title)
    .bind(&metadata.description)
    .bind(&metadata.tags_json)
    .bind(metadata.visibility.as_str())
    .bind(&link_secret)
    .bind(now)
    .fetch_one(&mut *transaction)
    .await?;
    let original = paths.original(track_id);
    if let Err(error) = part.persist_as(&original, &paths.originals()).await {
        let _ = tokio::fs::remove_file(&original).await;
        return Err(error);
    }
    if let Err(error) = transaction.commit().await {
        // Without its row the original is a stray file.
        let _ = tokio::fs::remove_file(&original).await;
        return Err(error.into());
    }
    Ok(track_id)
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An upload being written to `uploads/{random}.part`; removed when dropped
/// unless persisted.
struct PartFile {
    path: Option<std::path::PathBuf>,
    file: tokio::fs::File,
    bytes: u64,
}

impl PartFile {
    async fn create(paths: &MediaPaths) -> Result<Self, ApiError> {
        let name = format!("{}.part", base64_url(&secret::random_bytes(16)));
        let path = paths.uploads().join(name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|error| {
                ApiError::internal(format!("upload file {}: {error}", path.display()))
            })?;
        Ok(Self {
            path: Some(path),
            file,
            bytes: 0,
        })
    }

    async fn write(&mut self, chunk: &[u8], upload_bytes_max: u64) -> Result<(), ApiError> {
        self.bytes += chunk.len() as u64;
        if self.bytes > upload_bytes_max {
            return Err(too_large(upload_bytes_max));
        }
        self.file
            .write_all(chunk)
            .await
            .map_err(|error| ApiError::internal(format!("writing an upload: {error}")))
    }

    async fn receive_body(&mut self, body: Body, upload_bytes_max: u64) -> Result<(), ApiError> {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| {
                ApiError::bad_request(format!("the upload was cut short: {error}"))
            })?;
            self.write(&chunk, upload_bytes_max).await?;
        }
        Ok(())
    }

    /// Fsyncs the file, renames it to `destination` and fsyncs `directory`,
    /// so the original survives a crash once its row is committed.
    async fn persist_as(
        mut self,
        destination: &std::path::Path,
        directory: &std::path::Path,
    ) -> Result<(), ApiError> {
        let io_error =
            |error: std::io::Error| ApiError::internal(format!("storing an upload: {error}"));
        self.file.flush().await.map_err(io_error)?;
        self.file.sync_all().await.map_err(io_error)?;
        let path = self
            .path
            .clone()
            .expect("a part file has its path until persisted");
        tokio::fs::rename(&path, destination)
            .await
            .map_err(io_error)?;
        self.path = None;
        let directory = directory.to_path_buf();
        tokio::task::spawn_blocking(move || std::fs::File::open(directory)?.sync_all())
            .await
            .map_err(ApiError::internal)?
            .map_err(io_error)
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // One unlink; cheap enough to do on the runtime thread.
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(%error, path = %path.display(), "upload file not removed");
            }
        }
    }
}
