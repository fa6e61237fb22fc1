//! A client of Veza's chat protocol v1 (`veza_proto::chat`, documented in
//! `proto/PROTOCOL.md`) on tokio + tokio-tungstenite, for integration tests
//! and the chat benchmarks.
//!
//! [`ChatClient::connect`] opens `GET /v1/chat` offering the subprotocol
//! `veza.v1` and refuses a server that does not choose it;
//! [`ChatClient::connect_from`] first binds the socket to a source address
//! (127.0.0.2, 127.0.0.3, … spread load over addresses, past per-IP limits
//! and the ephemeral ports of one address).
//!
//! Frames in: every binary message is decoded as a [`ServerFrame`]; a close
//! frame becomes [`ChatClientError::Closed`] with its code (the `4xxx` codes
//! of `veza_proto::close_code`); pings are answered by tungstenite.
//! [`ChatClient::request`] sends a command with a fresh request id and waits
//! for the reply that echoes it, keeping every other frame (events, other
//! replies) in a bounded queue that [`ChatClient::next_frame`] returns first,
//! in arrival order. An `Error` reply becomes [`ChatClientError::Server`].
//!
//! [`ChatClient::split`] gives a sender and a receiver that can be driven
//! by two tasks at once (a publisher writing on a timetable while reading
//! its acknowledgements).
//!
//! Not a hot path: tungstenite allocates every message it reads, and
//! decoding into owned `ServerFrame`s adds one allocation per string field;
//! at the rates a loopback benchmark reaches that costs the load generator
//! far less than the server's own work.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, Stream, StreamExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::error::{ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use veza_proto::chat::{
    ClientFrame, DecodeError, ErrorCode, HistoryMessage, MessageEvent, PresenceStatus, ServerFrame,
    SUBPROTOCOL,
};

/// How long TCP connect plus the upgrade may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most frames kept aside while waiting for a reply. A client that
/// subscribes to busy rooms and never reads its events hits it instead of
/// growing without bound.
pub const PENDING_FRAMES_MAX: usize = 100_000;

/// The close code reported when the connection ended without a close frame
/// (RFC 6455 §7.1.5: 1006 is never sent on the wire).
pub const ABNORMAL_CLOSURE: u16 = 1006;

/// The close code reported for a close frame without a status.
pub const NO_STATUS_RECEIVED: u16 = 1005;

/// The WebSocket stream of one chat connection.
pub type ChatStream = WebSocketStream<TcpStream>;

/// Why a chat operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatClientError {
    /// The URL is not a `ws://host:port/path` this client can open.
    #[error("invalid URL {url}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP connect, bind or a socket read or write failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket layer failed (handshake refused, protocol error).
    #[error("websocket: {0}")]
    WebSocket(Box<tungstenite::Error>),
    /// The server did not choose the subprotocol `veza.v1`.
    #[error("the server did not choose subprotocol {SUBPROTOCOL} (chose {chosen:?})")]
    SubprotocolRefused {
        /// What it chose, if anything.
        chosen: Option<String>,
    },
    /// Nothing awaited arrived in time.
    #[error("timed out")]
    Timeout,
    /// The server closed the connection; `code` is the close frame's status
    /// (1005 without one, 1006 when the connection ended without a frame).
    #[error("closed by the server: {code} {reason}")]
    Closed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// A binary message was not a valid server frame.
    #[error("undecodable server frame: {0}")]
    Decode(#[from] DecodeError),
    /// The server sent a text message; the protocol is binary only.
    #[error("the server sent a text message")]
    UnexpectedText,
    /// The server answered the command with an `Error` reply.
    #[error("server error {} (retry after {retry_after_ms} ms): {message}", code.name())]
    Server {
        /// The error code.
        code: ErrorCode,
        /// When to retry, 0 for no hint.
        retry_after_ms: u32,
        /// The server's sentence.
        message: String,
    },
    /// The reply was not the kind the command expects.
    #[error("unexpected reply {}: expected {expected}", .frame.name())]
    UnexpectedReply {
        /// What was expected.
        expected: &'static str,
        /// What came.
        frame: Box<ServerFrame>,
    },
    /// More than [`PENDING_FRAMES_MAX`] frames arrived while waiting for a
    /// reply.
    #[error("more than {PENDING_FRAMES_MAX} frames arrived while waiting for a reply")]
    PendingOverflow,
}

