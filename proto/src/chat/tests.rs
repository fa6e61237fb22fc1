//! The chat codec's specification as tests: every frame survives a round
//! trip; truncated, padded and corrupted bytes give typed errors carrying
//! the request id when it was readable, never panics.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

fn check_client_round_trip(frame: &ClientFrame) {
    let bytes = frame.to_bytes();
    assert_eq!(bytes[0], frame.opcode());
    assert_eq!(ClientFrame::decode(&bytes).as_ref(), Ok(frame));
}

fn check_server_round_trip(frame: &ServerFrame) {
    let bytes = frame.to_bytes();
    assert_eq!(bytes[0], frame.opcode());
    assert_eq!(ServerFrame::decode(&bytes).as_ref(), Ok(frame));
}

fn sample_send() -> ClientFrame {
    ClientFrame::Send {
        request_id: 7,
        room_id: 42,
        thread_parent_seq: 0,
        nonce: "n-1".into(),
        mentions: vec![5, 6],
        body: "hi @bob ✓".into(),
    }
}

fn sample_history_page() -> ServerFrame {
    ServerFrame::HistoryPage {
        request_id: 9,
        room_id: 42,
        messages: vec![HistoryMessage {
            seq: 3,
            author_id: 5,
            thread_parent_seq: 0,
            created_at_ms: 1_700_000_000_000,
            edited_at_ms: 0,
            deleted_at_ms: 0,
            mentions: vec![6],
            body: "hello".into(),
            reactions: vec![ReactionCount {
                emoji: "👍".into(),
                count: 2,
            }],
        }],
    }
}

#[test]
fn send_is_laid_out_field_by_field_in_big_endian() {
    let bytes = sample_send().to_bytes();
    let mut expected = vec![0x04, 0, 0, 0, 7];
    expected.extend_from_slice(&42_i64.to_be_bytes());
    expected.extend_from_slice(&0_i64.to_be_bytes());
    expected.extend_from_slice(&[0, 3, b'n', b'-', b'1']);
    expected.extend_from_slice(&[0, 2]);
    expected.extend_from_slice(&5_i64.to_be_bytes());
    expected.extend_from_slice(&6_i64.to_be_bytes());
    let body = "hi @bob ✓".as_bytes();
    expected.extend_from_slice(&(body.len() as u32).to_be_bytes());
    expected.extend_from_slice(body);
    assert_eq!(&bytes[..], &expected[..]);
}

#[test]
fn message_event_encodes_the_same_bytes_alone_and_inside_a_server_frame() {
    let event = MessageEvent {
        room_id: 1,
        seq: 2,
        author_id: 3,
        thread_parent_seq: 0,
        created_at_ms: 4,
        nonce: String::new(),
        mentions: vec![],
        body: "x".into(),
    };
    assert_eq!(
        event.to_bytes(),
        ServerFrame::Message(event.clone()).to_bytes()
    );
    assert_eq!(event.to_bytes()[0], opcode::MESSAGE);
    check_server_round_trip(&ServerFrame::Message(event));
}

#[test]
fn every_truncation_of_a_frame_is_malformed_with_the_request_id_once_readable() {
    let bytes = sample_send().to_bytes();
    for length in 0..bytes.len() {
        let error = ClientFrame::decode(&bytes[..length]).expect_err("truncated");
        assert_eq!(error.code, ErrorCode::Malformed, "length {length}");
        let expected_request_id = if length >= 5 { 7 } else { 0 };
        assert_eq!(error.request_id, expected_request_id, "length {length}");
    }
    let bytes = sample_history_page().to_bytes();
    for length in 0..bytes.len() {
        let error = ServerFrame::decode(&bytes[..length]).expect_err("truncated");
        assert_eq!(error.code, ErrorCode::Malformed, "length {length}");
    }
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut bytes = sample_send().to_bytes().to_vec();
    bytes.push(0);
    let error = ClientFrame::decode(&bytes).expect_err("trailing byte");
    assert_eq!((error.request_id, error.code), (7, ErrorCode::Malformed));
    let mut bytes = ServerFrame::Ok { request_id: 3 }.to_bytes().to_vec();
    bytes.push(0);
    let error = ServerFrame::decode(&bytes).expect_err("trailing byte");
    assert_eq!((error.request_id, error.code), (3, ErrorCode::Malformed));
}

