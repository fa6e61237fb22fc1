//! The NATS client protocol (text, `\r\n`-terminated control lines), sans-IO:
//! bytes from the server go in, [`ServerOp`]s come out; commands are written
//! into a buffer. Only what the benchmark peer uses: `INFO`, `MSG`, `PING`,
//! `PONG`, `+OK`, `-ERR` from the server; `CONNECT`, `SUB`, `PUB`, `PING`,
//! `PONG` from the client (<https://docs.nats.io/reference/reference-protocols/nats-protocol>).
//!
//! Over WebSocket, nats-server sends the same byte stream cut into binary
//! messages at arbitrary points, so the parser keeps what is incomplete
//! until the next bytes arrive.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};

/// The longest control line read (nats-server's `max_control_line`
/// default is 4 KiB; `INFO` lines are a few hundred bytes).
pub const CONTROL_LINE_BYTES_MAX: usize = 64 * 1024;

/// One operation from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO {json}`: the server's description, first on every connection.
    Info(String),
    /// `MSG <subject> <sid> [reply-to] <#bytes>` and its payload.
    Msg {
        /// The subject it was published to.
        subject: String,
        /// The subscription it matched.
        sid: u64,
        /// The payload.
        payload: Bytes,
    },
    /// `PING`: must be answered with `PONG`.
    Ping,
    /// `PONG`: the answer to a `PING` of ours.
    Pong,
    /// `+OK` (verbose mode only).
    Ok,
    /// `-ERR '<message>'`.
    Err(String),
}

/// The server sent something this parser does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A control line longer than [`CONTROL_LINE_BYTES_MAX`].
    #[error("control line over {CONTROL_LINE_BYTES_MAX} bytes")]
    LineTooLong,
    /// A `MSG` payload longer than the parser's bound.
    #[error("payload of {0} bytes over the bound")]
    PayloadTooLarge(usize),
    /// A line that is not one of the operations above, or a malformed one.
    #[error("unexpected control line: {0}")]
    Unexpected(String),
}

/// Turns the server's byte stream into operations.
#[derive(Debug)]
pub struct Parser {
    buffer: BytesMut,
    payload_bytes_max: usize,
}

impl Parser {
    /// A parser accepting `MSG` payloads up to `payload_bytes_max` bytes.
    pub fn new(payload_bytes_max: usize) -> Parser {
        Parser {
            buffer: BytesMut::new(),
            payload_bytes_max,
        }
    }

    /// Appends bytes received from the server.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete operation, `None` until more bytes arrive.
    pub fn next_op(&mut self) -> Result<Option<ServerOp>, ProtocolError> {
        let Some(line_end) = find_crlf(&self.buffer) else {
            if self.buffer.len() > CONTROL_LINE_BYTES_MAX {
                return Err(ProtocolError::LineTooLong);
            }
            return Ok(None);
        };
        if line_end > CONTROL_LINE_BYTES_MAX {
            return Err(ProtocolError::LineTooLong);
        }
        let line = &self.buffer[..line_end];
        if let Some(arguments) = line.strip_prefix(b"MSG ") {
            let header = parse_msg_arguments(arguments)?;
            if header.payload_bytes > self.payload_bytes_max {
                return Err(ProtocolError::PayloadTooLarge(header.payload_bytes));
            }
            let frame_bytes = line_end + 2 + header.payload_bytes + 2;
            if self.buffer.len() < frame_bytes {
                return Ok(None);
            }
            self.buffer.advance(line_end + 2);
            let payload = self.buffer.split_to(header.payload_bytes).freeze();
            if &self.buffer[..2] != b"\r\n" {
                return Err(ProtocolError::Unexpected(
                    "MSG payload not followed by CRLF".into(),
                ));
            }
            self.buffer.advance(2);
            return Ok(Some(ServerOp::Msg {
                subject: header.subject,
                sid: header.sid,
                payload,
            }));
        }
        let op = parse_simple_line(line)?;
        self.buffer.advance(line_end + 2);
        Ok(Some(op))
    }
}

struct MsgHeader {
    subject: String,
    sid: u64,
    payload_bytes: usize,
}

fn parse_msg_arguments(arguments: &[u8]) -> Result<MsgHeader, ProtocolError> {
    let unexpected =
        || ProtocolError::Unexpected(format!("MSG {}", String::from_utf8_lossy(arguments)));
    let text = std::str::from_utf8(arguments).map_err(|_| unexpected())?;
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    // subject sid [reply-to] #bytes
    let (subject, sid, payload_bytes) = match fields.as_slice() {
        [subject, sid, bytes] | [subject, sid, _, bytes] => (*subject, *sid, *bytes),
        _ => return Err(unexpected()),
    };
    Ok(MsgHeader {
        subject: subject.to_string(),
        sid: sid.parse().map_err(|_| unexpected())?,
        payload_bytes: payload_bytes.parse().map_err(|_| unexpected())?,
    })
}

