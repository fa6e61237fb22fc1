//! The job queue and the worker threads that process tracks.
//!
//! The queue is bounded (`tracks.job_queue_max`): an upload reserves a place
//! before its body is read ([`TrackJobs::reserve`]), so a full queue answers
//! 503 at once and nothing is written. Workers are a fixed pool of std
//! threads (`tracks.workers`): decoding and encoding are seconds of CPU that
//! must never run on the runtime's threads.
//!
//! A worker reaches the database by `Handle::block_on` on the runtime's
//! handle: the worker thread is not a runtime thread, so blocking it is
//! exactly what it is for, each call is one short statement, and the code
//! stays a straight line (mark processing, transcode, store, mark ready)
//! rather than a conversation with an async task over channels. Progress is
//! written at most every [`PROGRESS_STEP_PER_MILLE`], so the database sees
//! about twenty writes per track.
//!
//! Recovery: at start every track still `queued` or `processing` (its
//! process died) is queued again (`processing` → `queued`); these may fill
//! the queue past its bound for a while, since none may be dropped.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use tokio::runtime::Handle;

use super::media::{self, TranscodeConfig, TranscodeOutput};
use super::{track_relative_directory, MediaPaths, TracksConfig};
use crate::db::{now_ms, Database};
use crate::events::{ControlEvent, EventHub};
use crate::state::AppState;

/// Progress is written each time it grew by this much (5 %).
pub const PROGRESS_STEP_PER_MILLE: i64 = 50;

#[derive(Default)]
struct Queue {
    waiting: VecDeque<i64>,
    /// Places promised to uploads still being received.
    reserved: usize,
}

/// The bounded queue of track ids waiting for a worker.
pub struct TrackJobs {
    queue: Mutex<Queue>,
    available: Condvar,
    capacity: usize,
}

impl TrackJobs {
    /// An empty queue of `capacity` places.
    pub fn new(capacity: usize) -> Arc<Self> {
        assert!(capacity > 0, "the job queue needs a place");
        Arc::new(Self {
            queue: Mutex::default(),
            available: Condvar::new(),
            capacity,
        })
    }

    /// A place in the queue, or `None` when it is full.
    pub fn reserve(self: &Arc<Self>) -> Option<JobSlot> {
        let mut queue = self.queue.lock().expect("job queue lock");
        if queue.waiting.len() + queue.reserved >= self.capacity {
            return None;
        }
        queue.reserved += 1;
        Some(JobSlot {
            jobs: Some(self.clone()),
        })
    }

    /// Tracks waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.queue.lock().expect("job queue lock").waiting.len()
    }

    pub(super) fn push(&self, track_id: i64, was_reserved: bool) {
        let mut queue = self.queue.lock().expect("job queue lock");
        if was_reserved {
            queue.reserved -= 1;
        }
        queue.waiting.push_back(track_id);
        drop(queue);
        self.available.notify_one();
    }

    fn take(&self) -> i64 {
        let mut queue = self.queue.lock().expect("job queue lock");
        loop {
            if let Some(track_id) = queue.waiting.pop_front() {
                return track_id;
            }
            queue = self.available.wait(queue).expect("job queue lock");
        }
    }
}

/// A reserved place in the queue; given back when dropped unused (the
/// upload failed or was abandoned).
pub struct JobSlot {
    jobs: Option<Arc<TrackJobs>>,
}

impl JobSlot {
    /// Queues `track_id` in this place.
    pub fn enqueue(mut self, track_id: i64) {
        if let Some(jobs) = self.jobs.take() {
            jobs.push(track_id, true);
        }
    }
}

impl Drop for JobSlot {
    fn drop(&mut self) {
        if let Some(jobs) = self.jobs.take() {
            jobs.queue.lock().expect("job queue lock").reserved -= 1;
        }
    }
}

/// What a worker thread holds.
struct Worker {
    runtime: Handle,
    db: Database,
    events: EventHub,
    paths: MediaPaths,
    transcode_config: TranscodeConfig,
}

