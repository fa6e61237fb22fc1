//! The message store: the data plane sequences messages (it assigns each
//! room's `seq`) and sends the changes here in batches over the control
//! protocol; [`persist_batch`] commits one batch in one transaction, and
//! [`history`] reads pages back (for resume and for REST).
//!
//! Idempotence: a message is identified by `(room_id, seq)` and, when the
//! sender gave one, by `(room_id, author_id, client_nonce)`; re-sending a
//! batch (after a lost acknowledgement) changes nothing. Edits carry their
//! time and apply only when newer than the message's last edit, so the data
//! plane must give successive edits of one message strictly increasing
//! `edited_at_ms`. Deletes keep a tombstone: the row stays with its seq, the
//! body and mentions are cleared, and its revisions and reactions go.
//!
//! A batch never fails because of what it says (see the rooms module's
//! invariant): changes naming a missing room, user or message, edits by
//! anyone but the author, and oversized emoji are skipped and logged; a
//! U+0000 in any text is stored as U+FFFD.

use std::borrow::Cow;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::permissions::access;
use super::request::{page_limit, JsonObject, Path, Query};
use super::responses::{ReadErrors, WriteErrors};
use crate::accounts::{scopes, Authenticated};
use crate::db::{now_ms, Database};
use crate::error::{ApiError, Json};
use crate::state::AppState;

/// Longest reaction emoji, in bytes (a flag or a family emoji with
/// modifiers is under 32).
pub const EMOJI_BYTES_MAX: usize = 64;

/// Most messages [`history`] returns at once, whatever `limit` asks.
pub const HISTORY_LIMIT_MAX: i64 = 1000;

/// A new message, sequenced by the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The room.
    pub room_id: i64,
    /// Its place in the room's total order (from 1).
    pub seq: i64,
    /// The sender.
    pub author_id: i64,
    /// The sender's idempotency key; empty for none.
    pub client_nonce: String,
    /// The text.
    pub body: String,
    /// The message this one replies to, in the same room.
    pub thread_parent_seq: Option<i64>,
    /// Mentioned user ids.
    pub mentions: Vec<i64>,
    /// Unix ms when the data plane sequenced it.
    pub created_at_ms: i64,
}

/// One change to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageChange {
    /// A new message.
    New(NewMessage),
    /// The author replaced the text (others' edits are skipped).
    Edit {
        /// The room.
        room_id: i64,
        /// The message.
        seq: i64,
        /// Who edited: must be the author.
        editor_id: i64,
        /// The new text.
        body: String,
        /// Unix ms; must exceed the message's previous edit time.
        edited_at_ms: i64,
    },
    /// The message became a tombstone.
    Delete {
        /// The room.
        room_id: i64,
        /// The message.
        seq: i64,
        /// Who deleted it (the author or a moderator; checked by the data
        /// plane).
        deleter_id: i64,
        /// Unix ms.
        deleted_at_ms: i64,
    },
    /// A user reacted.
    ReactionAdd {
        /// The room.
        room_id: i64,
        /// The message.
        seq: i64,
        /// Who reacted.
        user_id: i64,
        /// The emoji, up to [`EMOJI_BYTES_MAX`] bytes.
        emoji: String,
    },
    /// A user took a reaction back.
    ReactionRemove {
        /// The room.
        room_id: i64,
        /// The message.
        seq: i64,
        /// Who.
        user_id: i64,
        /// The emoji.
        emoji: String,
    },
    /// A user has read up to `seq` (markers only move forward).
    ReadMarker {
        /// The room.
        room_id: i64,
        /// Who.
        user_id: i64,
        /// The last read seq.
        seq: i64,
    },
}

/// A stored message as history returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredMessage {
    /// The room.
    pub room_id: i64,
    /// Its place in the room's order.
    pub seq: i64,
    /// The sender.
    pub author_id: i64,
    /// The text; empty once deleted.
    pub body: String,
    /// The message this one replies to.
    pub thread_parent_seq: Option<i64>,
    /// Mentioned user ids; empty once deleted.
    pub mentions: Vec<i64>,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms of the last edit.
    pub edited_at_ms: Option<i64>,
    /// Unix ms of the delete (a tombstone).
    pub deleted_at_ms: Option<i64>,
    /// (emoji, how many users), in the order the emoji were first used.
    pub reactions: Vec<(String, i64)>,
}

