//! The control protocol's specification as tests: every frame survives a
//! round trip through the encoder and an incremental decoder fed in any
//! pieces; garbage, truncation and bit flips give errors, never panics;
//! oversize frames and wrong versions are refused.

use bytes::{BufMut, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::frame::LENGTH_PREFIX_BYTES;
use super::handshake::{accept_hello, check_welcome, hello};
use super::*;

const TEST_FRAME_BYTES_MAX: usize = 1 << 20;

fn encode_all<T>(frames: &[T]) -> BytesMut
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    let mut encoder = FrameEncoder::new(TEST_FRAME_BYTES_MAX);
    let mut out = BytesMut::new();
    for frame in frames {
        encoder.encode(frame, &mut out).expect("encodes");
    }
    out
}

/// Feeds `bytes` to a fresh decoder in pieces of `piece_bytes` and collects
/// every frame, stopping at the first error.
fn decode_in_pieces<T>(bytes: &[u8], piece_bytes: usize) -> Result<Vec<T>, FrameError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut decoder = FrameDecoder::<T>::new(TEST_FRAME_BYTES_MAX);
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    for piece in bytes.chunks(piece_bytes.max(1)) {
        buffer.extend_from_slice(piece);
        while let Some(frame) = decoder.decode(&mut buffer)? {
            frames.push(frame);
        }
    }
    Ok(frames)
}

fn any_text() -> impl Strategy<Value = String> {
    "[a-z0-9 éß😀]{0,24}"
}

fn any_signing_key() -> impl Strategy<Value = SigningKey> {
    (any_text(), any::<[u8; 32]>(), option::of(any::<i64>())).prop_map(
        |(kid, public_key, valid_until_ms)| SigningKey {
            kid,
            public_key,
            valid_until_ms,
        },
    )
}

fn any_settings() -> impl Strategy<Value = RuntimeSettings> {
    let value = prop_oneof![
        any::<i64>().prop_map(SettingValue::Integer),
        (-1e12f64..1e12).prop_map(SettingValue::Float),
        any::<bool>().prop_map(SettingValue::Boolean),
        any_text().prop_map(SettingValue::Text),
    ];
    vec(("[a-z_.]{1,20}", value), 0..8).prop_map(RuntimeSettings::from_pairs)
}

fn any_role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Owner),
        Just(Role::Admin),
        Just(Role::Moderator),
        Just(Role::Member)
    ]
}

fn any_rights() -> impl Strategy<Value = RoomRights> {
    (
        any::<bool>(),
        option::of(any_role()),
        any::<[bool; 5]>(),
        option::of(any::<i64>()),
        any::<i64>(),
    )
        .prop_map(
            |(room_exists, role, flags, muted_until_ms, slow_mode_seconds)| RoomRights {
                room_exists,
                role,
                can_read: flags[0],
                can_post: flags[1],
                can_delete_others: flags[2],
                can_moderate: flags[3],
                muted_until_ms,
                banned: flags[4],
                slow_mode_seconds,
            },
        )
}

fn any_change() -> impl Strategy<Value = MessageChange> {
    let new = (
        any::<[i64; 4]>(),
        any_text(),
        any_text(),
        option::of(any::<i64>()),
        vec(any::<i64>(), 0..4),
    )
        .prop_map(
            |(numbers, client_nonce, body, thread_parent_seq, mentions)| {
                MessageChange::New(NewMessage {
                    room_id: numbers[0],
                    seq: numbers[1],
                    author_id: numbers[2],
                    client_nonce,
                    body,
                    thread_parent_seq,
                    mentions,
                    created_at_ms: numbers[3],
                })
            },
        );
    prop_oneof![
        new,
        (any::<[i64; 4]>(), any_text()).prop_map(|(n, body)| MessageChange::Edit {
            room_id: n[0],
            seq: n[1],
            editor_id: n[2],
            body,
            edited_at_ms: n[3],
        }),
        any::<[i64; 4]>().prop_map(|n| MessageChange::Delete {
            room_id: n[0],
            seq: n[1],
            deleter_id: n[2],
            deleted_at_ms: n[3],
        }),
        (any::<[i64; 3]>(), any_text()).prop_map(|(n, emoji)| MessageChange::ReactionAdd {
            room_id: n[0],
            seq: n[1],
            user_id: n[2],
            emoji,
        }),
        (any::<[i64; 3]>(), any_text()).prop_map(|(n, emoji)| MessageChange::ReactionRemove {
            room_id: n[0],
            seq: n[1],
            user_id: n[2],
            emoji,
        }),
        any::<[i64; 3]>().prop_map(|n| MessageChange::ReadMarker {
            room_id: n[0],
            user_id: n[1],
            seq: n[2],
        }),
    ]
}

