//! A WebSocket session after the upgrade: one task reads and decodes, one
//! writer task drains the bounded send queue with vectored writes, and a
//! keep-alive task pings idle peers and closes dead ones.
//!
//! Closing follows RFC 6455 §7: a peer's close is echoed and then the server
//! closes TCP; a server-initiated close (shutdown 1001, ping timeout 4009)
//! waits for the peer's close frame at most `CLOSE_HANDSHAKE_TIMEOUT`, after
//! which the socket is shut down. A protocol error closes at once after the
//! close frame is written.

use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::io::Splitable;
use monoio::net::TcpStream;
use veza_codec::websocket::{
    close_payload, encode_frame_header, DecoderLimits, Message, MessageDecoder, Opcode,
    ProtocolError, Role,
};
use veza_proto::close_code;

use crate::http_connection::{read_into, ReadOutcome};
use crate::local_event::LocalNotify;
use crate::metrics::{LimitKind, ShardMetrics};
use crate::send_queue::{
    run_socket_writer, wait_writer_stopped, Outbound, OutboundState, PushError,
};
use crate::shard::{ConnectionHandle, Shard};

/// How long a closing handshake may take before the socket is shut down.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Queues a close frame with `code` as the connection's last frame. A send
/// queue overflow drops what was queued so the close is not stuck behind it.
pub fn close_outbound(outbound: &Outbound, code: u16, reason: &str) -> bool {
    let payload = close_payload(code, reason);
    let mut header = BytesMut::with_capacity(4);
    encode_frame_header(&mut header, true, Opcode::Close, payload.len(), None);
    outbound.push_final(
        &[header.freeze(), payload],
        code == close_code::SEND_QUEUE_OVERFLOW,
    )
}

/// How the read loop ended.
#[derive(PartialEq, Eq)]
enum SessionEnd {
    /// The peer closed the socket, the read failed, or the peer's close frame
    /// arrived: nothing more is coming.
    PeerDone,
    /// The server closed (protocol error, overflow) while the peer may still send.
    ServerClosed,
}

/// Whether the read loop goes on.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// What a WebSocket endpoint does with messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebSocketKind {
    /// `/v1/echo`: every data message comes back.
    Echo,
    /// `/v1/chat`: protocol v1 (`proto/PROTOCOL.md`).
    Chat,
}

struct Session {
    shard: Rc<Shard>,
    /// `Some` on `/v1/chat`.
    chat: Option<crate::chat::connection::ChatSession>,
    outbound: Rc<Outbound>,
    decoder: MessageDecoder,
    /// Frame headers are cut from this buffer so they share allocations.
    headers: BytesMut,
    close_received: bool,
}

/// Runs a session on an upgraded connection. `buffer` holds bytes that
/// arrived after the upgrade request.
pub async fn run(
    shard: Rc<Shard>,
    stream: TcpStream,
    buffer: BytesMut,
    key: usize,
    kind: WebSocketKind,
) {
    let fd = stream.as_raw_fd();
    let limits = &shard.process.config.limits;
    let outbound = Outbound::new(limits.send_queue_bytes_max);
    let handle = Rc::new(WebSocketHandle {
        outbound: outbound.clone(),
        last_received: Cell::new(quanta::Instant::now()),
        ping_sent: Cell::new(None),
        auth_deadline: Cell::new(None),
    });
    shard.update_connection(key, ConnectionHandle::WebSocket(handle.clone()));
    if shard.shutdown.is_set() {
        close_outbound(&outbound, close_code::GOING_AWAY, "server shutting down");
    }
    let (mut reader, writer) = stream.into_split();
    let session_ended = Rc::new(LocalNotify::default());
    let writer_future = write_until_closed(
        shard.clone(),
        writer,
        outbound.clone(),
        session_ended.clone(),
        fd,
    );
    let writer_task = monoio::spawn(writer_future);

    let chat = (kind == WebSocketKind::Chat)
        .then(|| crate::chat::connection::ChatSession::new(shard.clone(), handle.clone()));
    let mut session = Session {
        chat,
        decoder: MessageDecoder::new(
            Role::Server,
            DecoderLimits {
                frame_payload_bytes_max: limits.websocket_frame_bytes_max,
                message_bytes_max: limits.websocket_message_bytes_max,
            },
        ),
        shard: shard.clone(),
        outbound: outbound.clone(),
        headers: BytesMut::new(),
        close_received: false,
    };
    let ended = session
        .read_loop(&mut reader, buffer, &handle.last_received)
        .await;
    if let Some(chat) = session.chat.as_mut() {
        chat.on_end();
    }

    session_ended.notify();
    outbound.finish();
    // The end of a session is boxed: its futures then take no room in the
    // state this (long-lived) future keeps for every idle connection.
    let writer_drained = Box::pin(wait_writer_stopped(&outbound, CLOSE_HANDSHAKE_TIMEOUT)).await;
    if !writer_drained {
        // The peer stopped reading: the writer is stuck in a write. The write
        // half is still owned by the writer task, so the fd is still ours.
        // SAFETY: shutting down an open socket we own.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    } else if ended == SessionEnd::ServerClosed {
        // The peer may still be sending (say the rest of an oversize frame):
        // let it read our close frame before the socket goes.
        Box::pin(crate::http_connection::linger_close(
            &mut reader,
            fd,
            &shard,
        ))
        .await;
    }
    let _writer = writer_task.await;
    drop(reader);
}

