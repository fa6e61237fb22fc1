//! Request body decoding: a sans-IO state machine over the receive buffer.
//!
//! The decoder takes framing bytes (chunk-size lines, CRLFs, trailers) off
//! the front of the buffer itself and hands body bytes out zero-copy, as
//! `Bytes` split off the buffer. Bytes after the end of the body are never
//! touched: they are the next pipelined request.
//!
//! Chunked framing is written by hand rather than with
//! `httparse::parse_chunk_size` because that function accepts what we must
//! refuse: chunk extensions containing bare CR, and no bound on how long a
//! chunk-size line may grow while we wait for its end.

use bytes::{Buf, Bytes, BytesMut};

use super::parse::RequestError;
use super::request::BodyFraming;

/// Longest chunk-size line, extensions and CRLF included. Extensions carry
/// nothing we use, so this only needs room for what real clients send.
pub const CHUNK_LINE_BYTES_MAX: usize = 4 * 1024;
/// Longest trailer section (the field lines after the last chunk).
pub const TRAILER_BYTES_MAX: usize = 8 * 1024;
/// Most hex digits in a chunk size: 16 digits fill a u64, so a longer size
/// (even one padded with zeros) is refused rather than checked for overflow.
const CHUNK_SIZE_DIGITS_MAX: usize = 16;

/// One step of body decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyChunk {
    /// The next body bytes, split off the front of the buffer.
    Data(Bytes),
    /// The buffer holds nothing more to decode; read more bytes and call
    /// again.
    NeedMore,
    /// The body is over; any bytes left in the buffer belong to the next
    /// request.
    End,
}

/// Where the decoder is in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// `Content-Length` body with `remaining` bytes still to come.
    Length { remaining: u64 },
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside chunk data with `remaining` bytes still to come.
    ChunkData { remaining: u64 },
    /// Expecting the CRLF that ends chunk data.
    ChunkDataEnd,
    /// After the last chunk, reading trailer fields until the blank line;
    /// `trailer_bytes` counts the field lines already consumed.
    Trailers { trailer_bytes: usize },
    /// The whole body has been consumed.
    Done,
    /// The body was refused; the connection cannot be resynchronised.
    Failed(RequestError),
}

/// Decodes one request body from the front of a receive buffer.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    body_bytes_max: u64,
    /// Chunk sizes declared so far, for the body limit.
    body_bytes_declared: u64,
}

impl BodyDecoder {
    /// A decoder for a body with the given framing. `body_bytes_max` bounds
    /// a chunked body as its chunk sizes arrive; a `Content-Length` over it
    /// is refused on the first [`decode`](Self::decode).
    pub fn new(framing: BodyFraming, body_bytes_max: u64) -> Self {
        let state = match framing {
            BodyFraming::None => State::Done,
            BodyFraming::ContentLength(length) if length > body_bytes_max => {
                State::Failed(RequestError::BodyTooLarge {
                    max: body_bytes_max,
                })
            }
            BodyFraming::ContentLength(0) => State::Done,
            BodyFraming::ContentLength(length) => State::Length { remaining: length },
            BodyFraming::Chunked => State::ChunkSize,
        };
        Self {
            state,
            body_bytes_max,
            body_bytes_declared: 0,
        }
    }

