//! Response heads and JSON error responses, appended to an output buffer.

use bytes::{BufMut, BytesMut};
use veza_proto::error_body::ErrorBody;

/// The reason phrase for `status` (RFC 9110 §15 and the IANA registry), or
/// an empty string for a code without one (the status line stays valid:
/// the reason phrase may be empty).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}

/// What goes into a response head besides the fixed `Server` header.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    /// The status code, 100–999.
    pub status: u16,
    /// The `Content-Type` value, if the response has one.
    pub content_type: Option<&'a str>,
    /// The `Content-Length` value. `None` writes no Content-Length: for
    /// 101, 204 and 304, or a body that runs until the connection closes.
    pub content_length: Option<u64>,
    /// `false` writes `Connection: close`. HTTP/1.1 persistence needs no
    /// header; an HTTP/1.0 client that asked for keep-alive expects
    /// `("Connection", "keep-alive")` in `extra_headers`.
    pub keep_alive: bool,
    /// Further header fields, written in order. Names and values must not
    /// contain CR or LF (the caller builds them; they are not checked in
    /// release builds).
    pub extra_headers: &'a [(&'a str, &'a str)],
    /// The `Date` value, usually [`HttpDate::as_str`](super::HttpDate::as_str).
    pub date: &'a str,
}

/// Appends the status line, `Server: veza`, `Date`, then `Content-Type`,
/// `Content-Length` and `Connection` where they apply, the extra headers and
/// the blank line that ends the head.
pub fn write_response_head(head: &ResponseHead<'_>, out: &mut BytesMut) {
    write_response_head_with_fields(head, b"", out);
}

/// [`write_response_head`] with `fields` (complete `Name: value\r\n`
/// lines, prepared once by the caller) after the extra headers.
pub fn write_response_head_with_fields(head: &ResponseHead<'_>, fields: &[u8], out: &mut BytesMut) {
    debug_assert!((100..=999).contains(&head.status), "status {}", head.status);
    debug_assert!(fields.is_empty() || fields.ends_with(b"\r\n"));
    out.reserve(response_head_bytes_estimate(head) + fields.len());
    out.put_slice(b"HTTP/1.1 ");
    put_decimal(out, u64::from(head.status));
    out.put_u8(b' ');
    out.put_slice(reason_phrase(head.status).as_bytes());
    out.put_slice(b"\r\nServer: veza\r\n");
    put_header(out, "Date", head.date);
    if let Some(content_type) = head.content_type {
        put_header(out, "Content-Type", content_type);
    }
    if let Some(content_length) = head.content_length {
        out.put_slice(b"Content-Length: ");
        put_decimal(out, content_length);
        out.put_slice(b"\r\n");
    }
    if !head.keep_alive {
        out.put_slice(b"Connection: close\r\n");
    }
    for (name, value) in head.extra_headers {
        put_header(out, name, value);
    }
    out.put_slice(fields);
    out.put_slice(b"\r\n");
}

/// An upper bound on the bytes [`write_response_head`] appends, so it
/// reserves once.
fn response_head_bytes_estimate(head: &ResponseHead<'_>) -> usize {
    // Status line, Server, Date, Content-Length, Connection and their
    // punctuation fit in this; the variable parts are added.
    const FIXED_BYTES: usize = 160;
    let extra_bytes: usize = head
        .extra_headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum();
    FIXED_BYTES
        + reason_phrase(head.status).len()
        + head.date.len()
        + head.content_type.map_or(0, str::len)
        + extra_bytes
}

