//! The connection's side of chat: authentication, command decoding and
//! checks, rate limiting, local subscriber lists, delivery, the resume
//! catch-up (database page, then backlog replay, then live events held
//! meanwhile), and watching live streams' now-playing titles (the
//! watcher lists are the live side's, [`crate::live::now_playing`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use veza_proto::chat::{
    ClientFrame, ErrorCode, MessageEvent, RemovedReason, ServerFrame, EMOJI_BYTES_MAX,
    MENTIONS_MAX, NONCE_BYTES_MAX,
};
use veza_proto::close_code;

use super::limiter::TokenBucket;
use super::{
    error_frame, frame, owner_of_room, owner_of_user, ChatMessage, ConnRef, PresenceInput,
    RoomCommand, RoomInput, SubscribeReply,
};
use crate::metrics::{LimitKind, ShardMetrics};
use crate::send_queue::{Outbound, PushError};
use crate::shard::Shard;
use crate::websocket_session::WebSocketHandle;

/// Retry hint when the control plane is away.
const UNAVAILABLE_RETRY_MS: u32 = 1_000;

/// The `invalid` answer to a bad stream name in `WatchStream` and
/// `UnwatchStream`.
const STREAM_NAME_RULE: &str = "a stream name matches ^[a-z0-9][a-z0-9_-]{0,63}$";

/// Where one subscription of a connection stands.
enum Subscription {
    /// Asked the owner; no answer yet.
    Pending,
    /// Counted by the owner; replaying history; live events held here,
    /// within the connection's send queue bound.
    CatchingUp {
        /// Live events in arrival order.
        held: Vec<Bytes>,
        /// Their bytes.
        held_bytes: usize,
    },
    /// Receiving live events.
    Live,
}

/// An authenticated chat connection.
pub struct ChatConnection {
    /// Where it is.
    pub conn: ConnRef,
    /// Its user.
    pub user_id: i64,
    /// The access token's id (revocations name it).
    pub token_id: String,
    outbound: Rc<Outbound>,
    subscriptions: RefCell<HashMap<i64, Subscription>>,
    send_bucket: RefCell<TokenBucket>,
    rate_limit_strikes: Cell<u32>,
}

impl ChatConnection {
    /// Queues a frame; a full queue closes the connection with 4008.
    pub fn push(&self, shard: &Shard, frame: &Bytes) -> bool {
        match self.outbound.push(std::slice::from_ref(frame)) {
            Ok(()) => {
                ShardMetrics::add(&shard.metrics.websocket_frames_sent_total, 1);
                true
            }
            Err(PushError::Closed) => false,
            Err(PushError::Overflow) => {
                shard.metrics.limit_hit(LimitKind::SendQueueBytes);
                self.close(
                    close_code::SEND_QUEUE_OVERFLOW,
                    "send queue overflow: read faster, then resume",
                );
                false
            }
        }
    }

    /// Closes the connection with `code` (its session ends when the peer answers).
    pub fn close(&self, code: u16, reason: &str) {
        crate::websocket_session::close_outbound(&self.outbound, code, reason);
    }
}

/// The authenticated connections of a shard, by slot and by user, and each
/// room's local subscribers.
#[derive(Default)]
pub struct Registry {
    slots: RefCell<slab::Slab<Rc<ChatConnection>>>,
    next_generation: Cell<u32>,
    by_user: RefCell<HashMap<i64, Vec<Rc<ChatConnection>>>>,
    rooms: RefCell<HashMap<i64, Vec<Rc<ChatConnection>>>>,
}

impl Registry {
    /// The connection `conn` names, if still open.
    pub fn get(&self, conn: ConnRef) -> Option<Rc<ChatConnection>> {
        self.slots
            .borrow()
            .get(conn.key as usize)
            .filter(|connection| connection.conn.generation == conn.generation)
            .cloned()
    }

    /// Every local connection of `user_id`.
    pub fn of_user(&self, user_id: i64) -> Vec<Rc<ChatConnection>> {
        self.by_user
            .borrow()
            .get(&user_id)
            .cloned()
            .unwrap_or_default()
    }

