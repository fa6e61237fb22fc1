//! A live source's connection, on the shard that accepted it: Icecast-style
//! `PUT` (or the legacy `SOURCE`) of `/v1/live/{stream}`, authenticated with
//! the stream key (HTTP basic auth, as Icecast sources send it) or the
//! owner's bearer token; the body is forwarded to the stream's owner shard
//! in a bounded window, so a source faster than the owner is slowed by TCP.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use veza_codec::http1::{
    write_error_response, write_response_head, BodyChunk, BodyDecoder, BodyFraming, RequestHead,
    ResponseHead,
};
use veza_proto::control::{LiveCredential, LiveSourceGrant, RequestErrorCode};

use super::{
    owner_of_stream, send, IceHeaders, LiveMessage, SourceFormat, SourceRef, SourceRefusal,
    SourceStart, StreamStats,
};
use crate::control_client::ControlError;
use crate::http_connection::{read_into, ReadOutcome};
use crate::local_event::LocalNotify;
use crate::metrics::LimitKind;
use crate::shard::Shard;

/// How long a source waits for the owner shard to take it.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// A source connection's mailbox on its shard.
#[derive(Default)]
pub struct SourceSlot {
    start_reply: RefCell<Option<Result<Arc<StreamStats>, SourceRefusal>>>,
    started: LocalNotify,
    /// Bytes sent to the owner and not yet processed.
    in_flight_bytes: Cell<usize>,
    processed: LocalNotify,
    failure: RefCell<Option<SourceRefusal>>,
    failed: LocalNotify,
}

/// The owner's answer to a source start.
pub fn on_start_reply(
    shard: &Rc<Shard>,
    source: SourceRef,
    result: Result<Arc<StreamStats>, SourceRefusal>,
) {
    if let Some(slot) = shard.live.sources.borrow().get(&source.id) {
        *slot.start_reply.borrow_mut() = Some(result);
        slot.started.notify();
    }
}

/// The owner processed `bytes` of the source's data.
pub fn on_processed(shard: &Rc<Shard>, source: SourceRef, bytes: usize) {
    if let Some(slot) = shard.live.sources.borrow().get(&source.id) {
        slot.in_flight_bytes
            .set(slot.in_flight_bytes.get().saturating_sub(bytes));
        slot.processed.notify();
    }
}

/// The owner refused the source's data.
pub fn on_failed(shard: &Rc<Shard>, source: SourceRef, refusal: SourceRefusal) {
    if let Some(slot) = shard.live.sources.borrow().get(&source.id) {
        *slot.failure.borrow_mut() = Some(refusal);
        slot.failed.notify();
    }
}

/// A refusal before any byte of the body was taken.
fn refused(status: u16, error: &'static str, detail: impl Into<String>) -> SourceRefusal {
    SourceRefusal {
        status,
        error,
        detail: detail.into(),
    }
}

/// The format a `Content-Type` names.
pub fn source_format(content_type: Option<&[u8]>) -> Result<SourceFormat, SourceRefusal> {
    let unsupported = |detail: String| refused(415, "unsupported_media_type", detail);
    let Some(value) = content_type.and_then(|value| std::str::from_utf8(value).ok()) else {
        return Err(unsupported(
            "send Content-Type audio/ogg (Ogg Opus) or audio/L16;rate=48000;channels=2".into(),
        ));
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "audio/ogg" | "application/ogg" | "audio/opus" => Ok(SourceFormat::OggOpus),
        "audio/l16" => {
            let format = veza_codec::pcm::parse_l16_content_type(value)
                .map_err(|error| unsupported(error.detail()))?;
            if format.sample_rate_hz != 48_000 || !(1..=2).contains(&format.channel_count) {
                return Err(unsupported(format!(
                    "raw PCM must be 48000 Hz with 1 or 2 channels; this is {} Hz with {} channels",
                    format.sample_rate_hz, format.channel_count
                )));
            }
            Ok(SourceFormat::Pcm {
                channel_count: format.channel_count,
            })
        }
        other => Err(unsupported(format!(
            "{other} is not taken: send audio/ogg (Ogg Opus) or audio/L16;rate=48000;channels=2"
        ))),
    }
}

