//! One client thread's share of `control-persist`: its control connections,
//! each standing for one data-plane shard that persists its own room, and
//! the closed loop that keeps `in_flight_per_connection` batches waiting for
//! their `BatchPersisted` on every connection.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use tokio::time::timeout_at;
use veza_proto::control::{MessageChange, NewMessage, ResponseBody, ResponseResult};

use crate::load_generator::client_threads::{MeasurementWindow, ThreadWorkload};
use crate::load_generator::latency::LatencyRecorder;

use super::protocol_client::{ControlConnection, ProtocolClientError, ReceivedResponse};

/// The text every benchmark message starts from; repeated and cut to the
/// body size asked for.
const BODY_TEXT: &str = "The quick brown fox jumps over the lazy dog while the band plays on. ";

/// What every connection sends.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    /// Changes (new messages) per `PersistBatch`.
    pub batch_changes: usize,
    /// Batches sent and not yet acknowledged, per connection.
    pub in_flight_per_connection: usize,
    /// Bytes of each message's text.
    pub body_bytes: usize,
    /// The author of every message (must exist, or the batch is skipped).
    pub author_id: i64,
}

/// One connection and the room it persists into.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionAssignment {
    /// Its index among all connections; it is the `shard_idx` of its `Hello`.
    pub connection_idx: usize,
    /// Its room (must exist, or the batch is skipped).
    pub room_id: i64,
}

/// The connections one client thread owns.
#[derive(Debug, Clone)]
pub struct PersistThreadWorkload {
    /// `<data_dir>/control.sock`.
    pub socket_path: PathBuf,
    /// Connections over all threads (the `shard_count` of every `Hello`).
    pub n_connections_total: usize,
    /// This thread's connections.
    pub connections: Vec<ConnectionAssignment>,
    /// What they send.
    pub plan: BatchPlan,
}

/// Errors by kind, warm-up included, with the first explanation seen of
/// each kind (the control plane's log is gone with its data directory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Count per stable kind name.
    pub by_kind: BTreeMap<String, u64>,
    /// The first explanation seen per kind.
    pub first_detail_by_kind: BTreeMap<String, String>,
}

impl ErrorCounts {
    /// Counts `n` errors of `kind`, keeping `detail` if it is the first.
    pub fn add(&mut self, kind: &str, n: u64, detail: &str) {
        *self.by_kind.entry(kind.to_string()).or_default() += n;
        self.first_detail_by_kind
            .entry(kind.to_string())
            .or_insert_with(|| detail.to_string());
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ErrorCounts) {
        for (kind, n) in &other.by_kind {
            let detail = other
                .first_detail_by_kind
                .get(kind)
                .map_or("", String::as_str);
            self.add(kind, *n, detail);
        }
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }
}

/// How far one room got: the highest seq whose batch was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomProgress {
    /// The room.
    pub room_id: i64,
    /// The largest acknowledged seq; 0 when nothing was acknowledged.
    pub last_acknowledged_seq: i64,
    /// Messages acknowledged in this room, warm-up included.
    pub messages_acknowledged_total: u64,
}

/// What one thread (or, merged, the whole run) measured.
#[derive(Debug, Clone, Default)]
pub struct PersistOutput {
    /// Batches whose send time fell in the measured window.
    pub batches_sent_measured: u64,
    /// Of those, batches acknowledged with every change persisted.
    pub batches_acknowledged_measured: u64,
    /// Messages in those acknowledged batches.
    pub messages_acknowledged_measured: u64,
    /// Send → `BatchPersisted` of those batches, in microseconds.
    pub latency: LatencyRecorder,
    /// Every error of the run.
    pub errors: ErrorCounts,
    /// One entry per connection.
    pub rooms: Vec<RoomProgress>,
    /// Pushes the connections received (and ignored).
    pub pushes_received: u64,
}

