//! [`ClientFrame`]: every command a client sends. Each carries the
//! `request_id` the server echoes in its reply.

use bytes::{BufMut, Bytes, BytesMut};

use super::error_code::DecodeError;
use super::opcode;
use super::status::PresenceStatus;
use super::wire::{put_bool, put_i64_list, put_string, put_text, Detail, WireReader};

/// A command from client to server: one WebSocket binary message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// 0x01: authenticate; must be the first command of a connection.
    Auth {
        /// Echoed in the reply.
        request_id: u32,
        /// An access token from the control plane (`POST /v1/sessions`).
        token: String,
    },
    /// 0x02: subscribe to a room's events.
    Subscribe {
        /// Echoed in the reply.
        request_id: u32,
        /// The room.
        room_id: i64,
        /// -1: live events only; n ≥ 0: first replay every event after seq n.
        since_seq: i64,
    },
    /// 0x03: end a subscription.
    Unsubscribe {
        /// Echoed in the reply.
        request_id: u32,
        /// The room.
        room_id: i64,
    },
    /// 0x04: post a message.
    Send {
        /// Echoed in the reply.
        request_id: u32,
        /// The room.
        room_id: i64,
        /// The thread's first message, 0 for none.
        thread_parent_seq: i64,
        /// Chosen by the client to make retries idempotent; may be empty.
        nonce: String,
        /// Mentioned user ids.
        mentions: Vec<i64>,
        /// The message.
        body: String,
    },
    /// 0x05: replace a message's body.
    Edit {
        /// Echoed in the reply.
        request_id: u32,
        /// The room.
        room_id: i64,
        /// The message.
        seq: i64,
        /// The new body.
        body: String,
    },
    /// 0x06: delete a message.
    Delete {
        /// Echoed in the reply.
        request_id: u32,
        /// The room.
        room_id: i64,
        /// The message.
        seq: i64,
    },
    /// 0x07: add or remove the user's reaction to a message.
    React {
        /// Echoed in the reply.
        request_id: u32,
        /// The room.
        room_id: i64,
        /// The message.
        seq: i64,
        /// True to add, false to remove.
        add: bool,
        /// The reaction.
        emoji: String,
    },
    /// 0x08: the user is typing in a room.
    Typing {
        /// Echoed in the reply.
        request_id: u32,
        /// The room.
        room_id: i64,
    },
    /// 0x09: set this connection's presence.
    SetPresence {
        /// Echoed in the reply.
        request_id: u32,
        /// The status.
        status: PresenceStatus,
    },
    /// 0x0A: the user has read the room up to `seq`.
    ReadMarker {
        /// Echoed in the reply.
        request_id: u32,
        /// The room.
        room_id: i64,
        /// The last message read.
        seq: i64,
    },
    /// 0x0B: fetch a page of stored messages.
    History {
        /// Echoed in the reply.
        request_id: u32,
        /// The room.
        room_id: i64,
        /// Only messages below this seq; 0 for no bound (the newest page).
        before_seq: i64,
        /// Only messages above this seq, oldest first; -1 for no bound.
        after_seq: i64,
        /// At most this many messages.
        limit: u16,
    },
    /// 0x0C: receive the stream's now-playing titles (`NowPlaying` events).
    WatchStream {
        /// Echoed in the reply.
        request_id: u32,
        /// The live stream's name (`^[a-z0-9][a-z0-9_-]{0,63}$`).
        stream: String,
    },
    /// 0x0D: stop receiving the stream's now-playing titles.
    UnwatchStream {
        /// Echoed in the reply.
        request_id: u32,
        /// The live stream's name.
        stream: String,
    },
}