/// The credential in `Authorization`: basic auth's password is the stream
/// key (the user name is ignored, Icecast sources send `source`); a bearer
/// token is verified here and names its user.
fn credential(shard: &Shard, head: &RequestHead) -> Result<LiveCredential, SourceRefusal> {
    let unauthorized = |detail: &str| refused(401, "unauthorized", detail);
    let value = head
        .header("authorization")
        .and_then(|value| std::str::from_utf8(value).ok())
        .ok_or_else(|| {
            unauthorized("send the stream key with HTTP basic auth, or a bearer token")
        })?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| unauthorized("the basic credentials are not valid base64 UTF-8"))?;
        let (_, password) = decoded.split_once(':').unwrap_or(("", &decoded));
        return Ok(LiveCredential::StreamKey(password.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        let claims = shard
            .control
            .verify_access_token(rest.trim())
            .map_err(|error| unauthorized(&format!("the access token is refused: {error}")))?;
        return Ok(LiveCredential::User {
            user_id: claims.uid,
        });
    }
    Err(unauthorized("use the Basic or Bearer scheme"))
}

/// Asks the control plane whether the credential may broadcast on `name`.
pub async fn authorize(
    shard: &Shard,
    name: &str,
    head: &RequestHead,
) -> Result<LiveSourceGrant, SourceRefusal> {
    let credential = credential(shard, head)?;
    match shard.control.authorize_live_source(name, credential).await {
        Ok(grant) => Ok(grant),
        Err(ControlError::Refused {
            code: RequestErrorCode::NotFound,
            ..
        }) => Err(refused(
            404,
            "stream_not_found",
            format!("there is no stream named {name}"),
        )),
        Err(ControlError::Refused {
            code: RequestErrorCode::Denied,
            ..
        }) => Err(refused(
            401,
            "unauthorized",
            "the stream key or token does not grant this stream",
        )),
        Err(error) => Err(refused(
            503,
            "control_plane_unavailable",
            format!("the source cannot be authorised now: {error}"),
        )),
    }
}

fn ice_headers(head: &RequestHead) -> IceHeaders {
    let text = |name: &str| {
        head.header(name)
            .and_then(|value| std::str::from_utf8(value).ok())
            .map(|value| value.trim().chars().take(256).collect::<String>())
    };
    IceHeaders {
        name: text("ice-name"),
        description: text("ice-description"),
        genre: text("ice-genre"),
        public: text("ice-public").map(|value| value == "1" || value.eq_ignore_ascii_case("true")),
        bitrate_kbps: text("ice-bitrate").and_then(|value| value.parse().ok()),
    }
}

