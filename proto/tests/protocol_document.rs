//! `PROTOCOL.md` as a specification that cannot drift from the code: every
//! worked example decodes to the value named here and re-encodes to the
//! same bytes; every example named here is in the document and the
//! document has no other; every opcode, error code, close code and limit
//! appears in its tables.

use std::collections::BTreeSet;

use veza_proto::chat::{
    self, ClientFrame, ErrorCode, HistoryMessage, MessageEvent, PresenceStatus, ReactionCount,
    ServerFrame,
};
use veza_proto::close_code;

/// Which side sends an example's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    Client,
    Server,
}

/// One `<!-- example: client|server NAME -->` with the ```hex block after it.
struct DocumentExample {
    direction: Direction,
    name: String,
    bytes: Vec<u8>,
    line_number: usize,
}

/// 2026-01-01T00:00:00Z, the examples' clock.
const NEW_YEAR_2026_MS: i64 = 1_767_225_600_000;

fn client_examples() -> Vec<(&'static str, ClientFrame)> {
    vec![
        (
            "Auth",
            ClientFrame::Auth {
                request_id: 1,
                token: "abc.def.ghi".into(),
            },
        ),
        (
            "Subscribe",
            ClientFrame::Subscribe {
                request_id: 2,
                room_id: 42,
                since_seq: 1040,
            },
        ),
        (
            "Send",
            ClientFrame::Send {
                request_id: 3,
                room_id: 42,
                thread_parent_seq: 0,
                nonce: "n1".into(),
                mentions: vec![7],
                body: "hi @ana".into(),
            },
        ),
        (
            "History",
            ClientFrame::History {
                request_id: 4,
                room_id: 42,
                before_seq: 1042,
                after_seq: -1,
                limit: 1,
            },
        ),
        (
            "SetPresence",
            ClientFrame::SetPresence {
                request_id: 5,
                status: PresenceStatus::DoNotDisturb,
            },
        ),
        (
            "React",
            ClientFrame::React {
                request_id: 6,
                room_id: 42,
                seq: 1041,
                add: true,
                emoji: "👍".into(),
            },
        ),
        (
            "WatchStream",
            ClientFrame::WatchStream {
                request_id: 9,
                stream: "radio".into(),
            },
        ),
        (
            "UnwatchStream",
            ClientFrame::UnwatchStream {
                request_id: 10,
                stream: "radio".into(),
            },
        ),
    ]
}

fn server_examples() -> Vec<(&'static str, ServerFrame)> {
    vec![
        (
            "AuthOk",
            ServerFrame::AuthOk {
                request_id: 1,
                user_id: 12,
                connection_id: 259,
                username: "bob".into(),
                message_bytes_max: 65_536,
            },
        ),
        (
            "Subscribed",
            ServerFrame::Subscribed {
                request_id: 2,
                room_id: 42,
                head_seq: 1041,
                replayed: 1,
            },
        ),
        (
            "Message",
            ServerFrame::Message(MessageEvent {
                room_id: 42,
                seq: 1042,
                author_id: 12,
                thread_parent_seq: 0,
                created_at_ms: NEW_YEAR_2026_MS,
                nonce: "n1".into(),
                mentions: vec![7],
                body: "hi @ana".into(),
            }),
        ),
        (
            "Sent",
            ServerFrame::Sent {
                request_id: 3,
                room_id: 42,
                seq: 1042,
            },
        ),
        (
            "Error",
            ServerFrame::Error {
                request_id: 8,
                code: ErrorCode::RateLimited,
                retry_after_ms: 1500,
                message: "slow down".into(),
            },
        ),
        (
            "HistoryPage",
            ServerFrame::HistoryPage {
                request_id: 4,
                room_id: 42,
                messages: vec![HistoryMessage {
                    seq: 1041,
                    author_id: 7,
                    thread_parent_seq: 0,
                    created_at_ms: NEW_YEAR_2026_MS - 60_000,
                    edited_at_ms: 0,
                    deleted_at_ms: 0,
                    mentions: vec![],
                    body: "hello".into(),
                    reactions: vec![ReactionCount {
                        emoji: "👍".into(),
                        count: 2,
                    }],
                }],
            },
        ),
        (
            "Presence",
            ServerFrame::Presence {
                room_id: 42,
                user_id: 7,
                status: PresenceStatus::Idle,
            },
        ),
        ("Ok", ServerFrame::Ok { request_id: 6 }),
        (
            "NowPlaying",
            ServerFrame::NowPlaying {
                stream: "radio".into(),
                title: "Artist - Song".into(),
                updated_at_ms: NEW_YEAR_2026_MS + 60_000,
            },
        ),
    ]
}

fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("reading {path}: {error}"))
}

/// Space-separated hex, 16 bytes a line, as the document writes it.
fn hex_lines(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse_example_comment(line: &str) -> Option<(Direction, String)> {
    let inner = line
        .trim()
        .strip_prefix("<!-- example:")?
        .strip_suffix("-->")?
        .trim();
    let (direction, name) = inner.split_once(' ')?;
    let direction = match direction {
        "client" => Direction::Client,
        "server" => Direction::Server,
        _ => return None,
    };
    Some((direction, name.trim().to_owned()))
}

fn parse_hex_block<'a>(
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
    line_number: usize,
) -> Vec<u8> {
    let opening = lines.next().map(|(_, line)| line.trim());
    assert_eq!(
        opening,
        Some("```hex"),
        "line {line_number}: an example comment must be followed by a ```hex block"
    );
    let mut bytes = Vec::new();
    for (index, line) in lines.by_ref() {
        if line.trim() == "```" {
            return bytes;
        }
        for token in line.split_whitespace() {
            assert_eq!(
                token.len(),
                2,
                "line {}: `{token}` is not one byte",
                index + 1
            );
            let byte = u8::from_str_radix(token, 16)
                .unwrap_or_else(|_| panic!("line {}: `{token}` is not hex", index + 1));
            bytes.push(byte);
        }
    }
    panic!("line {line_number}: the ```hex block is not closed");
}

fn document_examples(text: &str) -> Vec<DocumentExample> {
    let mut examples = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        if !line.contains("<!-- example:") {
            continue;
        }
        let line_number = index + 1;
        let (direction, name) = parse_example_comment(line).unwrap_or_else(|| {
            panic!("line {line_number}: write `<!-- example: client|server NAME -->`")
        });
        let bytes = parse_hex_block(&mut lines, line_number);
        examples.push(DocumentExample {
            direction,
            name,
            bytes,
            line_number,
        });
    }
    examples
}

/// Checks one document example against the value the code expects.
fn check_example(example: &DocumentExample) {
    let DocumentExample {
        name, line_number, ..
    } = example;
    let (decoded, expected, encoded) = match example.direction {
        Direction::Client => {
            let expected = client_examples()
                .into_iter()
                .find(|(known, _)| known == name)
                .unwrap_or_else(|| {
                    panic!("line {line_number}: no client example `{name}` is known")
                })
                .1;
            let decoded = ClientFrame::decode(&example.bytes).map(|frame| format!("{frame:?}"));
            (decoded, format!("{expected:?}"), expected.to_bytes())
        }
        Direction::Server => {
            let expected = server_examples()
                .into_iter()
                .find(|(known, _)| known == name)
                .unwrap_or_else(|| {
                    panic!("line {line_number}: no server example `{name}` is known")
                })
                .1;
            let decoded = ServerFrame::decode(&example.bytes).map(|frame| format!("{frame:?}"));
            (decoded, format!("{expected:?}"), expected.to_bytes())
        }
    };
    assert_eq!(
        decoded,
        Ok(expected),
        "line {line_number}: example `{name}` decodes to something else; its bytes should be\n{}",
        hex_lines(&encoded)
    );
    assert_eq!(
        example.bytes,
        encoded.to_vec(),
        "line {line_number}: example `{name}` does not re-encode to the same bytes"
    );
}

#[test]
fn every_document_example_decodes_to_its_value_and_re_encodes_to_the_same_bytes() {
    let examples = document_examples(&document());
    assert!(!examples.is_empty(), "PROTOCOL.md has no worked examples");
    for example in &examples {
        check_example(example);
    }
}

#[test]
fn the_document_holds_exactly_the_known_examples_once_each() {
    let mut in_document = Vec::new();
    for example in document_examples(&document()) {
        in_document.push((example.direction, example.name));
    }
    let mut known: Vec<(Direction, String)> = client_examples()
        .into_iter()
        .map(|(name, _)| (Direction::Client, name.to_owned()))
        .chain(
            server_examples()
                .into_iter()
                .map(|(name, _)| (Direction::Server, name.to_owned())),
        )
        .collect();
    let unique: BTreeSet<_> = in_document.iter().cloned().collect();
    assert_eq!(unique.len(), in_document.len(), "an example appears twice");
    for (direction, name) in &known {
        if !unique.contains(&(*direction, name.clone())) {
            let bytes = match direction {
                Direction::Client => client_examples()
                    .into_iter()
                    .find(|(known, _)| known == name)
                    .map(|(_, frame)| frame.to_bytes()),
                Direction::Server => server_examples()
                    .into_iter()
                    .find(|(known, _)| known == name)
                    .map(|(_, frame)| frame.to_bytes()),
            };
            panic!(
                "PROTOCOL.md lacks the {direction:?} example `{name}`; its bytes are\n{}",
                hex_lines(&bytes.unwrap_or_default())
            );
        }
    }
    known.sort();
    in_document.sort();
    assert_eq!(
        in_document, known,
        "the document has examples the test does not know"
    );
}