impl PersistOutput {
    /// Adds `other`'s counts, histogram and rooms.
    pub fn merge(&mut self, other: PersistOutput) {
        self.batches_sent_measured += other.batches_sent_measured;
        self.batches_acknowledged_measured += other.batches_acknowledged_measured;
        self.messages_acknowledged_measured += other.messages_acknowledged_measured;
        self.latency.merge(&other.latency);
        self.errors.merge(&other.errors);
        self.rooms.extend(other.rooms);
        self.pushes_received += other.pushes_received;
    }
}

impl ThreadWorkload for PersistThreadWorkload {
    type Prepared = Vec<ControlConnection>;
    type Output = PersistOutput;
    type Error = ProtocolClientError;

    async fn prepare(&mut self) -> Result<Vec<ControlConnection>, ProtocolClientError> {
        let mut prepared = Vec::with_capacity(self.connections.len());
        let shard_count = u32::try_from(self.n_connections_total).expect("validated bound");
        for assignment in &self.connections {
            let shard_idx = u32::try_from(assignment.connection_idx).expect("validated bound");
            let connection =
                ControlConnection::connect(&self.socket_path, "veza-bench", shard_idx, shard_count)
                    .await?;
            prepared.push(connection);
        }
        Ok(prepared)
    }

    async fn run(
        self,
        prepared: Vec<ControlConnection>,
        window: MeasurementWindow,
    ) -> PersistOutput {
        let tasks: Vec<_> = prepared
            .into_iter()
            .zip(&self.connections)
            .map(|(connection, assignment)| {
                let builder = BatchBuilder::new(*assignment, &self.plan);
                let in_flight_max = self.plan.in_flight_per_connection;
                tokio::task::spawn_local(drive(connection, builder, in_flight_max, window))
            })
            .collect();
        let mut output = PersistOutput::default();
        for task in tasks {
            match task.await {
                Ok(connection_output) => output.merge(connection_output),
                Err(error) => output
                    .errors
                    .add("connection_task_failed", 1, &error.to_string()),
            }
        }
        output
    }
}

/// Builds one connection's batches: consecutive seqs in its room, a unique
/// nonce per message, the same body.
struct BatchBuilder {
    assignment: ConnectionAssignment,
    next_seq: i64,
    /// The batch's messages, rewritten in place for every batch so that
    /// building a batch allocates nothing once the nonces have grown.
    changes: Vec<MessageChange>,
}

impl BatchBuilder {
    fn new(assignment: ConnectionAssignment, plan: &BatchPlan) -> BatchBuilder {
        let body: String = BODY_TEXT.chars().cycle().take(plan.body_bytes).collect();
        let template = MessageChange::New(NewMessage {
            room_id: assignment.room_id,
            seq: 0,
            author_id: plan.author_id,
            client_nonce: String::new(),
            body,
            thread_parent_seq: None,
            mentions: Vec::new(),
            created_at_ms: 0,
        });
        BatchBuilder {
            assignment,
            next_seq: 1,
            changes: vec![template; plan.batch_changes],
        }
    }

    /// The next batch and its last seq.
    fn next_batch(&mut self) -> (Vec<MessageChange>, i64) {
        let created_at_ms = unix_now_ms();
        for change in &mut self.changes {
            let MessageChange::New(message) = change else {
                unreachable!("the builder makes only new messages");
            };
            message.seq = self.next_seq;
            message.created_at_ms = created_at_ms;
            message.client_nonce.clear();
            let _ = write!(
                message.client_nonce,
                "bench-{}-{}",
                self.assignment.connection_idx, self.next_seq
            );
            self.next_seq += 1;
        }
        (std::mem::take(&mut self.changes), self.next_seq - 1)
    }

    fn give_back(&mut self, changes: Vec<MessageChange>) {
        self.changes = changes;
    }
}

/// A batch sent and not yet answered.
struct InFlightBatch {
    request_id: u64,
    sent_at: Instant,
    n_changes: u64,
    last_seq: i64,
}

/// Why a connection stopped early.
struct Failure {
    kind: String,
    detail: String,
}

