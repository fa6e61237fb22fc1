//! Every frame of the control protocol: what a data plane sends
//! ([`ClientFrame`]) and what the control plane sends ([`ServerFrame`]).
//!
//! A connection starts with [`Hello`] and [`Welcome`]; then the data plane
//! sends [`Request`]s, each with an id it chose, and the control plane answers
//! each with one [`Response`] carrying the same id, in any order. Between
//! responses the control plane sends [`Push`]es. An [`ErrorFrame`] ends the
//! connection: its sender closes right after it.

use rkyv::{Archive, Deserialize, Serialize};

use super::domain::{
    LiveCredential, LiveSourceGrant, MessageChange, Revocation, RoomRights, RuntimeSettings,
    SigningKey, StoredMessage, TrackMeta, TrackPlays,
};

/// The data plane's first frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// [`super::PROTOCOL_VERSION`] of the sender.
    pub protocol_version: u16,
    /// The data plane node's name (host name or configured id).
    pub node_id: String,
    /// Which shard of the node this connection belongs to.
    pub shard_idx: u32,
    /// How many shards the node runs.
    pub shard_count: u32,
}

/// The control plane's answer to an accepted [`Hello`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The version both ends now speak.
    pub protocol_version: u16,
    /// The control plane's build, for logs.
    pub server_version: String,
}

/// A request and the id its response will carry.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the data plane, unique among its requests in flight.
    pub request_id: u64,
    /// What is asked.
    pub body: RequestBody,
}

/// What a data plane may ask.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    /// The public keys that verify access tokens. Answered with
    /// [`ResponseBody::SigningKeys`].
    FetchSigningKeys,
    /// The current runtime settings. Answered with [`ResponseBody::Config`].
    FetchConfig,
    /// What `user_id` may do in `room_id`. Answered with [`ResponseBody::Rights`].
    LookupRights {
        /// The room.
        room_id: i64,
        /// The user.
        user_id: i64,
    },
    /// Store these changes in one transaction. Answered with
    /// [`ResponseBody::BatchPersisted`] only after the commit.
    PersistBatch {
        /// The changes, in the order they were applied.
        changes: Vec<MessageChange>,
    },
    /// A page of a room's history. Answered with [`ResponseBody::History`].
    FetchHistory {
        /// The room.
        room_id: i64,
        /// Only messages with a smaller seq (newest first up to `limit`).
        before_seq: Option<i64>,
        /// Only messages with a greater seq (oldest first up to `limit`).
        after_seq: Option<i64>,
        /// At most this many messages.
        limit: u32,
    },
    /// Every revoked access token that has not expired yet. Answered with
    /// [`ResponseBody::Revocations`].
    FetchRevocations,
    /// May this credential broadcast on the live stream named `stream_name`?
    /// Answered with [`ResponseBody::LiveSource`], or the error
    /// [`RequestErrorCode::NotFound`] (no such stream) or
    /// [`RequestErrorCode::Denied`] (wrong key, not the owner).
    AuthorizeLiveSource {
        /// The stream's name as in `/v1/live/{stream}`.
        stream_name: String,
        /// What the source presented.
        credential: LiveCredential,
    },
    /// Append `data` (whole Ogg pages of a broadcast's highest rendition) to
    /// the recording `recording_id` of stream `stream_id`. Chunks of one
    /// recording are sent one at a time, in order; `chunk_idx` starts at 0
    /// and a repeated index (a retry after a timeout) is answered without
    /// appending twice. With `last` the recording is made durable (fsync,
    /// rename) and listed. Answered with [`ResponseBody::RecordingStored`].
    AppendRecording {
        /// The stream.
        stream_id: i64,
        /// Chosen by the data plane, unique per stream (the broadcast's
        /// start time in Unix ms).
        recording_id: i64,
        /// 0, 1, 2, … within the recording.
        chunk_idx: u32,
        /// Whole Ogg pages.
        data: Vec<u8>,
        /// The broadcast ended: this is the last chunk.
        last: bool,
    },
    /// What the data plane needs to serve a track. Answered with
    /// [`ResponseBody::Track`], or [`RequestErrorCode::NotFound`] when the
    /// track does not exist or is not ready (queued, processing, failed).
    LookupTrack {
        /// The track.
        track_id: i64,
    },
    /// Plays counted on a data plane since its last report. Answered with
    /// [`ResponseBody::PlaysRecorded`] after the commit.
    RecordPlays {
        /// Per track.
        plays: Vec<TrackPlays>,
    },
    /// Reserve the next `count` seqs of `room_id` for the shard that owns
    /// it, durably, before it assigns them: a data plane that dies with
    /// sequenced but uncommitted messages leaves their seqs reserved, so the
    /// next owner never assigns one of them again. The block starts after
    /// the greater of the room's newest stored seq and its last reservation.
    /// Answered with [`ResponseBody::SeqsReserved`] after the commit, or
    /// [`RequestErrorCode::NotFound`] for a room that does not exist.
    ReserveSeqs {
        /// The room.
        room_id: i64,
        /// How many seqs (at least 1).
        count: u32,
    },
    /// The owner unloads `room_id` with its newest assigned seq `head`: the
    /// reservation `reserved` (the last seq it holds) shrinks to `head`, so
    /// the next owner continues without a gap. Changes nothing when the
    /// room's reservation is no longer `reserved` (someone reserved since).
    /// Answered with [`ResponseBody::SeqsReleased`].
    ReleaseSeqs {
        /// The room.
        room_id: i64,
        /// The last seq of the owner's reservation.
        reserved: i64,
        /// The owner's newest assigned seq.
        head: i64,
    },
}

