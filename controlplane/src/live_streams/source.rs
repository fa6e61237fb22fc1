//! Whether a source may broadcast on a stream: the control protocol's
//! `AuthorizeLiveSource`, answered from the database on every call (so a
//! rotated key or a deleted stream stops authorising at once).

use super::{is_valid_stream_name, stream_key};
use crate::db::Database;

/// What a source presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceCredential {
    /// The stream key (as an Icecast source sends it, as the basic-auth
    /// password).
    StreamKey(String),
    /// A user whose access token the data plane verified.
    User {
        /// The token's subject.
        user_id: i64,
    },
}

impl SourceCredential {
    /// The credential's kind, for logs (never the key itself).
    pub fn kind(&self) -> &'static str {
        match self {
            SourceCredential::StreamKey(_) => "stream_key",
            SourceCredential::User { .. } => "user",
        }
    }
}

/// The stream a source may broadcast on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceGrant {
    /// The stream's id.
    pub stream_id: i64,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner_user_id: i64,
    /// Its title.
    pub title: String,
    /// Record broadcasts into a track.
    pub recording_enabled: bool,
    /// The DSP chain as JSON; empty for the defaults.
    pub dsp_config_json: String,
}

/// Why a source may not broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRefusal {
    /// No stream has that name.
    NoSuchStream,
    /// The key is not the stream's current key.
    WrongKey,
    /// The user does not own the stream (instance admins included: a
    /// broadcast speaks for its owner).
    NotOwner,
}

impl SourceRefusal {
    /// A sentence for the data plane's logs.
    pub fn explanation(self) -> &'static str {
        match self {
            SourceRefusal::NoSuchStream => "no live stream has this name",
            SourceRefusal::WrongKey => "the stream key is not this stream's current key",
            SourceRefusal::NotOwner => "only the stream's owner may broadcast on it",
        }
    }
}

#[derive(sqlx::FromRow)]
struct SourceRow {
    id: i64,
    name: String,
    owner_user_id: i64,
    title: String,
    recording_enabled: i64,
    stream_key_hash: String,
    dsp_config_json: String,
}

/// Decides whether `credential` may broadcast on the stream `stream_name`.
pub async fn authorize(
    db: &Database,
    stream_name: &str,
    credential: &SourceCredential,
) -> Result<Result<SourceGrant, SourceRefusal>, sqlx::Error> {
    // A name outside the rule names no stream; no query needed.
    if !is_valid_stream_name(stream_name) {
        return Ok(Err(SourceRefusal::NoSuchStream));
    }
    let row: Option<SourceRow> = sqlx::query_as(
        "SELECT id, name, owner_user_id, title, recording_enabled, stream_key_hash, dsp_config_json \
         FROM live_streams WHERE name = $1",
    )
    .bind(stream_name)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else {
        return Ok(Err(SourceRefusal::NoSuchStream));
    };
    let allowed = match credential {
        SourceCredential::StreamKey(key) => stream_key::matches(key, &row.stream_key_hash),
        SourceCredential::User { user_id } => *user_id == row.owner_user_id,
    };
    if !allowed {
        return Ok(Err(match credential {
            SourceCredential::StreamKey(_) => SourceRefusal::WrongKey,
            SourceCredential::User { .. } => SourceRefusal::NotOwner,
        }));
    }
    Ok(Ok(SourceGrant {
        stream_id: row.id,
        name: row.name,
        owner_user_id: row.owner_user_id,
        title: row.title,
        recording_enabled: row.recording_enabled != 0,
        dsp_config_json: row.dsp_config_json,
    }))
}
