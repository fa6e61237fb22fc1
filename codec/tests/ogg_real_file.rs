//! Real Ogg Opus files through the parser, the demuxer and the pager, with
//! the reference tools (`oggz-validate`, `opusinfo`, installed by
//! `scripts/setup.sh`) as the judges of what the pager writes.
//!
//! The embedded file was made with
//! `ffmpeg -f lavfi -i sine=frequency=440:duration=0.2 -ac 2 -c:a libopus
//! -b:a 24k -page_duration 60000 sine_440hz_200ms_stereo.opus`; the expected
//! header fields below were read from it with `oggz-dump`, `opusinfo` and a
//! hand-written page walker, not with this crate.

use std::path::PathBuf;
use std::process::Command;

use bytes::{Bytes, BytesMut};
use veza_codec::ogg::crc::crc32;
use veza_codec::ogg::{
    opus_packet_samples, parse_page, DemuxEvent, DemuxLimits, OggOpusDemuxer, OggOpusPager,
    OpusHead, OpusTags, END_OF_STREAM_FILLER_PACKET, GRANULE_POSITION_NONE, HEADER_TYPE_BOS,
    HEADER_TYPE_EOS,
};

const SINE_STEREO: &[u8] = include_bytes!("../src/ogg/testdata/sine_440hz_200ms_stereo.opus");
const SINE_STEREO_SERIAL: u32 = 813_561_926;

/// The file's first page, the BOS page holding OpusHead, as `xxd` shows it.
const SINE_STEREO_FIRST_PAGE_HEX: &str = "4f67675300020000000000000000\
    46f87d3000000000a3e7f12f01134f707573486561640102380180bb0000000000";

/// Header type, granule position, sequence number, CRC and lacing values of
/// every page of the file.
const SINE_STEREO_PAGES: [(u8, u64, u32, u32, &[u8]); 6] = [
    (HEADER_TYPE_BOS, 0, 0, 0x2ff1_e7a3, &[19]),
    (0, 0, 1, 0xeb88_93b5, &[62]),
    (0, 2880, 2, 0xac20_f6e9, &[91, 62, 64]),
    (0, 5760, 3, 0xf70a_8523, &[64, 64, 64]),
    (0, 8640, 4, 0xfa20_452f, &[63, 66, 62]),
    (HEADER_TYPE_EOS, 9912, 5, 0xba6b_3a7d, &[54, 36]),
];

fn from_hex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn demux_all(stream: &[u8]) -> Vec<DemuxEvent> {
    demux_all_with(stream, DemuxLimits::default())
}

fn demux_all_with(stream: &[u8], limits: DemuxLimits) -> Vec<DemuxEvent> {
    let mut demuxer = OggOpusDemuxer::new(limits);
    demuxer.push(stream);
    let mut events = Vec::new();
    while let Some(event) = demuxer.next_event().expect("a valid stream") {
        events.push(event);
    }
    assert_eq!(demuxer.buffered_bytes(), 0, "every byte belongs to a page");
    events
}

fn audio_of(events: &[DemuxEvent]) -> Vec<(Bytes, u32)> {
    events
        .iter()
        .filter_map(|event| match event {
            DemuxEvent::Audio { packet, samples } => Some((packet.clone(), *samples)),
            _ => None,
        })
        .collect()
}

/// Re-pages every stream of `events` under `serial`, as the data plane does
/// with a live source.
fn repage(events: &[DemuxEvent], serial: u32, page_duration_samples: u32) -> BytesMut {
    let head = events.iter().find_map(|event| match event {
        DemuxEvent::Head(head) => Some(head.clone()),
        _ => None,
    });
    let tags = events.iter().find_map(|event| match event {
        DemuxEvent::Tags(tags) => Some(tags.clone()),
        _ => None,
    });
    let mut pager = OggOpusPager::new(
        serial,
        &head.expect("a head"),
        &tags.expect("tags"),
        page_duration_samples,
    );
    let mut output = BytesMut::from(&pager.header_pages()[..]);
    for (packet, samples) in audio_of(events) {
        if let Some(pages) = pager.push_packet(&packet, samples) {
            output.extend_from_slice(&pages);
        }
    }
    output.extend_from_slice(&pager.finish());
    output
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("veza-ogg-{}-{name}", std::process::id()))
}

