//! One client thread's share of the fan-out load on Veza: chat protocol v1
//! through [`crate::chat_client`].
//!
//! Prepare: every connection connects (from its source address), sends
//! `Auth` with its user's token and waits for `AuthOk`; subscribers then
//! `Subscribe` to their room with `since_seq = -1` (live only). Run: each
//! subscriber reads until it has every message its room's publishers will
//! send, or the drain deadline; each publisher writes `Send` frames on its
//! timetable (request id = message number + 1) while a reader counts the
//! `Sent` acknowledgements and `Error` refusals.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt as _, TryStreamExt as _};
use tokio::time::timeout_at;
use veza_proto::chat::{ClientFrame, ServerFrame};

use crate::chat_client::{ChatClient, ChatClientError, ChatReceiver, ChatSender};
use crate::load_generator::client_threads::{MeasurementWindow, ThreadWorkload};
use crate::load_generator::precise_timer::PreciseTimer;
use crate::load_generator::source_address::source_address;

use super::timetable::{latency_us, PublisherTimetable};
use super::workload::{ConnectionRole, FanoutShape, FanoutThreadOutput, SubscriberTally};

/// Connections a thread sets up at once.
const PREPARE_CONCURRENCY: usize = 32;

/// How long one setup step (connect, `Auth`, `Subscribe`) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a connection waits for the server's close after its own.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// One client thread's connections on Veza.
pub struct VezaThreadWorkload {
    /// `ws://…/v1/chat`.
    pub chat_url: String,
    /// The run's shape.
    pub shape: FanoutShape,
    /// This thread's connections.
    pub roles: Vec<ConnectionRole>,
    /// Access token per user index.
    pub tokens: Arc<Vec<String>>,
    /// Room id per room index.
    pub room_ids: Vec<i64>,
}

/// A prepared connection.
pub struct PreparedConnection {
    role: ConnectionRole,
    client: ChatClient,
}

impl ThreadWorkload for VezaThreadWorkload {
    type Prepared = Vec<PreparedConnection>;
    type Output = FanoutThreadOutput;
    type Error = ChatClientError;

    async fn prepare(&mut self) -> Result<Self::Prepared, ChatClientError> {
        let roles = self.roles.clone();
        futures_util::stream::iter(roles)
            .map(|role| self.prepare_one(role))
            .buffer_unordered(PREPARE_CONCURRENCY)
            .try_collect()
            .await
    }