    /// Consumes from the front of `buffer`: returns the next body bytes,
    /// `NeedMore` when the buffer holds no further progress, or `End` once
    /// the whole body (for chunked: last chunk, trailers and final CRLF) is
    /// consumed. Bytes after the body stay in `buffer`. After an error every
    /// further call returns the same error.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<BodyChunk, RequestError> {
        let result = self.decode_step(buffer);
        if let Err(error) = &result {
            self.state = State::Failed(error.clone());
        }
        result
    }

    /// Whether the whole body has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn decode_step(&mut self, buffer: &mut BytesMut) -> Result<BodyChunk, RequestError> {
        // Each pass either consumes framing bytes or returns, so the loop
        // runs at most once per buffered byte.
        loop {
            match &mut self.state {
                State::Length { remaining } => {
                    let Some(data) = take_data(buffer, remaining) else {
                        return Ok(BodyChunk::NeedMore);
                    };
                    if *remaining == 0 {
                        self.state = State::Done;
                    }
                    return Ok(BodyChunk::Data(data));
                }
                State::ChunkData { remaining } => {
                    let Some(data) = take_data(buffer, remaining) else {
                        return Ok(BodyChunk::NeedMore);
                    };
                    if *remaining == 0 {
                        self.state = State::ChunkDataEnd;
                    }
                    return Ok(BodyChunk::Data(data));
                }
                State::ChunkSize => {
                    let Some((chunk_bytes, line_bytes)) = parse_chunk_size_line(buffer)? else {
                        return Ok(BodyChunk::NeedMore);
                    };
                    buffer.advance(line_bytes);
                    self.start_chunk(chunk_bytes)?;
                }
                State::ChunkDataEnd => {
                    if !take_crlf(buffer)? {
                        return Ok(BodyChunk::NeedMore);
                    }
                    self.state = State::ChunkSize;
                }
                State::Trailers { trailer_bytes } => {
                    if !take_trailers(buffer, trailer_bytes)? {
                        return Ok(BodyChunk::NeedMore);
                    }
                    self.state = State::Done;
                }
                State::Done => return Ok(BodyChunk::End),
                State::Failed(error) => return Err(error.clone()),
            }
        }
    }

    fn start_chunk(&mut self, chunk_bytes: u64) -> Result<(), RequestError> {
        if chunk_bytes == 0 {
            self.state = State::Trailers { trailer_bytes: 0 };
            return Ok(());
        }
        // Refuse on the declared size, before the data arrives.
        self.body_bytes_declared = self
            .body_bytes_declared
            .checked_add(chunk_bytes)
            .filter(|&total| total <= self.body_bytes_max)
            .ok_or(RequestError::BodyTooLarge {
                max: self.body_bytes_max,
            })?;
        self.state = State::ChunkData {
            remaining: chunk_bytes,
        };
        Ok(())
    }
}

/// Splits up to `remaining` bytes off `buffer`, or `None` if it is empty.
fn take_data(buffer: &mut BytesMut, remaining: &mut u64) -> Option<Bytes> {
    if buffer.is_empty() {
        return None;
    }
    let take_bytes = usize::try_from(*remaining).map_or(buffer.len(), |r| r.min(buffer.len()));
    *remaining -= take_bytes as u64;
    Some(buffer.split_to(take_bytes).freeze())
}

/// Consumes the CRLF after chunk data. `Ok(false)` when it has not fully
/// arrived; a wrong first byte is refused at once.
fn take_crlf(buffer: &mut BytesMut) -> Result<bool, RequestError> {
    const BAD: RequestError = RequestError::Malformed("chunk data not followed by CRLF");
    match buffer.get(..2) {
        Some(b"\r\n") => {
            buffer.advance(2);
            Ok(true)
        }
        Some(_) => Err(BAD),
        None if buffer.first().is_some_and(|&byte| byte != b'\r') => Err(BAD),
        None => Ok(false),
    }
}

fn hex_digit_value(byte: u8) -> Option<u64> {
    char::from(byte).to_digit(16).map(u64::from)
}

/// Parses `chunk-size [ chunk-ext ] CRLF` at the front of `buffer`.
/// Returns the chunk size and the line length, or `None` if the line has not
/// fully arrived (and is still within [`CHUNK_LINE_BYTES_MAX`]).
fn parse_chunk_size_line(buffer: &[u8]) -> Result<Option<(u64, usize)>, RequestError> {
    let n_digits = buffer
        .iter()
        .take(CHUNK_SIZE_DIGITS_MAX + 1)
        .take_while(|&&byte| hex_digit_value(byte).is_some())
        .count();
    if n_digits > CHUNK_SIZE_DIGITS_MAX {
        return Err(RequestError::Malformed(
            "chunk size has more than 16 hex digits",
        ));
    }
    if n_digits == buffer.len() {
        return Ok(None);
    }
    if n_digits == 0 {
        return Err(RequestError::Malformed("chunk size is not hexadecimal"));
    }
    let chunk_bytes = buffer[..n_digits]
        .iter()
        .filter_map(|&byte| hex_digit_value(byte))
        .fold(0u64, |total, digit| (total << 4) | digit);

    let search_bytes = buffer.len().min(CHUNK_LINE_BYTES_MAX);
    let Some(newline_idx) = buffer[..search_bytes].iter().position(|&b| b == b'\n') else {
        // Check what has arrived so far first, so that a bad byte is
        // reported the same however the line was split into reads. A CR at
        // the very end may yet be followed by its LF.
        let arrived = &buffer[n_digits..search_bytes];
        check_chunk_extensions(arrived.strip_suffix(b"\r").unwrap_or(arrived), false)?;
        if buffer.len() >= CHUNK_LINE_BYTES_MAX {
            return Err(RequestError::Malformed("chunk size line too long"));
        }
        return Ok(None);
    };
    // The line is digits, extensions, then CR before the LF.
    let Some(extensions) = buffer[n_digits..newline_idx].strip_suffix(b"\r") else {
        return Err(RequestError::Malformed("chunk size line not ended by CRLF"));
    };
    check_chunk_extensions(extensions, true)?;
    Ok(Some((chunk_bytes, newline_idx + 1)))
}