/// Serves one source connection until its body ends or it is refused.
pub async fn serve(
    shard: Rc<Shard>,
    mut socket: TcpStream,
    buffer: BytesMut,
    head: RequestHead,
    name: Arc<str>,
) {
    let mut session = SourceSession {
        shard: shard.clone(),
        name,
        final_sent: false,
        bytes_received: 0,
    };
    let outcome = session.run(&mut socket, buffer, &head).await;
    if let Err(refusal) = outcome {
        if !session.final_sent {
            let _ = write_refusal(&shard, &mut socket, &refusal).await;
        }
    } else if !session.final_sent {
        let body = format!(
            "{{\"stream\":{},\"bytes_received\":{}}}",
            serde_json::Value::from(&*session.name),
            session.bytes_received
        );
        let _ = write_final(&shard, &mut socket, 200, body.into_bytes()).await;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    crate::http_connection::linger_close(&mut socket, fd, &shard).await;
}

struct SourceSession {
    shard: Rc<Shard>,
    name: Arc<str>,
    /// A final response (Icecast's immediate `200` to `SOURCE`) went out.
    final_sent: bool,
    bytes_received: u64,
}

impl SourceSession {
    async fn run(
        &mut self,
        socket: &mut TcpStream,
        buffer: BytesMut,
        head: &RequestHead,
    ) -> Result<(), SourceRefusal> {
        let format = source_format(head.header("content-type"))?;
        let grant = authorize(&self.shard, &self.name, head).await?;
        let id = self.shard.live.next_source_id.get();
        self.shard.live.next_source_id.set(id + 1);
        let source = SourceRef {
            shard: self.shard.idx as u16,
            id,
        };
        let slot = Rc::new(SourceSlot::default());
        self.shard
            .live
            .sources
            .borrow_mut()
            .insert(id, slot.clone());
        let result = self
            .broadcast(socket, buffer, head, source, &slot, format, grant)
            .await;
        self.shard.live.sources.borrow_mut().remove(&id);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn broadcast(
        &mut self,
        socket: &mut TcpStream,
        buffer: BytesMut,
        head: &RequestHead,
        source: SourceRef,
        slot: &Rc<SourceSlot>,
        format: SourceFormat,
        grant: LiveSourceGrant,
    ) -> Result<(), SourceRefusal> {
        let owner = owner_of_stream(&self.name, self.shard.process.shard_count());
        send(
            &self.shard,
            owner,
            LiveMessage::SourceStart(Box::new(SourceStart {
                stream: self.name.clone(),
                source,
                grant,
                format,
                ice: ice_headers(head),
            })),
        );
        let started = monoio::time::timeout(START_TIMEOUT, async {
            loop {
                if let Some(result) = slot.start_reply.borrow_mut().take() {
                    return result;
                }
                slot.started.wait().await;
            }
        })
        .await
        .map_err(|_| {
            refused(
                503,
                "owner_unavailable",
                "the stream's shard did not answer",
            )
        })?;
        started?;
        tracing::info!(stream = %self.name, shard = self.shard.idx, "live source connected");
        if head.header_has_token("expect", "100-continue") {
            write_raw(&self.shard, socket, b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        } else if head.method == "SOURCE" {
            // Icecast answers the legacy method at once; old sources wait
            // for it before sending audio.
            write_raw(&self.shard, socket, b"HTTP/1.0 200 OK\r\n\r\n").await?;
            self.final_sent = true;
        }
        let result = self.pump(socket, buffer, head.body, source, slot).await;
        send(
            &self.shard,
            owner,
            LiveMessage::SourceEnd {
                stream: self.name.clone(),
                source,
            },
        );
        result
    }

    /// Forwards the body to the owner until it ends.
    async fn pump(
        &mut self,
        socket: &mut TcpStream,
        mut buffer: BytesMut,
        framing: BodyFraming,
        source: SourceRef,
        slot: &Rc<SourceSlot>,
    ) -> Result<(), SourceRefusal> {
        let config = &self.shard.process.config.live;
        let idle = Duration::from_millis(config.source_idle_timeout_ms);
        let window = config.source_window_bytes;
        // Without a length or chunking the body runs to the end of the
        // connection, as Icecast sources send it.
        let mut decoder =
            (framing != BodyFraming::None).then(|| BodyDecoder::new(framing, u64::MAX));
        let owner = owner_of_stream(&self.name, self.shard.process.shard_count());
        loop {
            if let Some(refusal) = slot.failure.borrow_mut().take() {
                return Err(refusal);
            }
            let chunk = match decoder.as_mut() {
                Some(decoder) => match decoder.decode(&mut buffer) {
                    Ok(BodyChunk::Data(chunk)) => Some(chunk),
                    Ok(BodyChunk::End) => return Ok(()),
                    Ok(BodyChunk::NeedMore) => None,
                    Err(error) => {
                        return Err(refused(error.status(), error.error_name(), error.detail()))
                    }
                },
                None if buffer.is_empty() => None,
                None => Some(buffer.split().freeze()),
            };
            if let Some(chunk) = chunk {
                self.forward(owner, source, slot, chunk, window).await?;
                continue;
            }
            if self.shard.shutdown.is_set() {
                return Ok(());
            }
            let reserve = self.shard.process.config.limits.read_buffer_bytes;
            let outcome = monoio::select! {
                outcome = read_into(socket, &mut buffer, reserve, Some(idle), &self.shard.metrics) => outcome,
                _ = slot.failed.wait() => {
                    return Err(slot.failure.borrow_mut().take().unwrap_or_else(|| refused(400, "refused", "the source was refused")));
                }
                _ = self.shard.shutdown.wait() => return Ok(()),
            };
            match outcome {
                ReadOutcome::Data => {}
                ReadOutcome::TimedOut => {
                    self.shard.metrics.limit_hit(LimitKind::LiveSourceIdle);
                    return Err(refused(
                        408,
                        "source_idle",
                        format!(
                            "no audio for {} ms (live.source_idle_timeout_ms)",
                            idle.as_millis()
                        ),
                    ));
                }
                ReadOutcome::EndOfStream | ReadOutcome::Failed => return Ok(()),
            }
        }
    }

    /// Sends one chunk to the owner, first waiting while the window is full.
    async fn forward(
        &mut self,
        owner: usize,
        source: SourceRef,
        slot: &Rc<SourceSlot>,
        chunk: Bytes,
        window: usize,
    ) -> Result<(), SourceRefusal> {
        while slot.in_flight_bytes.get() >= window {
            monoio::select! {
                _ = slot.processed.wait() => {}
                _ = slot.failed.wait() => {
                    return Err(slot.failure.borrow_mut().take().unwrap_or_else(|| refused(400, "refused", "the source was refused")));
                }
            }
        }
        self.bytes_received += chunk.len() as u64;
        slot.in_flight_bytes
            .set(slot.in_flight_bytes.get() + chunk.len());
        send(
            &self.shard,
            owner,
            LiveMessage::SourceData {
                stream: self.name.clone(),
                source,
                data: chunk,
            },
        );
        Ok(())
    }
}

async fn write_raw(
    shard: &Shard,
    socket: &mut TcpStream,
    bytes: &'static [u8],
) -> Result<(), SourceRefusal> {
    let (result, _) = socket.write_all(bytes).await;
    crate::metrics::ShardMetrics::add(&shard.metrics.bytes_sent_total, bytes.len() as u64);
    result
        .map(|_| ())
        .map_err(|_| refused(400, "connection_failed", "the source's connection failed"))
}

async fn write_refusal(
    shard: &Shard,
    socket: &mut TcpStream,
    refusal: &SourceRefusal,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(256);
    {
        let date = shard.date();
        let extra: &[(&str, &str)] = if refusal.status == 401 {
            &[("WWW-Authenticate", "Basic realm=\"Veza\"")]
        } else {
            &[]
        };
        write_error_response(
            refusal.status,
            refusal.error,
            &refusal.detail,
            false,
            true,
            extra,
            date.as_str(),
            &mut out,
        );
    }
    socket.write_all(out).await.0.map(|_| ())
}

async fn write_final(
    shard: &Shard,
    socket: &mut TcpStream,
    status: u16,
    body: Vec<u8>,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(256 + body.len());
    {
        let date = shard.date();
        let head = ResponseHead {
            status,
            content_type: Some("application/json"),
            content_length: Some(body.len() as u64),
            keep_alive: false,
            extra_headers: &[],
            date: date.as_str(),
        };
        write_response_head(&head, &mut out);
    }
    out.extend_from_slice(&body);
    socket.write_all(out).await.0.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_choose_the_format_or_say_what_is_taken() {
        assert_eq!(
            source_format(Some(b"audio/ogg")).unwrap(),
            SourceFormat::OggOpus
        );
        assert_eq!(
            source_format(Some(b"application/ogg; codecs=opus")).unwrap(),
            SourceFormat::OggOpus
        );
        assert_eq!(
            source_format(Some(b"audio/L16;rate=48000;channels=2")).unwrap(),
            SourceFormat::Pcm { channel_count: 2 }
        );
        for (value, status) in [
            (&b"audio/mpeg"[..], 415),
            (b"audio/L16;rate=44100;channels=2", 415),
            (b"text/plain", 415),
        ] {
            let refusal = source_format(Some(value)).unwrap_err();
            assert_eq!(refusal.status, status, "{}", String::from_utf8_lossy(value));
            assert!(!refusal.detail.is_empty());
        }
        assert_eq!(source_format(None).unwrap_err().status, 415);
    }
}
