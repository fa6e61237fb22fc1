//! One data-plane connection: handshake, then requests in and responses and
//! pushes out, until the peer leaves, breaks the protocol, or the control
//! plane stops.
//!
//! Tasks of one connection:
//! - this task reads and decodes frames and dispatches requests;
//! - a writer drains the bounded outbound queue (`control.outbound_frames_max`
//!   encoded frames), writing everything queued with one write;
//! - a persist worker commits `PersistBatch` requests one at a time, in
//!   arrival order (a later batch may edit a message of an earlier one);
//! - other requests run as tasks, at most `control.requests_in_flight_max`
//!   at once; past that, reading stops (backpressure through the socket);
//! - a push forwarder copies encoded pushes from the broadcast into the
//!   outbound queue. When the queue stays full the broadcast overflows for
//!   this connection, and the forwarder sends one `Resync` instead of the
//!   lost pushes, so memory stays bounded and the data plane refetches.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use veza_proto::control::handshake::accept_hello;
use veza_proto::control::{
    ClientFrame, ClientFrameDecoder, ErrorFrame, FrameEncoder, FrameError, Hello, MessageChange,
    ProtocolErrorCode, Request, RequestBody, RequestError, RequestErrorCode, Response,
    ResponseBody, ResponseResult, ServerFrame,
};

use super::operations;
use super::registry::NodeConnection;
use super::{stopped, ServerContext};

/// How long a closing connection may take to flush its last frames.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a stopping control plane lets requests in progress finish.
const STOP_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes read per `read` call at least (the buffer grows for larger frames).
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Writes are gathered up to this many bytes before one `write_all`.
const WRITE_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// How the connection arrived.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `unix` or `tcp`.
    pub transport: &'static str,
    /// The TCP address; empty for a Unix socket.
    pub address: String,
}

/// Why reading stopped.
enum ReadEnd {
    /// The peer closed its side.
    Closed,
    /// The socket failed.
    Io(std::io::Error),
    /// A frame broke the protocol.
    Frame(FrameError),
}

/// Reads frames from one socket.
struct FrameReader<R> {
    reader: R,
    buffer: BytesMut,
    decoder: ClientFrameDecoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// The next frame. Cancel-safe: bytes read are kept in the buffer.
    async fn next(&mut self) -> Result<ClientFrame, ReadEnd> {
        loop {
            match self.decoder.decode(&mut self.buffer) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(error) => return Err(ReadEnd::Frame(error)),
            }
            if self.buffer.capacity() - self.buffer.len() < READ_CHUNK_BYTES / 4 {
                self.buffer.reserve(READ_CHUNK_BYTES);
            }
            match self.reader.read_buf(&mut self.buffer).await {
                Ok(0) => return Err(ReadEnd::Closed),
                Ok(_) => {}
                Err(error) => return Err(ReadEnd::Io(error)),
            }
        }
    }
}

