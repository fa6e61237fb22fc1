//! A validating Ogg Opus demuxer for live ingest: bytes from a
//! broadcaster's `PUT` in, `OpusHead`, `OpusTags` and audio packets out.
//!
//! It is strict where a live source should be (no resync over garbage, no
//! second multiplexed stream, no codec but Opus) and forgiving where the
//! network is to blame: a page sequence gap counts as lost pages and the
//! stream carries on. Chained streams (a new BOS after an EOS, as ffmpeg
//! and Icecast sources send on a metadata change) start over with a new
//! `Head` and `Tags`.
//!
//! Memory: incoming bytes wait in one buffer until a whole page is there;
//! the page is then split off as [`Bytes`] and every packet that lies
//! within it is handed out as a slice of it, with no copy. Only packets
//! that span pages are assembled, in one buffer bounded by
//! [`DemuxLimits::packet_bytes_max`].
//!
//! Architecture Invariant: once `next_event` fails, the demuxer is done; it
//! returns the same error again rather than guess where the stream resumes.

use bytes::{Bytes, BytesMut};

use super::error::OggError;
use super::opus_header::{OpusHead, OpusTags, OPUS_HEAD_MAGIC, OPUS_TAGS_MAGIC};
use super::opus_packet::opus_packet_samples;
use super::page::{parse_page, PageView, LACING_VALUE_MAX, PAGE_HEADER_BYTES};

/// The default for [`DemuxLimits::packet_bytes_max`]: above the largest
/// Opus packet (120 ms of 1275-byte frames, 61,440 bytes with framing)
/// and comfortably above the tags a live encoder sends.
pub const PACKET_BYTES_MAX_DEFAULT: usize = 64 * 1024;

/// Page sequence gaps larger than this are taken for a sequence number that
/// went backwards (half the 32-bit space, as in serial number arithmetic).
const SEQUENCE_GAP_MAX: u32 = i32::MAX as u32;

/// What the demuxer produces, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemuxEvent {
    /// A logical stream began with this identification header.
    Head(OpusHead),
    /// The stream's comment header; audio follows.
    Tags(OpusTags),
    /// One Opus packet and its duration in 48 kHz samples.
    Audio {
        /// The packet, usually a slice of the page it arrived in.
        packet: Bytes,
        /// Its duration at 48 kHz, from [`opus_packet_samples`].
        samples: u32,
    },
    /// The logical stream ended (EOS page). A chained stream may follow.
    EndOfStream,
}

/// Bounds on what a source may make the demuxer hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemuxLimits {
    /// The largest packet (audio or header) accepted, in bytes.
    pub packet_bytes_max: usize,
}

impl Default for DemuxLimits {
    fn default() -> Self {
        DemuxLimits {
            packet_bytes_max: PACKET_BYTES_MAX_DEFAULT,
        }
    }
}

/// Where the current logical stream is in the Ogg Opus header sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// Before the BOS page of a logical stream, at the start or after EOS.
    AwaitingHead,
    /// After `OpusHead`, before `OpusTags`.
    AwaitingTags,
    /// Headers done; every packet is audio.
    Audio,
}

/// The header fields of a parsed page that outlive the borrow of the
/// input buffer.
#[derive(Debug, Clone, Copy)]
struct PageHeader {
    header_type: u8,
    serial: u32,
    sequence: u32,
    n_segments: usize,
}

impl PageHeader {
    fn of(page: &PageView<'_>) -> Self {
        PageHeader {
            header_type: page.header_type,
            serial: page.serial,
            sequence: page.sequence,
            n_segments: page.segment_table.len(),
        }
    }
}

/// The page whose packets are being handed out.
#[derive(Debug)]
struct CurrentPage {
    /// The whole page, header included, so that offsets index it directly.
    bytes: Bytes,
    n_segments: usize,
    /// The next lacing value to read.
    segment_idx: usize,
    /// Where the next segment's bytes start in `bytes`.
    body_offset: usize,
    is_end_of_stream: bool,
}

impl CurrentPage {
    fn is_exhausted(&self) -> bool {
        self.segment_idx == self.n_segments
    }

    /// The next run of segments up to and including the one that ends a
    /// packet, or to the end of the page; and whether it ends a packet.
    fn next_piece(&mut self) -> (Bytes, bool) {
        let piece_start = self.body_offset;
        while self.segment_idx < self.n_segments {
            let lacing = self.bytes[PAGE_HEADER_BYTES + self.segment_idx];
            self.segment_idx += 1;
            self.body_offset += lacing as usize;
            if lacing < LACING_VALUE_MAX {
                return (self.bytes.slice(piece_start..self.body_offset), true);
            }
        }
        (self.bytes.slice(piece_start..self.body_offset), false)
    }
}

