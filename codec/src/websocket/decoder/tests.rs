//! Specification tests for [`MessageDecoder`]: RFC 6455 §5.7 frames in hex,
//! every [`ProtocolError`] from real bytes, and properties over arbitrary
//! streams and split points.

use super::*;
use crate::websocket::frame::{encode_frame, encode_frame_header, encode_masked_frame};
use proptest::prelude::*;

const LIMITS: DecoderLimits = DecoderLimits {
    frame_payload_bytes_max: 1 << 20,
    message_bytes_max: 1 << 20,
};

/// The example mask key of RFC 6455 §5.7.
const RFC_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Parses whitespace-separated hex bytes, as RFC 6455 prints them.
fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).expect("test hex is valid"))
        .collect()
}

fn text(payload: &str) -> Message {
    Message::Text(Bytes::copy_from_slice(payload.as_bytes()))
}

fn binary(payload: &[u8]) -> Message {
    Message::Binary(Bytes::copy_from_slice(payload))
}

/// Decodes until the decoder needs more bytes or fails.
fn decode_available(
    decoder: &mut MessageDecoder,
    buffer: &mut BytesMut,
) -> Result<Vec<Message>, ProtocolError> {
    let mut messages = Vec::new();
    while let Some(message) = decoder.decode(buffer)? {
        messages.push(message);
    }
    Ok(messages)
}

/// Decodes `input` in one piece and expects exactly `expected`, with every
/// byte consumed.
fn check(role: Role, input: &[u8], expected: &[Message]) {
    let mut decoder = MessageDecoder::new(role, LIMITS);
    let mut buffer = BytesMut::from(input);
    let messages = decode_available(&mut decoder, &mut buffer).expect("a valid stream");
    assert_eq!(messages, expected);
    assert!(buffer.is_empty(), "{} bytes left", buffer.len());
}

/// Decodes `input` and expects `expected_error` with `expected_close_code`.
fn check_error(
    role: Role,
    limits: DecoderLimits,
    input: &[u8],
    expected_error: ProtocolError,
    expected_close_code: u16,
) {
    let mut decoder = MessageDecoder::new(role, limits);
    let mut buffer = BytesMut::from(input);
    let error = decode_available(&mut decoder, &mut buffer).expect_err("a broken stream");
    assert_eq!(error, expected_error, "input {input:02x?}");
    assert_eq!(error.close_code(), expected_close_code, "{error}");
    assert!(error.reason().len() <= 100);
    assert!(close_code::is_valid_on_wire(error.close_code()));
}

#[test]
fn decodes_the_rfc_6455_section_5_7_examples() {
    check(Role::Client, &hex("81 05 48 65 6c 6c 6f"), &[text("Hello")]);
    check(
        Role::Server,
        &hex("81 85 37 fa 21 3d 7f 9f 4d 51 58"),
        &[text("Hello")],
    );
    check(
        Role::Client,
        &hex("01 03 48 65 6c   80 02 6c 6f"),
        &[text("Hello")],
    );
    check(
        Role::Client,
        &hex("89 05 48 65 6c 6c 6f"),
        &[Message::Ping(Bytes::from_static(b"Hello"))],
    );
    check(
        Role::Server,
        &hex("8a 85 37 fa 21 3d 7f 9f 4d 51 58"),
        &[Message::Pong(Bytes::from_static(b"Hello"))],
    );
}

#[test]
fn decodes_the_rfc_256_byte_and_64_kib_binary_frames() {
    let payload_256: Vec<u8> = (0..256u32).map(|value| value as u8).collect();
    let mut input = hex("82 7e 01 00");
    input.extend_from_slice(&payload_256);
    check(Role::Client, &input, &[binary(&payload_256)]);

    let payload_64_kib: Vec<u8> = (0..65536u32).map(|value| (value % 251) as u8).collect();
    let mut input = hex("82 7f 00 00 00 00 00 01 00 00");
    input.extend_from_slice(&payload_64_kib);
    check(Role::Client, &input, &[binary(&payload_64_kib)]);
}

#[test]
fn control_frames_between_fragments_are_returned_at_once() {
    let mut input = Vec::new();
    input.extend_from_slice(&encode_masked_frame(false, Opcode::Text, b"Hel", RFC_MASK));
    input.extend_from_slice(&encode_masked_frame(true, Opcode::Ping, b"p", [1, 2, 3, 4]));
    input.extend_from_slice(&encode_masked_frame(
        false,
        Opcode::Continuation,
        b"",
        [5, 6, 7, 8],
    ));
    input.extend_from_slice(&encode_masked_frame(true, Opcode::Pong, b"", [9, 9, 9, 9]));
    input.extend_from_slice(&encode_masked_frame(
        true,
        Opcode::Continuation,
        b"lo",
        RFC_MASK,
    ));
    check(
        Role::Server,
        &input,
        &[
            Message::Ping(Bytes::from_static(b"p")),
            Message::Pong(Bytes::new()),
            text("Hello"),
        ],
    );
}

