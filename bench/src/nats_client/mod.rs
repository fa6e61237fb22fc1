//! A NATS client over WebSocket (nats-server's `websocket` listener) on
//! tokio-tungstenite, the peer side of the chat benchmarks: the same rooms,
//! subscribers and publishers as on Veza, each room a subject `room.<n>`.
//!
//! nats-server carries the NATS text protocol ([`protocol`]) in binary
//! WebSocket messages and accepts binary or text ones from clients; the
//! client sends binary. The reader hands server `PING`s up; whoever drives
//! the writer answers each with `PONG` (nats-server closes a client that
//! misses two).
//!
//! - [`protocol`]: the sans-IO parser and command encoders.

pub mod protocol;

use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, Stream, StreamExt as _};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::chat_client::{open_stream, ChatClientError, ChatStream, HANDSHAKE_TIMEOUT};

pub use protocol::{ProtocolError, ServerOp};

/// The largest payload a client accepts (nats-server's default
/// `max_payload` is 1 MiB).
pub const PAYLOAD_BYTES_MAX: usize = 1 << 20;

/// The subject of benchmark room `room_idx`.
pub fn room_subject(room_idx: usize) -> String {
    format!("room.{room_idx}")
}

/// Why a NATS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsClientError {
    /// Connecting or the WebSocket layer failed (same causes as for chat).
    #[error(transparent)]
    Connect(#[from] ChatClientError),
    /// The server broke the NATS protocol.
    #[error("NATS protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server answered `-ERR`.
    #[error("NATS server error: {0}")]
    Server(String),
    /// The first operation was not `INFO`.
    #[error("expected INFO first, got {0:?}")]
    NoInfo(Box<ServerOp>),
    /// Nothing awaited arrived in time.
    #[error("timed out")]
    Timeout,
}

impl From<tungstenite::Error> for NatsClientError {
    fn from(error: tungstenite::Error) -> Self {
        NatsClientError::Connect(error.into())
    }
}

/// One NATS connection over WebSocket.
#[derive(Debug)]
pub struct NatsClient {
    sender: NatsSender,
    receiver: NatsReceiver,
}

impl NatsClient {
    /// Connects to `url` (`ws://127.0.0.1:PORT`), from `local_ip` when
    /// given, reads `INFO` and sends `CONNECT`.
    pub async fn connect(
        url: &str,
        local_ip: Option<IpAddr>,
    ) -> Result<NatsClient, NatsClientError> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let stream = timeout_at(deadline, open_stream(url, local_ip, None))
            .await
            .map_err(|_elapsed| NatsClientError::Timeout)??;
        let (sink, stream) = stream.split();
        let mut client = NatsClient {
            sender: NatsSender {
                sink,
                buffer: BytesMut::new(),
            },
            receiver: NatsReceiver {
                stream,
                parser: protocol::Parser::new(PAYLOAD_BYTES_MAX),
            },
        };
        match client.receiver.next_op(deadline).await? {
            ServerOp::Info(_) => {}
            other => return Err(NatsClientError::NoInfo(Box::new(other))),
        }
        protocol::put_connect(&mut client.sender.buffer);
        client.sender.flush().await?;
        Ok(client)
    }

    /// `SUB <subject> <sid>` (not yet confirmed; see [`NatsClient::ping`]).
    pub async fn subscribe(&mut self, subject: &str, sid: u64) -> Result<(), NatsClientError> {
        protocol::put_sub(&mut self.sender.buffer, subject, sid);
        self.sender.flush().await
    }

    /// `PING`, then waits for `PONG`: every command sent before it has been
    /// processed (a `SUB` is in place, a `CONNECT` accepted). `MSG`s that
    /// arrive meanwhile are dropped.
    pub async fn ping(&mut self, timeout: Duration) -> Result<(), NatsClientError> {
        protocol::put_ping(&mut self.sender.buffer);
        self.sender.flush().await?;
        let deadline = Instant::now() + timeout;
        // Bounded by the deadline.
        loop {
            match self.receiver.next_op(deadline).await? {
                ServerOp::Pong => return Ok(()),
                ServerOp::Ping => self.sender.pong().await?,
                _ => {}
            }
        }
    }

    /// The two halves, for a writer task and a reader task.
    pub fn split(self) -> (NatsSender, NatsReceiver) {
        (self.sender, self.receiver)
    }
}

/// The writing half of a [`NatsClient`].
#[derive(Debug)]
pub struct NatsSender {
    sink: SplitSink<ChatStream, Message>,
    buffer: BytesMut,
}