/// Turns a live Ogg Opus byte stream into [`DemuxEvent`]s. See the module
/// documentation for what it accepts.
#[derive(Debug)]
pub struct OggOpusDemuxer {
    limits: DemuxLimits,
    /// Bytes pushed but not yet split off as a page.
    buffer: BytesMut,
    page: Option<CurrentPage>,
    state: StreamState,
    serial: u32,
    sequence_expected: u32,
    /// The start of a packet that continues on the next page.
    partial_packet: BytesMut,
    /// A packet whose start was lost with a page is being skipped.
    discarding_packet: bool,
    pages_lost: u64,
    failure: Option<OggError>,
}

impl OggOpusDemuxer {
    /// A demuxer awaiting the first BOS page.
    pub fn new(limits: DemuxLimits) -> Self {
        OggOpusDemuxer {
            limits,
            buffer: BytesMut::new(),
            page: None,
            state: StreamState::AwaitingHead,
            serial: 0,
            sequence_expected: 0,
            partial_packet: BytesMut::new(),
            discarding_packet: false,
            pages_lost: 0,
            failure: None,
        }
    }

    /// Appends bytes received from the source.
    ///
    /// Call [`OggOpusDemuxer::next_event`] until it returns `Ok(None)` after
    /// every push: the buffer then never holds more than one incomplete
    /// page (at most [`super::PAGE_BYTES_MAX`]) plus the bytes of the last
    /// push. Bytes pushed after a failure are dropped.
    pub fn push(&mut self, data: &[u8]) {
        if self.failure.is_none() {
            self.buffer.extend_from_slice(data);
        }
    }