/// Serves one accepted connection to its end.
pub async fn run<S>(
    context: Arc<ServerContext>,
    stream: S,
    peer: Peer,
    pushes: broadcast::Receiver<Bytes>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let config = &context.state.config.control;
    let (reader, writer) = tokio::io::split(stream);
    let mut reader = FrameReader {
        reader,
        buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
        decoder: ClientFrameDecoder::new(config.frame_bytes_max),
    };
    let (outbound, outbound_receiver) = mpsc::channel::<Bytes>(config.outbound_frames_max);
    let writer_task = tokio::spawn(write_frames(writer, outbound_receiver));
    let handshake_timeout = Duration::from_millis(config.handshake_timeout_ms);
    let hello = match tokio::time::timeout(handshake_timeout, reader.next()).await {
        Ok(Ok(ClientFrame::Hello(hello))) => hello,
        Ok(Ok(ClientFrame::Request(_))) => {
            let error = ErrorFrame {
                code: ProtocolErrorCode::UnexpectedFrame,
                message: "the first frame must be Hello".into(),
            };
            return close_with_error(&context, outbound, writer_task, error, &peer).await;
        }
        Ok(Err(end)) => {
            return close_after_read_end(&context, outbound, writer_task, end, &peer).await
        }
        Err(_) => {
            let error = ErrorFrame {
                code: ProtocolErrorCode::HandshakeTimeout,
                message: format!("no Hello within {} ms", config.handshake_timeout_ms),
            };
            return close_with_error(&context, outbound, writer_task, error, &peer).await;
        }
    };
    let welcome = match accept_hello(&hello, env!("CARGO_PKG_VERSION")) {
        Ok(welcome) => welcome,
        Err(error) => return close_with_error(&context, outbound, writer_task, error, &peer).await,
    };
    if !send_frame(
        &outbound,
        &ServerFrame::Welcome(welcome),
        config.frame_bytes_max,
    )
    .await
    {
        return;
    }
    let node = register(&context, &hello, &peer);
    tracing::info!(node_id = %node.node_id, shard = node.shard_idx, transport = peer.transport, "data plane connected");
    let mut session = Session::start(context.clone(), node.clone(), outbound, pushes);
    let end = loop {
        tokio::select! {
            read = reader.next() => match read {
                Ok(ClientFrame::Request(request)) => session.dispatch(request).await,
                Ok(ClientFrame::Hello(_)) => break SessionEnd::Error(ErrorFrame {
                    code: ProtocolErrorCode::UnexpectedFrame,
                    message: "Hello may only be the first frame".into(),
                }),
                Err(ReadEnd::Frame(error)) => break SessionEnd::Error(error.to_error_frame()),
                Err(ReadEnd::Closed) => break SessionEnd::PeerClosed,
                Err(ReadEnd::Io(error)) => break SessionEnd::Io(error),
            },
            _ = stopped(&mut stop) => break SessionEnd::Stopping,
        }
    };
    context.state.nodes.deregister(node.connection_id);
    tracing::info!(node_id = %node.node_id, shard = node.shard_idx, "data plane disconnected");
    let outbound = session.finish(&end).await;
    match &end {
        SessionEnd::Error(error) => {
            context
                .state
                .nodes
                .frame_errors_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node_id = %node.node_id, code = error.code.name(), message = %error.message, "closing control connection after a protocol error");
            close_with_frame(outbound, writer_task, error.clone()).await;
        }
        SessionEnd::Stopping => {
            let error = ErrorFrame {
                code: ProtocolErrorCode::ShuttingDown,
                message: "the control plane is shutting down".into(),
            };
            close_with_frame(outbound, writer_task, error).await;
        }
        SessionEnd::PeerClosed | SessionEnd::Io(_) => {
            if let SessionEnd::Io(error) = &end {
                tracing::info!(node_id = %node.node_id, %error, "control connection failed");
            }
            drop(outbound);
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer_task).await;
        }
    }
}

fn register(context: &ServerContext, hello: &Hello, peer: &Peer) -> Arc<NodeConnection> {
    let registry = &context.state.nodes;
    let node = Arc::new(NodeConnection {
        connection_id: registry.next_connection_id(),
        node_id: hello.node_id.clone(),
        shard_idx: hello.shard_idx,
        shard_count: hello.shard_count,
        transport: peer.transport,
        peer: peer.address.clone(),
        connected_since_ms: crate::db::now_ms(),
        requests_served: Default::default(),
        batches_persisted: Default::default(),
        messages_persisted: Default::default(),
        pushes_sent: Default::default(),
    });
    registry.register(node.clone());
    node
}

/// Why a registered connection ends.
enum SessionEnd {
    PeerClosed,
    Io(std::io::Error),
    Error(ErrorFrame),
    Stopping,
}

/// The tasks of a registered connection.
struct Session {
    context: Arc<ServerContext>,
    node: Arc<NodeConnection>,
    outbound: mpsc::Sender<Bytes>,
    persist_queue: Option<mpsc::Sender<(u64, Vec<MessageChange>)>>,
    persist_worker: tokio::task::JoinHandle<()>,
    push_forwarder: tokio::task::JoinHandle<()>,
    requests_in_flight: Arc<Semaphore>,
    requests: JoinSet<()>,
}

impl Session {
    fn start(
        context: Arc<ServerContext>,
        node: Arc<NodeConnection>,
        outbound: mpsc::Sender<Bytes>,
        pushes: broadcast::Receiver<Bytes>,
    ) -> Self {
        let config = &context.state.config.control;
        let (persist_queue, persist_receiver) = mpsc::channel(config.persist_batches_queued_max);
        let persist_worker = tokio::spawn(persist_batches(
            context.clone(),
            node.clone(),
            outbound.clone(),
            persist_receiver,
        ));
        let push_forwarder = tokio::spawn(forward_pushes(
            context.clone(),
            node.clone(),
            outbound.clone(),
            pushes,
        ));
        Self {
            requests_in_flight: Arc::new(Semaphore::new(config.requests_in_flight_max)),
            context,
            node,
            outbound,
            persist_queue: Some(persist_queue),
            persist_worker,
            push_forwarder,
            requests: JoinSet::new(),
        }
    }

    /// Queues a batch for the persist worker, or runs another request as a
    /// task. Waits (and so stops reading) while the bound is reached.
    async fn dispatch(&mut self, request: Request) {
        while self.requests.try_join_next().is_some() {}
        if let RequestBody::PersistBatch { changes } = request.body {
            if let Some(queue) = &self.persist_queue {
                let _ = queue.send((request.request_id, changes)).await;
            }
            return;
        }
        let Ok(permit) = self.requests_in_flight.clone().acquire_owned().await else {
            return;
        };
        let context = self.context.clone();
        let node = self.node.clone();
        let outbound = self.outbound.clone();
        self.requests.spawn(async move {
            let result = answer(&context, request.body).await;
            node.count_request(
                &context.state.nodes,
                matches!(result, ResponseResult::Err(_)),
            );
            send_response(&outbound, request.request_id, result, &context).await;
            drop(permit);
        });
    }

