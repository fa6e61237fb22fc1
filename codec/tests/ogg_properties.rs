//! Properties of the demuxer and the pager over generated inputs: nothing
//! panics, what the pager writes the demuxer reads back unchanged, and how
//! the bytes are split never changes the outcome.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use veza_codec::ogg::{
    opus_packet_samples, parse_page, write_page, DemuxEvent, DemuxLimits, LastPacket, OggError,
    OggOpusDemuxer, OggOpusPager, OpusHead, OpusTags, END_OF_STREAM_FILLER_PACKET,
    GRANULE_POSITION_NONE, HEADER_TYPE_BOS,
};

const SERIAL: u32 = 0x5645_5a41;

fn head(channel_count: u8, pre_skip: u16) -> OpusHead {
    OpusHead {
        version: 1,
        channel_count,
        pre_skip,
        input_sample_rate: 44_100,
        output_gain_q8: -256,
        mapping_family: 0,
        mapping: Vec::new(),
    }
}

fn tags() -> OpusTags {
    OpusTags {
        vendor: "veza".to_string(),
        comments: vec!["TITLE=properties".to_string()],
    }
}

/// Feeds `stream` in the given chunks, collecting events until the demuxer
/// asks for more or fails. Panics only if the demuxer does.
fn demux_in_chunks(
    stream: &[u8],
    chunk_bytes: &[usize],
    limits: DemuxLimits,
) -> (Vec<DemuxEvent>, Option<OggError>) {
    let mut demuxer = OggOpusDemuxer::new(limits);
    let mut events = Vec::new();
    let mut rest = stream;
    let mut chunk_sizes = chunk_bytes.iter().copied().cycle();
    loop {
        let take = chunk_sizes.next().unwrap_or(usize::MAX).min(rest.len());
        let (chunk, tail) = rest.split_at(take);
        demuxer.push(chunk);
        rest = tail;
        loop {
            match demuxer.next_event() {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(error) => return (events, Some(error)),
            }
        }
        assert!(demuxer.buffered_bytes() <= veza_codec::ogg::PAGE_BYTES_MAX + take);
        if rest.is_empty() {
            return (events, None);
        }
    }
}

/// An Opus packet: a code 0 TOC byte of any configuration, then a payload
/// that is mostly small but sometimes long enough to overflow what is left
/// of a page's 255 segments. The payload is a cheap pattern rather than
/// random bytes: the pager never looks inside a packet.
fn packet_strategy() -> impl Strategy<Value = Vec<u8>> {
    let payload_bytes = prop_oneof![9 => 0usize..300, 1 => 2_000usize..20_000];
    (0u8..32, any::<bool>(), payload_bytes, any::<u8>()).prop_map(
        |(configuration, stereo, payload_bytes, seed)| {
            let toc = (configuration << 3) | (u8::from(stereo) << 2);
            let payload = (0..payload_bytes).map(|byte_idx| seed.wrapping_add(byte_idx as u8));
            std::iter::once(toc).chain(payload).collect()
        },
    )
}

#[derive(Debug, Clone)]
enum PagerStep {
    Packet(Vec<u8>),
    Flush,
}

fn pager_steps() -> impl Strategy<Value = Vec<PagerStep>> {
    prop::collection::vec(
        prop_oneof![
            8 => packet_strategy().prop_map(PagerStep::Packet),
            1 => Just(PagerStep::Flush),
        ],
        0..100,
    )
}

/// Runs the steps through a pager; returns the stream and the packets.
fn page_steps(steps: &[PagerStep], page_duration_samples: u32) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut pager = OggOpusPager::new(SERIAL, &head(2, 312), &tags(), page_duration_samples);
    let mut stream = pager.header_pages().to_vec();
    let mut packets = Vec::new();
    for step in steps {
        let pages = match step {
            PagerStep::Packet(packet) => {
                packets.push(packet.clone());
                pager.push_packet(packet, opus_packet_samples(packet).unwrap())
            }
            PagerStep::Flush => pager.flush(),
        };
        stream.extend_from_slice(&pages.unwrap_or_default());
    }
    if pager.pending_packets() == 0 {
        packets.push(END_OF_STREAM_FILLER_PACKET.to_vec());
    }
    stream.extend_from_slice(&pager.finish());
    (stream, packets)
}