/// Lines of the document's tables (starting with `|`).
fn table_rows(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|line| line.starts_with('|'))
        .collect()
}

/// The opcodes a decoder knows: a lone known opcode is a truncated frame
/// (malformed); a lone unknown one is an unknown opcode.
fn known_opcodes(decode_code: impl Fn(&[u8]) -> Option<ErrorCode>) -> Vec<u8> {
    (0..=u8::MAX)
        .filter(|opcode| decode_code(&[*opcode]) == Some(ErrorCode::Malformed))
        .collect()
}

#[test]
fn every_opcode_appears_in_a_table_row() {
    let text = document();
    let rows = table_rows(&text);
    let client_opcodes = known_opcodes(|bytes| ClientFrame::decode(bytes).err().map(|e| e.code));
    let server_opcodes = known_opcodes(|bytes| ServerFrame::decode(bytes).err().map(|e| e.code));
    assert_eq!(client_opcodes.len(), 13);
    assert_eq!(server_opcodes.len(), 15);
    for opcode in client_opcodes.into_iter().chain(server_opcodes) {
        let written = format!("`0x{opcode:02X}`");
        assert!(
            rows.iter().any(|row| row.contains(&written)),
            "no table row of PROTOCOL.md names opcode {written}"
        );
    }
}

#[test]
fn every_error_code_appears_with_its_number_and_name() {
    let text = document();
    let rows = table_rows(&text);
    for code in ErrorCode::ALL {
        let number = format!("| {} |", code as u16);
        let name = format!("`{}`", code.name());
        assert!(
            rows.iter()
                .any(|row| row.starts_with(&number) && row.contains(&name)),
            "PROTOCOL.md has no error table row `{number} {name} ...`"
        );
    }
}

#[test]
fn every_close_code_veza_sends_appears_in_a_table_row() {
    let text = document();
    let rows = table_rows(&text);
    for code in [
        close_code::GOING_AWAY,
        close_code::UNSUPPORTED_DATA,
        close_code::POLICY_VIOLATION,
        close_code::MESSAGE_TOO_BIG,
        close_code::AUTH_FAILED,
        close_code::TOKEN_EXPIRED,
        close_code::TOKEN_REVOKED,
        close_code::AUTH_TIMEOUT,
        close_code::CHAT_UNAVAILABLE,
        close_code::SEND_QUEUE_OVERFLOW,
        close_code::PING_TIMEOUT,
    ] {
        let written = format!("| {code} |");
        assert!(
            rows.iter().any(|row| row.starts_with(&written)),
            "PROTOCOL.md has no close code table row for {code}"
        );
    }
}

#[test]
fn the_endpoint_and_every_limit_appear_with_their_values() {
    let text = document();
    assert!(text.contains(&format!("`{}`", chat::CHAT_PATH)));
    assert!(text.contains(&format!("`{}`", chat::SUBPROTOCOL)));
    let rows = table_rows(&text);
    for (name, value) in [
        ("TOKEN_BYTES_MAX", chat::TOKEN_BYTES_MAX),
        ("NONCE_BYTES_MAX", chat::NONCE_BYTES_MAX),
        ("EMOJI_BYTES_MAX", chat::EMOJI_BYTES_MAX),
        ("MENTIONS_MAX", chat::MENTIONS_MAX),
        ("HISTORY_LIMIT_MAX", usize::from(chat::HISTORY_LIMIT_MAX)),
        ("STREAM_NAME_BYTES_MAX", chat::STREAM_NAME_BYTES_MAX),
        ("WATCHED_STREAMS_MAX", chat::WATCHED_STREAMS_MAX),
    ] {
        let (name, value) = (format!("`{name}`"), format!("| {value} |"));
        assert!(
            rows.iter()
                .any(|row| row.contains(&name) && row.contains(&value)),
            "PROTOCOL.md has no limits table row with {name} and {value}"
        );
    }
}