/// The writer task: drains the queue; once a final close frame is out, waits
/// for the session to end and shuts the socket down if the peer never answers.
async fn write_until_closed(
    shard: Rc<Shard>,
    writer: monoio::io::OwnedWriteHalf<TcpStream>,
    outbound: Rc<Outbound>,
    session_ended: Rc<LocalNotify>,
    fd: RawFd,
) -> monoio::io::OwnedWriteHalf<TcpStream> {
    let metrics = shard.metrics.clone();
    let (writer, _exit) = run_socket_writer(writer, fd, outbound, move |written| {
        ShardMetrics::add(&metrics.bytes_sent_total, written as u64);
    })
    .await;
    if monoio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, session_ended.wait())
        .await
        .is_err()
    {
        // SAFETY: `writer` keeps the socket open while we shut it down.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
    writer
}

/// A WebSocket as the shard's registry holds it: its queue and the
/// keep-alive and authentication deadlines the shard's sweeper
/// ([`run_keep_alive_sweeper`]) checks.
pub struct WebSocketHandle {
    /// The connection's send queue.
    pub outbound: Rc<Outbound>,
    /// When the peer last sent anything.
    last_received: Cell<quanta::Instant>,
    /// When the unanswered ping went out, if one is out.
    ping_sent: Cell<Option<quanta::Instant>>,
    /// A chat connection not authenticated yet is closed with 4004 at this time.
    pub auth_deadline: Cell<Option<quanta::Instant>>,
}

/// One task per shard keeps every WebSocket alive, instead of a task and a
/// timer per connection (an idle connection's memory is the point): every
/// sweep pings peers idle for `websocket_ping_interval_ms` and closes with
/// 4009 those that sent nothing within `websocket_pong_timeout_ms` of a ping.
pub async fn run_keep_alive_sweeper(shard: Rc<Shard>) {
    let limits = &shard.process.config.limits;
    let ping_interval = Duration::from_millis(limits.websocket_ping_interval_ms);
    let pong_timeout = Duration::from_millis(limits.websocket_pong_timeout_ms);
    // A sweep every quarter of the shorter period: a ping or a close is
    // late by at most that.
    let auth_timeout = Duration::from_millis(shard.process.config.chat.auth_timeout_ms);
    let sweep = (ping_interval.min(pong_timeout).min(auth_timeout) / 4)
        .clamp(Duration::from_millis(5), Duration::from_secs(1));
    let ping = {
        let mut frame = BytesMut::with_capacity(2);
        encode_frame_header(&mut frame, true, Opcode::Ping, 0, None);
        frame.freeze()
    };
    loop {
        monoio::time::sleep(sweep).await;
        let now = quanta::Instant::now();
        shard.for_each_websocket(|handle| {
            if handle.outbound.state() != OutboundState::Open {
                return;
            }
            if handle
                .auth_deadline
                .get()
                .is_some_and(|deadline| now >= deadline)
            {
                handle.auth_deadline.set(None);
                shard.metrics.limit_hit(LimitKind::ChatAuthTimeout);
                close_outbound(
                    &handle.outbound,
                    close_code::AUTH_TIMEOUT,
                    "authenticate within the auth timeout",
                );
                return;
            }
            match handle.ping_sent.get() {
                Some(sent) if handle.last_received.get() >= sent => {
                    handle.ping_sent.set(None);
                }
                Some(sent) => {
                    if now.saturating_duration_since(sent) >= pong_timeout {
                        shard.metrics.limit_hit(LimitKind::PongTimeout);
                        close_outbound(&handle.outbound, close_code::PING_TIMEOUT, "ping timeout");
                    }
                }
                None => {
                    if now.saturating_duration_since(handle.last_received.get()) >= ping_interval {
                        handle.ping_sent.set(Some(now));
                        if handle.outbound.push(std::slice::from_ref(&ping)).is_ok() {
                            ShardMetrics::add(&shard.metrics.websocket_frames_sent_total, 1);
                        }
                    }
                }
            }
        });
    }
}