#[test]
fn close_frames_carry_an_optional_code_and_a_utf8_reason() {
    check(
        Role::Client,
        &hex("88 00"),
        &[Message::Close {
            code: None,
            reason: Bytes::new(),
        }],
    );
    check(
        Role::Client,
        &hex("88 02 03 e8"),
        &[Message::Close {
            code: Some(1000),
            reason: Bytes::new(),
        }],
    );
    check(
        Role::Server,
        &encode_masked_frame(true, Opcode::Close, b"\x0f\xa0bye \xe2\x82\xac", RFC_MASK),
        &[Message::Close {
            code: Some(4000),
            reason: Bytes::from_static("bye €".as_bytes()),
        }],
    );
}

#[test]
fn empty_data_messages_are_valid() {
    check(
        Role::Client,
        &hex("81 00  82 00  01 00 80 00"),
        &[text(""), binary(b""), text("")],
    );
}

#[test]
fn a_single_frame_message_is_a_slice_of_the_read_buffer() {
    let mut buffer = BytesMut::from(&hex("81 85 37 fa 21 3d 7f 9f 4d 51 58")[..]);
    let payload_address = buffer[6..].as_ptr();
    let mut decoder = MessageDecoder::new(Role::Server, LIMITS);
    let Some(Message::Text(payload)) = decoder.decode(&mut buffer).unwrap() else {
        panic!("expected a text message");
    };
    assert_eq!(&payload[..], b"Hello");
    assert_eq!(payload.as_ptr(), payload_address, "the payload was copied");
}

#[test]
fn an_incomplete_frame_consumes_nothing() {
    let frame = hex("81 85 37 fa 21 3d 7f 9f 4d 51 58");
    for available_bytes in 0..frame.len() {
        let mut decoder = MessageDecoder::new(Role::Server, LIMITS);
        let mut buffer = BytesMut::from(&frame[..available_bytes]);
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
        assert_eq!(&buffer[..], &frame[..available_bytes]);
        buffer.extend_from_slice(&frame[available_bytes..]);
        assert_eq!(decoder.decode(&mut buffer), Ok(Some(text("Hello"))));
    }
}

#[test]
fn bytes_needed_hint_tracks_the_frame_being_read() {
    let decoder = MessageDecoder::new(Role::Client, LIMITS);
    let cases: &[(&str, usize)] = &[
        ("", 2),
        ("82", 1),
        ("82 7e", 2),
        ("82 7e 01", 1),
        ("82 7e 01 00", 256),
        ("82 7e 01 00 aa aa aa aa", 252),
        ("82 7f 00 00", 6),
        ("82 05 01 02 03 04 05", 0),
        // A frame the decoder will refuse: nothing to reserve for.
        ("c2 05", 0),
    ];
    for (input_hex, expected_bytes) in cases {
        let buffer = BytesMut::from(&hex(input_hex)[..]);
        assert_eq!(
            decoder.bytes_needed_hint(&buffer),
            *expected_bytes,
            "{input_hex}"
        );
    }
}