/// Checks what follows the chunk size up to the CRLF: nothing, or optional
/// whitespace and `;` followed by visible characters, spaces and tabs
/// (RFC 9112 §7.1.1). Extension content is ignored, but bytes such as a
/// bare CR are refused because another parser might take them for the end
/// of the line. `complete` says whether `extensions` is all of it or only
/// what has arrived so far.
fn check_chunk_extensions(extensions: &[u8], complete: bool) -> Result<(), RequestError> {
    let whitespace_bytes = extensions
        .iter()
        .take_while(|&&byte| byte == b' ' || byte == b'\t')
        .count();
    match extensions.get(whitespace_bytes) {
        // Whitespace is only allowed before a `;`.
        None if complete && whitespace_bytes > 0 => {
            Err(RequestError::Malformed("whitespace after chunk size"))
        }
        None => Ok(()),
        Some(b';') => {
            let content = &extensions[whitespace_bytes..];
            if content.iter().all(|&byte| is_field_content_byte(byte)) {
                Ok(())
            } else {
                Err(RequestError::Malformed("invalid byte in chunk extension"))
            }
        }
        Some(_) => Err(RequestError::Malformed("chunk size is not hexadecimal")),
    }
}

/// Visible characters, space, tab and obs-text: what a field value or a
/// chunk extension may contain.
fn is_field_content_byte(byte: u8) -> bool {
    byte == b'\t' || (b' '..=b'~').contains(&byte) || byte >= 0x80
}

/// Consumes trailer field lines up to and including the blank line.
/// Returns `Ok(true)` when the blank line was consumed, `Ok(false)` when
/// more bytes are needed. Trailers are checked for syntax and discarded.
fn take_trailers(buffer: &mut BytesMut, trailer_bytes: &mut usize) -> Result<bool, RequestError> {
    const TOO_LARGE: RequestError = RequestError::Malformed("trailer section too large");
    // Each pass consumes one line or returns.
    loop {
        let Some(newline_idx) = buffer.iter().position(|&byte| byte == b'\n') else {
            if *trailer_bytes + buffer.len() > TRAILER_BYTES_MAX {
                return Err(TOO_LARGE);
            }
            return Ok(false);
        };
        let Some(line) = buffer[..newline_idx].strip_suffix(b"\r") else {
            return Err(RequestError::Malformed("trailer line not ended by CRLF"));
        };
        if line.is_empty() {
            buffer.advance(newline_idx + 1);
            return Ok(true);
        }
        *trailer_bytes += newline_idx + 1;
        if *trailer_bytes > TRAILER_BYTES_MAX {
            return Err(TOO_LARGE);
        }
        check_trailer_field(line)?;
        buffer.advance(newline_idx + 1);
    }
}

/// A trailer field line is `token ":" OWS field-value OWS`.
fn check_trailer_field(line: &[u8]) -> Result<(), RequestError> {
    let Some(colon_idx) = line.iter().position(|&byte| byte == b':') else {
        return Err(RequestError::Malformed("trailer field without a colon"));
    };
    let (name, value) = (&line[..colon_idx], &line[colon_idx + 1..]);
    if name.is_empty() || !name.iter().all(|&byte| is_token_byte(byte)) {
        return Err(RequestError::Malformed("invalid trailer field name"));
    }
    if !value.iter().all(|&byte| is_field_content_byte(byte)) {
        return Err(RequestError::Malformed("invalid trailer field value"));
    }
    Ok(())
}

