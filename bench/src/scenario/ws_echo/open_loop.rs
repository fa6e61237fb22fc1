//! Open loop: each connection sends on a fixed schedule whatever the server
//! does, and latency runs from the INTENDED send time, so a server that
//! stalls is charged for every message it delayed (no coordinated omission).
//!
//! The total rate is spread evenly over connections and their first sends
//! are staggered across one interval, so the server sees a smooth stream.
//! tokio's timer has millisecond resolution, so the writer sleeps to within
//! [`SPIN_WINDOW`] of a send and then yields in a loop until it is due: this
//! keeps sends within microseconds of their schedule at the price of a busy
//! client core.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::timeout_at;

use crate::load_generator::client_frame::{
    encode_masked_frame_into, Message, MessageDecoder, Opcode,
};
use crate::load_generator::client_threads::MeasurementWindow;
use crate::load_generator::echo_payload::{PayloadTemplate, Stamp};
use crate::load_generator::websocket_client::{ClientConnection, MaskSource};

use super::workload::{
    encode_close, latency_us, ConnectionPlan, ConnectionSlot, EchoThreadOutput, RECEIVE_CHUNK_BYTES,
};

/// How close to a send the writer stops sleeping and starts yielding.
const SPIN_WINDOW: Duration = Duration::from_millis(2);

/// When each message of one connection is due.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    first_ns: u64,
    interval_ns: u64,
    n_messages: u64,
}

impl Schedule {
    fn new(
        slot: ConnectionSlot,
        plan: &ConnectionPlan,
        rate_msgs_per_s: u64,
        window: &MeasurementWindow,
    ) -> Self {
        assert!(rate_msgs_per_s > 0);
        let n_connections = plan.n_connections_total as u64;
        let interval_ns = (n_connections * 1_000_000_000 / rate_msgs_per_s).max(1);
        let stagger_ns = interval_ns * slot.connection_idx as u64 / n_connections;
        let first_ns = window.ns_since_epoch(window.load_start) + stagger_ns;
        let end_ns = window.ns_since_epoch(window.measure_end);
        let n_messages = end_ns.saturating_sub(first_ns).div_ceil(interval_ns);
        Schedule {
            first_ns,
            interval_ns,
            n_messages,
        }
    }

    fn stamp(&self, sequence: u64) -> Stamp {
        Stamp {
            sequence,
            timestamp_ns: self.first_ns + sequence * self.interval_ns,
        }
    }
}

/// Runs one connection until every scheduled message is answered or the
/// drain deadline passes.
pub async fn drive(
    connection: ClientConnection,
    slot: ConnectionSlot,
    plan: &ConnectionPlan,
    rate_msgs_per_s: u64,
    window: MeasurementWindow,
    output: &RefCell<EchoThreadOutput>,
) {
    let ClientConnection {
        mut stream,
        read_buffer,
        decoder,
        masks,
    } = connection;
    let schedule = Schedule::new(slot, plan, rate_msgs_per_s, &window);
    let template = PayloadTemplate::new(plan.payload_bytes, slot.connection_idx);
    let failed = Cell::new(false);
    let pongs_owed = RefCell::new(Vec::new());
    let (read_half, write_half) = stream.split();
    let reader = Reader {
        template: template.clone(),
        schedule,
        window,
        output,
        failed: &failed,
        pongs_owed: &pongs_owed,
    };
    let writer = Writer {
        template,
        schedule,
        window,
        masks,
        failed: &failed,
        pongs_owed: &pongs_owed,
    };
    let (n_answered, ()) = tokio::join!(
        reader.run(read_half, read_buffer, decoder),
        writer.run(write_half)
    );
    {
        let mut output = output.borrow_mut();
        output.errors.unanswered_messages += schedule.n_messages - n_answered;
        output.errors.failed_connections += u64::from(failed.get());
    }
    let _ = timeout_at(window.drain_deadline.into(), stream.shutdown()).await;
}

struct Writer<'run> {
    template: PayloadTemplate,
    schedule: Schedule,
    window: MeasurementWindow,
    masks: MaskSource,
    failed: &'run Cell<bool>,
    pongs_owed: &'run RefCell<Vec<Bytes>>,
}