    /// Ends the session's tasks; returns the outbound queue for the last
    /// frame. When the control plane stops, requests in progress and queued
    /// batches are finished first (bounded by a timeout) so that every batch
    /// the data plane sent is either acknowledged or not committed.
    async fn finish(mut self, end: &SessionEnd) -> mpsc::Sender<Bytes> {
        self.push_forwarder.abort();
        drop(self.persist_queue.take());
        if matches!(end, SessionEnd::Stopping) {
            let drain = async {
                while self.requests.join_next().await.is_some() {}
                let _ = (&mut self.persist_worker).await;
            };
            let _ = tokio::time::timeout(STOP_DRAIN_TIMEOUT, drain).await;
        }
        // Dropping a task mid-transaction rolls the transaction back: the
        // batch is not acknowledged and the data plane sends it again.
        self.persist_worker.abort();
        self.requests.abort_all();
        self.outbound
    }
}

async fn persist_batches(
    context: Arc<ServerContext>,
    node: Arc<NodeConnection>,
    outbound: mpsc::Sender<Bytes>,
    mut batches: mpsc::Receiver<(u64, Vec<MessageChange>)>,
) {
    let changes_max = context.state.config.control.batch_changes_max;
    while let Some((request_id, changes)) = batches.recv().await {
        let result = if changes.len() > changes_max {
            ResponseResult::Err(RequestError {
                code: RequestErrorCode::BadRequest,
                message: format!(
                    "a batch may hold at most {changes_max} changes (control.batch_changes_max); this one holds {}",
                    changes.len()
                ),
            })
        } else {
            match operations::persist_batch(&context.state, &changes).await {
                Ok(()) => {
                    node.count_batch(&context.state.nodes, changes.len() as u64);
                    ResponseResult::Ok(ResponseBody::BatchPersisted {
                        changes_persisted: changes.len() as u32,
                    })
                }
                Err(error) => ResponseResult::Err(error),
            }
        };
        node.count_request(
            &context.state.nodes,
            matches!(result, ResponseResult::Err(_)),
        );
        send_response(&outbound, request_id, result, &context).await;
    }
}

