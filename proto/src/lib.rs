//! Wire types that Veza's servers and clients share. No I/O lives here.
//!
//! - [`access_token`]: EdDSA JWT access tokens (claims, signing, verification).
//! - [`chat`]: the client chat protocol v1 (binary WebSocket frames; see
//!   `PROTOCOL.md`).
//! - [`control`]: the control protocol (rkyv frames, handshake, requests, pushes).
//! - [`close_code`]: the WebSocket close codes Veza sends, with what each one
//!   asks the client to do.
//! - [`error_body`]: the JSON body of every HTTP error response,
//!   `{"error": "...", "detail": "..."}`.
#![warn(missing_docs)]

pub mod access_token;
pub mod chat;
pub mod close_code;
pub mod control;
pub mod error_body;
