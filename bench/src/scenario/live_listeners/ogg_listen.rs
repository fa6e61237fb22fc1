//! What one live listener sees, sans-IO: an incremental Ogg page-header
//! scanner ([`OggPageScanner`]), a playout-buffer model that counts stalls by
//! granule positions ([`PlayoutBuffer`]), and both joined over one response
//! body ([`ListenerBody`]). Bytes and the time since the listener started
//! are handed in; nothing here reads a socket or a clock.
//!
//! Written here rather than taken from `veza_codec::ogg`, whose
//! `parse_page` wants a whole page in one buffer and checks its CRC: a
//! listener needs less than that: page boundaries, header fields and the
//! first bytes of each body, with no page ever buffered (tens of thousands of listeners share two
//! CPUs with the server). The CRC is not checked for the same reason: it
//! would cost the client a pass over every byte; the capture pattern and
//! version at every page boundary catch a misaligned stream.

/// Every page starts with these bytes.
pub const CAPTURE_PATTERN: &[u8; 4] = b"OggS";

/// The fixed part of a page header (RFC 3533 §6).
const FIXED_HEADER_BYTES: usize = 27;

/// The most lacing values a page has.
const SEGMENTS_MAX: usize = 255;

/// Bytes of each page body kept, enough for the `OpusHead` / `OpusTags`
/// magic.
pub const BODY_PREFIX_BYTES: usize = 8;

/// Opus granule positions count samples at 48 kHz (RFC 7845 §4), whatever
/// the input rate.
pub const GRANULE_RATE_HZ: u64 = 48_000;

/// "No packet ends on this page."
const GRANULE_NONE: u64 = u64::MAX;

/// Header type flag: the page continues a packet of the previous page.
const FLAG_CONTINUED: u8 = 0x01;

/// The header fields of one page, and the first bytes of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSummary {
    /// Continued / beginning-of-stream / end-of-stream flags.
    pub header_type: u8,
    /// The granule position ([`u64::MAX`]: no packet ends here).
    pub granule_position: u64,
    /// The logical stream's serial number.
    pub serial: u32,
    /// The page sequence number.
    pub sequence: u32,
    /// Bytes of the body.
    pub body_bytes: usize,
    /// The first bytes of the body.
    pub body_prefix: [u8; BODY_PREFIX_BYTES],
    /// How many of `body_prefix` are valid.
    pub body_prefix_len: usize,
}

impl PageSummary {
    /// Whether the body starts with `magic`.
    pub fn body_starts_with(&self, magic: &[u8]) -> bool {
        self.body_prefix[..self.body_prefix_len].starts_with(magic)
    }

    /// The granule position, unless no packet ends on the page.
    pub fn granule(&self) -> Option<u64> {
        (self.granule_position != GRANULE_NONE).then_some(self.granule_position)
    }
}

/// The stream is not Ogg where a page should start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OggError {
    /// No `OggS` at a page boundary.
    #[error("no OggS capture pattern at a page boundary")]
    CapturePattern,
    /// A stream structure version other than 0.
    #[error("Ogg stream structure version {0}")]
    Version(u8),
}

/// Finds page boundaries in a byte stream fed in pieces of any size; holds
/// at most one page header (282 bytes), never a body.
#[derive(Debug, Clone)]
pub struct OggPageScanner {
    head: [u8; FIXED_HEADER_BYTES + SEGMENTS_MAX],
    head_filled: usize,
    body_remaining: usize,
    in_body: bool,
    page: PageSummary,
}

impl Default for OggPageScanner {
    fn default() -> Self {
        OggPageScanner::new()
    }
}

