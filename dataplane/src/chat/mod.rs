//! Chat over binary WebSocket: protocol v1 (`proto/PROTOCOL.md`) on
//! `GET /v1/chat`.
//!
//! Who does what (DESIGN.md §2–3):
//! - The **connection's shard** decodes frames, authenticates (signature
//!   check with the pushed keys, no round trip), rate-limits, and forwards
//!   room commands to the room's owner. It keeps the local subscriber list
//!   of each room and writes delivered frames to its connections.
//! - The **room's owner shard** (`room_id` hashed over the shards, see
//!   [`owner_of_room`]) checks permissions (cached rights, invalidated by
//!   pushes), applies mutes and slow mode, assigns the next seq, appends to
//!   the bounded backlog, frames the event once and sends one
//!   [`ChatMessage::Deliver`] to each shard with subscribers; the change goes
//!   to the shard's [`persist::Persister`], which acknowledges the sender only
//!   after the control plane committed it.
//! - The **user's presence shard** ([`owner_of_user`]) aggregates the
//!   statuses of all of a user's connections and routes mention
//!   notifications to them.
//!
//! Architecture Invariant: every chat message between shards (and to the
//! same shard) goes through [`send`], which keeps per-destination FIFO
//! order: a subscriber shard sees a room's `SubscribeReply` before the live
//! events sequenced after it, and every event in seq order.

pub mod connection;
pub mod limiter;
pub mod persist;
pub mod presence;
pub mod room;

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use veza_codec::websocket::{encode_frame_header, Opcode};
use veza_proto::chat::{PresenceStatus, RemovedReason, ServerFrame};
use veza_proto::control::Push;

use crate::shard::{Shard, ShardMessage};

/// A connection anywhere in the process: its shard, its slot there and the
/// slot's generation (a reused slot never receives an old connection's
/// frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// The shard holding the connection.
    pub shard: u16,
    /// Its slot in that shard's chat registry.
    pub key: u32,
    /// The slot's generation.
    pub generation: u32,
}

impl ConnRef {
    /// The `connection_id` clients see in `AuthOk`.
    pub fn connection_id(self) -> u64 {
        ((self.shard as u64) << 48) | ((self.generation as u64) << 16) | (self.key as u64 & 0xffff)
    }
}

/// A command for a room's owner shard.
pub struct RoomInput {
    /// The room.
    pub room_id: i64,
    /// The connection that sent it (replies go there); `None` for commands
    /// the data plane makes itself.
    pub from: Option<ConnRef>,
    /// The acting user (0 for the data plane's own commands).
    pub user_id: i64,
    /// What to do.
    pub command: RoomCommand,
}

/// What a room's owner is asked.
pub enum RoomCommand {
    /// Subscribe `from`; replay what came after `since_seq` (-1: nothing).
    Subscribe {
        /// Echoed in the reply.
        request_id: u32,
        /// The last seq the client saw, or -1.
        since_seq: i64,
    },
    /// One subscription on `shard` ended.
    Unsubscribed {
        /// The subscriber's shard.
        shard: u16,
    },
    /// A new message.
    Send {
        /// Echoed in the ack.
        request_id: u32,
        /// Thread parent, 0 for none.
        thread_parent_seq: i64,
        /// The client's idempotency key (may be empty).
        nonce: String,
        /// Mentioned users.
        mentions: Vec<i64>,
        /// The text.
        body: String,
    },
    /// Replace a message's text.
    Edit {
        /// Echoed.
        request_id: u32,
        /// The message.
        seq: i64,
        /// The new text.
        body: String,
    },
    /// Delete a message.
    Delete {
        /// Echoed.
        request_id: u32,
        /// The message.
        seq: i64,
    },
    /// Add or remove a reaction.
    React {
        /// Echoed.
        request_id: u32,
        /// The message.
        seq: i64,
        /// Add (true) or remove.
        add: bool,
        /// The emoji.
        emoji: String,
    },
    /// The user is typing.
    Typing {
        /// Echoed.
        request_id: u32,
    },
    /// The user read up to `seq`.
    ReadMarker {
        /// Echoed.
        request_id: u32,
        /// The last read message.
        seq: i64,
    },
    /// Fan an ephemeral frame out to the room's subscribers (presence).
    PublishEphemeral {
        /// The framed event.
        frame: Bytes,
    },
    /// The user's membership or moderation state changed: look their
    /// rights up again and remove them if they may no longer read.
    Recheck,
    /// The room changed (settings, deleted): drop cached rights and check
    /// that it still exists.
    RoomChanged,
}