#[test]
fn every_protocol_violation_maps_to_its_close_code() {
    let small = DecoderLimits {
        frame_payload_bytes_max: 10,
        message_bytes_max: 15,
    };
    let cases: &[(Role, DecoderLimits, &str, ProtocolError, u16)] = &[
        (
            Role::Server,
            LIMITS,
            "81 05 48 65 6c 6c 6f",
            ProtocolError::UnmaskedClientFrame,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "81 85 37 fa 21 3d 7f 9f 4d 51 58",
            ProtocolError::MaskedServerFrame,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "c1 00",
            ProtocolError::ReservedBitsSet,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "a1 00",
            ProtocolError::ReservedBitsSet,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "91 00",
            ProtocolError::ReservedBitsSet,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "83 00",
            ProtocolError::UnknownOpcode(3),
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "87 00",
            ProtocolError::UnknownOpcode(7),
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "8b 00",
            ProtocolError::UnknownOpcode(11),
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "8f 00",
            ProtocolError::UnknownOpcode(15),
            1002,
        ),
        // Refused from the header alone: no payload bytes are sent.
        (
            Role::Client,
            LIMITS,
            "89 7e 00 7e",
            ProtocolError::ControlFrameTooLong(126),
            1002,
        ),
        (
            Role::Server,
            LIMITS,
            "88 fe 01 00",
            ProtocolError::ControlFrameTooLong(256),
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "09 00",
            ProtocolError::FragmentedControlFrame,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "08 00",
            ProtocolError::FragmentedControlFrame,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "80 00",
            ProtocolError::ContinuationWithoutStart,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "81 00 80 00",
            ProtocolError::ContinuationWithoutStart,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "01 00 01 00",
            ProtocolError::DataFrameDuringFragmentedMessage,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "02 00 81 00",
            ProtocolError::DataFrameDuringFragmentedMessage,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "82 7e 00 05",
            ProtocolError::NonMinimalLength,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "82 7f 00 00 00 00 00 00 ff ff",
            ProtocolError::NonMinimalLength,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "82 7f 80 00 00 00 00 00 00 00",
            ProtocolError::PayloadLengthHighBitSet,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "81 01 ff",
            ProtocolError::InvalidUtf8,
            1007,
        ),
        (
            Role::Server,
            LIMITS,
            "81 83 00 00 00 00 ed a0 80",
            ProtocolError::InvalidUtf8,
            1007,
        ),
        (
            Role::Client,
            LIMITS,
            "01 02 ce ba 80 01 e1",
            ProtocolError::InvalidUtf8,
            1007,
        ),
        (
            Role::Client,
            LIMITS,
            "88 01 03",
            ProtocolError::InvalidClosePayload,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "88 02 03 ed",
            ProtocolError::InvalidClosePayload,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "88 02 03 ee",
            ProtocolError::InvalidClosePayload,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "88 02 03 e7",
            ProtocolError::InvalidClosePayload,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "88 02 13 88",
            ProtocolError::InvalidClosePayload,
            1002,
        ),
        (
            Role::Client,
            LIMITS,
            "88 03 03 e8 ff",
            ProtocolError::InvalidCloseReasonUtf8,
            1007,
        ),
        // Refused from the header alone: the 11 declared bytes never arrive.
        (
            Role::Client,
            small,
            "82 0b",
            ProtocolError::FrameTooLarge {
                payload_bytes: 11,
                max: 10,
            },
            1009,
        ),
        (
            Role::Client,
            small,
            "82 7f 7f ff ff ff ff ff ff ff",
            ProtocolError::FrameTooLarge {
                payload_bytes: u64::MAX >> 1,
                max: 10,
            },
            1009,
        ),
        // 10 bytes buffered, then a fragment declaring 6 more: over 15.
        (
            Role::Client,
            small,
            "02 0a 00 01 02 03 04 05 06 07 08 09  80 06",
            ProtocolError::MessageTooLarge {
                message_bytes: 16,
                max: 15,
            },
            1009,
        ),
        (
            Role::Client,
            DecoderLimits {
                frame_payload_bytes_max: 10,
                message_bytes_max: 4,
            },
            "82 05",
            ProtocolError::MessageTooLarge {
                message_bytes: 5,
                max: 4,
            },
            1009,
        ),
    ];
    for (role, limits, input_hex, expected_error, expected_close_code) in cases {
        check_error(
            *role,
            *limits,
            &hex(input_hex),
            expected_error.clone(),
            *expected_close_code,
        );
    }
}

#[test]
fn invalid_utf8_fails_at_the_first_fragment_that_makes_it_impossible() {
    // "κ" then the surrogate ED A0 80 cut across fragments: the fragment
    // holding A0 already fails, before the final fragment arrives.
    let mut decoder = MessageDecoder::new(Role::Server, LIMITS);
    let mut buffer = BytesMut::new();
    buffer.extend_from_slice(&encode_masked_frame(
        false,
        Opcode::Text,
        b"\xce\xba\xed",
        RFC_MASK,
    ));
    assert_eq!(decoder.decode(&mut buffer), Ok(None));
    buffer.extend_from_slice(&encode_masked_frame(
        false,
        Opcode::Continuation,
        b"\xa0",
        RFC_MASK,
    ));
    assert_eq!(decoder.decode(&mut buffer), Err(ProtocolError::InvalidUtf8));
}

