//! The adapter between control requests and the accounts, rooms, live
//! stream and track areas:
//! each function calls one area function and converts between that area's
//! types and their mirrors in `veza_proto::control`.
//!
//! Storage errors become `RequestError`s: a constraint violation (a batch
//! naming a room, user or message that does not exist) is `BadRequest`,
//! since sending the same batch again cannot succeed; anything else is
//! `Internal`, which the data plane may retry.

use std::sync::atomic::Ordering;

use veza_proto::control::{
    LiveCredential, LiveSourceGrant, MessageChange, ReactionCount, RequestError, RequestErrorCode,
    Revocation, Role, RoomRights, RuntimeSettings, SettingValue, SigningKey, StoredMessage,
    TrackMeta, TrackPlays,
};

use crate::live_streams::recorder;
use crate::live_streams::source::{self, SourceCredential, SourceRefusal};
use crate::rooms;
use crate::state::AppState;
use crate::tracks;

fn storage_error(what: &str, error: sqlx::Error) -> RequestError {
    let code = match &error {
        sqlx::Error::Database(database_error)
            if !matches!(database_error.kind(), sqlx::error::ErrorKind::Other) =>
        {
            RequestErrorCode::BadRequest
        }
        sqlx::Error::RowNotFound => RequestErrorCode::NotFound,
        _ => RequestErrorCode::Internal,
    };
    if code == RequestErrorCode::Internal {
        tracing::error!(%error, what, "control request failed in storage");
    }
    RequestError {
        code,
        message: format!("{what}: {error}"),
    }
}

/// The public keys that verify access tokens.
pub async fn signing_keys(state: &AppState) -> Result<Vec<SigningKey>, RequestError> {
    Ok(state
        .auth
        .verification_keys()
        .into_iter()
        .map(|key| SigningKey {
            kid: key.kid,
            public_key: key.public_key,
            valid_until_ms: key.valid_until_ms,
        })
        .collect())
}

/// The current runtime settings and their version.
pub async fn config(state: &AppState) -> Result<(i64, RuntimeSettings), RequestError> {
    let (version, settings) = rooms::settings::current(&state.db)
        .await
        .map_err(|error| storage_error("reading runtime settings", error))?;
    let document = serde_json::to_value(&settings).map_err(|error| RequestError {
        code: RequestErrorCode::Internal,
        message: format!("runtime settings do not serialise: {error}"),
    })?;
    let mut pairs = Vec::new();
    flatten_settings("", &document, &mut pairs);
    Ok((version, RuntimeSettings::from_pairs(pairs)))
}

/// Flattens a JSON settings document into dotted keys (`a.b`) with typed
/// values; `null`s and arrays are left out (no setting uses them).
fn flatten_settings(
    prefix: &str,
    value: &serde_json::Value,
    out: &mut Vec<(String, SettingValue)>,
) {
    use serde_json::Value;
    let setting = match value {
        Value::Object(object) => {
            for (key, child) in object {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten_settings(&key, child, out);
            }
            return;
        }
        Value::Bool(flag) => SettingValue::Boolean(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => SettingValue::Integer(integer),
            None => SettingValue::Float(number.as_f64().unwrap_or(0.0)),
        },
        Value::String(text) => SettingValue::Text(text.clone()),
        Value::Null | Value::Array(_) => return,
    };
    out.push((prefix.to_owned(), setting));
}

/// A user's rights in a room.
pub async fn rights(
    state: &AppState,
    room_id: i64,
    user_id: i64,
) -> Result<RoomRights, RequestError> {
    let rights = rooms::permissions::rights(&state.db, room_id, user_id)
        .await
        .map_err(|error| storage_error("looking up rights", error))?;
    Ok(RoomRights {
        room_exists: rights.room_exists,
        role: rights.role.map(|role| match role {
            rooms::permissions::Role::Owner => Role::Owner,
            rooms::permissions::Role::Admin => Role::Admin,
            rooms::permissions::Role::Moderator => Role::Moderator,
            rooms::permissions::Role::Member => Role::Member,
        }),
        can_read: rights.can_read,
        can_post: rights.can_post,
        can_delete_others: rights.can_delete_others,
        can_moderate: rights.can_moderate,
        muted_until_ms: rights.muted_until_ms,
        banned: rights.banned,
        slow_mode_seconds: rights.slow_mode_seconds,
    })
}

