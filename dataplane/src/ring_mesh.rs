//! The cross-shard mesh: one bounded lock-free SPSC ring for every ordered
//! pair of shards, batched pushes, and a doorbell per shard that is rung only
//! when that shard sleeps.
//!
//! ## Why this shape
//! Shards share nothing (Seastar's model): a shard reaches another only by
//! handing it a typed message. One ring per ordered pair keeps each ring
//! single-producer single-consumer, so a push and a pop are a couple of atomic
//! loads and one release store, with no lock and no compare-and-swap.
//!
//! ## Batching
//! A sender's pushes go into its frozen producer and become visible to the
//! receiver only at [`MeshEndpoint::flush`], which the shard calls once per
//! loop turn: one release store publishes the whole batch, and at most one
//! doorbell ring follows it.
//!
//! ## No lost wake-ups
//! The receiver, before it parks, sets its `sleeping` flag, issues a SeqCst
//! fence and checks every inbound ring once more; only if all are empty does
//! it park on its doorbell. A sender publishes its batch, issues a SeqCst
//! fence and then reads the flag; if it is set, it clears it and rings. With
//! both fences, either the receiver's re-check sees the batch or the sender
//! sees the flag, so a message is never left unseen in a ring while its
//! receiver sleeps.
//!
//! ## When a ring is full
//! [`MeshEndpoint::send`] returns the message back in [`RingFull`] and counts
//! the event in `veza_ring_full_total{from,to}`. The caller decides what that
//! means for its message (a metrics scrape marks the shard as missing; later,
//! chat fan-out applies backpressure). Nothing blocks, nothing grows.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::wrap::frozen::{FrozenCons, FrozenProd};
use ringbuf::HeapRb;

type Ring<T> = Arc<HeapRb<T>>;

/// A message that did not fit: its ring to `destination_shard` was full.
#[derive(Debug)]
pub struct RingFull<T> {
    /// The shard the message was meant for.
    pub destination_shard: usize,
    /// The message, handed back to the caller.
    pub message: T,
}

/// The wake-up channel of one shard: a flag the shard sets before parking, and
/// a socket pair that any thread may write one byte into to wake it.
///
/// A socket pair rather than an eventfd because both monoio drivers can await
/// a socket read natively (an eventfd read goes through the file path, which
/// the legacy driver would run as a blocking call on the shard).
pub struct Doorbell {
    sleeping: AtomicBool,
    ring_writer: UnixStream,
    reader: std::sync::Mutex<Option<UnixStream>>,
    rings_total: AtomicU64,
}

impl Doorbell {
    fn new() -> std::io::Result<Self> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        Ok(Self {
            sleeping: AtomicBool::new(false),
            ring_writer: writer,
            reader: std::sync::Mutex::new(Some(reader)),
            rings_total: AtomicU64::new(0),
        })
    }

    /// Wakes the shard unconditionally (used for shutdown, from any thread).
    pub fn ring(&self) {
        self.rings_total.fetch_add(1, Ordering::Relaxed);
        // WouldBlock means the socket already holds unread bytes, so the
        // shard will wake anyway: ignoring it loses nothing.
        let _ = (&self.ring_writer).write(&[1]);
    }

    /// Rings only if the shard announced it is going to sleep.
    fn ring_if_sleeping(&self) {
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            self.ring();
        }
    }

    /// How many times this doorbell was rung.
    pub fn rings_total(&self) -> u64 {
        self.rings_total.load(Ordering::Relaxed)
    }

    /// Takes the reading end, once, for the owning shard's runtime.
    pub fn take_reader(&self) -> Option<UnixStream> {
        self.reader.lock().expect("doorbell reader lock").take()
    }
}

/// Counters of one ordered ring pair, readable from any thread.
#[derive(Default)]
pub struct RingCounters {
    /// Sends refused because the ring was full.
    pub full_total: AtomicU64,
    /// Messages published into the ring.
    pub sent_total: AtomicU64,
}

/// What every thread may see of the mesh: doorbells, ring depths, counters.
pub struct MeshShared<T> {
    shard_count: usize,
    doorbells: Vec<Doorbell>,
    /// `observers[from * n + to]` reads the depth of ring from → to.
    observers: Vec<Option<ringbuf::wrap::direct::Obs<Ring<T>>>>,
    counters: Vec<RingCounters>,
}

impl<T> MeshShared<T> {
    /// Number of shards in the mesh.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The doorbell of `shard_idx`.
    pub fn doorbell(&self, shard_idx: usize) -> &Doorbell {
        &self.doorbells[shard_idx]
    }