    fn add_room_subscriber(&self, room_id: i64, connection: &Rc<ChatConnection>) {
        self.rooms
            .borrow_mut()
            .entry(room_id)
            .or_default()
            .push(connection.clone());
    }

    fn remove_room_subscriber(&self, room_id: i64, conn: ConnRef) {
        let mut rooms = self.rooms.borrow_mut();
        if let Some(subscribers) = rooms.get_mut(&room_id) {
            subscribers.retain(|subscriber| subscriber.conn != conn);
            if subscribers.is_empty() {
                rooms.remove(&room_id);
            }
        }
    }
}

/// The chat side of one WebSocket session.
pub struct ChatSession {
    shard: Rc<Shard>,
    outbound: Rc<Outbound>,
    handle: Rc<WebSocketHandle>,
    connection: Option<Rc<ChatConnection>>,
}

/// Whether the session goes on after a frame.
#[derive(PartialEq, Eq)]
pub enum ChatFlow {
    /// Keep reading.
    Continue,
    /// The server closed the connection.
    Closed,
}

impl ChatSession {
    /// A session on the WebSocket `handle`; the shard's sweeper closes it
    /// with 4004 unless `Auth` arrives within `chat.auth_timeout_ms`.
    pub fn new(shard: Rc<Shard>, handle: Rc<WebSocketHandle>) -> Self {
        let timeout = Duration::from_millis(shard.process.config.chat.auth_timeout_ms);
        handle
            .auth_deadline
            .set(Some(quanta::Instant::now() + timeout));
        Self {
            shard,
            outbound: handle.outbound.clone(),
            handle,
            connection: None,
        }
    }

    fn reply(&self, frame: &Bytes) {
        if let Some(connection) = &self.connection {
            connection.push(&self.shard, frame);
        } else if self.outbound.push(std::slice::from_ref(frame)).is_ok() {
            ShardMetrics::add(&self.shard.metrics.websocket_frames_sent_total, 1);
        }
    }

    fn error(&self, request_id: u32, code: ErrorCode, retry_after_ms: u32, message: &str) {
        self.reply(&error_frame(request_id, code, retry_after_ms, message));
    }

    fn close(&self, code: u16, reason: &str) -> ChatFlow {
        crate::websocket_session::close_outbound(&self.outbound, code, reason);
        ChatFlow::Closed
    }

    /// Handles one binary message.
    pub fn on_frame(&mut self, payload: &[u8]) -> ChatFlow {
        let command = match ClientFrame::decode(payload) {
            Ok(command) => command,
            Err(error) => {
                self.error(error.request_id, error.code, 0, error.detail);
                return ChatFlow::Continue;
            }
        };
        if let ClientFrame::Auth { request_id, token } = &command {
            return self.authenticate(*request_id, token);
        }
        let Some(connection) = self.connection.clone() else {
            self.error(
                command.request_id(),
                ErrorCode::NotAuthenticated,
                0,
                "send Auth first",
            );
            return ChatFlow::Continue;
        };
        self.command(&connection, command)
    }

