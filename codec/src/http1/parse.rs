//! Request-head parsing: limits, errors, and the body framing decision.
//!
//! httparse tokenises the request line and header fields; this module adds
//! what httparse leaves to its caller: size limits that bound how much a
//! client can make us buffer, and the RFC 9112 §6 rules that decide how the
//! body is framed. Those rules are strict on purpose: request smuggling
//! works by making two HTTP parsers disagree about where a body ends, so any
//! request whose framing a proxy in front of us could read differently is
//! refused rather than guessed at.

use std::mem::MaybeUninit;

use bytes::Bytes;

use super::request::{BodyFraming, RequestHead};

/// Default for [`RequestLimits::head_bytes_max`]: the common 8 KiB that
/// nginx and most load balancers also use.
pub const HEAD_BYTES_MAX_DEFAULT: usize = 8 * 1024;
/// Default for [`RequestLimits::header_count_max`].
pub const HEADER_COUNT_MAX_DEFAULT: usize = 64;
/// Default for [`RequestLimits::target_bytes_max`].
pub const TARGET_BYTES_MAX_DEFAULT: usize = 4 * 1024;
/// Default for [`RequestLimits::body_bytes_max`]: 1 MiB.
pub const BODY_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;

/// How many httparse header slots live on the stack. Limits up to this many
/// headers parse without touching the heap for the slot array; larger
/// limits fall back to a heap array per call.
const HEADER_SLOTS_ON_STACK: usize = 128;

/// Limits on one request. Each bounds how much a client can make a
/// connection buffer or process before it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest request head in bytes: leading empty lines, request line,
    /// header fields and the blank line that ends the head.
    pub head_bytes_max: usize,
    /// Largest number of header fields.
    pub header_count_max: usize,
    /// Largest request target (path and query) in bytes.
    pub target_bytes_max: usize,
    /// Largest request body in bytes, declared or (for chunked) received.
    pub body_bytes_max: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            head_bytes_max: HEAD_BYTES_MAX_DEFAULT,
            header_count_max: HEADER_COUNT_MAX_DEFAULT,
            target_bytes_max: TARGET_BYTES_MAX_DEFAULT,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
        }
    }
}

/// Why a request was refused. Every variant maps to one HTTP status
/// ([`RequestError::status`]); the connection should be closed after the
/// error response, because the rest of the byte stream can no longer be
/// trusted to start at a request boundary.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The head did not end within `max` bytes (431).
    #[error("request head exceeds {max} bytes")]
    HeadTooLarge {
        /// The limit that was exceeded, in bytes.
        max: usize,
    },
    /// The head has more than `max` header fields (431).
    #[error("request has more than {max} header fields")]
    TooManyHeaders {
        /// The limit that was exceeded, in header fields.
        max: usize,
    },
    /// The request target is longer than `max` bytes (414).
    #[error("request target exceeds {max} bytes")]
    TargetTooLong {
        /// The limit that was exceeded, in bytes.
        max: usize,
    },
    /// The body is, or is declared to be, longer than `max` bytes (413).
    #[error("request body exceeds {max} bytes")]
    BodyTooLarge {
        /// The limit that was exceeded, in bytes.
        max: u64,
    },
    /// The request does not follow HTTP/1.1 syntax or framing rules (400).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// A transfer coding other than a lone, final `chunked` (501).
    #[error("only the chunked transfer coding is supported")]
    UnsupportedTransferEncoding,
    /// A protocol version other than HTTP/1.0 or HTTP/1.1 (505).
    #[error("only HTTP/1.0 and HTTP/1.1 are supported")]
    UnsupportedVersion,
}

