//! WebSocket over a blocking `TcpStream` with hand-built frames, so tests can
//! send what no well-behaved client library would: unmasked frames, reserved
//! bits and opcodes, bad close payloads, headers announcing huge payloads.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::http::{self, HttpConnection, Response};

/// Frame opcodes (RFC 6455 §5.2).
pub mod opcode {
    /// Continues a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text message (UTF-8).
    pub const TEXT: u8 = 0x1;
    /// A binary message.
    pub const BINARY: u8 = 0x2;
    /// Closes the connection.
    pub const CLOSE: u8 = 0x8;
    /// A ping.
    pub const PING: u8 = 0x9;
    /// A pong.
    pub const PONG: u8 = 0xA;
}

/// The masking key of every frame built here (the example key of RFC 6455
/// §5.7): a fixed key keeps the bytes on the wire reproducible.
pub const MASK_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// How long the server may take to close TCP after its close frame. A
/// server-initiated close waits up to two seconds for the peer's close
/// frame first, so this leaves two seconds of slack on a loaded machine.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(4);
/// A server frame longer than this is a test failure, not something to buffer.
const SERVER_FRAME_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The `Sec-WebSocket-Key` of every raw handshake (RFC 6455 §1.3's example).
pub const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Encodes one frame exactly as given. `rsv_bits` are the three reserved bits
/// (RSV1 = 0b100); `mask` `None` sends the payload unmasked, which a client
/// must never do.
pub fn encode_frame(
    fin: bool,
    rsv_bits: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    assert!(rsv_bits <= 0b111 && opcode <= 0xF, "bits out of range");
    let mut frame = encode_header(fin, rsv_bits, opcode, mask, payload.len() as u64);
    let key = mask.unwrap_or([0; 4]);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(index, byte)| byte ^ key[index % 4]),
    );
    frame
}

/// Encodes a frame header that announces `length` payload bytes, without the
/// payload, to test what a server does on the header alone.
pub fn encode_header(
    fin: bool,
    rsv_bits: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    length: u64,
) -> Vec<u8> {
    let mut header = vec![(u8::from(fin) << 7) | (rsv_bits << 4) | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match length {
        0..=125 => header.push(mask_bit | length as u8),
        126..=0xFFFF => {
            header.push(mask_bit | 126);
            header.extend((length as u16).to_be_bytes());
        }
        _ => {
            header.push(mask_bit | 127);
            header.extend(length.to_be_bytes());
        }
    }
    if let Some(key) = mask {
        header.extend(key);
    }
    header
}

/// A well-formed client frame: masked, reserved bits clear.
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, 0, opcode, Some(MASK_KEY), payload)
}

/// The payload of a close frame: the code in network order, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// The bytes of an upgrade request to `/v1/echo` carrying exactly `fields`
/// after `Host`, so tests can leave out or spoil any one of them.
pub fn upgrade_request(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut request = String::from("GET /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in fields {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// The fields of a correct upgrade request.
pub fn standard_upgrade_fields() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", HANDSHAKE_KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
}

/// A frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// The FIN bit.
    pub fin: bool,
    /// The three reserved bits.
    pub rsv_bits: u8,
    /// The opcode.
    pub opcode: u8,
    /// The payload (servers never mask).
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The status code of a close frame, if it carries one.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, opcode::CLOSE, "not a close frame");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// A short description for failure messages.
    pub fn summary(&self) -> String {
        let shown = &self.payload[..self.payload.len().min(32)];
        format!(
            "opcode {:#x} fin {} rsv {:#b} {} bytes {:?}",
            self.opcode,
            self.fin,
            self.rsv_bits,
            self.payload.len(),
            String::from_utf8_lossy(shown)
        )
    }
}

/// A WebSocket client speaking raw frames.
pub struct RawWebSocket {
    stream: TcpStream,
    // Bytes read but not yet parsed into a frame.
    buffer: Vec<u8>,
}