impl ChatClientError {
    /// The close code when the server closed the connection.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ChatClientError::Closed { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The error code when the server answered with an `Error` reply.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ChatClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tungstenite::Error> for ChatClientError {
    fn from(error: tungstenite::Error) -> Self {
        match error {
            tungstenite::Error::Io(error) => ChatClientError::Io(error),
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                ChatClientError::Closed {
                    code: ABNORMAL_CLOSURE,
                    reason: "the connection is closed".into(),
                }
            }
            tungstenite::Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(
                SubProtocolError::NoSubProtocol,
            )) => ChatClientError::SubprotocolRefused { chosen: None },
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                ChatClientError::Closed {
                    code: ABNORMAL_CLOSURE,
                    reason: "reset without a closing handshake".into(),
                }
            }
            other => ChatClientError::WebSocket(Box::new(other)),
        }
    }
}

/// What `AuthOk` tells an authenticated connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user.
    pub user_id: i64,
    /// This connection, unique on the server.
    pub connection_id: u64,
    /// The user's name.
    pub username: String,
    /// Largest message body the server accepts, in bytes.
    pub message_bytes_max: u32,
}

/// What `Subscribed` tells a new subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// The room.
    pub room_id: i64,
    /// The room's newest seq when the subscription started (0: empty).
    pub head_seq: i64,
    /// How many replayed `Message` events came before `Subscribed`.
    pub replayed: u32,
}

/// A message to post with [`ChatClient::post`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageDraft {
    /// The room.
    pub room_id: i64,
    /// The thread's first message, 0 for none.
    pub thread_parent_seq: i64,
    /// Makes retries idempotent; may be empty.
    pub nonce: String,
    /// Mentioned user ids.
    pub mentions: Vec<i64>,
    /// The text.
    pub body: String,
}

/// Request ids from 1 upward, skipping 0 (which an `Error` reply uses for a
/// frame whose id could not be read).
#[derive(Debug, Clone)]
struct RequestIds {
    next: u32,
}

impl RequestIds {
    fn new() -> Self {
        RequestIds { next: 1 }
    }

    fn allocate(&mut self) -> u32 {
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        id
    }
}

/// One chat connection.
#[derive(Debug)]
pub struct ChatClient {
    stream: ChatStream,
    pending_frames: VecDeque<ServerFrame>,
    request_ids: RequestIds,
}

impl ChatClient {
    /// Connects to `url` (`ws://127.0.0.1:8080/v1/chat`) and upgrades with
    /// subprotocol `veza.v1`.
    pub async fn connect(url: &str) -> Result<ChatClient, ChatClientError> {
        Self::open(url, None).await
    }

    /// As [`ChatClient::connect`], from source address `local_ip`.
    pub async fn connect_from(url: &str, local_ip: IpAddr) -> Result<ChatClient, ChatClientError> {
        Self::open(url, Some(local_ip)).await
    }

