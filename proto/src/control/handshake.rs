//! The version handshake, as pure functions both ends call.
//!
//! The data plane sends [`Hello`] first; the control plane answers
//! [`Welcome`] when it speaks the same [`PROTOCOL_VERSION`], otherwise an
//! [`ErrorFrame`] with [`ProtocolErrorCode::VersionMismatch`], and closes.
//! One version at a time: both processes are built from one workspace and
//! upgraded together, so there is nothing to negotiate; the check exists to
//! turn a mismatched deployment into a clear error instead of garbage.

use super::message::{ErrorFrame, Hello, ProtocolErrorCode, Welcome};
use super::PROTOCOL_VERSION;

/// The longest node id a `Hello` may carry.
pub const NODE_ID_BYTES_MAX: usize = 128;

/// The most shards a `Hello` may announce.
pub const SHARD_COUNT_MAX: u32 = 1024;

/// The `Hello` of shard `shard_idx` of `shard_count` on node `node_id`.
pub fn hello(node_id: &str, shard_idx: u32, shard_count: u32) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        node_id: node_id.to_owned(),
        shard_idx,
        shard_count,
    }
}

/// The control plane's decision on a `Hello`: the `Welcome` to send, or the
/// error frame to send before closing.
pub fn accept_hello(hello: &Hello, server_version: &str) -> Result<Welcome, ErrorFrame> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(ErrorFrame {
            code: ProtocolErrorCode::VersionMismatch,
            message: format!(
                "this control plane speaks protocol version {PROTOCOL_VERSION}, the data plane sent {}",
                hello.protocol_version
            ),
        });
    }
    if hello.node_id.is_empty() || hello.node_id.len() > NODE_ID_BYTES_MAX {
        return Err(malformed_hello(format!(
            "node_id must be 1 to {NODE_ID_BYTES_MAX} bytes"
        )));
    }
    if hello.shard_count == 0
        || hello.shard_count > SHARD_COUNT_MAX
        || hello.shard_idx >= hello.shard_count
    {
        return Err(malformed_hello(format!(
            "shard {} of {} is impossible (at most {SHARD_COUNT_MAX} shards)",
            hello.shard_idx, hello.shard_count
        )));
    }
    Ok(Welcome {
        protocol_version: PROTOCOL_VERSION,
        server_version: server_version.to_owned(),
    })
}

/// The data plane's check of a `Welcome`.
pub fn check_welcome(welcome: &Welcome) -> Result<(), ErrorFrame> {
    if welcome.protocol_version == PROTOCOL_VERSION {
        return Ok(());
    }
    Err(ErrorFrame {
        code: ProtocolErrorCode::VersionMismatch,
        message: format!(
            "this data plane speaks protocol version {PROTOCOL_VERSION}, the control plane answered {}",
            welcome.protocol_version
        ),
    })
}

fn malformed_hello(message: String) -> ErrorFrame {
    ErrorFrame {
        code: ProtocolErrorCode::MalformedFrame,
        message: format!("invalid Hello: {message}"),
    }
}