impl RawWebSocket {
    /// Opens a WebSocket to `/v1/echo` with a correct handshake.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::handshake(addr, &[]).0
    }

    /// Opens a WebSocket to `/v1/echo` with the standard fields plus
    /// `extra_fields`; asserts the 101 and its accept key, and returns it.
    pub fn handshake(addr: SocketAddr, extra_fields: &[(&str, &str)]) -> (Self, Response) {
        Self::handshake_on(HttpConnection::open(addr), extra_fields)
    }

    /// Like [`RawWebSocket::handshake`], on a connection the test opened.
    pub fn handshake_on(
        mut connection: HttpConnection,
        extra_fields: &[(&str, &str)],
    ) -> (Self, Response) {
        let mut fields = standard_upgrade_fields();
        fields.extend_from_slice(extra_fields);
        let response = connection.request(&upgrade_request(&fields));
        assert_eq!(
            response.status,
            101,
            "upgrade refused: {}",
            response.body_text()
        );
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(derive_accept_key(HANDSHAKE_KEY.as_bytes()).as_str()),
            "Sec-WebSocket-Accept must hash our key"
        );
        let (stream, buffer) = connection.into_parts();
        (Self { stream, buffer }, response)
    }

    /// The socket, for tests that set options on it.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sets how long one read may block.
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set a read timeout");
    }

    /// Writes `bytes` (one or more encoded frames); fails the test on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|error| panic!("write {} bytes: {error}", bytes.len()));
    }

    /// Writes `bytes`.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one frame; fails the test if the server masked it.
    pub fn read_frame(&mut self) -> io::Result<ServerFrame> {
        self.fill_to(2)?;
        let fin = self.buffer[0] & 0x80 != 0;
        let rsv_bits = (self.buffer[0] >> 4) & 0b111;
        let opcode = self.buffer[0] & 0x0F;
        assert_eq!(
            self.buffer[1] & 0x80,
            0,
            "a server must not mask its frames"
        );
        let (length, header_length) = match self.buffer[1] & 0x7F {
            126 => {
                self.fill_to(4)?;
                (
                    u64::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]])),
                    4,
                )
            }
            127 => {
                self.fill_to(10)?;
                let bytes: [u8; 8] = self.buffer[2..10].try_into().expect("eight bytes");
                (u64::from_be_bytes(bytes), 10)
            }
            short => (u64::from(short), 2),
        };
        assert!(
            length <= SERVER_FRAME_BYTES_MAX,
            "server frame of {length} bytes"
        );
        let frame_length = header_length + length as usize;
        self.fill_to(frame_length)?;
        let frame: Vec<u8> = self.buffer.drain(..frame_length).collect();
        Ok(ServerFrame {
            fin,
            rsv_bits,
            opcode,
            payload: frame[header_length..].to_vec(),
        })
    }

    /// Reads one frame; fails the test on error.
    pub fn expect_frame(&mut self) -> ServerFrame {
        self.read_frame()
            .unwrap_or_else(|error| panic!("expected a frame from the server: {error}"))
    }

    /// Reads frames until the server's close frame, asserts its code, then
    /// asserts that the server closes TCP. Data frames before the close
    /// (echoes of what was sent before the error) are allowed.
    pub fn expect_close(&mut self, code: u16) {
        let close = self.read_until_close();
        let reason =
            String::from_utf8_lossy(close.payload.get(2..).unwrap_or_default()).into_owned();
        assert_eq!(
            close.close_code(),
            Some(code),
            "close code (reason the server gave: {reason:?})"
        );
        self.expect_tcp_closed();
    }

    /// Reads frames until a close frame and returns it; fails the test if
    /// the stream ends or stalls first.
    pub fn read_until_close(&mut self) -> ServerFrame {
        let mut before_close = Vec::new();
        loop {
            match self.read_frame() {
                Ok(frame) if frame.opcode == opcode::CLOSE => return frame,
                Ok(frame) => {
                    before_close.push(frame.summary());
                    assert!(before_close.len() < 10_000, "no close frame among 10000 frames");
                }
                Err(error) => panic!(
                    "expected a close frame, but the read failed ({error}) after {} other frames: {:?}",
                    before_close.len(),
                    before_close.iter().rev().take(3).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Asserts that the server closes TCP within [`CLOSE_TIMEOUT`] and sends
    /// nothing more.
    pub fn expect_tcp_closed(&mut self) {
        assert!(
            self.buffer.is_empty(),
            "the server sent {} bytes after its close frame",
            self.buffer.len()
        );
        if let Err(reason) = http::wait_for_end_of_stream(&mut self.stream, CLOSE_TIMEOUT) {
            panic!("after its close frame the server must close TCP: {reason}");
        }
    }

    /// Sends `payload` as one binary message and asserts that the same bytes
    /// come back.
    pub fn assert_echoes(&mut self, payload: &[u8]) {
        self.send(&client_frame(opcode::BINARY, true, payload));
        let (message_opcode, echoed) = self.read_message();
        assert_eq!(message_opcode, opcode::BINARY, "echo of a binary message");
        assert_eq!(echoed, payload, "echoed payload");
    }

    /// Reads the next data message, joining its fragments; returns its
    /// opcode and payload. Pings from the server on the way are skipped.
    pub fn read_message(&mut self) -> (u8, Vec<u8>) {
        let mut message: Option<(u8, Vec<u8>)> = None;
        loop {
            let frame = self.expect_frame();
            match (frame.opcode, &mut message) {
                (opcode::PING | opcode::PONG, _) => continue,
                (opcode::TEXT | opcode::BINARY, None) => {
                    message = Some((frame.opcode, frame.payload))
                }
                (opcode::CONTINUATION, Some((_, payload))) => payload.extend(frame.payload),
                _ => panic!("expected a data message, got {}", frame.summary()),
            }
            if frame.fin {
                return message.expect("a final frame ends a started message");
            }
        }
    }

    fn fill_to(&mut self, length: usize) -> io::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        while self.buffer.len() < length {
            let n_read = self.stream.read(&mut chunk)?;
            if n_read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed with {} bytes of a frame pending",
                        self.buffer.len()
                    ),
                ));
            }
            self.buffer.extend_from_slice(&chunk[..n_read]);
        }
        Ok(())
    }
}