fn audio_packets(events: &[DemuxEvent]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|event| match event {
            DemuxEvent::Audio { packet, samples } => {
                assert_eq!(Ok(*samples), opus_packet_samples(packet));
                Some(packet.to_vec())
            }
            _ => None,
        })
        .collect()
}

/// Checks page by page: sequence numbers from 0 without a gap, at most 255
/// segments, and audio granules counting the samples of completed packets
/// (the filler on an EOS page trimmed).
fn assert_pages_are_continuous(stream: &[u8]) {
    let mut offset = 0;
    let mut sequence_expected = 0;
    let mut total_samples = 0u64;
    let mut open_packet = Vec::new();
    while offset < stream.len() {
        let (page, page_bytes) = parse_page(&stream[offset..]).unwrap().unwrap();
        assert_eq!(page.sequence, sequence_expected);
        assert_eq!(page.serial, SERIAL);
        let mut body_offset = 0;
        let mut n_packets_ended = 0;
        for &lacing in page.segment_table {
            open_packet.extend_from_slice(&page.body[body_offset..body_offset + lacing as usize]);
            body_offset += lacing as usize;
            if lacing < 255 {
                let is_trimmed_filler =
                    page.is_end_of_stream() && open_packet == END_OF_STREAM_FILLER_PACKET;
                if sequence_expected >= 2 && !is_trimmed_filler {
                    total_samples += u64::from(opus_packet_samples(&open_packet).unwrap());
                }
                open_packet.clear();
                n_packets_ended += 1;
            }
        }
        let granule_expected = if n_packets_ended == 0 {
            GRANULE_POSITION_NONE
        } else if sequence_expected < 2 {
            0
        } else {
            total_samples
        };
        assert_eq!(
            page.granule_position, granule_expected,
            "page {}",
            page.sequence
        );
        sequence_expected += 1;
        offset += page_bytes;
    }
}

