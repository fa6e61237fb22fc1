//! Every way a live source can be refused, each reached by a hand-made
//! stream, and the one way it is forgiven (lost pages).

use bytes::BytesMut;
use veza_codec::ogg::{
    write_page, DemuxEvent, DemuxLimits, LastPacket, OggError, OggOpusDemuxer, OpusHead, OpusTags,
    HEADER_TYPE_BOS, HEADER_TYPE_CONTINUED, HEADER_TYPE_EOS, PAGE_BODY_BYTES_MAX,
};

const SERIAL: u32 = 0x1234_5678;
/// CELT fullband 20 ms, one frame (TOC config 31, code 0).
const AUDIO: &[u8] = &[0xf8, 0xff, 0xfe];

fn page(header_type: u8, serial: u32, sequence: u32, packets: &[&[u8]]) -> Vec<u8> {
    page_with(header_type, serial, sequence, packets, LastPacket::Complete)
}

fn page_with(
    header_type: u8,
    serial: u32,
    sequence: u32,
    packets: &[&[u8]],
    last_packet: LastPacket,
) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_page(
        header_type,
        0,
        serial,
        sequence,
        packets,
        last_packet,
        &mut out,
    )
    .unwrap();
    out.to_vec()
}

fn stereo_head() -> OpusHead {
    OpusHead {
        version: 1,
        channel_count: 2,
        pre_skip: 312,
        input_sample_rate: 48_000,
        output_gain_q8: 0,
        mapping_family: 0,
        mapping: Vec::new(),
    }
}

fn tags() -> OpusTags {
    OpusTags {
        vendor: "veza tests".to_string(),
        comments: vec!["TITLE=hand made".to_string()],
    }
}

/// The OpusHead page (sequence 0) and the OpusTags page (sequence 1).
fn headers() -> Vec<u8> {
    [
        page(HEADER_TYPE_BOS, SERIAL, 0, &[&stereo_head().encode()]),
        page(0, SERIAL, 1, &[&tags().encode()]),
    ]
    .concat()
}

/// Runs the demuxer over `stream` with `limits`; returns the events before
/// the first error and that error, or `None` if the stream was accepted.
fn demux_with(stream: &[u8], limits: DemuxLimits) -> (Vec<DemuxEvent>, Option<OggError>) {
    let mut demuxer = OggOpusDemuxer::new(limits);
    demuxer.push(stream);
    let mut events = Vec::new();
    loop {
        match demuxer.next_event() {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, None),
            Err(error) => return (events, Some(error)),
        }
    }
}

/// The error `stream` is refused with.
fn refusal(stream: &[u8]) -> OggError {
    let (events, error) = demux_with(stream, DemuxLimits::default());
    error.unwrap_or_else(|| panic!("accepted, with events {events:?}"))
}

#[test]
fn http_instead_of_ogg_is_not_ogg() {
    assert_eq!(refusal(b"GET / HTTP/1.1\r\n\r\n"), OggError::NotOgg);
}

#[test]
fn garbage_between_pages_is_refused_not_skipped() {
    let stream = [headers(), b"junk".to_vec(), page(0, SERIAL, 2, &[AUDIO])].concat();
    let (events, error) = demux_with(&stream, DemuxLimits::default());
    assert_eq!(events.len(), 2, "head and tags came before the garbage");
    assert_eq!(error, Some(OggError::NotOgg));
}

#[test]
fn stream_structure_version_1_is_unsupported() {
    let mut stream = headers();
    stream[4] = 1;
    assert_eq!(refusal(&stream), OggError::UnsupportedVersion(1));
}

#[test]
fn undefined_header_type_bits_are_refused() {
    let mut stream = headers();
    stream[5] |= 0x10;
    assert_eq!(refusal(&stream), OggError::BadHeaderType(0x12));
}

#[test]
fn a_flipped_bit_fails_the_crc_of_its_page() {
    let mut stream = [headers(), page(0, SERIAL, 2, &[AUDIO])].concat();
    let last = stream.len() - 1;
    stream[last] ^= 0x40;
    assert_eq!(refusal(&stream), OggError::CrcMismatch { sequence: 2 });
}

#[test]
fn ogg_vorbis_is_not_opus() {
    let vorbis_identification =
        b"\x01vorbis\x00\x00\x00\x00\x02\x44\xac\x00\x00\0\0\0\0\0\xf4\x01\0\0\0\0\0\xb8\x01";
    let stream = page(HEADER_TYPE_BOS, SERIAL, 0, &[vorbis_identification]);
    assert_eq!(refusal(&stream), OggError::NotOpus);
}