impl RequestError {
    /// The HTTP status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::HeadTooLarge { .. } | RequestError::TooManyHeaders { .. } => 431,
            RequestError::TargetTooLong { .. } => 414,
            RequestError::BodyTooLarge { .. } => 413,
            RequestError::Malformed(_) => 400,
            RequestError::UnsupportedTransferEncoding => 501,
            RequestError::UnsupportedVersion => 505,
        }
    }

    /// A stable snake_case name for the `error` field of the JSON body.
    pub fn error_name(&self) -> &'static str {
        match self {
            RequestError::HeadTooLarge { .. } => "head_too_large",
            RequestError::TooManyHeaders { .. } => "too_many_headers",
            RequestError::TargetTooLong { .. } => "target_too_long",
            RequestError::BodyTooLarge { .. } => "body_too_large",
            RequestError::Malformed(_) => "bad_request",
            RequestError::UnsupportedTransferEncoding => "transfer_encoding_unsupported",
            RequestError::UnsupportedVersion => "http_version_unsupported",
        }
    }

    /// A human sentence for the `detail` field of the JSON body, naming the
    /// limit that was exceeded where there is one.
    pub fn detail(&self) -> String {
        self.to_string()
    }
}

/// Parses one request head from the front of `buffer` without consuming it.
///
/// Returns `Ok(Some((head, head_bytes)))` when the head is complete (the
/// caller then advances the buffer by `head_bytes`), `Ok(None)` when more
/// bytes are needed, and an error as soon as the bytes at hand prove the
/// request must be refused. It never returns `Ok(None)` while `buffer`
/// holds more than [`RequestLimits::head_bytes_max`] bytes, so a slow or
/// hostile client cannot make the caller's buffer grow past that limit.
pub fn parse_request_head(
    buffer: &[u8],
    limits: &RequestLimits,
) -> Result<Option<(RequestHead, usize)>, RequestError> {
    // Only the first head_bytes_max bytes are ever looked at: a head that
    // has not ended by then is refused whatever follows.
    let window = &buffer[..buffer.len().min(limits.head_bytes_max)];
    let outcome = if limits.header_count_max <= HEADER_SLOTS_ON_STACK {
        let mut slots = [const { MaybeUninit::uninit() }; HEADER_SLOTS_ON_STACK];
        parse_window(window, limits, &mut slots[..limits.header_count_max])?
    } else {
        // A limit above the stack array is a deliberate configuration for
        // unusual clients; paying one allocation per head is the price of it.
        let mut slots = Vec::with_capacity(limits.header_count_max);
        slots.resize_with(limits.header_count_max, MaybeUninit::uninit);
        parse_window(window, limits, &mut slots)?
    };
    match outcome {
        Some(complete) => Ok(Some(complete)),
        None if buffer.len() > limits.head_bytes_max => Err(RequestError::HeadTooLarge {
            max: limits.head_bytes_max,
        }),
        None => Ok(None),
    }
}

/// Runs httparse over `window` and turns its answer into ours. `Ok(None)`
/// means the window holds no complete head (and no error yet).
fn parse_window<'buffer>(
    window: &'buffer [u8],
    limits: &RequestLimits,
    slots: &mut [MaybeUninit<httparse::Header<'buffer>>],
) -> Result<Option<(RequestHead, usize)>, RequestError> {
    let mut request = httparse::Request::new(&mut []);
    let status = request.parse_with_uninit_headers(window, slots);
    if let Ok(httparse::Status::Complete(head_bytes)) = status {
        let head = build_head(&request, &window[..head_bytes], limits)?;
        return Ok(Some((head, head_bytes)));
    }
    // Refuse an over-long target while it is still arriving rather than
    // waiting for the whole head. Checking it before httparse's own errors
    // (as build_head does for a complete head) gives the same answer
    // however the bytes are split into reads. Until httparse has accepted a
    // method, the bytes after the first space are not a target.
    if request.method.is_some() && partial_target_bytes(window) > limits.target_bytes_max {
        return Err(RequestError::TargetTooLong {
            max: limits.target_bytes_max,
        });
    }
    match status {
        Err(error) => Err(map_httparse_error(error, window, limits)),
        Ok(_) => Ok(None),
    }
}

fn map_httparse_error(
    error: httparse::Error,
    window: &[u8],
    limits: &RequestLimits,
) -> RequestError {
    match error {
        httparse::Error::TooManyHeaders => RequestError::TooManyHeaders {
            max: limits.header_count_max,
        },
        httparse::Error::Version => classify_version(window),
        // An obs-fold continuation line starts with whitespace where a
        // header name should be, so httparse reports it as a bad name.
        httparse::Error::HeaderName => RequestError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => RequestError::Malformed("invalid header value"),
        httparse::Error::NewLine => RequestError::Malformed("invalid line ending"),
        httparse::Error::Token => RequestError::Malformed("invalid method or target"),
        httparse::Error::Status => RequestError::Malformed("invalid status"),
    }
}