    fn authenticate(&mut self, request_id: u32, token: &str) -> ChatFlow {
        if self.connection.is_some() {
            self.error(
                request_id,
                ErrorCode::AlreadyAuthenticated,
                0,
                "this connection is already authenticated",
            );
            return ChatFlow::Continue;
        }
        let control = &self.shard.control;
        if !control.is_configured() || !control.has_signing_keys() {
            return self.close(
                close_code::CHAT_UNAVAILABLE,
                "chat unavailable: no control plane; retry later",
            );
        }
        let claims = match control.verify_access_token(token) {
            Ok(claims) => claims,
            Err(crate::control_client::AccessTokenError::Revoked) => {
                return self.close(close_code::TOKEN_REVOKED, "the access token was revoked")
            }
            Err(crate::control_client::AccessTokenError::Token(
                veza_proto::access_token::TokenError::Expired,
            )) => return self.close(close_code::TOKEN_EXPIRED, "the access token has expired"),
            Err(error) => return self.close(close_code::AUTH_FAILED, error.name()),
        };
        let shard = &self.shard;
        let registry = &shard.chat.registry;
        let generation = registry.next_generation.get().wrapping_add(1);
        registry.next_generation.set(generation);
        let burst = shard.chat.limits.settings(control).message_burst;
        let connection = {
            let mut slots = registry.slots.borrow_mut();
            let entry = slots.vacant_entry();
            let connection = Rc::new(ChatConnection {
                conn: ConnRef {
                    shard: shard.idx as u16,
                    key: entry.key() as u32,
                    generation,
                },
                user_id: claims.uid,
                token_id: claims.jti.clone(),
                outbound: self.outbound.clone(),
                subscriptions: RefCell::default(),
                send_bucket: RefCell::new(TokenBucket::full(burst)),
                rate_limit_strikes: Cell::new(0),
            });
            entry.insert(connection.clone());
            connection
        };
        registry
            .by_user
            .borrow_mut()
            .entry(claims.uid)
            .or_default()
            .push(connection.clone());
        shard
            .metrics
            .chat_connections
            .fetch_add(1, Ordering::Relaxed);
        self.handle.auth_deadline.set(None);
        self.connection = Some(connection.clone());
        let message_bytes_max = shard.chat.limits.settings(control).message_bytes_max as u32;
        self.reply(&frame(&ServerFrame::AuthOk {
            request_id,
            user_id: claims.uid,
            connection_id: connection.conn.connection_id(),
            username: claims.name,
            message_bytes_max,
        }));
        self.to_presence(
            claims.uid,
            PresenceInput::Connected {
                conn: connection.conn,
            },
        );
        ChatFlow::Continue
    }

    fn to_presence(&self, user_id: i64, input: PresenceInput) {
        super::send(
            &self.shard,
            owner_of_user(user_id, self.shard.process.shard_count()),
            ChatMessage::Presence {
                user_id,
                input: Box::new(input),
            },
        );
    }

    fn to_room(&self, connection: &ChatConnection, room_id: i64, command: RoomCommand) {
        super::send(
            &self.shard,
            owner_of_room(room_id, self.shard.process.shard_count()),
            ChatMessage::Room(Box::new(RoomInput {
                room_id,
                from: Some(connection.conn),
                user_id: connection.user_id,
                command,
            })),
        );
    }

    /// Takes a send token; `Err` when the command was refused (and maybe the
    /// connection closed).
    fn rate_limit(&self, connection: &ChatConnection, request_id: u32) -> Result<(), ChatFlow> {
        let settings = self.shard.chat.limits.settings(&self.shard.control).clone();
        let taken = connection.send_bucket.borrow_mut().take(
            settings.messages_per_second,
            settings.message_burst,
            quanta::Instant::now(),
        );
        match taken {
            Ok(()) => {
                connection.rate_limit_strikes.set(0);
                Ok(())
            }
            Err(retry_after_ms) => {
                self.shard.metrics.limit_hit(LimitKind::ChatSendRate);
                let strikes = connection.rate_limit_strikes.get() + 1;
                connection.rate_limit_strikes.set(strikes);
                if strikes > self.shard.process.config.chat.rate_limit_strikes_max {
                    return Err(self.close(
                        close_code::POLICY_VIOLATION,
                        "rate limit exceeded persistently",
                    ));
                }
                self.error(
                    request_id,
                    ErrorCode::RateLimited,
                    retry_after_ms,
                    "rate limited: slow down",
                );
                Err(ChatFlow::Continue)
            }
        }
    }

    fn invalid(&self, request_id: u32, message: &str) -> ChatFlow {
        self.error(request_id, ErrorCode::Invalid, 0, message);
        ChatFlow::Continue
    }

