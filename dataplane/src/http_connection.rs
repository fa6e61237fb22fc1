//! The HTTP/1.1 driver of one connection: reads into a buffer, lets the sans-IO
//! codec parse, answers every pipelined request buffered so far with one write,
//! and hands the socket to the WebSocket session on an upgrade.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use veza_codec::http1::{
    parse_request_head, write_error_response, write_response_head, BodyChunk, BodyDecoder,
    BodyFraming, RequestError, RequestLimits, ResponseHead,
};

use crate::metrics::{LimitKind, ShardMetrics};
use crate::routes::{route, Response, Routed};
use crate::shard::Shard;

/// Answers to pipelined requests kept before they are written: past it the
/// pending answers are flushed before the next request is parsed.
const PIPELINED_OUTPUT_BYTES_MAX: usize = 64 * 1024;

/// How a read ended.
pub enum ReadOutcome {
    /// Bytes arrived.
    Data,
    /// The peer closed its side (or shutdown was requested).
    EndOfStream,
    /// The deadline passed; the buffer was given up with the read.
    TimedOut,
    /// The socket failed.
    Failed,
}

/// Reads into the spare capacity of `buffer` (after reserving `reserve_bytes`),
/// waiting at most `timeout`. On a timeout the buffer goes with the cancelled
/// read, so callers only time out reads after which they close.
pub async fn read_into<R: AsyncReadRent>(
    reader: &mut R,
    buffer: &mut BytesMut,
    reserve_bytes: usize,
    timeout: Option<Duration>,
    metrics: &ShardMetrics,
) -> ReadOutcome {
    buffer.reserve(reserve_bytes);
    let owned = std::mem::take(buffer);
    let (start, end) = (owned.len(), owned.capacity());
    let read = reader.read(owned.slice_mut(start..end));
    let (result, slice) = match timeout {
        // Boxed: a timer is large, and untimed readers (WebSocket sessions,
        // one per idle connection) should not carry its room in their state.
        Some(timeout) => match Box::pin(monoio::time::timeout(timeout, read)).await {
            Ok(done) => done,
            Err(_) => return ReadOutcome::TimedOut,
        },
        None => read.await,
    };
    *buffer = slice.into_inner();
    match result {
        Ok(0) => ReadOutcome::EndOfStream,
        Ok(bytes_read) => {
            ShardMetrics::add(&metrics.bytes_received_total, bytes_read as u64);
            ReadOutcome::Data
        }
        Err(_) => ReadOutcome::Failed,
    }
}

/// Writes all of `out` and clears it. Returns false if the socket failed.
async fn flush(stream: &mut TcpStream, out: &mut BytesMut, metrics: &ShardMetrics) -> bool {
    if out.is_empty() {
        return true;
    }
    let (result, returned) = stream.write_all(std::mem::take(out)).await;
    *out = returned;
    let written = out.len();
    out.clear();
    if result.is_ok() {
        ShardMetrics::add(&metrics.bytes_sent_total, written as u64);
    }
    result.is_ok()
}

fn limit_of(error: &RequestError) -> Option<LimitKind> {
    match error {
        RequestError::HeadTooLarge { .. } => Some(LimitKind::HttpHeadBytes),
        RequestError::TooManyHeaders { .. } => Some(LimitKind::HttpHeaderCount),
        RequestError::TargetTooLong { .. } => Some(LimitKind::HttpTargetBytes),
        RequestError::BodyTooLarge { .. } => Some(LimitKind::HttpBodyBytes),
        _ => None,
    }
}

/// State of one HTTP connection.
struct HttpConnection {
    shard: Rc<Shard>,
    stream: TcpStream,
    buffer: BytesMut,
    out: BytesMut,
    limits: RequestLimits,
    /// When the first byte of the request head being read arrived.
    head_started: Option<quanta::Instant>,
    /// The client's address.
    peer: SocketAddr,
    /// Whether the socket is in non-blocking mode: the epoll driver's
    /// always are; on io_uring a zero-copy track body switches it.
    non_blocking: bool,
}

/// What the HTTP phase ended with.
enum HttpOutcome {
    /// The peer closed, the socket failed or a deadline passed.
    Ended,
    /// The server answered and closes: linger so the peer reads the answer.
    ClosedByServer,
    /// Switch to WebSocket.
    Upgrade(crate::websocket_session::WebSocketKind),
    /// A live source or listener takes the connection over.
    Live(LiveHandover),
}

/// A request on `/v1/live/{stream}` that takes the connection over.
enum LiveHandover {
    /// `PUT` or `SOURCE`: a broadcaster.
    Source(Box<veza_codec::http1::RequestHead>, std::sync::Arc<str>),
    /// `GET` or `HEAD`: a listener.
    Listen(crate::live::listener::ListenRequest),
}

