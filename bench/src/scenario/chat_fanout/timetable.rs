//! When each publisher sends, and the stamp each message carries: sans-IO,
//! so that the open-loop schedule and the latency arithmetic are tested
//! without sockets.
//!
//! The total rate is shared evenly by the publishers; publisher `p` of `n`
//! sends every `n / rate` seconds, its first send staggered by `p / n` of
//! that interval after the load starts, so the server sees a smooth stream.
//! A message's body starts with a fixed-width ASCII stamp: the INTENDED
//! send time, the publisher and the message's number. Latency runs from the
//! intended time, never the actual one, so a server (or a client) that
//! falls behind is charged for every message it delayed (no coordinated
//! omission).

use std::fmt::Write as _;

/// Bytes of the stamp at the start of every body: 16 hex digits of intended
/// send time (ns since the run's epoch), 6 of publisher index, 10 of
/// message number.
pub const STAMP_BYTES: usize = 32;

/// The character that fills a body after its stamp.
const FILL: char = '.';

/// Most publishers a run may have (6 hex digits in the stamp).
pub const PUBLISHERS_MAX: usize = 0xFF_FFFF;

/// One publisher's sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherTimetable {
    /// The publisher, 0-based over the whole run.
    pub publisher_idx: usize,
    /// Intended time of message 0, ns since the epoch.
    pub first_ns: u64,
    /// Time between two messages, ns.
    pub interval_ns: u64,
    /// Messages from the start of the load to the end of the measured
    /// window.
    pub n_messages: u64,
}

impl PublisherTimetable {
    /// The timetable of publisher `publisher_idx` of `n_publishers`, sharing
    /// `rate_msgs_per_s`, sending from `load_start_ns` until
    /// `measure_end_ns` (both ns since the epoch).
    pub fn new(
        publisher_idx: usize,
        n_publishers: usize,
        rate_msgs_per_s: u64,
        load_start_ns: u64,
        measure_end_ns: u64,
    ) -> PublisherTimetable {
        assert!(rate_msgs_per_s > 0 && publisher_idx < n_publishers);
        let n_publishers = n_publishers as u64;
        let interval_ns = (n_publishers * 1_000_000_000 / rate_msgs_per_s).max(1);
        let stagger_ns = interval_ns * publisher_idx as u64 / n_publishers;
        let first_ns = load_start_ns + stagger_ns;
        let n_messages = measure_end_ns
            .saturating_sub(first_ns)
            .div_ceil(interval_ns);
        PublisherTimetable {
            publisher_idx,
            first_ns,
            interval_ns,
            n_messages,
        }
    }

    /// When message `sequence` is due, ns since the epoch.
    pub fn intended_ns(&self, sequence: u64) -> u64 {
        self.first_ns + sequence * self.interval_ns
    }

    /// How many messages are due at or before `now_ns`.
    pub fn due_by(&self, now_ns: u64) -> u64 {
        if now_ns < self.first_ns {
            return 0;
        }
        ((now_ns - self.first_ns) / self.interval_ns + 1).min(self.n_messages)
    }

    /// The stamp of message `sequence`.
    pub fn stamp(&self, sequence: u64) -> Stamp {
        Stamp {
            intended_ns: self.intended_ns(sequence),
            publisher_idx: self.publisher_idx,
            sequence,
        }
    }
}

/// What a message carries at the start of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Intended send time, ns since the epoch.
    pub intended_ns: u64,
    /// Who sent it.
    pub publisher_idx: usize,
    /// Its number within the publisher's timetable.
    pub sequence: u64,
}

impl Stamp {
    /// A body of exactly `body_bytes` bytes (at least [`STAMP_BYTES`]):
    /// the stamp, then filler.
    pub fn body(&self, body_bytes: usize) -> String {
        assert!(body_bytes >= STAMP_BYTES, "a body holds at least its stamp");
        let mut body = String::with_capacity(body_bytes);
        let _ = write!(
            body,
            "{:016x}{:06x}{:010x}",
            self.intended_ns, self.publisher_idx, self.sequence
        );
        debug_assert_eq!(body.len(), STAMP_BYTES);
        body.extend(std::iter::repeat_n(FILL, body_bytes - STAMP_BYTES));
        body
    }

    /// The stamp at the start of `body`, if it has one.
    pub fn parse(body: &[u8]) -> Option<Stamp> {
        let stamp = std::str::from_utf8(body.get(..STAMP_BYTES)?).ok()?;
        let field = |range: std::ops::Range<usize>| u64::from_str_radix(&stamp[range], 16).ok();
        Some(Stamp {
            intended_ns: field(0..16)?,
            publisher_idx: field(16..22)? as usize,
            sequence: field(22..32)?,
        })
    }
}

/// Latency in microseconds from an intended send to a receipt (both ns
/// since the epoch); 0 when the receipt is not later.
pub fn latency_us(intended_ns: u64, received_ns: u64) -> u64 {
    received_ns.saturating_sub(intended_ns) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_share_the_rate_and_are_staggered_across_one_interval() {
        // 4 publishers at 1000 msg/s in total: each every 4 ms, 1 ms apart.
        let timetables: Vec<PublisherTimetable> = (0..4)
            .map(|idx| PublisherTimetable::new(idx, 4, 1000, 0, 1_000_000_000))
            .collect();
        let firsts: Vec<u64> = timetables.iter().map(|t| t.first_ns).collect();
        assert_eq!(firsts, [0, 1_000_000, 2_000_000, 3_000_000]);
        assert!(timetables.iter().all(|t| t.interval_ns == 4_000_000));
        let total: u64 = timetables.iter().map(|t| t.n_messages).sum();
        assert_eq!(total, 1000, "one second at 1000 msg/s");
        assert_eq!(timetables[1].intended_ns(2), 9_000_000);
    }

    #[test]
    fn due_counts_every_message_at_or_before_now_and_stops_at_the_end() {
        let timetable = PublisherTimetable::new(0, 1, 1000, 5_000_000, 15_000_000);
        assert_eq!(timetable.n_messages, 10);
        assert_eq!(timetable.due_by(4_999_999), 0);
        assert_eq!(timetable.due_by(5_000_000), 1);
        assert_eq!(timetable.due_by(7_500_000), 3);
        assert_eq!(timetable.due_by(1_000_000_000), 10);
    }

    #[test]
    fn a_body_has_the_exact_size_and_gives_its_stamp_back() {
        let stamp = Stamp {
            intended_ns: 1_234_567_890_123,
            publisher_idx: 77,
            sequence: 4242,
        };
        for body_bytes in [STAMP_BYTES, 100, 4000] {
            let body = stamp.body(body_bytes);
            assert_eq!(body.len(), body_bytes);
            assert_eq!(Stamp::parse(body.as_bytes()), Some(stamp));
        }
    }

    #[test]
    fn a_body_without_a_stamp_parses_to_none() {
        assert_eq!(Stamp::parse(b"hello"), None);
        assert_eq!(Stamp::parse(&[b'z'; STAMP_BYTES]), None);
    }

    #[test]
    fn latency_never_underflows() {
        assert_eq!(latency_us(5_000, 4_000), 0);
        assert_eq!(latency_us(1_000, 2_501_000), 2_500);
    }
}