/// `tchar` from RFC 9110 §5.6.2.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY_BYTES_MAX: u64 = 100;

    /// Drives a decoder over `buffer` until it stops, describing how: `end`,
    /// `need_more` or the error. Body bytes are appended to `body`.
    fn drain(decoder: &mut BodyDecoder, buffer: &mut BytesMut, body: &mut Vec<u8>) -> String {
        // A body of n bytes takes at most n + 1 calls; the bound catches a
        // decoder that returns empty data forever.
        for _ in 0..=buffer.len() + 1 {
            match decoder.decode(buffer) {
                Ok(BodyChunk::Data(data)) => {
                    assert!(!data.is_empty(), "Data must carry bytes");
                    body.extend_from_slice(&data);
                }
                Ok(BodyChunk::NeedMore) => return "need_more".to_owned(),
                Ok(BodyChunk::End) => {
                    assert!(decoder.is_done());
                    return "end".to_owned();
                }
                Err(error) => return format!("{} {}", error.status(), error.detail()),
            }
        }
        panic!("decoder made no progress");
    }

    /// Decodes `input` whole, then again arriving in two reads split at
    /// every position: every split must reach the same outcome. `expect`
    /// reads `body="..." end rest="..."` (what is left for the next
    /// request), `body="..." need_more` or `body="..."` and an error.
    fn check(framing: BodyFraming, input: &str, expect: &str) {
        let run = |split_idx: usize| {
            let mut decoder = BodyDecoder::new(framing, BODY_BYTES_MAX);
            let mut buffer = BytesMut::from(&input.as_bytes()[..split_idx]);
            let mut body = Vec::new();
            let mut outcome = drain(&mut decoder, &mut buffer, &mut body);
            buffer.extend_from_slice(&input.as_bytes()[split_idx..]);
            if outcome == "need_more" {
                outcome = drain(&mut decoder, &mut buffer, &mut body);
            }
            if outcome == "end" {
                outcome = format!("end rest={:?}", String::from_utf8_lossy(&buffer));
            }
            format!("body={:?} {outcome}", String::from_utf8_lossy(&body))
        };
        let whole = run(input.len());
        // Errors may be found before the body bytes that precede them are
        // all handed out, so only the outcome is compared for errors.
        let outcome_of = |description: &str| {
            description
                .split_once(' ')
                .map(|(_, outcome)| outcome.to_owned())
                .unwrap_or_default()
        };
        for split_idx in 0..input.len() {
            let split = run(split_idx);
            if outcome_of(&whole).starts_with("end") || outcome_of(&whole) == "need_more" {
                assert_eq!(split, whole, "split at {split_idx} of {input:?}");
            } else {
                assert_eq!(
                    outcome_of(&split),
                    outcome_of(&whole),
                    "split at {split_idx}"
                );
            }
        }
        assert_eq!(whole, expect, "input {input:?}");
    }

    #[test]
    fn no_body_ends_at_once_and_leaves_the_buffer_alone() {
        check(
            BodyFraming::None,
            "GET / HTTP/1.1",
            r#"body="" end rest="GET / HTTP/1.1""#,
        );
        check(
            BodyFraming::ContentLength(0),
            "GET",
            r#"body="" end rest="GET""#,
        );
    }

    #[test]
    fn content_length_body_stops_at_its_length() {
        check(
            BodyFraming::ContentLength(5),
            "helloGET /",
            r#"body="hello" end rest="GET /""#,
        );
        check(
            BodyFraming::ContentLength(5),
            "hel",
            r#"body="hel" need_more"#,
        );
        check(
            BodyFraming::ContentLength(101),
            "x",
            r#"body="" 413 request body exceeds 100 bytes"#,
        );
    }

    #[test]
    fn chunked_body_is_reassembled_and_framing_consumed() {
        let chunked = BodyFraming::Chunked;
        check(
            chunked,
            "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET /",
            r#"body="hello world" end rest="GET /""#,
        );
        check(
            chunked,
            "A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n",
            r#"body="0123456789abcdefghij" end rest="""#,
        );
        check(chunked, "0\r\n\r\n", r#"body="" end rest="""#);
        check(
            chunked,
            "0000000000000003\r\nabc\r\n0\r\n\r\n",
            r#"body="abc" end rest="""#,
        );
        check(chunked, "5\r\nhel", r#"body="hel" need_more"#);
        check(chunked, "5\r\nhello\r\n0\r\n", r#"body="hello" need_more"#);
    }

    #[test]
    fn chunk_extensions_are_ignored() {
        check(
            BodyFraming::Chunked,
            "5;name=value\r\nhello\r\n3 ; a ; b=\"q d\"\r\nabc\r\n0;last\r\n\r\nX",
            r#"body="helloabc" end rest="X""#,
        );
    }

    #[test]
    fn trailers_are_parsed_and_discarded() {
        check(
            BodyFraming::Chunked,
            "3\r\nabc\r\n0\r\nChecksum: 1234\r\nX-Other:\tv\r\n\r\nNEXT",
            r#"body="abc" end rest="NEXT""#,
        );
        let oversized = format!("0\r\nX-Big: {}\r\n\r\n", "b".repeat(TRAILER_BYTES_MAX));
        check(
            BodyFraming::Chunked,
            &oversized,
            r#"body="" 400 malformed request: trailer section too large"#,
        );
        check(
            BodyFraming::Chunked,
            "0\r\nno colon\r\n\r\n",
            r#"body="" 400 malformed request: trailer field without a colon"#,
        );
        check(
            BodyFraming::Chunked,
            "0\r\nBad Name: v\r\n\r\n",
            r#"body="" 400 malformed request: invalid trailer field name"#,
        );
        check(
            BodyFraming::Chunked,
            "0\r\nX: a\rb\r\n\r\n",
            r#"body="" 400 malformed request: invalid trailer field value"#,
        );
        check(
            BodyFraming::Chunked,
            "0\r\nX: v\n\r\n",
            r#"body="" 400 malformed request: trailer line not ended by CRLF"#,
        );
    }

    #[test]
    fn malformed_chunk_framing_is_refused() {
        let chunked = BodyFraming::Chunked;
        check(
            chunked,
            "g\r\n",
            r#"body="" 400 malformed request: chunk size is not hexadecimal"#,
        );
        check(
            chunked,
            "-5\r\nhello\r\n",
            r#"body="" 400 malformed request: chunk size is not hexadecimal"#,
        );
        check(
            chunked,
            "5x\r\nhello\r\n",
            r#"body="" 400 malformed request: chunk size is not hexadecimal"#,
        );
        check(
            chunked,
            "5 \r\nhello\r\n",
            r#"body="" 400 malformed request: whitespace after chunk size"#,
        );
        check(
            chunked,
            "00000000000000005\r\nhello\r\n",
            r#"body="" 400 malformed request: chunk size has more than 16 hex digits"#,
        );
        check(
            chunked,
            "ffffffffffffffffff\r\n",
            r#"body="" 400 malformed request: chunk size has more than 16 hex digits"#,
        );
        check(
            chunked,
            "5\nhello\r\n",
            r#"body="" 400 malformed request: chunk size line not ended by CRLF"#,
        );
        check(
            chunked,
            "5;a\rb\r\nhello\r\n",
            r#"body="" 400 malformed request: invalid byte in chunk extension"#,
        );
        check(
            chunked,
            "5\r\nhelloXY0\r\n\r\n",
            r#"body="hello" 400 malformed request: chunk data not followed by CRLF"#,
        );
        check(
            chunked,
            "5\r\nhello\n0\r\n\r\n",
            r#"body="hello" 400 malformed request: chunk data not followed by CRLF"#,
        );
        let long_extension = format!("5;{}", "e".repeat(CHUNK_LINE_BYTES_MAX));
        check(
            chunked,
            &long_extension,
            r#"body="" 400 malformed request: chunk size line too long"#,
        );
    }

    #[test]
    fn chunked_body_over_the_limit_is_refused_when_its_size_arrives() {
        check(BodyFraming::Chunked, "64\r\n", r#"body="" need_more"#);
        check(
            BodyFraming::Chunked,
            "65\r\n",
            r#"body="" 413 request body exceeds 100 bytes"#,
        );
        let over = format!("60\r\n{}\r\n5\r\n", "a".repeat(0x60));
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked, BODY_BYTES_MAX);
        let mut buffer = BytesMut::from(over.as_bytes());
        let mut body = Vec::new();
        assert_eq!(
            drain(&mut decoder, &mut buffer, &mut body),
            "413 request body exceeds 100 bytes"
        );
        assert_eq!(body.len(), 0x60);
        check(
            BodyFraming::Chunked,
            "ffffffffffffffff\r\n",
            r#"body="" 413 request body exceeds 100 bytes"#,
        );
    }

    #[test]
    fn a_failed_decoder_keeps_failing() {
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked, BODY_BYTES_MAX);
        let mut buffer = BytesMut::from(&b"zz\r\n"[..]);
        let error = decoder.decode(&mut buffer).unwrap_err();
        buffer.clear();
        buffer.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decoder.decode(&mut buffer), Err(error));
        assert!(!decoder.is_done());
    }

    #[test]
    fn data_is_split_off_without_copying() {
        let mut buffer = BytesMut::from(&b"hello"[..]);
        let start_address = buffer.as_ptr() as usize;
        let mut decoder = BodyDecoder::new(BodyFraming::ContentLength(5), BODY_BYTES_MAX);
        let Ok(BodyChunk::Data(data)) = decoder.decode(&mut buffer) else {
            panic!("expected data");
        };
        assert_eq!(data.as_ptr() as usize, start_address);
        assert!(decoder.is_done());
        assert_eq!(decoder.decode(&mut buffer), Ok(BodyChunk::End));
    }
}