/// httparse reports every version other than `HTTP/1.0` and `HTTP/1.1` as
/// one error. A well-formed `HTTP/<digit>...` (the HTTP/2 preface
/// `PRI * HTTP/2.0`, or `HTTP/1.2`) is a version we do not speak (505);
/// anything else is not a version at all (400). Only the first six bytes of
/// the version decide, so a byte-at-a-time feed classifies the same way.
fn classify_version(window: &[u8]) -> RequestError {
    let version = request_line_field(window, 2);
    match version {
        [b'H', b'T', b'T', b'P', b'/', digit, ..] if digit.is_ascii_digit() => {
            RequestError::UnsupportedVersion
        }
        _ => RequestError::Malformed("invalid HTTP version"),
    }
}

/// How many bytes of the request target have arrived in a head that is not
/// complete yet, up to the first byte httparse would refuse in a target, so
/// that a target refused as malformed is not later called too long.
fn partial_target_bytes(window: &[u8]) -> usize {
    request_line_field(window, 1)
        .iter()
        .take_while(|&&byte| (b'!'..=b'~').contains(&byte) || byte >= 0x80)
        .count()
}

/// Field `field_idx` (0 method, 1 target, 2 version) of the request line in
/// `window`, after any leading empty lines, possibly cut short by the end of
/// the window. Empty when the field has not started.
fn request_line_field(window: &[u8], field_idx: usize) -> &[u8] {
    let start_idx = window
        .iter()
        .position(|&byte| byte != b'\r' && byte != b'\n')
        .unwrap_or(window.len());
    let line = &window[start_idx..];
    let line_end_idx = line
        .iter()
        .position(|&byte| byte == b'\r' || byte == b'\n')
        .unwrap_or(line.len());
    line[..line_end_idx]
        .splitn(3, |&byte| byte == b' ')
        .nth(field_idx)
        .unwrap_or(&[])
}

/// Builds the owned head from httparse's borrowed one, checking the limits
/// and framing rules httparse does not know about.
fn build_head(
    request: &httparse::Request<'_, '_>,
    head_bytes: &[u8],
    limits: &RequestLimits,
) -> Result<RequestHead, RequestError> {
    // httparse only reports Complete after method, path and version parsed.
    let (Some(method), Some(target), Some(version_minor)) =
        (request.method, request.path, request.version)
    else {
        return Err(RequestError::Malformed("incomplete request line"));
    };
    if target.len() > limits.target_bytes_max {
        return Err(RequestError::TargetTooLong {
            max: limits.target_bytes_max,
        });
    }
    let body = body_framing(request.headers, version_minor, limits.body_bytes_max)?;
    if count_headers(request.headers, "host") > 1 {
        // RFC 9112 §3.2: two Host fields let a proxy and us route the same
        // request differently.
        return Err(RequestError::Malformed("more than one Host header"));
    }

    // One copy of the head backs every header value, instead of one
    // allocation per value.
    let head_copy = Bytes::copy_from_slice(head_bytes);
    let head_start_address = head_bytes.as_ptr() as usize;
    let headers = request
        .headers
        .iter()
        .map(|header| {
            let value_start_idx = header.value.as_ptr() as usize - head_start_address;
            let value = head_copy.slice(value_start_idx..value_start_idx + header.value.len());
            (header.name.to_ascii_lowercase(), value)
        })
        .collect();
    let mut head = RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        version_minor,
        headers,
        body,
        keep_alive: false,
    };
    head.keep_alive = keep_alive(&head);
    Ok(head)
}

fn count_headers(headers: &[httparse::Header<'_>], name: &str) -> usize {
    headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case(name))
        .count()
}

/// HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes it
/// unless told to keep it (RFC 9112 §9.3).
fn keep_alive(head: &RequestHead) -> bool {
    if head.header_has_token("connection", "close") {
        return false;
    }
    head.version_minor >= 1 || head.header_has_token("connection", "keep-alive")
}

