//! The control protocol between data planes and the control plane: framed
//! rkyv archives over a Unix or TCP socket (DESIGN.md §5). Sans-IO: this
//! module turns values into bytes and bytes into values; the control
//! plane's `control_server` (tokio) and the data plane's `control_client`
//! (monoio) drive the sockets.
//!
//! - [`frame`]: the length-prefixed framing, [`FrameEncoder`] and
//!   [`FrameDecoder`] with bytecheck validation on receipt.
//! - [`message`]: every frame: [`ClientFrame`] (`Hello`, `Request`) and
//!   [`ServerFrame`] (`Welcome`, `Response`, `Push`, `Error`).
//! - [`domain`]: the values requests and pushes carry (signing keys, rights,
//!   message changes, history, settings, revocations), mirrored from the
//!   control plane's types.
//! - [`handshake`]: the version check both ends apply.
//!
//! A conversation:
//!
//! ```text
//! data plane                                   control plane
//!   Hello { version, node_id, shard } ──────────▶
//!                       ◀────────── Welcome { version, server_version }
//!   Request { id: 1, FetchSigningKeys } ────────▶
//!   Request { id: 2, PersistBatch [...] } ──────▶
//!                       ◀────────── Response { id: 1, Ok(SigningKeys) }
//!                       ◀────────── Push(ConfigChanged { version, .. })
//!                       ◀────────── Response { id: 2, Ok(BatchPersisted) }   (after COMMIT)
//! ```
//!
//! Architecture Invariant: a frame that fails validation is answered with an
//! [`ErrorFrame`] and the connection is closed; no input makes either end
//! panic. Responses may come in any order; pushes may come between them.

// rkyv_derive 0.8 leaves the fields of the resolver enums it generates for
// enums with named-field variants undocumented, and a lint attribute cannot
// reach a generated item; so the lint is off for the two modules holding such
// enums. Everything written by hand in them is documented.
#[allow(missing_docs)]
pub mod domain;
pub mod frame;
pub mod handshake;
#[allow(missing_docs)]
pub mod message;

#[cfg(test)]
mod tests;

pub use domain::{
    LiveCredential, LiveSourceGrant, MessageChange, NewMessage, ReactionCount, Revocation, Role,
    RoomRights, RuntimeSettings, Setting, SettingValue, SigningKey, StoredMessage, TrackMeta,
    TrackPlays, TrackRendition, TrackVisibility,
};
pub use frame::{FrameDecoder, FrameEncoder, FrameError, FRAME_BYTES_MAX_DEFAULT};
pub use message::{
    ClientFrame, ErrorFrame, Hello, ProtocolErrorCode, Push, Request, RequestBody, RequestError,
    RequestErrorCode, Response, ResponseBody, ResponseResult, ServerFrame, Welcome,
};

/// The protocol version this build speaks. Bump it with any change to a
/// frame's layout: rkyv archives carry no schema, so both ends must agree.
pub const PROTOCOL_VERSION: u16 = 4;

/// Decodes what a data plane sends (the control plane's side).
pub type ClientFrameDecoder = FrameDecoder<ClientFrame>;

/// Decodes what the control plane sends (the data plane's side).
pub type ServerFrameDecoder = FrameDecoder<ServerFrame>;
