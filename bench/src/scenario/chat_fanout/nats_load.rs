//! One client thread's share of the fan-out load on nats-server: the NATS
//! text protocol over WebSocket through [`crate::nats_client`], the same
//! rooms (subjects `room.<n>`), subscribers, publishers, timetables and
//! bodies as on Veza.
//!
//! Prepare: every connection connects (from its source address) and sends
//! `CONNECT`; subscribers `SUB` to their room; a `PING`/`PONG` round trip
//! confirms both. Run: subscribers read until they have every message of
//! their room or the drain deadline; publishers `PUB` on their timetable.
//! Core NATS acknowledges nothing, so nothing is counted as acknowledged.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt as _, TryStreamExt as _};
use tokio::time::timeout_at;

use crate::load_generator::client_threads::{MeasurementWindow, ThreadWorkload};
use crate::load_generator::precise_timer::PreciseTimer;
use crate::load_generator::source_address::source_address;
use crate::nats_client::{
    room_subject, NatsClient, NatsClientError, NatsReceiver, NatsSender, ServerOp,
};

use super::timetable::PublisherTimetable;
use super::workload::{ConnectionRole, FanoutShape, FanoutThreadOutput, SubscriberTally};

/// Connections a thread sets up at once.
const PREPARE_CONCURRENCY: usize = 32;

/// How long the `PING`/`PONG` confirming a setup may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The subscription id every subscriber uses (one subscription each).
const SUBSCRIPTION_ID: u64 = 1;

/// One client thread's connections on nats-server.
pub struct NatsThreadWorkload {
    /// `ws://127.0.0.1:PORT`.
    pub websocket_url: String,
    /// The run's shape.
    pub shape: FanoutShape,
    /// This thread's connections.
    pub roles: Vec<ConnectionRole>,
}

/// A prepared connection.
pub struct PreparedConnection {
    role: ConnectionRole,
    client: NatsClient,
}

impl ThreadWorkload for NatsThreadWorkload {
    type Prepared = Vec<PreparedConnection>;
    type Output = FanoutThreadOutput;
    type Error = NatsClientError;

    async fn prepare(&mut self) -> Result<Self::Prepared, NatsClientError> {
        let roles = self.roles.clone();
        let url = self.websocket_url.clone();
        futures_util::stream::iter(roles)
            .map(|role| prepare_one(&url, role))
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
                tokio::task::spawn_local(async move {
                    let PreparedConnection { role, client } = connection;
                    match role.publisher_idx {
                        None => subscribe_until_done(client, role, &shape, window, &output).await,
                        Some(publisher_idx) => {
                            let publisher = Publisher {
                                subject: room_subject(role.room_idx),
                                timetable: shape.timetable(publisher_idx, &window),
                                payload_bytes: shape.payload_bytes,
                                window,
                                output: &output,
                            };
                            publisher.run(client).await;
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

async fn prepare_one(
    url: &str,
    role: ConnectionRole,
) -> Result<PreparedConnection, NatsClientError> {
    let mut client = NatsClient::connect(url, Some(source_address(role.connection_idx))).await?;
    if role.publisher_idx.is_none() {
        client
            .subscribe(&room_subject(role.room_idx), SUBSCRIPTION_ID)
            .await?;
    }
    client.ping(SETUP_TIMEOUT).await?;
    Ok(PreparedConnection { role, client })
}

async fn subscribe_until_done(
    client: NatsClient,
    role: ConnectionRole,
    shape: &FanoutShape,
    window: MeasurementWindow,
    output: &RefCell<FanoutThreadOutput>,
) {
    let (mut sender, mut receiver) = client.split();
    let expected = shape.messages_per_room(role.room_idx, &window);
    let mut tally = SubscriberTally::new(shape, role.room_idx);
    let deadline = window.drain_deadline.into();
    // Bounded by the drain deadline.
    while tally.received < expected {
        match receiver.next_op(deadline).await {
            Ok(ServerOp::Msg { payload, .. }) => {
                let received_ns = window.ns_since_epoch(Instant::now());
                tally.record(&payload, received_ns, &window, &mut output.borrow_mut());
            }
            Ok(ServerOp::Ping) => {
                if let Err(error) = sender.pong().await {
                    output.borrow_mut().fail("subscriber", &error);
                    return;
                }
            }
            Ok(_) => {}
            Err(NatsClientError::Timeout) => break,
            Err(error) => {
                output.borrow_mut().fail("subscriber", &error);
                return;
            }
        }
    }
    let _ = timeout_at(deadline, sender.close()).await;
}

/// One publishing connection's run.
struct Publisher<'run> {
    subject: String,
    timetable: PublisherTimetable,
    payload_bytes: usize,
    window: MeasurementWindow,
    output: &'run RefCell<FanoutThreadOutput>,
}

impl Publisher<'_> {
    async fn run(self, client: NatsClient) {
        let (mut sender, receiver) = client.split();
        let pongs_owed = Cell::new(0u32);
        let sent = Cell::new(0u64);
        {
            let mut writer = std::pin::pin!(self.write(&mut sender, &sent, &pongs_owed));
            // The reader only answers server PINGs; it ends with the writer.
            let reader_ended_first = tokio::select! {
                () = &mut writer => false,
                () = self.read(receiver, &pongs_owed) => true,
            };
            if reader_ended_first {
                writer.await;
            }
        }
        let _ = timeout_at(self.window.drain_deadline.into(), sender.close()).await;
        let mut output = self.output.borrow_mut();
        output.sent_total += sent.get();
        output.sent_measured += (0..sent.get())
            .filter(|&sequence| {
                self.window
                    .is_measured_ns(self.timetable.intended_ns(sequence))
            })
            .count() as u64;
    }

    async fn write(&self, sender: &mut NatsSender, sent: &Cell<u64>, pongs_owed: &Cell<u32>) {
        let deadline = self.window.drain_deadline.into();
        let mut timer = match PreciseTimer::new() {
            Ok(timer) => timer,
            Err(error) => return self.output.borrow_mut().fail("publisher timer", &error),
        };
        let mut sequence = 0;
        // Bounded: each turn sends at least one of n_messages, or stops.
        while sequence < self.timetable.n_messages {
            let due = self
                .window
                .instant_at_ns(self.timetable.intended_ns(sequence));
            if let Err(error) = timer.sleep_until(due).await {
                return self.output.borrow_mut().fail("publisher timer", &error);
            }
            let due_count = self
                .timetable
                .due_by(self.window.ns_since_epoch(Instant::now()))
                .max(sequence + 1);
            let written = timeout_at(deadline, async {
                for _ in 0..pongs_owed.replace(0) {
                    sender.pong().await?;
                }
                while sequence < due_count {
                    let body = self.timetable.stamp(sequence).body(self.payload_bytes);
                    sender.publish(&self.subject, body.as_bytes()).await?;
                    sequence += 1;
                    sent.set(sequence);
                }
                Ok::<(), NatsClientError>(())
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return self.output.borrow_mut().fail("publisher", &error),
                Err(_elapsed) => return,
            }
        }
    }

    async fn read(&self, mut receiver: NatsReceiver, pongs_owed: &Cell<u32>) {
        let deadline = self.window.drain_deadline.into();
        // Bounded by the drain deadline.
        loop {
            match receiver.next_op(deadline).await {
                Ok(ServerOp::Ping) => pongs_owed.set(pongs_owed.get() + 1),
                Ok(_) => {}
                Err(NatsClientError::Timeout) => return,
                Err(error) => return self.output.borrow_mut().fail("publisher replies", &error),
            }
        }
    }
}
