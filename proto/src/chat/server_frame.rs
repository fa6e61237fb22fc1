//! [`ServerFrame`]: every reply (0x80–0x8F, carrying the command's request
//! id) and event (0x90 on, carrying none) the server sends, with the values
//! they hold: [`MessageEvent`], [`HistoryMessage`], [`ReactionCount`].

use bytes::{BufMut, Bytes, BytesMut};

use super::error_code::{DecodeError, ErrorCode};
use super::opcode;
use super::status::{PresenceStatus, RemovedReason};
use super::wire::{
    put_bool, put_i64_list, put_list_count, put_string, put_text, Detail, WireReader,
};

/// A new message in a room (event 0x90). Wire order is field order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEvent {
    /// The room.
    pub room_id: i64,
    /// The message's seq in the room, from 1.
    pub seq: i64,
    /// The author.
    pub author_id: i64,
    /// The thread's first message, 0 for none.
    pub thread_parent_seq: i64,
    /// When the server accepted it, Unix ms.
    pub created_at_ms: i64,
    /// The nonce the author sent with it (may be empty).
    pub nonce: String,
    /// Mentioned user ids.
    pub mentions: Vec<i64>,
    /// The message.
    pub body: String,
}

impl MessageEvent {
    /// Appends the whole `Message` frame, opcode 0x90 first, to `out`; the
    /// data plane encodes a message once and sends the same bytes to every
    /// subscriber.
    ///
    /// # Panics
    ///
    /// If the nonce is over 65 535 bytes or there are over 65 535 mentions
    /// (the server refuses far smaller ones first).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(opcode::MESSAGE);
        out.put_i64(self.room_id);
        out.put_i64(self.seq);
        out.put_i64(self.author_id);
        out.put_i64(self.thread_parent_seq);
        out.put_i64(self.created_at_ms);
        put_string(out, &self.nonce);
        put_i64_list(out, &self.mentions);
        put_text(out, &self.body);
    }

    /// The whole `Message` frame as one buffer.
    ///
    /// # Panics
    ///
    /// As [`MessageEvent::encode`].
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    fn decode_fields(reader: &mut WireReader<'_>) -> Result<Self, Detail> {
        Ok(Self {
            room_id: reader.i64()?,
            seq: reader.i64()?,
            author_id: reader.i64()?,
            thread_parent_seq: reader.i64()?,
            created_at_ms: reader.i64()?,
            nonce: reader.string()?,
            mentions: reader.i64_list()?,
            body: reader.text()?,
        })
    }
}

/// How many users gave one reaction to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionCount {
    /// The reaction (`string`).
    pub emoji: String,
    /// How many users gave it.
    pub count: u32,
}

impl ReactionCount {
    /// Fewest bytes one takes on the wire: an empty string and the count.
    const WIRE_BYTES_MIN: usize = 2 + 4;

    fn encode(&self, out: &mut BytesMut) {
        put_string(out, &self.emoji);
        out.put_u32(self.count);
    }

    fn decode(reader: &mut WireReader<'_>) -> Result<Self, Detail> {
        Ok(Self {
            emoji: reader.string()?,
            count: reader.u32()?,
        })
    }
}

/// A stored message as a `HistoryPage` carries it. Deleted messages stay as
/// tombstones (`deleted_at_ms` set, empty body) so that seqs have no gaps a
/// client cannot explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryMessage {
    /// Its seq in the room.
    pub seq: i64,
    /// The author.
    pub author_id: i64,
    /// The thread's first message, 0 for none.
    pub thread_parent_seq: i64,
    /// When it was posted, Unix ms.
    pub created_at_ms: i64,
    /// When it was last edited, Unix ms; 0 if never.
    pub edited_at_ms: i64,
    /// When it was deleted, Unix ms; 0 if not deleted.
    pub deleted_at_ms: i64,
    /// Mentioned user ids.
    pub mentions: Vec<i64>,
    /// The current body (`text`).
    pub body: String,
    /// Reactions with their counts.
    pub reactions: Vec<ReactionCount>,
}

impl HistoryMessage {
    /// Fewest bytes one takes on the wire: six i64, an empty list, an empty
    /// text and an empty list.
    const WIRE_BYTES_MIN: usize = 6 * 8 + 2 + 4 + 2;

