//! One client thread's share of the echo load: its connections, what each
//! connection sends, and the counters and histogram the thread reports.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;

use crate::load_generator::client_frame::{encode_masked_frame_into, Opcode};
use crate::load_generator::client_threads::{MeasurementWindow, ThreadWorkload};
use crate::load_generator::latency::LatencyRecorder;
use crate::load_generator::websocket_client::{
    connect, ClientConnection, ConnectError, ConnectOptions,
};

use super::{closed_loop, open_loop, LoadMode};

/// The free space a connection's read buffer has before each read. Replies
/// are split off the buffer and dropped once checked, so `reserve` gets the
/// same allocation back instead of a new one.
pub const RECEIVE_CHUNK_BYTES: usize = 64 * 1024;

/// What went wrong with messages, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EchoErrorCounts {
    /// Replies that differ from what was sent (bytes, length, order, or a
    /// text reply to a binary message).
    pub mismatched_replies: u64,
    /// Messages sent (or due, in open loop) with no reply by the drain
    /// deadline.
    pub unanswered_messages: u64,
    /// Connections that failed mid-run: I/O error, early close, protocol
    /// error.
    pub failed_connections: u64,
}

impl EchoErrorCounts {
    /// All errors together.
    pub fn total(&self) -> u64 {
        self.mismatched_replies + self.unanswered_messages + self.failed_connections
    }

    /// The counts by name, for reports.
    pub fn by_kind(&self) -> std::collections::BTreeMap<String, u64> {
        [
            ("mismatched_replies", self.mismatched_replies),
            ("unanswered_messages", self.unanswered_messages),
            ("failed_connections", self.failed_connections),
        ]
        .into_iter()
        .map(|(kind, count)| (kind.to_string(), count))
        .collect()
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &EchoErrorCounts) {
        self.mismatched_replies += other.mismatched_replies;
        self.unanswered_messages += other.unanswered_messages;
        self.failed_connections += other.failed_connections;
    }
}

/// What one client thread measured.
#[derive(Debug, Clone, Default)]
pub struct EchoThreadOutput {
    /// Replies to messages sent within the measurement window.
    pub messages_measured: u64,
    /// Errors by kind, over the whole run (warm-up included).
    pub errors: EchoErrorCounts,
    /// Latency of the measured messages.
    pub latency: LatencyRecorder,
}

/// How every connection of a run behaves.
#[derive(Debug, Clone)]
pub struct ConnectionPlan {
    /// Bytes per message.
    pub payload_bytes: usize,
    /// Closed or open loop.
    pub mode: LoadMode,
    /// Connections across all threads (open loop spreads the rate over them).
    pub n_connections_total: usize,
}

/// One connection's identity within the run.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSlot {
    /// Its index across all threads, from 0.
    pub connection_idx: usize,
}

/// One thread's connections.
pub struct EchoThreadWorkload {
    /// Where to connect.
    pub connect_options: ConnectOptions,
    /// Which connections this thread owns.
    pub connection_idxs: Vec<usize>,
    /// How they behave.
    pub plan: ConnectionPlan,
}

impl ThreadWorkload for EchoThreadWorkload {
    type Prepared = Vec<(ConnectionSlot, ClientConnection)>;
    type Output = EchoThreadOutput;
    type Error = ConnectError;

    async fn prepare(&mut self) -> Result<Self::Prepared, ConnectError> {
        let mut connections = Vec::with_capacity(self.connection_idxs.len());
        for &connection_idx in &self.connection_idxs {
            let connection = connect(&self.connect_options, connection_idx as u64 + 1).await?;
            connections.push((ConnectionSlot { connection_idx }, connection));
        }
        Ok(connections)
    }

    async fn run(self, prepared: Self::Prepared, window: MeasurementWindow) -> EchoThreadOutput {
        let output = Rc::new(RefCell::new(EchoThreadOutput::default()));
        let tasks: Vec<_> = prepared
            .into_iter()
            .map(|(slot, connection)| {
                let (plan, output) = (self.plan.clone(), Rc::clone(&output));
                tokio::task::spawn_local(async move {
                    match plan.mode {
                        LoadMode::Closed { pipeline } => {
                            closed_loop::drive(connection, slot, &plan, pipeline, window, &output)
                                .await
                        }
                        LoadMode::Open { rate_msgs_per_s } => {
                            open_loop::drive(
                                connection,
                                slot,
                                &plan,
                                rate_msgs_per_s,
                                window,
                                &output,
                            )
                            .await
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            if task.await.is_err() {
                output.borrow_mut().errors.failed_connections += 1;
            }
        }
        Rc::try_unwrap(output)
            .map(RefCell::into_inner)
            .unwrap_or_default()
    }
}

/// Appends a close frame (status 1000) to `out`, to end a connection
/// politely once the run is over.
pub fn encode_close(out: &mut BytesMut, mask: [u8; 4]) {
    encode_masked_frame_into(out, true, Opcode::Close, &1000u16.to_be_bytes(), mask);
}

/// The latency in microseconds between two nanosecond timestamps.
pub fn latency_us(sent_ns: u64, received_ns: u64) -> u64 {
    received_ns.saturating_sub(sent_ns) / 1_000
}
