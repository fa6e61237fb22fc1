//! Recording live broadcasts: the control protocol's `AppendRecording`.
//!
//! When a stream's grant had `recording_enabled`, the data plane's owner
//! shard sends the broadcast's highest rendition as whole Ogg pages, one
//! chunk at a time and in order: chunk 0 starts with the OpusHead and
//! OpusTags pages, and the chunk with `last` follows the EOS page. Each
//! recording is one row of `live_recordings` and one file:
//!
//! - while recording: `{data_dir}/recordings/{stream_id}/{recording_id}.opus.part`,
//!   status `recording`;
//! - after `last`: the file is fsynced, renamed to `{recording_id}.opus`,
//!   the directory fsynced, and the row becomes `complete` (with
//!   `ended_at_ms`). Only then is the answer sent, so an answered last
//!   chunk means a recording that survives a crash.
//!
//! Chunk `n` is appended only when the row has `n` chunks; `n == chunks - 1`
//! is a retry of the previous chunk (the data plane timed out waiting) and is
//! answered without writing; anything else is a gap (`BadRequest`). Appends
//! write at the offset the row records (truncating anything past it first),
//! so a chunk written to the file whose row update was lost is simply
//! written again. Chunks are not fsynced one by one: a crash loses at most
//! the unsynced tail of a recording that could not have been completed anyway.
//!
//! A `complete` recording becomes a track of the stream's owner:
//! `crate::tracks::recording_import` imports it right after the last chunk
//! is answered (and at start for any left), and the row keeps the track's id.
//!
//! File I/O runs on tokio's blocking pool (`spawn_blocking`); no async thread
//! ever blocks on the disk.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use veza_proto::control::{RequestError, RequestErrorCode};

use crate::db::{now_ms, Database};
use crate::state::AppState;

/// The directory under `server.data_dir` holding recordings.
pub const RECORDINGS_DIR: &str = "recordings";

/// A recording's state, as stored in `live_recordings.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingStatus {
    /// Chunks are being appended.
    Recording,
    /// The last chunk arrived; the file is final and durable.
    Complete,
    /// It passed `live.recording_bytes_max`, or its broadcast ended while the
    /// control plane was away. The `.part` file is kept.
    Interrupted,
}

impl RecordingStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Recording => "recording",
            RecordingStatus::Complete => "complete",
            RecordingStatus::Interrupted => "interrupted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "recording" => Some(RecordingStatus::Recording),
            "complete" => Some(RecordingStatus::Complete),
            "interrupted" => Some(RecordingStatus::Interrupted),
            _ => None,
        }
    }
}

/// Where one recording's file lives, relative to `server.data_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingFile {
    stream_id: i64,
    recording_id: i64,
}

impl RecordingFile {
    /// The file of `recording_id` of `stream_id`.
    pub fn new(stream_id: i64, recording_id: i64) -> Self {
        Self {
            stream_id,
            recording_id,
        }
    }

    /// `recordings/{stream_id}`.
    pub fn directory(&self) -> PathBuf {
        stream_directory(self.stream_id)
    }

    /// `recordings/{stream_id}/{recording_id}.opus.part`.
    pub fn part_path(&self) -> PathBuf {
        self.directory()
            .join(format!("{}.opus.part", self.recording_id))
    }

    /// `recordings/{stream_id}/{recording_id}.opus`.
    pub fn complete_path(&self) -> PathBuf {
        self.directory().join(format!("{}.opus", self.recording_id))
    }
}

/// `recordings/{stream_id}`, relative to `server.data_dir`.
pub fn stream_directory(stream_id: i64) -> PathBuf {
    Path::new(RECORDINGS_DIR).join(stream_id.to_string())
}

/// One `AppendRecording` request.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The stream.
    pub stream_id: i64,
    /// The recording, unique per stream.
    pub recording_id: i64,
    /// 0, 1, 2, … within the recording.
    pub chunk_idx: u32,
    /// Whole Ogg pages.
    pub data: Vec<u8>,
    /// The broadcast ended.
    pub last: bool,
}

#[derive(sqlx::FromRow)]
struct RecordingRow {
    id: i64,
    bytes: i64,
    chunks: i64,
    status: String,
}

fn bad_request(message: impl Into<String>) -> RequestError {
    RequestError {
        code: RequestErrorCode::BadRequest,
        message: message.into(),
    }
}