/// What an owner shard tells a subscriber's shard about a new subscription.
pub struct SubscribeReply {
    /// The room.
    pub room_id: i64,
    /// The subscribing connection.
    pub conn: ConnRef,
    /// Echoed in `Subscribed`.
    pub request_id: u32,
    /// `Err(error frame)`: refused; nothing was counted at the owner.
    pub outcome: Result<SubscribeAccepted, Bytes>,
}

/// A subscription the owner counted.
pub struct SubscribeAccepted {
    /// The room's newest seq.
    pub head_seq: i64,
    /// Messages in `(after, before)` must come from the database first.
    pub database_gap: Option<(i64, i64)>,
    /// Framed backlog events to replay, in order.
    pub replay: Vec<Bytes>,
}

/// What a user's presence shard is told.
pub enum PresenceInput {
    /// A connection of the user authenticated.
    Connected {
        /// The connection.
        conn: ConnRef,
    },
    /// A connection set its status.
    Status {
        /// The connection.
        conn: ConnRef,
        /// Its status.
        status: PresenceStatus,
    },
    /// A connection closed.
    Disconnected {
        /// The connection.
        conn: ConnRef,
    },
    /// A connection of the user subscribed to `room_id`.
    RoomJoined {
        /// The room.
        room_id: i64,
    },
    /// A subscription of the user ended.
    RoomLeft {
        /// The room.
        room_id: i64,
    },
    /// The user was mentioned: deliver `frame` to all their connections.
    Mention {
        /// The framed `Mention` event.
        frame: Bytes,
    },
}

/// Chat messages between shards (a variant of [`ShardMessage`]).
pub enum ChatMessage {
    /// To a room's owner.
    Room(Box<RoomInput>),
    /// From a room's owner to the subscriber's shard.
    SubscribeReply(Box<SubscribeReply>),
    /// A framed room event for every local subscriber of the room.
    Deliver {
        /// The room.
        room_id: i64,
        /// The WebSocket frame, built once.
        frame: Bytes,
        /// Typing and presence: skipped for connections past the soft bound.
        ephemeral: bool,
    },
    /// A frame for one connection (replies, acks, errors).
    ToConnection {
        /// The connection.
        conn: ConnRef,
        /// The WebSocket frame.
        frame: Bytes,
    },
    /// A frame for every local connection of a user (mentions).
    ToUser {
        /// The user.
        user_id: i64,
        /// The WebSocket frame.
        frame: Bytes,
    },
    /// End the local subscriptions to `room_id` of `user_id` (every user
    /// when `None`), telling them why.
    RemoveSubscribers {
        /// The room.
        room_id: i64,
        /// The user, or everyone.
        user_id: Option<i64>,
        /// Sent in the `Removed` event.
        reason: RemovedReason,
    },
    /// To a user's presence shard.
    Presence {
        /// The user.
        user_id: i64,
        /// What happened.
        input: Box<PresenceInput>,
    },
}

/// The shard that owns (sequences) `room_id`.
pub fn owner_of_room(room_id: i64, shard_count: usize) -> usize {
    spread(room_id, shard_count)
}

/// The shard that aggregates `user_id`'s presence.
pub fn owner_of_user(user_id: i64, shard_count: usize) -> usize {
    spread(user_id ^ 0x5bd1_e995, shard_count)
}