/// Commits a batch in one transaction; returns once committed.
pub async fn persist_batch(
    state: &AppState,
    changes: &[MessageChange],
) -> Result<(), RequestError> {
    let changes: Vec<rooms::messages::MessageChange> =
        changes.iter().cloned().map(to_storage_change).collect();
    rooms::messages::persist_batch(&state.db, &changes)
        .await
        .map_err(|error| storage_error("persisting a batch", error))
}

fn to_storage_change(change: MessageChange) -> rooms::messages::MessageChange {
    use rooms::messages::MessageChange as Stored;
    match change {
        MessageChange::New(message) => Stored::New(rooms::messages::NewMessage {
            room_id: message.room_id,
            seq: message.seq,
            author_id: message.author_id,
            client_nonce: message.client_nonce,
            body: message.body,
            thread_parent_seq: message.thread_parent_seq,
            mentions: message.mentions,
            created_at_ms: message.created_at_ms,
        }),
        MessageChange::Edit {
            room_id,
            seq,
            editor_id,
            body,
            edited_at_ms,
        } => Stored::Edit {
            room_id,
            seq,
            editor_id,
            body,
            edited_at_ms,
        },
        MessageChange::Delete {
            room_id,
            seq,
            deleter_id,
            deleted_at_ms,
        } => Stored::Delete {
            room_id,
            seq,
            deleter_id,
            deleted_at_ms,
        },
        MessageChange::ReactionAdd {
            room_id,
            seq,
            user_id,
            emoji,
        } => Stored::ReactionAdd {
            room_id,
            seq,
            user_id,
            emoji,
        },
        MessageChange::ReactionRemove {
            room_id,
            seq,
            user_id,
            emoji,
        } => Stored::ReactionRemove {
            room_id,
            seq,
            user_id,
            emoji,
        },
        MessageChange::ReadMarker {
            room_id,
            user_id,
            seq,
        } => Stored::ReadMarker {
            room_id,
            user_id,
            seq,
        },
    }
}

/// A page of a room's history, in ascending seq.
pub async fn history(
    state: &AppState,
    room_id: i64,
    before_seq: Option<i64>,
    after_seq: Option<i64>,
    limit: u32,
) -> Result<Vec<StoredMessage>, RequestError> {
    let messages =
        rooms::messages::history(&state.db, room_id, before_seq, after_seq, i64::from(limit))
            .await
            .map_err(|error| storage_error("reading history", error))?;
    Ok(messages
        .into_iter()
        .map(|message| StoredMessage {
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
        })
        .collect())
}

/// Revoked tokens that have not expired.
pub async fn revocations(state: &AppState) -> Result<Vec<Revocation>, RequestError> {
    let revocations = crate::accounts::store::active_revocations(&state.db)
        .await
        .map_err(|error| storage_error("reading revocations", error))?;
    Ok(revocations
        .into_iter()
        .map(|(token_id, expires_at_ms)| Revocation {
            token_id,
            expires_at_ms,
        })
        .collect())
}

/// Whether a source presenting `credential` may broadcast on the stream
/// `stream_name`. Grants and refusals are counted and logged (with the
/// credential's kind, never a key): a run of refusals on one stream is
/// someone guessing its key.
pub async fn authorize_live_source(
    state: &AppState,
    stream_name: &str,
    credential: LiveCredential,
) -> Result<LiveSourceGrant, RequestError> {
    let credential = match credential {
        LiveCredential::StreamKey(key) => SourceCredential::StreamKey(key),
        LiveCredential::User { user_id } => SourceCredential::User { user_id },
    };
    let decision = source::authorize(&state.db, stream_name, &credential)
        .await
        .map_err(|error| storage_error("authorising a live source", error))?;
    let grant = match decision {
        Ok(grant) => grant,
        Err(refusal) => {
            state
                .nodes
                .live_sources_refused_total
                .fetch_add(1, Ordering::Relaxed);
            let code = match refusal {
                SourceRefusal::NoSuchStream => RequestErrorCode::NotFound,
                SourceRefusal::WrongKey | SourceRefusal::NotOwner => RequestErrorCode::Denied,
            };
            // The name comes from the data plane unchecked: log it only when
            // it is a valid name (short, no control characters).
            let shown_name = if crate::live_streams::is_valid_stream_name(stream_name) {
                stream_name
            } else {
                "(not a stream name)"
            };
            tracing::warn!(
                stream = shown_name,
                credential = credential.kind(),
                reason = code.name(),
                "live source refused"
            );
            return Err(RequestError {
                code,
                message: refusal.explanation().to_owned(),
            });
        }
    };
    state
        .nodes
        .live_sources_granted_total
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        stream_id = grant.stream_id,
        stream = %grant.name,
        credential = credential.kind(),
        "live source authorised"
    );
    Ok(LiveSourceGrant {
        stream_id: grant.stream_id,
        name: grant.name,
        owner_user_id: grant.owner_user_id,
        title: grant.title,
        recording_enabled: grant.recording_enabled,
        dsp_config_json: grant.dsp_config_json,
    })
}