/// The pipeline's settings from `[tracks]`.
pub(super) fn transcode_config(config: &TracksConfig) -> TranscodeConfig {
    TranscodeConfig {
        ladder_bitrates_kbps: config.ladder_bitrates_kbps.clone(),
        loudness_target_lufs: config.loudness_target_lufs,
        true_peak_max_dbtp: config.true_peak_max_dbtp,
        duration_max_seconds: config.duration_max_seconds,
        page_duration_ms: config.page_duration_ms,
        ..TranscodeConfig::default()
    }
}

/// Prepares the media directory, queues the tracks a previous process left
/// unfinished, and starts the workers. Called once, from the runtime, before
/// the REST listener opens.
pub async fn start(state: &AppState) -> anyhow::Result<()> {
    let paths = MediaPaths::new(&state.config);
    for directory in [
        paths.uploads(),
        paths.originals(),
        paths.root().join("tracks"),
    ] {
        tokio::fs::create_dir_all(&directory).await?;
    }
    sweep_uploads(&paths.uploads()).await;
    let mut transaction = state.db.begin_write().await?;
    sqlx::query("UPDATE tracks SET status = 'queued', progress = 0 WHERE status = 'processing'")
        .execute(&mut *transaction)
        .await?;
    let unfinished: Vec<(i64,)> =
        sqlx::query_as("SELECT id FROM tracks WHERE status = 'queued' ORDER BY id")
            .fetch_all(&mut *transaction)
            .await?;
    transaction.commit().await?;
    if !unfinished.is_empty() {
        tracing::info!(tracks = unfinished.len(), "queueing tracks left unfinished");
    }
    for (track_id,) in unfinished {
        state.tracks.push(track_id, false);
    }
    super::recording_import::import_pending(state).await;
    for worker_idx in 0..state.config.tracks.workers {
        let worker = Worker {
            runtime: Handle::current(),
            db: state.db.clone(),
            events: state.events.clone(),
            paths: paths.clone(),
            transcode_config: transcode_config(&state.config.tracks),
        };
        let jobs = state.tracks.clone();
        std::thread::Builder::new()
            .name(format!("veza-track-{worker_idx}"))
            // A job cut short when the process exits is queued again at the
            // next start, so the threads are not joined.
            .spawn(move || loop {
                let track_id = jobs.take();
                worker.process(track_id);
            })?;
    }
    Ok(())
}

/// Removes uploads a previous process was receiving when it stopped.
async fn sweep_uploads(uploads: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(uploads).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        if let Err(error) = tokio::fs::remove_file(entry.path()).await {
            tracing::warn!(%error, path = %entry.path().display(), "stale upload not removed");
        }
    }
}

/// Removes a track's original and output directory (missing ones are fine).
pub fn remove_track_files(paths: &MediaPaths, track_id: i64) {
    let original = paths.original(track_id);
    if let Err(error) = std::fs::remove_file(&original) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(%error, path = %original.display(), "track original not removed");
        }
    }
    remove_output(paths, track_id);
}

fn remove_output(paths: &MediaPaths, track_id: i64) {
    let directory = paths.track_directory(track_id);
    if let Err(error) = std::fs::remove_dir_all(&directory) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(%error, path = %directory.display(), "track files not removed");
        }
    }
}

/// How a job ended, for the log.
enum Outcome {
    Ready,
    Failed(String),
    Gone,
}

impl Worker {
    fn process(&self, track_id: i64) {
        let started = self.runtime.block_on(mark_processing(&self.db, track_id));
        match started {
            Ok(true) => {}
            // Deleted while it waited.
            Ok(false) => return,
            Err(error) => {
                tracing::error!(%error, track_id, "track could not be marked processing; it is queued again at the next start");
                return;
            }
        }
        let outcome = match self.transcode(track_id) {
            Ok(output) => self.finish(track_id, &output),
            Err(reason) => Outcome::Failed(reason),
        };
        match outcome {
            Outcome::Ready => tracing::info!(track_id, "track ready"),
            Outcome::Gone => {
                tracing::info!(
                    track_id,
                    "track deleted while processing; its files are removed"
                );
                remove_track_files(&self.paths, track_id);
            }
            Outcome::Failed(reason) => self.fail(track_id, &reason),
        }
    }