impl NatsSender {
    /// `PUB <subject>` with `payload`, sent at once.
    pub async fn publish(&mut self, subject: &str, payload: &[u8]) -> Result<(), NatsClientError> {
        protocol::put_pub(&mut self.buffer, subject, payload);
        self.flush().await
    }

    /// `PONG` (owed for each server `PING` the receiver saw).
    pub async fn pong(&mut self) -> Result<(), NatsClientError> {
        protocol::put_pong(&mut self.buffer);
        self.flush().await
    }

    /// Sends everything written so far as one binary message.
    async fn flush(&mut self) -> Result<(), NatsClientError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let payload: Bytes = self.buffer.split().freeze();
        self.sink.send(Message::Binary(payload)).await?;
        Ok(())
    }

    /// Sends a WebSocket close frame.
    pub async fn close(&mut self) -> Result<(), NatsClientError> {
        self.sink.send(Message::Close(None)).await?;
        Ok(())
    }
}

/// The reading half of a [`NatsClient`].
#[derive(Debug)]
pub struct NatsReceiver {
    stream: SplitStream<ChatStream>,
    parser: protocol::Parser,
}

impl NatsReceiver {
    /// The next operation by `deadline`; `-ERR` is an error. A `PING` must
    /// be answered with [`NatsSender::pong`].
    pub async fn next_op(&mut self, deadline: Instant) -> Result<ServerOp, NatsClientError> {
        // Bounded by the deadline.
        loop {
            match self.parser.next_op()? {
                Some(ServerOp::Err(message)) => return Err(NatsClientError::Server(message)),
                Some(op) => return Ok(op),
                None => {}
            }
            let payload = read_payload(&mut self.stream, deadline).await?;
            self.parser.push(&payload);
        }
    }
}

async fn read_payload<S>(stream: &mut S, deadline: Instant) -> Result<Bytes, NatsClientError>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    // Bounded by the deadline: only control frames are skipped.
    loop {
        let message = match timeout_at(deadline, stream.next()).await {
            Err(_elapsed) => return Err(NatsClientError::Timeout),
            Ok(None) => return Err(tungstenite::Error::ConnectionClosed.into()),
            Ok(Some(Err(error))) => return Err(error.into()),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Binary(payload) => return Ok(payload),
            Message::Text(text) => return Ok(Bytes::copy_from_slice(text.as_bytes())),
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |frame| {
                    (u16::from(frame.code), frame.reason.to_string())
                });
                return Err(ChatClientError::Closed { code, reason }.into());
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn connect_subscribe_and_receive_a_message_split_across_frames() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut socket = tokio_tungstenite::accept_async(tcp).await.unwrap();
            socket
                .send(Message::Binary(Bytes::from_static(
                    b"INFO {\"max_payload\":1048576}\r\n",
                )))
                .await
                .unwrap();
            let mut received = Vec::new();
            // Bounded: CONNECT, SUB and PING come in three messages.
            while !received.ends_with(b"PING\r\n") {
                match socket.next().await.unwrap().unwrap() {
                    Message::Binary(payload) => received.extend_from_slice(&payload),
                    other => panic!("binary expected, got {other:?}"),
                }
            }
            for part in [
                &b"PONG\r\nMSG room.0 1 5\r\nhel"[..],
                b"lo\r\nPI",
                b"NG\r\n",
            ] {
                socket
                    .send(Message::Binary(Bytes::copy_from_slice(part)))
                    .await
                    .unwrap();
            }
            // Bounded: the PONG comes next, then the close.
            while !received.ends_with(b"PONG\r\n") {
                if let Message::Binary(payload) = socket.next().await.unwrap().unwrap() {
                    received.extend_from_slice(&payload);
                }
            }
            String::from_utf8(received).unwrap()
        });
        let mut client = NatsClient::connect(&url, None).await.unwrap();
        client.subscribe(&room_subject(0), 1).await.unwrap();
        client.ping(WAIT).await.unwrap();
        let (mut sender, mut receiver) = client.split();
        let deadline = Instant::now() + WAIT;
        let op = receiver.next_op(deadline).await.unwrap();
        assert_eq!(
            op,
            ServerOp::Msg {
                subject: "room.0".into(),
                sid: 1,
                payload: Bytes::from_static(b"hello")
            }
        );
        assert_eq!(receiver.next_op(deadline).await.unwrap(), ServerOp::Ping);
        sender.pong().await.unwrap();
        sender.close().await.unwrap();
        let received = server.await.unwrap();
        assert!(received.starts_with("CONNECT {"), "{received}");
        assert!(received.contains("SUB room.0 1\r\n"), "{received}");
        assert!(received.ends_with("PING\r\nPONG\r\n"), "{received}");
    }
}
