//! The control plane's domain values as they travel over the control
//! protocol: plain structs and enums, archived with rkyv.
//!
//! They mirror types that live in the control plane (signing keys, room
//! rights, message changes, stored messages, runtime settings), but `proto`
//! does not depend on the control plane: the control server converts at its
//! edge. Times are Unix milliseconds (`*_ms`), ids are the database's `i64`.

use rkyv::{Archive, Deserialize, Serialize};

/// A public key that verifies access tokens whose header names `kid`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The key id in the token header.
    pub kid: String,
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
    /// Tokens signed with this key are refused after this time; `None`: the
    /// key is current and has no end yet.
    pub valid_until_ms: Option<i64>,
}

/// One runtime setting's value.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum SettingValue {
    /// An integer (limits, counts, durations).
    Integer(i64),
    /// A fraction (rates).
    Float(f64),
    /// A switch.
    Boolean(bool),
    /// Text.
    Text(String),
}

/// One runtime setting: a dotted key (`rate_limits.messages_per_second`) and
/// its value.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Setting {
    /// The dotted key, as in the admin settings document.
    pub key: String,
    /// The value.
    pub value: SettingValue,
}

/// The runtime settings of one version, as key/value pairs sorted by key.
///
/// A list rather than a struct with one field per setting, so that the
/// control plane can add a setting without a protocol version change: a data
/// plane ignores keys it does not know and keeps its default for keys that
/// are absent.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct RuntimeSettings {
    /// Every setting, sorted by key, each key once.
    pub entries: Vec<Setting>,
}

impl RuntimeSettings {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&SettingValue> {
        self.entries
            .binary_search_by(|entry| entry.key.as_str().cmp(key))
            .ok()
            .map(|index| &self.entries[index].value)
    }

    /// The integer value of `key`, if present and an integer.
    pub fn integer(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Some(SettingValue::Integer(value)) => Some(*value),
            _ => None,
        }
    }

    /// The boolean value of `key`, if present and a boolean.
    pub fn boolean(&self, key: &str) -> Option<bool> {
        match self.get(key) {
            Some(SettingValue::Boolean(value)) => Some(*value),
            _ => None,
        }
    }

    /// Builds settings from pairs in any order; a later duplicate key wins.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, SettingValue)>) -> Self {
        let mut entries: Vec<Setting> = Vec::new();
        for (key, value) in pairs {
            match entries.iter_mut().find(|entry| entry.key == key) {
                Some(entry) => entry.value = value,
                None => entries.push(Setting { key, value }),
            }
        }
        entries.sort_by(|left, right| left.key.cmp(&right.key));
        Self { entries }
    }
}

/// A member's role in a room, from most to least powerful.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Created the room; may do everything.
    Owner,
    /// Manages settings, roles below admin, moderation.
    Admin,
    /// Mutes, kicks, bans, deletes others' messages.
    Moderator,
    /// Reads and posts.
    Member,
}

/// What one user may do in one room right now.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RoomRights {
    /// False when the room does not exist (every right is then false).
    pub room_exists: bool,
    /// The user's role; `None` when not a member.
    pub role: Option<Role>,
    /// May read messages and history.
    pub can_read: bool,
    /// May post (ignoring mute and slow mode, which the data plane applies).
    pub can_post: bool,
    /// May delete other members' messages.
    pub can_delete_others: bool,
    /// May mute, kick and ban.
    pub can_moderate: bool,
    /// Muted until this time, if muted.
    pub muted_until_ms: Option<i64>,
    /// Banned from the room.
    pub banned: bool,
    /// Seconds a member must wait between posts; 0: no slow mode.
    pub slow_mode_seconds: i64,
}

/// A new message, as the room's owner shard sequenced it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The room.
    pub room_id: i64,
    /// The room's sequence number of this message.
    pub seq: i64,
    /// The author.
    pub author_id: i64,
    /// The client's id of this message, for de-duplication of retries;
    /// empty when the client gave none.
    pub client_nonce: String,
    /// The text.
    pub body: String,
    /// The message this one replies to in a thread.
    pub thread_parent_seq: Option<i64>,
    /// Mentioned users.
    pub mentions: Vec<i64>,
    /// When the owner shard accepted it.
    pub created_at_ms: i64,
}