impl Writer<'_> {
    async fn run(mut self, mut write_half: WriteHalf<'_>) {
        let deadline = self.window.drain_deadline.into();
        let mut write_buffer =
            BytesMut::with_capacity(4 * (self.template.stamped(self.schedule.stamp(0)).len() + 14));
        let mut sequence = 0;
        // Bounded: each turn sends at least one of n_messages, or stops.
        while sequence < self.schedule.n_messages && !self.failed.get() {
            let due = self
                .window
                .instant_at_ns(self.schedule.stamp(sequence).timestamp_ns);
            pace_until(due).await;
            // A late writer catches up in one write rather than many.
            let now_ns = self.window.ns_since_epoch(Instant::now());
            while sequence < self.schedule.n_messages
                && self.schedule.stamp(sequence).timestamp_ns <= now_ns
            {
                let mask = self.masks.next_mask();
                let payload = self.template.stamped(self.schedule.stamp(sequence));
                encode_masked_frame_into(&mut write_buffer, true, Opcode::Binary, payload, mask);
                sequence += 1;
            }
            for pong in self.pongs_owed.borrow_mut().drain(..) {
                let mask = self.masks.next_mask();
                encode_masked_frame_into(&mut write_buffer, true, Opcode::Pong, &pong, mask);
            }
            match timeout_at(deadline, write_half.write_all(&write_buffer)).await {
                Ok(Ok(())) => write_buffer.clear(),
                Ok(Err(_)) => return self.failed.set(true),
                Err(_elapsed) => return,
            }
        }
        encode_close(&mut write_buffer, self.masks.next_mask());
        let _ = timeout_at(deadline, write_half.write_all(&write_buffer)).await;
    }
}

async fn pace_until(due: Instant) {
    if due > Instant::now() + SPIN_WINDOW {
        tokio::time::sleep_until((due - SPIN_WINDOW).into()).await;
    }
    // Bounded by `due`.
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

struct Reader<'run> {
    template: PayloadTemplate,
    schedule: Schedule,
    window: MeasurementWindow,
    output: &'run RefCell<EchoThreadOutput>,
    failed: &'run Cell<bool>,
    pongs_owed: &'run RefCell<Vec<Bytes>>,
}

impl Reader<'_> {
    /// Reads replies in order; returns how many arrived.
    async fn run(
        self,
        mut read_half: ReadHalf<'_>,
        mut read_buffer: BytesMut,
        mut decoder: MessageDecoder,
    ) -> u64 {
        let deadline = self.window.drain_deadline.into();
        let mut n_answered = 0;
        // Bounded by the drain deadline.
        while n_answered < self.schedule.n_messages && !self.failed.get() {
            read_buffer.reserve(RECEIVE_CHUNK_BYTES);
            match timeout_at(deadline, read_half.read_buf(&mut read_buffer)).await {
                Err(_elapsed) => break,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.failed.set(true);
                    break;
                }
                Ok(Ok(_)) => {}
            }
            let received_ns = self.window.ns_since_epoch(Instant::now());
            if !self.take_replies(&mut read_buffer, &mut decoder, received_ns, &mut n_answered) {
                self.failed.set(true);
            }
        }
        n_answered
    }

    /// Checks and times every complete reply; false on a protocol failure
    /// or an early close.
    fn take_replies(
        &self,
        read_buffer: &mut BytesMut,
        decoder: &mut MessageDecoder,
        received_ns: u64,
        n_answered: &mut u64,
    ) -> bool {
        let mut output = self.output.borrow_mut();
        // Bounded by the buffer: each decoded message consumes its bytes.
        loop {
            let payload = match decoder.decode(read_buffer) {
                Ok(None) => return true,
                Ok(Some(Message::Binary(payload))) => Some(payload),
                Ok(Some(Message::Text(_))) => None,
                Ok(Some(Message::Ping(payload))) => {
                    self.pongs_owed.borrow_mut().push(payload);
                    continue;
                }
                Ok(Some(Message::Pong(_))) => continue,
                // The writer sends a close frame after its last message, so
                // the server's close may follow the last reply.
                Ok(Some(Message::Close { .. })) => return *n_answered == self.schedule.n_messages,
                Err(_) => return false,
            };
            if *n_answered >= self.schedule.n_messages {
                output.errors.mismatched_replies += 1;
                continue;
            }
            let expected = self.schedule.stamp(*n_answered);
            *n_answered += 1;
            let matches =
                payload.is_some_and(|payload| self.template.check_echo(&payload, expected).is_ok());
            if !matches {
                output.errors.mismatched_replies += 1;
            } else if self.window.is_measured_ns(expected.timestamp_ns) {
                output.messages_measured += 1;
                output
                    .latency
                    .record_us(latency_us(expected.timestamp_ns, received_ns));
            }
        }
    }
}