impl Failure {
    fn new(kind: &str, detail: &str) -> Failure {
        Failure {
            kind: kind.into(),
            detail: detail.into(),
        }
    }
}

impl From<ProtocolClientError> for Failure {
    fn from(error: ProtocolClientError) -> Failure {
        Failure {
            kind: error.kind(),
            detail: error.to_string(),
        }
    }
}

/// One connection's running tallies.
struct ConnectionTally {
    output: PersistOutput,
    room: RoomProgress,
}

/// Runs one connection from `window.load_start` until its last batch is
/// answered or `window.drain_deadline` passes.
async fn drive(
    mut connection: ControlConnection,
    mut builder: BatchBuilder,
    in_flight_max: usize,
    window: MeasurementWindow,
) -> PersistOutput {
    let mut tally = ConnectionTally {
        output: PersistOutput::default(),
        room: RoomProgress {
            room_id: builder.assignment.room_id,
            last_acknowledged_seq: 0,
            messages_acknowledged_total: 0,
        },
    };
    let mut in_flight: VecDeque<InFlightBatch> = VecDeque::with_capacity(in_flight_max);
    let drain_deadline = tokio::time::Instant::from_std(window.drain_deadline);
    tokio::time::sleep_until(window.load_start.into()).await;
    // Bounded by the window: no batch is sent after measure_end, and every
    // wait ends by the drain deadline.
    loop {
        while in_flight.len() < in_flight_max && Instant::now() < window.measure_end {
            let sent = timeout_at(drain_deadline, send_batch(&mut connection, &mut builder)).await;
            match sent {
                Ok(Ok(batch)) => {
                    if window.is_measured_ns(window.ns_since_epoch(batch.sent_at)) {
                        tally.output.batches_sent_measured += 1;
                    }
                    in_flight.push_back(batch);
                }
                Ok(Err(error)) => return tally.finish(Some(error.into()), &in_flight, &connection),
                Err(_) => {
                    let failure = Failure::new("send_timeout", "the socket took no more bytes");
                    return tally.finish(Some(failure), &in_flight, &connection);
                }
            }
        }
        if in_flight.is_empty() {
            return tally.finish(None, &in_flight, &connection);
        }
        match timeout_at(drain_deadline, connection.receive_response()).await {
            Ok(Ok(response)) => tally.settle(&mut in_flight, response, &window),
            Ok(Err(error)) => return tally.finish(Some(error.into()), &in_flight, &connection),
            Err(_) => {
                let failure = Failure::new("unanswered", "no answer by the drain deadline");
                return tally.finish(Some(failure), &in_flight, &connection);
            }
        }
    }
}

async fn send_batch(
    connection: &mut ControlConnection,
    builder: &mut BatchBuilder,
) -> Result<InFlightBatch, ProtocolClientError> {
    let (changes, last_seq) = builder.next_batch();
    let n_changes = changes.len() as u64;
    let sent_at = Instant::now();
    let (request_id, changes) = connection.send_persist_batch(changes).await?;
    builder.give_back(changes);
    Ok(InFlightBatch {
        request_id,
        sent_at,
        n_changes,
        last_seq,
    })
}

