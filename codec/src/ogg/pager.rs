//! Our outgoing Ogg Opus stream: packets in, finished pages out.
//!
//! The pager owns the serial number, the page sequence numbers and the
//! granule position of the stream listeners receive, so a broadcaster that
//! reconnects (with its own serial, sequence and granules) or an encoder
//! that restarts changes nothing a listener can see: it just keeps calling
//! [`OggOpusPager::push_packet`].
//!
//! Layout (RFC 7845 §3): `OpusHead` alone on the BOS page, `OpusTags`
//! starting on the second page and finishing its last one, then audio on
//! fresh pages. A packet that does not fit in what is left of a page opens
//! the next page instead of spanning two, so every audio page a listener
//! can join on starts with a whole packet; only a packet larger than a page
//! body (65,025 bytes, beyond any real Opus packet) spans pages.
//!
//! Every page is handed out as [`Bytes`] so that the data plane can queue
//! the same page for thousands of listeners without copying it.

use bytes::{Bytes, BytesMut};

use super::opus_header::{OpusHead, OpusTags};
use super::page::{
    seal_page, write_page_header, GRANULE_POSITION_NONE, HEADER_TYPE_BOS, HEADER_TYPE_CONTINUED,
    HEADER_TYPE_EOS, LACING_VALUE_MAX, PAGE_BODY_BYTES_MAX, SEGMENTS_PER_PAGE_MAX,
};

/// The packet [`OggOpusPager::finish`] puts on an EOS page that would
/// otherwise be empty: a TOC byte for one 2.5 ms CELT frame (configuration
/// 16, code 0) and no frame data, which decoders treat as a lost frame.
pub const END_OF_STREAM_FILLER_PACKET: [u8; 1] = [16 << 3];

/// The page being filled: lacing values and body kept apart until the page
/// closes, because the segment table precedes the body on the wire and its
/// length is not known until then.
#[derive(Debug)]
struct PendingPage {
    segment_table: [u8; SEGMENTS_PER_PAGE_MAX],
    n_segments: usize,
    body: BytesMut,
    /// Whether the first segment continues a packet from the previous page.
    is_continued: bool,
    /// Packets that end on this page.
    n_packets_completed: usize,
    /// 48 kHz samples of the packets that end on this page.
    samples: u64,
}

impl PendingPage {
    fn new() -> Self {
        PendingPage {
            segment_table: [0; SEGMENTS_PER_PAGE_MAX],
            n_segments: 0,
            body: BytesMut::new(),
            is_continued: false,
            n_packets_completed: 0,
            samples: 0,
        }
    }

    fn segments_free(&self) -> usize {
        SEGMENTS_PER_PAGE_MAX - self.n_segments
    }

    /// Appends a piece of a packet; `ends_packet` adds the lacing value
    /// below 255 that closes it.
    fn append(&mut self, piece: &[u8], ends_packet: bool) {
        let n_full_segments = piece.len() / LACING_VALUE_MAX as usize;
        let n_segments = n_full_segments + usize::from(ends_packet);
        debug_assert!(n_segments <= self.segments_free());
        debug_assert!(ends_packet || piece.len().is_multiple_of(LACING_VALUE_MAX as usize));
        let table = &mut self.segment_table[self.n_segments..self.n_segments + n_segments];
        table[..n_full_segments].fill(LACING_VALUE_MAX);
        if ends_packet {
            table[n_full_segments] = (piece.len() % LACING_VALUE_MAX as usize) as u8;
        }
        self.n_segments += n_segments;
        self.body.extend_from_slice(piece);
    }

    /// Writes the page to `out` and empties it for the next one.
    fn close(
        &mut self,
        header_type: u8,
        granule_position: u64,
        serial: u32,
        sequence: u32,
        out: &mut BytesMut,
    ) {
        let page_start = out.len();
        let header_type = if self.is_continued {
            header_type | HEADER_TYPE_CONTINUED
        } else {
            header_type
        };
        write_page_header(
            header_type,
            granule_position,
            serial,
            sequence,
            &self.segment_table[..self.n_segments],
            out,
        );
        out.extend_from_slice(&self.body);
        seal_page(&mut out[page_start..]);
        self.n_segments = 0;
        self.body.clear();
        self.is_continued = false;
        self.n_packets_completed = 0;
        self.samples = 0;
    }
}

/// Pages Opus packets into one continuous Ogg Opus stream.
#[derive(Debug)]
pub struct OggOpusPager {
    serial: u32,
    page_duration_samples: u32,
    header_pages: Bytes,
    sequence_next: u32,
    /// 48 kHz samples of every packet pushed so far, pre-skip included.
    granule_position: u64,
    pending: PendingPage,
    /// Finished pages are written here and split off; the allocation is
    /// reused once listeners have dropped the pages that shared it.
    output: BytesMut,
    is_finished: bool,
}