/// One change to a room's messages, in the order the owner shard applied it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum MessageChange {
    /// A new message.
    New(NewMessage),
    /// A message's text replaced.
    Edit {
        /// The room.
        room_id: i64,
        /// The edited message.
        seq: i64,
        /// Who edited it.
        editor_id: i64,
        /// The new text.
        body: String,
        /// When.
        edited_at_ms: i64,
    },
    /// A message deleted (kept as a tombstone).
    Delete {
        /// The room.
        room_id: i64,
        /// The deleted message.
        seq: i64,
        /// Who deleted it (the author, or a moderator: the data plane checked).
        deleter_id: i64,
        /// When.
        deleted_at_ms: i64,
    },
    /// A reaction added.
    ReactionAdd {
        /// The room.
        room_id: i64,
        /// The message reacted to.
        seq: i64,
        /// Who reacted.
        user_id: i64,
        /// The reaction (an emoji).
        emoji: String,
    },
    /// A reaction removed.
    ReactionRemove {
        /// The room.
        room_id: i64,
        /// The message.
        seq: i64,
        /// Whose reaction.
        user_id: i64,
        /// The reaction.
        emoji: String,
    },
    /// A user has read the room up to `seq`.
    ReadMarker {
        /// The room.
        room_id: i64,
        /// The reader.
        user_id: i64,
        /// The last read message (markers only move forward).
        seq: i64,
    },
}

impl MessageChange {
    /// The room the change belongs to.
    pub fn room_id(&self) -> i64 {
        match self {
            MessageChange::New(message) => message.room_id,
            MessageChange::Edit { room_id, .. }
            | MessageChange::Delete { room_id, .. }
            | MessageChange::ReactionAdd { room_id, .. }
            | MessageChange::ReactionRemove { room_id, .. }
            | MessageChange::ReadMarker { room_id, .. } => *room_id,
        }
    }
}

/// One reaction on a stored message, with how many users gave it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReactionCount {
    /// The reaction.
    pub emoji: String,
    /// How many users gave it.
    pub count: i64,
}

/// A persisted message as history returns it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The room.
    pub room_id: i64,
    /// Its sequence number.
    pub seq: i64,
    /// The author.
    pub author_id: i64,
    /// The current text (empty once deleted).
    pub body: String,
    /// The thread parent.
    pub thread_parent_seq: Option<i64>,
    /// Mentioned users.
    pub mentions: Vec<i64>,
    /// When it was posted.
    pub created_at_ms: i64,
    /// When it was last edited.
    pub edited_at_ms: Option<i64>,
    /// When it was deleted (a tombstone).
    pub deleted_at_ms: Option<i64>,
    /// Reactions with their counts.
    pub reactions: Vec<ReactionCount>,
}

/// A revoked access token: refused until it would have expired anyway.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The token id (`jti`).
    pub token_id: String,
    /// When the token expires; the revocation may be forgotten after it.
    pub expires_at_ms: i64,
}

/// What a live source presented to broadcast.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum LiveCredential {
    /// The stream key (HTTP basic auth password, as Icecast sources send it).
    StreamKey(String),
    /// A bearer access token the data plane already verified: its user.
    User {
        /// The token's subject.
        user_id: i64,
    },
}

/// A live stream a source may broadcast on, and how to process it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LiveSourceGrant {
    /// The stream's id.
    pub stream_id: i64,
    /// The stream's name (`/v1/live/{name}`).
    pub name: String,
    /// The user who owns the stream.
    pub owner_user_id: i64,
    /// The stream's title as stored (a source's `ice-name` may override it
    /// for this broadcast).
    pub title: String,
    /// Record the broadcast into a track.
    pub recording_enabled: bool,
    /// The DSP chain for raw PCM sources, as JSON (`veza_codec::dsp::DspConfig`;
    /// empty: the defaults).
    pub dsp_config_json: String,
}

/// Who may hear a track.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackVisibility {
    /// Anyone.
    Public,
    /// Anyone with the link (which carries the track's link secret).
    Unlisted,
    /// The owner (bearer token) or a signed URL.
    Private,
}

/// One stored rendition of a track.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TrackRendition {
    /// kb/s of the Opus ladder rung.
    pub bitrate_kbps: u32,
    /// The file, relative to the media directory both processes share
    /// (`tracks/{track_id}/{bitrate}.opus`; never absolute, never `..`).
    pub relative_path: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// A strong entity tag (quoted), stable for the file's content.
    pub etag: String,
    /// When it was written (Unix ms), for `Last-Modified`.
    pub modified_at_ms: i64,
}

/// What the data plane needs to serve a ready track.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TrackMeta {
    /// The track.
    pub track_id: i64,
    /// Its owner.
    pub owner_user_id: i64,
    /// Who may hear it.
    pub visibility: TrackVisibility,
    /// The secret an unlisted track's link carries (`?s=`); empty for
    /// public and private tracks.
    pub link_secret: String,
    /// The renditions, ascending bitrate.
    pub renditions: Vec<TrackRendition>,
    /// The waveform JSON (BBC audiowaveform format), relative to the media
    /// directory.
    pub waveform_relative_path: String,
    /// Duration in milliseconds.
    pub duration_ms: i64,
}

/// Plays of one track.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TrackPlays {
    /// The track.
    pub track_id: i64,
    /// Plays since the last report.
    pub plays: u64,
}