impl ClientFrame {
    /// The frame's opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            ClientFrame::Auth { .. } => opcode::AUTH,
            ClientFrame::Subscribe { .. } => opcode::SUBSCRIBE,
            ClientFrame::Unsubscribe { .. } => opcode::UNSUBSCRIBE,
            ClientFrame::Send { .. } => opcode::SEND,
            ClientFrame::Edit { .. } => opcode::EDIT,
            ClientFrame::Delete { .. } => opcode::DELETE,
            ClientFrame::React { .. } => opcode::REACT,
            ClientFrame::Typing { .. } => opcode::TYPING,
            ClientFrame::SetPresence { .. } => opcode::SET_PRESENCE,
            ClientFrame::ReadMarker { .. } => opcode::READ_MARKER,
            ClientFrame::History { .. } => opcode::HISTORY,
            ClientFrame::WatchStream { .. } => opcode::WATCH_STREAM,
            ClientFrame::UnwatchStream { .. } => opcode::UNWATCH_STREAM,
        }
    }

    /// The snake-case command name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ClientFrame::Auth { .. } => "auth",
            ClientFrame::Subscribe { .. } => "subscribe",
            ClientFrame::Unsubscribe { .. } => "unsubscribe",
            ClientFrame::Send { .. } => "send",
            ClientFrame::Edit { .. } => "edit",
            ClientFrame::Delete { .. } => "delete",
            ClientFrame::React { .. } => "react",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::SetPresence { .. } => "set_presence",
            ClientFrame::ReadMarker { .. } => "read_marker",
            ClientFrame::History { .. } => "history",
            ClientFrame::WatchStream { .. } => "watch_stream",
            ClientFrame::UnwatchStream { .. } => "unwatch_stream",
        }
    }

    /// The request id the server will echo.
    pub fn request_id(&self) -> u32 {
        match self {
            ClientFrame::Auth { request_id, .. }
            | ClientFrame::Subscribe { request_id, .. }
            | ClientFrame::Unsubscribe { request_id, .. }
            | ClientFrame::Send { request_id, .. }
            | ClientFrame::Edit { request_id, .. }
            | ClientFrame::Delete { request_id, .. }
            | ClientFrame::React { request_id, .. }
            | ClientFrame::Typing { request_id, .. }
            | ClientFrame::SetPresence { request_id, .. }
            | ClientFrame::ReadMarker { request_id, .. }
            | ClientFrame::History { request_id, .. }
            | ClientFrame::WatchStream { request_id, .. }
            | ClientFrame::UnwatchStream { request_id, .. } => *request_id,
        }
    }

    /// Appends the whole frame, opcode first, to `out`.
    ///
    /// # Panics
    ///
    /// If a `string` is over 65 535 bytes or a list over 65 535 items: the
    /// wire cannot express them, and the caller enforces the far smaller
    /// protocol limits (`TOKEN_BYTES_MAX`, `NONCE_BYTES_MAX`,
    /// `STREAM_NAME_BYTES_MAX`, ...) first.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.opcode());
        out.put_u32(self.request_id());
        match self {
            ClientFrame::Auth { token, .. } => put_string(out, token),
            ClientFrame::WatchStream { stream, .. } | ClientFrame::UnwatchStream { stream, .. } => {
                put_string(out, stream);
            }
            ClientFrame::Subscribe {
                room_id, since_seq, ..
            } => {
                out.put_i64(*room_id);
                out.put_i64(*since_seq);
            }
            ClientFrame::Unsubscribe { room_id, .. } | ClientFrame::Typing { room_id, .. } => {
                out.put_i64(*room_id);
            }
            ClientFrame::Send {
                room_id,
                thread_parent_seq,
                nonce,
                mentions,
                body,
                ..
            } => {
                out.put_i64(*room_id);
                out.put_i64(*thread_parent_seq);
                put_string(out, nonce);
                put_i64_list(out, mentions);
                put_text(out, body);
            }
            ClientFrame::Edit {
                room_id, seq, body, ..
            } => {
                out.put_i64(*room_id);
                out.put_i64(*seq);
                put_text(out, body);
            }
            ClientFrame::Delete { room_id, seq, .. }
            | ClientFrame::ReadMarker { room_id, seq, .. } => {
                out.put_i64(*room_id);
                out.put_i64(*seq);
            }
            ClientFrame::React {
                room_id,
                seq,
                add,
                emoji,
                ..
            } => {
                out.put_i64(*room_id);
                out.put_i64(*seq);
                put_bool(out, *add);
                put_string(out, emoji);
            }
            ClientFrame::SetPresence { status, .. } => out.put_u8(u8::from(*status)),
            ClientFrame::History {
                room_id,
                before_seq,
                after_seq,
                limit,
                ..
            } => {
                out.put_i64(*room_id);
                out.put_i64(*before_seq);
                out.put_i64(*after_seq);
                out.put_u16(*limit);
            }
        }
    }

    /// The whole frame as one buffer, ready to send as a binary message.
    ///
    /// # Panics
    ///
    /// As [`ClientFrame::encode`].
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// Decodes one binary message. Checks structure only (lengths, UTF-8,
    /// bools, enumeration bytes, no trailing bytes); the server enforces the
    /// protocol's limits afterwards. Never panics.
    pub fn decode(payload: &[u8]) -> Result<ClientFrame, DecodeError> {
        let Some(&frame_opcode) = payload.first() else {
            return Err(DecodeError::malformed(0, "empty frame"));
        };
        // Every command carries its request id right after the opcode, so it
        // can be echoed even when the rest, or the opcode, is bad.
        let request_id = match payload.get(1..5) {
            Some(id_bytes) => {
                u32::from_be_bytes([id_bytes[0], id_bytes[1], id_bytes[2], id_bytes[3]])
            }
            None => 0,
        };
        let mut reader = WireReader::new(&payload[1..]);
        match decode_fields(frame_opcode, &mut reader) {
            Ok(Some(frame)) => match reader.finish() {
                Ok(()) => Ok(frame),
                Err(detail) => Err(DecodeError::malformed(request_id, detail)),
            },
            Ok(None) => Err(DecodeError::unknown_opcode(request_id)),
            Err(detail) => Err(DecodeError::malformed(request_id, detail)),
        }
    }
}

