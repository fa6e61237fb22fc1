//! A small tokio client of the control protocol (`veza_proto::control`), as
//! one data-plane shard would hold it: one Unix stream, `Hello` then
//! requests with ids, pushes ignored.
//!
//! It is written on tokio rather than reusing the data plane's monoio
//! `ControlClient` because the load generator's threads run tokio
//! ([`crate::load_generator::client_threads`]), and because the benchmark
//! needs what `ControlClient` hides: several batches in flight on purpose
//! and the send time of each one.

use std::path::Path;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use veza_proto::control::handshake::{check_welcome, hello};
use veza_proto::control::{
    ClientFrame, FrameEncoder, FrameError, MessageChange, Request, RequestBody, ResponseBody,
    ResponseResult, ServerFrame, ServerFrameDecoder, StoredMessage, FRAME_BYTES_MAX_DEFAULT,
};

/// Bytes reserved in the read buffer before each read.
const READ_RESERVE_BYTES: usize = 64 * 1024;

/// Why the control connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolClientError {
    /// Connecting, reading or writing the socket failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be encoded or the server sent an invalid one.
    #[error("control frame: {0}")]
    Frame(#[from] FrameError),
    /// The server closed the connection.
    #[error("the control plane closed the connection")]
    Closed,
    /// The server sent an error frame (it closes right after).
    #[error("the control plane ended the connection: {code}: {message}")]
    ErrorFrame {
        /// The protocol error code's name.
        code: &'static str,
        /// Its explanation.
        message: String,
    },
    /// A frame that makes no sense at this point of the conversation.
    #[error("unexpected frame from the control plane: {0}")]
    Unexpected(String),
    /// A request was refused.
    #[error("request refused: {code}: {message}")]
    Refused {
        /// The request error code's name.
        code: &'static str,
        /// Its explanation.
        message: String,
    },
}

impl ProtocolClientError {
    /// A stable name for the report's error counts.
    pub fn kind(&self) -> String {
        match self {
            ProtocolClientError::Io(_) => "io".into(),
            ProtocolClientError::Frame(_) => "malformed_frame".into(),
            ProtocolClientError::Closed => "closed".into(),
            ProtocolClientError::ErrorFrame { code, .. } => format!("error_frame_{code}"),
            ProtocolClientError::Unexpected(_) => "unexpected_frame".into(),
            ProtocolClientError::Refused { code, .. } => format!("refused_{code}"),
        }
    }
}

/// What [`ControlConnection::receive_response`] returns: a response and its id.
#[derive(Debug)]
pub struct ReceivedResponse {
    /// The id of the request it answers.
    pub request_id: u64,
    /// The answer.
    pub result: ResponseResult,
}

/// One connection to the control plane, after the handshake.
pub struct ControlConnection {
    stream: UnixStream,
    read_buffer: BytesMut,
    write_buffer: BytesMut,
    decoder: ServerFrameDecoder,
    encoder: FrameEncoder,
    next_request_id: u64,
    pushes_received: u64,
}

impl ControlConnection {
    /// Connects to `socket_path` and says `Hello` as shard `shard_idx` of
    /// `shard_count` of node `node_id`.
    pub async fn connect(
        socket_path: &Path,
        node_id: &str,
        shard_idx: u32,
        shard_count: u32,
    ) -> Result<ControlConnection, ProtocolClientError> {
        let stream = UnixStream::connect(socket_path).await?;
        let mut connection = ControlConnection {
            stream,
            read_buffer: BytesMut::with_capacity(READ_RESERVE_BYTES),
            write_buffer: BytesMut::new(),
            decoder: ServerFrameDecoder::new(FRAME_BYTES_MAX_DEFAULT),
            encoder: FrameEncoder::new(FRAME_BYTES_MAX_DEFAULT),
            next_request_id: 1,
            pushes_received: 0,
        };
        let hello = ClientFrame::Hello(hello(node_id, shard_idx, shard_count));
        connection.write_frame(&hello).await?;
        match connection.receive_frame().await? {
            ServerFrame::Welcome(welcome) => {
                check_welcome(&welcome).map_err(|error| ProtocolClientError::ErrorFrame {
                    code: error.code.name(),
                    message: error.message,
                })?;
                Ok(connection)
            }
            other => Err(unexpected_or_error(other)),
        }
    }