#[test]
fn ogg_flac_is_not_opus() {
    let stream = page(
        HEADER_TYPE_BOS,
        SERIAL,
        0,
        &[b"\x7fFLAC\x01\x00\x00\x01fLaC"],
    );
    assert_eq!(refusal(&stream), OggError::NotOpus);
}

#[test]
fn opus_head_with_zero_channels_is_bad() {
    let head = OpusHead {
        channel_count: 0,
        ..stereo_head()
    };
    let stream = page(HEADER_TYPE_BOS, SERIAL, 0, &[&head.encode()]);
    assert_eq!(refusal(&stream), OggError::BadOpusHead("zero channels"));
}

#[test]
fn opus_head_cut_short_is_bad() {
    let stream = page(HEADER_TYPE_BOS, SERIAL, 0, &[&stereo_head().encode()[..18]]);
    assert_eq!(
        refusal(&stream),
        OggError::BadOpusHead("shorter than 19 bytes")
    );
}

#[test]
fn surround_mapping_family_1_is_refused_for_live_input() {
    let head = OpusHead {
        channel_count: 6,
        mapping_family: 1,
        mapping: vec![4, 2, 0, 4, 1, 2, 3, 5],
        ..stereo_head()
    };
    assert_eq!(OpusHead::parse(&head.encode()), Ok(head.clone()));
    let stream = page(HEADER_TYPE_BOS, SERIAL, 0, &[&head.encode()]);
    assert!(
        matches!(refusal(&stream), OggError::BadOpusHead(reason) if reason.contains("family 0"))
    );
}

#[test]
fn opus_head_parse_refuses_impossible_layouts() {
    let check = |head: OpusHead, reason: &'static str| {
        assert_eq!(
            OpusHead::parse(&head.encode()),
            Err(OggError::BadOpusHead(reason))
        );
    };
    check(
        OpusHead {
            channel_count: 3,
            ..stereo_head()
        },
        "mapping family 0 allows only one or two channels",
    );
    check(
        OpusHead {
            version: 0x10,
            ..stereo_head()
        },
        "unsupported major version",
    );
    let family_1 = |channel_count, mapping: Vec<u8>| OpusHead {
        channel_count,
        mapping_family: 1,
        mapping,
        ..stereo_head()
    };
    check(
        family_1(9, vec![9, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
        "mapping family 1 allows at most eight channels",
    );
    check(family_1(2, vec![0, 0, 0, 0]), "zero streams");
    check(
        family_1(2, vec![1, 2, 0, 1]),
        "more coupled streams than streams",
    );
    check(
        family_1(2, vec![1, 0, 0, 1]),
        "channel mapping names a missing stream",
    );
    check(
        family_1(2, vec![1, 0]),
        "channel mapping table is truncated",
    );
    // 255 marks a silent channel and is always allowed.
    let silent_right = family_1(2, vec![1, 0, 0, 255]);
    assert_eq!(OpusHead::parse(&silent_right.encode()), Ok(silent_right));
}

#[test]
fn opus_tags_claiming_more_comments_than_the_packet_holds_are_refused() {
    let mut packet = b"OpusTags".to_vec();
    packet.extend_from_slice(&0u32.to_le_bytes());
    packet.extend_from_slice(&u32::MAX.to_le_bytes());
    packet.extend_from_slice(&[0; 16]);
    assert_eq!(
        OpusTags::parse(&packet),
        Err(OggError::BadOpusTags("comment count exceeds the packet"))
    );
    let stream = [
        page(HEADER_TYPE_BOS, SERIAL, 0, &[&stereo_head().encode()]),
        page(0, SERIAL, 1, &[&packet]),
    ]
    .concat();
    assert_eq!(
        refusal(&stream),
        OggError::BadOpusTags("comment count exceeds the packet")
    );
}

#[test]
fn opus_tags_parse_refuses_lengths_past_the_end_and_bad_utf8() {
    let check = |packet: &[u8], reason: &'static str| {
        assert_eq!(
            OpusTags::parse(packet),
            Err(OggError::BadOpusTags(reason)),
            "{packet:?}"
        );
    };
    check(b"OpusTag", "missing the OpusTags signature");
    check(b"OpusTags\x05\0\0", "vendor string length is truncated");
    check(
        b"OpusTags\x05\0\0\0abc",
        "vendor string length exceeds the packet",
    );
    check(
        b"OpusTags\x01\0\0\0\xff\0\0\0\0",
        "vendor string is not UTF-8",
    );
    check(b"OpusTags\0\0\0\0\x01\0", "comment count is truncated");
    check(
        b"OpusTags\0\0\0\0\x01\0\0\0\x09\0\0\0a=b",
        "comment length exceeds the packet",
    );
    check(
        b"OpusTags\0\0\0\0\x01\0\0\0\x01\0\0\0\xc3",
        "comment is not UTF-8",
    );
}

