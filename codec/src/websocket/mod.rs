//! WebSocket (RFC 6455), server side first, sans-IO.
//!
//! Codemap:
//!
//! - [`handshake`]: validates the HTTP upgrade request, picks a subprotocol
//!   and writes the `101 Switching Protocols` response.
//! - [`frame`]: opcodes and frame encoding (headers, whole frames, close
//!   payloads).
//! - [`decoder`]: [`MessageDecoder`] turns bytes into [`Message`]s and every
//!   violation of RFC 6455 §5 into a [`ProtocolError`] with its close code.
//! - [`mask`]: XOR (un)masking, vectorised; the only `unsafe` in the module.
//! - [`utf8`]: incremental UTF-8 validation across fragments.
//!
//! No extension (permessage-deflate included) is negotiated, so the reserved
//! bits must always be zero.
//!
//! Architecture Invariant: nothing here reads a socket or a clock, and
//! nothing panics on peer input: malformed bytes become a typed error that
//! says which close code to answer with.

pub mod decoder;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;

pub use decoder::{DecoderLimits, Message, MessageDecoder, ProtocolError, Role};
pub use frame::{
    close_payload, encode_frame, encode_frame_header, encode_masked_frame, frame_header_bytes,
    Opcode, CONTROL_PAYLOAD_BYTES_MAX, FRAME_HEADER_BYTES_MAX,
};
pub use handshake::{
    accept_key, validate_upgrade, write_switching_protocols, Accepted, HandshakeError,
    WEBSOCKET_GUID, WEBSOCKET_VERSION,
};
pub use mask::{apply_mask, apply_mask_scalar};
pub use utf8::{Utf8Error, Utf8Validator};
