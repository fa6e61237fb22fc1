//! Properties of the HTTP/1.1 codec over generated input: it never panics,
//! never asks to buffer more than its limits, decodes what a correct sender
//! encodes however the bytes are split, and gives the same answer for a
//! head however it arrives.

use bytes::BytesMut;
use proptest::prelude::*;
use veza_codec::http1::body::TRAILER_BYTES_MAX;
use veza_codec::http1::{
    parse_request_head, BodyChunk, BodyDecoder, BodyFraming, RequestError, RequestHead,
    RequestLimits,
};

fn limits_strategy() -> impl Strategy<Value = RequestLimits> {
    (0usize..300, 0usize..12, 0usize..80, 0u64..200).prop_map(
        |(head_bytes_max, header_count_max, target_bytes_max, body_bytes_max)| RequestLimits {
            head_bytes_max,
            header_count_max,
            target_bytes_max,
            body_bytes_max,
        },
    )
}

/// Bytes built from pieces of HTTP, so generated input gets deep into the
/// parser instead of failing on the first byte.
fn http_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(vec![
        &b"GET "[..],
        b"POST ",
        b"/",
        b"/path?q=1",
        b" ",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"HTTP/2.0",
        b"\r\n",
        b"\r",
        b"\n",
        b"Host: a\r\n",
        b"Content-Length: ",
        b"Transfer-Encoding: ",
        b"Connection: ",
        b"chunked",
        b"close",
        b"keep-alive",
        b", ",
        b"5",
        b"0",
        b"18446744073709551616",
        b"X-A:",
        b"\t",
        b"\x00",
        b"\xff",
        b"a",
    ]);
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

fn check_head_invariants(
    input: &[u8],
    limits: &RequestLimits,
    result: &Result<Option<(RequestHead, usize)>, RequestError>,
) {
    match result {
        Ok(None) => assert!(input.len() <= limits.head_bytes_max),
        Ok(Some((head, head_bytes))) => {
            assert!(*head_bytes <= input.len().min(limits.head_bytes_max));
            assert!(head.headers.len() <= limits.header_count_max);
            assert!(head.target.len() <= limits.target_bytes_max);
            if let BodyFraming::ContentLength(length) = head.body {
                assert!(length <= limits.body_bytes_max);
            }
        }
        Err(_) => {}
    }
}

/// A request head a correct client could send.
#[derive(Debug, Clone)]
struct GeneratedRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl GeneratedRequest {
    fn to_bytes(&self) -> Vec<u8> {
        let mut text = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.into_bytes()
    }
}

fn generated_request() -> impl Strategy<Value = GeneratedRequest> {
    let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]);
    let target = "/[a-z0-9/._~-]{0,30}(\\?[a-z0-9=&]{0,20})?";
    let header = ("X-[A-Za-z0-9-]{1,12}", "[!-~]([ !-~]{0,20}[!-~])?");
    (method, target, prop::collection::vec(header, 0..8)).prop_map(|(method, target, headers)| {
        GeneratedRequest {
            method: method.to_owned(),
            target,
            headers,
        }
    })
}

