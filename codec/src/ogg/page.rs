//! Ogg pages (RFC 3533 §6): parsing one page from the front of a buffer and
//! writing one page from packets, lacing and CRC included.
//!
//! Page layout, all integers little-endian:
//!
//! ```text
//! 0  "OggS"              capture pattern
//! 4  version             always 0
//! 5  header_type         CONTINUED | BOS | EOS
//! 6  granule_position    u64
//! 14 serial              u32
//! 18 sequence            u32
//! 22 crc                 u32, summed with this field as zero
//! 26 n_segments          u8
//! 27 segment_table       n_segments lacing values; a value below 255 ends a packet
//!    body                sum of the lacing values
//! ```

use bytes::{BufMut, BytesMut};

use super::crc::{crc32, crc32_update};
use super::error::OggError;

/// Header type flag: the page's first packet continues one from the
/// previous page.
pub const HEADER_TYPE_CONTINUED: u8 = 0x01;
/// Header type flag: first page of a logical stream.
pub const HEADER_TYPE_BOS: u8 = 0x02;
/// Header type flag: last page of a logical stream.
pub const HEADER_TYPE_EOS: u8 = 0x04;
/// Every flag RFC 3533 defines; other bits must be zero.
const HEADER_TYPE_KNOWN: u8 = HEADER_TYPE_CONTINUED | HEADER_TYPE_BOS | HEADER_TYPE_EOS;

/// The capture pattern that starts every page.
pub const CAPTURE_PATTERN: &[u8; 4] = b"OggS";
/// Bytes of the fixed page header, up to and including the segment count.
pub const PAGE_HEADER_BYTES: usize = 27;
/// Lacing values in a full segment table.
pub const SEGMENTS_PER_PAGE_MAX: usize = 255;
/// A lacing value of 255 means "the packet goes on"; anything less ends it.
pub const LACING_VALUE_MAX: u8 = 255;
/// Body bytes of a page whose 255 segments are all full.
pub const PAGE_BODY_BYTES_MAX: usize = SEGMENTS_PER_PAGE_MAX * LACING_VALUE_MAX as usize;
/// The largest page: header, full segment table, full body.
pub const PAGE_BYTES_MAX: usize = PAGE_HEADER_BYTES + SEGMENTS_PER_PAGE_MAX + PAGE_BODY_BYTES_MAX;
/// The granule position of a page on which no packet ends (RFC 7845 §4).
pub const GRANULE_POSITION_NONE: u64 = u64::MAX;

const VERSION_OFFSET: usize = 4;
const HEADER_TYPE_OFFSET: usize = 5;
const GRANULE_POSITION_OFFSET: usize = 6;
const SERIAL_OFFSET: usize = 14;
const SEQUENCE_OFFSET: usize = 18;
const CRC_OFFSET: usize = 22;
const SEGMENT_COUNT_OFFSET: usize = 26;

/// One page, borrowed from the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageView<'a> {
    /// [`HEADER_TYPE_CONTINUED`], [`HEADER_TYPE_BOS`], [`HEADER_TYPE_EOS`].
    pub header_type: u8,
    /// Codec-defined position; for Opus, 48 kHz samples up to the end of the
    /// last packet that ends on this page, or [`GRANULE_POSITION_NONE`].
    pub granule_position: u64,
    /// Identifies the logical stream the page belongs to.
    pub serial: u32,
    /// Page counter within the logical stream.
    pub sequence: u32,
    /// The lacing values, one per segment.
    pub segment_table: &'a [u8],
    /// The segments' bytes, back to back.
    pub body: &'a [u8],
}

impl PageView<'_> {
    /// Whether the page's first segment continues a packet from the
    /// previous page.
    pub fn is_continued(&self) -> bool {
        self.header_type & HEADER_TYPE_CONTINUED != 0
    }

    /// Whether the page begins a logical stream.
    pub fn is_beginning_of_stream(&self) -> bool {
        self.header_type & HEADER_TYPE_BOS != 0
    }

    /// Whether the page ends a logical stream.
    pub fn is_end_of_stream(&self) -> bool {
        self.header_type & HEADER_TYPE_EOS != 0
    }
}