    fn encode(&self, out: &mut BytesMut) {
        out.put_i64(self.seq);
        out.put_i64(self.author_id);
        out.put_i64(self.thread_parent_seq);
        out.put_i64(self.created_at_ms);
        out.put_i64(self.edited_at_ms);
        out.put_i64(self.deleted_at_ms);
        put_i64_list(out, &self.mentions);
        put_text(out, &self.body);
        put_list_count(out, self.reactions.len());
        for reaction in &self.reactions {
            reaction.encode(out);
        }
    }

    fn decode(reader: &mut WireReader<'_>) -> Result<Self, Detail> {
        Ok(Self {
            seq: reader.i64()?,
            author_id: reader.i64()?,
            thread_parent_seq: reader.i64()?,
            created_at_ms: reader.i64()?,
            edited_at_ms: reader.i64()?,
            deleted_at_ms: reader.i64()?,
            mentions: reader.i64_list()?,
            body: reader.text()?,
            reactions: reader.list(ReactionCount::WIRE_BYTES_MIN, ReactionCount::decode)?,
        })
    }
}

/// A reply or event from server to client: one WebSocket binary message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// 0x80: the command succeeded (Unsubscribe, Typing, SetPresence; Edit,
    /// Delete, React and ReadMarker once committed to the database).
    Ok {
        /// The command's request id.
        request_id: u32,
    },
    /// 0x81: the connection is authenticated.
    AuthOk {
        /// The command's request id.
        request_id: u32,
        /// The authenticated user.
        user_id: i64,
        /// This connection, unique on the server.
        connection_id: u64,
        /// The user's name.
        username: String,
        /// Largest message body the server accepts, in bytes.
        message_bytes_max: u32,
    },
    /// 0x82: the subscription is live; sent after the replayed events.
    Subscribed {
        /// The command's request id.
        request_id: u32,
        /// The room.
        room_id: i64,
        /// The room's newest seq when the subscription started (0: empty).
        head_seq: i64,
        /// How many replayed events (of any kind) came before this reply.
        replayed: u32,
    },
    /// 0x83: the sent message is committed to the database.
    Sent {
        /// The command's request id.
        request_id: u32,
        /// The room.
        room_id: i64,
        /// The message's seq.
        seq: i64,
    },
    /// 0x84: a page of stored messages, ascending seq.
    HistoryPage {
        /// The command's request id.
        request_id: u32,
        /// The room.
        room_id: i64,
        /// The messages.
        messages: Vec<HistoryMessage>,
    },
    /// 0x8F: the command failed; the connection continues.
    Error {
        /// The command's request id; 0 when it could not be read.
        request_id: u32,
        /// What went wrong.
        code: ErrorCode,
        /// When to retry, in ms; 0 for not retryable or no hint.
        retry_after_ms: u32,
        /// A human-readable sentence; not stable.
        message: String,
    },
    /// 0x90: a new message.
    Message(MessageEvent),
    /// 0x91: a message's body was replaced.
    Edited {
        /// The room.
        room_id: i64,
        /// The message.
        seq: i64,
        /// Who edited it.
        editor_id: i64,
        /// When, Unix ms.
        edited_at_ms: i64,
        /// The new body (`text`).
        body: String,
    },
    /// 0x92: a message was deleted.
    Deleted {
        /// The room.
        room_id: i64,
        /// The message.
        seq: i64,
        /// Who deleted it.
        deleter_id: i64,
        /// When, Unix ms.
        deleted_at_ms: i64,
    },
    /// 0x93: a user added or removed a reaction.
    Reaction {
        /// The room.
        room_id: i64,
        /// The message.
        seq: i64,
        /// Who reacted.
        user_id: i64,
        /// True when added, false when removed.
        add: bool,
        /// The reaction.
        emoji: String,
    },
    /// 0x94: a user is typing (ephemeral).
    Typing {
        /// The room.
        room_id: i64,
        /// Who is typing.
        user_id: i64,
    },
    /// 0x95: a user's aggregated presence changed.
    Presence {
        /// The room this event is delivered for.
        room_id: i64,
        /// The user.
        user_id: i64,
        /// The user's new status.
        status: PresenceStatus,
    },
    /// 0x96: the receiving user was mentioned, sent even without a
    /// subscription to the room.
    Mention {
        /// The room.
        room_id: i64,
        /// The message.
        seq: i64,
        /// Its author.
        author_id: i64,
        /// When it was posted, Unix ms.
        created_at_ms: i64,
        /// The message (`text`).
        body: String,
    },
    /// 0x97: the server ended this connection's subscription to a room.
    Removed {
        /// The room.
        room_id: i64,
        /// Why.
        reason: RemovedReason,
    },
    /// 0x98: a watched live stream's now-playing title changed (sent only to
    /// connections that sent `WatchStream` for it).
    NowPlaying {
        /// The live stream's name.
        stream: String,
        /// The title now playing; empty when the broadcaster cleared it.
        title: String,
        /// When the title was set, Unix ms.
        updated_at_ms: i64,
    },
}

