//! Who connects where, and what each client thread measures: shared by the
//! Veza and the NATS load ([`super::veza_load`], [`super::nats_load`]).
//!
//! Connections are numbered: subscribers first (subscriber `k` is in room
//! `k % rooms`), then publishers (publisher `p` is in room `p % rooms`), so
//! that every room's subscribers are spread over every client thread and
//! every source address. Connection `c` logs in as user `c % users`.

use std::collections::{BTreeMap, BTreeSet};

use crate::load_generator::client_threads::MeasurementWindow;
use crate::load_generator::latency::LatencyRecorder;

use super::timetable::{latency_us, PublisherTimetable, Stamp};

/// The shape of a run's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutShape {
    /// Rooms.
    pub n_rooms: usize,
    /// Subscribed connections per room.
    pub subscribers_per_room: usize,
    /// Publishing connections per room.
    pub publishers_per_room: usize,
    /// Distinct users the connections log in as.
    pub n_users: usize,
    /// Messages per second over all publishers.
    pub rate_msgs_per_s: u64,
    /// Bytes of each message body.
    pub payload_bytes: usize,
}

impl FanoutShape {
    /// Subscribed connections.
    pub fn n_subscribers(&self) -> usize {
        self.n_rooms * self.subscribers_per_room
    }

    /// Publishing connections.
    pub fn n_publishers(&self) -> usize {
        self.n_rooms * self.publishers_per_room
    }

    /// All connections.
    pub fn n_connections(&self) -> usize {
        self.n_subscribers() + self.n_publishers()
    }

    /// The connections, subscribers then publishers.
    pub fn connections(&self) -> Vec<ConnectionRole> {
        let subscribers = (0..self.n_subscribers()).map(|subscriber_idx| ConnectionRole {
            connection_idx: subscriber_idx,
            room_idx: subscriber_idx % self.n_rooms,
            user_idx: subscriber_idx % self.n_users,
            publisher_idx: None,
        });
        let publishers = (0..self.n_publishers()).map(|publisher_idx| {
            let connection_idx = self.n_subscribers() + publisher_idx;
            ConnectionRole {
                connection_idx,
                room_idx: publisher_idx % self.n_rooms,
                user_idx: connection_idx % self.n_users,
                publisher_idx: Some(publisher_idx),
            }
        });
        subscribers.chain(publishers).collect()
    }

    /// The `(user, room)` memberships the connections need.
    pub fn memberships(&self) -> BTreeSet<(usize, usize)> {
        self.connections()
            .iter()
            .map(|role| (role.user_idx, role.room_idx))
            .collect()
    }

    /// Publisher `publisher_idx`'s timetable within `window`.
    pub fn timetable(
        &self,
        publisher_idx: usize,
        window: &MeasurementWindow,
    ) -> PublisherTimetable {
        PublisherTimetable::new(
            publisher_idx,
            self.n_publishers(),
            self.rate_msgs_per_s,
            window.ns_since_epoch(window.load_start),
            window.ns_since_epoch(window.measure_end),
        )
    }

    /// How many messages every subscriber of room `room_idx` should receive
    /// over the run: the sum of its publishers' timetables.
    pub fn messages_per_room(&self, room_idx: usize, window: &MeasurementWindow) -> u64 {
        (room_idx..self.n_publishers())
            .step_by(self.n_rooms)
            .map(|publisher_idx| self.timetable(publisher_idx, window).n_messages)
            .sum()
    }
}

/// One connection's part in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionRole {
    /// Its number over the run (subscribers first).
    pub connection_idx: usize,
    /// The room it subscribes to or publishes in.
    pub room_idx: usize,
    /// The user it logs in as.
    pub user_idx: usize,
    /// `Some` for a publisher: its number among publishers.
    pub publisher_idx: Option<usize>,
}

/// The connections of one client thread: connection `c` goes to thread
/// `c % n_threads`.
pub fn thread_share(
    roles: &[ConnectionRole],
    thread_idx: usize,
    n_threads: usize,
) -> Vec<ConnectionRole> {
    roles
        .iter()
        .filter(|role| role.connection_idx % n_threads == thread_idx)
        .copied()
        .collect()
}

/// What one client thread measured.
#[derive(Debug, Clone, Default)]
pub struct FanoutThreadOutput {
    /// Messages received by subscribers over the run (first copies only).
    pub deliveries_total: u64,
    /// Of those, messages intended for the measured window.
    pub deliveries_measured: u64,
    /// Copies of a message a subscriber had already received, or that came
    /// after a later one of the same publisher.
    pub duplicates: u64,
    /// Messages without a stamp or from a publisher of another room.
    pub foreign_messages: u64,
    /// Delivery latency (receipt − intended send) of measured deliveries.
    pub latency: LatencyRecorder,
    /// Messages written by publishers over the run.
    pub sent_total: u64,
    /// Of those, intended for the measured window.
    pub sent_measured: u64,
    /// Messages the server acknowledged (Veza's `Sent`).
    pub acknowledged_total: u64,
    /// Acknowledgement latency (`Sent` − intended send) of measured ones.
    pub ack_latency: LatencyRecorder,
    /// Messages refused by the server, by error code.
    pub rejected_by_code: BTreeMap<String, u64>,
    /// Connections that failed during the run.
    pub failed_connections: u64,
    /// The first failure, as text.
    pub first_failure: Option<String>,
}