/// Parses the page at the very start of `buffer`.
///
/// Returns `Ok(None)` when the bytes so far are a valid beginning of a page
/// but the page is not complete, and `Ok(Some((page, page_bytes)))` once it
/// is. Errors are reported as early as the bytes allow: a buffer whose
/// first bytes cannot start `OggS` is refused before the rest arrives, so
/// splitting the input anywhere yields the same outcome.
pub fn parse_page(buffer: &[u8]) -> Result<Option<(PageView<'_>, usize)>, OggError> {
    let prefix_bytes = buffer.len().min(CAPTURE_PATTERN.len());
    if buffer[..prefix_bytes] != CAPTURE_PATTERN[..prefix_bytes] {
        return Err(OggError::NotOgg);
    }
    if let Some(&version) = buffer.get(VERSION_OFFSET) {
        if version != 0 {
            return Err(OggError::UnsupportedVersion(version));
        }
    }
    if let Some(&header_type) = buffer.get(HEADER_TYPE_OFFSET) {
        if header_type & !HEADER_TYPE_KNOWN != 0 {
            return Err(OggError::BadHeaderType(header_type));
        }
    }
    if buffer.len() < PAGE_HEADER_BYTES {
        return Ok(None);
    }
    let n_segments = buffer[SEGMENT_COUNT_OFFSET] as usize;
    let body_start = PAGE_HEADER_BYTES + n_segments;
    let Some(segment_table) = buffer.get(PAGE_HEADER_BYTES..body_start) else {
        return Ok(None);
    };
    let body_bytes: usize = segment_table.iter().map(|&lacing| lacing as usize).sum();
    let page_bytes = body_start + body_bytes;
    let Some(page) = buffer.get(..page_bytes) else {
        return Ok(None);
    };
    let sequence = read_u32(page, SEQUENCE_OFFSET);
    let crc_stored = read_u32(page, CRC_OFFSET);
    let crc_computed = crc32_update(
        crc32_update(crc32(&page[..CRC_OFFSET]), &[0; 4]),
        &page[CRC_OFFSET + 4..],
    );
    if crc_stored != crc_computed {
        return Err(OggError::CrcMismatch { sequence });
    }
    let view = PageView {
        header_type: page[HEADER_TYPE_OFFSET],
        granule_position: u64::from_le_bytes(
            page[GRANULE_POSITION_OFFSET..SERIAL_OFFSET]
                .try_into()
                .expect("slice of 8 bytes"),
        ),
        serial: read_u32(page, SERIAL_OFFSET),
        sequence,
        segment_table,
        body: &page[body_start..],
    };
    Ok(Some((view, page_bytes)))
}

fn read_u32(page: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(
        page[offset..offset + 4]
            .try_into()
            .expect("slice of 4 bytes"),
    )
}

/// Whether the last packet handed to [`write_page`] ends on the page or
/// continues on the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastPacket {
    /// Every packet ends on this page.
    Complete,
    /// The last packet goes on in the next page, which the caller must
    /// write with [`HEADER_TYPE_CONTINUED`]. Its piece here must be a
    /// multiple of 255 bytes, since a shorter lacing value would end it.
    ContinuesOnNextPage,
}

/// Appends one page holding `packets` to `out`: header, lacing values,
/// bodies and CRC.
///
/// `header_type` is written as given; setting [`HEADER_TYPE_CONTINUED`]
/// when `packets[0]` is the rest of a packet is the caller's job.
/// Fails with [`OggError::PageTooLarge`], writing nothing, when the packets
/// need more than 255 lacing values.
///
/// # Panics
///
/// When `last_packet` is [`LastPacket::ContinuesOnNextPage`] and the last
/// piece is empty or not a multiple of 255 bytes: such a page cannot be
/// expressed in Ogg, so asking for one is a programming error.
pub fn write_page(
    header_type: u8,
    granule_position: u64,
    serial: u32,
    sequence: u32,
    packets: &[&[u8]],
    last_packet: LastPacket,
    out: &mut BytesMut,
) -> Result<(), OggError> {
    let lacing_bytes = |packet: &[u8]| packet.len() / LACING_VALUE_MAX as usize + 1;
    let mut n_segments: usize = packets.iter().map(|packet| lacing_bytes(packet)).sum();
    if last_packet == LastPacket::ContinuesOnNextPage {
        let last = packets
            .last()
            .expect("a continuing packet needs a piece on this page");
        assert!(
            !last.is_empty() && last.len().is_multiple_of(LACING_VALUE_MAX as usize),
            "a packet piece that continues must be a non-zero multiple of 255 bytes"
        );
        // No terminating lacing value: the next page finishes the packet.
        n_segments -= 1;
    }
    if n_segments > SEGMENTS_PER_PAGE_MAX {
        return Err(OggError::PageTooLarge);
    }
    let mut segment_table = [0u8; SEGMENTS_PER_PAGE_MAX];
    let mut segment_idx = 0;
    for packet in packets {
        let n_full_segments = packet.len() / LACING_VALUE_MAX as usize;
        segment_table[segment_idx..segment_idx + n_full_segments].fill(LACING_VALUE_MAX);
        segment_idx += n_full_segments;
        if segment_idx < n_segments {
            segment_table[segment_idx] = (packet.len() % LACING_VALUE_MAX as usize) as u8;
            segment_idx += 1;
        }
    }
    debug_assert_eq!(segment_idx, n_segments);
    let page_start = out.len();
    write_page_header(
        header_type,
        granule_position,
        serial,
        sequence,
        &segment_table[..n_segments],
        out,
    );
    for packet in packets {
        out.put_slice(packet);
    }
    seal_page(&mut out[page_start..]);
    Ok(())
}