/// A page with arbitrary flags, serial, sequence and packets, correctly
/// framed and summed so that it gets past the CRC into the stream logic.
fn arbitrary_page() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..8,
        prop_oneof![Just(SERIAL), Just(SERIAL + 1)],
        0u32..8,
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..4),
        any::<bool>(),
    )
        .prop_map(|(header_type, serial, sequence, mut packets, continues)| {
            let last_packet = if continues && !packets.is_empty() {
                let last = packets.last_mut().unwrap();
                last.resize(255 * (last.len() / 255 + 1), 0);
                LastPacket::ContinuesOnNextPage
            } else {
                LastPacket::Complete
            };
            let slices: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
            let mut out = BytesMut::new();
            write_page(
                header_type,
                0,
                serial,
                sequence,
                &slices,
                last_packet,
                &mut out,
            )
            .unwrap();
            out.to_vec()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_the_demuxer(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        chunk_bytes in prop::collection::vec(1usize..512, 1..8),
    ) {
        demux_in_chunks(&bytes, &chunk_bytes, DemuxLimits::default());
    }

    #[test]
    fn arbitrary_bytes_after_valid_headers_never_panic_the_demuxer(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        chunk_bytes in prop::collection::vec(1usize..512, 1..8),
    ) {
        let pager = OggOpusPager::new(SERIAL, &head(1, 0), &tags(), 960);
        let stream = [&pager.header_pages()[..], &bytes].concat();
        let (events, _) = demux_in_chunks(&stream, &chunk_bytes, DemuxLimits::default());
        prop_assert!(events.len() >= 2);
    }

    #[test]
    fn well_framed_pages_in_any_order_never_panic_the_demuxer(
        pages in prop::collection::vec(arbitrary_page(), 0..12),
        packet_bytes_max in 100usize..2000,
    ) {
        let pager = OggOpusPager::new(SERIAL, &head(2, 312), &tags(), 960);
        let stream = [pager.header_pages().to_vec(), pages.concat()].concat();
        let limits = DemuxLimits { packet_bytes_max };
        let (whole_events, whole_error) = demux_in_chunks(&stream, &[stream.len()], limits);
        let (split_events, split_error) = demux_in_chunks(&stream, &[7, 300, 1], limits);
        prop_assert_eq!(whole_events, split_events);
        prop_assert_eq!(whole_error, split_error);
    }

    #[test]
    fn opus_head_survives_encode_and_parse(
        channel_count in 1u8..=2,
        pre_skip in any::<u16>(),
        input_sample_rate in any::<u32>(),
        output_gain_q8 in any::<i16>(),
        version in 0u8..16,
    ) {
        let head = OpusHead { version, input_sample_rate, output_gain_q8, ..head(channel_count, pre_skip) };
        prop_assert_eq!(OpusHead::parse(&head.encode()), Ok(head));
    }

    #[test]
    fn opus_tags_survive_encode_and_parse(
        vendor in ".{0,40}",
        comments in prop::collection::vec("[A-Z]{1,8}=.{0,30}", 0..10),
    ) {
        let tags = OpusTags { vendor, comments };
        prop_assert_eq!(OpusTags::parse(&tags.encode()), Ok(tags));
    }

    #[test]
    fn arbitrary_header_packets_never_panic_their_parsers(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = OpusHead::parse(&[b"OpusHead".as_slice(), &bytes].concat());
        let _ = OpusTags::parse(&[b"OpusTags".as_slice(), &bytes].concat());
        let _ = opus_packet_samples(&bytes);
    }
}

proptest! {
    // Each case pages up to 100 packets of up to 20 kB: fewer cases keep
    // the debug-build run short.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn packets_paged_by_the_pager_come_back_from_the_demuxer_unchanged(
        steps in pager_steps(),
        page_duration_samples in 0u32..10_000,
    ) {
        let (stream, packets) = page_steps(&steps, page_duration_samples);
        let (events, error) = demux_in_chunks(&stream, &[stream.len()], DemuxLimits::default());
        prop_assert_eq!(error, None);
        prop_assert_eq!(&events[0], &DemuxEvent::Head(head(2, 312)));
        prop_assert_eq!(&events[1], &DemuxEvent::Tags(tags()));
        prop_assert_eq!(audio_packets(&events), packets);
        prop_assert_eq!(events.last(), Some(&DemuxEvent::EndOfStream));
        assert_pages_are_continuous(&stream);
    }

    #[test]
    fn splitting_the_input_anywhere_gives_the_same_events(
        steps in pager_steps(),
        chunk_bytes in prop::collection::vec(1usize..700, 1..10),
    ) {
        let (stream, _) = page_steps(&steps, 2880);
        let whole = demux_in_chunks(&stream, &[stream.len()], DemuxLimits::default());
        let split = demux_in_chunks(&stream, &chunk_bytes, DemuxLimits::default());
        prop_assert_eq!(whole, split);
    }
}

#[test]
fn a_packet_larger_than_a_page_spans_pages_and_comes_back_whole() {
    let mut pager = OggOpusPager::new(SERIAL, &head(2, 312), &tags(), 960);
    let mut stream = pager.header_pages().to_vec();
    let small = vec![0xf8, 1, 2, 3];
    // 255 * 255 bytes exactly: a full page, then an empty continued piece.
    let exact_page = [&[0xf8][..], &vec![5u8; 255 * 255 - 1]].concat();
    let huge = [&[0xf8][..], &vec![6u8; 140_000]].concat();
    for packet in [&small, &exact_page, &small, &huge, &small] {
        let pages: Bytes = pager.push_packet(packet, 960).unwrap_or_default();
        stream.extend_from_slice(&pages);
    }
    stream.extend_from_slice(&pager.finish());
    assert_pages_are_continuous(&stream);
    let limits = DemuxLimits {
        packet_bytes_max: 200_000,
    };
    let (events, error) = demux_in_chunks(&stream, &[stream.len()], limits);
    assert_eq!(error, None);
    let filler = END_OF_STREAM_FILLER_PACKET.to_vec();
    let expected = [
        small.clone(),
        exact_page,
        small.clone(),
        huge,
        small,
        filler,
    ];
    // Compared without assert_eq!, whose message would print 200 kB.
    assert!(
        audio_packets(&events) == expected,
        "packets changed through the pager"
    );
    assert_eq!(pager.granule_position(), 5 * 960);
}

