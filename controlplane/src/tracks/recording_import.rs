//! Finished live recordings become tracks (the hook of the live streams'
//! recorder, `live_streams/recorder.rs`): a `complete` recording with no
//! track yet gets a track of the stream's owner — titled after the stream
//! and the broadcast's start, public when the stream is public, private
//! otherwise — whose original is the recording file (hard-linked, or copied
//! when the media directory is on another file system), and is queued for
//! the same processing as an upload: loudness, the ladder, the waveform.
//!
//! Run right after a recording's last chunk is stored, and at start for any
//! complete recording not imported yet (a crash in between). The recording
//! row keeps the track's id, so a recording is imported once even if its
//! track is later deleted.

use std::path::Path;

use crate::accounts::secret;
use crate::db::now_ms;
use crate::state::AppState;

use super::MediaPaths;

/// A complete recording not imported yet.
#[derive(sqlx::FromRow)]
struct Pending {
    id: i64,
    path: String,
    started_at_ms: i64,
    owner_user_id: i64,
    title: String,
    is_public: i64,
}

const PENDING_QUERY: &str = "SELECT r.id, r.path, r.started_at_ms, s.owner_user_id, s.title, \
       s.is_public FROM live_recordings r JOIN live_streams s ON s.id = r.stream_id \
     WHERE r.status = 'complete' AND r.track_id IS NULL";

/// Imports the recording `recording_id` of `stream_id`, if it is complete
/// and not imported yet. Failures are logged; the next start retries.
pub async fn import(state: &AppState, stream_id: i64, recording_id: i64) {
    let query = format!("{PENDING_QUERY} AND r.stream_id = $1 AND r.recording_id = $2");
    let pending: Result<Option<Pending>, sqlx::Error> = sqlx::query_as(&query)
        .bind(stream_id)
        .bind(recording_id)
        .fetch_optional(&state.db.pool)
        .await;
    match pending {
        Ok(Some(pending)) => import_one(state, pending).await,
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, stream_id, recording_id, "recording not imported"),
    }
}

/// Imports every complete recording that has no track yet.
pub async fn import_pending(state: &AppState) {
    let pending: Result<Vec<Pending>, sqlx::Error> =
        sqlx::query_as(&format!("{PENDING_QUERY} ORDER BY r.id"))
            .fetch_all(&state.db.pool)
            .await;
    match pending {
        Ok(pending) => {
            for recording in pending {
                import_one(state, recording).await;
            }
        }
        Err(error) => tracing::warn!(%error, "recordings not imported"),
    }
}

async fn import_one(state: &AppState, pending: Pending) {
    let recording_row_id = pending.id;
    match try_import(state, pending).await {
        Ok(track_id) => {
            tracing::info!(
                recording_row_id,
                track_id,
                "live recording imported as a track"
            );
            state.tracks.push(track_id, false);
        }
        Err(error) => tracing::warn!(%error, recording_row_id, "recording not imported"),
    }
}

async fn try_import(state: &AppState, pending: Pending) -> anyhow::Result<i64> {
    let paths = MediaPaths::new(&state.config);
    let source = state.config.data_dir().join(&pending.path);
    let now = now_ms();
    let title = recording_title(&pending.title, pending.started_at_ms);
    let visibility = if pending.is_public != 0 {
        "public"
    } else {
        "private"
    };
    let link_secret = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret::random_bytes(16))
    };
    let mut transaction = state.db.begin_write().await?;
    let (track_id,): (i64,) = sqlx::query_as(
        "INSERT INTO tracks (owner_user_id, title, description, tags, visibility, link_secret, \
           status, progress, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, '[\"live\"]', $4, $5, 'queued', 0, $6, $6) RETURNING id",
    )
    .bind(pending.owner_user_id)
    .bind(&title)
    .bind("Recorded live.")
    .bind(visibility)
    .bind(&link_secret)
    .bind(now)
    .fetch_one(&mut *transaction)
    .await?;
    let original = paths.original(track_id);
    let originals = paths.originals();
    tokio::task::spawn_blocking(move || link_or_copy(&source, &original, &originals)).await??;
    sqlx::query("UPDATE live_recordings SET track_id = $1 WHERE id = $2")
        .bind(track_id)
        .bind(pending.id)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(track_id)
}

/// "{stream title} (live, {date} {time} UTC)".
fn recording_title(stream_title: &str, started_at_ms: i64) -> String {
    let seconds = started_at_ms.div_euclid(1000);
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let when = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        second_of_day / 3600,
        second_of_day % 3600 / 60
    );
    let name = if stream_title.trim().is_empty() {
        "Live recording"
    } else {
        stream_title.trim()
    };
    format!("{name} (live, {when})")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Makes `original` the same content as `source`, durably.
fn link_or_copy(source: &Path, original: &Path, originals: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(originals)?;
    if std::fs::hard_link(source, original).is_err() {
        std::fs::copy(source, original)?;
        std::fs::File::open(original)?.sync_all()?;
    }
    std::fs::File::open(originals)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_are_titled_after_their_stream_and_start() {
        // 2026-11-22 01:49:22 UTC.
        assert_eq!(
            recording_title("Night Radio", 1_795_312_162_491),
            "Night Radio (live, 2026-11-22 01:49 UTC)"
        );
        assert_eq!(
            recording_title("  ", 0),
            "Live recording (live, 1970-01-01 00:00 UTC)"
        );
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
    }
}