/// Writes the header and segment table with a zero CRC; [`seal_page`]
/// fills the CRC in once the body follows.
pub(crate) fn write_page_header(
    header_type: u8,
    granule_position: u64,
    serial: u32,
    sequence: u32,
    segment_table: &[u8],
    out: &mut BytesMut,
) {
    debug_assert!(segment_table.len() <= SEGMENTS_PER_PAGE_MAX);
    debug_assert_eq!(header_type & !HEADER_TYPE_KNOWN, 0);
    out.reserve(PAGE_HEADER_BYTES + segment_table.len());
    out.put_slice(CAPTURE_PATTERN);
    out.put_u8(0);
    out.put_u8(header_type);
    out.put_u64_le(granule_position);
    out.put_u32_le(serial);
    out.put_u32_le(sequence);
    out.put_u32_le(0);
    out.put_u8(segment_table.len() as u8);
    out.put_slice(segment_table);
}

/// Computes the CRC of a complete page whose CRC field is zero and stores it.
pub(crate) fn seal_page(page: &mut [u8]) {
    debug_assert_eq!(&page[CRC_OFFSET..CRC_OFFSET + 4], &[0; 4]);
    let crc = crc32(page);
    page[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(packets: &[&[u8]], last_packet: LastPacket) -> BytesMut {
        let mut out = BytesMut::new();
        write_page(
            HEADER_TYPE_BOS,
            7,
            0xdead_beef,
            3,
            packets,
            last_packet,
            &mut out,
        )
        .expect("fits in a page");
        out
    }

    #[test]
    fn written_page_parses_back_with_its_fields_and_lacing() {
        let first = [1u8; 10];
        let second = [2u8; 255];
        let third: [u8; 0] = [];
        let out = written(&[&first, &second, &third], LastPacket::Complete);
        let (page, page_bytes) = parse_page(&out).unwrap().unwrap();
        assert_eq!(page_bytes, out.len());
        assert_eq!(page.header_type, HEADER_TYPE_BOS);
        assert_eq!(page.granule_position, 7);
        assert_eq!(page.serial, 0xdead_beef);
        assert_eq!(page.sequence, 3);
        // A 255-byte packet needs a terminating zero; an empty one is a lone zero.
        assert_eq!(page.segment_table, &[10, 255, 0, 0]);
        assert_eq!(page.body.len(), 265);
    }

    #[test]
    fn continuing_packet_has_no_terminating_lacing_value() {
        let piece = [9u8; 510];
        let out = written(&[&piece], LastPacket::ContinuesOnNextPage);
        let (page, _) = parse_page(&out).unwrap().unwrap();
        assert_eq!(page.segment_table, &[255, 255]);
    }

    #[test]
    fn packets_needing_more_than_255_segments_are_refused_without_writing() {
        let packet = vec![0u8; PAGE_BODY_BYTES_MAX];
        let mut out = BytesMut::new();
        let result = write_page(0, 0, 1, 0, &[&packet], LastPacket::Complete, &mut out);
        assert_eq!(result, Err(OggError::PageTooLarge));
        assert!(out.is_empty());
        let fits = write_page(0, 0, 1, 0, &[&packet[1..]], LastPacket::Complete, &mut out);
        assert_eq!(fits, Ok(()));
        assert_eq!(out.len(), PAGE_BYTES_MAX - 1);
    }

    #[test]
    fn incomplete_page_asks_for_more_at_every_prefix() {
        let out = written(&[b"hello"], LastPacket::Complete);
        for length in 0..out.len() {
            assert_eq!(parse_page(&out[..length]), Ok(None), "prefix {length}");
        }
    }

    #[test]
    fn garbage_is_refused_from_its_first_byte() {
        assert_eq!(parse_page(b"X"), Err(OggError::NotOgg));
        assert_eq!(parse_page(b"OggX"), Err(OggError::NotOgg));
        assert_eq!(
            parse_page(b"OggS\x01"),
            Err(OggError::UnsupportedVersion(1))
        );
        assert_eq!(parse_page(b"OggS\x00\x08"), Err(OggError::BadHeaderType(8)));
    }

    #[test]
    fn flipped_body_bit_is_a_crc_mismatch_naming_the_page() {
        let mut out = written(&[b"hello"], LastPacket::Complete);
        let last = out.len() - 1;
        out[last] ^= 0x01;
        assert_eq!(parse_page(&out), Err(OggError::CrcMismatch { sequence: 3 }));
    }
}