/// Whether `head` is a live stream's source or listener.
fn live_handover(head: &veza_codec::http1::RequestHead) -> Option<LiveHandover> {
    let name = head.path().strip_prefix("/v1/live/")?;
    if name.contains('/') {
        return None;
    }
    let stream: std::sync::Arc<str> = name.into();
    match head.method.as_str() {
        "PUT" | "SOURCE" => Some(LiveHandover::Source(Box::new(head.clone()), stream)),
        "GET" | "HEAD" => {
            let bitrate_kbps = head.query().and_then(|query| {
                query.split('&').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    (key == "br").then(|| value.parse().ok()).flatten()
                })
            });
            Some(LiveHandover::Listen(crate::live::listener::ListenRequest {
                stream,
                bitrate_kbps,
                is_head: head.is_head(),
            }))
        }
        _ => None,
    }
}

/// Serves one accepted connection until it closes.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr, key: usize) {
    let config_limits = &shard.process.config.limits;
    let limits = RequestLimits {
        head_bytes_max: config_limits.http_head_bytes_max,
        header_count_max: config_limits.http_header_count_max,
        target_bytes_max: config_limits.http_target_bytes_max,
        body_bytes_max: config_limits.http_body_bytes_max,
    };
    let mut connection = HttpConnection {
        buffer: BytesMut::with_capacity(config_limits.read_buffer_bytes),
        out: BytesMut::with_capacity(4096),
        shard: shard.clone(),
        stream,
        limits,
        head_started: None,
        peer,
        non_blocking: shard.driver == crate::metrics::DriverKind::Legacy,
    };
    let outcome = connection.run().await;
    if matches!(outcome, HttpOutcome::Upgrade(_) | HttpOutcome::Live(_))
        && connection.non_blocking
        && shard.driver == crate::metrics::DriverKind::IoUring
    {
        // The io_uring writers of WebSocket and live use `Writev`, which a
        // non-blocking socket could answer EAGAIN: switch it back.
        let fd = connection.stream.as_raw_fd();
        if let Err(error) = crate::tracks::zero_copy::set_non_blocking(fd, false) {
            tracing::warn!(shard = shard.idx, %error, "the socket cannot be made blocking again; closing it");
            return;
        }
    }
    match outcome {
        HttpOutcome::Upgrade(kind) => {
            // Only the socket and unread bytes go on: the response buffer is
            // freed now, not when this (long-lived) future ends.
            let HttpConnection {
                stream,
                buffer,
                out,
                ..
            } = connection;
            drop(out);
            crate::websocket_session::run(shard.clone(), stream, buffer, key, kind).await;
        }
        HttpOutcome::Live(LiveHandover::Source(head, name)) => {
            let HttpConnection {
                stream,
                buffer,
                out,
                ..
            } = connection;
            drop(out);
            crate::live::source::serve(shard.clone(), stream, buffer, *head, name).await;
        }
        HttpOutcome::Live(LiveHandover::Listen(request)) => {
            // A listener only writes: its read and response buffers are
            // freed now, not when this (long-lived) future ends.
            let HttpConnection {
                stream,
                buffer,
                out,
                ..
            } = connection;
            drop((buffer, out));
            crate::live::listener::serve(shard.clone(), stream, key, request).await;
        }
        HttpOutcome::ClosedByServer => {
            let fd = connection.stream.as_raw_fd();
            linger_close(&mut connection.stream, fd, &shard).await;
        }
        HttpOutcome::Ended => {}
    }
    shard.deregister_connection(key);
}

impl HttpConnection {
    async fn run(&mut self) -> HttpOutcome {
        // The first request gets the head deadline from the moment of accept,
        // so a connection that never sends a byte is closed as early as a
        // slow one (nginx's client_header_timeout).
        self.head_started = Some(quanta::Instant::now());
        loop {
            let keep_reading = match self.answer_buffered_requests().await {
                Ok(keep_reading) => keep_reading,
                Err(upgrade) => return upgrade,
            };
            if !flush(&mut self.stream, &mut self.out, &self.shard.metrics).await {
                return HttpOutcome::Ended;
            }
            if !keep_reading {
                return HttpOutcome::ClosedByServer;
            }
            if self.shard.shutdown.is_set() && self.buffer.is_empty() {
                return HttpOutcome::Ended;
            }
            if !self.read_more().await {
                return HttpOutcome::Ended;
            }
        }
    }

