//! One range request, sans-IO: which rendition and which bytes (a seeded
//! generator, so that both servers get the same sequence), the request
//! bytes, and the check of the response head against what was asked.

use serde::{Deserialize, Serialize};

/// One stored rendition of one track: what a request can ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendition {
    /// The track's id as the server spells it in paths.
    pub track_id: String,
    /// The rendition's bitrate, kb/s.
    pub bitrate_kbps: u32,
    /// The file's size, bytes.
    pub size_bytes: u64,
}

/// How a server spells the path of a rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathStyle {
    /// Veza's data plane: `/v1/tracks/{id}/audio?br={kbps}`.
    Veza,
    /// A static file server rooted at the media directory:
    /// `/tracks/{id}/{kbps}.opus`.
    StaticFiles,
}

impl PathStyle {
    /// The request target of `rendition`.
    pub fn path(self, rendition: &Rendition) -> String {
        match self {
            PathStyle::Veza => format!(
                "/v1/tracks/{}/audio?br={}",
                rendition.track_id, rendition.bitrate_kbps
            ),
            PathStyle::StaticFiles => format!(
                "/tracks/{}/{}.opus",
                rendition.track_id, rendition.bitrate_kbps
            ),
        }
    }
}

/// xorshift64*: a small, fast generator; the same seed gives the same
/// requests on every server. Not for anything secret.
#[derive(Debug, Clone)]
pub struct RequestRng {
    state: u64,
}

impl RequestRng {
    /// A generator for connection `connection_idx` of a run seeded `seed`.
    pub fn new(seed: u64, connection_idx: usize) -> RequestRng {
        // splitmix64 of the pair, so that neighbouring connections start far
        // apart; never zero (xorshift's fixed point).
        let mut mixed = seed ^ (connection_idx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        RequestRng {
            state: (mixed ^ (mixed >> 31)) | 1,
        }
    }

    /// The next value, uniform over `0..bound` (`bound` > 0; the modulo
    /// bias is below 2^-40 for the bounds used here).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "a bound of zero has no value below it");
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

/// The bytes `first..=last` of one rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// Index into the run's renditions.
    pub rendition_idx: usize,
    /// First byte, a multiple of the range size.
    pub first: u64,
    /// Last byte, inclusive.
    pub last: u64,
    /// The file's size.
    pub size_bytes: u64,
}

impl ByteRange {
    /// The body length a correct answer carries.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never true: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A uniformly chosen rendition and a uniformly chosen `range_bytes`-aligned
/// block in it (the last block of a file is shorter).
pub fn choose_range(rng: &mut RequestRng, renditions: &[Rendition], range_bytes: u64) -> ByteRange {
    assert!(range_bytes > 0 && !renditions.is_empty());
    let rendition_idx = rng.below(renditions.len() as u64) as usize;
    let size_bytes = renditions[rendition_idx].size_bytes;
    assert!(size_bytes > 0, "renditions are never empty");
    let n_blocks = size_bytes.div_ceil(range_bytes);
    let first = rng.below(n_blocks) * range_bytes;
    let last = (first + range_bytes).min(size_bytes) - 1;
    ByteRange {
        rendition_idx,
        first,
        last,
        size_bytes,
    }
}

/// Writes `GET path` with `Range: bytes=first-last` into `out` (cleared
/// first, so one buffer serves every request of a connection).
pub fn encode_request(out: &mut Vec<u8>, path: &str, host: &str, range: &ByteRange) {
    use std::io::Write as _;
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: veza-bench\r\n\
         Range: bytes={}-{}\r\n\r\n",
        range.first, range.last
    );
}

/// Why a response is not the one asked for; the name is the error kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseMismatch {
    /// Not a `206 Partial Content`.
    #[error("HTTP {0} instead of 206")]
    Status(u16),
    /// `Content-Range` missing or for other bytes.
    #[error("Content-Range {found:?}, expected {expected:?}")]
    ContentRange {
        /// What came.
        found: Option<String>,
        /// What was asked.
        expected: String,
    },
    /// `Content-Length` missing or not the range's length.
    #[error("Content-Length {found:?}, expected {expected}")]
    ContentLength {
        /// What came.
        found: Option<String>,
        /// The range's length.
        expected: u64,
    },
    /// The head is not HTTP.
    #[error("response head: {0}")]
    Head(String),
}

impl ResponseMismatch {
    /// The error kind in reports.
    pub fn kind(&self) -> String {
        match self {
            ResponseMismatch::Status(status) => format!("http_{status}"),
            ResponseMismatch::ContentRange { .. } => "wrong_content_range".into(),
            ResponseMismatch::ContentLength { .. } => "wrong_content_length".into(),
            ResponseMismatch::Head(_) => "bad_response_head".into(),
        }
    }
}