impl FanoutThreadOutput {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &FanoutThreadOutput) {
        self.deliveries_total += other.deliveries_total;
        self.deliveries_measured += other.deliveries_measured;
        self.duplicates += other.duplicates;
        self.foreign_messages += other.foreign_messages;
        self.latency.merge(&other.latency);
        self.sent_total += other.sent_total;
        self.sent_measured += other.sent_measured;
        self.acknowledged_total += other.acknowledged_total;
        self.ack_latency.merge(&other.ack_latency);
        for (code, count) in &other.rejected_by_code {
            *self.rejected_by_code.entry(code.clone()).or_default() += count;
        }
        self.failed_connections += other.failed_connections;
        if self.first_failure.is_none() {
            self.first_failure.clone_from(&other.first_failure);
        }
    }

    /// Counts a failed connection, keeping the first explanation.
    pub fn fail(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.failed_connections += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some(format!("{what}: {error}"));
        }
    }

    /// Messages refused by the server.
    pub fn rejected_total(&self) -> u64 {
        self.rejected_by_code.values().sum()
    }
}

/// One subscriber's view of its room: which messages of each publisher it
/// has seen, and how many.
#[derive(Debug)]
pub struct SubscriberTally {
    room_idx: usize,
    n_rooms: usize,
    /// The next expected sequence per publisher of the room (by the
    /// publisher's rank within the room).
    next_sequence: Vec<u64>,
    /// First copies received.
    pub received: u64,
}

impl SubscriberTally {
    /// A tally for a subscriber of `room_idx`.
    pub fn new(shape: &FanoutShape, room_idx: usize) -> SubscriberTally {
        SubscriberTally {
            room_idx,
            n_rooms: shape.n_rooms,
            next_sequence: vec![0; shape.publishers_per_room],
            received: 0,
        }
    }

    /// Records the message whose body starts with `body`, received at
    /// `received_ns`.
    pub fn record(
        &mut self,
        body: &[u8],
        received_ns: u64,
        window: &MeasurementWindow,
        output: &mut FanoutThreadOutput,
    ) {
        let Some(stamp) = Stamp::parse(body) else {
            output.foreign_messages += 1;
            return;
        };
        if stamp.publisher_idx % self.n_rooms != self.room_idx {
            output.foreign_messages += 1;
            return;
        }
        let rank = stamp.publisher_idx / self.n_rooms;
        let Some(next) = self.next_sequence.get_mut(rank) else {
            output.foreign_messages += 1;
            return;
        };
        // Each publisher's messages reach a subscriber in order, so anything
        // below the next expected one is a repeat (or arrived out of order,
        // which counts the same: the client would have dropped it).
        if stamp.sequence < *next {
            output.duplicates += 1;
            return;
        }
        *next = stamp.sequence + 1;
        self.received += 1;
        output.deliveries_total += 1;
        if window.is_measured_ns(stamp.intended_ns) {
            output.deliveries_measured += 1;
            output
                .latency
                .record_us(latency_us(stamp.intended_ns, received_ns));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn shape() -> FanoutShape {
        FanoutShape {
            n_rooms: 2,
            subscribers_per_room: 3,
            publishers_per_room: 2,
            n_users: 4,
            rate_msgs_per_s: 1000,
            payload_bytes: 64,
        }
    }

    #[test]
    fn subscribers_then_publishers_alternate_over_rooms_and_users() {
        let roles = shape().connections();
        assert_eq!(roles.len(), 10);
        let rooms: Vec<usize> = roles.iter().map(|role| role.room_idx).collect();
        assert_eq!(rooms, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!(roles[6].publisher_idx, Some(0));
        assert_eq!(roles[5].publisher_idx, None);
        assert_eq!(roles[9].user_idx, 1);
        let memberships = shape().memberships();
        assert!(memberships.contains(&(0, 0)) && memberships.contains(&(1, 1)));
        assert!(memberships.iter().all(|&(user, room)| user < 4 && room < 2));
    }

    #[test]
    fn threads_split_the_connections_without_overlap() {
        let roles = shape().connections();
        let first = thread_share(&roles, 0, 2);
        let second = thread_share(&roles, 1, 2);
        assert_eq!(first.len() + second.len(), roles.len());
        assert!(first.iter().all(|role| role.connection_idx % 2 == 0));
    }

    #[test]
    fn a_tally_counts_first_copies_and_measures_only_the_window() {
        let shape = shape();
        let window = MeasurementWindow::starting_soon(
            Duration::from_millis(100),
            Duration::from_secs(1),
            Duration::ZERO,
        );
        let timetable = shape.timetable(1, &window); // room 1, rank 0
        let mut tally = SubscriberTally::new(&shape, 1);
        let mut output = FanoutThreadOutput::default();
        let received_ns = window.ns_since_epoch(window.measure_start) + 5_000_000;
        let warmup_message = timetable.stamp(0).body(64);
        tally.record(warmup_message.as_bytes(), received_ns, &window, &mut output);
        tally.record(warmup_message.as_bytes(), received_ns, &window, &mut output);
        let measured_sequence = timetable.due_by(window.ns_since_epoch(window.measure_start));
        let measured = timetable.stamp(measured_sequence).body(64);
        tally.record(measured.as_bytes(), received_ns, &window, &mut output);
        let other_room = shape.timetable(0, &window).stamp(0).body(64);
        tally.record(other_room.as_bytes(), received_ns, &window, &mut output);
        tally.record(b"no stamp", received_ns, &window, &mut output);
        assert_eq!(tally.received, 2);
        assert_eq!(output.deliveries_total, 2);
        assert_eq!(output.deliveries_measured, 1);
        assert_eq!(output.duplicates, 1);
        assert_eq!(output.foreign_messages, 2);
        assert_eq!(output.latency.count(), 1);
    }

    #[test]
    fn each_room_expects_the_sum_of_its_publishers() {
        let shape = shape();
        let window = MeasurementWindow::starting_soon(
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::ZERO,
        );
        let total: u64 = (0..shape.n_rooms)
            .map(|room_idx| shape.messages_per_room(room_idx, &window))
            .sum();
        assert_eq!(total, 1000);
    }
}
