//! Whole request streams through the HTTP/1.1 codec, the way the data plane
//! drives it: parse a head, decode its body, repeat on the same buffer.
//! Every stream is also fed one byte at a time and split at every position;
//! the answer must not depend on how the bytes arrived.

use bytes::BytesMut;
use veza_codec::http1::{
    parse_request_head, BodyChunk, BodyDecoder, RequestError, RequestHead, RequestLimits,
};

const LIMITS: RequestLimits = RequestLimits {
    head_bytes_max: 256,
    header_count_max: 8,
    target_bytes_max: 64,
    body_bytes_max: 64,
};

/// A minimal connection driver over the sans-IO codec, logging one line per
/// request: `METHOD target body="..." keep_alive=..`, then the error that
/// ended the stream, if any.
struct Connection {
    buffer: BytesMut,
    request: Option<(RequestHead, BodyDecoder, Vec<u8>)>,
    log: Vec<String>,
    closed: bool,
}

impl Connection {
    fn new() -> Self {
        Self {
            buffer: BytesMut::new(),
            request: None,
            log: Vec::new(),
            closed: false,
        }
    }

    fn receive(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        self.buffer.extend_from_slice(bytes);
        if let Err(error) = self.process() {
            self.log
                .push(format!("error {} {}", error.status(), error.error_name()));
            self.closed = true;
        }
    }

    fn process(&mut self) -> Result<(), RequestError> {
        loop {
            let Some((head, decoder, body)) = &mut self.request else {
                let Some((head, head_bytes)) = parse_request_head(&self.buffer, &LIMITS)? else {
                    return Ok(());
                };
                let _ = self.buffer.split_to(head_bytes);
                let decoder = BodyDecoder::new(head.body, LIMITS.body_bytes_max);
                self.request = Some((head, decoder, Vec::new()));
                continue;
            };
            match decoder.decode(&mut self.buffer)? {
                BodyChunk::Data(data) => body.extend_from_slice(&data),
                BodyChunk::NeedMore => return Ok(()),
                BodyChunk::End => {
                    self.log.push(format!(
                        "{} {} body={:?} keep_alive={}",
                        head.method,
                        head.target,
                        String::from_utf8_lossy(body),
                        head.keep_alive
                    ));
                    let keep_alive = head.keep_alive;
                    self.request = None;
                    if !keep_alive {
                        self.closed = true;
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn run(reads: &[&[u8]]) -> Vec<String> {
    let mut connection = Connection::new();
    for read in reads {
        connection.receive(read);
    }
    connection.log
}

/// Runs `input` arriving whole, one byte at a time, and in two reads split
/// at every position; all must log `expect`.
fn check(input: &str, expect: &[&str]) {
    let input = input.as_bytes();
    assert_eq!(run(&[input]), expect, "whole input");
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(&bytes), expect, "one byte at a time");
    for split_idx in 0..input.len() {
        let (first, second) = input.split_at(split_idx);
        assert_eq!(run(&[first, second]), expect, "split at {split_idx}");
    }
}

/// Named so that `cargo test -p veza-codec http1` selects these tests.
mod http1 {
    use super::*;

    #[test]
    fn pipelined_requests_are_parsed_one_after_another() {
        check(
            "GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
             POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
             POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n\
             HEAD /d HTTP/1.1\r\n\r\n\
             GET /e HTTP/1.1\r\nConnection: close\r\n\r\n\
             GET /never-read HTTP/1.1\r\n\r\n",
            &[
                r#"GET /a body="" keep_alive=true"#,
                r#"POST /b body="hello" keep_alive=true"#,
                r#"POST /c body="abcde" keep_alive=true"#,
                r#"HEAD /d body="" keep_alive=true"#,
                r#"GET /e body="" keep_alive=false"#,
            ],
        );
    }

    #[test]
    fn an_empty_line_between_pipelined_requests_is_tolerated() {
        check(
            "POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi\r\nGET /b HTTP/1.1\r\n\r\n",
            &[
                r#"POST /a body="hi" keep_alive=true"#,
                r#"GET /b body="" keep_alive=true"#,
            ],
        );
    }

    #[test]
    fn http_1_0_connections_persist_only_when_asked() {
        check(
            "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
             GET /b HTTP/1.0\r\n\r\n\
             GET /c HTTP/1.0\r\n\r\n",
            &[
                r#"GET /a body="" keep_alive=true"#,
                r#"GET /b body="" keep_alive=false"#,
            ],
        );
    }

    #[test]
    fn smuggled_requests_never_reach_the_router() {
        // CL.TE: a proxy using Content-Length forwards "0\r\n\r\nG" as body; we
        // would see "G" start the next request. Refused outright.
        check(
            "POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            &["error 400 bad_request"],
        );
        // TE.CL with an obfuscated coding a lenient proxy reads as chunked.
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST",
            &["error 400 bad_request"],
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n5c\r\nGPOST",
            &["error 501 transfer_encoding_unsupported"],
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            &["error 400 bad_request"],
        );
        check(
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 30\r\n\r\nx",
            &["error 400 bad_request"],
        );
        // A chunked body ends at its last chunk; what follows is a request of
        // its own, parsed (and here refused) as such.
        check(
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
             GET /admin HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            &[
                r#"POST /a body="" keep_alive=true"#,
                "error 400 bad_request",
            ],
        );
    }

    #[test]
    fn every_request_error_comes_from_real_request_bytes() {
        let pad = "p".repeat(300);
        let long_target = "t".repeat(65);
        let headers: String = (0..9).map(|idx| format!("H{idx}: v\r\n")).collect();
        let body = "b".repeat(65);
        let cases = [
            (
                format!("GET / HTTP/1.1\r\nX: {pad}\r\n\r\n"),
                "error 431 head_too_large",
            ),
            (
                format!("GET / HTTP/1.1\r\n{headers}\r\n"),
                "error 431 too_many_headers",
            ),
            (
                format!("GET /{long_target} HTTP/1.1\r\n\r\n"),
                "error 414 target_too_long",
            ),
            (
                format!("POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n{body}"),
                "error 413 body_too_large",
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n".to_owned(),
                "error 413 body_too_large",
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n".to_owned()
                    + &"b".repeat(0x40)
                    + "\r\n1\r\n",
                "error 413 body_too_large",
            ),
            (
                "GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n".to_owned(),
                "error 400 bad_request",
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_owned(),
                "error 400 bad_request",
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_owned(),
                "error 501 transfer_encoding_unsupported",
            ),
            (
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
                "error 505 http_version_unsupported",
            ),
        ];
        for (input, expect) in cases {
            check(&input, &[expect]);
        }
    }

    #[test]
    fn head_requests_are_flagged_and_carry_no_body() {
        let (head, _) = parse_request_head(b"HEAD /x HTTP/1.1\r\n\r\n", &LIMITS)
            .unwrap()
            .unwrap();
        assert!(head.is_head());
        let mut decoder = BodyDecoder::new(head.body, LIMITS.body_bytes_max);
        assert!(decoder.is_done());
        assert_eq!(decoder.decode(&mut BytesMut::new()), Ok(BodyChunk::End));
    }

    #[test]
    fn a_head_at_the_limit_is_accepted_and_one_byte_over_is_refused() {
        let fixed = "GET / HTTP/1.1\r\nX: \r\n\r\n".len();
        let at_limit = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "p".repeat(256 - fixed));
        assert_eq!(at_limit.len(), 256);
        check(&at_limit, &[r#"GET / body="" keep_alive=true"#]);
        let over = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "p".repeat(257 - fixed));
        check(&over, &["error 431 head_too_large"]);
    }
}