    /// The next event, `Ok(None)` if more bytes are needed first, or the
    /// reason the source must be refused.
    pub fn next_event(&mut self) -> Result<Option<DemuxEvent>, OggError> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let result = self.advance();
        if let Err(error) = &result {
            self.failure = Some(error.clone());
            self.buffer = BytesMut::new();
            self.partial_packet = BytesMut::new();
            self.page = None;
        }
        result
    }

    /// Pages skipped by sequence gaps since the demuxer started; a measure
    /// of data lost upstream, not an error.
    pub fn pages_lost(&self) -> u64 {
        self.pages_lost
    }

    /// Bytes pushed that wait for the rest of their page.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Each iteration either returns or consumes one page, so the loop runs
    /// at most once per page in the buffer.
    fn advance(&mut self) -> Result<Option<DemuxEvent>, OggError> {
        loop {
            if self.page.is_none() && !self.take_page()? {
                return Ok(None);
            }
            if let Some(packet) = self.next_packet()? {
                return self.packet_event(packet).map(Some);
            }
            let page = self.page.take().expect("a page is being read");
            if page.is_end_of_stream {
                self.end_stream()?;
                return Ok(Some(DemuxEvent::EndOfStream));
            }
        }
    }

    /// Splits the next complete page off the buffer and checks where it
    /// stands in the stream. Returns false if the page is not complete yet.
    fn take_page(&mut self) -> Result<bool, OggError> {
        let Some((view, page_bytes)) = parse_page(&self.buffer)? else {
            return Ok(false);
        };
        let header = PageHeader::of(&view);
        if self.state == StreamState::AwaitingHead {
            check_head_page(&view)?;
        }
        self.check_page_order(header)?;
        let bytes = self.buffer.split_to(page_bytes).freeze();
        self.page = Some(CurrentPage {
            bytes,
            n_segments: header.n_segments,
            segment_idx: 0,
            body_offset: PAGE_HEADER_BYTES + header.n_segments,
            is_end_of_stream: header.header_type & super::HEADER_TYPE_EOS != 0,
        });
        Ok(true)
    }

    fn check_page_order(&mut self, header: PageHeader) -> Result<(), OggError> {
        let is_beginning = header.header_type & super::HEADER_TYPE_BOS != 0;
        let is_continued = header.header_type & super::HEADER_TYPE_CONTINUED != 0;
        if self.state == StreamState::AwaitingHead {
            if !is_beginning {
                return Err(OggError::UnexpectedPage(
                    "a logical stream must begin with a BOS page holding OpusHead",
                ));
            }
            self.serial = header.serial;
            self.sequence_expected = header.sequence.wrapping_add(1);
            return Ok(());
        }
        if header.serial != self.serial {
            return Err(OggError::MultiplexedStream);
        }
        if is_beginning {
            return Err(OggError::UnexpectedPage(
                "a BOS page arrived in the middle of a logical stream",
            ));
        }
        let gap = header.sequence.wrapping_sub(self.sequence_expected);
        self.sequence_expected = header.sequence.wrapping_add(1);
        if gap == 0 {
            return self.check_continuation(is_continued);
        }
        if gap > SEQUENCE_GAP_MAX {
            return Err(OggError::UnexpectedPage(
                "the page sequence number went backwards",
            ));
        }
        if self.state != StreamState::Audio {
            return Err(OggError::UnexpectedPage(
                "a page of the Opus headers was lost",
            ));
        }
        // The packet in progress lost its middle, and a packet this page
        // continues lost its start: neither can be decoded.
        self.pages_lost += u64::from(gap);
        self.partial_packet.clear();
        self.discarding_packet = is_continued;
        Ok(())
    }

    fn check_continuation(&self, is_continued: bool) -> Result<(), OggError> {
        let packet_is_open = !self.partial_packet.is_empty() || self.discarding_packet;
        match (is_continued, packet_is_open) {
            (true, false) => Err(OggError::UnexpectedPage(
                "a page continues a packet that never started",
            )),
            (false, true) => Err(OggError::UnexpectedPage(
                "a page starts anew while a packet awaits its end",
            )),
            _ => Ok(()),
        }
    }

    /// The next complete packet of the current page, if one ends on it.
    /// Pieces that continue onto the next page are kept in
    /// `partial_packet`.
    fn next_packet(&mut self) -> Result<Option<Bytes>, OggError> {
        let page = self.page.as_mut().expect("a page is being read");
        while !page.is_exhausted() {
            let (piece, ends_packet) = page.next_piece();
            if self.discarding_packet {
                self.discarding_packet = !ends_packet;
                continue;
            }
            let packet_bytes = self.partial_packet.len() + piece.len();
            if packet_bytes > self.limits.packet_bytes_max {
                return Err(OggError::PacketTooLarge {
                    bytes: packet_bytes,
                });
            }
            if !ends_packet {
                self.partial_packet.extend_from_slice(&piece);
            } else if self.partial_packet.is_empty() {
                return Ok(Some(piece));
            } else {
                // A packet that spans pages cannot be one slice; it is copied
                // once, into a buffer handed out whole.
                self.partial_packet.extend_from_slice(&piece);
                return Ok(Some(self.partial_packet.split().freeze()));
            }
        }
        Ok(None)
    }

    fn packet_event(&mut self, packet: Bytes) -> Result<DemuxEvent, OggError> {
        match self.state {
            StreamState::AwaitingHead => {
                let head = OpusHead::parse(&packet)?;
                // Live audio is decoded with a mono or stereo decoder; the
                // multistream layouts of families 1 and 255 are refused.
                if head.mapping_family != 0 {
                    return Err(OggError::BadOpusHead(
                        "only mapping family 0 (mono or stereo) is accepted for live input",
                    ));
                }
                self.state = StreamState::AwaitingTags;
                Ok(DemuxEvent::Head(head))
            }
            StreamState::AwaitingTags => {
                if !packet.starts_with(OPUS_TAGS_MAGIC) {
                    return Err(OggError::UnexpectedPage(
                        "an audio packet came before the OpusTags header",
                    ));
                }
                let tags = OpusTags::parse(&packet)?;
                let page = self.page.as_ref().expect("a page is being read");
                // RFC 7845 §3: audio starts on a fresh page.
                if !page.is_exhausted() {
                    return Err(OggError::UnexpectedPage(
                        "an audio packet shares the page that ends OpusTags",
                    ));
                }
                self.state = StreamState::Audio;
                Ok(DemuxEvent::Tags(tags))
            }
            StreamState::Audio => {
                let samples = opus_packet_samples(&packet)?;
                Ok(DemuxEvent::Audio { packet, samples })
            }
        }
    }

    fn end_stream(&mut self) -> Result<(), OggError> {
        if !self.partial_packet.is_empty() {
            return Err(OggError::UnexpectedPage(
                "the EOS page ends inside a packet",
            ));
        }
        if self.state == StreamState::AwaitingTags {
            return Err(OggError::UnexpectedPage(
                "the stream ended before its OpusTags header",
            ));
        }
        self.state = StreamState::AwaitingHead;
        self.discarding_packet = false;
        Ok(())
    }
}

/// RFC 7845 §3: the BOS page holds the `OpusHead` packet and nothing else.
/// The signature is checked first so that Vorbis, FLAC or any other codec
/// is named as such rather than as a layout error.
fn check_head_page(page: &PageView<'_>) -> Result<(), OggError> {
    if page.is_beginning_of_stream() && !page.body.starts_with(OPUS_HEAD_MAGIC) {
        return Err(OggError::NotOpus);
    }
    let (last, full) = match page.segment_table.split_last() {
        Some((&last, full)) => (last, full),
        None => return Ok(()),
    };
    let is_one_packet =
        last < LACING_VALUE_MAX && full.iter().all(|&lacing| lacing == LACING_VALUE_MAX);
    if page.is_beginning_of_stream() && !is_one_packet {
        return Err(OggError::UnexpectedPage(
            "the BOS page must hold the OpusHead packet alone",
        ));
    }
    Ok(())
}