fn put_header(out: &mut BytesMut, name: &str, value: &str) {
    debug_assert!(
        !name.contains(['\r', '\n', ':']) && !value.contains(['\r', '\n']),
        "header {name:?} would break the head"
    );
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

/// Writes `value` in decimal without going through `fmt`.
fn put_decimal(out: &mut BytesMut, mut value: u64) {
    // u64::MAX has 20 decimal digits.
    let mut digits = [0u8; 20];
    let mut start_idx = digits.len();
    loop {
        start_idx -= 1;
        digits[start_idx] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.put_slice(&digits[start_idx..]);
}

/// Appends a complete JSON error response: `status`, `Content-Type:
/// application/json`, and the body `{"error": error_name, "detail":
/// detail}`. `keep_alive: false` adds `Connection: close`. For a HEAD
/// request pass `include_body: false`: the head is the same, with the
/// Content-Length the body would have had, and the body is left out.
// The parameter list is the data plane's contract; a struct would only
// rename the same eight values at every call site.
#[allow(clippy::too_many_arguments)]
pub fn write_error_response(
    status: u16,
    error_name: &str,
    detail: &str,
    keep_alive: bool,
    include_body: bool,
    extra_headers: &[(&str, &str)],
    date: &str,
    out: &mut BytesMut,
) {
    // Error responses are off the hot path, so building the body through
    // serde (two String copies and a Vec) is worth its correct escaping.
    let body = ErrorBody::new(error_name, detail).to_json();
    let head = ResponseHead {
        status,
        content_type: Some("application/json"),
        content_length: Some(body.len() as u64),
        keep_alive,
        extra_headers,
        date,
    };
    write_response_head(&head, out);
    if include_body {
        out.put_slice(&body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

    fn check(head: ResponseHead<'_>, expect: &str) {
        let mut out = BytesMut::new();
        write_response_head(&head, &mut out);
        assert_eq!(String::from_utf8_lossy(&out), expect);
    }

    fn head(status: u16) -> ResponseHead<'static> {
        ResponseHead {
            status,
            content_type: None,
            content_length: None,
            keep_alive: true,
            extra_headers: &[],
            date: DATE,
        }
    }

    #[test]
    fn response_heads_carry_exactly_the_headers_asked_for() {
        check(
            ResponseHead {
                content_type: Some("text/plain"),
                content_length: Some(5),
                ..head(200)
            },
            "HTTP/1.1 200 OK\r\nServer: veza\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
        );
        check(
            head(204),
            "HTTP/1.1 204 No Content\r\nServer: veza\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
        );
        check(
            ResponseHead {
                extra_headers: &[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                ],
                ..head(101)
            },
            "HTTP/1.1 101 Switching Protocols\r\nServer: veza\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        );
        check(
            ResponseHead {
                content_length: Some(u64::MAX),
                keep_alive: false,
                ..head(200)
            },
            "HTTP/1.1 200 OK\r\nServer: veza\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 18446744073709551615\r\nConnection: close\r\n\r\n",
        );
        check(
            ResponseHead {
                content_length: Some(0),
                ..head(599)
            },
            "HTTP/1.1 599 \r\nServer: veza\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 0\r\n\r\n",
        );
    }

    #[test]
    fn prepared_fields_follow_the_extra_headers() {
        let mut out = BytesMut::new();
        write_response_head_with_fields(
            &ResponseHead {
                content_length: Some(3),
                extra_headers: &[("Content-Range", "bytes 0-2/9")],
                ..head(206)
            },
            b"ETag: \"e\"\r\nAccept-Ranges: bytes\r\n",
            &mut out,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "HTTP/1.1 206 Partial Content\r\nServer: veza\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 3\r\n\
             Content-Range: bytes 0-2/9\r\nETag: \"e\"\r\nAccept-Ranges: bytes\r\n\r\n"
        );
    }

    #[test]
    fn every_status_veza_sends_has_a_reason_phrase() {
        let statuses = [
            101, 200, 204, 206, 304, 400, 401, 403, 404, 405, 408, 409, 413, 414, 416, 426, 429,
            431, 500, 501, 503, 505,
        ];
        for status in statuses {
            assert!(!reason_phrase(status).is_empty(), "status {status}");
        }
        assert_eq!(reason_phrase(413), "Content Too Large");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
    }

    fn check_error(keep_alive: bool, include_body: bool, expect: &str) {
        let mut out = BytesMut::new();
        let detail = "request head exceeds 8192 bytes";
        write_error_response(
            431,
            "head_too_large",
            detail,
            keep_alive,
            include_body,
            &[("Retry-After", "1")],
            DATE,
            &mut out,
        );
        assert_eq!(String::from_utf8_lossy(&out), expect);
    }

    #[test]
    fn error_responses_carry_a_json_body_and_close_unless_kept_alive() {
        let body = r#"{"error":"head_too_large","detail":"request head exceeds 8192 bytes"}"#;
        assert_eq!(body.len(), 69);
        check_error(
            false,
            true,
            &format!(
                "HTTP/1.1 431 Request Header Fields Too Large\r\nServer: veza\r\n\
                 Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: application/json\r\n\
                 Content-Length: 69\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{body}"
            ),
        );
        check_error(
            true,
            true,
            &format!(
                "HTTP/1.1 431 Request Header Fields Too Large\r\nServer: veza\r\n\
                 Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: application/json\r\n\
                 Content-Length: 69\r\nRetry-After: 1\r\n\r\n{body}"
            ),
        );
    }

    #[test]
    fn error_responses_to_head_requests_keep_the_length_and_drop_the_body() {
        check_error(
            false,
            false,
            "HTTP/1.1 431 Request Header Fields Too Large\r\nServer: veza\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: application/json\r\n\
             Content-Length: 69\r\nConnection: close\r\nRetry-After: 1\r\n\r\n",
        );
    }

    #[test]
    fn error_details_are_json_escaped() {
        let mut out = BytesMut::new();
        write_error_response(
            400,
            "bad_request",
            "a \"quoted\"\nline",
            false,
            true,
            &[],
            DATE,
            &mut out,
        );
        assert!(out.ends_with(br#"{"error":"bad_request","detail":"a \"quoted\"\nline"}"#));
    }
}