#[test]
fn unknown_opcodes_are_their_own_error_and_keep_the_request_id() {
    for unknown in [0x00, 0x0E, 0x7F, 0x80, 0x90, 0xFF] {
        let error = ClientFrame::decode(&[unknown, 0, 0, 1, 0]).expect_err("unknown");
        assert_eq!(
            (error.request_id, error.code),
            (256, ErrorCode::UnknownOpcode)
        );
    }
    let error = ClientFrame::decode(&[0x0E]).expect_err("unknown and short");
    assert_eq!(
        (error.request_id, error.code),
        (0, ErrorCode::UnknownOpcode)
    );
    for unknown in [0x00, 0x01, 0x85, 0x8E, 0x99, 0xFF] {
        let error = ServerFrame::decode(&[unknown, 0, 0, 0, 9]).expect_err("unknown");
        assert_eq!(
            error.code,
            ErrorCode::UnknownOpcode,
            "opcode {unknown:#04x}"
        );
        let expected_request_id = if unknown < opcode::FIRST_EVENT { 9 } else { 0 };
        assert_eq!(error.request_id, expected_request_id);
    }
}

fn sample_watch_stream() -> ClientFrame {
    ClientFrame::WatchStream {
        request_id: 11,
        stream: "radio".into(),
    }
}

fn sample_now_playing() -> ServerFrame {
    ServerFrame::NowPlaying {
        stream: "radio".into(),
        title: "Artist – Song".into(),
        updated_at_ms: 1_767_225_600_000,
    }
}

#[test]
fn watch_and_unwatch_stream_carry_the_request_id_then_the_stream_name() {
    let mut expected = vec![0x0C, 0, 0, 0, 11, 0, 5];
    expected.extend_from_slice(b"radio");
    assert_eq!(&sample_watch_stream().to_bytes()[..], &expected[..]);
    let unwatch = ClientFrame::UnwatchStream {
        request_id: 12,
        stream: "radio".into(),
    };
    expected[0] = 0x0D;
    expected[4] = 12;
    assert_eq!(&unwatch.to_bytes()[..], &expected[..]);
    assert_eq!(unwatch.name(), "unwatch_stream");
    assert_eq!(unwatch.request_id(), 12);
    check_client_round_trip(&sample_watch_stream());
    check_client_round_trip(&unwatch);
}

#[test]
fn now_playing_is_an_event_of_stream_title_and_time() {
    let frame = sample_now_playing();
    let title = "Artist – Song".as_bytes();
    let mut expected = vec![0x98, 0, 5];
    expected.extend_from_slice(b"radio");
    expected.extend_from_slice(&(title.len() as u16).to_be_bytes());
    expected.extend_from_slice(title);
    expected.extend_from_slice(&1_767_225_600_000_i64.to_be_bytes());
    assert_eq!(&frame.to_bytes()[..], &expected[..]);
    assert_eq!(frame.request_id(), None);
    assert_eq!(frame.name(), "now_playing");
    check_server_round_trip(&frame);
    check_server_round_trip(&ServerFrame::NowPlaying {
        stream: "a".into(),
        title: String::new(),
        updated_at_ms: -1,
    });
}

#[test]
fn every_truncation_of_watch_stream_and_now_playing_is_malformed() {
    let bytes = sample_watch_stream().to_bytes();
    for length in 0..bytes.len() {
        let error = ClientFrame::decode(&bytes[..length]).expect_err("truncated");
        assert_eq!(error.code, ErrorCode::Malformed, "length {length}");
        let expected_request_id = if length >= 5 { 11 } else { 0 };
        assert_eq!(error.request_id, expected_request_id, "length {length}");
    }
    let bytes = sample_now_playing().to_bytes();
    for length in 0..bytes.len() {
        let error = ServerFrame::decode(&bytes[..length]).expect_err("truncated");
        assert_eq!(
            (error.request_id, error.code),
            (0, ErrorCode::Malformed),
            "length {length}"
        );
    }
    let mut padded = sample_now_playing().to_bytes().to_vec();
    padded.push(0);
    let error = ServerFrame::decode(&padded).expect_err("trailing byte");
    assert_eq!(error.code, ErrorCode::Malformed);
}