    async fn open(url: &str, local_ip: Option<IpAddr>) -> Result<ChatClient, ChatClientError> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let stream = timeout_at(deadline, open_stream(url, local_ip, Some(SUBPROTOCOL)))
            .await
            .map_err(|_elapsed| ChatClientError::Timeout)??;
        Ok(ChatClient {
            stream,
            pending_frames: VecDeque::new(),
            request_ids: RequestIds::new(),
        })
    }

    /// A request id not used before on this connection.
    pub fn next_request_id(&mut self) -> u32 {
        self.request_ids.allocate()
    }

    /// Sends one command as it is (its request id included) without waiting.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ChatClientError> {
        self.send_bytes(frame.to_bytes()).await
    }

    /// Sends arbitrary bytes as one binary message (for malformed-input
    /// tests).
    pub async fn send_bytes(&mut self, payload: Bytes) -> Result<(), ChatClientError> {
        self.stream.send(Message::Binary(payload)).await?;
        Ok(())
    }

    /// The next frame: a kept one first, else the next from the socket.
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<ServerFrame, ChatClientError> {
        self.next_frame_until(Instant::now() + timeout).await
    }

    /// As [`ChatClient::next_frame`], with a deadline.
    pub async fn next_frame_until(
        &mut self,
        deadline: Instant,
    ) -> Result<ServerFrame, ChatClientError> {
        if let Some(frame) = self.pending_frames.pop_front() {
            return Ok(frame);
        }
        read_frame(&mut self.stream, deadline).await
    }

    /// The frames kept aside so far, oldest first, leaving none.
    pub fn take_pending(&mut self) -> Vec<ServerFrame> {
        self.pending_frames.drain(..).collect()
    }

    /// Sends `frame` after giving it a fresh request id and returns the reply
    /// that echoes it; every other frame is kept for `next_frame`. An
    /// `Error` reply becomes [`ChatClientError::Server`].
    pub async fn request(
        &mut self,
        mut frame: ClientFrame,
        timeout: Duration,
    ) -> Result<ServerFrame, ChatClientError> {
        let request_id = self.next_request_id();
        set_request_id(&mut frame, request_id);
        let deadline = Instant::now() + timeout;
        self.send(&frame).await?;
        let reply = self.reply_to(request_id, deadline, |_| {}).await?;
        error_reply_to_err(reply)
    }

    /// Reads until the reply to `request_id`, keeping every other frame
    /// unless `observe` is given it first (it sees each one).
    async fn reply_to(
        &mut self,
        request_id: u32,
        deadline: Instant,
        mut observe: impl FnMut(&ServerFrame),
    ) -> Result<ServerFrame, ChatClientError> {
        // Bounded by the deadline and by PENDING_FRAMES_MAX.
        loop {
            let frame = read_frame(&mut self.stream, deadline).await?;
            if frame.request_id() == Some(request_id) {
                return Ok(frame);
            }
            observe(&frame);
            if self.pending_frames.len() >= PENDING_FRAMES_MAX {
                return Err(ChatClientError::PendingOverflow);
            }
            self.pending_frames.push_back(frame);
        }
    }

    /// `Auth` with an access token; the connection's identity. A refused
    /// token closes the connection: [`ChatClientError::Closed`] with 4001
    /// (invalid), 4002 (expired) or 4003 (revoked).
    pub async fn authenticate(
        &mut self,
        token: &str,
        timeout: Duration,
    ) -> Result<Authenticated, ChatClientError> {
        let frame = ClientFrame::Auth {
            request_id: 0,
            token: token.to_string(),
        };
        match self.request(frame, timeout).await? {
            ServerFrame::AuthOk {
                user_id,
                connection_id,
                username,
                message_bytes_max,
                ..
            } => Ok(Authenticated {
                user_id,
                connection_id,
                username,
                message_bytes_max,
            }),
            other => Err(unexpected("auth_ok", other)),
        }
    }

    /// `Subscribe` from `since_seq` (-1: live events only). Returns the
    /// replayed `Message` events of the room (they precede `Subscribed`) and
    /// the subscription; other frames are kept for `next_frame`.
    pub async fn subscribe(
        &mut self,
        room_id: i64,
        since_seq: i64,
        timeout: Duration,
    ) -> Result<(Vec<MessageEvent>, Subscription), ChatClientError> {
        let request_id = self.next_request_id();
        let frame = ClientFrame::Subscribe {
            request_id,
            room_id,
            since_seq,
        };
        let deadline = Instant::now() + timeout;
        self.send(&frame).await?;
        let kept_before = self.pending_frames.len();
        let reply = self.reply_to(request_id, deadline, |_| {}).await?;
        let reply = error_reply_to_err(reply)?;
        let ServerFrame::Subscribed {
            room_id: subscribed_room_id,
            head_seq,
            replayed,
            ..
        } = reply
        else {
            return Err(unexpected("subscribed", reply));
        };
        let replayed_events = self.take_replayed(kept_before, room_id);
        Ok((
            replayed_events,
            Subscription {
                room_id: subscribed_room_id,
                head_seq,
                replayed,
            },
        ))
    }

    /// Moves the `Message` events of `room_id` kept since index `from` out of
    /// the queue, in order.
    fn take_replayed(&mut self, from: usize, room_id: i64) -> Vec<MessageEvent> {
        let kept: Vec<ServerFrame> = self.pending_frames.drain(from..).collect();
        let mut replayed = Vec::new();
        for frame in kept {
            match frame {
                ServerFrame::Message(event) if event.room_id == room_id => replayed.push(event),
                other => self.pending_frames.push_back(other),
            }
        }
        replayed
    }

    /// `Send` of a plain message; waits for `Sent` (the message is
    /// committed) and returns its seq.
    pub async fn send_message(
        &mut self,
        room_id: i64,
        body: &str,
        nonce: &str,
        timeout: Duration,
    ) -> Result<i64, ChatClientError> {
        let draft = MessageDraft {
            room_id,
            nonce: nonce.to_string(),
            body: body.to_string(),
            ..MessageDraft::default()
        };
        self.post(draft, timeout).await
    }

    /// `Send` of any message (thread reply, mentions); its seq.
    pub async fn post(
        &mut self,
        draft: MessageDraft,
        timeout: Duration,
    ) -> Result<i64, ChatClientError> {
        let frame = ClientFrame::Send {
            request_id: 0,
            room_id: draft.room_id,
            thread_parent_seq: draft.thread_parent_seq,
            nonce: draft.nonce,
            mentions: draft.mentions,
            body: draft.body,
        };
        match self.request(frame, timeout).await? {
            ServerFrame::Sent { seq, .. } => Ok(seq),
            other => Err(unexpected("sent", other)),
        }
    }

    /// A command whose success is `Ok` (Unsubscribe, Edit, Delete, React,
    /// Typing, SetPresence, ReadMarker, WatchStream, UnwatchStream).
    pub async fn command(
        &mut self,
        frame: ClientFrame,
        timeout: Duration,
    ) -> Result<(), ChatClientError> {
        match self.request(frame, timeout).await? {
            ServerFrame::Ok { .. } => Ok(()),
            other => Err(unexpected("ok", other)),
        }
    }

    /// `Unsubscribe`.
    pub async fn unsubscribe(
        &mut self,
        room_id: i64,
        timeout: Duration,
    ) -> Result<(), ChatClientError> {
        let frame = ClientFrame::Unsubscribe {
            request_id: 0,
            room_id,
        };
        self.command(frame, timeout).await
    }

    /// `Edit` (answered once committed).
    pub async fn edit(
        &mut self,
        room_id: i64,
        seq: i64,
        body: &str,
        timeout: Duration,
    ) -> Result<(), ChatClientError> {
        let frame = ClientFrame::Edit {
            request_id: 0,
            room_id,
            seq,
            body: body.to_string(),
        };
        self.command(frame, timeout).await
    }

    /// `Delete` (answered once committed).
    pub async fn delete(
        &mut self,
        room_id: i64,
        seq: i64,
        timeout: Duration,
    ) -> Result<(), ChatClientError> {
        let frame = ClientFrame::Delete {
            request_id: 0,
            room_id,
            seq,
        };
        self.command(frame, timeout).await
    }

    /// `React`: adds (`add`) or removes a reaction.
    pub async fn react(
        &mut self,
        room_id: i64,
        seq: i64,
        add: bool,
        emoji: &str,
        timeout: Duration,
    ) -> Result<(), ChatClientError> {
        let frame = ClientFrame::React {
            request_id: 0,
            room_id,
            seq,
            add,
            emoji: emoji.to_string(),
        };
        self.command(frame, timeout).await
    }

    /// `Typing`.
    pub async fn typing(&mut self, room_id: i64, timeout: Duration) -> Result<(), ChatClientError> {
        let frame = ClientFrame::Typing {
            request_id: 0,
            room_id,
        };
        self.command(frame, timeout).await
    }

    /// `SetPresence`.
    pub async fn set_presence(
        &mut self,
        status: PresenceStatus,
        timeout: Duration,
    ) -> Result<(), ChatClientError> {
        let frame = ClientFrame::SetPresence {
            request_id: 0,
            status,
        };
        self.command(frame, timeout).await
    }

    /// `ReadMarker`.
    pub async fn read_marker(
        &mut self,
        room_id: i64,
        seq: i64,
        timeout: Duration,
    ) -> Result<(), ChatClientError> {
        let frame = ClientFrame::ReadMarker {
            request_id: 0,
            room_id,
            seq,
        };
        self.command(frame, timeout).await
    }

    /// `History`: `before_seq` 0 and `after_seq` -1 for no bound.
    pub async fn history(
        &mut self,
        room_id: i64,
        before_seq: i64,
        after_seq: i64,
        limit: u16,
        timeout: Duration,
    ) -> Result<Vec<HistoryMessage>, ChatClientError> {
        let frame = ClientFrame::History {
            request_id: 0,
            room_id,
            before_seq,
            after_seq,
            limit,
        };
        match self.request(frame, timeout).await? {
            ServerFrame::HistoryPage { messages, .. } => Ok(messages),
            other => Err(unexpected("history_page", other)),
        }
    }

    /// `WatchStream`: the stream's `NowPlaying` events from now on. When the
    /// stream is live with a title, the current one follows the `Ok`; read
    /// it with `next_frame`.
    pub async fn watch_stream(
        &mut self,
        stream: &str,
        timeout: Duration,
    ) -> Result<(), ChatClientError> {
        let frame = ClientFrame::WatchStream {
            request_id: 0,
            stream: stream.to_string(),
        };
        self.command(frame, timeout).await
    }

    /// `UnwatchStream`: no `NowPlaying` of the stream after the `Ok`.
    pub async fn unwatch_stream(
        &mut self,
        stream: &str,
        timeout: Duration,
    ) -> Result<(), ChatClientError> {
        let frame = ClientFrame::UnwatchStream {
            request_id: 0,
            stream: stream.to_string(),
        };
        self.command(frame, timeout).await
    }

    /// Sends a close frame with `code` and waits (up to `timeout`) for the
    /// server's close; frames that arrive meanwhile are dropped.
    pub async fn close(mut self, code: u16, timeout: Duration) -> Result<(), ChatClientError> {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        };
        self.stream.send(Message::Close(Some(frame))).await?;
        let deadline = Instant::now() + timeout;
        // Bounded by the deadline.
        loop {
            match timeout_at(deadline, self.stream.next()).await {
                Err(_elapsed) => return Err(ChatClientError::Timeout),
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return Ok(()),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// A sender and a receiver that two tasks can drive at once; kept frames
    /// go to the receiver.
    pub fn split(self) -> (ChatSender, ChatReceiver) {
        let (sink, stream) = self.stream.split();
        (
            ChatSender {
                sink,
                request_ids: self.request_ids,
            },
            ChatReceiver {
                stream,
                pending_frames: self.pending_frames,
            },
        )
    }
}

/// The writing half of a [`ChatClient`].
#[derive(Debug)]
pub struct ChatSender {
    sink: SplitSink<ChatStream, Message>,
    request_ids: RequestIds,
}

impl ChatSender {
    /// A request id not used before on this connection.
    pub fn next_request_id(&mut self) -> u32 {
        self.request_ids.allocate()
    }

    /// Sends one command as it is, without waiting for its reply.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ChatClientError> {
        self.sink.send(Message::Binary(frame.to_bytes())).await?;
        Ok(())
    }

    /// Queues one command without flushing; [`ChatSender::flush`] writes
    /// everything queued (one write for a burst of commands).
    pub async fn feed(&mut self, frame: &ClientFrame) -> Result<(), ChatClientError> {
        self.sink.feed(Message::Binary(frame.to_bytes())).await?;
        Ok(())
    }

    /// Writes everything fed so far.
    pub async fn flush(&mut self) -> Result<(), ChatClientError> {
        self.sink.flush().await?;
        Ok(())
    }

    /// Sends a close frame with `code`.
    pub async fn close(&mut self, code: u16) -> Result<(), ChatClientError> {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        };
        self.sink.send(Message::Close(Some(frame))).await?;
        Ok(())
    }
}