    /// Reads with the idle deadline between requests and the head deadline
    /// within one. Returns false when the connection should close.
    async fn read_more(&mut self) -> bool {
        let limits = &self.shard.process.config.limits;
        let timeout = match self.head_started {
            None => Duration::from_millis(limits.idle_timeout_ms),
            Some(started) => Duration::from_millis(limits.header_read_timeout_ms)
                .saturating_sub(quanta::Instant::now().saturating_duration_since(started)),
        };
        let reserve = limits.read_buffer_bytes.min(4096);
        let outcome = read_into(
            &mut self.stream,
            &mut self.buffer,
            reserve,
            Some(timeout),
            &self.shard.metrics,
        )
        .await;
        match outcome {
            ReadOutcome::Data => {
                if self.head_started.is_none() {
                    self.head_started = Some(quanta::Instant::now());
                }
                true
            }
            ReadOutcome::TimedOut if self.head_started.is_some() => {
                self.shard.metrics.limit_hit(LimitKind::HeaderReadTimeout);
                let detail = format!(
                    "the request head was not complete within {} ms",
                    limits.header_read_timeout_ms
                );
                self.write_error(408, "header_read_timeout", &detail, true);
                let _ = flush(&mut self.stream, &mut self.out, &self.shard.metrics).await;
                false
            }
            ReadOutcome::TimedOut => {
                self.shard.metrics.limit_hit(LimitKind::IdleTimeout);
                false
            }
            ReadOutcome::EndOfStream | ReadOutcome::Failed => false,
        }
    }

    fn write_error(&mut self, status: u16, name: &str, detail: &str, include_body: bool) {
        let date = self.shard.date();
        write_error_response(
            status,
            name,
            detail,
            false,
            include_body,
            &[],
            date.as_str(),
            &mut self.out,
        );
    }

    /// Answers every complete request in the buffer. `Ok(true)`: keep reading;
    /// `Ok(false)`: close after flushing; `Err(Upgrade)`: hand over to WebSocket.
    async fn answer_buffered_requests(&mut self) -> Result<bool, HttpOutcome> {
        loop {
            let (head, head_bytes) = match parse_request_head(&self.buffer, &self.limits) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(true),
                Err(error) => {
                    if let Some(limit) = limit_of(&error) {
                        self.shard.metrics.limit_hit(limit);
                    }
                    self.write_error(error.status(), error.error_name(), &error.detail(), true);
                    return Ok(false);
                }
            };
            self.buffer.advance(head_bytes);
            ShardMetrics::add(&self.shard.metrics.http_requests_total, 1);
            if let Some(handover) = live_handover(&head) {
                // Answers queued for earlier pipelined requests go first.
                if !flush(&mut self.stream, &mut self.out, &self.shard.metrics).await {
                    return Err(HttpOutcome::Ended);
                }
                return Err(HttpOutcome::Live(handover));
            }
            let body = match self.read_body(head.body).await {
                Ok(body) => body,
                Err(None) => return Ok(false),
                Err(Some(error)) => {
                    if let Some(limit) = limit_of(&error) {
                        self.shard.metrics.limit_hit(limit);
                    }
                    self.write_error(
                        error.status(),
                        error.error_name(),
                        &error.detail(),
                        !head.is_head(),
                    );
                    return Ok(false);
                }
            };
            self.head_started = (!self.buffer.is_empty()).then(quanta::Instant::now);
            let keep_alive = head.keep_alive && !self.shard.shutdown.is_set();
            match route(&self.shard, &head, body, self.peer.ip()).await {
                Routed::Response(mut response) => {
                    let keep_alive = keep_alive && !response.close_connection;
                    if keep_alive && head.version_minor == 0 {
                        // HTTP/1.0 closes by default; say that this one stays open.
                        response
                            .extra_headers
                            .push(("Connection", "keep-alive".into()));
                    }
                    self.write_response(&response, keep_alive, head.is_head());
                    if !keep_alive {
                        return Ok(false);
                    }
                    // Pipelined requests are answered with one write, but a
                    // buffer full of small requests for large answers must
                    // not make the server hold megabytes for one client.
                    if self.out.len() >= PIPELINED_OUTPUT_BYTES_MAX
                        && !flush(&mut self.stream, &mut self.out, &self.shard.metrics).await
                    {
                        return Err(HttpOutcome::Ended);
                    }
                }
                Routed::File(file) => {
                    let sent = crate::tracks::send_file(
                        &self.shard,
                        &mut self.stream,
                        &mut self.non_blocking,
                        &mut self.out,
                        *file,
                        keep_alive,
                        head.version_minor == 0,
                    )
                    .await;
                    if !sent {
                        return Err(HttpOutcome::Ended);
                    }
                    if !keep_alive {
                        return Ok(false);
                    }
                }
                Routed::Upgrade(accepted, kind) => {
                    veza_codec::websocket::handshake::write_switching_protocols(
                        &accepted,
                        &mut self.out,
                    );
                    if !flush(&mut self.stream, &mut self.out, &self.shard.metrics).await {
                        return Ok(false);
                    }
                    return Err(HttpOutcome::Upgrade(kind));
                }
            }
        }
    }

    /// Reads a whole request body (bounded by `limits.http_body_bytes_max`).
    /// `Err(None)`: the connection failed or went idle mid-body.
    async fn read_body(&mut self, framing: BodyFraming) -> Result<Bytes, Option<RequestError>> {
        if framing == BodyFraming::None {
            return Ok(Bytes::new());
        }
        let mut decoder = BodyDecoder::new(framing, self.limits.body_bytes_max);
        let mut body = BytesMut::new();
        let idle = Duration::from_millis(self.shard.process.config.limits.idle_timeout_ms);
        loop {
            match decoder.decode(&mut self.buffer).map_err(Some)? {
                BodyChunk::Data(chunk) => {
                    if body.is_empty() && decoder.is_done() {
                        return Ok(chunk);
                    }
                    body.extend_from_slice(&chunk);
                }
                BodyChunk::End => return Ok(body.freeze()),
                BodyChunk::NeedMore => {
                    let reserve = self.shard.process.config.limits.read_buffer_bytes;
                    match read_into(
                        &mut self.stream,
                        &mut self.buffer,
                        reserve,
                        Some(idle),
                        &self.shard.metrics,
                    )
                    .await
                    {
                        ReadOutcome::Data => {}
                        ReadOutcome::TimedOut => {
                            self.shard.metrics.limit_hit(LimitKind::IdleTimeout);
                            return Err(None);
                        }
                        _ => return Err(None),
                    }
                }
            }
        }
    }

    fn write_response(&mut self, response: &Response, keep_alive: bool, is_head: bool) {
        let extra: Vec<(&str, &str)> = response
            .extra_headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let date = self.shard.date();
        let head = ResponseHead {
            status: response.status,
            content_type: Some(response.content_type),
            // 204 and 304 have no body; a 304 may carry only the full
            // representation's length (RFC 9110 §8.6), so none is sent.
            content_length: (!matches!(response.status, 204 | 304))
                .then_some(response.body.len() as u64),
            keep_alive,
            extra_headers: &extra,
            date: date.as_str(),
        };
        write_response_head(&head, &mut self.out);
        drop(date);
        if !is_head {
            self.out.extend_from_slice(&response.body);
        }
    }
}