impl RequestBody {
    /// The request's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            RequestBody::FetchSigningKeys => "fetch_signing_keys",
            RequestBody::FetchConfig => "fetch_config",
            RequestBody::LookupRights { .. } => "lookup_rights",
            RequestBody::PersistBatch { .. } => "persist_batch",
            RequestBody::FetchHistory { .. } => "fetch_history",
            RequestBody::FetchRevocations => "fetch_revocations",
            RequestBody::AuthorizeLiveSource { .. } => "authorize_live_source",
            RequestBody::AppendRecording { .. } => "append_recording",
            RequestBody::LookupTrack { .. } => "lookup_track",
            RequestBody::RecordPlays { .. } => "record_plays",
            RequestBody::ReserveSeqs { .. } => "reserve_seqs",
            RequestBody::ReleaseSeqs { .. } => "release_seqs",
        }
    }
}

/// What the data plane sends.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// The first frame of every connection, and only the first.
    Hello(Hello),
    /// A request.
    Request(Request),
}

/// The answer to the request with `request_id`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Response {
    /// The id of the request this answers.
    pub request_id: u64,
    /// The answer.
    pub result: ResponseResult,
}

/// A request's outcome.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ResponseResult {
    /// It was done.
    Ok(ResponseBody),
    /// It was refused or failed; the connection carries on.
    Err(RequestError),
}

/// The successful answers, one per [`RequestBody`] variant.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ResponseBody {
    /// To [`RequestBody::FetchSigningKeys`].
    SigningKeys {
        /// Every key that may still verify a token.
        keys: Vec<SigningKey>,
    },
    /// To [`RequestBody::FetchConfig`].
    Config {
        /// The settings version.
        version: i64,
        /// The settings.
        settings: RuntimeSettings,
    },
    /// To [`RequestBody::LookupRights`].
    Rights(RoomRights),
    /// To [`RequestBody::PersistBatch`]: the batch is committed.
    BatchPersisted {
        /// How many changes the committed batch held.
        changes_persisted: u32,
    },
    /// To [`RequestBody::FetchHistory`].
    History {
        /// The page, in ascending seq.
        messages: Vec<StoredMessage>,
    },
    /// To [`RequestBody::FetchRevocations`].
    Revocations {
        /// Every revoked token that has not expired.
        revocations: Vec<Revocation>,
    },
    /// To [`RequestBody::AuthorizeLiveSource`]: the source may broadcast.
    LiveSource(LiveSourceGrant),
    /// To [`RequestBody::AppendRecording`]: the chunk is written (and, for
    /// the last one, the recording is durable and listed).
    RecordingStored {
        /// Bytes of the recording so far.
        bytes_total: u64,
    },
    /// To [`RequestBody::LookupTrack`].
    Track(TrackMeta),
    /// To [`RequestBody::RecordPlays`]: the counts are committed.
    PlaysRecorded,
    /// To [`RequestBody::ReserveSeqs`]: seqs `first..=last` are the
    /// caller's, committed.
    SeqsReserved {
        /// The first reserved seq.
        first: i64,
        /// The last reserved seq.
        last: i64,
    },
    /// To [`RequestBody::ReleaseSeqs`].
    SeqsReleased,
}