impl OggPageScanner {
    /// A scanner expecting a page boundary first.
    pub fn new() -> OggPageScanner {
        OggPageScanner {
            head: [0; FIXED_HEADER_BYTES + SEGMENTS_MAX],
            head_filled: 0,
            body_remaining: 0,
            in_body: false,
            page: PageSummary {
                header_type: 0,
                granule_position: 0,
                serial: 0,
                sequence: 0,
                body_bytes: 0,
                body_prefix: [0; BODY_PREFIX_BYTES],
                body_prefix_len: 0,
            },
        }
    }

    /// Consumes `bytes`, calling `on_page` for each page completed in them.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        mut on_page: impl FnMut(&PageSummary),
    ) -> Result<(), OggError> {
        // Bounded: every turn consumes at least one byte or completes a page
        // with an empty body (which needs at least 27 new bytes).
        while !bytes.is_empty() {
            if self.in_body {
                let taken = self.body_remaining.min(bytes.len());
                let page = &mut self.page;
                let prefix_taken = (BODY_PREFIX_BYTES - page.body_prefix_len).min(taken);
                page.body_prefix[page.body_prefix_len..page.body_prefix_len + prefix_taken]
                    .copy_from_slice(&bytes[..prefix_taken]);
                page.body_prefix_len += prefix_taken;
                self.body_remaining -= taken;
                bytes = &bytes[taken..];
            } else {
                let taken = self.head_needed().saturating_sub(self.head_filled);
                let taken = taken.min(bytes.len());
                self.head[self.head_filled..self.head_filled + taken]
                    .copy_from_slice(&bytes[..taken]);
                self.head_filled += taken;
                bytes = &bytes[taken..];
                self.on_head_bytes()?;
            }
            if self.in_body && self.body_remaining == 0 {
                on_page(&self.page);
                self.in_body = false;
                self.head_filled = 0;
            }
        }
        Ok(())
    }

    fn head_needed(&self) -> usize {
        if self.head_filled < FIXED_HEADER_BYTES {
            FIXED_HEADER_BYTES
        } else {
            FIXED_HEADER_BYTES + usize::from(self.head[26])
        }
    }

    fn on_head_bytes(&mut self) -> Result<(), OggError> {
        if self.head_filled < FIXED_HEADER_BYTES || self.head_filled < self.head_needed() {
            if self.head_filled == FIXED_HEADER_BYTES {
                self.check_fixed_header()?;
            }
            return Ok(());
        }
        if usize::from(self.head[26]) == 0 {
            self.check_fixed_header()?;
        }
        let head = &self.head;
        let n_segments = usize::from(head[26]);
        let body_bytes = head[FIXED_HEADER_BYTES..FIXED_HEADER_BYTES + n_segments]
            .iter()
            .map(|&lacing| usize::from(lacing))
            .sum();
        let u32_at = |idx: usize| u32::from_le_bytes(head[idx..idx + 4].try_into().unwrap());
        self.page = PageSummary {
            header_type: head[5],
            granule_position: u64::from_le_bytes(head[6..14].try_into().unwrap()),
            serial: u32_at(14),
            sequence: u32_at(18),
            body_bytes,
            body_prefix: [0; BODY_PREFIX_BYTES],
            body_prefix_len: 0,
        };
        self.body_remaining = body_bytes;
        self.in_body = true;
        Ok(())
    }

    fn check_fixed_header(&self) -> Result<(), OggError> {
        if &self.head[..4] != CAPTURE_PATTERN {
            return Err(OggError::CapturePattern);
        }
        if self.head[4] != 0 {
            return Err(OggError::Version(self.head[4]));
        }
        Ok(())
    }
}