/// A multiplicative hash of an id onto `0..shard_count`: consecutive ids
/// land on different shards.
fn spread(id: i64, shard_count: usize) -> usize {
    let mixed = (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((mixed >> 32) % shard_count as u64) as usize
}

/// Frames a server frame as one WebSocket binary frame (header and payload
/// in one buffer, so it can be queued on many connections as one `Bytes`).
pub fn frame(server_frame: &ServerFrame) -> Bytes {
    let mut payload = BytesMut::with_capacity(128);
    server_frame.encode(&mut payload);
    wrap_payload(&payload)
}

/// Puts a WebSocket binary frame header in front of `payload`.
pub fn wrap_payload(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    encode_frame_header(&mut out, true, Opcode::Binary, payload.len(), None);
    out.extend_from_slice(payload);
    out.freeze()
}

/// An `Error` reply, framed.
pub fn error_frame(
    request_id: u32,
    code: veza_proto::chat::ErrorCode,
    retry_after_ms: u32,
    message: &str,
) -> Bytes {
    frame(&ServerFrame::Error {
        request_id,
        code,
        retry_after_ms,
        message: message.to_owned(),
    })
}

/// Sends `message` to shard `destination` (possibly this one) in FIFO
/// order per destination ([`crate::ordered_send`]).
pub fn send(shard: &Rc<Shard>, destination: usize, message: ChatMessage) {
    crate::ordered_send::send(shard, destination, ShardMessage::Chat(message));
}

/// Handles one chat message addressed to this shard.
pub fn handle(shard: &Rc<Shard>, message: ChatMessage) {
    match message {
        ChatMessage::Room(input) => room::enqueue(shard, *input),
        ChatMessage::SubscribeReply(reply) => connection::on_subscribe_reply(shard, *reply),
        ChatMessage::Deliver {
            room_id,
            frame,
            ephemeral,
        } => connection::deliver_to_room(shard, room_id, &frame, ephemeral),
        ChatMessage::ToConnection { conn, frame } => {
            if let Some(connection) = shard.chat.connection(conn) {
                connection.push(shard, &frame);
            }
        }
        ChatMessage::ToUser { user_id, frame } => {
            let connections = shard.chat.connections_of(user_id);
            for connection in connections {
                connection.push(shard, &frame);
            }
        }
        ChatMessage::RemoveSubscribers {
            room_id,
            user_id,
            reason,
        } => connection::remove_subscribers(shard, room_id, user_id, reason),
        ChatMessage::Presence { user_id, input } => presence::handle(shard, user_id, *input),
    }
}

/// Reacts to a control plane push on this shard.
pub fn on_push(shard: &Rc<Shard>, push: &Push) {
    match push {
        Push::TokensRevoked {
            token_ids, user_id, ..
        } => {
            for connection in shard.chat.connections_of(*user_id) {
                if token_ids
                    .iter()
                    .any(|token_id| *token_id == connection.token_id)
                {
                    connection.close(
                        veza_proto::close_code::TOKEN_REVOKED,
                        "the access token was revoked",
                    );
                }
            }
        }
        Push::MembershipChanged { room_id, user_id }
        | Push::ModerationChanged { room_id, user_id } => {
            if owner_of_room(*room_id, shard.process.shard_count()) == shard.idx {
                room::enqueue(
                    shard,
                    RoomInput {
                        room_id: *room_id,
                        from: None,
                        user_id: *user_id,
                        command: RoomCommand::Recheck,
                    },
                );
            }
        }
        Push::RoomChanged { room_id } => {
            if owner_of_room(*room_id, shard.process.shard_count()) == shard.idx {
                room::enqueue(
                    shard,
                    RoomInput {
                        room_id: *room_id,
                        from: None,
                        user_id: 0,
                        command: RoomCommand::RoomChanged,
                    },
                );
            }
        }
        Push::Resync => room::forget_all_rights(shard),
        Push::ConfigChanged { .. }
        | Push::SigningKeysChanged { .. }
        | Push::TrackChanged { .. } => {}
    }
}

/// One shard's chat state. `!Send`; lives in its [`Shard`].
#[derive(Default)]
pub struct ChatShard {
    /// Authenticated connections on this shard, their rooms and users.
    pub registry: connection::Registry,
    /// Rooms this shard owns.
    pub rooms: room::OwnedRooms,
    /// This shard's group-commit queue.
    pub persister: Rc<persist::Persister>,
    /// Users whose presence this shard aggregates.
    pub presence: presence::PresenceTable,
    /// Runtime settings and per-IP connection buckets.
    pub limits: limiter::ChatLimits,
}

impl ChatShard {
    /// The live connection `conn` refers to, if it is still open here.
    pub fn connection(&self, conn: ConnRef) -> Option<Rc<connection::ChatConnection>> {
        self.registry.get(conn)
    }

    /// Every local connection of `user_id`.
    pub fn connections_of(&self, user_id: i64) -> Vec<Rc<connection::ChatConnection>> {
        self.registry.of_user(user_id)
    }
}

/// Starts the chat tasks of a shard.
pub fn start(shard: &Rc<Shard>) {
    if shard.control.is_configured() {
        monoio::spawn(persist::run(shard.clone()));
        let weak = Rc::downgrade(shard);
        shard.control.on_push(Box::new(move |push| {
            if let Some(shard) = weak.upgrade() {
                on_push(&shard, push);
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_rooms_spread_over_shards() {
        let mut seen = [0usize; 4];
        for room_id in 1..=400 {
            seen[owner_of_room(room_id, 4)] += 1;
        }
        for count in seen {
            assert!((60..=140).contains(&count), "uneven spread {seen:?}");
        }
        assert_eq!(owner_of_room(7, 1), 0);
    }

    #[test]
    fn connection_ids_differ_by_shard_and_generation() {
        let first = ConnRef {
            shard: 0,
            key: 3,
            generation: 1,
        };
        let reused = ConnRef {
            generation: 2,
            ..first
        };
        let other_shard = ConnRef { shard: 1, ..first };
        assert_ne!(first.connection_id(), reused.connection_id());
        assert_ne!(first.connection_id(), other_shard.connection_id());
    }
}