/// Decides how the body is framed (RFC 9112 §6.3).
fn body_framing(
    headers: &[httparse::Header<'_>],
    version_minor: u8,
    body_bytes_max: u64,
) -> Result<BodyFraming, RequestError> {
    let mut content_length: Option<u64> = None;
    let mut transfer_codings: Option<TransferCodings> = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            content_length = Some(merge_content_length(content_length, header.value)?);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let codings = transfer_codings.get_or_insert_with(TransferCodings::default);
            codings.add_field(header.value)?;
        }
    }
    if let Some(codings) = transfer_codings {
        if content_length.is_some() {
            // RFC 9112 §6.3 lets a server drop Content-Length here, but a
            // proxy that honoured it instead would see a different request
            // boundary: the classic CL.TE smuggling. Refuse.
            return Err(RequestError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if version_minor == 0 {
            // RFC 9112 §6.1: an HTTP/1.0 sender cannot have meant chunked
            // framing, so the framing is faulty.
            return Err(RequestError::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        return codings.framing();
    }
    match content_length {
        None => Ok(BodyFraming::None),
        Some(length) if length > body_bytes_max => Err(RequestError::BodyTooLarge {
            max: body_bytes_max,
        }),
        Some(length) => Ok(BodyFraming::ContentLength(length)),
    }
}

/// Folds one Content-Length field into what earlier fields said. A field
/// may hold a list (`5, 5`); all values must be the same decimal number.
fn merge_content_length(previous: Option<u64>, value: &[u8]) -> Result<u64, RequestError> {
    let mut merged = previous;
    for element in value.split(|&byte| byte == b',') {
        let length = parse_decimal(element.trim_ascii())?;
        if merged.is_some_and(|earlier| earlier != length) {
            return Err(RequestError::Malformed("conflicting Content-Length values"));
        }
        merged = Some(length);
    }
    merged.ok_or(RequestError::Malformed("empty Content-Length"))
}

/// Parses `1*DIGIT`. A number too large for u64 saturates: it is certainly
/// over any body limit, and the caller reports it as such.
fn parse_decimal(digits: &[u8]) -> Result<u64, RequestError> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RequestError::Malformed(
            "Content-Length is not a decimal number",
        ));
    }
    Ok(digits.iter().fold(0u64, |total, &digit| {
        total
            .checked_mul(10)
            .and_then(|total| total.checked_add(u64::from(digit - b'0')))
            .unwrap_or(u64::MAX)
    }))
}

/// The transfer codings named by every Transfer-Encoding field, in order.
#[derive(Debug, Default)]
struct TransferCodings {
    n_codings: usize,
    chunked_seen: bool,
    other_seen: bool,
}

impl TransferCodings {
    fn add_field(&mut self, value: &[u8]) -> Result<(), RequestError> {
        // Empty list elements are allowed and ignored (RFC 9110 §5.6.1).
        let codings = value
            .split(|&byte| byte == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|coding| !coding.is_empty());
        for coding in codings {
            if self.chunked_seen {
                // Something follows chunked (another coding or chunked
                // again): the body length cannot be determined (§6.3).
                return Err(RequestError::Malformed(
                    "chunked is not the final transfer coding",
                ));
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked_seen = true;
            } else {
                self.other_seen = true;
            }
            self.n_codings += 1;
        }
        Ok(())
    }

