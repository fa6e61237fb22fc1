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
//! - [`ogg`]: Ogg pages (RFC 3533) and Ogg Opus (RFC 7845): CRC, page
//!   parsing and writing, OpusHead/OpusTags, a validating demuxer for live
//!   ingest and a pager that re-pages packets with continuous granules.
//! - [`dsp`]: the live stream's DSP chain (gain, EQ, compressor, true-peak
//!   limiter, loudness target), vectorised with a scalar reference.
//! - [`opus_ladder`]: libopus encoders at a ladder of bitrates, 20 ms frames.
//! - [`pcm`]: raw PCM (`audio/L16`) decoding.
#![warn(missing_docs)]

pub mod config_layers;
pub mod dsp;
pub mod http1;
pub mod ogg;
pub mod opus_ladder;
pub mod pcm;
pub mod websocket;