#[test]
fn invalid_utf8_in_a_stream_name_or_title_is_malformed() {
    for opcode in [opcode::WATCH_STREAM, opcode::UNWATCH_STREAM] {
        let watch = [opcode, 0, 0, 0, 13, 0, 2, 0xC3, 0x28];
        let error = ClientFrame::decode(&watch).expect_err("bad UTF-8 stream");
        assert_eq!((error.request_id, error.code), (13, ErrorCode::Malformed));
    }
    let mut bad_stream = vec![0x98, 0, 1, 0xFF, 0, 0];
    bad_stream.extend_from_slice(&[0; 8]);
    let error = ServerFrame::decode(&bad_stream).expect_err("bad UTF-8 stream");
    assert_eq!(error.code, ErrorCode::Malformed);
    let mut bad_title = vec![0x98, 0, 1, b'r', 0, 3, 0xE2, 0x80, 0x41];
    bad_title.extend_from_slice(&[0; 8]);
    let error = ServerFrame::decode(&bad_title).expect_err("bad UTF-8 title");
    assert_eq!(error.code, ErrorCode::Malformed);
    bad_title[8] = 0x93;
    assert!(ServerFrame::decode(&bad_title).is_ok(), "U+2013 is valid");
}

#[test]
fn empty_frames_are_malformed() {
    assert_eq!(
        ClientFrame::decode(&[]).map_err(|error| error.code),
        Err(ErrorCode::Malformed)
    );
    assert_eq!(
        ServerFrame::decode(&[]).map_err(|error| error.code),
        Err(ErrorCode::Malformed)
    );
}

#[test]
fn invalid_utf8_in_a_string_or_text_is_malformed() {
    let auth = [0x01, 0, 0, 0, 1, 0, 2, 0xC3, 0x28];
    let error = ClientFrame::decode(&auth).expect_err("bad UTF-8 string");
    assert_eq!((error.request_id, error.code), (1, ErrorCode::Malformed));
    let mut edit = vec![0x05, 0, 0, 0, 2];
    edit.extend_from_slice(&[0; 16]);
    edit.extend_from_slice(&[0, 0, 0, 1, 0xFF]);
    let error = ClientFrame::decode(&edit).expect_err("bad UTF-8 text");
    assert_eq!((error.request_id, error.code), (2, ErrorCode::Malformed));
}

#[test]
fn a_bool_other_than_zero_or_one_is_malformed() {
    let mut react = vec![0x07, 0, 0, 0, 3];
    react.extend_from_slice(&[0; 16]);
    react.extend_from_slice(&[2, 0, 0]);
    let error = ClientFrame::decode(&react).expect_err("bool 2");
    assert_eq!((error.request_id, error.code), (3, ErrorCode::Malformed));
    react[21] = 1;
    assert!(ClientFrame::decode(&react).is_ok());
}