/// Closes a connection the server chose to close without resetting it: shuts
/// down the write side (the peer sees the end of our answer), then reads and
/// discards what the peer still sends for at most `limits.lingering_close_ms`
/// and `limits.lingering_close_bytes_max`. Closing with unread bytes in the
/// receive buffer would send a RST, which can destroy our answer before the
/// peer reads it.
pub async fn linger_close<R: AsyncReadRent>(reader: &mut R, fd: std::os::fd::RawFd, shard: &Shard) {
    let limits = &shard.process.config.limits;
    if limits.lingering_close_ms == 0 {
        return;
    }
    // SAFETY: `reader` keeps the socket open; SHUT_WR only sends our FIN.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    let deadline = quanta::Instant::now() + Duration::from_millis(limits.lingering_close_ms);
    let mut discarded_bytes = 0;
    let mut scratch = BytesMut::with_capacity(16 * 1024);
    while discarded_bytes < limits.lingering_close_bytes_max {
        let remaining = deadline.saturating_duration_since(quanta::Instant::now());
        if remaining.is_zero() {
            return;
        }
        scratch.clear();
        match read_into(
            reader,
            &mut scratch,
            16 * 1024,
            Some(remaining),
            &shard.metrics,
        )
        .await
        {
            ReadOutcome::Data => discarded_bytes += scratch.len(),
            _ => return,
        }
    }
}

/// Answers 503 to a connection over `limits.connections_per_shard_max` and
/// closes it, like nginx's `limit_conn`.
pub async fn refuse_over_limit(shard: Rc<Shard>, mut stream: TcpStream) {
    let mut out = BytesMut::with_capacity(256);
    {
        let date = shard.date();
        let detail = format!(
            "this shard already serves {} connections",
            shard.process.config.limits.connections_per_shard_max
        );
        write_error_response(
            503,
            "connection_limit",
            &detail,
            false,
            true,
            &[("Retry-After", "1")],
            date.as_str(),
            &mut out,
        );
    }
    let _ = monoio::time::timeout(
        Duration::from_secs(1),
        flush(&mut stream, &mut out, &shard.metrics),
    )
    .await;
}