fn any_stored_message() -> impl Strategy<Value = StoredMessage> {
    (
        any::<[i64; 4]>(),
        any_text(),
        option::of(any::<i64>()),
        vec(any::<i64>(), 0..3),
        (option::of(any::<i64>()), option::of(any::<i64>())),
        vec((any_text(), any::<i64>()), 0..3),
    )
        .prop_map(
            |(n, body, thread_parent_seq, mentions, (edited, deleted), reactions)| StoredMessage {
                room_id: n[0],
                seq: n[1],
                author_id: n[2],
                body,
                thread_parent_seq,
                mentions,
                created_at_ms: n[3],
                edited_at_ms: edited,
                deleted_at_ms: deleted,
                reactions: reactions
                    .into_iter()
                    .map(|(emoji, count)| ReactionCount { emoji, count })
                    .collect(),
            },
        )
}

fn any_client_frame() -> impl Strategy<Value = ClientFrame> {
    let hello = (any::<u16>(), any_text(), any::<u32>(), any::<u32>()).prop_map(
        |(protocol_version, node_id, shard_idx, shard_count)| {
            ClientFrame::Hello(Hello {
                protocol_version,
                node_id,
                shard_idx,
                shard_count,
            })
        },
    );
    let body = prop_oneof![
        Just(RequestBody::FetchSigningKeys),
        Just(RequestBody::FetchConfig),
        Just(RequestBody::FetchRevocations),
        any::<[i64; 2]>().prop_map(|n| RequestBody::LookupRights {
            room_id: n[0],
            user_id: n[1],
        }),
        vec(any_change(), 0..6).prop_map(|changes| RequestBody::PersistBatch { changes }),
        (
            any::<i64>(),
            option::of(any::<i64>()),
            option::of(any::<i64>()),
            any::<u32>()
        )
            .prop_map(|(room_id, before_seq, after_seq, limit)| {
                RequestBody::FetchHistory {
                    room_id,
                    before_seq,
                    after_seq,
                    limit,
                }
            }),
        (any::<i64>(), any::<u32>())
            .prop_map(|(room_id, count)| RequestBody::ReserveSeqs { room_id, count }),
        any::<[i64; 3]>().prop_map(|n| RequestBody::ReleaseSeqs {
            room_id: n[0],
            reserved: n[1],
            head: n[2],
        }),
    ];
    let request = (any::<u64>(), body)
        .prop_map(|(request_id, body)| ClientFrame::Request(Request { request_id, body }));
    prop_oneof![hello, request]
}

fn any_push() -> impl Strategy<Value = Push> {
    prop_oneof![
        (any::<i64>(), any_settings())
            .prop_map(|(version, settings)| Push::ConfigChanged { version, settings }),
        vec(any_signing_key(), 0..3).prop_map(|keys| Push::SigningKeysChanged { keys }),
        (vec(any_text(), 0..4), any::<[i64; 2]>()).prop_map(|(token_ids, n)| {
            Push::TokensRevoked {
                token_ids,
                user_id: n[0],
                expires_at_ms: n[1],
            }
        }),
        any::<[i64; 2]>().prop_map(|n| Push::MembershipChanged {
            room_id: n[0],
            user_id: n[1],
        }),
        any::<[i64; 2]>().prop_map(|n| Push::ModerationChanged {
            room_id: n[0],
            user_id: n[1],
        }),
        any::<i64>().prop_map(|room_id| Push::RoomChanged { room_id }),
        Just(Push::Resync),
    ]
}

fn any_response_body() -> impl Strategy<Value = ResponseBody> {
    prop_oneof![
        vec(any_signing_key(), 0..3).prop_map(|keys| ResponseBody::SigningKeys { keys }),
        (any::<i64>(), any_settings())
            .prop_map(|(version, settings)| ResponseBody::Config { version, settings }),
        any_rights().prop_map(ResponseBody::Rights),
        any::<u32>()
            .prop_map(|changes_persisted| ResponseBody::BatchPersisted { changes_persisted }),
        vec(any_stored_message(), 0..3).prop_map(|messages| ResponseBody::History { messages }),
        vec((any_text(), any::<i64>()), 0..4).prop_map(|pairs| ResponseBody::Revocations {
            revocations: pairs
                .into_iter()
                .map(|(token_id, expires_at_ms)| Revocation {
                    token_id,
                    expires_at_ms,
                })
                .collect(),
        }),
        any::<[i64; 2]>().prop_map(|n| ResponseBody::SeqsReserved {
            first: n[0],
            last: n[1],
        }),
        Just(ResponseBody::SeqsReleased),
    ]
}

