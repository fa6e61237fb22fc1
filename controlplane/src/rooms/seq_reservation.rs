//! Seq reservations: a data plane shard assigns a room's seqs itself and
//! shows a message to subscribers before the message is stored, so it first
//! reserves blocks of seqs here, durably. After a crash the next owner
//! starts past the last reservation and never assigns a seq that clients
//! may already have seen for another message (they de-duplicate by seq).
//!
//! Invariant: `rooms.seq_reserved` only shrinks through [`release`], and
//! never below the room's newest stored seq.

use crate::db::Database;

/// Reserves the `count` seqs after the greater of the room's newest stored
/// seq and its last reservation; returns the first and last of them, or
/// `None` for a room that does not exist.
pub async fn reserve(
    db: &Database,
    room_id: i64,
    count: u32,
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    let mut transaction = db.begin_write().await?;
    let reserved: Option<(i64,)> = sqlx::query_as("SELECT seq_reserved FROM rooms WHERE id = $1")
        .bind(room_id)
        .fetch_optional(&mut *transaction)
        .await?;
    let Some((reserved,)) = reserved else {
        return Ok(None);
    };
    let (stored,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room_id = $1")
            .bind(room_id)
            .fetch_one(&mut *transaction)
            .await?;
    let first = reserved.max(stored) + 1;
    let last = first + i64::from(count) - 1;
    sqlx::query("UPDATE rooms SET seq_reserved = $2 WHERE id = $1")
        .bind(room_id)
        .bind(last)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(Some((first, last)))
}

/// Shrinks the room's reservation from `reserved` to `head` (never below
/// the newest stored seq), unless it is no longer `reserved`.
pub async fn release(
    db: &Database,
    room_id: i64,
    reserved: i64,
    head: i64,
) -> Result<(), sqlx::Error> {
    let mut transaction = db.begin_write().await?;
    let (stored,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room_id = $1")
            .bind(room_id)
            .fetch_one(&mut *transaction)
            .await?;
    sqlx::query("UPDATE rooms SET seq_reserved = $3 WHERE id = $1 AND seq_reserved = $2")
        .bind(room_id)
        .bind(reserved)
        .bind(head.max(stored))
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await
}