fn internal(what: &str, error: impl std::fmt::Display) -> RequestError {
    tracing::error!(%error, what, "recording failed");
    RequestError {
        code: RequestErrorCode::Internal,
        message: format!("{what}: {error}"),
    }
}

fn storage(error: sqlx::Error) -> RequestError {
    internal("recording storage", error)
}

/// Writes `chunk`; returns the recording's bytes so far.
pub async fn append(state: &AppState, chunk: Chunk) -> Result<u64, RequestError> {
    if chunk.stream_id <= 0 || chunk.recording_id < 0 {
        return Err(bad_request(
            "stream_id must be positive and recording_id not negative",
        ));
    }
    let data_dir = state.config.data_dir();
    let bytes_max = state.config.live.recording_bytes_max;
    let file = RecordingFile::new(chunk.stream_id, chunk.recording_id);
    if chunk.chunk_idx == 0 {
        return start(&state.db, &data_dir, bytes_max, &file, chunk).await;
    }
    let row = load(&state.db, &chunk).await?.ok_or_else(|| {
        bad_request(format!(
            "recording {} of stream {} has no chunk 0",
            chunk.recording_id, chunk.stream_id
        ))
    })?;
    let status = RecordingStatus::parse(&row.status).unwrap_or(RecordingStatus::Interrupted);
    let chunk_idx = i64::from(chunk.chunk_idx);
    if chunk_idx == row.chunks - 1 {
        // A retry of the chunk already written: answer as the first time.
        return match (status, chunk.last) {
            (RecordingStatus::Recording, true) => {
                finish(&state.db, &data_dir, &file, &row).await?;
                Ok(row.bytes as u64)
            }
            (RecordingStatus::Interrupted, _) => Err(interrupted_error(&chunk)),
            _ => Ok(row.bytes as u64),
        };
    }
    if status != RecordingStatus::Recording {
        return Err(bad_request(format!(
            "recording {} of stream {} is {}; no chunk may be added",
            chunk.recording_id, chunk.stream_id, row.status
        )));
    }
    if chunk_idx != row.chunks {
        return Err(bad_request(format!(
            "chunk {} of recording {} of stream {}: the next chunk is {}",
            chunk.chunk_idx, chunk.recording_id, chunk.stream_id, row.chunks
        )));
    }
    let bytes_total = row.bytes as u64 + chunk.data.len() as u64;
    if bytes_total > bytes_max {
        interrupt(&state.db, row.id).await?;
        return Err(too_large(&chunk, bytes_max));
    }
    let path = data_dir.join(file.part_path());
    let offset = row.bytes as u64;
    let data = chunk.data;
    blocking(move || write_at(&path, offset, &data, false)).await?;
    let mut transaction = state.db.begin_write().await.map_err(storage)?;
    let updated = sqlx::query(
        "UPDATE live_recordings SET chunks = chunks + 1, bytes = $3, updated_at_ms = $4 \
         WHERE id = $1 AND chunks = $2 AND status = 'recording'",
    )
    .bind(row.id)
    .bind(row.chunks)
    .bind(bytes_total as i64)
    .bind(now_ms())
    .execute(&mut *transaction)
    .await
    .map_err(storage)?
    .rows_affected();
    transaction.commit().await.map_err(storage)?;
    if updated == 0 {
        return Err(bad_request(
            "the recording changed while this chunk was written (two senders?)",
        ));
    }
    if chunk.last {
        let row = RecordingRow {
            bytes: bytes_total as i64,
            chunks: row.chunks + 1,
            ..row
        };
        finish(&state.db, &data_dir, &file, &row).await?;
    }
    Ok(bytes_total)
}

fn interrupted_error(chunk: &Chunk) -> RequestError {
    bad_request(format!(
        "recording {} of stream {} was interrupted",
        chunk.recording_id, chunk.stream_id
    ))
}

fn too_large(chunk: &Chunk, bytes_max: u64) -> RequestError {
    bad_request(format!(
        "recording {} of stream {} would pass {bytes_max} bytes (live.recording_bytes_max); \
         it is interrupted",
        chunk.recording_id, chunk.stream_id
    ))
}