fn any_server_frame() -> impl Strategy<Value = ServerFrame> {
    let request_error_code = prop_oneof![
        Just(RequestErrorCode::BadRequest),
        Just(RequestErrorCode::NotFound),
        Just(RequestErrorCode::Internal),
        Just(RequestErrorCode::Unavailable),
    ];
    let result = prop_oneof![
        any_response_body().prop_map(ResponseResult::Ok),
        (request_error_code, any_text())
            .prop_map(|(code, message)| ResponseResult::Err(RequestError { code, message })),
    ];
    let protocol_error_code = prop_oneof![
        Just(ProtocolErrorCode::VersionMismatch),
        Just(ProtocolErrorCode::MalformedFrame),
        Just(ProtocolErrorCode::FrameTooLarge),
        Just(ProtocolErrorCode::UnexpectedFrame),
        Just(ProtocolErrorCode::HandshakeTimeout),
        Just(ProtocolErrorCode::ShuttingDown),
    ];
    prop_oneof![
        (any::<u16>(), any_text()).prop_map(|(protocol_version, server_version)| {
            ServerFrame::Welcome(Welcome {
                protocol_version,
                server_version,
            })
        }),
        (any::<u64>(), result).prop_map(|(request_id, result)| ServerFrame::Response(Response {
            request_id,
            result
        })),
        any_push().prop_map(ServerFrame::Push),
        (protocol_error_code, any_text())
            .prop_map(|(code, message)| ServerFrame::Error(ErrorFrame { code, message })),
    ]
}

proptest! {
    #[test]
    fn every_client_frame_round_trips_in_any_pieces(
        frames in vec(any_client_frame(), 1..6),
        piece_bytes in 1usize..200,
    ) {
        let bytes = encode_all(&frames);
        prop_assert_eq!(decode_in_pieces::<ClientFrame>(&bytes, piece_bytes).unwrap(), frames);
    }

    #[test]
    fn every_server_frame_round_trips_in_any_pieces(
        frames in vec(any_server_frame(), 1..6),
        piece_bytes in 1usize..200,
    ) {
        let bytes = encode_all(&frames);
        prop_assert_eq!(decode_in_pieces::<ServerFrame>(&bytes, piece_bytes).unwrap(), frames);
    }

    #[test]
    fn garbage_never_panics_either_decoder(garbage in vec(any::<u8>(), 0..512)) {
        let _ = decode_in_pieces::<ClientFrame>(&garbage, 7);
        let _ = decode_in_pieces::<ServerFrame>(&garbage, 64);
    }

    #[test]
    fn garbage_behind_a_plausible_length_is_malformed(garbage in vec(any::<u8>(), 1..512)) {
        let mut bytes = BytesMut::new();
        bytes.put_u32(garbage.len() as u32);
        bytes.extend_from_slice(&garbage);
        // Random bytes may by chance be a valid archive; they must never panic,
        // and a refusal must be the "malformed" error.
        if let Err(error) = decode_in_pieces::<ClientFrame>(&bytes, 3) {
            prop_assert!(matches!(error, FrameError::Malformed { .. }), "{error:?}");
        }
    }

    #[test]
    fn flipped_bytes_in_a_valid_frame_never_panic(
        frame in any_server_frame(),
        flips in vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = encode_all(std::slice::from_ref(&frame)).to_vec();
        for (position, value) in flips {
            let index = LENGTH_PREFIX_BYTES + position % (bytes.len() - LENGTH_PREFIX_BYTES);
            bytes[index] ^= value;
        }
        let _ = decode_in_pieces::<ServerFrame>(&bytes, bytes.len());
    }

    #[test]
    fn truncated_frames_wait_for_more_bytes(frame in any_client_frame(), cut in any::<usize>()) {
        let bytes = encode_all(std::slice::from_ref(&frame));
        let cut = cut % bytes.len();
        let mut decoder = ClientFrameDecoder::new(TEST_FRAME_BYTES_MAX);
        let mut buffer = BytesMut::from(&bytes[..cut]);
        prop_assert_eq!(decoder.decode(&mut buffer).unwrap(), None);
        prop_assert_eq!(buffer.len(), cut, "nothing is consumed from a partial frame");
        buffer.extend_from_slice(&bytes[cut..]);
        prop_assert_eq!(decoder.decode(&mut buffer).unwrap(), Some(frame));
        prop_assert!(buffer.is_empty());
    }
}