/// Commits `changes` in one transaction, in order. Retrying a batch that
/// was committed changes nothing; see the module docs for what is skipped.
pub async fn persist_batch(db: &Database, changes: &[MessageChange]) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut transaction = db.begin_write().await?;
    // Runs of new messages (the common case) go in multi-row inserts; every
    // other change is applied in order between them.
    let mut new_messages: Vec<&NewMessage> = Vec::with_capacity(MESSAGES_PER_INSERT_MAX);
    for change in changes {
        if let MessageChange::New(message) = change {
            new_messages.push(message);
            if new_messages.len() == MESSAGES_PER_INSERT_MAX {
                insert_messages(&mut transaction, &new_messages).await?;
                new_messages.clear();
            }
            continue;
        }
        insert_messages(&mut transaction, &new_messages).await?;
        new_messages.clear();
        apply(&mut transaction, change).await?;
    }
    insert_messages(&mut transaction, &new_messages).await?;
    transaction.commit().await
}

/// Rows in one multi-row insert: 8 parameters each, well under SQLite's
/// and PostgreSQL's parameter limits, and enough that a batch of 512 costs
/// four statements.
const MESSAGES_PER_INSERT_MAX: usize = 128;

type Transaction = sqlx::Transaction<'static, sqlx::Any>;

/// PostgreSQL's text cannot hold U+0000, which is valid UTF-8 and may arrive
/// in a client's text; it is stored as U+FFFD on both databases, so that a
/// batch never fails on it and both answer alike.
fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

async fn apply(transaction: &mut Transaction, change: &MessageChange) -> Result<(), sqlx::Error> {
    match change {
        MessageChange::New(message) => insert_messages(transaction, &[message]).await,
        MessageChange::Edit {
            room_id,
            seq,
            editor_id,
            body,
            edited_at_ms,
        } => edit_message(transaction, *room_id, *seq, *editor_id, body, *edited_at_ms).await,
        MessageChange::Delete {
            room_id,
            seq,
            deleter_id,
            deleted_at_ms,
        } => delete_message(transaction, *room_id, *seq, *deleter_id, *deleted_at_ms).await,
        MessageChange::ReactionAdd {
            room_id,
            seq,
            user_id,
            emoji,
        } => add_reaction(transaction, *room_id, *seq, *user_id, emoji).await,
        MessageChange::ReactionRemove {
            room_id,
            seq,
            user_id,
            emoji,
        } => {
            sqlx::query(
                "DELETE FROM message_reactions WHERE room_id = $1 AND seq = $2 AND user_id = $3 AND emoji = $4",
            )
            .bind(room_id)
            .bind(seq)
            .bind(user_id)
            .bind(storable(emoji).as_ref())
            .execute(&mut **transaction)
            .await?;
            Ok(())
        }
        MessageChange::ReadMarker {
            room_id,
            user_id,
            seq,
        } => set_read_marker(transaction, *room_id, *user_id, *seq).await,
    }
}

