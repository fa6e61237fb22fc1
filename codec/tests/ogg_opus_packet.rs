//! Opus packet durations (RFC 6716 §3.1, §3.2): one `check` per TOC
//! configuration family and frame-count code.

use veza_codec::ogg::{opus_packet_samples, OggError};

/// TOC byte for a configuration number, mono, and a frame-count code.
fn toc(configuration: u8, code: u8) -> u8 {
    (configuration << 3) | code
}

fn check(packet: &[u8], expected: Result<u32, &'static str>) {
    assert_eq!(
        opus_packet_samples(packet),
        expected.map_err(OggError::BadOpusPacket),
        "packet {packet:02x?}"
    );
}

#[test]
fn one_frame_lasts_the_frame_size_of_its_configuration() {
    // (first configuration of a group, frame sizes in samples at 48 kHz)
    let groups: [(u8, &[u32]); 7] = [
        (0, &[480, 960, 1920, 2880]), // SILK narrowband: 10, 20, 40, 60 ms
        (4, &[480, 960, 1920, 2880]), // SILK mediumband
        (8, &[480, 960, 1920, 2880]), // SILK wideband
        (12, &[480, 960]),            // Hybrid super-wideband: 10, 20 ms
        (14, &[480, 960]),            // Hybrid fullband
        (16, &[120, 240, 480, 960]),  // CELT narrowband: 2.5, 5, 10, 20 ms
        (28, &[120, 240, 480, 960]),  // CELT fullband
    ];
    for (first_configuration, frame_samples) in groups {
        for (offset, &samples) in frame_samples.iter().enumerate() {
            check(
                &[toc(first_configuration + offset as u8, 0), 0xaa],
                Ok(samples),
            );
        }
    }
}

#[test]
fn the_stereo_bit_does_not_change_the_duration() {
    check(&[toc(31, 0) | 0x04, 0xaa], Ok(960));
}

#[test]
fn code_0_with_only_a_toc_byte_is_one_empty_frame() {
    // An encoder in DTX sends this; the decoder conceals the frame.
    check(&[toc(31, 0)], Ok(960));
}

#[test]
fn code_1_is_two_equal_frames_and_needs_an_even_payload() {
    check(&[toc(31, 1), 1, 2], Ok(1920));
    check(&[toc(31, 1)], Ok(1920));
    check(
        &[toc(31, 1), 1],
        Err("code 1 packet has an odd payload length"),
    );
}

#[test]
fn code_2_is_two_frames_whose_first_length_must_fit() {
    check(&[toc(1, 2), 2, 0xa, 0xb, 0xc], Ok(1920));
    check(&[toc(1, 2), 0], Ok(1920));
    check(&[toc(1, 2)], Err("code 2 packet lacks its frame length"));
    check(
        &[toc(1, 2), 3, 0xa],
        Err("code 2 frame length exceeds the packet"),
    );
    // A first byte of 252 or more takes a second byte: 252 + 4 * 1 = 256.
    check(
        &[toc(1, 2), 252],
        Err("code 2 packet lacks its frame length"),
    );
    let long_first_frame = [&[toc(1, 2), 252, 1][..], &[0u8; 256]].concat();
    check(&long_first_frame, Ok(1920));
    check(
        &long_first_frame[..258],
        Err("code 2 frame length exceeds the packet"),
    );
}

#[test]
fn code_3_counts_frames_from_its_second_byte_up_to_120_ms() {
    check(&[toc(16, 3), 48], Ok(5760)); // 48 frames of 2.5 ms
    check(&[toc(19, 3), 6], Ok(5760)); // 6 frames of 20 ms
    check(&[toc(3, 3), 2], Ok(5760)); // 2 frames of 60 ms
                                      // The padding and VBR flags (top bits) do not count as frames.
    check(&[toc(31, 3), 0xc0 | 3], Ok(2880));
}

#[test]
fn code_3_refuses_zero_frames_a_missing_count_and_more_than_120_ms() {
    check(
        &[toc(31, 3)],
        Err("code 3 packet lacks its frame count byte"),
    );
    check(&[toc(31, 3), 0], Err("code 3 packet declares zero frames"));
    check(
        &[toc(31, 3), 0xc0],
        Err("code 3 packet declares zero frames"),
    );
    check(&[toc(19, 3), 7], Err("packet is longer than 120 ms"));
    check(&[toc(3, 3), 3], Err("packet is longer than 120 ms"));
    check(&[toc(16, 3), 49], Err("packet is longer than 120 ms"));
    check(&[toc(16, 3), 63], Err("packet is longer than 120 ms"));
}

#[test]
fn an_empty_packet_has_no_duration() {
    check(&[], Err("empty packet has no TOC byte"));
}