impl ConnectionTally {
    /// Applies one response to the batch it answers.
    fn settle(
        &mut self,
        in_flight: &mut VecDeque<InFlightBatch>,
        response: ReceivedResponse,
        window: &MeasurementWindow,
    ) {
        // Batches of one connection commit in order, so this is the front
        // but for a bug; the search is over at most in_flight_max entries.
        let Some(batch_idx) = in_flight
            .iter()
            .position(|batch| batch.request_id == response.request_id)
        else {
            let detail = format!("request id {}", response.request_id);
            self.output
                .errors
                .add("response_to_unknown_request", 1, &detail);
            return;
        };
        let batch = in_flight.remove(batch_idx).expect("position is in range");
        let changes_persisted = match response.result {
            ResponseResult::Ok(ResponseBody::BatchPersisted { changes_persisted }) => {
                u64::from(changes_persisted)
            }
            ResponseResult::Ok(other) => {
                let detail = format!("{other:?}");
                return self.output.errors.add("unexpected_response", 1, &detail);
            }
            ResponseResult::Err(error) => {
                let kind = format!("refused_{}", error.code.name());
                return self.output.errors.add(&kind, 1, &error.message);
            }
        };
        if changes_persisted != batch.n_changes {
            let detail = format!("{changes_persisted} of {} changes", batch.n_changes);
            return self.output.errors.add("short_acknowledgement", 1, &detail);
        }
        self.room.messages_acknowledged_total += batch.n_changes;
        self.room.last_acknowledged_seq = self.room.last_acknowledged_seq.max(batch.last_seq);
        if window.is_measured_ns(window.ns_since_epoch(batch.sent_at)) {
            self.output.batches_acknowledged_measured += 1;
            self.output.messages_acknowledged_measured += batch.n_changes;
            let latency_us = batch.sent_at.elapsed().as_micros();
            self.output
                .latency
                .record_us(u64::try_from(latency_us).unwrap_or(u64::MAX));
        }
    }

    /// Ends the connection. On a `failure`, the batches still in flight
    /// count as errors of that kind (one at least: the failure itself).
    fn finish(
        mut self,
        failure: Option<Failure>,
        in_flight: &VecDeque<InFlightBatch>,
        connection: &ControlConnection,
    ) -> PersistOutput {
        if let Some(failure) = failure {
            let n_errors = (in_flight.len() as u64).max(1);
            self.output
                .errors
                .add(&failure.kind, n_errors, &failure.detail);
        }
        self.output.pushes_received = connection.pushes_received();
        self.output.rooms.push(self.room);
        self.output
    }
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(batch_changes: usize) -> BatchPlan {
        BatchPlan {
            batch_changes,
            in_flight_per_connection: 1,
            body_bytes: 100,
            author_id: 7,
        }
    }

    fn new_messages(changes: &[MessageChange]) -> Vec<&NewMessage> {
        changes
            .iter()
            .map(|change| match change {
                MessageChange::New(message) => message,
                other => panic!("not a new message: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn batches_carry_consecutive_seqs_unique_nonces_and_the_body_size_asked_for() {
        let assignment = ConnectionAssignment {
            connection_idx: 3,
            room_id: 42,
        };
        let mut builder = BatchBuilder::new(assignment, &plan(4));
        let (first, first_last_seq) = builder.next_batch();
        let first_messages: Vec<NewMessage> = new_messages(&first).into_iter().cloned().collect();
        builder.give_back(first);
        let (second, second_last_seq) = builder.next_batch();
        let second_messages = new_messages(&second);
        assert_eq!((first_last_seq, second_last_seq), (4, 8));
        let seqs: Vec<i64> = first_messages
            .iter()
            .chain(second_messages.iter().copied())
            .map(|message| message.seq)
            .collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<i64>>());
        assert_eq!(first_messages[0].client_nonce, "bench-3-1");
        assert_eq!(second_messages[3].client_nonce, "bench-3-8");
        for message in second_messages {
            assert_eq!((message.room_id, message.author_id), (42, 7));
            assert_eq!(message.body.len(), 100);
        }
    }

    #[test]
    fn error_counts_merge_by_kind_and_keep_the_first_detail() {
        let mut first = ErrorCounts::default();
        first.add("unanswered", 2, "first");
        let mut second = ErrorCounts::default();
        second.add("unanswered", 1, "second");
        second.add("refused_internal", 1, "database is locked");
        first.merge(&second);
        assert_eq!(first.total(), 4);
        assert_eq!(first.by_kind["unanswered"], 3);
        assert_eq!(first.first_detail_by_kind["unanswered"], "first");
        assert_eq!(
            first.first_detail_by_kind["refused_internal"],
            "database is locked"
        );
    }
}