/// The reading half of a [`ChatClient`].
#[derive(Debug)]
pub struct ChatReceiver {
    stream: SplitStream<ChatStream>,
    pending_frames: VecDeque<ServerFrame>,
}

impl ChatReceiver {
    /// The next frame (kept ones first) by `deadline`.
    pub async fn next_frame_until(
        &mut self,
        deadline: Instant,
    ) -> Result<ServerFrame, ChatClientError> {
        if let Some(frame) = self.pending_frames.pop_front() {
            return Ok(frame);
        }
        read_frame(&mut self.stream, deadline).await
    }
}

/// tungstenite's read buffer. It zero-fills the buffer's spare capacity
/// before every read, so its default (128 KiB) cost the load generator about
/// 4 µs per `recv`, 40% of its CPU in `chat-fanout`; 8 KiB still takes
/// dozens of small frames per read, and a larger frame grows it.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Opens a TCP connection (bound to `local_ip` when given) to the host of
/// `url` and upgrades it, offering `subprotocol` when given and checking
/// that the server chose it.
pub async fn open_stream(
    url: &str,
    local_ip: Option<IpAddr>,
    subprotocol: Option<&str>,
) -> Result<ChatStream, ChatClientError> {
    let invalid = |reason: &str| ChatClientError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let mut request = url
        .into_client_request()
        .map_err(|error| invalid(&error.to_string()))?;
    let address = socket_address(request.uri())
        .await
        .map_err(|reason| invalid(&reason))?;
    if let Some(subprotocol) = subprotocol {
        let value = HeaderValue::from_str(subprotocol).map_err(|_| invalid("bad subprotocol"))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", value);
    }
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(local_ip) = local_ip {
        socket.bind(SocketAddr::new(local_ip, 0))?;
    }
    let tcp = socket.connect(address).await?;
    tcp.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (stream, response) =
        tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await?;
    if let Some(expected) = subprotocol {
        let chosen = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|value| value.to_str().ok());
        if chosen != Some(expected) {
            return Err(ChatClientError::SubprotocolRefused {
                chosen: chosen.map(str::to_string),
            });
        }
    }
    Ok(stream)
}

