//! Sans-IO codecs for Veza. Nothing here touches a socket, a file or a clock:
//! callers hand in bytes (and the time where it matters) and get back parsed
//! values or encoded bytes. The data plane is the driver.
//!
//! - [`http1`]: HTTP/1.1 request heads (httparse), request bodies
//!   (Content-Length and chunked), response heads, JSON error responses.
//! - [`websocket`]: RFC 6455 upgrade handshake, frame decoding and encoding,
//!   vectorised unmasking, message assembly with incremental UTF-8 checks.
#![warn(missing_docs)]

pub mod http1;
pub mod websocket;
