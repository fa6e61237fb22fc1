//! Group commit: the changes sequenced by the rooms a shard owns wait here
//! and go to the control plane in batches (`PersistBatch`), one batch in
//! flight per shard; whatever arrives meanwhile forms the next batch.
//!
//! Architecture Invariant: an acknowledgement (`Sent`, or `Ok` for edits,
//! deletes, reactions and read markers) leaves only after the control plane
//! answered `BatchPersisted` for the batch holding its change. A failed or
//! timed-out batch is retried as it was (the control plane's commits are
//! idempotent by room and seq), with backoff, for as long as it takes; while
//! the queue is full the owner refuses new changes with `Unavailable`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use veza_proto::control::MessageChange;

use super::room::OwnedRoom;
use super::{ChatMessage, ConnRef};
use crate::local_event::LocalNotify;
use crate::shard::Shard;

/// First delay before retrying a failed batch; doubles up to the max.
const RETRY_DELAY_MIN: Duration = Duration::from_millis(50);
/// Longest delay between retries.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);

/// One change waiting for its commit.
pub struct PendingChange {
    /// The change.
    pub change: MessageChange,
    /// Its room, told when the change is committed.
    pub room: Rc<OwnedRoom>,
    /// The room's number for the change.
    pub change_no: u64,
    /// The acknowledgement to send after the commit.
    pub ack: Option<(ConnRef, Bytes)>,
}

/// One shard's persistence queue.
#[derive(Default)]
pub struct Persister {
    queue: RefCell<VecDeque<PendingChange>>,
    in_flight: Cell<usize>,
    wake: LocalNotify,
}

impl Persister {
    /// Changes queued or in flight.
    pub fn depth(&self) -> usize {
        self.queue.borrow().len() + self.in_flight.get()
    }

    /// Queues a change. The caller checked [`Persister::depth`] against
    /// `chat.persist_queue_max` before sequencing it.
    pub fn push(&self, shard: &Shard, change: PendingChange) {
        self.queue.borrow_mut().push_back(change);
        shard
            .metrics
            .chat_persist_queue_depth
            .store(self.depth() as i64, Ordering::Relaxed);
        self.wake.notify();
    }
}

/// The shard's persistence task.
pub async fn run(shard: Rc<Shard>) {
    let persister = shard.chat.persister.clone();
    let batch_max = shard.process.config.chat.persist_batch_max;
    let linger = Duration::from_millis(shard.process.config.chat.persist_linger_ms);
    let mut delay = RETRY_DELAY_MIN;
    loop {
        if persister.queue.borrow().is_empty() {
            persister.wake.wait().await;
            continue;
        }
        // Group commit: a short wait lets a trickle of messages share one
        // commit (PostgreSQL's commit_delay); a full batch goes at once.
        if linger > Duration::ZERO && persister.queue.borrow().len() < batch_max {
            monoio::time::sleep(linger).await;
        }
        let batch: Vec<PendingChange> = {
            let mut queue = persister.queue.borrow_mut();
            let count = queue.len().min(batch_max);
            queue.drain(..count).collect()
        };
        persister.in_flight.set(batch.len());
        let changes: Vec<MessageChange> =
            batch.iter().map(|pending| pending.change.clone()).collect();
        match shard.control.persist_batch(changes).await {
            Ok(()) => {
                delay = RETRY_DELAY_MIN;
                persister.in_flight.set(0);
                crate::metrics::ShardMetrics::add(&shard.metrics.chat_persist_batches_total, 1);
                committed(&shard, batch);
            }
            Err(error) => {
                crate::metrics::ShardMetrics::add(&shard.metrics.chat_persist_failures_total, 1);
                tracing::debug!(shard = shard.idx, %error, changes = batch.len(), "persist batch failed; retrying");
                // Back at the front, in order, ahead of what came meanwhile.
                {
                    let mut queue = persister.queue.borrow_mut();
                    for pending in batch.into_iter().rev() {
                        queue.push_front(pending);
                    }
                }
                persister.in_flight.set(0);
                if !shard.control.is_connected() {
                    let _ = monoio::time::timeout(
                        RETRY_DELAY_MAX,
                        shard.control.wait_until_connected(),
                    )
                    .await;
                } else {
                    monoio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_DELAY_MAX);
                }
            }
        }
        shard
            .metrics
            .chat_persist_queue_depth
            .store(persister.depth() as i64, Ordering::Relaxed);
    }
}

/// Sends the acknowledgements of a committed batch and tells each room.
fn committed(shard: &Rc<Shard>, batch: Vec<PendingChange>) {
    let mut last_room: Option<(Rc<OwnedRoom>, u64)> = None;
    for pending in batch {
        if let Some((conn, frame)) = pending.ack {
            super::send(
                shard,
                conn.shard as usize,
                ChatMessage::ToConnection { conn, frame },
            );
        }
        match &mut last_room {
            Some((room, change_no)) if Rc::ptr_eq(room, &pending.room) => {
                *change_no = pending.change_no;
            }
            _ => {
                if let Some((room, change_no)) = last_room.take() {
                    room.committed(shard, change_no);
                }
                last_room = Some((pending.room, pending.change_no));
            }
        }
    }
    if let Some((room, change_no)) = last_room {
        room.committed(shard, change_no);
    }
}