impl ServerFrame {
    /// The frame's opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            ServerFrame::Ok { .. } => opcode::OK,
            ServerFrame::AuthOk { .. } => opcode::AUTH_OK,
            ServerFrame::Subscribed { .. } => opcode::SUBSCRIBED,
            ServerFrame::Sent { .. } => opcode::SENT,
            ServerFrame::HistoryPage { .. } => opcode::HISTORY_PAGE,
            ServerFrame::Error { .. } => opcode::ERROR,
            ServerFrame::Message(_) => opcode::MESSAGE,
            ServerFrame::Edited { .. } => opcode::EDITED,
            ServerFrame::Deleted { .. } => opcode::DELETED,
            ServerFrame::Reaction { .. } => opcode::REACTION,
            ServerFrame::Typing { .. } => opcode::TYPING_EVENT,
            ServerFrame::Presence { .. } => opcode::PRESENCE,
            ServerFrame::Mention { .. } => opcode::MENTION,
            ServerFrame::Removed { .. } => opcode::REMOVED,
            ServerFrame::NowPlaying { .. } => opcode::NOW_PLAYING,
        }
    }

    /// The snake-case frame name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ServerFrame::Ok { .. } => "ok",
            ServerFrame::AuthOk { .. } => "auth_ok",
            ServerFrame::Subscribed { .. } => "subscribed",
            ServerFrame::Sent { .. } => "sent",
            ServerFrame::HistoryPage { .. } => "history_page",
            ServerFrame::Error { .. } => "error",
            ServerFrame::Message(_) => "message",
            ServerFrame::Edited { .. } => "edited",
            ServerFrame::Deleted { .. } => "deleted",
            ServerFrame::Reaction { .. } => "reaction",
            ServerFrame::Typing { .. } => "typing",
            ServerFrame::Presence { .. } => "presence",
            ServerFrame::Mention { .. } => "mention",
            ServerFrame::Removed { .. } => "removed",
            ServerFrame::NowPlaying { .. } => "now_playing",
        }
    }

    /// The request id a reply echoes; `None` for events.
    pub fn request_id(&self) -> Option<u32> {
        match self {
            ServerFrame::Ok { request_id }
            | ServerFrame::AuthOk { request_id, .. }
            | ServerFrame::Subscribed { request_id, .. }
            | ServerFrame::Sent { request_id, .. }
            | ServerFrame::HistoryPage { request_id, .. }
            | ServerFrame::Error { request_id, .. } => Some(*request_id),
            _ => None,
        }
    }

    /// Appends the whole frame, opcode first, to `out`.
    ///
    /// # Panics
    ///
    /// If a `string` is over 65 535 bytes or a list over 65 535 items (the
    /// wire cannot express them; the server's limits are far smaller).
    pub fn encode(&self, out: &mut BytesMut) {
        if let ServerFrame::Message(event) = self {
            event.encode(out);
            return;
        }
        out.put_u8(self.opcode());
        if let Some(request_id) = self.request_id() {
            out.put_u32(request_id);
            self.encode_reply_fields(out);
        } else {
            self.encode_event_fields(out);
        }
    }

    /// The whole frame as one buffer, ready to send as a binary message.
    ///
    /// # Panics
    ///
    /// As [`ServerFrame::encode`].
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    fn encode_reply_fields(&self, out: &mut BytesMut) {
        match self {
            ServerFrame::AuthOk {
                user_id,
                connection_id,
                username,
                message_bytes_max,
                ..
            } => {
                out.put_i64(*user_id);
                out.put_u64(*connection_id);
                put_string(out, username);
                out.put_u32(*message_bytes_max);
            }
            ServerFrame::Subscribed {
                room_id,
                head_seq,
                replayed,
                ..
            } => {
                out.put_i64(*room_id);
                out.put_i64(*head_seq);
                out.put_u32(*replayed);
            }
            ServerFrame::Sent { room_id, seq, .. } => {
                out.put_i64(*room_id);
                out.put_i64(*seq);
            }
            ServerFrame::HistoryPage {
                room_id, messages, ..
            } => {
                out.put_i64(*room_id);
                put_list_count(out, messages.len());
                for message in messages {
                    message.encode(out);
                }
            }
            ServerFrame::Error {
                code,
                retry_after_ms,
                message,
                ..
            } => {
                out.put_u16(u16::from(*code));
                out.put_u32(*retry_after_ms);
                put_string(out, message);
            }
            // `Ok` has no fields after the request id; events are not replies.
            _ => {}
        }
    }

    fn encode_event_fields(&self, out: &mut BytesMut) {
        match self {
            ServerFrame::Edited {
                room_id,
                seq,
                editor_id,
                edited_at_ms,
                body,
            } => {
                put_i64s(out, &[*room_id, *seq, *editor_id, *edited_at_ms]);
                put_text(out, body);
            }
            ServerFrame::Deleted {
                room_id,
                seq,
                deleter_id,
                deleted_at_ms,
            } => put_i64s(out, &[*room_id, *seq, *deleter_id, *deleted_at_ms]),
            ServerFrame::Reaction {
                room_id,
                seq,
                user_id,
                add,
                emoji,
            } => {
                put_i64s(out, &[*room_id, *seq, *user_id]);
                put_bool(out, *add);
                put_string(out, emoji);
            }
            ServerFrame::Typing { room_id, user_id } => put_i64s(out, &[*room_id, *user_id]),
            ServerFrame::Presence {
                room_id,
                user_id,
                status,
            } => {
                put_i64s(out, &[*room_id, *user_id]);
                out.put_u8(u8::from(*status));
            }
            ServerFrame::Mention {
                room_id,
                seq,
                author_id,
                created_at_ms,
                body,
            } => {
                put_i64s(out, &[*room_id, *seq, *author_id, *created_at_ms]);
                put_text(out, body);
            }
            ServerFrame::Removed { room_id, reason } => {
                out.put_i64(*room_id);
                out.put_u8(u8::from(*reason));
            }
            ServerFrame::NowPlaying {
                stream,
                title,
                updated_at_ms,
            } => {
                put_string(out, stream);
                put_string(out, title);
                out.put_i64(*updated_at_ms);
            }
            // Replies carry a request id; `Message` is encoded by its event.
            _ => {}
        }
    }

    /// Decodes one binary message. Checks structure only (lengths, UTF-8,
    /// bools, enumeration bytes, no trailing bytes). Never panics.
    pub fn decode(payload: &[u8]) -> Result<ServerFrame, DecodeError> {
        let Some(&frame_opcode) = payload.first() else {
            return Err(DecodeError::malformed(0, "empty frame"));
        };
        let is_reply = frame_opcode < opcode::FIRST_EVENT;
        let request_id = match payload.get(1..5) {
            Some(id_bytes) if is_reply => {
                u32::from_be_bytes([id_bytes[0], id_bytes[1], id_bytes[2], id_bytes[3]])
            }
            _ => 0,
        };
        let mut reader = WireReader::new(&payload[1..]);
        let decoded = if is_reply {
            decode_reply(frame_opcode, &mut reader)
        } else {
            decode_event(frame_opcode, &mut reader)
        };
        match decoded {
            Ok(Some(frame)) => match reader.finish() {
                Ok(()) => Ok(frame),
                Err(detail) => Err(DecodeError::malformed(request_id, detail)),
            },
            Ok(None) => Err(DecodeError::unknown_opcode(request_id)),
            Err(detail) => Err(DecodeError::malformed(request_id, detail)),
        }
    }
}