/// Reads a command's fields after the opcode; `None` for an unknown opcode.
fn decode_fields(
    frame_opcode: u8,
    reader: &mut WireReader<'_>,
) -> Result<Option<ClientFrame>, Detail> {
    // Checked before reading anything, so that an unknown opcode is reported
    // as such even when the frame is too short for a request id.
    if !(opcode::AUTH..=opcode::UNWATCH_STREAM).contains(&frame_opcode) {
        return Ok(None);
    }
    let request_id = reader.u32()?;
    let frame = match frame_opcode {
        opcode::AUTH => ClientFrame::Auth {
            request_id,
            token: reader.string()?,
        },
        opcode::SUBSCRIBE => ClientFrame::Subscribe {
            request_id,
            room_id: reader.i64()?,
            since_seq: reader.i64()?,
        },
        opcode::UNSUBSCRIBE => ClientFrame::Unsubscribe {
            request_id,
            room_id: reader.i64()?,
        },
        opcode::SEND => ClientFrame::Send {
            request_id,
            room_id: reader.i64()?,
            thread_parent_seq: reader.i64()?,
            nonce: reader.string()?,
            mentions: reader.i64_list()?,
            body: reader.text()?,
        },
        opcode::EDIT => ClientFrame::Edit {
            request_id,
            room_id: reader.i64()?,
            seq: reader.i64()?,
            body: reader.text()?,
        },
        opcode::DELETE => ClientFrame::Delete {
            request_id,
            room_id: reader.i64()?,
            seq: reader.i64()?,
        },
        opcode::REACT => ClientFrame::React {
            request_id,
            room_id: reader.i64()?,
            seq: reader.i64()?,
            add: reader.bool()?,
            emoji: reader.string()?,
        },
        opcode::TYPING => ClientFrame::Typing {
            request_id,
            room_id: reader.i64()?,
        },
        opcode::SET_PRESENCE => ClientFrame::SetPresence {
            request_id,
            status: PresenceStatus::from_u8(reader.u8()?).ok_or("unknown presence status")?,
        },
        opcode::READ_MARKER => ClientFrame::ReadMarker {
            request_id,
            room_id: reader.i64()?,
            seq: reader.i64()?,
        },
        opcode::HISTORY => ClientFrame::History {
            request_id,
            room_id: reader.i64()?,
            before_seq: reader.i64()?,
            after_seq: reader.i64()?,
            limit: reader.u16()?,
        },
        opcode::WATCH_STREAM => ClientFrame::WatchStream {
            request_id,
            stream: reader.string()?,
        },
        opcode::UNWATCH_STREAM => ClientFrame::UnwatchStream {
            request_id,
            stream: reader.string()?,
        },
        _ => return Ok(None),
    };
    Ok(Some(frame))
}