fn parse_simple_line(line: &[u8]) -> Result<ServerOp, ProtocolError> {
    let text = String::from_utf8_lossy(line);
    let op = match text.as_ref() {
        "PING" => ServerOp::Ping,
        "PONG" => ServerOp::Pong,
        "+OK" => ServerOp::Ok,
        _ => {
            if let Some(json) = text.strip_prefix("INFO ") {
                ServerOp::Info(json.trim().to_string())
            } else if let Some(message) = text.strip_prefix("-ERR ") {
                ServerOp::Err(message.trim().trim_matches('\'').to_string())
            } else {
                return Err(ProtocolError::Unexpected(text.into_owned()));
            }
        }
    };
    Ok(op)
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|pair| pair == b"\r\n")
}

/// Appends `CONNECT` with the options every benchmark client uses: no
/// `+OK` per command (`verbose`), no strict checking (`pedantic`), and
/// `echo` off so a publisher never receives its own messages.
pub fn put_connect(out: &mut BytesMut) {
    out.put_slice(
        br#"CONNECT {"verbose":false,"pedantic":false,"echo":false,"protocol":1,"name":"veza-bench","lang":"rust","version":"0.1.0"}"#,
    );
    out.put_slice(b"\r\n");
}

/// Appends `SUB <subject> <sid>`.
pub fn put_sub(out: &mut BytesMut, subject: &str, sid: u64) {
    out.put_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
}

/// Appends `PUB <subject> <#bytes>` and the payload.
pub fn put_pub(out: &mut BytesMut, subject: &str, payload: &[u8]) {
    out.put_slice(b"PUB ");
    out.put_slice(subject.as_bytes());
    out.put_slice(format!(" {}\r\n", payload.len()).as_bytes());
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// Appends `PING`.
pub fn put_ping(out: &mut BytesMut) {
    out.put_slice(b"PING\r\n");
}

/// Appends `PONG`.
pub fn put_pong(out: &mut BytesMut) {
    out.put_slice(b"PONG\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<ServerOp> {
        let mut parser = Parser::new(1024);
        let mut ops = Vec::new();
        for chunk in chunks {
            parser.push(chunk);
            while let Some(op) = parser.next_op().unwrap() {
                ops.push(op);
            }
        }
        ops
    }

    #[test]
    fn operations_cut_at_any_byte_are_reassembled() {
        let stream: &[u8] =
            b"INFO {\"server_id\":\"x\"}\r\nPING\r\nMSG room.1 7 5\r\nhello\r\nMSG room.2 8 reply.9 0\r\n\r\n+OK\r\nPONG\r\n";
        let expected = vec![
            ServerOp::Info("{\"server_id\":\"x\"}".into()),
            ServerOp::Ping,
            ServerOp::Msg {
                subject: "room.1".into(),
                sid: 7,
                payload: Bytes::from_static(b"hello"),
            },
            ServerOp::Msg {
                subject: "room.2".into(),
                sid: 8,
                payload: Bytes::new(),
            },
            ServerOp::Ok,
            ServerOp::Pong,
        ];
        assert_eq!(parse_all(&[stream]), expected);
        for cut in 1..stream.len() {
            let (first, second) = stream.split_at(cut);
            assert_eq!(parse_all(&[first, second]), expected, "cut at {cut}");
        }
    }

    #[test]
    fn a_payload_may_contain_crlf() {
        let ops = parse_all(&[b"MSG a 1 4\r\n\r\n\r\n\r\n"]);
        assert_eq!(
            ops,
            vec![ServerOp::Msg {
                subject: "a".into(),
                sid: 1,
                payload: Bytes::from_static(b"\r\n\r\n"),
            }]
        );
    }

    #[test]
    fn errors_carry_the_server_message() {
        let ops = parse_all(&[b"-ERR 'Authorization Violation'\r\n"]);
        assert_eq!(ops, vec![ServerOp::Err("Authorization Violation".into())]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for input in [
            &b"HELLO\r\n"[..],
            b"MSG a b 3\r\nabc\r\n",
            b"MSG a 1\r\n",
            b"MSG a 1 3\r\nabcXY",
        ] {
            let mut parser = Parser::new(1024);
            parser.push(input);
            assert!(
                parser.next_op().is_err(),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let mut parser = Parser::new(2);
        parser.push(b"MSG a 1 3\r\n");
        assert_eq!(parser.next_op(), Err(ProtocolError::PayloadTooLarge(3)));
        let mut parser = Parser::new(2);
        parser.push(&vec![b'x'; CONTROL_LINE_BYTES_MAX + 1]);
        assert_eq!(parser.next_op(), Err(ProtocolError::LineTooLong));
    }

    #[test]
    fn commands_are_written_as_the_protocol_says() {
        let mut out = BytesMut::new();
        put_sub(&mut out, "room.3", 12);
        put_pub(&mut out, "room.3", b"hi");
        put_ping(&mut out);
        put_pong(&mut out);
        assert_eq!(
            &out[..],
            b"SUB room.3 12\r\nPUB room.3 2\r\nhi\r\nPING\r\nPONG\r\n"
        );
        let mut connect = BytesMut::new();
        put_connect(&mut connect);
        let line = std::str::from_utf8(&connect).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(line.strip_prefix("CONNECT ").unwrap().trim_end()).unwrap();
        assert_eq!(json["verbose"], false);
        assert_eq!(json["pedantic"], false);
        assert_eq!(json["echo"], false);
    }
}