/// A player's buffer: playback starts once `start_threshold` of audio has
/// arrived and then drains in real time; each time it runs dry is a stall,
/// and playback waits for the threshold again.
///
/// Audio is measured by granule positions: the first audio page sets the
/// origin (its own samples are not counted, so the model is conservative
/// by one page), later pages add the growth of the granule. A granule that
/// goes back or a new serial number is a discontinuity: counted, and the
/// origin moves there.
#[derive(Debug, Clone)]
pub struct PlayoutBuffer {
    start_threshold_samples: u64,
    last_granule: Option<(u32, u64)>,
    received_samples: u64,
    played_samples: u64,
    playing_since: Option<std::time::Duration>,
    dry_since: Option<std::time::Duration>,
    /// Times the buffer ran dry while playing.
    pub stalls: u32,
    /// Time spent rebuffering after stalls, µs (the initial fill excluded).
    pub stalled_us: u64,
    /// Granules that went back or serial numbers that changed.
    pub discontinuities: u32,
    /// When playback first started, from the listener's start.
    pub playback_started_at: Option<std::time::Duration>,
}

impl PlayoutBuffer {
    /// An empty buffer that starts playing at `start_threshold_ms` of audio.
    pub fn new(start_threshold_ms: u64) -> PlayoutBuffer {
        PlayoutBuffer {
            start_threshold_samples: start_threshold_ms * GRANULE_RATE_HZ / 1000,
            last_granule: None,
            received_samples: 0,
            played_samples: 0,
            playing_since: None,
            dry_since: None,
            stalls: 0,
            stalled_us: 0,
            discontinuities: 0,
            playback_started_at: None,
        }
    }

    /// An audio page arrived at `now`.
    pub fn on_audio_page(&mut self, now: std::time::Duration, serial: u32, granule: Option<u64>) {
        self.advance(now);
        let Some(granule) = granule else { return };
        match self.last_granule {
            Some((last_serial, last)) if last_serial == serial && granule >= last => {
                self.received_samples += granule - last;
            }
            Some(_) => self.discontinuities += 1,
            None => {}
        }
        self.last_granule = Some((serial, granule));
        let buffered = self.received_samples - self.played_samples;
        if self.playing_since.is_none() && buffered >= self.start_threshold_samples {
            if let Some(dry_since) = self.dry_since.take() {
                self.stalled_us += micros(now.saturating_sub(dry_since));
            }
            self.playing_since = Some(now);
            self.playback_started_at.get_or_insert(now);
        }
    }

    /// The listener stopped at `now` (end of the run or eviction): a buffer
    /// that ran dry before then is one more stall.
    pub fn finish(&mut self, now: std::time::Duration) {
        self.advance(now);
        if let Some(dry_since) = self.dry_since.take() {
            self.stalled_us += micros(now.saturating_sub(dry_since));
        }
    }

    /// Plays from the last event to `now`; notes when the buffer ran dry.
    fn advance(&mut self, now: std::time::Duration) {
        let Some(since) = self.playing_since else {
            return;
        };
        let elapsed = now.saturating_sub(since);
        let playable = elapsed.as_micros() as u64 * GRANULE_RATE_HZ / 1_000_000;
        let buffered = self.received_samples - self.played_samples;
        if playable > buffered {
            let dry_after_us = buffered * 1_000_000 / GRANULE_RATE_HZ;
            self.dry_since = Some(since + std::time::Duration::from_micros(dry_after_us));
            self.played_samples = self.received_samples;
            self.playing_since = None;
            self.stalls += 1;
        } else {
            self.played_samples += playable;
            // Keep the sub-sample remainder by moving the origin only by
            // the time the played samples took.
            self.playing_since = Some(
                since + std::time::Duration::from_micros(playable * 1_000_000 / GRANULE_RATE_HZ),
            );
        }
    }
}

fn micros(duration: std::time::Duration) -> u64 {
    duration.as_micros().try_into().unwrap_or(u64::MAX)
}

/// Why a body is not the Ogg Opus stream the contract promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// Not Ogg.
    #[error(transparent)]
    Ogg(#[from] OggError),
    /// The first page is not `OpusHead`.
    #[error("the first page is not OpusHead")]
    NoOpusHead,
    /// The second page is not `OpusTags`.
    #[error("the second page is not OpusTags")]
    NoOpusTags,
}

