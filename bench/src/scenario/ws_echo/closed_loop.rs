//! Closed loop: each connection keeps `pipeline` messages in flight and
//! sends a new one for every reply, as fast as the server answers. Latency
//! runs from the send to the reply.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::timeout_at;

use crate::load_generator::client_frame::{encode_masked_frame_into, Message, Opcode};
use crate::load_generator::client_threads::MeasurementWindow;
use crate::load_generator::echo_payload::{PayloadTemplate, Stamp};
use crate::load_generator::websocket_client::{ClientConnection, MaskSource};

use super::workload::{
    encode_close, latency_us, ConnectionPlan, ConnectionSlot, EchoThreadOutput, RECEIVE_CHUNK_BYTES,
};

/// One connection's sending side: its payload, masks and in-flight stamps.
struct Sender {
    template: PayloadTemplate,
    masks: MaskSource,
    in_flight: VecDeque<Stamp>,
    next_sequence: u64,
    write_buffer: BytesMut,
}

impl Sender {
    fn queue(&mut self, n_messages: usize, timestamp_ns: u64) {
        for _ in 0..n_messages {
            let stamp = Stamp {
                sequence: self.next_sequence,
                timestamp_ns,
            };
            self.next_sequence += 1;
            let mask = self.masks.next_mask();
            let payload = self.template.stamped(stamp);
            encode_masked_frame_into(&mut self.write_buffer, true, Opcode::Binary, payload, mask);
            self.in_flight.push_back(stamp);
        }
    }
}

/// What reading one batch of replies asks for next.
struct BatchOutcome {
    n_to_send: usize,
    failed: bool,
}

/// Runs one connection until its last reply or the drain deadline.
pub async fn drive(
    connection: ClientConnection,
    slot: ConnectionSlot,
    plan: &ConnectionPlan,
    pipeline: usize,
    window: MeasurementWindow,
    output: &RefCell<EchoThreadOutput>,
) {
    let ClientConnection {
        mut stream,
        mut read_buffer,
        mut decoder,
        masks,
    } = connection;
    let mut sender = Sender {
        template: PayloadTemplate::new(plan.payload_bytes, slot.connection_idx),
        masks,
        in_flight: VecDeque::with_capacity(pipeline),
        next_sequence: 0,
        write_buffer: BytesMut::with_capacity(pipeline * (plan.payload_bytes + 14)),
    };
    tokio::time::sleep_until(window.load_start.into()).await;
    let deadline = window.drain_deadline.into();
    sender.queue(pipeline, window.ns_since_epoch(Instant::now()));
    // Bounded by the drain deadline: every await below is under timeout_at,
    // and no message is queued after measure_end.
    let failed = loop {
        let written = timeout_at(deadline, stream.write_all(&sender.write_buffer)).await;
        if !matches!(written, Ok(Ok(()))) {
            break written.is_ok();
        }
        sender.write_buffer.clear();
        if sender.in_flight.is_empty() {
            break false;
        }
        read_buffer.reserve(RECEIVE_CHUNK_BYTES);
        match timeout_at(deadline, stream.read_buf(&mut read_buffer)).await {
            Err(_elapsed) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => {}
        }
        let received = Instant::now();
        let outcome = read_replies(
            &mut read_buffer,
            &mut decoder,
            &mut sender,
            received,
            &window,
            output,
        );
        if outcome.failed {
            break true;
        }
        if received < window.measure_end {
            sender.queue(outcome.n_to_send, window.ns_since_epoch(Instant::now()));
        }
    };
    {
        let mut output = output.borrow_mut();
        output.errors.unanswered_messages += sender.in_flight.len() as u64;
        output.errors.failed_connections += u64::from(failed);
    }
    if !failed {
        let mut close = BytesMut::new();
        encode_close(&mut close, sender.masks.next_mask());
        let _ = timeout_at(deadline, stream.write_all(&close)).await;
    }
    close_quietly(stream).await;
}

/// Takes every complete reply off the buffer, checks and times it, and
/// counts how many new messages to send (one per reply).
fn read_replies(
    read_buffer: &mut BytesMut,
    decoder: &mut crate::load_generator::client_frame::MessageDecoder,
    sender: &mut Sender,
    received: Instant,
    window: &MeasurementWindow,
    output: &RefCell<EchoThreadOutput>,
) -> BatchOutcome {
    let received_ns = window.ns_since_epoch(received);
    let mut outcome = BatchOutcome {
        n_to_send: 0,
        failed: false,
    };
    let mut output = output.borrow_mut();
    // Bounded by the buffer: each decoded message consumes its bytes.
    loop {
        let payload = match decoder.decode(read_buffer) {
            Ok(None) => return outcome,
            Ok(Some(Message::Binary(payload))) => Some(payload),
            Ok(Some(Message::Text(_))) => None,
            Ok(Some(Message::Ping(payload))) => {
                let mask = sender.masks.next_mask();
                encode_masked_frame_into(
                    &mut sender.write_buffer,
                    true,
                    Opcode::Pong,
                    &payload,
                    mask,
                );
                continue;
            }
            Ok(Some(Message::Pong(_))) => continue,
            Ok(Some(Message::Close { .. })) | Err(_) => {
                outcome.failed = true;
                return outcome;
            }
        };
        let Some(expected) = sender.in_flight.pop_front() else {
            output.errors.mismatched_replies += 1;
            continue;
        };
        outcome.n_to_send += 1;
        let matches =
            payload.is_some_and(|payload| sender.template.check_echo(&payload, expected).is_ok());
        if !matches {
            output.errors.mismatched_replies += 1;
        } else if window.is_measured_ns(expected.timestamp_ns) {
            output.messages_measured += 1;
            output
                .latency
                .record_us(latency_us(expected.timestamp_ns, received_ns));
        }
    }
}

async fn close_quietly(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
}
