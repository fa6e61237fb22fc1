//! The recording routes: a stream's recordings, newest first, and the audio
//! of a completed one. Only the stream's owner sees them; for others the
//! stream answers as the stream routes do (404 when they cannot see it, 403
//! when they can but do not own it).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::recorder::RecordingStatus;
use super::stream::{load_visible, StreamRow};
use crate::accounts::Authenticated;
use crate::error::{ApiError, Json};
use crate::rooms::request::Path;
use crate::rooms::responses::error_responses;
use crate::state::AppState;

/// Bytes read from the file per body chunk.
const AUDIO_READ_BYTES: usize = 64 * 1024;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_recordings))
        .routes(routes!(recording_audio))
}

/// One recording of a broadcast.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordingView {
    /// The recording's id (in `/recordings/{id}/audio`).
    pub id: i64,
    /// The data plane's id of the broadcast (its start time in Unix ms).
    pub recording_id: i64,
    /// Unix ms of the first chunk.
    pub started_at_ms: i64,
    /// Unix ms of completion; null unless `complete`.
    pub ended_at_ms: Option<i64>,
    /// Bytes written so far (the file's size once complete).
    pub bytes: i64,
    /// `recording`, `complete` (the audio can be fetched) or `interrupted`
    /// (over `live.recording_bytes_max`, or the broadcast ended while the
    /// control plane was away).
    #[schema(pattern = "^(recording|complete|interrupted)$")]
    pub status: String,
}

/// A stream's recordings, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordingList {
    /// The recordings.
    pub recordings: Vec<RecordingView>,
}

#[derive(sqlx::FromRow)]
struct RecordingRow {
    id: i64,
    recording_id: i64,
    started_at_ms: i64,
    ended_at_ms: Option<i64>,
    bytes: i64,
    status: String,
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

const BAD_REQUEST: (u16, &str) = (400, "a path parameter of the wrong type");
const UNAUTHORIZED: (u16, &str) = (401, "missing, invalid or expired credentials");
const FORBIDDEN: (u16, &str) = (
    403,
    "an API key (streams need a user's access token), or a stream the caller does not own",
);
const NOT_FOUND: (u16, &str) = (
    404,
    "no such stream (a private stream does not exist for anyone but its owner), \
     no such recording, or a recording that is not complete",
);

error_set!(
    /// Reads of recordings.
    RecordingReadErrors: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND
);

/// The stream `name` if the caller owns it: 404 when they cannot see it,
/// 403 when they can but do not own it.
async fn load_owned(state: &AppState, name: &str, caller_id: i64) -> Result<StreamRow, ApiError> {
    let row = load_visible(state, name, caller_id).await?;
    if row.owner_user_id != caller_id {
        return Err(ApiError::forbidden(
            "only the stream's owner may see its recordings",
        ));
    }
    Ok(row)
}

/// Lists a stream's recordings, newest first (the owner only).
#[utoipa::path(get, path = "/v1/streams/{name}/recordings", tag = "streams",
    params(("name" = String, Path, description = "The stream's name")),
    security(("bearer" = [])),
    responses((status = 200, description = "the recordings, newest first", body = RecordingList),
        RecordingReadErrors))]
async fn list_recordings(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(name): Path<String>,
) -> Result<Json<RecordingList>, ApiError> {
    auth.require_user_token()?;
    let stream = load_owned(&state, &name, auth.user_id).await?;
    let rows: Vec<RecordingRow> = sqlx::query_as(
        "SELECT id, recording_id, started_at_ms, ended_at_ms, bytes, status \
         FROM live_recordings WHERE stream_id = $1 ORDER BY started_at_ms DESC, id DESC",
    )
    .bind(stream.id)
    .fetch_all(&state.db.pool)
    .await?;
    let recordings = rows
        .into_iter()
        .map(|row| RecordingView {
            id: row.id,
            recording_id: row.recording_id,
            started_at_ms: row.started_at_ms,
            ended_at_ms: row.ended_at_ms,
            bytes: row.bytes,
            status: row.status,
        })
        .collect();
    Ok(Json(RecordingList { recordings }))
}

/// The Ogg Opus audio of a completed recording (the owner only), streamed
/// from the file with its length; 404 while it is not complete.
#[utoipa::path(get, path = "/v1/streams/{name}/recordings/{id}/audio", tag = "streams",
    params(("name" = String, Path, description = "The stream's name"),
        ("id" = i64, Path, description = "The recording's id (`id` in the list)")),
    security(("bearer" = [])),
    responses((status = 200, description = "the recording, Ogg Opus", content_type = "audio/ogg",
            body = Vec<u8>),
        RecordingReadErrors))]
async fn recording_audio(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((name, recording_row_id)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    auth.require_user_token()?;
    let stream = load_owned(&state, &name, auth.user_id).await?;
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT status, path FROM live_recordings WHERE id = $1 AND stream_id = $2")
            .bind(recording_row_id)
            .bind(stream.id)
            .fetch_optional(&state.db.pool)
            .await?;
    let Some((status, relative_path)) = row else {
        return Err(ApiError::not_found("no such recording"));
    };
    if status != RecordingStatus::Complete.as_str() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "recording_not_complete",
            format!("the recording is {status}; only a complete recording has audio"),
        ));
    }
    let file = tokio::fs::File::open(state.config.data_dir().join(&relative_path))
        .await
        .map_err(ApiError::internal)?;
    let length = file.metadata().await.map_err(ApiError::internal)?.len();
    // Read in bounded chunks as the client takes them, so a recording of
    // gigabytes never sits in memory.
    let chunks = stream::try_unfold(file, |mut file| async move {
        let mut buffer = vec![0; AUDIO_READ_BYTES];
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buffer.truncate(read);
        Ok(Some((Bytes::from(buffer), file)))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "audio/ogg".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}
