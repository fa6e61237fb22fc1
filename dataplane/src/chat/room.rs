//! Rooms on their owner shard: one task per room takes its commands in
//! arrival order, so a room's events have one total order (its seq).
//!
//! For each command the task checks rights (cached per user, looked up from
//! the control plane on a miss, invalidated by pushes), applies bans, mutes
//! and slow mode, assigns the seq, frames the event once, appends it to the
//! bounded backlog (used by resume), fans it out (one `Deliver` per shard
//! with subscribers) and queues the change for group commit. Looking up
//! rights or loading the room's last seq waits on the control plane; only
//! this room waits meanwhile.
//!
//! Backlog bound: at most `chat.room_backlog_max` events, but an event whose
//! change is not committed yet is never evicted, so a resume never misses a
//! message that is neither in the database nor in memory.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use veza_proto::chat::{ErrorCode, MessageEvent, RemovedReason, ServerFrame};
use veza_proto::control::{MessageChange, NewMessage, RoomRights};

use super::persist::PendingChange;
use super::{
    error_frame, frame, owner_of_user, ChatMessage, ConnRef, PresenceInput, RoomCommand, RoomInput,
    SubscribeAccepted, SubscribeReply,
};
use crate::control_client::ControlError;
use crate::local_event::LocalNotify;
use crate::metrics::{LimitKind, ShardMetrics};
use crate::shard::Shard;

/// How long a room with no subscribers, no queued commands and everything
/// committed stays loaded.
const IDLE_UNLOAD: Duration = Duration::from_secs(300);

/// Retry hint when the control plane is away.
const UNAVAILABLE_RETRY_MS: u32 = 1_000;

/// Cached rights per room before the cache is cleared.
const RIGHTS_CACHED_MAX: usize = 10_000;

/// Nonces remembered per room for idempotent retries.
const NONCES_REMEMBERED_MAX: usize = 4_096;

/// The rooms this shard owns.
#[derive(Default)]
pub struct OwnedRooms {
    rooms: RefCell<HashMap<i64, Rc<OwnedRoom>>>,
}

/// An owned room: its command queue and state.
pub struct OwnedRoom {
    room_id: i64,
    inbox: RefCell<VecDeque<RoomInput>>,
    wake: LocalNotify,
    state: RefCell<RoomState>,
    /// Changes committed up to this room change number.
    committed_change_no: Cell<u64>,
    /// A seq reservation came back (or failed).
    seqs_reserved: LocalNotify,
}

/// A message the backlog remembers for edit and delete checks.
#[derive(Clone, Copy)]
struct MessageFacts {
    author_id: i64,
    deleted: bool,
}

struct BacklogEntry {
    /// The message's seq, or for other events the head seq when applied.
    seq: i64,
    message: Option<MessageFacts>,
    frame: Bytes,
    change_no: u64,
}

struct CachedRights {
    rights: RoomRights,
    fetched: quanta::Instant,
}

#[derive(Default)]
struct RoomState {
    /// The newest assigned seq; `None` until the room's first seq
    /// reservation came back from the control plane.
    head_seq: Option<i64>,
    /// The last seq of the block being assigned (reserved durably).
    seq_reserved: i64,
    /// The next block, reserved ahead of need.
    next_seq_block: Option<(i64, i64)>,
    /// A `ReserveSeqs` request is in flight.
    reserving_seqs: bool,
    backlog: VecDeque<BacklogEntry>,
    subscribers_per_shard: Vec<u32>,
    rights: HashMap<i64, CachedRights>,
    last_post: HashMap<i64, quanta::Instant>,
    nonces: HashMap<(i64, String), (i64, u64)>,
    nonce_order: VecDeque<(i64, String)>,
    /// Acks of retried sends waiting for their change's commit.
    waiting_acks: Vec<(u64, ConnRef, Bytes)>,
    next_change_no: u64,
    /// Strictly increasing edit times (the store ignores older edits).
    last_edit_ms: i64,
    deleted: bool,
}