    /// Runs the pipeline into a fresh output directory; a panic in it fails
    /// the track instead of killing the worker.
    fn transcode(&self, track_id: i64) -> Result<TranscodeOutput, String> {
        let original = self.paths.original(track_id);
        let output_dir = self.paths.track_directory(track_id);
        remove_output(&self.paths, track_id);
        std::fs::create_dir_all(&output_dir)
            .map_err(|error| format!("the track's directory could not be made: {error}"))?;
        let mut reported_per_mille = 0;
        let mut progress = |fraction: f32| {
            let per_mille = (f64::from(fraction.clamp(0.0, 1.0)) * 1000.0) as i64;
            if per_mille >= reported_per_mille + PROGRESS_STEP_PER_MILLE && per_mille < 1000 {
                reported_per_mille = per_mille;
                let written = self
                    .runtime
                    .block_on(write_progress(&self.db, track_id, per_mille));
                if let Err(error) = written {
                    tracing::warn!(%error, track_id, "track progress not written");
                }
            }
        };
        let config = &self.transcode_config;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            media::transcode(&original, &output_dir, config, &mut progress)
        }));
        match result {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(error)) => {
                // The reason is for the uploader; the detail is for operators.
                tracing::warn!(track_id, %error, "track processing failed");
                Err(error.reason())
            }
            Err(_) => Err("the media pipeline failed unexpectedly".into()),
        }
    }

    /// Makes the files durable, stores the renditions and marks the track
    /// ready in one transaction, then tells the data planes.
    fn finish(&self, track_id: i64, output: &TranscodeOutput) -> Outcome {
        let renditions = match self.durable_renditions(track_id, output) {
            Ok(renditions) => renditions,
            Err(error) => {
                return Outcome::Failed(format!("the renditions could not be stored: {error}"))
            }
        };
        let waveform_path = format!(
            "{}/{}",
            track_relative_directory(track_id),
            output.waveform_file_name
        );
        let stored = self.runtime.block_on(store_ready(
            &self.db,
            track_id,
            output,
            &renditions,
            &waveform_path,
        ));
        match stored {
            Ok(true) => {
                self.events.publish(ControlEvent::TrackChanged { track_id });
                Outcome::Ready
            }
            Ok(false) => Outcome::Gone,
            Err(error) => Outcome::Failed(format!("the track could not be stored: {error}")),
        }
    }

    /// Fsyncs every file the pipeline wrote and the directory, and returns
    /// the rows of the renditions.
    fn durable_renditions(
        &self,
        track_id: i64,
        output: &TranscodeOutput,
    ) -> std::io::Result<Vec<RenditionRow>> {
        let directory = self.paths.track_directory(track_id);
        let mut renditions = Vec::with_capacity(output.renditions.len());
        for rendition in &output.renditions {
            let file = std::fs::File::open(directory.join(&rendition.file_name))?;
            file.sync_all()?;
            let metadata = file.metadata()?;
            let modified_at_ms = metadata
                .modified()?
                .duration_since(std::time::UNIX_EPOCH)
                .map(|since| since.as_millis() as i64)
                .unwrap_or(0);
            let bitrate_kbps = i64::from(rendition.bitrate_kbps);
            let size_bytes = metadata.len() as i64;
            renditions.push(RenditionRow {
                bitrate_kbps,
                relative_path: format!(
                    "{}/{}",
                    track_relative_directory(track_id),
                    rendition.file_name
                ),
                size_bytes,
                etag: format!("\"{track_id}-{bitrate_kbps}-{size_bytes}-{modified_at_ms}\""),
                modified_at_ms,
            });
        }
        std::fs::File::open(directory.join(&output.waveform_file_name))?.sync_all()?;
        std::fs::File::open(&directory)?.sync_all()?;
        Ok(renditions)
    }

    /// Removes what the track left and marks it failed with `reason`. Files
    /// go first: a crash in between re-queues a track whose original is gone,
    /// which fails again with a reason, and no file is left behind.
    fn fail(&self, track_id: i64, reason: &str) {
        tracing::info!(track_id, reason, "track processing failed");
        remove_track_files(&self.paths, track_id);
        let marked = self
            .runtime
            .block_on(mark_failed(&self.db, track_id, reason));
        if let Err(error) = marked {
            tracing::error!(%error, track_id, "track could not be marked failed");
        }
    }
}