/// Why a request failed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestErrorCode {
    /// The request's values are refused (a limit, an unknown room in a batch).
    BadRequest,
    /// What the request names does not exist.
    NotFound,
    /// A storage or internal failure; the request may be retried.
    Internal,
    /// The control plane cannot serve this now (starting, shutting down, a
    /// part not built yet); retry later.
    Unavailable,
    /// The credential does not grant what was asked (a wrong stream key, a
    /// user who does not own the stream).
    Denied,
}

impl RequestErrorCode {
    /// A stable name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            RequestErrorCode::BadRequest => "bad_request",
            RequestErrorCode::NotFound => "not_found",
            RequestErrorCode::Internal => "internal",
            RequestErrorCode::Unavailable => "unavailable",
            RequestErrorCode::Denied => "denied",
        }
    }
}

/// A failed request's code and explanation.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// What kind of failure.
    pub code: RequestErrorCode,
    /// A sentence for logs.
    pub message: String,
}

/// A change the control plane pushes as soon as it is committed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Push {
    /// New runtime settings.
    ConfigChanged {
        /// The settings version.
        version: i64,
        /// The whole new settings.
        settings: RuntimeSettings,
    },
    /// The signing keys changed (rotation, retirement): here is the new set.
    SigningKeysChanged {
        /// Every key that may still verify a token.
        keys: Vec<SigningKey>,
    },
    /// These access tokens are revoked.
    TokensRevoked {
        /// Their ids (`jti`).
        token_ids: Vec<String>,
        /// Their user.
        user_id: i64,
        /// When the last of them expires.
        expires_at_ms: i64,
    },
    /// A user's membership or role in a room changed.
    MembershipChanged {
        /// The room.
        room_id: i64,
        /// The user.
        user_id: i64,
    },
    /// A user was muted, unmuted, banned or unbanned in a room.
    ModerationChanged {
        /// The room.
        room_id: i64,
        /// The user.
        user_id: i64,
    },
    /// A room's settings changed or it was deleted.
    RoomChanged {
        /// The room.
        room_id: i64,
    },
    /// A track changed (visibility, renditions, deleted): drop its cached
    /// metadata.
    TrackChanged {
        /// The track.
        track_id: i64,
    },
    /// Pushes were lost (the receiver fell behind): fetch signing keys,
    /// config and revocations again, and drop cached rights.
    Resync,
}

impl Push {
    /// The push's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Push::ConfigChanged { .. } => "config_changed",
            Push::SigningKeysChanged { .. } => "signing_keys_changed",
            Push::TokensRevoked { .. } => "tokens_revoked",
            Push::MembershipChanged { .. } => "membership_changed",
            Push::ModerationChanged { .. } => "moderation_changed",
            Push::RoomChanged { .. } => "room_changed",
            Push::TrackChanged { .. } => "track_changed",
            Push::Resync => "resync",
        }
    }
}

/// Why a connection is being closed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolErrorCode {
    /// The peer speaks a protocol version this end does not.
    VersionMismatch,
    /// A frame failed validation (not a valid archive of the expected type).
    MalformedFrame,
    /// A frame's length prefix is over the receiver's `frame_bytes_max`.
    FrameTooLarge,
    /// A valid frame at the wrong time (a request before `Hello`, a second
    /// `Hello`).
    UnexpectedFrame,
    /// `Hello` did not arrive in time.
    HandshakeTimeout,
    /// The control plane is shutting down; reconnect later.
    ShuttingDown,
}

impl ProtocolErrorCode {
    /// A stable name, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolErrorCode::VersionMismatch => "version_mismatch",
            ProtocolErrorCode::MalformedFrame => "malformed_frame",
            ProtocolErrorCode::FrameTooLarge => "frame_too_large",
            ProtocolErrorCode::UnexpectedFrame => "unexpected_frame",
            ProtocolErrorCode::HandshakeTimeout => "handshake_timeout",
            ProtocolErrorCode::ShuttingDown => "shutting_down",
        }
    }
}

/// The last frame of a connection: why it is closed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// What went wrong.
    pub code: ProtocolErrorCode,
    /// A sentence for logs.
    pub message: String,
}

/// What the control plane sends.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ServerFrame {
    /// The handshake was accepted.
    Welcome(Welcome),
    /// The answer to a request.
    Response(Response),
    /// A pushed change.
    Push(Push),
    /// The connection is closed after this frame.
    Error(ErrorFrame),
}