/// At shutdown (after the connections drained): gives back the unused seqs
/// of every room this shard owns, so that the next start continues each
/// room's seqs without a gap; bounded by `control.request_timeout_ms`.
pub async fn release_seqs_at_shutdown(shard: &Rc<Shard>) {
    let unused: Vec<(i64, i64, i64)> = shard
        .chat
        .rooms
        .rooms
        .borrow()
        .values()
        .filter_map(|room| {
            room.unused_seqs()
                .map(|(head, reserved)| (room.room_id, head, reserved))
        })
        .collect();
    if unused.is_empty() || !shard.control.is_configured() {
        return;
    }
    let limit = Duration::from_millis(shard.process.config.control.request_timeout_ms);
    let pending = Rc::new(Cell::new(unused.len()));
    let failed = Rc::new(Cell::new(0usize));
    let done = Rc::new(LocalNotify::default());
    for (room_id, head, reserved) in unused {
        let (control, pending, failed, done) = (
            shard.control.clone(),
            pending.clone(),
            failed.clone(),
            done.clone(),
        );
        monoio::spawn(async move {
            if control.release_seqs(room_id, reserved, head).await.is_err() {
                failed.set(failed.get() + 1);
            }
            pending.set(pending.get() - 1);
            if pending.get() == 0 {
                done.notify();
            }
        });
    }
    let finished = monoio::time::timeout(limit, done.wait()).await.is_ok();
    if !finished || failed.get() > 0 {
        tracing::warn!(
            shard = shard.idx,
            failed = failed.get(),
            unanswered = pending.get(),
            "some rooms' unused seqs were not given back; their seqs skip them after the restart"
        );
    }
}

/// Queues a command for its room, creating the room (and its task) on first use.
pub fn enqueue(shard: &Rc<Shard>, input: RoomInput) {
    let loaded = shard.chat.rooms.rooms.borrow().contains_key(&input.room_id);
    if !loaded && shard.chat.rooms.rooms.borrow().len() >= shard.process.config.chat.rooms_owned_max
    {
        if request_id_of(&input.command).is_none() {
            // A change notice for a room nobody here uses: nothing to do.
            return;
        }
        shard.metrics.limit_hit(LimitKind::ChatRoomsOwned);
        refuse_input(
            shard,
            &input,
            Refusal::unavailable("this server holds too many rooms right now; retry"),
        );
        return;
    }
    let room = {
        let mut rooms = shard.chat.rooms.rooms.borrow_mut();
        rooms
            .entry(input.room_id)
            .or_insert_with(|| {
                let room = Rc::new(OwnedRoom {
                    room_id: input.room_id,
                    inbox: RefCell::default(),
                    wake: LocalNotify::default(),
                    state: RefCell::new(RoomState {
                        subscribers_per_shard: vec![0; shard.process.shard_count()],
                        ..RoomState::default()
                    }),
                    committed_change_no: Cell::new(0),
                    seqs_reserved: LocalNotify::default(),
                });
                shard
                    .metrics
                    .chat_rooms_owned
                    .fetch_add(1, Ordering::Relaxed);
                monoio::spawn(run_room(shard.clone(), room.clone()));
                room
            })
            .clone()
    };
    if room.inbox.borrow().len() >= shard.process.config.chat.room_queue_max
        && !matches!(input.command, RoomCommand::Unsubscribed { .. })
    {
        shard.metrics.limit_hit(LimitKind::ChatRoomQueue);
        refuse_input(
            shard,
            &input,
            Refusal::unavailable("the room is overloaded; retry"),
        );
        return;
    }
    room.inbox.borrow_mut().push_back(input);
    room.wake.notify();
}

/// Refuses a command before its room took it.
fn refuse_input(shard: &Rc<Shard>, input: &RoomInput, refusal: Refusal) {
    refuse(
        shard,
        input.room_id,
        input.from,
        request_id_of(&input.command),
        matches!(input.command, RoomCommand::Subscribe { .. }),
        &refusal,
    );
}

/// Drops every owned room's cached rights (after lost pushes).
pub fn forget_all_rights(shard: &Rc<Shard>) {
    for room in shard.chat.rooms.rooms.borrow().values() {
        room.state.borrow_mut().rights.clear();
    }
}

fn request_id_of(command: &RoomCommand) -> Option<u32> {
    match command {
        RoomCommand::Subscribe { request_id, .. }
        | RoomCommand::Send { request_id, .. }
        | RoomCommand::Edit { request_id, .. }
        | RoomCommand::Delete { request_id, .. }
        | RoomCommand::React { request_id, .. }
        | RoomCommand::Typing { request_id }
        | RoomCommand::ReadMarker { request_id, .. } => Some(*request_id),
        RoomCommand::Unsubscribed { .. }
        | RoomCommand::PublishEphemeral { .. }
        | RoomCommand::Recheck
        | RoomCommand::RoomChanged => None,
    }
}

/// Answers a refused command with its error frame; a refused `Subscribe`
/// goes through the subscription path, so the connection forgets the
/// pending subscription (a retry may work).
fn refuse(
    shard: &Rc<Shard>,
    room_id: i64,
    from: Option<ConnRef>,
    request_id: Option<u32>,
    is_subscribe: bool,
    refusal: &Refusal,
) {
    let (Some(conn), Some(request_id)) = (from, request_id) else {
        return;
    };
    let error = error_frame(
        request_id,
        refusal.code,
        refusal.retry_after_ms,
        refusal.message,
    );
    if is_subscribe {
        super::send(
            shard,
            conn.shard as usize,
            ChatMessage::SubscribeReply(Box::new(SubscribeReply {
                room_id,
                conn,
                request_id,
                outcome: Err(error),
            })),
        );
    } else {
        reply(shard, conn, error);
    }
}