fn put_i64s(out: &mut BytesMut, values: &[i64]) {
    for value in values {
        out.put_i64(*value);
    }
}

/// Reads a reply's fields after the opcode; `None` for an unknown opcode.
fn decode_reply(
    frame_opcode: u8,
    reader: &mut WireReader<'_>,
) -> Result<Option<ServerFrame>, Detail> {
    if !matches!(
        frame_opcode,
        opcode::OK
            | opcode::AUTH_OK
            | opcode::SUBSCRIBED
            | opcode::SENT
            | opcode::HISTORY_PAGE
            | opcode::ERROR
    ) {
        return Ok(None);
    }
    let request_id = reader.u32()?;
    let frame = match frame_opcode {
        opcode::OK => ServerFrame::Ok { request_id },
        opcode::AUTH_OK => ServerFrame::AuthOk {
            request_id,
            user_id: reader.i64()?,
            connection_id: reader.u64()?,
            username: reader.string()?,
            message_bytes_max: reader.u32()?,
        },
        opcode::SUBSCRIBED => ServerFrame::Subscribed {
            request_id,
            room_id: reader.i64()?,
            head_seq: reader.i64()?,
            replayed: reader.u32()?,
        },
        opcode::SENT => ServerFrame::Sent {
            request_id,
            room_id: reader.i64()?,
            seq: reader.i64()?,
        },
        opcode::HISTORY_PAGE => ServerFrame::HistoryPage {
            request_id,
            room_id: reader.i64()?,
            messages: reader.list(HistoryMessage::WIRE_BYTES_MIN, HistoryMessage::decode)?,
        },
        opcode::ERROR => ServerFrame::Error {
            request_id,
            code: ErrorCode::from_u16(reader.u16()?).ok_or("unknown error code")?,
            retry_after_ms: reader.u32()?,
            message: reader.string()?,
        },
        _ => return Ok(None),
    };
    Ok(Some(frame))
}