async fn insert_messages(
    transaction: &mut Transaction,
    messages: &[&NewMessage],
) -> Result<(), sqlx::Error> {
    let storable_messages: Vec<&NewMessage> = messages
        .iter()
        .copied()
        .filter(|message| {
            let valid = message.seq >= 1;
            if !valid {
                tracing::warn!(
                    room_id = message.room_id,
                    seq = message.seq,
                    "skipped a message with a seq below 1"
                );
            }
            valid
        })
        .collect();
    if storable_messages.is_empty() {
        return Ok(());
    }
    let sql = insert_messages_sql(storable_messages.len());
    // Texts are bound by reference (no copy of the bodies) unless they
    // held a U+0000.
    let texts: Vec<(Cow<'_, str>, Cow<'_, str>, String)> = storable_messages
        .iter()
        .map(|message| {
            let mentions = serde_json::to_string(&message.mentions).unwrap_or_else(|_| "[]".into());
            (
                storable(&message.client_nonce),
                storable(&message.body),
                mentions,
            )
        })
        .collect();
    let mut query = sqlx::query(&sql);
    for (message, (nonce, body, mentions)) in storable_messages.iter().zip(&texts) {
        query = query
            .bind(message.room_id)
            .bind(message.seq)
            .bind(message.author_id)
            .bind((!nonce.is_empty()).then_some(nonce.as_ref()))
            .bind(body.as_ref())
            .bind(message.thread_parent_seq)
            .bind(mentions.as_str())
            .bind(message.created_at_ms);
    }
    let inserted = query.execute(&mut **transaction).await?.rows_affected();
    if inserted < storable_messages.len() as u64 {
        tracing::debug!(
            skipped = storable_messages.len() as u64 - inserted,
            "messages already stored, or their room or author is gone"
        );
    }
    Ok(())
}

/// The multi-row insert of `rows` messages. VALUES columns are named
/// column1.. on both databases. ON CONFLICT without a target covers both
/// unique keys, (room_id, seq) and (room_id, author_id, client_nonce), also
/// between rows of the same insert; rows naming a missing room or author
/// are filtered out.
fn insert_messages_sql(rows: usize) -> String {
    const COLUMNS: usize = 8;
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let parameters: Vec<String> = (1..=COLUMNS)
                .map(|column| format!("${}", row * COLUMNS + column))
                .collect();
            format!("({})", parameters.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO messages (room_id, seq, author_id, client_nonce, body, thread_parent_seq, mentions, created_at_ms) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8 \
         FROM (VALUES {}) AS v \
         WHERE EXISTS (SELECT 1 FROM rooms r WHERE r.id = v.column1) \
           AND EXISTS (SELECT 1 FROM users u WHERE u.id = v.column3) \
         ON CONFLICT DO NOTHING",
        values.join(", ")
    )
}

async fn edit_message(
    transaction: &mut Transaction,
    room_id: i64,
    seq: i64,
    editor_id: i64,
    body: &str,
    edited_at_ms: i64,
) -> Result<(), sqlx::Error> {
    // Both statements match only a live message of this author whose last
    // edit is older, so a repeated edit matches nothing.
    const APPLIES: &str = "m.room_id = $1 AND m.seq = $2 AND m.author_id = $3 \
        AND m.deleted_at_ms IS NULL AND (m.edited_at_ms IS NULL OR m.edited_at_ms < $4)";
    sqlx::query(&format!(
        "INSERT INTO message_revisions (room_id, seq, revision, body, editor_id, edited_at_ms) \
         SELECT m.room_id, m.seq, \
           (SELECT COALESCE(MAX(r.revision), 0) + 1 FROM message_revisions r \
              WHERE r.room_id = m.room_id AND r.seq = m.seq), \
           m.body, $3, $4 \
         FROM messages m WHERE {APPLIES} ON CONFLICT DO NOTHING"
    ))
    .bind(room_id)
    .bind(seq)
    .bind(editor_id)
    .bind(edited_at_ms)
    .execute(&mut **transaction)
    .await?;
    let updated = sqlx::query(&format!(
        "UPDATE messages SET body = $5, edited_at_ms = $4 WHERE id IN (SELECT m.id FROM messages m WHERE {APPLIES})"
    ))
    .bind(room_id)
    .bind(seq)
    .bind(editor_id)
    .bind(edited_at_ms)
    .bind(storable(body).as_ref())
    .execute(&mut **transaction)
    .await?
    .rows_affected();
    if updated == 0 {
        tracing::debug!(
            room_id,
            seq,
            editor_id,
            "edit skipped: repeated, not the author, deleted or missing"
        );
    }
    Ok(())
}