async fn load(db: &Database, chunk: &Chunk) -> Result<Option<RecordingRow>, RequestError> {
    sqlx::query_as(
        "SELECT id, bytes, chunks, status FROM live_recordings \
         WHERE stream_id = $1 AND recording_id = $2",
    )
    .bind(chunk.stream_id)
    .bind(chunk.recording_id)
    .fetch_optional(&db.pool)
    .await
    .map_err(storage)
}

/// Chunk 0: creates (or truncates) the file and inserts (or resets) the row.
/// Writing chunk 0 again gives the same file, so a retry needs no special
/// case; a recording that is already complete or interrupted is refused.
async fn start(
    db: &Database,
    data_dir: &Path,
    bytes_max: u64,
    file: &RecordingFile,
    chunk: Chunk,
) -> Result<u64, RequestError> {
    let (stream_exists,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM live_streams WHERE id = $1")
            .bind(chunk.stream_id)
            .fetch_one(&db.pool)
            .await
            .map_err(storage)?;
    if stream_exists == 0 {
        return Err(bad_request(format!(
            "no live stream has id {}",
            chunk.stream_id
        )));
    }
    if let Some(row) = load(db, &chunk).await? {
        if row.status != RecordingStatus::Recording.as_str() {
            if row.chunks == 1 && row.status == RecordingStatus::Complete.as_str() {
                return Ok(row.bytes as u64);
            }
            return Err(bad_request(format!(
                "recording {} of stream {} is {} already",
                chunk.recording_id, chunk.stream_id, row.status
            )));
        }
    }
    let bytes_total = chunk.data.len() as u64;
    if bytes_total > bytes_max {
        return Err(too_large(&chunk, bytes_max));
    }
    let path = data_dir.join(file.part_path());
    let data = chunk.data;
    blocking(move || write_at(&path, 0, &data, true)).await?;
    let now = now_ms();
    let relative_path = file.part_path().to_string_lossy().into_owned();
    let mut transaction = db.begin_write().await.map_err(storage)?;
    let (recording_row_id,): (i64,) = sqlx::query_as(
        "INSERT INTO live_recordings (stream_id, recording_id, started_at_ms, updated_at_ms, \
           bytes, chunks, status, path) VALUES ($1, $2, $3, $3, $4, 1, 'recording', $5) \
         ON CONFLICT (stream_id, recording_id) DO UPDATE SET bytes = $4, chunks = 1, \
           updated_at_ms = $3 RETURNING id",
    )
    .bind(chunk.stream_id)
    .bind(chunk.recording_id)
    .bind(now)
    .bind(bytes_total as i64)
    .bind(&relative_path)
    .fetch_one(&mut *transaction)
    .await
    .map_err(|error| match &error {
        // The stream was deleted since the check above.
        sqlx::Error::Database(database_error)
            if !matches!(database_error.kind(), sqlx::error::ErrorKind::Other) =>
        {
            bad_request(format!("no live stream has id {}", chunk.stream_id))
        }
        _ => storage(error),
    })?;
    transaction.commit().await.map_err(storage)?;
    tracing::info!(
        stream_id = chunk.stream_id,
        recording_id = chunk.recording_id,
        recording_row_id,
        "live recording started"
    );
    if chunk.last {
        let row = RecordingRow {
            id: recording_row_id,
            bytes: bytes_total as i64,
            chunks: 1,
            status: RecordingStatus::Recording.as_str().into(),
        };
        finish(db, data_dir, file, &row).await?;
    }
    Ok(bytes_total)
}

/// The last chunk is written: makes the file durable under its final name,
/// then marks the row `complete`. Safe to run again after a failure half-way
/// (a retry of the last chunk does).
async fn finish(
    db: &Database,
    data_dir: &Path,
    file: &RecordingFile,
    row: &RecordingRow,
) -> Result<(), RequestError> {
    let part_path = data_dir.join(file.part_path());
    let complete_path = data_dir.join(file.complete_path());
    let directory = data_dir.join(file.directory());
    blocking(move || make_durable(&part_path, &complete_path, &directory)).await?;
    let now = now_ms();
    let mut transaction = db.begin_write().await.map_err(storage)?;
    sqlx::query(
        "UPDATE live_recordings SET status = 'complete', ended_at_ms = $2, updated_at_ms = $2, \
           path = $3 WHERE id = $1 AND status = 'recording'",
    )
    .bind(row.id)
    .bind(now)
    .bind(file.complete_path().to_string_lossy().into_owned())
    .execute(&mut *transaction)
    .await
    .map_err(storage)?;
    transaction.commit().await.map_err(storage)?;
    tracing::info!(
        recording_row_id = row.id,
        bytes = row.bytes,
        chunks = row.chunks,
        "live recording complete"
    );
    Ok(())
}

async fn interrupt(db: &Database, recording_row_id: i64) -> Result<(), RequestError> {
    let mut transaction = db.begin_write().await.map_err(storage)?;
    sqlx::query(
        "UPDATE live_recordings SET status = 'interrupted', updated_at_ms = $2 \
         WHERE id = $1 AND status = 'recording'",
    )
    .bind(recording_row_id)
    .bind(now_ms())
    .execute(&mut *transaction)
    .await
    .map_err(storage)?;
    transaction.commit().await.map_err(storage)?;
    tracing::warn!(
        recording_row_id,
        "live recording interrupted: live.recording_bytes_max reached"
    );
    Ok(())
}

/// Marks every recording still `recording` whose last chunk is older than
/// `stale_ms` as `interrupted`; returns how many. Run at start.
///
/// Whether a data plane is still sending such a recording cannot be known
/// here (it may reconnect any moment), so age alone decides: a broadcast
/// silent for `live.recording_stale_ms` ended while the control plane was
/// away and will never send its last chunk. The `.part` file is kept, with
/// every chunk that was acknowledged, so an operator (or a later repair)
/// can still salvage it; only `complete` recordings are listed as playable.
pub async fn interrupt_stale(db: &Database, stale_ms: i64) -> Result<u64, sqlx::Error> {
    let now = now_ms();
    let mut transaction = db.begin_write().await?;
    let interrupted = sqlx::query(
        "UPDATE live_recordings SET status = 'interrupted', updated_at_ms = $1 \
         WHERE status = 'recording' AND updated_at_ms < $2",
    )
    .bind(now)
    .bind(now - stale_ms)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    transaction.commit().await?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "stale live recordings marked interrupted (their .part files are kept)"
        );
    }
    Ok(interrupted)
}