    fn command(&mut self, connection: &Rc<ChatConnection>, command: ClientFrame) -> ChatFlow {
        let message_bytes_max = self
            .shard
            .chat
            .limits
            .settings(&self.shard.control)
            .message_bytes_max;
        match command {
            ClientFrame::Auth { .. } => unreachable!("handled before"),
            ClientFrame::Subscribe {
                request_id,
                room_id,
                since_seq,
            } => {
                if since_seq < -1 {
                    return self.invalid(request_id, "since_seq must be -1 or a seq");
                }
                let mut subscriptions = connection.subscriptions.borrow_mut();
                if subscriptions.contains_key(&room_id) {
                    drop(subscriptions);
                    return self.invalid(request_id, "already subscribed to this room");
                }
                if subscriptions.len()
                    >= self
                        .shard
                        .process
                        .config
                        .chat
                        .subscriptions_per_connection_max
                {
                    drop(subscriptions);
                    self.shard.metrics.limit_hit(LimitKind::ChatSubscriptions);
                    self.error(
                        request_id,
                        ErrorCode::TooManySubscriptions,
                        0,
                        "too many subscriptions on this connection",
                    );
                    return ChatFlow::Continue;
                }
                subscriptions.insert(room_id, Subscription::Pending);
                drop(subscriptions);
                self.to_room(
                    connection,
                    room_id,
                    RoomCommand::Subscribe {
                        request_id,
                        since_seq,
                    },
                );
            }
            ClientFrame::Unsubscribe {
                request_id,
                room_id,
            } => {
                end_subscription(&self.shard, connection, room_id);
                self.reply(&frame(&ServerFrame::Ok { request_id }));
            }
            ClientFrame::Send {
                request_id,
                room_id,
                thread_parent_seq,
                nonce,
                mentions,
                body,
            } => {
                if body.len() > message_bytes_max {
                    self.shard.metrics.limit_hit(LimitKind::ChatMessageBytes);
                    self.error(
                        request_id,
                        ErrorCode::TooLarge,
                        0,
                        "the message is longer than message_bytes_max",
                    );
                    return ChatFlow::Continue;
                }
                if body.trim().is_empty() {
                    return self.invalid(request_id, "the message is empty");
                }
                if nonce.len() > NONCE_BYTES_MAX {
                    return self.invalid(request_id, "the nonce is longer than 64 bytes");
                }
                if mentions.len() > MENTIONS_MAX {
                    return self.invalid(request_id, "more than 50 mentions");
                }
                if let Err(flow) = self.rate_limit(connection, request_id) {
                    return flow;
                }
                self.to_room(
                    connection,
                    room_id,
                    RoomCommand::Send {
                        request_id,
                        thread_parent_seq,
                        nonce,
                        mentions,
                        body,
                    },
                );
            }
            ClientFrame::Edit {
                request_id,
                room_id,
                seq,
                body,
            } => {
                if body.len() > message_bytes_max {
                    self.shard.metrics.limit_hit(LimitKind::ChatMessageBytes);
                    self.error(
                        request_id,
                        ErrorCode::TooLarge,
                        0,
                        "the message is longer than message_bytes_max",
                    );
                    return ChatFlow::Continue;
                }
                if body.trim().is_empty() {
                    return self.invalid(request_id, "the message is empty");
                }
                if let Err(flow) = self.rate_limit(connection, request_id) {
                    return flow;
                }
                self.to_room(
                    connection,
                    room_id,
                    RoomCommand::Edit {
                        request_id,
                        seq,
                        body,
                    },
                );
            }
            ClientFrame::Delete {
                request_id,
                room_id,
                seq,
            } => {
                if let Err(flow) = self.rate_limit(connection, request_id) {
                    return flow;
                }
                self.to_room(connection, room_id, RoomCommand::Delete { request_id, seq });
            }
            ClientFrame::React {
                request_id,
                room_id,
                seq,
                add,
                emoji,
            } => {
                if emoji.is_empty() || emoji.len() > EMOJI_BYTES_MAX {
                    return self.invalid(request_id, "the emoji must be 1 to 64 bytes");
                }
                if let Err(flow) = self.rate_limit(connection, request_id) {
                    return flow;
                }
                self.to_room(
                    connection,
                    room_id,
                    RoomCommand::React {
                        request_id,
                        seq,
                        add,
                        emoji,
                    },
                );
            }
            ClientFrame::Typing {
                request_id,
                room_id,
            } => self.to_room(connection, room_id, RoomCommand::Typing { request_id }),
            ClientFrame::SetPresence { request_id, status } => {
                self.to_presence(
                    connection.user_id,
                    PresenceInput::Status {
                        conn: connection.conn,
                        status,
                    },
                );
                self.reply(&frame(&ServerFrame::Ok { request_id }));
            }
            ClientFrame::ReadMarker {
                request_id,
                room_id,
                seq,
            } => self.to_room(
                connection,
                room_id,
                RoomCommand::ReadMarker { request_id, seq },
            ),
            ClientFrame::History {
                request_id,
                room_id,
                before_seq,
                after_seq,
                limit,
            } => {
                let page_max = self
                    .shard
                    .chat
                    .limits
                    .settings(&self.shard.control)
                    .history_page_max;
                if limit == 0 || before_seq < 0 || after_seq < -1 {
                    return self.invalid(
                        request_id,
                        "limit must be at least 1, before_seq 0 or a seq, after_seq -1 or a seq",
                    );
                }
                // Each page is a control-plane request: paging draws from
                // the same bucket as sends.
                if let Err(flow) = self.rate_limit(connection, request_id) {
                    return flow;
                }
                monoio::spawn(history(
                    self.shard.clone(),
                    connection.clone(),
                    request_id,
                    room_id,
                    (before_seq > 0).then_some(before_seq),
                    (after_seq >= 0).then_some(after_seq),
                    limit.min(page_max),
                ));
            }
            ClientFrame::WatchStream { request_id, stream } => {
                return self.watch_stream(connection, request_id, &stream);
            }
            ClientFrame::UnwatchStream { request_id, stream } => {
                if !crate::live::is_valid_stream_name(&stream) {
                    return self.invalid(request_id, STREAM_NAME_RULE);
                }
                if let Err(flow) = self.rate_limit(connection, request_id) {
                    return flow;
                }
                self.shard.live.watchers.unwatch(connection.conn, &stream);
                self.reply(&frame(&ServerFrame::Ok { request_id }));
            }
        }
        ChatFlow::Continue
    }