#[test]
fn unknown_enumeration_bytes_are_malformed() {
    for status in [0, 5, 255] {
        let error = ClientFrame::decode(&[0x09, 0, 0, 0, 4, status]).expect_err("status");
        assert_eq!((error.request_id, error.code), (4, ErrorCode::Malformed));
    }
    for code in [0_u16, 15, 0xFFFF] {
        let mut frame = vec![0x8F, 0, 0, 0, 5];
        frame.extend_from_slice(&code.to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let error = ServerFrame::decode(&frame).expect_err("error code");
        assert_eq!((error.request_id, error.code), (5, ErrorCode::Malformed));
    }
    let mut removed = vec![0x97];
    removed.extend_from_slice(&[0; 8]);
    removed.push(4);
    let error = ServerFrame::decode(&removed).expect_err("reason");
    assert_eq!((error.request_id, error.code), (0, ErrorCode::Malformed));
}

#[test]
fn a_list_count_larger_than_the_frame_is_refused_before_allocating() {
    let mut send = vec![0x04, 0, 0, 0, 6];
    send.extend_from_slice(&[0; 16]);
    send.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let error = ClientFrame::decode(&send).expect_err("huge count");
    assert_eq!((error.request_id, error.code), (6, ErrorCode::Malformed));
}

#[test]
fn enumerations_convert_both_ways_and_refuse_unknown_values() {
    for (index, status) in PresenceStatus::ALL.into_iter().enumerate() {
        assert_eq!(status as usize, index + 1);
        assert_eq!(PresenceStatus::from_u8(u8::from(status)), Some(status));
    }
    for (index, reason) in RemovedReason::ALL.into_iter().enumerate() {
        assert_eq!(reason as usize, index + 1);
        assert_eq!(RemovedReason::from_u8(u8::from(reason)), Some(reason));
    }
    for (index, code) in ErrorCode::ALL.into_iter().enumerate() {
        assert_eq!(code as usize, index + 1);
        assert_eq!(ErrorCode::from_u16(u16::from(code)), Some(code));
    }
    assert_eq!(PresenceStatus::from_u8(0), None);
    assert_eq!(RemovedReason::from_u8(4), None);
    assert_eq!(ErrorCode::from_u16(15), None);
}

#[test]
fn error_code_names_are_snake_case_and_distinct() {
    let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.name()).collect();
    assert!(names.iter().all(|name| name
        .bytes()
        .all(|byte| byte.is_ascii_lowercase() || byte == b'_')));
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), ErrorCode::ALL.len());
    assert_eq!(
        ErrorCode::TooManySubscriptions.name(),
        "too_many_subscriptions"
    );
}

#[test]
fn decode_errors_display_the_code_name_and_detail() {
    let error = ClientFrame::decode(&[0x01, 0, 0, 0, 1, 0]).expect_err("truncated");
    assert_eq!(error.to_string(), "malformed: frame ends inside a u16");
}

#[test]
fn server_frames_report_request_ids_only_for_replies() {
    assert_eq!(sample_history_page().request_id(), Some(9));
    let typing = ServerFrame::Typing {
        room_id: 1,
        user_id: 2,
    };
    assert_eq!(typing.request_id(), None);
    assert_eq!(typing.name(), "typing");
    assert_eq!(sample_send().name(), "send");
    assert_eq!(sample_send().request_id(), 7);
}

// ----- Property tests: arbitrary frames of every variant, arbitrary bytes.

fn string_strategy() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9 ]{0,12}", "\\PC{0,8}"]
}

fn ids() -> impl Strategy<Value = Vec<i64>> {
    vec(any::<i64>(), 0..6)
}

fn presence_status() -> impl Strategy<Value = PresenceStatus> {
    proptest::sample::select(PresenceStatus::ALL.to_vec())
}