impl Session {
    async fn read_loop(
        &mut self,
        reader: &mut monoio::io::OwnedReadHalf<TcpStream>,
        mut buffer: BytesMut,
        last_received: &Cell<quanta::Instant>,
    ) -> SessionEnd {
        let limits = &self.shard.process.config.limits;
        let read_max = limits.read_buffer_bytes;
        let read_min = limits.websocket_idle_read_bytes.min(read_max);
        // Adaptive reads: a read that fills what it was offered doubles the
        // next one (up to `read_buffer_bytes`), one that uses under a quarter
        // halves it (down to `websocket_idle_read_bytes`). An empty buffer
        // much larger than that is released, so an idle connection holds a
        // small buffer, not the largest burst it ever saw.
        let mut read_size = read_min;
        loop {
            if self.decode_buffered(&mut buffer) == Flow::Stop {
                return if self.close_received {
                    SessionEnd::PeerDone
                } else {
                    SessionEnd::ServerClosed
                };
            }
            if buffer.is_empty() && buffer.capacity() > read_size * 2 {
                buffer = BytesMut::new();
            }
            let reserve = self.decoder.bytes_needed_hint(&buffer).max(read_size);
            let before = buffer.len();
            match read_into(reader, &mut buffer, reserve, None, &self.shard.metrics).await {
                ReadOutcome::Data => last_received.set(quanta::Instant::now()),
                _ => return SessionEnd::PeerDone,
            }
            let offered = buffer.capacity() - before;
            let read = buffer.len() - before;
            if read >= offered {
                read_size = (read_size * 2).min(read_max);
            } else if read < offered / 4 {
                read_size = (read_size / 2).max(read_min);
            }
        }
    }

    fn decode_buffered(&mut self, buffer: &mut BytesMut) -> Flow {
        loop {
            match self.decoder.decode(buffer) {
                Ok(Some(message)) => {
                    ShardMetrics::add(&self.shard.metrics.websocket_frames_received_total, 1);
                    if self.on_message(message) == Flow::Stop {
                        return Flow::Stop;
                    }
                }
                Ok(None) => return Flow::Continue,
                Err(error) => {
                    self.on_protocol_error(&error);
                    return Flow::Stop;
                }
            }
        }
    }

    fn on_protocol_error(&mut self, error: &ProtocolError) {
        match error {
            ProtocolError::FrameTooLarge { .. } => {
                self.shard.metrics.limit_hit(LimitKind::WebsocketFrameBytes)
            }
            ProtocolError::MessageTooLarge { .. } => self
                .shard
                .metrics
                .limit_hit(LimitKind::WebsocketMessageBytes),
            _ => {}
        }
        tracing::debug!(shard = self.shard.idx, %error, "websocket protocol error");
        close_outbound(&self.outbound, error.close_code(), error.reason());
    }

    fn on_message(&mut self, message: Message) -> Flow {
        match message {
            Message::Text(_) if self.chat.is_some() => {
                close_outbound(
                    &self.outbound,
                    close_code::UNSUPPORTED_DATA,
                    "veza.v1 takes binary frames only",
                );
                Flow::Stop
            }
            Message::Binary(payload) if self.chat.is_some() => {
                if self.outbound.state() != OutboundState::Open {
                    return Flow::Continue;
                }
                let chat = self.chat.as_mut().expect("checked");
                match chat.on_frame(&payload) {
                    crate::chat::connection::ChatFlow::Continue => Flow::Continue,
                    crate::chat::connection::ChatFlow::Closed => Flow::Stop,
                }
            }
            Message::Text(payload) => self.echo(Opcode::Text, payload),
            Message::Binary(payload) => self.echo(Opcode::Binary, payload),
            Message::Ping(payload) => self.send(Opcode::Pong, payload),
            Message::Pong(_) => Flow::Continue,
            Message::Close { code, reason } => {
                self.close_received = true;
                // Echo the peer's code (RFC 6455 §5.5.1); an empty close is
                // answered with an empty close.
                match code {
                    Some(code) => {
                        let reason = std::str::from_utf8(&reason).unwrap_or("");
                        close_outbound(&self.outbound, code, reason);
                    }
                    None => {
                        let mut header = BytesMut::with_capacity(2);
                        encode_frame_header(&mut header, true, Opcode::Close, 0, None);
                        self.outbound.push_final(&[header.freeze()], false);
                    }
                }
                Flow::Stop
            }
        }
    }

    /// The `/v1/echo` behaviour: the same payload back, same type.
    fn echo(&mut self, opcode: Opcode, payload: Bytes) -> Flow {
        if self.outbound.state() != OutboundState::Open {
            // A close is under way: data is discarded until the peer's close.
            return Flow::Continue;
        }
        self.send(opcode, payload)
    }

    fn send(&mut self, opcode: Opcode, payload: Bytes) -> Flow {
        encode_frame_header(&mut self.headers, true, opcode, payload.len(), None);
        let header = self.headers.split().freeze();
        if self.headers.capacity() < 16 {
            self.headers.reserve(1024);
        }
        match self.outbound.push(&[header, payload]) {
            Ok(()) => {
                ShardMetrics::add(&self.shard.metrics.websocket_frames_sent_total, 1);
                Flow::Continue
            }
            Err(PushError::Closed) => Flow::Continue,
            Err(PushError::Overflow) => {
                self.shard.metrics.limit_hit(LimitKind::SendQueueBytes);
                close_outbound(
                    &self.outbound,
                    close_code::SEND_QUEUE_OVERFLOW,
                    "send queue overflow: read faster, then resume",
                );
                Flow::Stop
            }
        }
    }
}