/// Reads an event's fields after the opcode; `None` for an unknown opcode.
fn decode_event(
    frame_opcode: u8,
    reader: &mut WireReader<'_>,
) -> Result<Option<ServerFrame>, Detail> {
    let frame = match frame_opcode {
        opcode::MESSAGE => ServerFrame::Message(MessageEvent::decode_fields(reader)?),
        opcode::EDITED => ServerFrame::Edited {
            room_id: reader.i64()?,
            seq: reader.i64()?,
            editor_id: reader.i64()?,
            edited_at_ms: reader.i64()?,
            body: reader.text()?,
        },
        opcode::DELETED => ServerFrame::Deleted {
            room_id: reader.i64()?,
            seq: reader.i64()?,
            deleter_id: reader.i64()?,
            deleted_at_ms: reader.i64()?,
        },
        opcode::REACTION => ServerFrame::Reaction {
            room_id: reader.i64()?,
            seq: reader.i64()?,
            user_id: reader.i64()?,
            add: reader.bool()?,
            emoji: reader.string()?,
        },
        opcode::TYPING_EVENT => ServerFrame::Typing {
            room_id: reader.i64()?,
            user_id: reader.i64()?,
        },
        opcode::PRESENCE => ServerFrame::Presence {
            room_id: reader.i64()?,
            user_id: reader.i64()?,
            status: PresenceStatus::from_u8(reader.u8()?).ok_or("unknown presence status")?,
        },
        opcode::MENTION => ServerFrame::Mention {
            room_id: reader.i64()?,
            seq: reader.i64()?,
            author_id: reader.i64()?,
            created_at_ms: reader.i64()?,
            body: reader.text()?,
        },
        opcode::REMOVED => ServerFrame::Removed {
            room_id: reader.i64()?,
            reason: RemovedReason::from_u8(reader.u8()?).ok_or("unknown removed reason")?,
        },
        opcode::NOW_PLAYING => ServerFrame::NowPlaying {
            stream: reader.string()?,
            title: reader.string()?,
            updated_at_ms: reader.i64()?,
        },
        _ => return Ok(None),
    };
    Ok(Some(frame))
}