async fn delete_message(
    transaction: &mut Transaction,
    room_id: i64,
    seq: i64,
    deleter_id: i64,
    deleted_at_ms: i64,
) -> Result<(), sqlx::Error> {
    let deleted = sqlx::query(
        "UPDATE messages SET body = '', mentions = '[]', deleted_at_ms = $3, deleted_by = $4 \
         WHERE room_id = $1 AND seq = $2 AND deleted_at_ms IS NULL",
    )
    .bind(room_id)
    .bind(seq)
    .bind(deleted_at_ms)
    .bind(deleter_id)
    .execute(&mut **transaction)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Ok(());
    }
    // A deleted message keeps nothing of what it said.
    for table in ["message_revisions", "message_reactions"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE room_id = $1 AND seq = $2"
        ))
        .bind(room_id)
        .bind(seq)
        .execute(&mut **transaction)
        .await?;
    }
    Ok(())
}

async fn add_reaction(
    transaction: &mut Transaction,
    room_id: i64,
    seq: i64,
    user_id: i64,
    emoji: &str,
) -> Result<(), sqlx::Error> {
    if emoji.is_empty() || emoji.len() > EMOJI_BYTES_MAX {
        tracing::warn!(
            room_id,
            seq,
            user_id,
            bytes = emoji.len(),
            "skipped a reaction with an empty or oversized emoji"
        );
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO message_reactions (room_id, seq, user_id, emoji, created_at_ms) \
         SELECT $1, $2, $3, $4, $5 \
         WHERE EXISTS (SELECT 1 FROM messages WHERE room_id = $1 AND seq = $2 AND deleted_at_ms IS NULL) \
           AND EXISTS (SELECT 1 FROM users WHERE id = $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(room_id)
    .bind(seq)
    .bind(user_id)
    .bind(storable(emoji).as_ref())
    .bind(now_ms())
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

async fn set_read_marker(
    transaction: &mut Transaction,
    room_id: i64,
    user_id: i64,
    seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO read_markers (room_id, user_id, seq, updated_at_ms) \
         SELECT $1, $2, $3, $4 \
         WHERE EXISTS (SELECT 1 FROM rooms WHERE id = $1) AND EXISTS (SELECT 1 FROM users WHERE id = $2) \
         ON CONFLICT (room_id, user_id) DO UPDATE SET seq = excluded.seq, updated_at_ms = excluded.updated_at_ms \
           WHERE read_markers.seq < excluded.seq",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(seq)
    .bind(now_ms())
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

pub(crate) type MessageRow = (
    i64,
    i64,
    i64,
    String,
    Option<i64>,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

/// The columns of [`MessageRow`] (never `*`: PostgreSQL's search column has
/// a type the `Any` driver cannot carry).
pub(crate) const MESSAGE_COLUMNS: &str =
    "m.room_id, m.seq, m.author_id, m.body, m.thread_parent_seq, \
    m.mentions, m.created_at_ms, m.edited_at_ms, m.deleted_at_ms";

pub(crate) fn stored(row: MessageRow) -> StoredMessage {
    StoredMessage {
        room_id: row.0,
        seq: row.1,
        author_id: row.2,
        body: row.3,
        thread_parent_seq: row.4,
        mentions: serde_json::from_str(&row.5).unwrap_or_default(),
        created_at_ms: row.6,
        edited_at_ms: row.7,
        deleted_at_ms: row.8,
        reactions: Vec::new(),
    }
}

/// A page of a room's messages in ascending seq: with `after_seq`, the
/// first `limit` messages after it; otherwise the last `limit` messages
/// (before `before_seq` when given). Both bounds together give a window.
/// Tombstones are included (clients show "message deleted"). `limit` is
/// capped at [`HISTORY_LIMIT_MAX`].
pub async fn history(
    db: &Database,
    room_id: i64,
    before_seq: Option<i64>,
    after_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<StoredMessage>, sqlx::Error> {
    let limit = limit.clamp(0, HISTORY_LIMIT_MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let order = if after_seq.is_some() { "ASC" } else { "DESC" };
    let rows: Vec<MessageRow> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m \
         WHERE m.room_id = $1 AND m.seq < $2 AND m.seq > $3 ORDER BY m.seq {order} LIMIT $4"
    ))
    .bind(room_id)
    .bind(before_seq.unwrap_or(i64::MAX))
    .bind(after_seq.unwrap_or(0))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    let mut messages: Vec<StoredMessage> = rows.into_iter().map(stored).collect();
    if after_seq.is_none() {
        messages.reverse();
    }
    attach_reactions(db, room_id, &mut messages).await?;
    Ok(messages)
}

/// Fills in the reaction counts of `messages` (ascending seq, one room).
pub(crate) async fn attach_reactions(
    db: &Database,
    room_id: i64,
    messages: &mut [StoredMessage],
) -> Result<(), sqlx::Error> {
    let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
        return Ok(());
    };
    let (low, high) = (first.seq.min(last.seq), first.seq.max(last.seq));
    let counts: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT seq, emoji, COUNT(*) FROM message_reactions \
         WHERE room_id = $1 AND seq >= $2 AND seq <= $3 \
         GROUP BY seq, emoji ORDER BY seq, MIN(id)",
    )
    .bind(room_id)
    .bind(low)
    .bind(high)
    .fetch_all(&db.pool)
    .await?;
    for (seq, emoji, count) in counts {
        if let Some(message) = messages.iter_mut().find(|message| message.seq == seq) {
            message.reactions.push((emoji, count));
        }
    }
    Ok(())
}

/// The highest stored seq of a room (0 when it has none).
pub async fn last_seq(db: &Database, room_id: i64) -> Result<i64, sqlx::Error> {
    let (seq,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room_id = $1")
            .bind(room_id)
            .fetch_one(&db.pool)
            .await?;
    Ok(seq)
}

/// The seq under which a message with this nonce was stored, if any: lets
/// the data plane answer a send retried across a restart with the original
/// seq instead of sequencing it twice.
pub async fn seq_for_nonce(
    db: &Database,
    room_id: i64,
    author_id: i64,
    client_nonce: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let found: Option<(i64,)> = sqlx::query_as(
        "SELECT seq FROM messages WHERE room_id = $1 AND author_id = $2 AND client_nonce = $3",
    )
    .bind(room_id)
    .bind(author_id)
    .bind(client_nonce)
    .fetch_optional(&db.pool)
    .await?;
    Ok(found.map(|(seq,)| seq))
}

// ---- REST ----

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_messages))
        .routes(routes!(get_read_marker, put_read_marker))
}

/// A reaction count.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReactionCount {
    /// The emoji.
    pub emoji: String,
    /// How many users reacted with it.
    pub count: i64,
}