fn removed_reason() -> impl Strategy<Value = RemovedReason> {
    proptest::sample::select(RemovedReason::ALL.to_vec())
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL.to_vec())
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    let request_id = any::<u32>();
    prop_oneof![
        (request_id, string_strategy())
            .prop_map(|(request_id, token)| ClientFrame::Auth { request_id, token }),
        (request_id, any::<i64>(), any::<i64>()).prop_map(|(request_id, room_id, since_seq)| {
            ClientFrame::Subscribe {
                request_id,
                room_id,
                since_seq,
            }
        }),
        (request_id, any::<i64>()).prop_map(|(request_id, room_id)| {
            ClientFrame::Unsubscribe {
                request_id,
                room_id,
            }
        }),
        (
            request_id,
            any::<i64>(),
            any::<i64>(),
            string_strategy(),
            ids(),
            string_strategy()
        )
            .prop_map(
                |(request_id, room_id, thread_parent_seq, nonce, mentions, body)| {
                    ClientFrame::Send {
                        request_id,
                        room_id,
                        thread_parent_seq,
                        nonce,
                        mentions,
                        body,
                    }
                }
            ),
        (request_id, any::<i64>(), any::<i64>(), string_strategy()).prop_map(
            |(request_id, room_id, seq, body)| ClientFrame::Edit {
                request_id,
                room_id,
                seq,
                body
            }
        ),
        (request_id, any::<i64>(), any::<i64>()).prop_map(|(request_id, room_id, seq)| {
            ClientFrame::Delete {
                request_id,
                room_id,
                seq,
            }
        }),
        (
            request_id,
            any::<i64>(),
            any::<i64>(),
            any::<bool>(),
            string_strategy()
        )
            .prop_map(
                |(request_id, room_id, seq, add, emoji)| ClientFrame::React {
                    request_id,
                    room_id,
                    seq,
                    add,
                    emoji
                }
            ),
        (request_id, any::<i64>()).prop_map(|(request_id, room_id)| ClientFrame::Typing {
            request_id,
            room_id
        }),
        (request_id, presence_status())
            .prop_map(|(request_id, status)| ClientFrame::SetPresence { request_id, status }),
        (request_id, any::<i64>(), any::<i64>()).prop_map(|(request_id, room_id, seq)| {
            ClientFrame::ReadMarker {
                request_id,
                room_id,
                seq,
            }
        }),
        (
            request_id,
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            any::<u16>()
        )
            .prop_map(|(request_id, room_id, before_seq, after_seq, limit)| {
                ClientFrame::History {
                    request_id,
                    room_id,
                    before_seq,
                    after_seq,
                    limit,
                }
            }),
        (request_id, string_strategy())
            .prop_map(|(request_id, stream)| ClientFrame::WatchStream { request_id, stream }),
        (request_id, string_strategy())
            .prop_map(|(request_id, stream)| ClientFrame::UnwatchStream { request_id, stream }),
    ]
}

fn history_message() -> impl Strategy<Value = HistoryMessage> {
    (
        vec(any::<i64>(), 6),
        ids(),
        string_strategy(),
        vec(
            (string_strategy(), any::<u32>())
                .prop_map(|(emoji, count)| ReactionCount { emoji, count }),
            0..3,
        ),
    )
        .prop_map(|(numbers, mentions, body, reactions)| HistoryMessage {
            seq: numbers[0],
            author_id: numbers[1],
            thread_parent_seq: numbers[2],
            created_at_ms: numbers[3],
            edited_at_ms: numbers[4],
            deleted_at_ms: numbers[5],
            mentions,
            body,
            reactions,
        })
}

fn server_reply() -> impl Strategy<Value = ServerFrame> {
    let request_id = any::<u32>();
    prop_oneof![
        request_id.prop_map(|request_id| ServerFrame::Ok { request_id }),
        (
            request_id,
            any::<i64>(),
            any::<u64>(),
            string_strategy(),
            any::<u32>()
        )
            .prop_map(
                |(request_id, user_id, connection_id, username, message_bytes_max)| {
                    ServerFrame::AuthOk {
                        request_id,
                        user_id,
                        connection_id,
                        username,
                        message_bytes_max,
                    }
                }
            ),
        (request_id, any::<i64>(), any::<i64>(), any::<u32>()).prop_map(
            |(request_id, room_id, head_seq, replayed)| ServerFrame::Subscribed {
                request_id,
                room_id,
                head_seq,
                replayed
            }
        ),
        (request_id, any::<i64>(), any::<i64>()).prop_map(|(request_id, room_id, seq)| {
            ServerFrame::Sent {
                request_id,
                room_id,
                seq,
            }
        }),
        (request_id, any::<i64>(), vec(history_message(), 0..3)).prop_map(
            |(request_id, room_id, messages)| ServerFrame::HistoryPage {
                request_id,
                room_id,
                messages
            }
        ),
        (request_id, error_code(), any::<u32>(), string_strategy()).prop_map(
            |(request_id, code, retry_after_ms, message)| ServerFrame::Error {
                request_id,
                code,
                retry_after_ms,
                message
            }
        ),
    ]
}

