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
use crate::send_queue::{run_writer, wait_writer_stopped, Outbound, OutboundState, PushError};
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
    shard.update_connection(key, ConnectionHandle::WebSocket(outbound.clone()));
    if shard.shutdown.is_set() {
        close_outbound(&outbound, close_code::GOING_AWAY, "server shutting down");
    }
    let (mut reader, writer) = stream.into_split();
    let session_ended = Rc::new(LocalNotify::default());
    let writer_task = monoio::spawn(write_until_closed(
        shard.clone(),
        writer,
        outbound.clone(),
        session_ended.clone(),
        fd,
    ));
    let last_received = Rc::new(Cell::new(quanta::Instant::now()));
    monoio::spawn(keep_alive(
        shard.clone(),
        outbound.clone(),
        last_received.clone(),
    ));

    let chat = (kind == WebSocketKind::Chat)
        .then(|| crate::chat::connection::ChatSession::new(shard.clone(), outbound.clone()));
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
        headers: BytesMut::with_capacity(1024),
        close_received: false,
    };
    let ended = session.read_loop(&mut reader, buffer, &last_received).await;
    if let Some(chat) = session.chat.as_mut() {
        chat.on_end();
    }

    session_ended.notify();
    outbound.finish();
    let writer_drained = wait_writer_stopped(&outbound, CLOSE_HANDSHAKE_TIMEOUT).await;
    if !writer_drained {
        // The peer stopped reading: the writer is stuck in a write. The write
        // half is still owned by the writer task, so the fd is still ours.
        // SAFETY: shutting down an open socket we own.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    } else if ended == SessionEnd::ServerClosed {
        // The peer may still be sending (say the rest of an oversize frame):
        // let it read our close frame before the socket goes.
        crate::http_connection::linger_close(&mut reader, fd, &shard).await;
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
    let (writer, _exit) = run_writer(writer, outbound, move |written| {
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

/// Pings a peer idle for `websocket_ping_interval_ms`; closes it with 4009 if
/// nothing arrives within `websocket_pong_timeout_ms` after the ping.
async fn keep_alive(
    shard: Rc<Shard>,
    outbound: Rc<Outbound>,
    last_received: Rc<Cell<quanta::Instant>>,
) {
    let limits = &shard.process.config.limits;
    let ping_interval = Duration::from_millis(limits.websocket_ping_interval_ms);
    let pong_timeout = Duration::from_millis(limits.websocket_pong_timeout_ms);
    let ping = {
        let mut frame = BytesMut::with_capacity(2);
        encode_frame_header(&mut frame, true, Opcode::Ping, 0, None);
        frame.freeze()
    };
    loop {
        let idle = quanta::Instant::now().saturating_duration_since(last_received.get());
        if idle < ping_interval {
            monoio::time::sleep(ping_interval - idle).await;
        } else {
            let ping_sent = quanta::Instant::now();
            if outbound.push(std::slice::from_ref(&ping)).is_ok() {
                ShardMetrics::add(&shard.metrics.websocket_frames_sent_total, 1);
            }
            monoio::time::sleep(pong_timeout).await;
            if outbound.state() == OutboundState::Open && last_received.get() < ping_sent {
                shard.metrics.limit_hit(LimitKind::PongTimeout);
                close_outbound(&outbound, close_code::PING_TIMEOUT, "ping timeout");
            }
        }
        if outbound.state() != OutboundState::Open {
            return;
        }
    }
}

impl Session {
    async fn read_loop(
        &mut self,
        reader: &mut monoio::io::OwnedReadHalf<TcpStream>,
        mut buffer: BytesMut,
        last_received: &Cell<quanta::Instant>,
    ) -> SessionEnd {
        let read_buffer_bytes = self.shard.process.config.limits.read_buffer_bytes;
        loop {
            if self.decode_buffered(&mut buffer) == Flow::Stop {
                return if self.close_received {
                    SessionEnd::PeerDone
                } else {
                    SessionEnd::ServerClosed
                };
            }
            let reserve = self
                .decoder
                .bytes_needed_hint(&buffer)
                .max(read_buffer_bytes / 4);
            match read_into(reader, &mut buffer, reserve, None, &self.shard.metrics).await {
                ReadOutcome::Data => last_received.set(quanta::Instant::now()),
                _ => return SessionEnd::PeerDone,
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
