//! The parsed head of an HTTP/1.1 request.

use bytes::Bytes;

/// How the request body is framed (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no Content-Length, no Transfer-Encoding).
    None,
    /// `Content-Length: n`.
    ContentLength(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request line and header block. Header names are stored in lower
/// case; values are the raw bytes (they may be non-UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, for example `GET` (case-sensitive, as sent).
    pub method: String,
    /// The request target as sent, for example `/v1/echo?x=1`.
    pub target: String,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub version_minor: u8,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, Bytes)>,
    /// How the body is framed.
    pub body: BodyFraming,
    /// Whether the connection stays open after the response (HTTP/1.1 default
    /// unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
}

impl RequestHead {
    /// The first value of header `name` (give it in lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        debug_assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Every value of header `name` (give it in lower case), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Whether header `name` holds `token` in its comma-separated list,
    /// compared case-insensitively (for `Connection: keep-alive, Upgrade`).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name).any(|value| {
            value
                .split(|&b| b == b',')
                .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// The path part of the target, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query part of the target, without the `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Whether this is `HEAD` (the response has no body).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}
