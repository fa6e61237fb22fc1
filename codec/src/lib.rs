//! Sans-IO codecs for Veza. Nothing here touches a socket, a file or a clock:
//! callers hand in bytes (and the time where it matters) and get back parsed
//! values or encoded bytes. The data plane is the driver.
//!
//! - [`config_layers`]: defaults, TOML and `VEZA_*` variables merged into a
//!   configuration struct, every error naming its key.
//! - [`http1`]: HTTP/1.1 request heads (httparse), request bodies
//!   (Content-Length and chunked), response heads, JSON error responses.
//! - [`websocket`]: RFC 6455 upgrade handshake, frame decoding and encoding,
//!   vectorised unmasking, message assembly with incremental UTF-8 checks.
#![warn(missing_docs)]

pub mod config_layers;
pub mod http1;
pub mod websocket;