fn server_event() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (
            vec(any::<i64>(), 5),
            string_strategy(),
            ids(),
            string_strategy()
        )
            .prop_map(|(numbers, nonce, mentions, body)| ServerFrame::Message(
                MessageEvent {
                    room_id: numbers[0],
                    seq: numbers[1],
                    author_id: numbers[2],
                    thread_parent_seq: numbers[3],
                    created_at_ms: numbers[4],
                    nonce,
                    mentions,
                    body,
                }
            )),
        (vec(any::<i64>(), 4), string_strategy()).prop_map(|(numbers, body)| {
            ServerFrame::Edited {
                room_id: numbers[0],
                seq: numbers[1],
                editor_id: numbers[2],
                edited_at_ms: numbers[3],
                body,
            }
        }),
        vec(any::<i64>(), 4).prop_map(|numbers| ServerFrame::Deleted {
            room_id: numbers[0],
            seq: numbers[1],
            deleter_id: numbers[2],
            deleted_at_ms: numbers[3],
        }),
        (vec(any::<i64>(), 3), any::<bool>(), string_strategy()).prop_map(
            |(numbers, add, emoji)| ServerFrame::Reaction {
                room_id: numbers[0],
                seq: numbers[1],
                user_id: numbers[2],
                add,
                emoji,
            }
        ),
        (any::<i64>(), any::<i64>())
            .prop_map(|(room_id, user_id)| ServerFrame::Typing { room_id, user_id }),
        (any::<i64>(), any::<i64>(), presence_status()).prop_map(|(room_id, user_id, status)| {
            ServerFrame::Presence {
                room_id,
                user_id,
                status,
            }
        }),
        (vec(any::<i64>(), 4), string_strategy()).prop_map(|(numbers, body)| {
            ServerFrame::Mention {
                room_id: numbers[0],
                seq: numbers[1],
                author_id: numbers[2],
                created_at_ms: numbers[3],
                body,
            }
        }),
        (any::<i64>(), removed_reason())
            .prop_map(|(room_id, reason)| ServerFrame::Removed { room_id, reason }),
        (string_strategy(), string_strategy(), any::<i64>()).prop_map(
            |(stream, title, updated_at_ms)| ServerFrame::NowPlaying {
                stream,
                title,
                updated_at_ms,
            }
        ),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![server_reply(), server_event()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_client_frame_round_trips(frame in client_frame()) {
        check_client_round_trip(&frame);
    }

    #[test]
    fn every_server_frame_round_trips(frame in server_frame()) {
        check_server_round_trip(&frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_errors_name_a_decode_code(
        bytes in vec(any::<u8>(), 0..256)
    ) {
        for code in [
            ClientFrame::decode(&bytes).err().map(|error| error.code),
            ServerFrame::decode(&bytes).err().map(|error| error.code),
        ]
        .into_iter()
        .flatten()
        {
            prop_assert!(matches!(code, ErrorCode::Malformed | ErrorCode::UnknownOpcode));
        }
    }

    #[test]
    fn whatever_decodes_re_encodes_to_the_same_bytes(bytes in vec(any::<u8>(), 0..128)) {
        if let Ok(frame) = ClientFrame::decode(&bytes) {
            prop_assert_eq!(&frame.to_bytes()[..], &bytes[..]);
        }
        if let Ok(frame) = ServerFrame::decode(&bytes) {
            prop_assert_eq!(&frame.to_bytes()[..], &bytes[..]);
        }
    }

    #[test]
    fn corrupting_one_byte_of_a_valid_frame_never_panics(
        frame in client_frame(),
        reply in server_frame(),
        position in any::<prop::sample::Index>(),
        value in any::<u8>()
    ) {
        let mut bytes = frame.to_bytes().to_vec();
        let byte_idx = position.index(bytes.len());
        bytes[byte_idx] = value;
        let _ = ClientFrame::decode(&bytes);
        let mut bytes = reply.to_bytes().to_vec();
        let byte_idx = position.index(bytes.len());
        bytes[byte_idx] = value;
        let _ = ServerFrame::decode(&bytes);
    }
}