/// Removes a deleted stream's recording files (best effort: a failure is
/// logged, the stream is gone either way).
pub async fn remove_stream_files(data_dir: &Path, stream_id: i64) {
    let directory = data_dir.join(stream_directory(stream_id));
    match tokio::fs::remove_dir_all(&directory).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(%error, directory = %directory.display(), "cannot remove the recordings of a deleted stream")
        }
    }
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking(
    work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<(), RequestError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(internal("writing a recording", error)),
        Err(error) => Err(internal("writing a recording", error)),
    }
}

/// Writes `data` at `offset` of `path`, dropping whatever lay past `offset`.
/// With `create` the file (and its directory) may be created; otherwise it
/// must exist. Blocking.
fn write_at(path: &Path, offset: u64, data: &[u8], create: bool) -> std::io::Result<()> {
    if create {
        if let Some(directory) = path.parent() {
            std::fs::create_dir_all(directory)?;
        }
    }
    let mut file = OpenOptions::new().write(true).create(create).open(path)?;
    file.set_len(offset)?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}

/// fsyncs `part_path`, renames it to `complete_path` and fsyncs the
/// directory, so the rename survives a crash. When the rename already
/// happened (a retry), only the syncs run again. Blocking.
fn make_durable(part_path: &Path, complete_path: &Path, directory: &Path) -> std::io::Result<()> {
    match File::open(part_path) {
        Ok(part) => {
            part.sync_all()?;
            std::fs::rename(part_path, complete_path)?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            File::open(complete_path)?.sync_all()?;
        }
        Err(error) => return Err(error),
    }
    File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_by_stream_and_recording() {
        let file = RecordingFile::new(7, 1_700_000_000_000);
        assert_eq!(
            file.part_path(),
            Path::new("recordings/7/1700000000000.opus.part")
        );
        assert_eq!(
            file.complete_path(),
            Path::new("recordings/7/1700000000000.opus")
        );
    }

    #[test]
    fn statuses_round_trip() {
        for status in [
            RecordingStatus::Recording,
            RecordingStatus::Complete,
            RecordingStatus::Interrupted,
        ] {
            assert_eq!(RecordingStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RecordingStatus::parse("other"), None);
    }
}