#[test]
fn an_empty_audio_packet_is_a_bad_opus_packet() {
    let stream = [headers(), page(0, SERIAL, 2, &[&[]])].concat();
    assert_eq!(
        refusal(&stream),
        OggError::BadOpusPacket("empty packet has no TOC byte")
    );
}

#[test]
fn a_code_3_packet_with_zero_frames_is_a_bad_opus_packet() {
    let stream = [headers(), page(0, SERIAL, 2, &[&[0xfb, 0x00]])].concat();
    assert_eq!(
        refusal(&stream),
        OggError::BadOpusPacket("code 3 packet declares zero frames")
    );
}

#[test]
fn a_packet_over_the_limit_within_one_page_is_too_large() {
    let packet = [&[0xf8][..], &[0u8; 1999]].concat();
    let stream = [headers(), page(0, SERIAL, 2, &[&packet])].concat();
    let limits = DemuxLimits {
        packet_bytes_max: 1000,
    };
    let (_, error) = demux_with(&stream, limits);
    assert_eq!(error, Some(OggError::PacketTooLarge { bytes: 2000 }));
}

#[test]
fn a_packet_growing_over_the_limit_across_pages_is_refused_when_it_crosses() {
    let packet = [&[0xf8][..], &[0u8; 999]].concat();
    let stream = [
        headers(),
        page_with(
            0,
            SERIAL,
            2,
            &[&packet[..510]],
            LastPacket::ContinuesOnNextPage,
        ),
        page(HEADER_TYPE_CONTINUED, SERIAL, 3, &[&packet[510..]]),
    ]
    .concat();
    let limits = DemuxLimits {
        packet_bytes_max: 600,
    };
    let (_, error) = demux_with(&stream, limits);
    assert_eq!(error, Some(OggError::PacketTooLarge { bytes: 1000 }));
    let (events, error) = demux_with(&stream, DemuxLimits::default());
    assert_eq!(error, None);
    assert_eq!(events.len(), 3, "head, tags and the reassembled packet");
}

#[test]
fn a_second_bos_with_another_serial_is_a_multiplexed_stream() {
    let video_bos = page(HEADER_TYPE_BOS, SERIAL + 1, 0, &[b"\x80theora"]);
    let stream = [
        page(HEADER_TYPE_BOS, SERIAL, 0, &[&stereo_head().encode()]),
        video_bos,
    ]
    .concat();
    assert_eq!(refusal(&stream), OggError::MultiplexedStream);
}

#[test]
fn a_page_of_another_serial_during_audio_is_a_multiplexed_stream() {
    let stream = [
        headers(),
        page(0, SERIAL, 2, &[AUDIO]),
        page(0, SERIAL + 1, 3, &[AUDIO]),
    ]
    .concat();
    assert_eq!(refusal(&stream), OggError::MultiplexedStream);
}

#[test]
fn out_of_order_pages_are_unexpected() {
    let head_page = page(HEADER_TYPE_BOS, SERIAL, 0, &[&stereo_head().encode()]);
    let cases: [(&str, Vec<u8>, &str); 9] = [
        (
            "audio first",
            page(0, SERIAL, 0, &[AUDIO]),
            "a logical stream must begin with a BOS page holding OpusHead",
        ),
        (
            "audio before tags",
            [head_page.clone(), page(0, SERIAL, 1, &[AUDIO])].concat(),
            "an audio packet came before the OpusTags header",
        ),
        (
            "tags and head on one page",
            page(
                HEADER_TYPE_BOS,
                SERIAL,
                0,
                &[&stereo_head().encode(), &tags().encode()],
            ),
            "the BOS page must hold the OpusHead packet alone",
        ),
        (
            "audio on the tags page",
            [
                head_page.clone(),
                page(0, SERIAL, 1, &[&tags().encode(), AUDIO]),
            ]
            .concat(),
            "an audio packet shares the page that ends OpusTags",
        ),
        (
            "second BOS, same serial",
            [
                headers(),
                page(HEADER_TYPE_BOS, SERIAL, 2, &[&stereo_head().encode()]),
            ]
            .concat(),
            "a BOS page arrived in the middle of a logical stream",
        ),
        (
            "continued page with nothing to continue",
            [headers(), page(HEADER_TYPE_CONTINUED, SERIAL, 2, &[AUDIO])].concat(),
            "a page continues a packet that never started",
        ),
        (
            "sequence number going back",
            [headers(), page(0, SERIAL, 1, &[AUDIO])].concat(),
            "the page sequence number went backwards",
        ),
        (
            "tags page lost",
            [head_page.clone(), page(0, SERIAL, 2, &[&tags().encode()])].concat(),
            "a page of the Opus headers was lost",
        ),
        (
            "stream ends before its tags",
            page(
                HEADER_TYPE_BOS | HEADER_TYPE_EOS,
                SERIAL,
                0,
                &[&stereo_head().encode()],
            ),
            "the stream ended before its OpusTags header",
        ),
    ];
    for (name, stream, reason) in cases {
        assert_eq!(refusal(&stream), OggError::UnexpectedPage(reason), "{name}");
    }
}