/// Chunked encoding of `chunks` with optional extensions and trailers.
fn encode_chunked(chunks: &[Vec<u8>], extension: &str, trailers: &[(String, String)]) -> Vec<u8> {
    let mut encoded = Vec::new();
    for chunk in chunks.iter().filter(|chunk| !chunk.is_empty()) {
        encoded.extend_from_slice(format!("{:x}{extension}\r\n", chunk.len()).as_bytes());
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(format!("0{extension}\r\n").as_bytes());
    for (name, value) in trailers {
        encoded.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    encoded.extend_from_slice(b"\r\n");
    encoded
}

/// Feeds `input` to a decoder in reads cut at `cut_idxs`, collecting the
/// body. Returns the body, the bytes left after `End`, or the error.
fn decode_in_reads(
    framing: BodyFraming,
    body_bytes_max: u64,
    input: &[u8],
    cut_idxs: &[usize],
) -> Result<(Vec<u8>, Vec<u8>), RequestError> {
    let mut decoder = BodyDecoder::new(framing, body_bytes_max);
    let mut buffer = BytesMut::new();
    let mut body = Vec::new();
    let mut cuts: Vec<usize> = cut_idxs.iter().map(|idx| idx % (input.len() + 1)).collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    let mut read_start_idx = 0;
    for cut_idx in cuts {
        buffer.extend_from_slice(&input[read_start_idx..cut_idx]);
        read_start_idx = cut_idx;
        // Each call consumes bytes or stops, so buffer length + 2 bounds it.
        for _ in 0..buffer.len() + 2 {
            match decoder.decode(&mut buffer)? {
                BodyChunk::Data(data) => {
                    assert!(!data.is_empty());
                    body.extend_from_slice(&data);
                }
                BodyChunk::NeedMore => {
                    assert!(buffer.len() <= TRAILER_BYTES_MAX);
                    break;
                }
                BodyChunk::End => {
                    buffer.extend_from_slice(&input[read_start_idx..]);
                    return Ok((body, buffer.to_vec()));
                }
            }
        }
    }
    Ok((body, b"<need more>".to_vec()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn http1_head_parser_never_panics_or_exceeds_limits_on_arbitrary_bytes(
        input in prop::collection::vec(any::<u8>(), 0..400),
        limits in limits_strategy(),
    ) {
        let result = parse_request_head(&input, &limits);
        check_head_invariants(&input, &limits, &result);
    }

    #[test]
    fn http1_head_parser_answers_the_same_however_http_like_bytes_arrive(
        input in http_like_bytes(),
        limits in limits_strategy(),
    ) {
        let mut first_answer = None;
        for prefix_bytes in 0..=input.len() {
            let prefix = &input[..prefix_bytes];
            let result = parse_request_head(prefix, &limits);
            check_head_invariants(prefix, &limits, &result);
            match (&first_answer, result) {
                (None, Ok(None)) => {}
                (None, answer) => first_answer = Some(answer),
                (Some(first), answer) => prop_assert_eq!(&answer, first),
            }
        }
    }

    #[test]
    fn http1_unterminated_head_over_the_limit_is_refused_as_too_large(
        request in generated_request(),
        pad in "[a-z]{0,400}",
        head_bytes_max in 40usize..300,
    ) {
        // A valid request line and headers that never end.
        let mut input = request.to_bytes();
        input.truncate(input.len() - 2);
        input.extend_from_slice(format!("X-Pad: {pad}").as_bytes());
        let limits = RequestLimits {
            head_bytes_max,
            header_count_max: 32,
            target_bytes_max: 1024,
            body_bytes_max: 0,
        };
        let result = parse_request_head(&input, &limits);
        if input.len() > head_bytes_max {
            prop_assert_eq!(result, Err(RequestError::HeadTooLarge { max: head_bytes_max }));
        } else {
            prop_assert_eq!(result, Ok(None));
        }
    }

    #[test]
    fn http1_generated_requests_parse_back_to_what_was_sent(
        request in generated_request(),
        pipelined in "[ -~]{0,20}",
    ) {
        let head_bytes = request.to_bytes();
        let mut input = head_bytes.clone();
        input.extend_from_slice(pipelined.as_bytes());
        let limits = RequestLimits::default();
        for prefix_bytes in 0..head_bytes.len() {
            prop_assert_eq!(parse_request_head(&input[..prefix_bytes], &limits), Ok(None));
        }
        let (head, parsed_bytes) = parse_request_head(&input, &limits).unwrap().unwrap();
        prop_assert_eq!(parsed_bytes, head_bytes.len());
        prop_assert_eq!(&head.method, &request.method);
        prop_assert_eq!(&head.target, &request.target);
        prop_assert_eq!(head.body, BodyFraming::None);
        prop_assert!(head.keep_alive);
        let parsed: Vec<(String, Vec<u8>)> =
            head.headers.iter().map(|(name, value)| (name.clone(), value.to_vec())).collect();
        let sent: Vec<(String, Vec<u8>)> = request
            .headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec()))
            .collect();
        prop_assert_eq!(parsed, sent);
    }

    #[test]
    fn http1_body_decoder_never_panics_or_holds_too_much_on_arbitrary_bytes(
        input in prop::collection::vec(any::<u8>(), 0..600),
        cut_idxs in prop::collection::vec(any::<usize>(), 0..6),
        framing in prop_oneof![
            Just(BodyFraming::None),
            Just(BodyFraming::Chunked),
            (0u64..700).prop_map(BodyFraming::ContentLength),
        ],
        body_bytes_max in 0u64..600,
    ) {
        if let Ok((body, _)) = decode_in_reads(framing, body_bytes_max, &input, &cut_idxs) {
            prop_assert!(body.len() as u64 <= body_bytes_max);
        }
    }

    #[test]
    fn http1_chunked_bodies_decode_the_same_at_every_split(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..6),
        extension in prop::sample::select(vec!["", ";a", ";a=b", " ;name=\"quoted value\"", ";x;y=z"]),
        trailers in prop::collection::vec(("[A-Za-z-]{1,8}", "[!-~]{0,10}"), 0..3),
        pipelined in "[ -~]{0,10}",
        cut_idxs in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut input = encode_chunked(&chunks, extension, &trailers);
        input.extend_from_slice(pipelined.as_bytes());
        let decoded = decode_in_reads(BodyFraming::Chunked, 1024, &input, &cut_idxs);
        prop_assert_eq!(decoded, Ok((chunks.concat(), pipelined.into_bytes())));
    }

    #[test]
    fn http1_content_length_bodies_decode_the_same_at_every_split(
        body in prop::collection::vec(any::<u8>(), 0..100),
        pipelined in prop::collection::vec(any::<u8>(), 0..20),
        cut_idxs in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut input = body.clone();
        input.extend_from_slice(&pipelined);
        let framing = BodyFraming::ContentLength(body.len() as u64);
        let decoded = decode_in_reads(framing, 100, &input, &cut_idxs);
        prop_assert_eq!(decoded, Ok((body, pipelined)));
    }
}

/// Every split of one chunked body with extensions and trailers, not just
/// the ones proptest happens to pick.
#[test]
fn http1_chunked_body_with_extensions_and_trailers_decodes_at_every_split_pair() {
    let chunks = [
        b"Wiki".to_vec(),
        b"pedia ".to_vec(),
        b"in \r\nchunks.".to_vec(),
    ];
    let trailers = [("Expires".to_owned(), "never".to_owned())];
    let mut input = encode_chunked(&chunks, ";ext=1", &trailers);
    input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    for first_cut_idx in 0..=input.len() {
        for second_cut_idx in first_cut_idx..=input.len() {
            let decoded = decode_in_reads(
                BodyFraming::Chunked,
                1024,
                &input,
                &[first_cut_idx, second_cut_idx],
            );
            assert_eq!(
                decoded,
                Ok((chunks.concat(), b"GET / HTTP/1.1\r\n\r\n".to_vec())),
                "cuts at {first_cut_idx} and {second_cut_idx}"
            );
        }
    }
}