#[test]
fn a_length_over_the_bound_is_refused_before_the_frame_arrives() {
    let mut decoder = ClientFrameDecoder::new(1024);
    let mut buffer = BytesMut::new();
    buffer.put_u32(1025);
    let error = decoder.decode(&mut buffer).unwrap_err();
    assert_eq!(
        error,
        FrameError::TooLarge {
            length_bytes: 1025,
            frame_bytes_max: 1024
        }
    );
    assert_eq!(
        error.to_error_frame().code,
        ProtocolErrorCode::FrameTooLarge
    );
    let mut decoder = ClientFrameDecoder::new(FRAME_BYTES_MAX_DEFAULT);
    let mut buffer = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    assert!(matches!(
        decoder.decode(&mut buffer),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn a_length_at_the_bound_is_accepted() {
    let frame = ClientFrame::Hello(hello("node-a", 0, 1));
    let bytes = encode_all(std::slice::from_ref(&frame));
    let exact = bytes.len() - LENGTH_PREFIX_BYTES;
    let mut decoder = ClientFrameDecoder::new(exact);
    let mut buffer = bytes.clone();
    assert_eq!(decoder.decode(&mut buffer).unwrap(), Some(frame));
}

#[test]
fn the_encoder_refuses_a_frame_the_peer_would_refuse() {
    let mut encoder = FrameEncoder::new(128);
    let frame = ServerFrame::Response(Response {
        request_id: 1,
        result: ResponseResult::Ok(ResponseBody::History {
            messages: Vec::new(),
        }),
    });
    let mut out = BytesMut::new();
    encoder.encode(&frame, &mut out).unwrap();
    let large = ServerFrame::Error(ErrorFrame {
        code: ProtocolErrorCode::MalformedFrame,
        message: "x".repeat(200),
    });
    let before = out.len();
    assert!(matches!(
        encoder.encode(&large, &mut out),
        Err(FrameError::TooLarge { .. })
    ));
    assert_eq!(out.len(), before, "nothing is appended on error");
}

#[test]
fn an_empty_frame_is_malformed_and_consumed() {
    let mut decoder = ServerFrameDecoder::new(1024);
    let mut buffer = BytesMut::from(&[0, 0, 0, 0][..]);
    assert!(matches!(
        decoder.decode(&mut buffer),
        Err(FrameError::Malformed { .. })
    ));
    assert!(buffer.is_empty());
}

#[test]
fn a_server_frame_is_not_accepted_as_a_client_frame_of_another_shape() {
    // A Response with a large discriminant-free payload read as a ClientFrame:
    // validation decides, and whatever it decides, it does not panic.
    let frame = ServerFrame::Push(Push::Resync);
    let bytes = encode_all(std::slice::from_ref(&frame));
    let _ = decode_in_pieces::<ClientFrame>(&bytes, bytes.len());
}

#[test]
fn the_handshake_accepts_the_same_version_and_refuses_others() {
    let welcome = accept_hello(&hello("node-a", 1, 4), "0.1.0").unwrap();
    assert_eq!(welcome.protocol_version, PROTOCOL_VERSION);
    assert_eq!(welcome.server_version, "0.1.0");
    check_welcome(&welcome).unwrap();

    let mut old = hello("node-a", 1, 4);
    old.protocol_version = PROTOCOL_VERSION + 1;
    let refused = accept_hello(&old, "0.1.0").unwrap_err();
    assert_eq!(refused.code, ProtocolErrorCode::VersionMismatch);
    assert!(refused.message.contains("version"), "{}", refused.message);

    let refused = check_welcome(&Welcome {
        protocol_version: PROTOCOL_VERSION.wrapping_add(7),
        server_version: "9".into(),
    })
    .unwrap_err();
    assert_eq!(refused.code, ProtocolErrorCode::VersionMismatch);
}

#[test]
fn the_handshake_refuses_impossible_shards_and_node_ids() {
    for bad in [
        hello("node-a", 4, 4),
        hello("node-a", 0, 0),
        hello("", 0, 1),
        hello(&"n".repeat(129), 0, 1),
        hello("node-a", 0, 5000),
    ] {
        let refused = accept_hello(&bad, "0.1.0").unwrap_err();
        assert_eq!(refused.code, ProtocolErrorCode::MalformedFrame, "{bad:?}");
    }
}

#[test]
fn settings_are_looked_up_by_key_and_later_duplicates_win() {
    let settings = RuntimeSettings::from_pairs([
        ("b.limit".to_owned(), SettingValue::Integer(1)),
        ("a.enabled".to_owned(), SettingValue::Boolean(true)),
        ("b.limit".to_owned(), SettingValue::Integer(2)),
    ]);
    assert_eq!(settings.entries.len(), 2);
    assert_eq!(settings.integer("b.limit"), Some(2));
    assert_eq!(settings.boolean("a.enabled"), Some(true));
    assert_eq!(settings.integer("a.enabled"), None);
    assert_eq!(settings.get("missing"), None);
}
