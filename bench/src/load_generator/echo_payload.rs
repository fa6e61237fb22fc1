//! Payloads that carry their own sequence number and send time, so replies
//! can be matched, timed and checked byte for byte without keeping a copy of
//! each message.
//!
//! Layout: bytes 0..8 the sequence number, 8..16 the send time in
//! nanoseconds since the run's epoch (both little-endian), then a fill
//! pattern that is fixed per connection.

/// The bytes at the front of every payload that hold the stamp.
pub const STAMP_BYTES: usize = 16;

/// The sequence number and send time written into a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The message's number on its connection, from 0.
    pub sequence: u64,
    /// When it was sent (closed loop) or meant to be sent (open loop), in
    /// nanoseconds since the run's epoch.
    pub timestamp_ns: u64,
}

/// An echoed payload that is not the one sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadMismatch {
    /// The reply has another length.
    #[error("echoed {echoed_bytes} bytes, sent {sent_bytes}")]
    Length {
        /// Bytes in the reply.
        echoed_bytes: usize,
        /// Bytes sent.
        sent_bytes: usize,
    },
    /// The fill after the stamp differs.
    #[error("echoed fill differs from the fill sent")]
    Fill,
    /// The stamp is not the one expected next.
    #[error("echoed stamp {echoed:?}, expected {expected:?}")]
    Stamp {
        /// The stamp in the reply.
        echoed: Stamp,
        /// The stamp of the oldest message in flight.
        expected: Stamp,
    },
}

/// One connection's payload: a reused buffer that is stamped before each
/// send, so sending allocates nothing.
#[derive(Debug, Clone)]
pub struct PayloadTemplate {
    bytes: Vec<u8>,
}

impl PayloadTemplate {
    /// A payload of `payload_bytes` whose fill depends on `connection_idx`,
    /// so a reply routed to the wrong connection is caught.
    pub fn new(payload_bytes: usize, connection_idx: usize) -> PayloadTemplate {
        assert!(
            payload_bytes >= STAMP_BYTES,
            "a payload holds at least its stamp"
        );
        let seed = connection_idx as u8;
        let bytes = (0..payload_bytes)
            .map(|byte_idx| (byte_idx as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        PayloadTemplate { bytes }
    }

    /// The payload with `stamp` written into it.
    pub fn stamped(&mut self, stamp: Stamp) -> &[u8] {
        self.bytes[0..8].copy_from_slice(&stamp.sequence.to_le_bytes());
        self.bytes[8..16].copy_from_slice(&stamp.timestamp_ns.to_le_bytes());
        &self.bytes
    }

    /// Checks that `echoed` is this payload stamped with `expected`.
    pub fn check_echo(&self, echoed: &[u8], expected: Stamp) -> Result<(), PayloadMismatch> {
        if echoed.len() != self.bytes.len() {
            let sent_bytes = self.bytes.len();
            return Err(PayloadMismatch::Length {
                echoed_bytes: echoed.len(),
                sent_bytes,
            });
        }
        if echoed[STAMP_BYTES..] != self.bytes[STAMP_BYTES..] {
            return Err(PayloadMismatch::Fill);
        }
        let echoed_stamp = Stamp {
            sequence: u64::from_le_bytes(echoed[0..8].try_into().expect("8 bytes")),
            timestamp_ns: u64::from_le_bytes(echoed[8..16].try_into().expect("8 bytes")),
        };
        if echoed_stamp != expected {
            return Err(PayloadMismatch::Stamp {
                echoed: echoed_stamp,
                expected,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp {
        sequence: 7,
        timestamp_ns: 123_456,
    };

    #[test]
    fn an_unchanged_echo_passes() {
        let mut template = PayloadTemplate::new(20, 3);
        let sent = template.stamped(STAMP).to_vec();
        assert_eq!(template.check_echo(&sent, STAMP), Ok(()));
    }

    #[test]
    fn a_changed_byte_a_short_reply_or_a_reordered_reply_is_a_mismatch() {
        let mut template = PayloadTemplate::new(1024, 0);
        let sent = template.stamped(STAMP).to_vec();
        let mut flipped = sent.clone();
        flipped[1000] ^= 1;
        assert_eq!(
            template.check_echo(&flipped, STAMP),
            Err(PayloadMismatch::Fill)
        );
        let short = template.check_echo(&sent[..1023], STAMP);
        assert!(matches!(
            short,
            Err(PayloadMismatch::Length {
                echoed_bytes: 1023,
                ..
            })
        ));
        let next = Stamp {
            sequence: 8,
            ..STAMP
        };
        assert!(matches!(
            template.check_echo(&sent, next),
            Err(PayloadMismatch::Stamp { .. })
        ));
    }

    #[test]
    fn connections_get_different_fills() {
        let first = PayloadTemplate::new(64, 0);
        let mut second = PayloadTemplate::new(64, 1);
        let from_second = second.stamped(STAMP).to_vec();
        assert_eq!(
            first.check_echo(&from_second, STAMP),
            Err(PayloadMismatch::Fill)
        );
    }
}