#[test]
fn a_packet_left_unfinished_is_unexpected_on_a_fresh_page_and_at_the_end() {
    let start = page_with(
        0,
        SERIAL,
        2,
        &[&[0xf8; 255]],
        LastPacket::ContinuesOnNextPage,
    );
    let fresh = [headers(), start.clone(), page(0, SERIAL, 3, &[AUDIO])].concat();
    assert_eq!(
        refusal(&fresh),
        OggError::UnexpectedPage("a page starts anew while a packet awaits its end")
    );
    let eos = [
        headers(),
        page_with(
            HEADER_TYPE_EOS,
            SERIAL,
            2,
            &[&[0xf8; 255]],
            LastPacket::ContinuesOnNextPage,
        ),
    ]
    .concat();
    assert_eq!(
        refusal(&eos),
        OggError::UnexpectedPage("the EOS page ends inside a packet")
    );
}

#[test]
fn lost_pages_are_counted_and_the_packet_spanning_them_is_dropped() {
    let long_packet = [&[0xf8][..], &[7u8; 600]].concat();
    let stream = [
        headers(),
        page(0, SERIAL, 2, &[AUDIO]),
        page_with(
            0,
            SERIAL,
            3,
            &[AUDIO, &long_packet[..510]],
            LastPacket::ContinuesOnNextPage,
        ),
        // Pages 4 and 5 were lost; page 6 ends a packet whose start is gone.
        page(
            HEADER_TYPE_CONTINUED,
            SERIAL,
            6,
            &[&[7u8; 20], &[0xf8, 0x01]],
        ),
        page(HEADER_TYPE_EOS, SERIAL, 7, &[AUDIO]),
    ]
    .concat();
    let mut demuxer = OggOpusDemuxer::new(DemuxLimits::default());
    demuxer.push(&stream);
    let mut audio = Vec::new();
    while let Some(event) = demuxer.next_event().unwrap() {
        if let DemuxEvent::Audio { packet, .. } = event {
            audio.push(packet.to_vec());
        }
    }
    assert_eq!(audio, [AUDIO, AUDIO, &[0xf8, 0x01], AUDIO]);
    assert_eq!(demuxer.pages_lost(), 2);
}

#[test]
fn after_an_error_the_demuxer_keeps_refusing_and_drops_new_bytes() {
    let mut demuxer = OggOpusDemuxer::new(DemuxLimits::default());
    demuxer.push(b"junk");
    assert_eq!(demuxer.next_event(), Err(OggError::NotOgg));
    demuxer.push(&headers());
    assert_eq!(demuxer.next_event(), Err(OggError::NotOgg));
    assert_eq!(demuxer.buffered_bytes(), 0);
}

#[test]
fn write_page_refuses_more_than_255_segments() {
    let packet = vec![0u8; PAGE_BODY_BYTES_MAX];
    let mut out = BytesMut::new();
    let result = write_page(0, 0, SERIAL, 0, &[&packet], LastPacket::Complete, &mut out);
    assert_eq!(result, Err(OggError::PageTooLarge));
}

#[test]
fn every_error_has_a_detail_sentence_for_the_400_body() {
    let errors = [
        OggError::NotOgg,
        OggError::UnsupportedVersion(1),
        OggError::BadHeaderType(0x10),
        OggError::CrcMismatch { sequence: 9 },
        OggError::PageTooLarge,
        OggError::NotOpus,
        OggError::BadOpusHead("zero channels"),
        OggError::BadOpusTags("comment count exceeds the packet"),
        OggError::BadOpusPacket("empty packet has no TOC byte"),
        OggError::PacketTooLarge { bytes: 70_000 },
        OggError::MultiplexedStream,
        OggError::UnexpectedPage("a page of the Opus headers was lost"),
    ];
    for error in errors {
        let detail = error.detail();
        assert!(detail.starts_with(char::is_uppercase), "{detail}");
        assert!(detail.ends_with('.'), "{detail}");
        assert!(!detail.ends_with(".."), "{detail}");
    }
    assert!(OggError::CrcMismatch { sequence: 9 }.detail().contains('9'));
    assert!(OggError::BadOpusHead("zero channels")
        .detail()
        .contains("zero channels"));
}