struct RenditionRow {
    bitrate_kbps: i64,
    relative_path: String,
    size_bytes: i64,
    etag: String,
    modified_at_ms: i64,
}

/// `queued` → `processing`; false when the track is gone.
async fn mark_processing(db: &Database, track_id: i64) -> Result<bool, sqlx::Error> {
    let mut transaction = db.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE tracks SET status = 'processing', progress = 0, updated_at_ms = $2 \
         WHERE id = $1 AND status IN ('queued', 'processing')",
    )
    .bind(track_id)
    .bind(now_ms())
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    transaction.commit().await?;
    Ok(updated == 1)
}

async fn write_progress(db: &Database, track_id: i64, per_mille: i64) -> Result<(), sqlx::Error> {
    let mut transaction = db.begin_write().await?;
    sqlx::query("UPDATE tracks SET progress = $2 WHERE id = $1 AND status = 'processing'")
        .bind(track_id)
        .bind(per_mille)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await
}

/// Stores the renditions and marks the track ready; false (and nothing
/// stored) when the track was deleted meanwhile.
async fn store_ready(
    db: &Database,
    track_id: i64,
    output: &TranscodeOutput,
    renditions: &[RenditionRow],
    waveform_path: &str,
) -> Result<bool, sqlx::Error> {
    let mut transaction = db.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE tracks SET status = 'ready', progress = 1000, failure_reason = NULL, \
           duration_ms = $2, loudness_lufs = $3, waveform_path = $4, updated_at_ms = $5 \
         WHERE id = $1 AND status = 'processing'",
    )
    .bind(track_id)
    .bind(output.duration_ms)
    .bind(output.input_loudness_lufs)
    .bind(waveform_path)
    .bind(now_ms())
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM track_renditions WHERE track_id = $1")
        .bind(track_id)
        .execute(&mut *transaction)
        .await?;
    for rendition in renditions {
        sqlx::query(
            "INSERT INTO track_renditions \
               (track_id, bitrate_kbps, relative_path, size_bytes, etag, modified_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(track_id)
        .bind(rendition.bitrate_kbps)
        .bind(&rendition.relative_path)
        .bind(rendition.size_bytes)
        .bind(&rendition.etag)
        .bind(rendition.modified_at_ms)
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await?;
    Ok(true)
}

async fn mark_failed(db: &Database, track_id: i64, reason: &str) -> Result<(), sqlx::Error> {
    let mut transaction = db.begin_write().await?;
    sqlx::query(
        "UPDATE tracks SET status = 'failed', failure_reason = $2, progress = 0, updated_at_ms = $3 \
         WHERE id = $1",
    )
    .bind(track_id)
    .bind(reason)
    .bind(now_ms())
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_and_an_unused_place_is_given_back() {
        let jobs = TrackJobs::new(2);
        let first = jobs.reserve().unwrap();
        let second = jobs.reserve().unwrap();
        assert!(jobs.reserve().is_none(), "two places are taken");
        drop(second);
        first.enqueue(7);
        assert_eq!(jobs.waiting(), 1);
        let third = jobs.reserve().expect("the dropped place is free again");
        assert!(jobs.reserve().is_none());
        third.enqueue(8);
        assert_eq!(jobs.take(), 7);
        assert_eq!(jobs.take(), 8);
    }
}
