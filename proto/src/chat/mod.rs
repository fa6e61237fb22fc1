//! The client chat protocol, version 1: binary frames over a WebSocket at
//! [`CHAT_PATH`] with subprotocol [`SUBPROTOCOL`]. Sans-IO: this module turns
//! frames into bytes and bytes into frames; the data plane drives the
//! sockets, and `proto/PROTOCOL.md` is the language-neutral specification
//! (its worked examples are checked against this code by
//! `tests/protocol_document.rs`).
//!
//! - [`ClientFrame`]: the commands a client sends (opcodes 0x01–0x0D), each
//!   with a `request_id` the server echoes.
//! - [`ServerFrame`]: replies (0x80–0x8F, echoing the request id) and events
//!   (0x90 on, without one).
//! - [`ErrorCode`]: the code of an `Error` reply; [`DecodeError`]: why bytes
//!   did not decode, which the server answers with such a reply.
//! - [`opcode`]: every opcode as a named constant.
//!
//! Wire conventions: integers are big-endian (`i64` two's complement); a
//! `string` is a u16 byte length then UTF-8, a `text` a u32 byte length then
//! UTF-8, a `list<T>` a u16 count then the items, a `bool` one byte 0 or 1.
//!
//! Architecture Invariant: decoding checks structure only (lengths within
//! the frame, valid UTF-8, bools 0 or 1, known enumeration bytes, no
//! trailing bytes) and never panics on any input. The limits below are
//! semantic and enforced by the server, which answers
//! [`ErrorCode::Invalid`]; keeping them out of the decoder lets a server
//! change them without a protocol version.

mod client_frame;
mod error_code;
pub mod opcode;
mod server_frame;
mod status;
mod wire;

#[cfg(test)]
mod tests;

pub use client_frame::ClientFrame;
pub use error_code::{DecodeError, ErrorCode};
pub use server_frame::{HistoryMessage, MessageEvent, ReactionCount, ServerFrame};
pub use status::{PresenceStatus, RemovedReason};

/// The WebSocket subprotocol a client must offer in `Sec-WebSocket-Protocol`.
pub const SUBPROTOCOL: &str = "veza.v1";

/// The path of the chat WebSocket endpoint.
pub const CHAT_PATH: &str = "/v1/chat";

/// Longest access token in `Auth`, in bytes.
pub const TOKEN_BYTES_MAX: usize = 4096;

/// Longest `Send` nonce, in bytes.
pub const NONCE_BYTES_MAX: usize = 64;

/// Longest reaction emoji, in bytes.
pub const EMOJI_BYTES_MAX: usize = 64;

/// Most mentioned users in one `Send`.
pub const MENTIONS_MAX: usize = 50;

/// Largest `History` limit.
pub const HISTORY_LIMIT_MAX: u16 = 1000;

/// Longest live stream name in `WatchStream` and `UnwatchStream`, in bytes
/// (names match `^[a-z0-9][a-z0-9_-]{0,63}$`, the control plane's rule).
pub const STREAM_NAME_BYTES_MAX: usize = 64;

/// Whether `name` follows the stream name rule `^[a-z0-9][a-z0-9_-]{0,63}$`
/// (the one rule of both planes): lower-case so that a name is one URL, and
/// no dots or slashes so that it is one path segment everywhere
/// (`/v1/live/{name}`, file names of recordings).
pub fn is_valid_stream_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    bytes.len() <= STREAM_NAME_BYTES_MAX
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && bytes.iter().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'_' | b'-')
        })
}

/// Most live streams one connection watches at once (`WatchStream`).
pub const WATCHED_STREAMS_MAX: usize = 16;
