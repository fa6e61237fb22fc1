//! Sans-IO HTTP/1.1 server codec: request heads, request bodies, response
//! heads and JSON error responses. Nothing here reads a socket or a clock.
//!
//! Codemap:
//!
//! - [`parse`]: [`parse_request_head`] turns the front of a receive buffer
//!   into a [`RequestHead`] (httparse does the tokenising) and decides the
//!   body framing per RFC 9112 §6, refusing anything that could let two
//!   parsers disagree about where a request ends.
//! - [`body`]: [`BodyDecoder`], a state machine that hands out body bytes
//!   zero-copy for `Content-Length` and `chunked` bodies.
//! - [`response`]: [`write_response_head`] and [`write_error_response`]
//!   append response bytes to an output buffer.
//! - [`date`]: [`HttpDate`], the `Date` header value, re-formatted at most
//!   once per second from a time the caller hands in.
//! - [`request`]: the parsed [`RequestHead`] and its [`BodyFraming`].
//!
//! A connection driver uses them in a loop:
//!
//! ```
//! use bytes::BytesMut;
//! use veza_codec::http1::{parse_request_head, BodyChunk, BodyDecoder, RequestLimits};
//!
//! let limits = RequestLimits::default();
//! let mut buffer = BytesMut::from(&b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /"[..]);
//! let (head, head_bytes) = parse_request_head(&buffer, &limits).unwrap().unwrap();
//! let _ = buffer.split_to(head_bytes);
//! let mut decoder = BodyDecoder::new(head.body, limits.body_bytes_max);
//! assert_eq!(decoder.decode(&mut buffer).unwrap(), BodyChunk::Data("hi".into()));
//! assert_eq!(decoder.decode(&mut buffer).unwrap(), BodyChunk::End);
//! // The start of the next pipelined request stays in the buffer.
//! assert_eq!(&buffer[..], b"GET /");
//! ```
//!
//! Architecture Invariant: every byte a peer can make us hold is bounded by
//! a limit — the head by [`RequestLimits::head_bytes_max`], a chunk-size line
//! by [`body::CHUNK_LINE_BYTES_MAX`], the trailer section by
//! [`body::TRAILER_BYTES_MAX`]. A parser that answers "need more bytes"
//! never does so while already holding more than its limit.
//!
//! Architecture Invariant: malformed input is answered with a typed
//! [`RequestError`] (which knows its status code), never a panic.

pub mod body;
pub mod date;
pub mod parse;
pub mod range;
pub mod request;
pub mod response;

pub use body::{BodyChunk, BodyDecoder};
pub use date::HttpDate;
pub use parse::{parse_request_head, RequestError, RequestLimits};
pub use request::{BodyFraming, RequestHead};
pub use response::{
    reason_phrase, write_error_response, write_response_head, write_response_head_with_fields,
    ResponseHead,
};