async fn socket_address(
    uri: &tokio_tungstenite::tungstenite::http::Uri,
) -> Result<SocketAddr, String> {
    let host = uri.host().ok_or("no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some("ws")) => 80,
        (None, _) => return Err("only ws:// URLs (no TLS in the benchmark kit)".into()),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| error.to_string())?
        .next()
        .ok_or_else(|| format!("{host} resolves to nothing"))
}

/// Reads the next server frame from `stream` by `deadline`.
async fn read_frame<S>(stream: &mut S, deadline: Instant) -> Result<ServerFrame, ChatClientError>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    // Bounded by the deadline: control frames are the only ones skipped.
    loop {
        let message = match timeout_at(deadline, stream.next()).await {
            Err(_elapsed) => return Err(ChatClientError::Timeout),
            Ok(None) => {
                return Err(ChatClientError::Closed {
                    code: ABNORMAL_CLOSURE,
                    reason: "the connection ended without a close frame".into(),
                })
            }
            Ok(Some(Err(error))) => return Err(error.into()),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Binary(payload) => return Ok(ServerFrame::decode(&payload)?),
            Message::Text(_) => return Err(ChatClientError::UnexpectedText),
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((NO_STATUS_RECEIVED, String::new()), |frame| {
                    (u16::from(frame.code), frame.reason.to_string())
                });
                return Err(ChatClientError::Closed { code, reason });
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

fn set_request_id(frame: &mut ClientFrame, id: u32) {
    match frame {
        ClientFrame::Auth { request_id, .. }
        | ClientFrame::Subscribe { request_id, .. }
        | ClientFrame::Unsubscribe { request_id, .. }
        | ClientFrame::Send { request_id, .. }
        | ClientFrame::Edit { request_id, .. }
        | ClientFrame::Delete { request_id, .. }
        | ClientFrame::React { request_id, .. }
        | ClientFrame::Typing { request_id, .. }
        | ClientFrame::SetPresence { request_id, .. }
        | ClientFrame::ReadMarker { request_id, .. }
        | ClientFrame::History { request_id, .. }
        | ClientFrame::WatchStream { request_id, .. }
        | ClientFrame::UnwatchStream { request_id, .. } => *request_id = id,
    }
}

fn error_reply_to_err(reply: ServerFrame) -> Result<ServerFrame, ChatClientError> {
    match reply {
        ServerFrame::Error {
            code,
            retry_after_ms,
            message,
            ..
        } => Err(ChatClientError::Server {
            code,
            retry_after_ms,
            message,
        }),
        other => Ok(other),
    }
}

fn unexpected(expected: &'static str, frame: ServerFrame) -> ChatClientError {
    ChatClientError::UnexpectedReply {
        expected,
        frame: Box::new(frame),
    }
}

#[cfg(test)]
// tungstenite's handshake callback returns its own large error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use veza_proto::close_code;

    /// How long a test waits for anything.
    const WAIT: Duration = Duration::from_secs(5);

    type ServerSocket = WebSocketStream<TcpStream>;

    /// Accepts one connection, answering the upgrade with `subprotocol`
    /// (none when `None`), and runs `script` on it.
    async fn serve_one<F, Fut>(subprotocol: Option<&'static str>, script: F) -> String
    where
        F: FnOnce(ServerSocket) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v1/chat", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let choose = |request: &Request, mut response: Response| {
                assert_eq!(request.uri().path(), "/v1/chat");
                let offered = request.headers().get("Sec-WebSocket-Protocol").cloned();
                assert_eq!(offered.unwrap(), SUBPROTOCOL);
                if let Some(subprotocol) = subprotocol {
                    response.headers_mut().insert(
                        "Sec-WebSocket-Protocol",
                        HeaderValue::from_static(subprotocol),
                    );
                }
                Ok(response)
            };
            let Ok(socket) = tokio_tungstenite::accept_hdr_async(tcp, choose).await else {
                return;
            };
            script(socket).await;
        });
        url
    }

    async fn receive_command(socket: &mut ServerSocket) -> ClientFrame {
        // Bounded: the client under test sends a command next.
        loop {
            match socket.next().await.unwrap().unwrap() {
                Message::Binary(payload) => return ClientFrame::decode(&payload).unwrap(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a binary command, got {other:?}"),
            }
        }
    }

    async fn send_frame(socket: &mut ServerSocket, frame: ServerFrame) {
        socket
            .send(Message::Binary(frame.to_bytes()))
            .await
            .unwrap();
    }

    fn message(room_id: i64, seq: i64, body: &str) -> ServerFrame {
        ServerFrame::Message(MessageEvent {
            room_id,
            seq,
            author_id: 2,
            thread_parent_seq: 0,
            created_at_ms: 1_700_000_000_000,
            nonce: String::new(),
            mentions: vec![],
            body: body.into(),
        })
    }

    #[tokio::test]
    async fn authenticate_returns_what_auth_ok_says() {
        let url = serve_one(Some(SUBPROTOCOL), |mut socket| async move {
            let ClientFrame::Auth { request_id, token } = receive_command(&mut socket).await else {
                panic!("Auth first");
            };
            assert_eq!(token, "the-token");
            let reply = ServerFrame::AuthOk {
                request_id,
                user_id: 42,
                connection_id: 7,
                username: "ada".into(),
                message_bytes_max: 4000,
            };
            send_frame(&mut socket, reply).await;
            let _ = socket.next().await;
        })
        .await;
        let mut client = ChatClient::connect(&url).await.unwrap();
        let authenticated = client.authenticate("the-token", WAIT).await.unwrap();
        assert_eq!(
            authenticated,
            Authenticated {
                user_id: 42,
                connection_id: 7,
                username: "ada".into(),
                message_bytes_max: 4000
            }
        );
    }

    #[tokio::test]
    async fn a_server_that_does_not_choose_veza_v1_is_refused() {
        let url = serve_one(None, |_socket| async {}).await;
        let error = ChatClient::connect(&url).await.unwrap_err();
        assert!(
            matches!(error, ChatClientError::SubprotocolRefused { chosen: None }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn events_that_arrive_before_a_reply_are_kept_in_order() {
        let url = serve_one(Some(SUBPROTOCOL), |mut socket| async move {
            let command = receive_command(&mut socket).await;
            let ClientFrame::Send {
                request_id,
                room_id,
                body,
                ..
            } = command
            else {
                panic!("Send expected");
            };
            assert_eq!(body, "hello");
            send_frame(&mut socket, message(9, 1, "first")).await;
            send_frame(
                &mut socket,
                ServerFrame::Typing {
                    room_id: 9,
                    user_id: 3,
                },
            )
            .await;
            send_frame(
                &mut socket,
                ServerFrame::Sent {
                    request_id,
                    room_id,
                    seq: 2,
                },
            )
            .await;
            send_frame(&mut socket, message(9, 2, "hello")).await;
            let _ = socket.next().await;
        })
        .await;
        let mut client = ChatClient::connect(&url).await.unwrap();
        let seq = client.send_message(9, "hello", "n-1", WAIT).await.unwrap();
        assert_eq!(seq, 2);
        assert_eq!(
            client.next_frame(WAIT).await.unwrap(),
            message(9, 1, "first")
        );
        assert_eq!(
            client.next_frame(WAIT).await.unwrap(),
            ServerFrame::Typing {
                room_id: 9,
                user_id: 3
            }
        );
        assert_eq!(
            client.next_frame(WAIT).await.unwrap(),
            message(9, 2, "hello")
        );
    }

    #[tokio::test]
    async fn subscribe_separates_replayed_messages_from_other_frames() {
        let url = serve_one(Some(SUBPROTOCOL), |mut socket| async move {
            let ClientFrame::Subscribe {
                request_id,
                room_id,
                since_seq,
            } = receive_command(&mut socket).await
            else {
                panic!("Subscribe expected");
            };
            assert_eq!((room_id, since_seq), (5, 0));
            send_frame(&mut socket, message(5, 1, "one")).await;
            send_frame(&mut socket, message(6, 8, "other room")).await;
            send_frame(&mut socket, message(5, 2, "two")).await;
            let subscribed = ServerFrame::Subscribed {
                request_id,
                room_id,
                head_seq: 2,
                replayed: 2,
            };
            send_frame(&mut socket, subscribed).await;
            let _ = socket.next().await;
        })
        .await;
        let mut client = ChatClient::connect(&url).await.unwrap();
        let (replayed, subscription) = client.subscribe(5, 0, WAIT).await.unwrap();
        assert_eq!(
            subscription,
            Subscription {
                room_id: 5,
                head_seq: 2,
                replayed: 2
            }
        );
        let bodies: Vec<&str> = replayed.iter().map(|event| event.body.as_str()).collect();
        assert_eq!(bodies, ["one", "two"]);
        assert_eq!(client.take_pending(), vec![message(6, 8, "other room")]);
    }

    #[tokio::test]
    async fn an_error_reply_becomes_a_server_error_with_its_code() {
        let url = serve_one(Some(SUBPROTOCOL), |mut socket| async move {
            let command = receive_command(&mut socket).await;
            let reply = ServerFrame::Error {
                request_id: command.request_id(),
                code: ErrorCode::RateLimited,
                retry_after_ms: 250,
                message: "slow down".into(),
            };
            send_frame(&mut socket, reply).await;
            let _ = socket.next().await;
        })
        .await;
        let mut client = ChatClient::connect(&url).await.unwrap();
        let error = client.send_message(1, "x", "", WAIT).await.unwrap_err();
        assert!(
            matches!(
                &error,
                ChatClientError::Server { code: ErrorCode::RateLimited, retry_after_ms: 250, message }
                    if message == "slow down"
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_close_frame_becomes_closed_with_its_code_and_reason() {
        let url = serve_one(Some(SUBPROTOCOL), |mut socket| async move {
            let _auth = receive_command(&mut socket).await;
            let close = CloseFrame {
                code: CloseCode::from(close_code::AUTH_FAILED),
                reason: "invalid token".into(),
            };
            let _ = socket.send(Message::Close(Some(close))).await;
            let _ = socket.next().await;
        })
        .await;
        let mut client = ChatClient::connect(&url).await.unwrap();
        let error = client.authenticate("forged", WAIT).await.unwrap_err();
        assert_eq!(error.close_code(), Some(close_code::AUTH_FAILED), "{error}");
        assert!(error.to_string().contains("invalid token"));
    }

    #[tokio::test]
    async fn request_ids_are_fresh_and_never_zero() {
        let mut ids = RequestIds { next: u32::MAX };
        assert_eq!(ids.allocate(), u32::MAX);
        assert_eq!(ids.allocate(), 1);
        assert_eq!(ids.allocate(), 2);
    }

    #[tokio::test]
    async fn connect_from_binds_the_source_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v1/chat", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let choose = |_: &Request, mut response: Response| {
                response.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_static(SUBPROTOCOL),
                );
                Ok(response)
            };
            let _socket = tokio_tungstenite::accept_hdr_async(tcp, choose)
                .await
                .unwrap();
            peer.ip()
        });
        let source: IpAddr = "127.0.0.3".parse().unwrap();
        let _client = ChatClient::connect_from(&url, source).await.unwrap();
        assert_eq!(server.await.unwrap(), source);
    }

    #[tokio::test]
    async fn a_url_without_a_host_is_invalid() {
        let error = ChatClient::connect("not a url").await.unwrap_err();
        assert!(
            matches!(error, ChatClientError::InvalidUrl { .. }),
            "{error}"
        );
    }
}