    async fn run(self, prepared: Self::Prepared, window: MeasurementWindow) -> FanoutThreadOutput {
        let output = Rc::new(RefCell::new(FanoutThreadOutput::default()));
        let tasks: Vec<_> = prepared
            .into_iter()
            .map(|connection| {
                let output = Rc::clone(&output);
                let shape = self.shape;
                let room_id = self.room_ids[connection.role.room_idx];
                tokio::task::spawn_local(async move {
                    match connection.role.publisher_idx {
                        None => {
                            subscribe_until_done(connection, &shape, window, &output).await;
                        }
                        Some(publisher_idx) => {
                            let timetable = shape.timetable(publisher_idx, &window);
                            let publisher = Publisher {
                                room_id,
                                timetable,
                                payload_bytes: shape.payload_bytes,
                                window,
                                output: &output,
                            };
                            publisher.run(connection.client).await;
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            if let Err(error) = task.await {
                output.borrow_mut().fail("client task", &error);
            }
        }
        Rc::try_unwrap(output)
            .map(RefCell::into_inner)
            .unwrap_or_default()
    }
}

impl VezaThreadWorkload {
    async fn prepare_one(
        &self,
        role: ConnectionRole,
    ) -> Result<PreparedConnection, ChatClientError> {
        let source = source_address(role.connection_idx);
        let mut client = ChatClient::connect_from(&self.chat_url, source).await?;
        client
            .authenticate(&self.tokens[role.user_idx], SETUP_TIMEOUT)
            .await?;
        if role.publisher_idx.is_none() {
            let room_id = self.room_ids[role.room_idx];
            client.subscribe(room_id, -1, SETUP_TIMEOUT).await?;
        }
        Ok(PreparedConnection { role, client })
    }
}

async fn subscribe_until_done(
    connection: PreparedConnection,
    shape: &FanoutShape,
    window: MeasurementWindow,
    output: &RefCell<FanoutThreadOutput>,
) {
    let PreparedConnection { role, mut client } = connection;
    let expected = shape.messages_per_room(role.room_idx, &window);
    let mut tally = SubscriberTally::new(shape, role.room_idx);
    let deadline = window.drain_deadline.into();
    // Bounded by the drain deadline.
    while tally.received < expected {
        match client.next_frame_until(deadline).await {
            Ok(ServerFrame::Message(event)) => {
                let received_ns = window.ns_since_epoch(Instant::now());
                tally.record(
                    event.body.as_bytes(),
                    received_ns,
                    &window,
                    &mut output.borrow_mut(),
                );
            }
            // Presence, typing and other events are not what is measured.
            Ok(_) => {}
            Err(ChatClientError::Timeout) => break,
            Err(error) => {
                output.borrow_mut().fail("subscriber", &error);
                return;
            }
        }
    }
    let _ = client.close(1000, CLOSE_WAIT).await;
}

/// One publishing connection's run.
struct Publisher<'run> {
    room_id: i64,
    timetable: PublisherTimetable,
    payload_bytes: usize,
    window: MeasurementWindow,
    output: &'run RefCell<FanoutThreadOutput>,
}

impl Publisher<'_> {
    async fn run(self, client: ChatClient) {
        let (mut sender, receiver) = client.split();
        let sent = Cell::new(0u64);
        let writer_done = Cell::new(false);
        let ((), ()) = tokio::join!(
            self.write(&mut sender, &sent, &writer_done),
            self.read_replies(receiver, &sent, &writer_done)
        );
        let _ = timeout_at(self.window.drain_deadline.into(), sender.close(1000)).await;
        let mut output = self.output.borrow_mut();
        output.sent_total += sent.get();
        output.sent_measured += (0..sent.get())
            .filter(|&sequence| {
                self.window
                    .is_measured_ns(self.timetable.intended_ns(sequence))
            })
            .count() as u64;
    }

    /// Writes every message when it is due (those that came due while the
    /// writer slept go out in one write).
    async fn write(&self, sender: &mut ChatSender, sent: &Cell<u64>, writer_done: &Cell<bool>) {
        let deadline = self.window.drain_deadline.into();
        let mut timer = match PreciseTimer::new() {
            Ok(timer) => timer,
            Err(error) => {
                self.output.borrow_mut().fail("publisher timer", &error);
                writer_done.set(true);
                return;
            }
        };
        let mut sequence = 0;
        // Bounded: each turn sends at least one of n_messages, or stops.
        while sequence < self.timetable.n_messages {
            let due = self
                .window
                .instant_at_ns(self.timetable.intended_ns(sequence));
            if let Err(error) = timer.sleep_until(due).await {
                self.output.borrow_mut().fail("publisher timer", &error);
                break;
            }
            let due_count = self
                .timetable
                .due_by(self.window.ns_since_epoch(Instant::now()))
                .max(sequence + 1);
            let written = timeout_at(deadline, async {
                while sequence < due_count {
                    sender.feed(&self.frame(sequence)).await?;
                    sequence += 1;
                }
                sender.flush().await
            })
            .await;
            sent.set(sequence);
            match written {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    self.output.borrow_mut().fail("publisher", &error);
                    break;
                }
                Err(_elapsed) => break,
            }
        }
        writer_done.set(true);
    }

    fn frame(&self, sequence: u64) -> ClientFrame {
        let stamp = self.timetable.stamp(sequence);
        ClientFrame::Send {
            request_id: request_id_of(sequence),
            room_id: self.room_id,
            thread_parent_seq: 0,
            nonce: format!("{:x}-{sequence:x}", self.timetable.publisher_idx),
            mentions: Vec::new(),
            body: stamp.body(self.payload_bytes),
        }
    }

    /// Counts `Sent` and `Error` replies until every written message is
    /// answered (once the writer is done) or the drain deadline.
    async fn read_replies(
        &self,
        mut receiver: ChatReceiver,
        sent: &Cell<u64>,
        writer_done: &Cell<bool>,
    ) {
        let deadline = self.window.drain_deadline.into();
        let mut answered = 0u64;
        // Bounded by the drain deadline.
        while !(writer_done.get() && answered >= sent.get()) {
            let frame = match receiver.next_frame_until(deadline).await {
                Ok(frame) => frame,
                Err(ChatClientError::Timeout) => return,
                Err(error) => {
                    self.output.borrow_mut().fail("publisher replies", &error);
                    return;
                }
            };
            let received_ns = self.window.ns_since_epoch(Instant::now());
            let mut output = self.output.borrow_mut();
            match frame {
                ServerFrame::Sent { request_id, .. } => {
                    answered += 1;
                    output.acknowledged_total += 1;
                    let intended_ns = self.timetable.intended_ns(sequence_of(request_id));
                    if self.window.is_measured_ns(intended_ns) {
                        output
                            .ack_latency
                            .record_us(latency_us(intended_ns, received_ns));
                    }
                }
                ServerFrame::Error { code, .. } => {
                    answered += 1;
                    *output
                        .rejected_by_code
                        .entry(code.name().to_string())
                        .or_default() += 1;
                }
                _ => {}
            }
        }
    }
}

/// Message `sequence` goes out with request id `sequence + 1` (0 is never a
/// request id).
fn request_id_of(sequence: u64) -> u32 {
    u32::try_from(sequence + 1).expect("fewer than 4 billion messages per publisher")
}

fn sequence_of(request_id: u32) -> u64 {
    u64::from(request_id).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_map_to_message_numbers_and_back() {
        assert_eq!(request_id_of(0), 1);
        assert_eq!(sequence_of(request_id_of(41)), 41);
    }
}