#[test]
fn text_ending_inside_a_character_fails_at_the_final_fragment() {
    let mut input = Vec::new();
    input.extend_from_slice(&encode_frame(false, Opcode::Text, b"ok \xe2\x82"));
    input.extend_from_slice(&encode_frame(true, Opcode::Continuation, b""));
    check_error(
        Role::Client,
        LIMITS,
        &input,
        ProtocolError::InvalidUtf8,
        1007,
    );
}

#[test]
fn utf8_split_across_fragments_at_every_byte_position_is_accepted() {
    let message = "κόσμε € 😀 \u{10FFFF}";
    let bytes = message.as_bytes();
    for split_idx in 0..=bytes.len() {
        let mut input = Vec::new();
        input.extend_from_slice(&encode_masked_frame(
            false,
            Opcode::Text,
            &bytes[..split_idx],
            RFC_MASK,
        ));
        input.extend_from_slice(&encode_masked_frame(
            true,
            Opcode::Continuation,
            &bytes[split_idx..],
            [7, 7, 7, 7],
        ));
        check(Role::Server, &input, &[text(message)]);
    }
}

#[test]
fn a_poisoned_decoder_repeats_its_error() {
    let mut decoder = MessageDecoder::new(Role::Server, LIMITS);
    let mut buffer = BytesMut::from(&hex("81 05 48 65 6c 6c 6f")[..]);
    assert_eq!(
        decoder.decode(&mut buffer),
        Err(ProtocolError::UnmaskedClientFrame)
    );
    let mut valid = BytesMut::from(&encode_masked_frame(true, Opcode::Text, b"ok", RFC_MASK)[..]);
    assert_eq!(
        decoder.decode(&mut valid),
        Err(ProtocolError::UnmaskedClientFrame)
    );
    assert_eq!(decoder.bytes_needed_hint(&valid), 0);
}

#[test]
fn a_message_at_exactly_the_limits_is_accepted() {
    let limits = DecoderLimits {
        frame_payload_bytes_max: 4,
        message_bytes_max: 10,
    };
    let mut decoder = MessageDecoder::new(Role::Client, limits);
    let mut buffer = BytesMut::from(&hex("02 04 00 01 02 03  00 04 04 05 06 07  80 02 08 09")[..]);
    assert_eq!(
        decoder.decode(&mut buffer),
        Ok(Some(binary(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9])))
    );
    assert!(decoder.assembly.capacity() <= limits.message_bytes_max);
}

// ---- Properties

/// One step of a generated stream: a data message, possibly fragmented,
/// possibly with a control frame after its first fragment, or a lone control
/// frame.
#[derive(Debug, Clone)]
enum StreamStep {
    Data {
        is_text: bool,
        payload: Vec<u8>,
        split_idxs: Vec<usize>,
        ping_after_first_fragment: Option<Vec<u8>>,
    },
    Ping(Vec<u8>),
    Close(u16, String),
}

fn stream_step() -> impl Strategy<Value = StreamStep> {
    let control_payload = proptest::collection::vec(any::<u8>(), 0..=125);
    prop_oneof![
        4 => (
            any::<bool>(),
            "\\PC{0,60}",
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(0usize..400, 0..4),
            proptest::option::of(control_payload.clone()),
        )
            .prop_map(|(is_text, text, bytes, split_idxs, ping)| StreamStep::Data {
                is_text,
                payload: if is_text { text.into_bytes() } else { bytes },
                split_idxs,
                ping_after_first_fragment: ping,
            }),
        1 => control_payload.prop_map(StreamStep::Ping),
        1 => (prop_oneof![Just(1000u16), Just(1001), Just(4008)], "\\PC{0,20}")
            .prop_map(|(code, reason)| StreamStep::Close(code, reason)),
    ]
}