    fn framing(&self) -> Result<BodyFraming, RequestError> {
        if self.n_codings == 0 {
            return Err(RequestError::Malformed("empty Transfer-Encoding"));
        }
        // Any coding besides chunked (gzip, identity, "xchunked") is one we
        // do not decode, and without a final chunked the body has no length.
        if self.other_seen || !self.chunked_seen {
            return Err(RequestError::UnsupportedTransferEncoding);
        }
        Ok(BodyFraming::Chunked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small limits so the limit cases stay readable.
    const LIMITS: RequestLimits = RequestLimits {
        head_bytes_max: 200,
        header_count_max: 4,
        target_bytes_max: 32,
        body_bytes_max: 1000,
    };

    /// One line describing a parse result, for table-driven expectations.
    fn describe(result: &Result<Option<(RequestHead, usize)>, RequestError>) -> String {
        match result {
            Ok(None) => "incomplete".to_owned(),
            Ok(Some((head, head_bytes))) => format!(
                "{} {} HTTP/1.{} {:?} keep_alive={} head_bytes={}",
                head.method,
                head.target,
                head.version_minor,
                head.body,
                head.keep_alive,
                head_bytes
            ),
            Err(error) => format!(
                "{} {}: {}",
                error.status(),
                error.error_name(),
                error.detail()
            ),
        }
    }

    /// Parses `input` whole and fed one byte at a time: every prefix must
    /// say "incomplete" until the first answer, and every longer prefix must
    /// give that same answer, which must be `expect`.
    fn check_with(limits: &RequestLimits, input: &[u8], expect: &str) {
        let mut first_answer: Option<String> = None;
        for prefix_bytes in 0..=input.len() {
            let answer = describe(&parse_request_head(&input[..prefix_bytes], limits));
            match &first_answer {
                None if answer == "incomplete" => {}
                None => first_answer = Some(answer),
                Some(first) => assert_eq!(
                    &answer,
                    first,
                    "prefix of {prefix_bytes} bytes of {:?}",
                    String::from_utf8_lossy(input)
                ),
            }
        }
        let whole = describe(&parse_request_head(input, limits));
        assert_eq!(whole, expect, "input {:?}", String::from_utf8_lossy(input));
    }

    fn check(input: &str, expect: &str) {
        check_with(&LIMITS, input.as_bytes(), expect);
    }

    #[test]
    fn well_formed_heads_parse_with_their_framing_and_persistence() {
        check(
            "GET /v1/echo?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /v1/echo?x=1 HTTP/1.1 None keep_alive=true head_bytes=38",
        );
        check(
            "POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "POST /p HTTP/1.1 ContentLength(5) keep_alive=true head_bytes=39",
        );
        check(
            "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /p HTTP/1.1 Chunked keep_alive=true head_bytes=48",
        );
        check(
            "POST /p HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n",
            "POST /p HTTP/1.1 Chunked keep_alive=true head_bytes=48",
        );
        check(
            "HEAD / HTTP/1.1\r\n\r\n",
            "HEAD / HTTP/1.1 None keep_alive=true head_bytes=19",
        );
        check(
            "GET / HTTP/1.1\nHost: a\n\n",
            "GET / HTTP/1.1 None keep_alive=true head_bytes=24",
        );
        check("GET / HTTP/1.1\r\nHost: a\r\n", "incomplete");
        check("", "incomplete");
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted_in_head_bytes() {
        check(
            "\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1 None keep_alive=true head_bytes=22",
        );
        check("\r\n\r\n\r\n", "incomplete");
    }

    #[test]
    fn connection_header_decides_persistence_per_version() {
        check(
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET / HTTP/1.1 None keep_alive=false head_bytes=37",
        );
        check(
            "GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n",
            "GET / HTTP/1.1 None keep_alive=false head_bytes=46",
        );
        check(
            "GET / HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.0 None keep_alive=false head_bytes=18",
        );
        check(
            "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            "GET / HTTP/1.0 None keep_alive=true head_bytes=42",
        );
        check(
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            "GET / HTTP/1.0 None keep_alive=false head_bytes=61",
        );
    }

    #[test]
    fn content_length_must_be_one_decimal_number() {
        check(
            "POST / HTTP/1.1\r\nContent-Length: 007\r\n\r\n",
            "POST / HTTP/1.1 ContentLength(7) keep_alive=true head_bytes=40",
        );
        check(
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1 ContentLength(5) keep_alive=true head_bytes=57",
        );
        check(
            "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1 ContentLength(5) keep_alive=true head_bytes=41",
        );
        let conflicting = "400 bad_request: malformed request: conflicting Content-Length values";
        check(
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            conflicting,
        );
        check(
            "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            conflicting,
        );
        let not_decimal =
            "400 bad_request: malformed request: Content-Length is not a decimal number";
        check("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", not_decimal);
        check("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", not_decimal);
        check(
            "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            not_decimal,
        );
        check(
            "POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n",
            not_decimal,
        );
        check("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", not_decimal);
        check("POST / HTTP/1.1\r\nContent-Length: 5,\r\n\r\n", not_decimal);
    }

    #[test]
    fn content_length_over_the_body_limit_is_refused_before_the_body() {
        check(
            "POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n",
            "POST / HTTP/1.1 ContentLength(1000) keep_alive=true head_bytes=41",
        );
        let too_large = "413 body_too_large: request body exceeds 1000 bytes";
        check("POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", too_large);
        check(
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            too_large,
        );
    }

    #[test]
    fn ambiguous_framing_is_refused_to_prevent_request_smuggling() {
        let both = "400 bad_request: malformed request: both Content-Length and Transfer-Encoding";
        check(
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            both,
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            both,
        );
        let not_final =
            "400 bad_request: malformed request: chunked is not the final transfer coding";
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            not_final,
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            not_final,
        );
        let unsupported =
            "501 transfer_encoding_unsupported: only the chunked transfer coding is supported";
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            unsupported,
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
            unsupported,
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            unsupported,
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            unsupported,
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n",
            "400 bad_request: malformed request: empty Transfer-Encoding",
        );
        check(
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "400 bad_request: malformed request: Transfer-Encoding in HTTP/1.0",
        );
        check(
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "400 bad_request: malformed request: more than one Host header",
        );
        // A space before the colon hides the field from lenient parsers.
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            "400 bad_request: malformed request: invalid header name",
        );
    }

