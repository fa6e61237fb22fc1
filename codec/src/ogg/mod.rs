//! Ogg pages (RFC 3533) and Ogg Opus (RFC 7845), sans-IO: no sockets, no
//! files, no clock.
//!
//! The data plane uses it twice for live audio. A broadcaster `PUT`s an Ogg
//! Opus stream: [`OggOpusDemuxer`] validates it and yields its packets.
//! Those packets (or our own libopus encoder's) go through
//! [`OggOpusPager`], which re-pages them into the stream listeners receive,
//! under our serial number with continuous page sequence numbers and
//! granule positions, even across source reconnects.
//!
//! Codemap:
//!
//! - [`crc`]: Ogg's CRC-32, slice-by-8 with a bytewise reference.
//! - [`page`]: one page parsed from, or written to, a buffer.
//! - [`opus_header`]: `OpusHead` and `OpusTags`, parsed and encoded.
//! - [`opus_packet`]: an Opus packet's duration from its TOC byte.
//! - [`demuxer`]: live ingest, bytes to [`DemuxEvent`]s.
//! - [`pager`]: packets to pages for listeners.
//! - [`error`]: [`OggError`], with a sentence for the `400` body.
//!
//! Written by hand rather than with the `ogg` crate: that crate reads from
//! `std::io::Read` (not sans-IO) and searches past garbage for the next
//! capture pattern, which suits files but not a live source that must be
//! refused, and it does not hand out pages as shared [`bytes::Bytes`].
//!
//! Architecture Invariant: nothing here panics on peer input or allocates
//! in proportion to a length the peer claims; every buffer is bounded by a
//! page ([`PAGE_BYTES_MAX`]) or by [`DemuxLimits::packet_bytes_max`].

pub mod crc;
pub mod demuxer;
pub mod error;
pub mod opus_header;
pub mod opus_packet;
pub mod page;
pub mod pager;

pub use demuxer::{DemuxEvent, DemuxLimits, OggOpusDemuxer, PACKET_BYTES_MAX_DEFAULT};
pub use error::OggError;
pub use opus_header::{OpusHead, OpusTags, OPUS_HEAD_MAGIC, OPUS_TAGS_MAGIC};
pub use opus_packet::{opus_packet_samples, PACKET_SAMPLES_MAX};
pub use page::{
    parse_page, write_page, LastPacket, PageView, CAPTURE_PATTERN, GRANULE_POSITION_NONE,
    HEADER_TYPE_BOS, HEADER_TYPE_CONTINUED, HEADER_TYPE_EOS, PAGE_BODY_BYTES_MAX, PAGE_BYTES_MAX,
    PAGE_HEADER_BYTES, SEGMENTS_PER_PAGE_MAX,
};
pub use pager::{OggOpusPager, END_OF_STREAM_FILLER_PACKET};