/// Encodes the steps as client frames with per-frame masks, and returns the
/// wire bytes with the messages a server must decode from them.
fn encode_stream(steps: &[StreamStep], mask_seed: u8) -> (Vec<u8>, Vec<Message>) {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut frame_idx = 0u8;
    let mut next_mask = || {
        frame_idx = frame_idx.wrapping_add(1);
        [mask_seed, frame_idx, mask_seed ^ frame_idx, 0x5a]
    };
    for step in steps {
        match step {
            StreamStep::Data {
                is_text,
                payload,
                split_idxs,
                ping_after_first_fragment,
            } => {
                let mut bounds: Vec<usize> = split_idxs
                    .iter()
                    .map(|idx| (*idx).min(payload.len()))
                    .collect();
                bounds.sort_unstable();
                bounds.push(payload.len());
                let mut start = 0;
                for (piece_idx, end) in bounds.iter().enumerate() {
                    let opcode = match (piece_idx, is_text) {
                        (0, true) => Opcode::Text,
                        (0, false) => Opcode::Binary,
                        _ => Opcode::Continuation,
                    };
                    let fin = piece_idx + 1 == bounds.len();
                    wire.extend_from_slice(&encode_masked_frame(
                        fin,
                        opcode,
                        &payload[start..*end],
                        next_mask(),
                    ));
                    start = *end;
                    if let (0, false, Some(ping)) = (piece_idx, fin, ping_after_first_fragment) {
                        wire.extend_from_slice(&encode_masked_frame(
                            true,
                            Opcode::Ping,
                            ping,
                            next_mask(),
                        ));
                        expected.push(Message::Ping(Bytes::copy_from_slice(ping)));
                    }
                }
                let payload = Bytes::copy_from_slice(payload);
                expected.push(if *is_text {
                    Message::Text(payload)
                } else {
                    Message::Binary(payload)
                });
            }
            StreamStep::Ping(payload) => {
                wire.extend_from_slice(&encode_masked_frame(
                    true,
                    Opcode::Ping,
                    payload,
                    next_mask(),
                ));
                expected.push(Message::Ping(Bytes::copy_from_slice(payload)));
            }
            StreamStep::Close(code, reason) => {
                let payload = crate::websocket::frame::close_payload(*code, reason);
                wire.extend_from_slice(&encode_masked_frame(
                    true,
                    Opcode::Close,
                    &payload,
                    next_mask(),
                ));
                expected.push(Message::Close {
                    code: Some(*code),
                    reason: payload.slice(2..),
                });
            }
        }
    }
    (wire, expected)
}

/// Feeds `wire` in pieces cut at `split_idxs`, decoding after each piece.
fn decode_in_pieces(
    decoder: &mut MessageDecoder,
    wire: &[u8],
    split_idxs: &[usize],
) -> Result<Vec<Message>, ProtocolError> {
    let mut bounds: Vec<usize> = split_idxs
        .iter()
        .map(|idx| (*idx).min(wire.len()))
        .collect();
    bounds.sort_unstable();
    bounds.push(wire.len());
    let mut buffer = BytesMut::new();
    let mut messages = Vec::new();
    let mut start = 0;
    for end in bounds {
        buffer.extend_from_slice(&wire[start..end]);
        start = end;
        messages.extend(decode_available(decoder, &mut buffer)?);
    }
    assert!(buffer.is_empty());
    Ok(messages)
}

#[test]
fn byte_at_a_time_gives_the_same_messages_as_all_at_once() {
    let steps = [
        StreamStep::Data {
            is_text: true,
            payload: "κόσμε € 😀".as_bytes().to_vec(),
            split_idxs: vec![1, 4, 9],
            ping_after_first_fragment: Some(b"ping".to_vec()),
        },
        StreamStep::Data {
            is_text: false,
            payload: vec![0xAB; 70_000],
            split_idxs: vec![],
            ping_after_first_fragment: None,
        },
        StreamStep::Close(1000, "done".to_string()),
    ];
    let (wire, expected) = encode_stream(&steps, 0x42);
    let every_byte: Vec<usize> = (1..wire.len()).collect();
    let mut decoder = MessageDecoder::new(Role::Server, LIMITS);
    assert_eq!(
        decode_in_pieces(&mut decoder, &wire, &every_byte),
        Ok(expected.clone())
    );
    let mut decoder = MessageDecoder::new(Role::Server, LIMITS);
    assert_eq!(decode_in_pieces(&mut decoder, &wire, &[]), Ok(expected));
}

/// One frame with arbitrary header bits, biased towards valid opcodes, clear
/// reserved bits and the masking `role` expects, so most frames get past the
/// first checks and exercise fragmentation, control frames and limits.
fn arbitrary_frame(role: Role) -> impl Strategy<Value = Vec<u8>> {
    let reserved_bits = prop_oneof![9 => Just(0u8), 1 => 0u8..8];
    let opcode = prop_oneof![8 => prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]), 1 => 0u8..16];
    let masked = prop_oneof![9 => Just(role == Role::Server), 1 => any::<bool>()];
    let fin = prop_oneof![3 => Just(true), 1 => Just(false)];
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..140),
        "[ -~]{0,140}".prop_map(String::into_bytes),
    ];
    (
        fin,
        reserved_bits,
        opcode,
        payload,
        masked,
        any::<[u8; 4]>(),
    )
        .prop_map(|(fin, reserved_bits, opcode, payload, masked, mask)| {
            let mut frame = BytesMut::new();
            encode_frame_header(
                &mut frame,
                true,
                Opcode::Binary,
                payload.len(),
                masked.then_some(mask),
            );
            frame[0] = u8::from(fin) << 7 | reserved_bits << 4 | opcode;
            frame.extend_from_slice(&payload);
            frame.to_vec()
        })
}

