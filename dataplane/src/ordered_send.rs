//! FIFO delivery of shard messages per destination, on top of the ring mesh.
//!
//! The mesh hands a message back when a ring is full. Chat and live audio
//! both need per-destination order (a subscriber must see a room's reply
//! before later events; a listener shard must see a stream's pages in
//! order), so a refused message waits in a bounded per-destination retry
//! queue, and every later message to that destination queues behind it.
//! Messages to this same shard go through a local inbox, so a handler that
//! sends to its own shard never re-enters itself.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use crate::local_event::LocalNotify;
use crate::metrics::LimitKind;
use crate::shard::{Shard, ShardMessage};

/// One shard's ordered sender. `!Send`; lives in its [`Shard`].
pub struct OrderedSender {
    local_inbox: RefCell<VecDeque<ShardMessage>>,
    draining_local: Cell<bool>,
    mesh_retry: RefCell<Vec<VecDeque<ShardMessage>>>,
    mesh_retry_wake: LocalNotify,
}

impl OrderedSender {
    /// Empty queues for a process of `shard_count` shards.
    pub fn new(shard_count: usize) -> Self {
        Self {
            local_inbox: Default::default(),
            draining_local: Default::default(),
            mesh_retry: RefCell::new((0..shard_count).map(|_| VecDeque::new()).collect()),
            mesh_retry_wake: Default::default(),
        }
    }
}

/// Sends `message` to shard `destination` (possibly this one) in FIFO order
/// per destination. A full ring keeps the message (and every later one to
/// that shard) in a retry queue bounded by `chat.mesh_retry_max`; past it the
/// message is dropped and counted.
pub fn send(shard: &Rc<Shard>, destination: usize, message: ShardMessage) {
    let sender = &shard.ordered;
    if destination == shard.idx {
        sender.local_inbox.borrow_mut().push_back(message);
        if !sender.draining_local.replace(true) {
            loop {
                let next = sender.local_inbox.borrow_mut().pop_front();
                match next {
                    Some(message) => dispatch(shard, message),
                    None => break,
                }
            }
            sender.draining_local.set(false);
        }
        return;
    }
    let mut retry = sender.mesh_retry.borrow_mut();
    let queue = &mut retry[destination];
    if queue.is_empty() {
        match shard.send_to_shard(destination, message) {
            Ok(()) => return,
            Err(message) => queue.push_back(message),
        }
        sender.mesh_retry_wake.notify();
    } else if queue.len() < shard.process.config.chat.mesh_retry_max {
        queue.push_back(message);
    } else {
        shard.metrics.limit_hit(LimitKind::ChatMeshRetry);
        tracing::warn!(
            shard = shard.idx,
            destination,
            "shard message dropped: ring and retry queue full"
        );
    }
}

/// Handles one ordered message addressed to this shard.
fn dispatch(shard: &Rc<Shard>, message: ShardMessage) {
    match message {
        ShardMessage::Chat(message) => crate::chat::handle(shard, message),
        ShardMessage::Live(message) => crate::live::handle(shard, message),
        ShardMessage::MetricsRequest { .. } | ShardMessage::MetricsReply { .. } => {
            unreachable!("scrape messages are not sent in order")
        }
    }
}

/// Retries messages that met a full ring, in order, every millisecond while
/// any wait.
pub async fn run_mesh_retry(shard: Rc<Shard>) {
    loop {
        shard.ordered.mesh_retry_wake.wait().await;
        loop {
            let mut pending = false;
            {
                let mut retry = shard.ordered.mesh_retry.borrow_mut();
                for (destination, queue) in retry.iter_mut().enumerate() {
                    while let Some(message) = queue.pop_front() {
                        if let Err(message) = shard.send_to_shard(destination, message) {
                            queue.push_front(message);
                            break;
                        }
                    }
                    pending |= !queue.is_empty();
                }
            }
            if !pending {
                break;
            }
            monoio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}