    /// Messages waiting in the ring from → to (0 for from == to).
    pub fn ring_depth(&self, from: usize, to: usize) -> usize {
        self.observers[from * self.shard_count + to]
            .as_ref()
            .map_or(0, |observer| observer.occupied_len())
    }

    /// Counters of the ring from → to.
    pub fn ring_counters(&self, from: usize, to: usize) -> &RingCounters {
        &self.counters[from * self.shard_count + to]
    }
}

/// One shard's end of the mesh: its producers towards every other shard and
/// its consumers from every other shard. Owned by that shard's thread only.
pub struct MeshEndpoint<T> {
    shard_idx: usize,
    shared: Arc<MeshShared<T>>,
    producers: Vec<Option<FrozenProd<Ring<T>>>>,
    consumers: Vec<Option<FrozenCons<Ring<T>>>>,
    /// Unpublished pushes per destination since the last flush.
    staged: Vec<u32>,
    any_staged: bool,
}

/// The shared view plus one endpoint per shard.
pub type Mesh<T> = (Arc<MeshShared<T>>, Vec<MeshEndpoint<T>>);

/// Builds a mesh of `shard_count` shards whose rings hold `ring_capacity`
/// messages each. Returns the shared view and one endpoint per shard, to be
/// moved into each shard's thread.
pub fn build<T: Send>(shard_count: usize, ring_capacity: usize) -> std::io::Result<Mesh<T>> {
    assert!(shard_count > 0 && ring_capacity > 0);
    let mut producers: Vec<Vec<Option<FrozenProd<Ring<T>>>>> = (0..shard_count)
        .map(|_| (0..shard_count).map(|_| None).collect())
        .collect();
    let mut consumers: Vec<Vec<Option<FrozenCons<Ring<T>>>>> = (0..shard_count)
        .map(|_| (0..shard_count).map(|_| None).collect())
        .collect();
    let mut observers = Vec::with_capacity(shard_count * shard_count);
    for from in 0..shard_count {
        for to in 0..shard_count {
            if from == to {
                observers.push(None);
                continue;
            }
            let (producer, consumer) = HeapRb::<T>::new(ring_capacity).split();
            observers.push(Some(producer.observe()));
            producers[from][to] = Some(producer.freeze());
            consumers[to][from] = Some(consumer.freeze());
        }
    }
    let doorbells = (0..shard_count)
        .map(|_| Doorbell::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    let shared = Arc::new(MeshShared {
        shard_count,
        doorbells,
        observers,
        counters: (0..shard_count * shard_count)
            .map(|_| RingCounters::default())
            .collect(),
    });
    let endpoints = producers
        .into_iter()
        .zip(consumers)
        .enumerate()
        .map(|(shard_idx, (producers, consumers))| MeshEndpoint {
            shard_idx,
            shared: shared.clone(),
            producers,
            consumers,
            staged: vec![0; shard_count],
            any_staged: false,
        })
        .collect();
    Ok((shared, endpoints))
}

impl<T> MeshEndpoint<T> {
    /// This endpoint's shard.
    pub fn shard_idx(&self) -> usize {
        self.shard_idx
    }

    /// The shared view of the mesh.
    pub fn shared(&self) -> &Arc<MeshShared<T>> {
        &self.shared
    }

    /// Stages `message` for `destination_shard`; it is published at the next
    /// [`flush`](Self::flush). A full ring hands the message back.
    pub fn send(&mut self, destination_shard: usize, message: T) -> Result<(), RingFull<T>> {
        assert_ne!(
            destination_shard, self.shard_idx,
            "a shard does not message itself"
        );
        let producer = self.producers[destination_shard]
            .as_mut()
            .expect("a producer exists for every other shard");
        let message = match producer.try_push(message) {
            Ok(()) => None,
            Err(message) => {
                // The cached read index may be stale: look at the receiver's progress once.
                producer.fetch();
                producer.try_push(message).err()
            }
        };
        if let Some(message) = message {
            let counters = self.shared.ring_counters(self.shard_idx, destination_shard);
            counters.full_total.fetch_add(1, Ordering::Relaxed);
            return Err(RingFull {
                destination_shard,
                message,
            });
        }
        self.staged[destination_shard] += 1;
        self.any_staged = true;
        Ok(())
    }

    /// Publishes every staged batch and rings the doorbell of each receiving
    /// shard that is asleep.
    pub fn flush(&mut self) {
        if !self.any_staged {
            return;
        }
        self.any_staged = false;
        for destination in 0..self.shared.shard_count {
            let staged = std::mem::take(&mut self.staged[destination]);
            if staged == 0 {
                continue;
            }
            let producer = self.producers[destination].as_ref().expect("producer");
            producer.commit();
            self.shared
                .ring_counters(self.shard_idx, destination)
                .sent_total
                .fetch_add(u64::from(staged), Ordering::Relaxed);
            // Pairs with the fence in `prepare_to_sleep`.
            fence(Ordering::SeqCst);
            self.shared.doorbells[destination].ring_if_sleeping();
        }
    }

    /// Takes up to `batch_max` messages from each inbound ring and hands each
    /// to `handle(source_shard, message)`. Returns how many were handled.
    pub fn drain(&mut self, batch_max: usize, mut handle: impl FnMut(usize, T)) -> usize {
        let mut handled = 0;
        for source in 0..self.shared.shard_count {
            let Some(consumer) = self.consumers[source].as_mut() else {
                continue;
            };
            consumer.fetch();
            let mut taken = 0;
            while taken < batch_max {
                let Some(message) = consumer.try_pop() else {
                    break;
                };
                taken += 1;
                handle(source, message);
            }
            if taken > 0 {
                // One release store frees the whole batch's slots for the sender.
                consumer.commit();
                handled += taken;
            }
        }
        handled
    }

    /// Whether any inbound ring holds a published message.
    pub fn has_inbound(&self) -> bool {
        self.consumers.iter().flatten().any(|consumer| {
            consumer.fetch();
            !consumer.is_empty()
        })
    }

    /// Announces that this shard is about to park on its doorbell. Returns
    /// `false` (and withdraws the announcement) if a message arrived meanwhile,
    /// in which case the shard must drain instead of parking.
    pub fn prepare_to_sleep(&self) -> bool {
        let doorbell = &self.shared.doorbells[self.shard_idx];
        doorbell.sleeping.store(true, Ordering::SeqCst);
        // Pairs with the fence in `flush`.
        fence(Ordering::SeqCst);
        if self.has_inbound() {
            doorbell.sleeping.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Clears the sleeping flag after a wake-up.
    pub fn woke_up(&self) {
        self.shared.doorbells[self.shard_idx]
            .sleeping
            .store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_messages_are_invisible_until_flush() {
        let (shared, mut endpoints) = build::<u64>(2, 8).unwrap();
        let mut receiver = endpoints.pop().unwrap();
        let mut sender = endpoints.pop().unwrap();
        sender.send(1, 7).unwrap();
        assert_eq!(receiver.drain(16, |_, _| panic!("not published yet")), 0);
        sender.flush();
        assert_eq!(shared.ring_depth(0, 1), 1);
        let mut seen = Vec::new();
        receiver.drain(16, |source, message| seen.push((source, message)));
        assert_eq!(seen, vec![(0, 7)]);
        assert_eq!(shared.ring_depth(0, 1), 0);
    }

    #[test]
    fn full_ring_hands_the_message_back_and_counts_it() {
        let (shared, mut endpoints) = build::<u64>(2, 4).unwrap();
        let sender = &mut endpoints[0];
        for value in 0..4 {
            sender.send(1, value).unwrap();
        }
        let refused = sender.send(1, 99).unwrap_err();
        assert_eq!(refused.message, 99);
        assert_eq!(refused.destination_shard, 1);
        assert_eq!(
            shared
                .ring_counters(0, 1)
                .full_total
                .load(Ordering::Relaxed),
            1
        );
        sender.flush();
        // Once the receiver frees slots, sending works again.
        endpoints[1].drain(2, |_, _| {});
        endpoints[0].send(1, 100).unwrap();
    }

    #[test]
    fn doorbell_rings_only_for_a_sleeping_receiver() {
        let (shared, mut endpoints) = build::<u64>(2, 8).unwrap();
        endpoints[0].send(1, 1).unwrap();
        endpoints[0].flush();
        assert_eq!(shared.doorbell(1).rings_total(), 0, "receiver was awake");

        endpoints[1].drain(8, |_, _| {});
        assert!(endpoints[1].prepare_to_sleep());
        endpoints[0].send(1, 2).unwrap();
        endpoints[0].flush();
        assert_eq!(shared.doorbell(1).rings_total(), 1, "receiver was asleep");
        // A second batch while the flag is already cleared does not ring again.
        endpoints[0].send(1, 3).unwrap();
        endpoints[0].flush();
        assert_eq!(shared.doorbell(1).rings_total(), 1);
    }

    #[test]
    fn prepare_to_sleep_refuses_when_a_batch_is_waiting() {
        let (_shared, mut endpoints) = build::<u64>(2, 8).unwrap();
        endpoints[0].send(1, 1).unwrap();
        endpoints[0].flush();
        assert!(!endpoints[1].prepare_to_sleep());
    }
}