impl OggOpusPager {
    /// A pager for the stream `serial` with the given headers, closing an
    /// audio page once its packets reach `page_duration_samples` (48 kHz;
    /// 0 puts every packet on its own page).
    pub fn new(serial: u32, head: &OpusHead, tags: &OpusTags, page_duration_samples: u32) -> Self {
        let mut output = BytesMut::new();
        let mut pending = PendingPage::new();
        pending.append(&head.encode(), true);
        pending.close(HEADER_TYPE_BOS, 0, serial, 0, &mut output);
        let mut sequence_next = 1;
        let tags_packet = tags.encode();
        let mut rest = tags_packet.as_slice();
        // Tags longer than a page body span pages. The last tags page has
        // granule position 0 (no audio precedes it); the ones before it end
        // no packet, so Ogg's rule gives them -1, as oggz-validate demands.
        while rest.len() >= PAGE_BODY_BYTES_MAX {
            pending.append(&rest[..PAGE_BODY_BYTES_MAX], false);
            pending.close(0, GRANULE_POSITION_NONE, serial, sequence_next, &mut output);
            pending.is_continued = true;
            sequence_next += 1;
            rest = &rest[PAGE_BODY_BYTES_MAX..];
        }
        pending.append(rest, true);
        pending.close(0, 0, serial, sequence_next, &mut output);
        sequence_next += 1;
        OggOpusPager {
            serial,
            page_duration_samples,
            header_pages: output.split().freeze(),
            sequence_next,
            granule_position: 0,
            pending,
            output,
            is_finished: false,
        }
    }

    /// The `OpusHead` page followed by the `OpusTags` page(s): what every
    /// listener receives first. The same bytes on every call.
    pub fn header_pages(&self) -> Bytes {
        self.header_pages.clone()
    }

    /// Adds one Opus packet lasting `samples` (48 kHz) and returns the
    /// page(s) it finished, back to back: usually none or one.
    ///
    /// A page is finished when its packets reach the page duration, when
    /// the next packet does not fit in it, and (for a packet over 65,025
    /// bytes) at every page the packet fills.
    ///
    /// # Panics
    ///
    /// After [`OggOpusPager::finish`]: the stream has ended.
    pub fn push_packet(&mut self, packet: &[u8], samples: u32) -> Option<Bytes> {
        assert!(!self.is_finished, "push_packet after finish");
        let segments_needed = packet.len() / LACING_VALUE_MAX as usize + 1;
        if self.pending.n_segments > 0 && segments_needed > self.pending.segments_free() {
            self.close_page(0);
        }
        let mut rest = packet;
        while rest.len() / LACING_VALUE_MAX as usize + 1 > self.pending.segments_free() {
            let piece_bytes = self.pending.segments_free() * LACING_VALUE_MAX as usize;
            self.pending.append(&rest[..piece_bytes], false);
            self.close_page(0);
            self.pending.is_continued = true;
            rest = &rest[piece_bytes..];
        }
        self.pending.append(rest, true);
        self.pending.n_packets_completed += 1;
        self.pending.samples += u64::from(samples);
        self.granule_position += u64::from(samples);
        if self.pending.samples >= u64::from(self.page_duration_samples) {
            self.close_page(0);
        }
        self.take_output()
    }

    /// Closes the page being filled, if it holds anything, and returns it.
    pub fn flush(&mut self) -> Option<Bytes> {
        if self.pending.n_segments > 0 {
            self.close_page(0);
        }
        self.take_output()
    }

    /// Ends the stream: the pending packets go out on a last page flagged
    /// EOS, with the current granule position.
    ///
    /// If no packet is pending, the EOS page carries
    /// [`END_OF_STREAM_FILLER_PACKET`] and keeps the current granule
    /// position: oggz-validate refuses an EOS page on which no packet ends,
    /// and end trimming (RFC 7845 §4.5) discards the filler's 2.5 ms, so
    /// the stream's duration is unchanged.
    ///
    /// # Panics
    ///
    /// When called twice: a stream ends once.
    pub fn finish(&mut self) -> Bytes {
        assert!(!self.is_finished, "finish called twice");
        self.is_finished = true;
        if self.pending.n_segments == 0 {
            self.pending.append(&END_OF_STREAM_FILLER_PACKET, true);
            self.pending.n_packets_completed += 1;
        }
        self.close_page(HEADER_TYPE_EOS);
        self.output.split().freeze()
    }

    /// 48 kHz samples of all packets pushed so far, pre-skip included: the
    /// granule position of the next page that completes no new packet.
    pub fn granule_position(&self) -> u64 {
        self.granule_position
    }

    /// Packets waiting on the page being filled; [`OggOpusPager::flush`]
    /// would page them out now.
    pub fn pending_packets(&self) -> usize {
        self.pending.n_packets_completed
    }

    /// The serial number of the stream.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The sequence number the next page will carry.
    pub fn sequence_next(&self) -> u32 {
        self.sequence_next
    }

    /// RFC 7845 §4: a page's granule position counts the samples of every
    /// packet that ends on it or before it; a page where none ends carries
    /// -1.
    fn close_page(&mut self, header_type: u8) {
        let granule_position = if self.pending.n_packets_completed > 0 {
            self.granule_position
        } else {
            GRANULE_POSITION_NONE
        };
        self.pending.close(
            header_type,
            granule_position,
            self.serial,
            self.sequence_next,
            &mut self.output,
        );
        // 2^32 pages are over two years of 20 ms pages; wrapping is what
        // Ogg's 32-bit sequence number does, and readers compare modulo it.
        self.sequence_next = self.sequence_next.wrapping_add(1);
    }

    fn take_output(&mut self) -> Option<Bytes> {
        if self.output.is_empty() {
            None
        } else {
            Some(self.output.split().freeze())
        }
    }
}
