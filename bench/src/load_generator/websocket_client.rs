//! Opening a WebSocket connection by hand: TCP connect, the HTTP/1.1 upgrade
//! request, and a check of the `101 Switching Protocols` answer (RFC 6455
//! §4.1). httparse reads the response head.
//!
//! The connection that comes back is a plain `TcpStream` plus the bytes that
//! arrived after the response head, so each scenario drives frames its own
//! way (one task, or a reader and a writer half).

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bytes::BytesMut;
use sha1::{Digest as _, Sha1};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::client_frame::{server_frame_decoder, MessageDecoder};

/// The largest HTTP response head the client reads before giving up.
const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;

/// The most response headers the client parses.
const RESPONSE_HEADERS_MAX: usize = 32;

/// The GUID that RFC 6455 §1.3 appends to the key to form the accept value.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Where and how to open a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The server's address (loopback only in this kit).
    pub address: SocketAddr,
    /// The request target of the upgrade, for example `/v1/echo`.
    pub path: String,
    /// How long connect plus handshake may take.
    pub handshake_timeout: Duration,
    /// The largest frame or message the server may send back.
    pub payload_bytes_max: usize,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect or a read or write of the handshake failed.
    #[error("i/o during connect or handshake: {0}")]
    Io(#[from] std::io::Error),
    /// Connect plus handshake took longer than the timeout.
    #[error("handshake timed out")]
    Timeout,
    /// The response head is not valid HTTP or is too large.
    #[error("malformed response head: {0}")]
    MalformedResponse(String),
    /// The server answered something other than a valid 101.
    #[error("upgrade refused: {0}")]
    Refused(String),
}

/// An open WebSocket connection, ready for frames.
#[derive(Debug)]
pub struct ClientConnection {
    /// The socket, with `TCP_NODELAY` set.
    pub stream: TcpStream,
    /// Bytes already read that follow the response head.
    pub read_buffer: BytesMut,
    /// The decoder for server frames.
    pub decoder: MessageDecoder,
    /// Where this connection's masking keys come from.
    pub masks: MaskSource,
}

/// Connects and upgrades, within `options.handshake_timeout`.
pub async fn connect(
    options: &ConnectOptions,
    seed: u64,
) -> Result<ClientConnection, ConnectError> {
    let handshake = connect_and_upgrade(options, seed);
    tokio::time::timeout(options.handshake_timeout, handshake)
        .await
        .map_err(|_elapsed| ConnectError::Timeout)?
}

async fn connect_and_upgrade(
    options: &ConnectOptions,
    seed: u64,
) -> Result<ClientConnection, ConnectError> {
    let mut masks = MaskSource::new(seed);
    let mut stream = TcpStream::connect(options.address).await?;
    stream.set_nodelay(true)?;
    let mut key_bytes = [0u8; 16];
    key_bytes[..8].copy_from_slice(&masks.next_u64().to_ne_bytes());
    key_bytes[8..].copy_from_slice(&masks.next_u64().to_ne_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        path = options.path,
        address = options.address,
    );
    stream.write_all(request.as_bytes()).await?;
    let mut read_buffer = BytesMut::with_capacity(64 * 1024);
    let head_bytes = read_response_head(&mut stream, &mut read_buffer).await?;
    check_upgrade_response(&read_buffer[..head_bytes], &key)?;
    let _head = read_buffer.split_to(head_bytes);
    let decoder = server_frame_decoder(options.payload_bytes_max);
    Ok(ClientConnection {
        stream,
        read_buffer,
        decoder,
        masks,
    })
}

/// Reads until the buffer holds a whole head; returns the head's length.
async fn read_response_head(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
) -> Result<usize, ConnectError> {
    // Bounded: each turn reads at least one byte or fails, and the buffer is
    // capped at RESPONSE_HEAD_BYTES_MAX.
    loop {
        if let Some(end_idx) = find_head_end(buffer) {
            return Ok(end_idx);
        }
        if buffer.len() >= RESPONSE_HEAD_BYTES_MAX {
            return Err(ConnectError::MalformedResponse("head too large".into()));
        }
        if stream.read_buf(buffer).await? == 0 {
            return Err(ConnectError::MalformedResponse(
                "closed before the head ended".into(),
            ));
        }
    }
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|idx| idx + 4)
}

fn check_upgrade_response(head: &[u8], key: &str) -> Result<(), ConnectError> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let status = response
        .parse(head)
        .map_err(|error| ConnectError::MalformedResponse(error.to_string()))?;
    if status.is_partial() {
        return Err(ConnectError::MalformedResponse("partial head".into()));
    }
    if response.code != Some(101) {
        return Err(ConnectError::Refused(format!("status {:?}", response.code)));
    }
    let accept = response
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|header| header.value)
        .ok_or_else(|| ConnectError::Refused("no Sec-WebSocket-Accept".into()))?;
    if accept != expected_accept(key).as_bytes() {
        return Err(ConnectError::Refused("wrong Sec-WebSocket-Accept".into()));
    }
    Ok(())
}

/// The `Sec-WebSocket-Accept` value a server must answer for `key`.
pub fn expected_accept(key: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(key.as_bytes());
    hasher.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
}

/// A xorshift64* generator for handshake keys and masking keys. Masks need
/// to vary, not to be secret: the bench talks to its own servers.
#[derive(Debug, Clone)]
pub struct MaskSource {
    state: u64,
}

impl MaskSource {
    /// A generator from `seed` (any value; zero is mapped to a constant).
    pub fn new(seed: u64) -> MaskSource {
        let state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        MaskSource { state }
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The next masking key.
    pub fn next_mask(&mut self) -> [u8; 4] {
        let bits = (self.next_u64() >> 32) as u32;
        bits.to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_value_matches_the_rfc_6455_example() {
        assert_eq!(
            expected_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn upgrade_check_refuses_a_200_and_accepts_a_valid_101() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let refused = check_upgrade_response(b"HTTP/1.1 200 OK\r\n\r\n", key);
        assert!(matches!(refused, Err(ConnectError::Refused(_))));
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(check_upgrade_response(head, key).is_ok());
    }

    #[test]
    fn head_end_is_found_after_the_blank_line() {
        assert_eq!(find_head_end(b"HTTP/1.1 101 X\r\n\r\n\x82\x00"), Some(18));
        assert_eq!(find_head_end(b"HTTP/1.1 101 X\r\n"), None);
    }
}