    #[test]
    fn obsolete_line_folding_is_refused() {
        check(
            "GET / HTTP/1.1\r\nX-A: 1\r\n  continued\r\n\r\n",
            "400 bad_request: malformed request: invalid header name",
        );
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        check(
            "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
            "400 bad_request: malformed request: invalid header value",
        );
        check(
            "GET / HTTP/1.1\rX",
            "400 bad_request: malformed request: invalid line ending",
        );
        check(
            "G(T / HTTP/1.1\r\n\r\n",
            "400 bad_request: malformed request: invalid method or target",
        );
        check(
            "GET /a\x01b HTTP/1.1\r\n\r\n",
            "400 bad_request: malformed request: invalid method or target",
        );
        check(
            "GET / http/1.1\r\n\r\n",
            "400 bad_request: malformed request: invalid HTTP version",
        );
    }

    #[test]
    fn versions_other_than_1_0_and_1_1_are_unsupported() {
        let unsupported = "505 http_version_unsupported: only HTTP/1.0 and HTTP/1.1 are supported";
        check("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", unsupported);
        check("GET / HTTP/1.2\r\n\r\n", unsupported);
        check("GET / HTTP/3\r\n\r\n", unsupported);
    }

    #[test]
    fn header_count_is_limited() {
        check(
            "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
            "GET / HTTP/1.1 None keep_alive=true head_bytes=42",
        );
        check(
            "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
            "431 too_many_headers: request has more than 4 header fields",
        );
        let no_headers = RequestLimits {
            header_count_max: 0,
            ..LIMITS
        };
        check_with(
            &no_headers,
            b"GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1 None keep_alive=true head_bytes=18",
        );
        check_with(
            &no_headers,
            b"GET / HTTP/1.1\r\nA: 1\r\n\r\n",
            "431 too_many_headers: request has more than 0 header fields",
        );
    }

    #[test]
    fn header_limits_above_the_stack_slots_still_work() {
        let many = RequestLimits {
            head_bytes_max: 64 * 1024,
            header_count_max: HEADER_SLOTS_ON_STACK + 10,
            ..LIMITS
        };
        let fields: String = (0..HEADER_SLOTS_ON_STACK + 10)
            .map(|field_idx| format!("X-{field_idx}: v\r\n"))
            .collect();
        let input = format!("GET / HTTP/1.1\r\n{fields}\r\n");
        let (head, _) = parse_request_head(input.as_bytes(), &many)
            .unwrap()
            .unwrap();
        assert_eq!(head.headers.len(), HEADER_SLOTS_ON_STACK + 10);
        let over = format!("GET / HTTP/1.1\r\n{fields}Y: 1\r\n\r\n");
        assert_eq!(
            parse_request_head(over.as_bytes(), &many),
            Err(RequestError::TooManyHeaders {
                max: HEADER_SLOTS_ON_STACK + 10
            })
        );
    }