    /// `WatchStream`: `Ok`, then the stream's current title when it is live
    /// and has one (the stream need not be live to be watched).
    fn watch_stream(
        &self,
        connection: &Rc<ChatConnection>,
        request_id: u32,
        stream: &str,
    ) -> ChatFlow {
        if !crate::live::is_valid_stream_name(stream) {
            return self.invalid(request_id, STREAM_NAME_RULE);
        }
        if let Err(flow) = self.rate_limit(connection, request_id) {
            return flow;
        }
        let watchers = &self.shard.live.watchers;
        if watchers.watch(connection, stream).is_err() {
            self.error(
                request_id,
                ErrorCode::TooManySubscriptions,
                0,
                "this connection watches the most streams allowed",
            );
            return ChatFlow::Continue;
        }
        self.reply(&frame(&ServerFrame::Ok { request_id }));
        if let Some(event) = crate::live::now_playing::current_event(&self.shard, stream) {
            connection.push(&self.shard, &event);
        }
        ChatFlow::Continue
    }

    /// The WebSocket ended: leave every room, tell presence, free the slot.
    pub fn on_end(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        let shard = &self.shard;
        self.to_presence(
            connection.user_id,
            PresenceInput::Disconnected {
                conn: connection.conn,
            },
        );
        let rooms: Vec<i64> = connection.subscriptions.borrow().keys().copied().collect();
        for room_id in rooms {
            end_subscription(shard, &connection, room_id);
        }
        shard.live.watchers.remove_connection(connection.conn);
        let registry = &shard.chat.registry;
        registry
            .slots
            .borrow_mut()
            .remove(connection.conn.key as usize);
        {
            let mut by_user = registry.by_user.borrow_mut();
            if let Some(connections) = by_user.get_mut(&connection.user_id) {
                connections.retain(|other| other.conn != connection.conn);
                if connections.is_empty() {
                    by_user.remove(&connection.user_id);
                }
            }
        }
        shard
            .metrics
            .chat_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Ends one subscription of `connection` (if any): local list, owner count,
/// presence rooms.
fn end_subscription(shard: &Rc<Shard>, connection: &Rc<ChatConnection>, room_id: i64) {
    let Some(subscription) = connection.subscriptions.borrow_mut().remove(&room_id) else {
        return;
    };
    if matches!(subscription, Subscription::Pending) {
        // The owner's answer will find it gone and undo its count.
        return;
    }
    left_room(shard, connection, room_id);
}

/// A counted subscription ended: undo the owner's count and presence's.
fn left_room(shard: &Rc<Shard>, connection: &Rc<ChatConnection>, room_id: i64) {
    shard
        .chat
        .registry
        .remove_room_subscriber(room_id, connection.conn);
    let shard_count = shard.process.shard_count();
    super::send(
        shard,
        owner_of_room(room_id, shard_count),
        ChatMessage::Room(Box::new(RoomInput {
            room_id,
            from: None,
            user_id: connection.user_id,
            command: RoomCommand::Unsubscribed {
                shard: shard.idx as u16,
            },
        })),
    );
    super::send(
        shard,
        owner_of_user(connection.user_id, shard_count),
        ChatMessage::Presence {
            user_id: connection.user_id,
            input: Box::new(PresenceInput::RoomLeft { room_id }),
        },
    );
}

/// The owner answered a subscription.
pub fn on_subscribe_reply(shard: &Rc<Shard>, reply: SubscribeReply) {
    let SubscribeReply {
        room_id,
        conn,
        request_id,
        outcome,
    } = reply;
    let connection = shard.chat.registry.get(conn);
    let still_pending = connection.as_ref().is_some_and(|connection| {
        matches!(
            connection.subscriptions.borrow().get(&room_id),
            Some(Subscription::Pending)
        )
    });
    let accepted = match outcome {
        Err(error) => {
            if let (Some(connection), true) = (&connection, still_pending) {
                connection.subscriptions.borrow_mut().remove(&room_id);
                connection.push(shard, &error);
            }
            return;
        }
        Ok(accepted) => accepted,
    };
    let Some(connection) = connection.filter(|_| still_pending) else {
        // Closed or unsubscribed meanwhile: undo the owner's count.
        super::send(
            shard,
            owner_of_room(room_id, shard.process.shard_count()),
            ChatMessage::Room(Box::new(RoomInput {
                room_id,
                from: None,
                user_id: 0,
                command: RoomCommand::Unsubscribed {
                    shard: shard.idx as u16,
                },
            })),
        );
        return;
    };
    shard
        .chat
        .registry
        .add_room_subscriber(room_id, &connection);
    super::send(
        shard,
        owner_of_user(connection.user_id, shard.process.shard_count()),
        ChatMessage::Presence {
            user_id: connection.user_id,
            input: Box::new(PresenceInput::RoomJoined { room_id }),
        },
    );
    match accepted.database_gap {
        None => {
            for frame in &accepted.replay {
                connection.push(shard, frame);
            }
            connection.push(
                shard,
                &frame(&ServerFrame::Subscribed {
                    request_id,
                    room_id,
                    head_seq: accepted.head_seq,
                    replayed: accepted.replay.len() as u32,
                }),
            );
            connection
                .subscriptions
                .borrow_mut()
                .insert(room_id, Subscription::Live);
        }
        Some((after_seq, before_seq)) => {
            connection.subscriptions.borrow_mut().insert(
                room_id,
                Subscription::CatchingUp {
                    held: Vec::new(),
                    held_bytes: 0,
                },
            );
            monoio::spawn(catch_up(
                shard.clone(),
                connection,
                room_id,
                request_id,
                after_seq,
                before_seq,
                accepted.head_seq,
                accepted.replay,
            ));
        }
    }
}

/// Replays `(after_seq, before_seq)` from the database, then the backlog
/// replay, then `Subscribed`, then the live events held meanwhile.
#[allow(clippy::too_many_arguments)]
async fn catch_up(
    shard: Rc<Shard>,
    connection: Rc<ChatConnection>,
    room_id: i64,
    request_id: u32,
    after_seq: i64,
    before_seq: i64,
    head_seq: i64,
    replay: Vec<Bytes>,
) {
    let mut frames: Vec<Bytes> = Vec::new();
    let mut cursor = after_seq;
    let page = veza_proto::chat::HISTORY_LIMIT_MAX as u32;
    let mut failed = false;
    while cursor + 1 < before_seq {
        match shard
            .control
            .fetch_history(room_id, Some(before_seq), Some(cursor), page)
            .await
        {
            Ok(messages) if messages.is_empty() => break,
            Ok(messages) => {
                for message in messages {
                    cursor = cursor.max(message.seq);
                    frames.extend(stored_message_frames(&message));
                }
            }
            Err(error) => {
                tracing::debug!(shard = shard.idx, %error, "resume from the database failed");
                failed = true;
                break;
            }
        }
    }
    let still_catching_up = matches!(
        connection.subscriptions.borrow().get(&room_id),
        Some(Subscription::CatchingUp { .. })
    );
    if !still_catching_up {
        return;
    }
    if failed {
        // Nothing was replayed; end the subscription so the client retries.
        end_subscription(&shard, &connection, room_id);
        connection.push(
            &shard,
            &error_frame(
                request_id,
                ErrorCode::Unavailable,
                UNAVAILABLE_RETRY_MS,
                "history is unavailable; subscribe again",
            ),
        );
        return;
    }
    let replayed = (frames.len() + replay.len()) as u32;
    for frame in frames.iter().chain(replay.iter()) {
        connection.push(&shard, frame);
    }
    connection.push(
        &shard,
        &frame(&ServerFrame::Subscribed {
            request_id,
            room_id,
            head_seq,
            replayed,
        }),
    );
    let held = connection
        .subscriptions
        .borrow_mut()
        .insert(room_id, Subscription::Live);
    if let Some(Subscription::CatchingUp { held, .. }) = held {
        for frame in &held {
            connection.push(&shard, frame);
        }
    }
}

/// A stored message as the events a client would have seen.
fn stored_message_frames(message: &veza_proto::control::StoredMessage) -> Vec<Bytes> {
    let mut frames = vec![frame(&ServerFrame::Message(MessageEvent {
        room_id: message.room_id,
        seq: message.seq,
        author_id: message.author_id,
        thread_parent_seq: message.thread_parent_seq.unwrap_or(0),
        created_at_ms: message.created_at_ms,
        nonce: String::new(),
        mentions: message.mentions.clone(),
        body: message.body.clone(),
    }))];
    if let Some(deleted_at_ms) = message.deleted_at_ms {
        frames.push(frame(&ServerFrame::Deleted {
            room_id: message.room_id,
            seq: message.seq,
            deleter_id: 0,
            deleted_at_ms,
        }));
    }
    frames
}

/// A framed room event for the local subscribers of `room_id`.
pub fn deliver_to_room(shard: &Rc<Shard>, room_id: i64, event: &Bytes, ephemeral: bool) {
    // Pushing never changes the room lists (a close only queues a close
    // frame), so they are read in place: no copy per delivered event.
    let rooms = shard.chat.registry.rooms.borrow();
    let Some(subscribers) = rooms.get(&room_id) else {
        return;
    };
    let limits = &shard.process.config.limits;
    let soft_bytes = limits
        .send_queue_soft_bytes
        .min(limits.send_queue_bytes_max);
    let mut delivered = 0;
    for subscriber in subscribers {
        if ephemeral && subscriber.outbound.queued_bytes() > soft_bytes {
            shard.metrics.limit_hit(LimitKind::SendQueueSoftBytes);
            continue;
        }
        let mut subscriptions = subscriber.subscriptions.borrow_mut();
        match subscriptions.get_mut(&room_id) {
            Some(Subscription::Live) => {
                drop(subscriptions);
                if subscriber.push(shard, event) {
                    delivered += 1;
                }
            }
            Some(Subscription::CatchingUp { held, held_bytes }) if !ephemeral => {
                // Held events count against the same bound as the queue.
                let queued = subscriber.outbound.queued_bytes();
                if queued + *held_bytes + event.len() > limits.send_queue_bytes_max {
                    drop(subscriptions);
                    shard.metrics.limit_hit(LimitKind::SendQueueBytes);
                    subscriber.close(
                        close_code::SEND_QUEUE_OVERFLOW,
                        "send queue overflow: read faster, then resume",
                    );
                    continue;
                }
                *held_bytes += event.len();
                held.push(event.clone());
            }
            Some(_) | None => {}
        }
    }
    ShardMetrics::add(&shard.metrics.chat_deliveries_total, delivered);
}

/// Ends local subscriptions to `room_id` of `user_id` (or everyone's).
pub fn remove_subscribers(
    shard: &Rc<Shard>,
    room_id: i64,
    user_id: Option<i64>,
    reason: RemovedReason,
) {
    let subscribers: Vec<Rc<ChatConnection>> =
        match shard.chat.registry.rooms.borrow().get(&room_id) {
            Some(subscribers) => subscribers
                .iter()
                .filter(|subscriber| user_id.is_none_or(|user_id| subscriber.user_id == user_id))
                .cloned()
                .collect(),
            None => return,
        };
    let removed = frame(&ServerFrame::Removed { room_id, reason });
    for subscriber in subscribers {
        end_subscription(shard, &subscriber, room_id);
        subscriber.push(shard, &removed);
    }
}

/// Answers a `History` command.
async fn history(
    shard: Rc<Shard>,
    connection: Rc<ChatConnection>,
    request_id: u32,
    room_id: i64,
    before_seq: Option<i64>,
    after_seq: Option<i64>,
    limit: u16,
) {
    let answer = async {
        let rights = shard
            .control
            .lookup_rights(room_id, connection.user_id)
            .await?;
        if !rights.room_exists {
            return Ok(Err((ErrorCode::NotFound, "no such room")));
        }
        if rights.banned || !rights.can_read {
            return Ok(Err((ErrorCode::Forbidden, "you may not read this room")));
        }
        let messages = shard
            .control
            .fetch_history(room_id, before_seq, after_seq, limit as u32)
            .await?;
        Ok::<_, crate::control_client::ControlError>(Ok(messages))
    }
    .await;
    let reply = match answer {
        Ok(Ok(messages)) => frame(&ServerFrame::HistoryPage {
            request_id,
            room_id,
            messages: messages
                .into_iter()
                .map(|message| veza_proto::chat::HistoryMessage {
                    seq: message.seq,
                    author_id: message.author_id,
                    thread_parent_seq: message.thread_parent_seq.unwrap_or(0),
                    created_at_ms: message.created_at_ms,
                    edited_at_ms: message.edited_at_ms.unwrap_or(0),
                    deleted_at_ms: message.deleted_at_ms.unwrap_or(0),
                    mentions: message.mentions,
                    body: message.body,
                    reactions: message
                        .reactions
                        .into_iter()
                        .map(|reaction| veza_proto::chat::ReactionCount {
                            emoji: reaction.emoji,
                            count: reaction.count.clamp(0, u32::MAX as i64) as u32,
                        })
                        .collect(),
                })
                .collect(),
        }),
        Ok(Err((code, message))) => error_frame(request_id, code, 0, message),
        Err(_) => error_frame(
            request_id,
            ErrorCode::Unavailable,
            UNAVAILABLE_RETRY_MS,
            "history is unavailable; retry",
        ),
    };
    connection.push(&shard, &reply);
}