/// A message as REST returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// The room.
    pub room_id: i64,
    /// Its place in the room's order.
    pub seq: i64,
    /// The sender.
    pub author_id: i64,
    /// The text; empty once deleted.
    pub body: String,
    /// The message this one replies to.
    pub thread_parent_seq: Option<i64>,
    /// Mentioned user ids.
    pub mentions: Vec<i64>,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms of the last edit.
    pub edited_at_ms: Option<i64>,
    /// Unix ms of the delete: a tombstone.
    pub deleted_at_ms: Option<i64>,
    /// Reaction counts, in the order the emoji were first used.
    pub reactions: Vec<ReactionCount>,
}

impl From<StoredMessage> for MessageView {
    fn from(message: StoredMessage) -> Self {
        MessageView {
            room_id: message.room_id,
            seq: message.seq,
            author_id: message.author_id,
            body: message.body,
            thread_parent_seq: message.thread_parent_seq,
            mentions: message.mentions,
            created_at_ms: message.created_at_ms,
            edited_at_ms: message.edited_at_ms,
            deleted_at_ms: message.deleted_at_ms,
            reactions: message
                .reactions
                .into_iter()
                .map(|(emoji, count)| ReactionCount { emoji, count })
                .collect(),
        }
    }
}

/// Query of a history page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Messages with seq below this one.
    pub before: Option<i64>,
    /// Messages with seq above this one (the page starts right after it).
    pub after: Option<i64>,
    /// Page size: default `chat.history_page_default`, larger values are
    /// reduced to the runtime setting `history_page_max`.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