    #[test]
    fn target_length_is_limited_even_before_the_head_ends() {
        let target_at_limit = format!("/{}", "a".repeat(31));
        check(
            &format!("GET {target_at_limit} HTTP/1.1\r\n\r\n"),
            &format!("GET {target_at_limit} HTTP/1.1 None keep_alive=true head_bytes=49"),
        );
        let too_long = "414 target_too_long: request target exceeds 32 bytes";
        check(
            &format!("GET {target_at_limit}b HTTP/1.1\r\n\r\n"),
            too_long,
        );
        // Never terminated: refused once the 33rd target byte arrives.
        check(&format!("GET {target_at_limit}b"), too_long);
    }

    /// A head of exactly `head_bytes` bytes, padded in one header value.
    fn head_of_length(head_bytes: usize) -> String {
        let bare = "GET / HTTP/1.1\r\nX-Pad: \r\n\r\n";
        format!(
            "GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(head_bytes - bare.len())
        )
    }

    #[test]
    fn head_exactly_at_the_limit_parses_and_one_byte_over_is_refused() {
        let at_limit = head_of_length(200);
        assert_eq!(at_limit.len(), 200);
        check(
            &at_limit,
            "GET / HTTP/1.1 None keep_alive=true head_bytes=200",
        );
        // Pipelined bytes after a head at the limit do not count against it.
        check(
            &format!("{at_limit}GET / HTTP/1.1\r\n"),
            "GET / HTTP/1.1 None keep_alive=true head_bytes=200",
        );
        let too_large = "431 head_too_large: request head exceeds 200 bytes";
        check(&head_of_length(201), too_large);
        // Leading empty lines count: they are bytes the client made us hold.
        check(&format!("\r\n{}", head_of_length(199)), too_large);
    }

    #[test]
    fn a_head_that_never_ends_is_refused_one_byte_past_the_limit() {
        let endless = format!("GET / HTTP/1.1\r\nX-Pad: {}", "p".repeat(300));
        for prefix_bytes in 0..=endless.len() {
            let result = parse_request_head(&endless.as_bytes()[..prefix_bytes], &LIMITS);
            if prefix_bytes <= 200 {
                assert_eq!(result, Ok(None), "prefix of {prefix_bytes} bytes");
            } else {
                assert_eq!(result, Err(RequestError::HeadTooLarge { max: 200 }));
            }
        }
    }

    #[test]
    fn header_names_are_lower_cased_and_values_kept_raw() {
        let input = b"GET / HTTP/1.1\r\nX-Name: Caf\xc3\xa9 \t\r\nx-name: second\r\n\r\n";
        let (head, _) = parse_request_head(input, &LIMITS).unwrap().unwrap();
        assert_eq!(head.header("x-name"), Some(&b"Caf\xc3\xa9"[..]));
        assert_eq!(
            head.header_values("x-name").collect::<Vec<_>>(),
            vec![&b"Caf\xc3\xa9"[..], &b"second"[..]]
        );
    }

    #[test]
    fn every_error_maps_to_its_status_and_stable_name() {
        let table: [(RequestError, u16, &str); 7] = [
            (RequestError::HeadTooLarge { max: 1 }, 431, "head_too_large"),
            (
                RequestError::TooManyHeaders { max: 1 },
                431,
                "too_many_headers",
            ),
            (
                RequestError::TargetTooLong { max: 1 },
                414,
                "target_too_long",
            ),
            (RequestError::BodyTooLarge { max: 1 }, 413, "body_too_large"),
            (RequestError::Malformed("x"), 400, "bad_request"),
            (
                RequestError::UnsupportedTransferEncoding,
                501,
                "transfer_encoding_unsupported",
            ),
            (
                RequestError::UnsupportedVersion,
                505,
                "http_version_unsupported",
            ),
        ];
        for (error, status, name) in table {
            assert_eq!(error.status(), status, "{error:?}");
            assert_eq!(error.error_name(), name, "{error:?}");
            assert!(!error.detail().is_empty());
        }
    }
}