/// Decodes `chunks` one after another with small limits and checks the
/// decoder stays within them and keeps its error once it fails.
fn check_never_exceeds_limits(
    role: Role,
    limits: DecoderLimits,
    chunks: &[Vec<u8>],
) -> Result<(), TestCaseError> {
    let mut decoder = MessageDecoder::new(role, limits);
    let mut buffer = BytesMut::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buffer) {
                Ok(None) => break,
                Ok(Some(Message::Text(payload) | Message::Binary(payload))) => {
                    prop_assert!(payload.len() <= limits.message_bytes_max);
                }
                Ok(Some(Message::Ping(payload) | Message::Pong(payload))) => {
                    prop_assert!(payload.len() <= CONTROL_PAYLOAD_BYTES_MAX);
                }
                Ok(Some(Message::Close { reason, .. })) => {
                    prop_assert!(reason.len() <= CONTROL_PAYLOAD_BYTES_MAX - 2);
                }
                Err(error) => {
                    prop_assert_eq!(decoder.decode(&mut buffer), Err(error));
                    return Ok(());
                }
            }
            prop_assert!(decoder.assembly.capacity() <= limits.message_bytes_max);
        }
        prop_assert!(decoder.assembly.capacity() <= limits.message_bytes_max);
    }
    Ok(())
}

fn small_limits() -> impl Strategy<Value = DecoderLimits> {
    (0usize..300, 0usize..600).prop_map(|(frame_payload_bytes_max, message_bytes_max)| {
        DecoderLimits {
            frame_payload_bytes_max,
            message_bytes_max,
        }
    })
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Server), Just(Role::Client)]
}

proptest! {
    #[test]
    fn arbitrary_split_points_give_the_same_messages_as_all_at_once(
        steps in proptest::collection::vec(stream_step(), 0..8),
        mask_seed in any::<u8>(),
        split_idxs in proptest::collection::vec(0usize..3000, 0..30),
    ) {
        let (wire, expected) = encode_stream(&steps, mask_seed);
        let mut decoder = MessageDecoder::new(Role::Server, LIMITS);
        prop_assert_eq!(decode_in_pieces(&mut decoder, &wire, &[]), Ok(expected.clone()));
        let mut decoder = MessageDecoder::new(Role::Server, LIMITS);
        prop_assert_eq!(decode_in_pieces(&mut decoder, &wire, &split_idxs), Ok(expected));
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_exceed_the_limits(
        role in role(),
        limits in small_limits(),
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 0..40),
    ) {
        check_never_exceeds_limits(role, limits, &chunks)?;
    }

    #[test]
    fn arbitrary_frames_never_panic_or_exceed_the_limits(
        (role, frames) in role().prop_flat_map(|role| {
            (Just(role), proptest::collection::vec(arbitrary_frame(role), 0..20))
        }),
        limits in small_limits(),
        chunk_bytes in 1usize..100,
    ) {
        let stream: Vec<u8> = frames.concat();
        let chunks: Vec<Vec<u8>> = stream.chunks(chunk_bytes).map(<[u8]>::to_vec).collect();
        check_never_exceeds_limits(role, limits, &chunks)?;
    }

    #[test]
    fn client_masked_frames_decode_to_the_original_payload(
        payload in proptest::collection::vec(any::<u8>(), 0..70_000),
        mask in any::<[u8; 4]>(),
    ) {
        let mut buffer = BytesMut::from(&encode_masked_frame(true, Opcode::Binary, &payload, mask)[..]);
        let mut decoder = MessageDecoder::new(Role::Server, LIMITS);
        prop_assert_eq!(decoder.decode(&mut buffer), Ok(Some(binary(&payload))));
        prop_assert!(buffer.is_empty());
    }

    #[test]
    fn server_frames_decode_to_the_original_text(text_payload in "\\PC{0,200}") {
        let mut buffer = BytesMut::from(&encode_frame(true, Opcode::Text, text_payload.as_bytes())[..]);
        let mut decoder = MessageDecoder::new(Role::Client, LIMITS);
        prop_assert_eq!(decoder.decode(&mut buffer), Ok(Some(text(&text_payload))));
    }
}