    /// Pushes received so far (the benchmark ignores their content).
    pub fn pushes_received(&self) -> u64 {
        self.pushes_received
    }

    /// Sends `PersistBatch { changes }` and returns its request id and the
    /// changes, handed back so the caller can reuse their buffers for the
    /// next batch instead of allocating one per message.
    pub async fn send_persist_batch(
        &mut self,
        changes: Vec<MessageChange>,
    ) -> Result<(u64, Vec<MessageChange>), ProtocolClientError> {
        let request_id = self.take_request_id();
        let frame = ClientFrame::Request(Request {
            request_id,
            body: RequestBody::PersistBatch { changes },
        });
        self.write_frame(&frame).await?;
        let ClientFrame::Request(Request {
            body: RequestBody::PersistBatch { changes },
            ..
        }) = frame
        else {
            unreachable!("built as a PersistBatch request above");
        };
        Ok((request_id, changes))
    }

    /// Waits for the next response, skipping pushes.
    pub async fn receive_response(&mut self) -> Result<ReceivedResponse, ProtocolClientError> {
        // Bounded by the connection: every iteration consumes one frame the
        // server sent, and the caller bounds the wait with a deadline.
        loop {
            match self.receive_frame().await? {
                ServerFrame::Response(response) => {
                    return Ok(ReceivedResponse {
                        request_id: response.request_id,
                        result: response.result,
                    })
                }
                ServerFrame::Push(_) => self.pushes_received += 1,
                other => return Err(unexpected_or_error(other)),
            }
        }
    }

    /// `FetchHistory` of `room_id` before `before_seq`, at most `limit`
    /// messages, in ascending seq. Only for use with no batch in flight.
    pub async fn fetch_history_before(
        &mut self,
        room_id: i64,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, ProtocolClientError> {
        let request_id = self.take_request_id();
        let frame = ClientFrame::Request(Request {
            request_id,
            body: RequestBody::FetchHistory {
                room_id,
                before_seq: Some(before_seq),
                after_seq: None,
                limit,
            },
        });
        self.write_frame(&frame).await?;
        let response = self.receive_response().await?;
        if response.request_id != request_id {
            return Err(ProtocolClientError::Unexpected(format!(
                "response to request {} while waiting for {request_id}",
                response.request_id
            )));
        }
        match into_body(response.result)? {
            ResponseBody::History { messages } => Ok(messages),
            other => Err(ProtocolClientError::Unexpected(format!("{other:?}"))),
        }
    }

    fn take_request_id(&mut self) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        request_id
    }

    async fn write_frame(&mut self, frame: &ClientFrame) -> Result<(), ProtocolClientError> {
        self.write_buffer.clear();
        self.encoder.encode(frame, &mut self.write_buffer)?;
        self.stream.write_all(&self.write_buffer).await?;
        Ok(())
    }

    async fn receive_frame(&mut self) -> Result<ServerFrame, ProtocolClientError> {
        // Bounded: each read either completes a frame, adds bytes toward the
        // decoder's frame_bytes_max, or ends the connection.
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.read_buffer)? {
                return Ok(frame);
            }
            self.read_buffer.reserve(READ_RESERVE_BYTES);
            if self.stream.read_buf(&mut self.read_buffer).await? == 0 {
                return Err(ProtocolClientError::Closed);
            }
        }
    }
}

/// The body of a successful response, or the refusal as an error.
pub fn into_body(result: ResponseResult) -> Result<ResponseBody, ProtocolClientError> {
    match result {
        ResponseResult::Ok(body) => Ok(body),
        ResponseResult::Err(error) => Err(ProtocolClientError::Refused {
            code: error.code.name(),
            message: error.message,
        }),
    }
}

fn unexpected_or_error(frame: ServerFrame) -> ProtocolClientError {
    match frame {
        ServerFrame::Error(error) => ProtocolClientError::ErrorFrame {
            code: error.code.name(),
            message: error.message,
        },
        other => ProtocolClientError::Unexpected(format!("{other:?}")),
    }
}
