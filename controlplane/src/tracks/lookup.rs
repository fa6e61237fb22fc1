//! The control protocol's track operations: what a data plane needs to
//! serve a ready track (`LookupTrack`), and the plays it counted
//! (`RecordPlays`).

use veza_proto::control::{TrackMeta, TrackPlays, TrackRendition, TrackVisibility};

use crate::db::Database;

/// `owner_user_id, visibility, link_secret, waveform_path, duration_ms` of a
/// ready track.
type ReadyTrackRow = (i64, String, String, Option<String>, Option<i64>);

/// A ready track's metadata; `None` when the track does not exist or is not
/// ready (queued, processing, failed): the data plane never learns of files
/// that may be half-written.
pub async fn lookup(db: &Database, track_id: i64) -> Result<Option<TrackMeta>, sqlx::Error> {
    let row: Option<ReadyTrackRow> = sqlx::query_as(
        "SELECT owner_user_id, visibility, link_secret, waveform_path, duration_ms FROM tracks \
         WHERE id = $1 AND status = 'ready'",
    )
    .bind(track_id)
    .fetch_optional(&db.pool)
    .await?;
    let Some((owner_user_id, visibility, link_secret, waveform_path, duration_ms)) = row else {
        return Ok(None);
    };
    let renditions: Vec<(i64, String, i64, String, i64)> = sqlx::query_as(
        "SELECT bitrate_kbps, relative_path, size_bytes, etag, modified_at_ms \
         FROM track_renditions WHERE track_id = $1 ORDER BY bitrate_kbps",
    )
    .bind(track_id)
    .fetch_all(&db.pool)
    .await?;
    let visibility = match visibility.as_str() {
        "public" => TrackVisibility::Public,
        "unlisted" => TrackVisibility::Unlisted,
        // The CHECK constraint allows nothing else; refuse to widen access
        // if it ever did.
        _ => TrackVisibility::Private,
    };
    Ok(Some(TrackMeta {
        track_id,
        owner_user_id,
        link_secret: if visibility == TrackVisibility::Unlisted {
            link_secret
        } else {
            String::new()
        },
        visibility,
        renditions: renditions
            .into_iter()
            .map(
                |(bitrate_kbps, relative_path, size_bytes, etag, modified_at_ms)| TrackRendition {
                    bitrate_kbps: bitrate_kbps as u32,
                    relative_path,
                    size_bytes: size_bytes as u64,
                    etag,
                    modified_at_ms,
                },
            )
            .collect(),
        waveform_relative_path: waveform_path.unwrap_or_default(),
        duration_ms: duration_ms.unwrap_or(0),
    }))
}

/// Adds `plays` to their tracks' play counts in one transaction; plays of
/// tracks that no longer exist are dropped (nothing to count them on).
pub async fn record_plays(db: &Database, plays: &[TrackPlays]) -> Result<(), sqlx::Error> {
    let mut transaction = db.begin_write().await?;
    for track_plays in plays {
        let plays = i64::try_from(track_plays.plays).unwrap_or(i64::MAX);
        sqlx::query("UPDATE tracks SET play_count = play_count + $2 WHERE id = $1")
            .bind(track_plays.track_id)
            .bind(plays)
            .execute(&mut *transaction)
            .await?;
    }
    transaction.commit().await
}