/// A complete, correct response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedHead {
    /// Bytes of the head, body excluded.
    pub head_len: usize,
    /// The body's length (the range's).
    pub body_len: u64,
    /// The server asked to close the connection after this response.
    pub closes: bool,
}

/// Parses and checks the head in `bytes`; `Ok(None)` while incomplete.
pub fn check_head(
    bytes: &[u8],
    range: &ByteRange,
) -> Result<Option<CheckedHead>, ResponseMismatch> {
    let mut headers = [httparse::EMPTY_HEADER; 24];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(ResponseMismatch::Head(error.to_string())),
    };
    let status = response.code.unwrap_or(0);
    if status != 206 {
        return Err(ResponseMismatch::Status(status));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| String::from_utf8_lossy(header.value).trim().to_string())
    };
    let expected_range = format!("bytes {}-{}/{}", range.first, range.last, range.size_bytes);
    let content_range = header("content-range");
    if content_range.as_deref() != Some(expected_range.as_str()) {
        return Err(ResponseMismatch::ContentRange {
            found: content_range,
            expected: expected_range,
        });
    }
    let content_length = header("content-length");
    if content_length.as_deref().and_then(|text| text.parse().ok()) != Some(range.len()) {
        return Err(ResponseMismatch::ContentLength {
            found: content_length,
            expected: range.len(),
        });
    }
    let closes = header("connection").is_some_and(|value| value.eq_ignore_ascii_case("close"));
    Ok(Some(CheckedHead {
        head_len,
        body_len: range.len(),
        closes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renditions() -> Vec<Rendition> {
        [(64, 100_000), (96, 150_000), (160, 65_536)]
            .into_iter()
            .map(|(bitrate_kbps, size_bytes)| Rendition {
                track_id: "7".into(),
                bitrate_kbps,
                size_bytes,
            })
            .collect()
    }

    #[test]
    fn ranges_are_aligned_inside_the_file_and_the_last_block_is_short() {
        let renditions = renditions();
        let mut rng = RequestRng::new(42, 3);
        let mut seen_short = false;
        for _ in 0..1000 {
            let range = choose_range(&mut rng, &renditions, 65_536);
            assert_eq!(range.first % 65_536, 0);
            assert!(range.last < range.size_bytes);
            assert!(range.len() <= 65_536);
            seen_short |= range.len() < 65_536;
        }
        assert!(seen_short);
    }

    #[test]
    fn the_same_seed_and_connection_give_the_same_requests() {
        let renditions = renditions();
        let draw = |connection_idx| {
            let mut rng = RequestRng::new(7, connection_idx);
            (0..50)
                .map(|_| choose_range(&mut rng, &renditions, 65_536))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn paths_follow_each_server() {
        let rendition = &renditions()[1];
        assert_eq!(PathStyle::Veza.path(rendition), "/v1/tracks/7/audio?br=96");
        assert_eq!(PathStyle::StaticFiles.path(rendition), "/tracks/7/96.opus");
        let mut out = Vec::new();
        let range = ByteRange {
            rendition_idx: 1,
            first: 65_536,
            last: 131_071,
            size_bytes: 150_000,
        };
        encode_request(&mut out, "/tracks/7/96.opus", "127.0.0.1:80", &range);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /tracks/7/96.opus HTTP/1.1\r\n"));
        assert!(text.contains("\r\nRange: bytes=65536-131071\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_head_is_accepted_only_for_the_bytes_asked() {
        let range = ByteRange {
            rendition_idx: 0,
            first: 0,
            last: 9,
            size_bytes: 100,
        };
        let good = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\n\
                     Content-Length: 10\r\n\r\n0123";
        let head = check_head(good, &range).unwrap().unwrap();
        assert_eq!(
            (head.head_len, head.body_len, head.closes),
            (good.len() - 4, 10, false)
        );
        assert_eq!(check_head(&good[..20], &range), Ok(None));
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        assert_eq!(check_head(whole, &range).unwrap_err().kind(), "http_200");
        let other = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 10-19/100\r\n\
                      Content-Length: 10\r\n\r\n";
        assert_eq!(
            check_head(other, &range).unwrap_err().kind(),
            "wrong_content_range"
        );
        let short = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\n\
                      Content-Length: 9\r\nConnection: close\r\n\r\n";
        assert_eq!(
            check_head(short, &range).unwrap_err().kind(),
            "wrong_content_length"
        );
    }
}