/// One listener's response body: header pages, then audio into a playout
/// buffer.
#[derive(Debug, Clone)]
pub struct ListenerBody {
    scanner: OggPageScanner,
    pages: u64,
    /// When the first audio page completed, from the listener's start.
    pub first_audio_at: Option<std::time::Duration>,
    /// The playout model.
    pub playout: PlayoutBuffer,
}

impl ListenerBody {
    /// A body not yet begun.
    pub fn new(start_threshold_ms: u64) -> ListenerBody {
        ListenerBody {
            scanner: OggPageScanner::new(),
            pages: 0,
            first_audio_at: None,
            playout: PlayoutBuffer::new(start_threshold_ms),
        }
    }

    /// Pages seen so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Body bytes that arrived at `now`.
    pub fn feed(&mut self, now: std::time::Duration, bytes: &[u8]) -> Result<(), ListenError> {
        let mut outcome = Ok(());
        let (pages, first_audio_at, playout) =
            (&mut self.pages, &mut self.first_audio_at, &mut self.playout);
        self.scanner.feed(bytes, |page| {
            if outcome.is_err() {
                return;
            }
            let page_idx = *pages;
            *pages += 1;
            outcome = match page_idx {
                0 if !page.body_starts_with(b"OpusHead") => Err(ListenError::NoOpusHead),
                1 if !page.body_starts_with(b"OpusTags") => Err(ListenError::NoOpusTags),
                0 | 1 => Ok(()),
                // Further OpusTags pages continue the comment packet and
                // carry granule 0.
                _ if first_audio_at.is_none()
                    && page.header_type & FLAG_CONTINUED != 0
                    && page.granule_position == 0 =>
                {
                    Ok(())
                }
                _ => {
                    first_audio_at.get_or_insert(now);
                    playout.on_audio_page(now, page.serial, page.granule());
                    Ok(())
                }
            };
        })?;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// One page: `granule`, `serial`, sequence `sequence`, body `body`.
    fn page(header_type: u8, granule: u64, sequence: u32, body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(CAPTURE_PATTERN);
        bytes.push(0);
        bytes.push(header_type);
        bytes.extend_from_slice(&granule.to_le_bytes());
        bytes.extend_from_slice(&7u32.to_le_bytes());
        bytes.extend_from_slice(&sequence.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let mut lacing = vec![255u8; body.len() / 255];
        lacing.push((body.len() % 255) as u8);
        bytes.push(lacing.len() as u8);
        bytes.extend_from_slice(&lacing);
        bytes.extend_from_slice(body);
        bytes
    }

    fn stream(audio_pages: u64, samples_per_page: u64) -> Vec<u8> {
        let mut bytes = page(0x02, 0, 0, b"OpusHead\x01\x02");
        bytes.extend(page(0, 0, 1, b"OpusTags and a vendor"));
        for page_idx in 0..audio_pages {
            let granule = 1_000_000 + page_idx * samples_per_page;
            bytes.extend(page(0, granule, 2 + page_idx as u32, &[0xAB; 600]));
        }
        bytes
    }

    #[test]
    fn pages_are_found_whatever_the_read_sizes() {
        let bytes = stream(5, 9600);
        for chunk_bytes in [1, 7, 27, 28, 300, bytes.len()] {
            let mut scanner = OggPageScanner::new();
            let mut seen = Vec::new();
            for chunk in bytes.chunks(chunk_bytes) {
                scanner
                    .feed(chunk, |page| seen.push((page.sequence, page.body_bytes)))
                    .unwrap();
            }
            assert_eq!(seen.len(), 7, "chunks of {chunk_bytes}");
            assert_eq!(seen[2], (2, 600));
        }
    }

    #[test]
    fn a_stream_that_is_not_ogg_is_refused_at_the_first_boundary() {
        let mut scanner = OggPageScanner::new();
        let error = scanner.feed(&[b'X'; 40], |_| {}).unwrap_err();
        assert_eq!(error, OggError::CapturePattern);
        let mut bytes = page(0, 0, 0, b"x");
        bytes[4] = 1;
        assert_eq!(
            OggPageScanner::new().feed(&bytes, |_| {}).unwrap_err(),
            OggError::Version(1)
        );
    }

    #[test]
    fn the_first_audio_page_follows_opus_head_and_opus_tags() {
        let mut body = ListenerBody::new(2000);
        let bytes = stream(3, 9600);
        let headers_len = page(0x02, 0, 0, b"OpusHead\x01\x02").len()
            + page(0, 0, 1, b"OpusTags and a vendor").len();
        body.feed(Duration::from_millis(1), &bytes[..headers_len])
            .unwrap();
        assert_eq!(body.first_audio_at, None);
        body.feed(Duration::from_millis(5), &bytes[headers_len..])
            .unwrap();
        assert_eq!(body.first_audio_at, Some(Duration::from_millis(5)));
        assert_eq!(body.pages(), 5);
    }

    #[test]
    fn a_body_without_opus_headers_is_refused() {
        let mut body = ListenerBody::new(2000);
        let error = body
            .feed(Duration::ZERO, &page(0x02, 0, 0, b"Vorbis.."))
            .unwrap_err();
        assert_eq!(error, ListenError::NoOpusHead);
    }

    /// 200 ms pages (9600 samples) arriving at `arrival_ms`.
    fn play(arrival_ms: &[u64], end_ms: u64) -> PlayoutBuffer {
        let mut buffer = PlayoutBuffer::new(2000);
        for (page_idx, &at_ms) in arrival_ms.iter().enumerate() {
            let granule = 500_000 + page_idx as u64 * 9600;
            buffer.on_audio_page(Duration::from_millis(at_ms), 7, Some(granule));
        }
        buffer.finish(Duration::from_millis(end_ms));
        buffer
    }

    #[test]
    fn a_burst_then_real_time_pages_never_stall() {
        // 11 pages at once (10 counted: 2 s), then one every 200 ms.
        let mut arrivals = vec![10; 11];
        arrivals.extend((1..=50).map(|page_idx| 10 + page_idx * 200));
        let buffer = play(&arrivals, 10_000);
        assert_eq!(buffer.stalls, 0);
        assert_eq!(buffer.playback_started_at, Some(Duration::from_millis(10)));
    }

    #[test]
    fn a_gap_longer_than_the_buffer_is_one_stall_and_its_rebuffering_time() {
        // 2 s buffered at t=0, then nothing until t=3 s, then 2 s at once.
        let mut arrivals = vec![0; 11];
        arrivals.extend(vec![3000; 10]);
        let buffer = play(&arrivals, 3000);
        assert_eq!(buffer.stalls, 1);
        assert_eq!(buffer.stalled_us, 1_000_000, "dry at 2 s, playing at 3 s");
    }

    #[test]
    fn a_buffer_that_runs_dry_before_the_end_counts_as_a_stall() {
        let buffer = play(&[0; 11], 2500);
        assert_eq!(buffer.stalls, 1);
        assert_eq!(buffer.stalled_us, 500_000);
        let never_started = play(&[0; 5], 2500);
        assert_eq!(never_started.stalls, 0, "the initial fill is not a stall");
        assert_eq!(never_started.playback_started_at, None);
    }

    #[test]
    fn a_granule_going_back_is_a_discontinuity_not_negative_audio() {
        let mut buffer = PlayoutBuffer::new(2000);
        buffer.on_audio_page(Duration::ZERO, 7, Some(100_000));
        buffer.on_audio_page(Duration::ZERO, 7, Some(50_000));
        buffer.on_audio_page(Duration::ZERO, 8, Some(60_000));
        assert_eq!(buffer.discontinuities, 2);
        assert_eq!(buffer.received_samples, 0);
    }
}