async fn forward_pushes(
    context: Arc<ServerContext>,
    node: Arc<NodeConnection>,
    outbound: mpsc::Sender<Bytes>,
    mut pushes: broadcast::Receiver<Bytes>,
) {
    loop {
        let frame = match pushes.recv().await {
            Ok(frame) => frame,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(node_id = %node.node_id, shard = node.shard_idx, missed, "data plane fell behind on pushes; sending Resync");
                context
                    .state
                    .nodes
                    .resyncs_total
                    .fetch_add(1, Ordering::Relaxed);
                context.resync_frame.clone()
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if outbound.send(frame).await.is_err() {
            return;
        }
        node.pushes_sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// The answer to every request but `PersistBatch`.
async fn answer(context: &ServerContext, body: RequestBody) -> ResponseResult {
    let state = &context.state;
    let outcome = match body {
        RequestBody::FetchSigningKeys => operations::signing_keys(state)
            .await
            .map(|keys| ResponseBody::SigningKeys { keys }),
        RequestBody::FetchConfig => operations::config(state)
            .await
            .map(|(version, settings)| ResponseBody::Config { version, settings }),
        RequestBody::LookupRights { room_id, user_id } => {
            operations::rights(state, room_id, user_id)
                .await
                .map(ResponseBody::Rights)
        }
        RequestBody::FetchHistory {
            room_id,
            before_seq,
            after_seq,
            limit,
        } => {
            let limit_max = state.config.control.history_limit_max;
            if limit == 0 || limit > limit_max {
                Err(RequestError {
                    code: RequestErrorCode::BadRequest,
                    message: format!("limit must be 1 to {limit_max} (control.history_limit_max)"),
                })
            } else {
                operations::history(state, room_id, before_seq, after_seq, limit)
                    .await
                    .map(|messages| ResponseBody::History { messages })
            }
        }
        RequestBody::FetchRevocations => operations::revocations(state)
            .await
            .map(|revocations| ResponseBody::Revocations { revocations }),
        RequestBody::AuthorizeLiveSource {
            stream_name,
            credential,
        } => operations::authorize_live_source(state, &stream_name, credential)
            .await
            .map(ResponseBody::LiveSource),
        RequestBody::AppendRecording {
            stream_id,
            recording_id,
            chunk_idx,
            data,
            last,
        } => operations::append_recording(state, stream_id, recording_id, chunk_idx, data, last)
            .await
            .map(|bytes_total| ResponseBody::RecordingStored { bytes_total }),
        RequestBody::LookupTrack { track_id } => operations::lookup_track(state, track_id)
            .await
            .map(ResponseBody::Track),
        RequestBody::RecordPlays { plays } => operations::record_plays(state, &plays)
            .await
            .map(|()| ResponseBody::PlaysRecorded),
        RequestBody::ReserveSeqs { room_id, count } => {
            operations::reserve_seqs(state, room_id, count)
                .await
                .map(|(first, last)| ResponseBody::SeqsReserved { first, last })
        }
        RequestBody::ReleaseSeqs {
            room_id,
            reserved,
            head,
        } => operations::release_seqs(state, room_id, reserved, head)
            .await
            .map(|()| ResponseBody::SeqsReleased),
        RequestBody::PersistBatch { .. } => unreachable!("batches go to the persist worker"),
    };
    match outcome {
        Ok(body) => ResponseResult::Ok(body),
        Err(error) => ResponseResult::Err(error),
    }
}

/// Encodes and queues a response; a response over `control.frame_bytes_max`
/// is replaced by an error response saying so.
async fn send_response(
    outbound: &mpsc::Sender<Bytes>,
    request_id: u64,
    result: ResponseResult,
    context: &ServerContext,
) {
    let frame_bytes_max = context.state.config.control.frame_bytes_max;
    let frame = ServerFrame::Response(Response { request_id, result });
    let mut encoder = FrameEncoder::new(frame_bytes_max);
    let bytes = match encoder.encode_to_bytes(&frame) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(request_id, %error, "response cannot be sent");
            let refusal = ServerFrame::Response(Response {
                request_id,
                result: ResponseResult::Err(RequestError {
                    code: RequestErrorCode::BadRequest,
                    message: format!("the answer does not fit in one frame: {error}; ask for less"),
                }),
            });
            match encoder.encode_to_bytes(&refusal) {
                Ok(bytes) => bytes,
                Err(_) => return,
            }
        }
    };
    let _ = outbound.send(bytes).await;
}

async fn send_frame(
    outbound: &mpsc::Sender<Bytes>,
    frame: &ServerFrame,
    frame_bytes_max: usize,
) -> bool {
    match FrameEncoder::new(frame_bytes_max).encode_to_bytes(frame) {
        Ok(bytes) => outbound.send(bytes).await.is_ok(),
        Err(error) => {
            tracing::error!(%error, "frame cannot be encoded");
            false
        }
    }
}

async fn close_after_read_end(
    context: &ServerContext,
    outbound: mpsc::Sender<Bytes>,
    writer_task: tokio::task::JoinHandle<()>,
    end: ReadEnd,
    peer: &Peer,
) {
    match end {
        ReadEnd::Frame(error) => {
            close_with_error(context, outbound, writer_task, error.to_error_frame(), peer).await
        }
        ReadEnd::Closed | ReadEnd::Io(_) => {
            drop(outbound);
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer_task).await;
        }
    }
}

/// Sends `error` to a connection that never completed its handshake, then
/// closes it.
async fn close_with_error(
    context: &ServerContext,
    outbound: mpsc::Sender<Bytes>,
    writer_task: tokio::task::JoinHandle<()>,
    error: ErrorFrame,
    peer: &Peer,
) {
    context
        .state
        .nodes
        .frame_errors_total
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(transport = peer.transport, peer = %peer.address, code = error.code.name(), message = %error.message, "refusing control connection");
    close_with_frame(outbound, writer_task, error).await;
}

async fn close_with_frame(
    outbound: mpsc::Sender<Bytes>,
    writer_task: tokio::task::JoinHandle<()>,
    error: ErrorFrame,
) {
    // An error frame is small; the bound only guards against a bug.
    let _ = send_frame(&outbound, &ServerFrame::Error(error), usize::from(u16::MAX)).await;
    drop(outbound);
    if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer_task)
        .await
        .is_err()
    {
        tracing::warn!("control connection did not take its last frame in time");
    }
}

/// Writes queued frames until every sender is gone, then shuts the socket's
/// write side.
async fn write_frames<W: AsyncWrite>(writer: W, mut frames: mpsc::Receiver<Bytes>) {
    let mut writer = std::pin::pin!(writer);
    let mut batch = BytesMut::new();
    while let Some(frame) = frames.recv().await {
        batch.extend_from_slice(&frame);
        while batch.len() < WRITE_BATCH_BYTES_MAX {
            match frames.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if writer.write_all(&batch).await.is_err() {
            return;
        }
        batch.clear();
    }
    let _ = writer.shutdown().await;
}