/// Runs a tool on a file and returns whether it succeeded and what it said.
fn run_tool(program: &str, arguments: &[&str], path: &PathBuf) -> (bool, String) {
    let output = Command::new(program)
        .args(arguments)
        .arg(path)
        .output()
        .unwrap_or_else(|error| panic!("{program} must be installed (scripts/setup.sh): {error}"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Writes `stream` to a temporary file and has both reference tools check
/// it; returns what `opusinfo` printed.
fn assert_tools_accept(stream: &[u8], name: &str) -> String {
    let path = temp_path(name);
    std::fs::write(&path, stream).unwrap();
    let (validate_ok, validate_text) = run_tool("oggz-validate", &[], &path);
    let (info_ok, info_text) = run_tool("opusinfo", &[], &path);
    std::fs::remove_file(&path).unwrap();
    assert!(
        validate_ok,
        "oggz-validate refused {name}:\n{validate_text}"
    );
    assert!(info_ok, "opusinfo refused {name}:\n{info_text}");
    for complaint in ["WARNING", "ERROR", "Warning", "Error"] {
        assert!(
            !info_text.contains(complaint),
            "opusinfo on {name}:\n{info_text}"
        );
    }
    info_text
}

#[test]
fn crc_of_a_real_opus_head_page_matches_the_value_ffmpeg_stored() {
    let mut page = from_hex(SINE_STEREO_FIRST_PAGE_HEX);
    assert_eq!(page.len(), 47);
    assert_eq!(&page[..], &SINE_STEREO[..47]);
    assert_eq!(&page[22..26], &0x2ff1_e7a3u32.to_le_bytes());
    page[22..26].fill(0);
    assert_eq!(crc32(&page), 0x2ff1_e7a3);
}

#[test]
fn every_page_of_a_real_file_parses_with_the_fields_the_tools_report() {
    let mut offset = 0;
    for (header_type, granule_position, sequence, crc, lacing) in SINE_STEREO_PAGES {
        let (page, page_bytes) = parse_page(&SINE_STEREO[offset..]).unwrap().unwrap();
        assert_eq!(page.header_type, header_type, "page {sequence}");
        assert_eq!(page.granule_position, granule_position, "page {sequence}");
        assert_eq!(page.serial, SINE_STEREO_SERIAL, "page {sequence}");
        assert_eq!(page.sequence, sequence);
        assert_eq!(page.segment_table, lacing, "page {sequence}");
        let stored_crc = &SINE_STEREO[offset + 22..offset + 26];
        assert_eq!(stored_crc, &crc.to_le_bytes(), "page {sequence}");
        offset += page_bytes;
    }
    assert_eq!(offset, SINE_STEREO.len());
}

#[test]
fn demuxing_a_real_file_yields_its_headers_eleven_20_ms_packets_and_the_end() {
    let events = demux_all(SINE_STEREO);
    let expected_head = OpusHead {
        version: 1,
        channel_count: 2,
        pre_skip: 312,
        input_sample_rate: 48_000,
        output_gain_q8: 0,
        mapping_family: 0,
        mapping: Vec::new(),
    };
    let expected_tags = OpusTags {
        vendor: "Lavf59.27.100".to_string(),
        comments: vec!["encoder=Lavc59.37.100 libopus".to_string()],
    };
    assert_eq!(events[0], DemuxEvent::Head(expected_head));
    assert_eq!(events[1], DemuxEvent::Tags(expected_tags));
    let audio = audio_of(&events);
    let packet_bytes: Vec<usize> = audio.iter().map(|(packet, _)| packet.len()).collect();
    assert_eq!(packet_bytes, [91, 62, 64, 64, 64, 64, 63, 66, 62, 54, 36]);
    assert!(audio.iter().all(|&(_, samples)| samples == 960));
    assert_eq!(events.len(), 2 + 11 + 1);
    assert_eq!(events.last(), Some(&DemuxEvent::EndOfStream));
}

#[test]
fn headers_written_by_the_pager_are_byte_identical_to_ffmpeg_s() {
    let events = demux_all(SINE_STEREO);
    let repaged = repage(&events, SINE_STEREO_SERIAL, 2880);
    // Same serial, same headers: the two header pages must match ffmpeg's
    // byte for byte, CRCs included.
    assert_eq!(&repaged[..137], &SINE_STEREO[..137]);
}

#[test]
fn repaged_real_file_passes_oggz_validate_and_opusinfo_with_the_same_packets() {
    let events = demux_all(SINE_STEREO);
    let repaged = repage(&events, 0x5645_5a41, 960 * 4);
    let info = assert_tools_accept(&repaged, "repaged.opus");
    assert!(info.contains("Channels: 2"), "{info}");
    assert!(info.contains("Pre-skip: 312"), "{info}");
    let repaged_events = demux_all(&repaged);
    assert_eq!(audio_of(&repaged_events), audio_of(&events));
    assert_granules_count_completed_samples(&repaged);
}

/// Walks the pages and checks that sequence numbers have no gap and that
/// each page's granule position is the running total of the samples of the
/// audio packets ending on it or before it (-1 where none ends), the
/// filler on an EOS page being trimmed.
fn assert_granules_count_completed_samples(stream: &[u8]) {
    let mut offset = 0;
    let mut total_samples = 0u64;
    let mut sequence_expected = 0;
    let mut audio_started = false;
    let mut open_packet = Vec::new();
    while offset < stream.len() {
        let (page, page_bytes) = parse_page(&stream[offset..]).unwrap().unwrap();
        assert_eq!(page.sequence, sequence_expected);
        sequence_expected += 1;
        let mut body_offset = 0;
        let mut n_packets_ended = 0;
        for &lacing in page.segment_table {
            open_packet.extend_from_slice(&page.body[body_offset..body_offset + lacing as usize]);
            body_offset += lacing as usize;
            if lacing == 255 {
                continue;
            }
            let is_trimmed_filler =
                page.is_end_of_stream() && open_packet == END_OF_STREAM_FILLER_PACKET;
            if audio_started && !is_trimmed_filler {
                total_samples += u64::from(opus_packet_samples(&open_packet).unwrap());
            }
            audio_started |= open_packet.starts_with(b"OpusTags");
            open_packet.clear();
            n_packets_ended += 1;
        }
        let expected = if n_packets_ended == 0 {
            GRANULE_POSITION_NONE
        } else {
            total_samples
        };
        assert_eq!(page.granule_position, expected, "page {}", page.sequence);
        offset += page_bytes;
    }
}

#[test]
fn a_chained_stream_yields_head_and_tags_again_after_end_of_stream() {
    // 2880-sample pages leave two packets pending at the end, so the EOS
    // page needs no filler and the second stream has the same 11 packets.
    let second_stream = repage(&demux_all(SINE_STEREO), 7, 2880);
    let chained = [SINE_STEREO, &second_stream[..]].concat();
    let events = demux_all(&chained);
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| match event {
            DemuxEvent::Head(_) => "head",
            DemuxEvent::Tags(_) => "tags",
            DemuxEvent::Audio { .. } => "audio",
            DemuxEvent::EndOfStream => "end",
        })
        .collect();
    let one_stream = [["head", "tags"].as_slice(), &["audio"; 11], &["end"]].concat();
    assert_eq!(kinds, [one_stream.clone(), one_stream].concat());
}

#[test]
fn splitting_a_real_file_at_every_byte_gives_the_same_events() {
    let whole = demux_all(SINE_STEREO);
    for split in 0..=SINE_STEREO.len() {
        let mut demuxer = OggOpusDemuxer::new(DemuxLimits::default());
        let mut events = Vec::new();
        for part in [&SINE_STEREO[..split], &SINE_STEREO[split..]] {
            demuxer.push(part);
            while let Some(event) = demuxer.next_event().unwrap() {
                events.push(event);
            }
        }
        assert_eq!(events, whole, "split at {split}");
    }
}

#[test]
fn a_longer_ffmpeg_stream_with_20_ms_pages_survives_repaging() {
    let source_path = temp_path("ffmpeg-3s.opus");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
        .args(["-i", "sine=frequency=330:duration=3", "-ac", "1"])
        .args(["-c:a", "libopus", "-b:a", "48k", "-page_duration", "20000"])
        .arg(&source_path)
        .status()
        .expect("ffmpeg must be installed (scripts/setup.sh)");
    assert!(status.success());
    let source = std::fs::read(&source_path).unwrap();
    std::fs::remove_file(&source_path).unwrap();
    let events = demux_all(&source);
    let source_samples: u64 = audio_of(&events)
        .iter()
        .map(|&(_, samples)| u64::from(samples))
        .sum();
    assert!(source_samples >= 3 * 48_000, "{source_samples}");
    // Half-second pages: 25 packets of 20 ms each.
    let repaged = repage(&events, 0xfeed_f00d, 24_000);
    assert_tools_accept(&repaged, "ffmpeg-3s-repaged.opus");
    let repaged_audio = audio_of(&demux_all(&repaged));
    assert_eq!(repaged_audio, audio_of(&events));
    assert_granules_count_completed_samples(&repaged);
}

#[test]
fn a_reconnecting_source_continues_one_stream_for_listeners() {
    // The broadcaster drops and comes back with a new encoder session: a
    // new serial, sequence numbers and granules from 0 again.
    let first_session = demux_all(SINE_STEREO);
    let second_session = demux_all(&repage(&first_session, 99, 2880));
    let mut pager = OggOpusPager::new(
        0x5645_5a41,
        &first_session_head(&first_session),
        &OpusTags::default(),
        960 * 3,
    );
    let mut stream = BytesMut::from(&pager.header_pages()[..]);
    for (packet, samples) in audio_of(&first_session)
        .into_iter()
        .chain(audio_of(&second_session))
    {
        stream.extend_from_slice(&pager.push_packet(&packet, samples).unwrap_or_default());
    }
    stream.extend_from_slice(&pager.finish());
    assert_eq!(pager.granule_position(), 22 * 960);
    assert_tools_accept(&stream, "reconnected.opus");
    assert_granules_count_completed_samples(&stream);
    assert_eq!(audio_of(&demux_all(&stream)).len(), 22);
}

fn first_session_head(events: &[DemuxEvent]) -> OpusHead {
    match &events[0] {
        DemuxEvent::Head(head) => head.clone(),
        other => panic!("expected a head, got {other:?}"),
    }
}

#[test]
fn tags_spanning_header_pages_pass_the_tools() {
    let events = demux_all(SINE_STEREO);
    let long_tags = OpusTags {
        vendor: "veza".to_string(),
        comments: vec![format!("DESCRIPTION={}", "la".repeat(40_000))],
    };
    let mut pager = OggOpusPager::new(1, &first_session_head(&events), &long_tags, 960);
    let mut stream = BytesMut::from(&pager.header_pages()[..]);
    for (packet, samples) in audio_of(&events) {
        stream.extend_from_slice(&pager.push_packet(&packet, samples).unwrap_or_default());
    }
    stream.extend_from_slice(&pager.finish());
    assert_tools_accept(&stream, "long-tags.opus");
    let limits = DemuxLimits {
        packet_bytes_max: 100_000,
    };
    let repaged_events = demux_all_with(&stream, limits);
    assert_eq!(repaged_events[1], DemuxEvent::Tags(long_tags));
    // 960-sample pages leave nothing pending: the EOS page carries the
    // filler packet, and its granule trims the filler away.
    let repaged_audio = audio_of(&repaged_events);
    assert_eq!(repaged_audio.len(), 12);
    assert_eq!(&repaged_audio[11].0[..], END_OF_STREAM_FILLER_PACKET);
    assert_granules_count_completed_samples(&stream);
}