/// Appends a chunk to a broadcast's recording (and completes it with
/// `last`); returns the recording's bytes so far.
pub async fn append_recording(
    state: &AppState,
    stream_id: i64,
    recording_id: i64,
    chunk_idx: u32,
    data: Vec<u8>,
    last: bool,
) -> Result<u64, RequestError> {
    let bytes_total = recorder::append(
        state,
        recorder::Chunk {
            stream_id,
            recording_id,
            chunk_idx,
            data,
            last,
        },
    )
    .await?;
    if last {
        // The answer does not wait for the import; a recording not imported
        // now (a crash) is imported at the next start.
        let state = state.clone();
        tokio::spawn(async move {
            crate::tracks::recording_import::import(&state, stream_id, recording_id).await;
        });
    }
    Ok(bytes_total)
}

/// A ready track's metadata; `NotFound` when it does not exist or is not
/// ready.
pub async fn lookup_track(state: &AppState, track_id: i64) -> Result<TrackMeta, RequestError> {
    tracks::lookup::lookup(&state.db, track_id)
        .await
        .map_err(|error| storage_error("looking up a track", error))?
        .ok_or_else(|| RequestError {
            code: RequestErrorCode::NotFound,
            message: format!("track {track_id} does not exist or is not ready"),
        })
}

/// Adds plays to play counts, in one transaction; at most
/// `control.batch_changes_max` tracks per request.
pub async fn record_plays(state: &AppState, plays: &[TrackPlays]) -> Result<(), RequestError> {
    let tracks_max = state.config.control.batch_changes_max;
    if plays.len() > tracks_max {
        return Err(RequestError {
            code: RequestErrorCode::BadRequest,
            message: format!(
                "{} tracks in one report; at most {tracks_max} (control.batch_changes_max)",
                plays.len()
            ),
        });
    }
    tracks::lookup::record_plays(&state.db, plays)
        .await
        .map_err(|error| storage_error("recording plays", error))
}

/// Reserves `count` seqs of `room_id` (see [`rooms::seq_reservation`]).
pub async fn reserve_seqs(
    state: &AppState,
    room_id: i64,
    count: u32,
) -> Result<(i64, i64), RequestError> {
    if count == 0 {
        return Err(RequestError {
            code: RequestErrorCode::BadRequest,
            message: "count must be at least 1".into(),
        });
    }
    rooms::seq_reservation::reserve(&state.db, room_id, count)
        .await
        .map_err(|error| storage_error("reserving seqs", error))?
        .ok_or_else(|| RequestError {
            code: RequestErrorCode::NotFound,
            message: format!("room {room_id} does not exist"),
        })
}

/// Gives back the unused end of a room's seq reservation.
pub async fn release_seqs(
    state: &AppState,
    room_id: i64,
    reserved: i64,
    head: i64,
) -> Result<(), RequestError> {
    rooms::seq_reservation::release(&state.db, room_id, reserved, head)
        .await
        .map_err(|error| storage_error("releasing seqs", error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_flatten_to_typed_dotted_keys() {
        let document = serde_json::json!({
            "messages_per_second": 5.5,
            "message_burst": 10,
            "limits": {"enabled": true, "name": "x"},
            "ignored": null
        });
        let mut pairs = Vec::new();
        flatten_settings("", &document, &mut pairs);
        let settings = RuntimeSettings::from_pairs(pairs);
        assert_eq!(
            settings.get("messages_per_second"),
            Some(&SettingValue::Float(5.5))
        );
        assert_eq!(settings.integer("message_burst"), Some(10));
        assert_eq!(settings.boolean("limits.enabled"), Some(true));
        assert_eq!(
            settings.get("limits.name"),
            Some(&SettingValue::Text("x".into()))
        );
        assert_eq!(settings.get("ignored"), None);
    }
}