#[test]
fn tags_longer_than_a_page_span_header_pages_and_audio_starts_fresh() {
    let long_tags = OpusTags {
        vendor: "veza".to_string(),
        comments: vec![format!("COMMENT={}", "x".repeat(100_000))],
    };
    let mut pager = OggOpusPager::new(SERIAL, &head(1, 0), &long_tags, 960);
    let header_pages = pager.header_pages();
    let audio_page = pager.push_packet(&[0xf8, 0], 960).expect("a 20 ms page");
    let stream = [&header_pages[..], &audio_page, &pager.finish()].concat();
    let (events, error) = demux_in_chunks(
        &stream,
        &[stream.len()],
        DemuxLimits {
            packet_bytes_max: 200_000,
        },
    );
    assert_eq!(error, None);
    assert_eq!(events[1], DemuxEvent::Tags(long_tags));
    let (first_page, _) = parse_page(&header_pages).unwrap().unwrap();
    assert_eq!(first_page.header_type, HEADER_TYPE_BOS);
    let (audio, _) = parse_page(&audio_page).unwrap().unwrap();
    assert_eq!(audio.sequence, 3, "head, then tags over two pages");
    assert_eq!(audio.granule_position, 960);
}

#[test]
fn header_pages_are_the_same_bytes_on_every_call() {
    let pager = OggOpusPager::new(SERIAL, &head(2, 312), &tags(), 960);
    assert_eq!(pager.header_pages(), pager.header_pages());
}

#[test]
fn a_page_duration_of_0_puts_every_packet_on_its_own_page() {
    let mut pager = OggOpusPager::new(SERIAL, &head(2, 312), &tags(), 0);
    for packet_idx in 1..=3u64 {
        let page = pager
            .push_packet(&[0xf8], 960)
            .expect("one page per packet");
        let (view, page_bytes) = parse_page(&page).unwrap().unwrap();
        assert_eq!(page_bytes, page.len());
        assert_eq!(view.granule_position, packet_idx * 960);
    }
    assert_eq!(pager.flush(), None);
}

#[test]
fn finish_with_pending_packets_puts_them_on_the_eos_page() {
    let mut pager = OggOpusPager::new(SERIAL, &head(2, 312), &tags(), 2880);
    assert!(pager.push_packet(&[0xf8, 1], 960).is_none());
    assert_eq!(pager.pending_packets(), 1);
    let last = pager.finish();
    let (view, _) = parse_page(&last).unwrap().unwrap();
    assert!(view.is_end_of_stream());
    assert_eq!(view.segment_table, &[2]);
    assert_eq!(view.granule_position, 960);
}

#[test]
fn finish_without_pending_packets_trims_a_filler_packet_on_the_eos_page() {
    let mut pager = OggOpusPager::new(SERIAL, &head(2, 312), &tags(), 1920);
    assert!(pager.push_packet(&[0xf8], 960).is_none());
    assert!(pager.push_packet(&[0xf8], 960).is_some());
    assert_eq!(pager.pending_packets(), 0);
    let last = pager.finish();
    let (view, _) = parse_page(&last).unwrap().unwrap();
    assert!(view.is_end_of_stream());
    assert_eq!(view.body, END_OF_STREAM_FILLER_PACKET);
    // The granule does not count the filler: end trimming drops it.
    assert_eq!(view.granule_position, 1920);
    assert_eq!(pager.granule_position(), 1920);
    assert_eq!(view.sequence, 3);
}

#[test]
fn sequence_numbers_and_granules_never_restart_across_flushes() {
    let mut pager = OggOpusPager::new(SERIAL, &head(2, 312), &tags(), 1920);
    let mut sequences = Vec::new();
    for _ in 0..10 {
        pager.push_packet(&[0xf8], 960);
        if let Some(page) = pager.flush() {
            sequences.push(parse_page(&page).unwrap().unwrap().0.sequence);
        }
    }
    assert_eq!(sequences, (2..12).collect::<Vec<u32>>());
    assert_eq!(pager.granule_position(), 9600);
    assert_eq!(pager.sequence_next(), 12);
}