fn reply(shard: &Rc<Shard>, conn: ConnRef, frame: Bytes) {
    super::send(
        shard,
        conn.shard as usize,
        ChatMessage::ToConnection { conn, frame },
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

async fn run_room(shard: Rc<Shard>, room: Rc<OwnedRoom>) {
    loop {
        let next = room.inbox.borrow_mut().pop_front();
        match next {
            Some(input) => room.process(&shard, input).await,
            None => {
                let woken = monoio::time::timeout(IDLE_UNLOAD, room.wake.wait()).await;
                if woken.is_err() && room.can_unload() {
                    shard.chat.rooms.rooms.borrow_mut().remove(&room.room_id);
                    room.release_seqs(&shard);
                    shard
                        .metrics
                        .chat_rooms_owned
                        .fetch_sub(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// Why a command was refused, as an error reply.
struct Refusal {
    code: ErrorCode,
    retry_after_ms: u32,
    message: &'static str,
}

impl Refusal {
    fn new(code: ErrorCode, message: &'static str) -> Self {
        Self {
            code,
            retry_after_ms: 0,
            message,
        }
    }

    fn unavailable(message: &'static str) -> Self {
        Self {
            code: ErrorCode::Unavailable,
            retry_after_ms: UNAVAILABLE_RETRY_MS,
            message,
        }
    }
}

impl From<ControlError> for Refusal {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::Refused {
                code: veza_proto::control::RequestErrorCode::NotFound,
                ..
            } => Refusal::new(ErrorCode::NotFound, "no such room"),
            _ => Refusal::unavailable("the control plane is unavailable; retry"),
        }
    }
}

impl OwnedRoom {
    fn can_unload(&self) -> bool {
        let state = self.state.borrow();
        self.inbox.borrow().is_empty()
            && state.subscribers_per_shard.iter().all(|count| *count == 0)
            && state.waiting_acks.is_empty()
            && self.committed_change_no.get() + 1 >= state.next_change_no
            && !state.reserving_seqs
    }

    /// The room's newest assigned seq and the end of its reservation, when
    /// part of the reservation is unused.
    fn unused_seqs(&self) -> Option<(i64, i64)> {
        let state = self.state.borrow();
        let head = state.head_seq?;
        let reserved = state
            .next_seq_block
            .map_or(state.seq_reserved, |(_, last)| last);
        (head < reserved).then_some((head, reserved))
    }

    /// Gives the unused seqs of the room's reservation back as it unloads,
    /// so that the next owner continues without a gap (best effort: if this
    /// fails, the next owner's seqs skip them).
    fn release_seqs(&self, shard: &Rc<Shard>) {
        let Some((head, reserved)) = self.unused_seqs() else {
            return;
        };
        let control = shard.control.clone();
        let room_id = self.room_id;
        monoio::spawn(async move {
            if let Err(error) = control.release_seqs(room_id, reserved, head).await {
                tracing::debug!(room_id, %error, "releasing reserved seqs failed; the next owner skips them");
            }
        });
    }

    /// The control plane committed this room's changes up to `change_no`.
    pub fn committed(&self, shard: &Rc<Shard>, change_no: u64) {
        if change_no > self.committed_change_no.get() {
            self.committed_change_no.set(change_no);
        }
        let committed = self.committed_change_no.get();
        let ready: Vec<(ConnRef, Bytes)> = {
            let mut state = self.state.borrow_mut();
            let mut ready = Vec::new();
            state.waiting_acks.retain(|(number, conn, frame)| {
                if *number <= committed {
                    ready.push((*conn, frame.clone()));
                    false
                } else {
                    true
                }
            });
            let backlog_max = shard.process.config.chat.room_backlog_max;
            while state.backlog.len() > backlog_max
                && state
                    .backlog
                    .front()
                    .is_some_and(|entry| entry.change_no <= committed)
            {
                state.backlog.pop_front();
            }
            ready
        };
        for (conn, frame) in ready {
            reply(shard, conn, frame);
        }
    }

    async fn process(&self, shard: &Rc<Shard>, input: RoomInput) {
        let from = input.from;
        let request_id = request_id_of(&input.command);
        let is_subscribe = matches!(input.command, RoomCommand::Subscribe { .. });
        if let Err(refusal) = self.apply(shard, input).await {
            refuse(
                shard,
                self.room_id,
                from,
                request_id,
                is_subscribe,
                &refusal,
            );
        }
    }

    async fn apply(&self, shard: &Rc<Shard>, input: RoomInput) -> Result<(), Refusal> {
        let RoomInput {
            from,
            user_id,
            command,
            ..
        } = input;
        match command {
            RoomCommand::Unsubscribed { shard: subscriber } => {
                let mut state = self.state.borrow_mut();
                if let Some(count) = state.subscribers_per_shard.get_mut(subscriber as usize) {
                    *count = count.saturating_sub(1);
                }
                Ok(())
            }
            RoomCommand::PublishEphemeral { frame } => {
                self.fan_out(shard, &frame, true);
                Ok(())
            }
            RoomCommand::Recheck => {
                let before = self.state.borrow_mut().rights.remove(&user_id);
                let rights = self.rights(shard, user_id).await?;
                let was_member = before.is_some_and(|cached| cached.rights.role.is_some());
                if !rights.room_exists {
                    self.room_gone(shard);
                } else if rights.banned {
                    self.remove_subscribers(shard, Some(user_id), RemovedReason::Banned);
                } else if !rights.can_read || (was_member && rights.role.is_none()) {
                    // Kicked (or left) counts even in a public room, which
                    // the user may then subscribe to again as a reader.
                    self.remove_subscribers(shard, Some(user_id), RemovedReason::Kicked);
                }
                Ok(())
            }
            RoomCommand::RoomChanged => {
                self.state.borrow_mut().rights.clear();
                // User 0 does not exist; the answer still says whether the room does.
                let rights = self.rights(shard, 0).await?;
                self.state.borrow_mut().rights.remove(&0);
                if !rights.room_exists {
                    self.room_gone(shard);
                }
                Ok(())
            }
            command => {
                let conn = from.expect("client commands come from a connection");
                self.client_command(shard, conn, user_id, command).await
            }
        }
    }

    async fn client_command(
        &self,
        shard: &Rc<Shard>,
        conn: ConnRef,
        user_id: i64,
        command: RoomCommand,
    ) -> Result<(), Refusal> {
        let head_seq = self.load_head(shard).await?;
        let rights = self.rights(shard, user_id).await?;
        if !rights.room_exists || self.state.borrow().deleted {
            return Err(Refusal::new(ErrorCode::NotFound, "no such room"));
        }
        if rights.banned {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "you are banned from this room",
            ));
        }
        if !rights.can_read {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "you may not read this room",
            ));
        }
        match command {
            RoomCommand::Subscribe {
                request_id,
                since_seq,
            } => {
                self.subscribe(shard, conn, request_id, since_seq, head_seq);
                Ok(())
            }
            RoomCommand::Typing { request_id } => {
                if !rights.can_post {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "you may not post in this room",
                    ));
                }
                let typing = frame(&ServerFrame::Typing {
                    room_id: self.room_id,
                    user_id,
                });
                self.fan_out(shard, &typing, true);
                reply(shard, conn, frame(&ServerFrame::Ok { request_id }));
                Ok(())
            }
            RoomCommand::Send {
                request_id,
                thread_parent_seq,
                nonce,
                mentions,
                body,
            } => {
                check_can_post(&rights)?;
                if thread_parent_seq < 0 || thread_parent_seq > head_seq {
                    return Err(Refusal::new(
                        ErrorCode::Invalid,
                        "thread_parent_seq names no message of this room",
                    ));
                }
                if !nonce.is_empty() {
                    let known = self
                        .state
                        .borrow()
                        .nonces
                        .get(&(user_id, nonce.clone()))
                        .copied();
                    if let Some((seq, change_no)) = known {
                        let ack = frame(&ServerFrame::Sent {
                            request_id,
                            room_id: self.room_id,
                            seq,
                        });
                        if change_no <= self.committed_change_no.get() {
                            reply(shard, conn, ack);
                        } else {
                            self.state
                                .borrow_mut()
                                .waiting_acks
                                .push((change_no, conn, ack));
                        }
                        return Ok(());
                    }
                }
                self.check_mute_and_slow_mode(user_id, &rights)?;
                self.check_persist_room(shard)?;
                self.reserve_next_seq(shard).await?;
                self.sequence_message(
                    shard,
                    conn,
                    user_id,
                    request_id,
                    thread_parent_seq,
                    nonce,
                    mentions,
                    body,
                    &rights,
                );
                Ok(())
            }
            RoomCommand::Edit {
                request_id,
                seq,
                body,
            } => {
                check_can_post(&rights)?;
                let facts = self.message_facts(shard, seq, head_seq).await?;
                if facts.author_id != user_id {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "only the author may edit a message",
                    ));
                }
                self.check_persist_room(shard)?;
                let edited_at_ms = self.next_edit_time();
                let event = frame(&ServerFrame::Edited {
                    room_id: self.room_id,
                    seq,
                    editor_id: user_id,
                    edited_at_ms,
                    body: body.clone(),
                });
                let change = MessageChange::Edit {
                    room_id: self.room_id,
                    seq,
                    editor_id: user_id,
                    body,
                    edited_at_ms,
                };
                self.apply_change(shard, conn, request_id, change, event, None);
                Ok(())
            }
            RoomCommand::Delete { request_id, seq } => {
                let facts = self.message_facts(shard, seq, head_seq).await?;
                if facts.author_id != user_id {
                    // Others' messages: only with the right, and only those
                    // of authors of a strictly lower role (PERMISSIONS.md).
                    let author = self.rights(shard, facts.author_id).await?;
                    if !rights.can_delete_others || role_rank(author.role) >= role_rank(rights.role)
                    {
                        return Err(Refusal::new(
                            ErrorCode::Forbidden,
                            "you may delete only your own messages and those of lower roles",
                        ));
                    }
                }
                self.check_persist_room(shard)?;
                let deleted_at_ms = now_ms();
                let event = frame(&ServerFrame::Deleted {
                    room_id: self.room_id,
                    seq,
                    deleter_id: user_id,
                    deleted_at_ms,
                });
                let change = MessageChange::Delete {
                    room_id: self.room_id,
                    seq,
                    deleter_id: user_id,
                    deleted_at_ms,
                };
                self.apply_change(shard, conn, request_id, change, event, Some(seq));
                Ok(())
            }
            RoomCommand::React {
                request_id,
                seq,
                add,
                emoji,
            } => {
                check_can_post(&rights)?;
                self.message_facts(shard, seq, head_seq).await?;
                self.check_persist_room(shard)?;
                let event = frame(&ServerFrame::Reaction {
                    room_id: self.room_id,
                    seq,
                    user_id,
                    add,
                    emoji: emoji.clone(),
                });
                let change = if add {
                    MessageChange::ReactionAdd {
                        room_id: self.room_id,
                        seq,
                        user_id,
                        emoji,
                    }
                } else {
                    MessageChange::ReactionRemove {
                        room_id: self.room_id,
                        seq,
                        user_id,
                        emoji,
                    }
                };
                self.apply_change(shard, conn, request_id, change, event, None);
                Ok(())
            }
            RoomCommand::ReadMarker { request_id, seq } => {
                if seq < 1 || seq > head_seq {
                    return Err(Refusal::new(
                        ErrorCode::NotFound,
                        "no message with this seq",
                    ));
                }
                self.check_persist_room(shard)?;
                let change_no = self.next_change_no();
                shard.chat.persister.push(
                    shard,
                    PendingChange {
                        change: MessageChange::ReadMarker {
                            room_id: self.room_id,
                            user_id,
                            seq,
                        },
                        room: self.rc(shard),
                        change_no,
                        ack: Some((conn, frame(&ServerFrame::Ok { request_id }))),
                    },
                );
                Ok(())
            }
            RoomCommand::Unsubscribed { .. }
            | RoomCommand::PublishEphemeral { .. }
            | RoomCommand::Recheck
            | RoomCommand::RoomChanged => unreachable!("handled in apply"),
        }
    }

    fn rc(&self, shard: &Rc<Shard>) -> Rc<OwnedRoom> {
        shard
            .chat
            .rooms
            .rooms
            .borrow()
            .get(&self.room_id)
            .cloned()
            .expect("a room is registered while its task runs")
    }

    /// The room's newest seq, known once its first seq reservation is in:
    /// the block starts after the newest stored seq and after every seq a
    /// previous owner reserved (and may have shown to clients).
    async fn load_head(&self, shard: &Rc<Shard>) -> Result<i64, Refusal> {
        if let Some(head) = self.state.borrow().head_seq {
            return Ok(head);
        }
        let block = shard.process.config.chat.seq_reserve_block;
        let (first, last) = shard.control.reserve_seqs(self.room_id, block).await?;
        let mut state = self.state.borrow_mut();
        state.head_seq = Some(first - 1);
        state.seq_reserved = last;
        Ok(first - 1)
    }

    /// Makes sure the next seq is reserved, asking for the next block once
    /// half of this one is used. Waits only when the block is used up before
    /// the next one came back; refuses with `Unavailable` when the control
    /// plane cannot reserve.
    async fn reserve_next_seq(&self, shard: &Rc<Shard>) -> Result<(), Refusal> {
        let half_block = i64::from(shard.process.config.chat.seq_reserve_block / 2);
        loop {
            let start_reserving = {
                let mut state = self.state.borrow_mut();
                let head = state.head_seq.expect("loaded");
                if head >= state.seq_reserved {
                    if let Some((first, last)) = state.next_seq_block.take() {
                        // Normally `first` is `seq_reserved + 1`; if not,
                        // the seqs between are not this owner's to assign.
                        state.head_seq = Some(head.max(first - 1));
                        state.seq_reserved = last;
                        continue;
                    }
                }
                let left = state.seq_reserved - head;
                let wanted =
                    left <= half_block && state.next_seq_block.is_none() && !state.reserving_seqs;
                if wanted {
                    state.reserving_seqs = true;
                }
                if left > 0 {
                    if wanted {
                        drop(state);
                        self.spawn_seq_reservation(shard);
                    }
                    return Ok(());
                }
                wanted
            };
            if start_reserving {
                self.spawn_seq_reservation(shard);
            }
            self.seqs_reserved.wait().await;
            let state = self.state.borrow();
            if state.next_seq_block.is_none() && !state.reserving_seqs {
                return Err(Refusal::unavailable(
                    "the room's next seqs cannot be reserved now; retry",
                ));
            }
        }
    }

    /// Asks the control plane for the room's next block of seqs.
    fn spawn_seq_reservation(&self, shard: &Rc<Shard>) {
        let room = self.rc(shard);
        let shard = shard.clone();
        monoio::spawn(async move {
            let block = shard.process.config.chat.seq_reserve_block;
            let reserved = shard.control.reserve_seqs(room.room_id, block).await;
            {
                let mut state = room.state.borrow_mut();
                state.reserving_seqs = false;
                match reserved {
                    Ok(range) => state.next_seq_block = Some(range),
                    Err(error) => {
                        tracing::warn!(room_id = room.room_id, %error, "reserving seqs failed");
                    }
                }
            }
            room.seqs_reserved.notify();
        });
    }

    async fn rights(&self, shard: &Rc<Shard>, user_id: i64) -> Result<RoomRights, Refusal> {
        let ttl = Duration::from_millis(shard.process.config.chat.rights_cache_ttl_ms);
        if let Some(cached) = self.state.borrow().rights.get(&user_id) {
            if cached.fetched.elapsed() < ttl {
                return Ok(cached.rights.clone());
            }
        }
        let rights = shard.control.lookup_rights(self.room_id, user_id).await?;
        let mut state = self.state.borrow_mut();
        if state.rights.len() >= RIGHTS_CACHED_MAX {
            state.rights.clear();
        }
        state.rights.insert(
            user_id,
            CachedRights {
                rights: rights.clone(),
                fetched: quanta::Instant::now(),
            },
        );
        Ok(rights)
    }

    fn check_mute_and_slow_mode(&self, user_id: i64, rights: &RoomRights) -> Result<(), Refusal> {
        if let Some(until_ms) = rights.muted_until_ms {
            let now = now_ms();
            if until_ms > now {
                // A mute without an end (stored as a far future) gets no hint.
                let wait = u32::try_from(until_ms - now).unwrap_or(0);
                return Err(Refusal {
                    code: ErrorCode::Muted,
                    retry_after_ms: wait,
                    message: "you are muted in this room",
                });
            }
        }
        if rights.slow_mode_seconds > 0 && !rights.can_moderate {
            let interval = Duration::from_secs(rights.slow_mode_seconds as u64);
            let state = self.state.borrow();
            if let Some(last) = state.last_post.get(&user_id) {
                let elapsed = last.elapsed();
                if elapsed < interval {
                    return Err(Refusal {
                        code: ErrorCode::SlowMode,
                        retry_after_ms: (interval - elapsed).as_millis().max(1) as u32,
                        message: "slow mode: wait before posting again",
                    });
                }
            }
        }
        Ok(())
    }

    fn check_persist_room(&self, shard: &Rc<Shard>) -> Result<(), Refusal> {
        if shard.chat.persister.depth() >= shard.process.config.chat.persist_queue_max {
            shard.metrics.limit_hit(LimitKind::ChatPersistQueue);
            return Err(Refusal::unavailable(
                "messages cannot be stored right now; retry",
            ));
        }
        Ok(())
    }

    fn next_change_no(&self) -> u64 {
        let mut state = self.state.borrow_mut();
        state.next_change_no += 1;
        state.next_change_no
    }

    fn next_edit_time(&self) -> i64 {
        let mut state = self.state.borrow_mut();
        let at = now_ms().max(state.last_edit_ms + 1);
        state.last_edit_ms = at;
        at
    }

    /// Author and deletion of message `seq`: from the backlog, else the database.
    async fn message_facts(
        &self,
        shard: &Rc<Shard>,
        seq: i64,
        head_seq: i64,
    ) -> Result<MessageFacts, Refusal> {
        if seq < 1 || seq > head_seq {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                "no message with this seq",
            ));
        }
        let in_backlog = {
            let state = self.state.borrow();
            state
                .backlog
                .iter()
                .rev()
                .find(|entry| entry.message.is_some() && entry.seq == seq)
                .and_then(|entry| entry.message)
        };
        let facts = match in_backlog {
            Some(facts) => facts,
            None => {
                let found = shard
                    .control
                    .fetch_history(self.room_id, Some(seq + 1), Some(seq - 1), 1)
                    .await?;
                match found.into_iter().find(|message| message.seq == seq) {
                    Some(message) => MessageFacts {
                        author_id: message.author_id,
                        deleted: message.deleted_at_ms.is_some(),
                    },
                    None => {
                        return Err(Refusal::new(
                            ErrorCode::NotFound,
                            "no message with this seq",
                        ))
                    }
                }
            }
        };
        if facts.deleted {
            return Err(Refusal::new(ErrorCode::NotFound, "the message was deleted"));
        }
        Ok(facts)
    }

    #[allow(clippy::too_many_arguments)]
    fn sequence_message(
        &self,
        shard: &Rc<Shard>,
        conn: ConnRef,
        user_id: i64,
        request_id: u32,
        thread_parent_seq: i64,
        nonce: String,
        mut mentions: Vec<i64>,
        body: String,
        _rights: &RoomRights,
    ) {
        mentions.sort_unstable();
        mentions.dedup();
        let created_at_ms = now_ms();
        let (seq, change_no) = {
            let mut state = self.state.borrow_mut();
            let seq = state.head_seq.expect("loaded") + 1;
            debug_assert!(seq <= state.seq_reserved, "seq {seq} is reserved");
            state.head_seq = Some(seq);
            state.next_change_no += 1;
            state.last_post.insert(user_id, quanta::Instant::now());
            (seq, state.next_change_no)
        };
        let event = MessageEvent {
            room_id: self.room_id,
            seq,
            author_id: user_id,
            thread_parent_seq,
            created_at_ms,
            nonce: nonce.clone(),
            mentions: mentions.clone(),
            body: body.clone(),
        };
        let event_frame = frame(&ServerFrame::Message(event));
        {
            let mut state = self.state.borrow_mut();
            state.backlog.push_back(BacklogEntry {
                seq,
                message: Some(MessageFacts {
                    author_id: user_id,
                    deleted: false,
                }),
                frame: event_frame.clone(),
                change_no,
            });
            if !nonce.is_empty() {
                if state.nonce_order.len() >= NONCES_REMEMBERED_MAX {
                    if let Some(oldest) = state.nonce_order.pop_front() {
                        state.nonces.remove(&oldest);
                    }
                }
                state
                    .nonces
                    .insert((user_id, nonce.clone()), (seq, change_no));
                state.nonce_order.push_back((user_id, nonce.clone()));
            }
        }
        ShardMetrics::add(&shard.metrics.chat_messages_sequenced_total, 1);
        self.fan_out(shard, &event_frame, false);
        let mention_targets: Vec<i64> = mentions
            .iter()
            .copied()
            .filter(|mentioned| *mentioned != user_id)
            .take(veza_proto::chat::MENTIONS_MAX)
            .collect();
        let mention_body = (!mention_targets.is_empty()).then(|| body.clone());
        shard.chat.persister.push(
            shard,
            PendingChange {
                change: MessageChange::New(NewMessage {
                    room_id: self.room_id,
                    seq,
                    author_id: user_id,
                    client_nonce: nonce,
                    body,
                    thread_parent_seq: (thread_parent_seq > 0).then_some(thread_parent_seq),
                    mentions,
                    created_at_ms,
                }),
                room: self.rc(shard),
                change_no,
                ack: Some((
                    conn,
                    frame(&ServerFrame::Sent {
                        request_id,
                        room_id: self.room_id,
                        seq,
                    }),
                )),
            },
        );
        if let Some(body) = mention_body {
            let mention = frame(&ServerFrame::Mention {
                room_id: self.room_id,
                seq,
                author_id: user_id,
                created_at_ms,
                body,
            });
            self.notify_mentioned(shard, mention_targets, mention);
        }
    }

    /// Sends the mention to each mentioned user who may read the room.
    fn notify_mentioned(&self, shard: &Rc<Shard>, users: Vec<i64>, mention: Bytes) {
        let room = self.rc(shard);
        let shard = shard.clone();
        monoio::spawn(async move {
            for user_id in users {
                let Ok(rights) = room.rights(&shard, user_id).await else {
                    continue;
                };
                if rights.can_read && !rights.banned {
                    super::send(
                        &shard,
                        owner_of_user(user_id, shard.process.shard_count()),
                        ChatMessage::Presence {
                            user_id,
                            input: Box::new(PresenceInput::Mention {
                                frame: mention.clone(),
                            }),
                        },
                    );
                }
            }
        });
    }

    /// Edits, deletes and reactions: backlog, fan-out, persist, ack after commit.
    fn apply_change(
        &self,
        shard: &Rc<Shard>,
        conn: ConnRef,
        request_id: u32,
        change: MessageChange,
        event: Bytes,
        deleted_seq: Option<i64>,
    ) {
        let change_no = self.next_change_no();
        {
            let mut state = self.state.borrow_mut();
            let head = state.head_seq.unwrap_or(0);
            if let Some(seq) = deleted_seq {
                for entry in state.backlog.iter_mut() {
                    if entry.seq == seq {
                        if let Some(facts) = entry.message.as_mut() {
                            facts.deleted = true;
                        }
                    }
                }
            }
            state.backlog.push_back(BacklogEntry {
                seq: head,
                message: None,
                frame: event.clone(),
                change_no,
            });
        }
        self.fan_out(shard, &event, false);
        shard.chat.persister.push(
            shard,
            PendingChange {
                change,
                room: self.rc(shard),
                change_no,
                ack: Some((conn, frame(&ServerFrame::Ok { request_id }))),
            },
        );
    }

    /// One `Deliver` per shard with subscribers.
    fn fan_out(&self, shard: &Rc<Shard>, event: &Bytes, ephemeral: bool) {
        let destinations: Vec<usize> = self
            .state
            .borrow()
            .subscribers_per_shard
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(destination, _)| destination)
            .collect();
        for destination in destinations {
            super::send(
                shard,
                destination,
                ChatMessage::Deliver {
                    room_id: self.room_id,
                    frame: event.clone(),
                    ephemeral,
                },
            );
        }
    }

    fn subscribe(
        &self,
        shard: &Rc<Shard>,
        conn: ConnRef,
        request_id: u32,
        since_seq: i64,
        head_seq: i64,
    ) {
        let resume_max = shard.process.config.chat.resume_messages_max as i64;
        let accepted = {
            let mut state = self.state.borrow_mut();
            state.subscribers_per_shard[conn.shard as usize] += 1;
            if since_seq < 0 || head_seq - since_seq > resume_max {
                SubscribeAccepted {
                    head_seq,
                    database_gap: None,
                    replay: Vec::new(),
                }
            } else {
                let backlog_first_seq = state
                    .backlog
                    .iter()
                    .find(|entry| entry.message.is_some())
                    .map_or(head_seq + 1, |entry| entry.seq);
                let replay = state
                    .backlog
                    .iter()
                    .filter(|entry| match entry.message {
                        Some(_) => entry.seq > since_seq,
                        None => entry.seq >= since_seq,
                    })
                    .map(|entry| entry.frame.clone())
                    .collect();
                SubscribeAccepted {
                    head_seq,
                    database_gap: (since_seq + 1 < backlog_first_seq)
                        .then_some((since_seq, backlog_first_seq)),
                    replay,
                }
            }
        };
        super::send(
            shard,
            conn.shard as usize,
            ChatMessage::SubscribeReply(Box::new(SubscribeReply {
                room_id: self.room_id,
                conn,
                request_id,
                outcome: Ok(accepted),
            })),
        );
    }

    fn remove_subscribers(&self, shard: &Rc<Shard>, user_id: Option<i64>, reason: RemovedReason) {
        let destinations: Vec<usize> = self
            .state
            .borrow()
            .subscribers_per_shard
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(destination, _)| destination)
            .collect();
        for destination in destinations {
            super::send(
                shard,
                destination,
                ChatMessage::RemoveSubscribers {
                    room_id: self.room_id,
                    user_id,
                    reason,
                },
            );
        }
    }

    fn room_gone(&self, shard: &Rc<Shard>) {
        self.state.borrow_mut().deleted = true;
        self.remove_subscribers(shard, None, RemovedReason::RoomDeleted);
    }
}

/// Higher is more powerful; no role (not a member) is lowest.
fn role_rank(role: Option<veza_proto::control::Role>) -> u8 {
    use veza_proto::control::Role;
    match role {
        None => 0,
        Some(Role::Member) => 1,
        Some(Role::Moderator) => 2,
        Some(Role::Admin) => 3,
        Some(Role::Owner) => 4,
    }
}

fn check_can_post(rights: &RoomRights) -> Result<(), Refusal> {
    if rights.can_post {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::Forbidden,
            "you may not post in this room",
        ))
    }
}