/// A page of history in ascending seq.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    /// The messages.
    pub messages: Vec<MessageView>,
    /// More messages lie beyond the page: older ones without `after`, newer
    /// ones with it.
    pub has_more: bool,
}

/// A page of a room's history: members, or anyone for a public room.
#[utoipa::path(get, path = "/v1/rooms/{room_id}/messages", tag = "messages",
    params(("room_id" = i64, Path, description = "The room id"), HistoryQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "a page of messages", body = MessagePage), ReadErrors))]
async fn list_messages(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    auth.require_scope(scopes::MESSAGES_READ)?;
    access(&state.db, room_id, auth.user_id)
        .await?
        .require_readable()?;
    let (_, settings) = super::settings::current(&state.db).await?;
    let limit = page_limit(
        query.limit,
        state.config.chat.history_page_default,
        settings.history_page_max,
    )?;
    let mut messages = history(&state.db, room_id, query.before, query.after, limit + 1).await?;
    let has_more = messages.len() as i64 > limit;
    if has_more {
        if query.after.is_some() {
            messages.pop();
        } else {
            messages.remove(0);
        }
    }
    Ok(Json(MessagePage {
        messages: messages.into_iter().map(MessageView::from).collect(),
        has_more,
    }))
}

/// `PUT /v1/rooms/{room_id}/read-marker`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetReadMarker {
    /// The last seq read (0 or more).
    #[schema(minimum = 0)]
    pub seq: i64,
}

/// The caller's read marker in a room.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadMarkerView {
    /// The room.
    pub room_id: i64,
    /// The last seq read (0: nothing yet).
    pub seq: i64,
    /// The room's highest stored seq, so `last_seq - seq` is about the
    /// number of unread messages.
    pub last_seq: i64,
}

async fn read_marker(
    state: &AppState,
    room_id: i64,
    user_id: i64,
) -> Result<ReadMarkerView, ApiError> {
    let found: Option<(i64,)> =
        sqlx::query_as("SELECT seq FROM read_markers WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .fetch_optional(&state.db.pool)
            .await?;
    Ok(ReadMarkerView {
        room_id,
        seq: found.map_or(0, |(seq,)| seq),
        last_seq: last_seq(&state.db, room_id).await?,
    })
}

/// The caller's read marker (members).
#[utoipa::path(get, path = "/v1/rooms/{room_id}/read-marker", tag = "messages",
    params(("room_id" = i64, Path, description = "The room id")),
    security(("bearer" = [])),
    responses((status = 200, description = "the read marker", body = ReadMarkerView), ReadErrors))]
async fn get_read_marker(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
) -> Result<Json<ReadMarkerView>, ApiError> {
    auth.require_scope(scopes::MESSAGES_READ)?;
    access(&state.db, room_id, auth.user_id)
        .await?
        .require_member()?;
    Ok(Json(read_marker(&state, room_id, auth.user_id).await?))
}

/// Moves the caller's read marker forward (members; a lower seq than the
/// stored one leaves it unchanged).
#[utoipa::path(put, path = "/v1/rooms/{room_id}/read-marker", tag = "messages",
    params(("room_id" = i64, Path, description = "The room id")),
    request_body = SetReadMarker,
    security(("bearer" = [])),
    responses((status = 200, description = "the read marker now", body = ReadMarkerView), WriteErrors))]
async fn put_read_marker(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(room_id): Path<i64>,
    JsonObject(request): JsonObject<SetReadMarker>,
) -> Result<Json<ReadMarkerView>, ApiError> {
    auth.require_scope(scopes::MESSAGES_WRITE)?;
    access(&state.db, room_id, auth.user_id)
        .await?
        .require_member()?;
    if request.seq < 0 {
        return Err(ApiError::validation("seq must be 0 or more"));
    }
    persist_batch(
        &state.db,
        &[MessageChange::ReadMarker {
            room_id,
            user_id: auth.user_id,
            seq: request.seq,
        }],
    )
    .await?;
    Ok(Json(read_marker(&state, room_id, auth.user_id).await?))
}
