//! The server side of the opening handshake (RFC 6455 §4.2).
//!
//! [`validate_upgrade`] checks a parsed request head and computes the
//! `Sec-WebSocket-Accept` key; [`write_switching_protocols`] writes the 101
//! response. A refused upgrade is a [`HandshakeError`] that knows its HTTP
//! status and the stable error name for Veza's JSON error body.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::{BufMut, BytesMut};
use sha1::{Digest, Sha1};

use crate::http1::RequestHead;

/// The GUID that RFC 6455 §1.3 appends to the client's key.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version Veza speaks (RFC 6455 §4.1).
pub const WEBSOCKET_VERSION: &str = "13";

/// The decoded length of a valid `Sec-WebSocket-Key` (RFC 6455 §4.1).
const KEY_NONCE_BYTES: usize = 16;

/// Room to decode a key: the base64 decoder wants space for its estimate
/// (3 bytes per 4 characters of a 24-character key), not just the 16 bytes.
const KEY_DECODE_BUFFER_BYTES: usize = 18;

/// `base64(sha1(client_key ++ GUID))`, the `Sec-WebSocket-Accept` value.
pub fn accept_key(client_key: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(client_key);
    hasher.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(hasher.finalize())
}

/// Why an upgrade request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// The method is not `GET` (answer 405 with `Allow: GET`).
    #[error("WebSocket upgrade requires GET")]
    MethodNotGet,
    /// The request is HTTP/1.0.
    #[error("WebSocket upgrade requires HTTP/1.1")]
    HttpVersionTooOld,
    /// No `Upgrade: websocket`.
    #[error("Upgrade header does not name websocket")]
    MissingUpgradeHeader,
    /// No `Connection: Upgrade`.
    #[error("Connection header does not include upgrade")]
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Key`.
    #[error("Sec-WebSocket-Key header is missing")]
    MissingKey,
    /// `Sec-WebSocket-Key` is not the base64 encoding of 16 bytes.
    #[error("Sec-WebSocket-Key is not base64 of 16 bytes")]
    InvalidKey,
    /// `Sec-WebSocket-Version` is missing or not 13 (answer 426 with
    /// `Sec-WebSocket-Version: 13`).
    #[error("Sec-WebSocket-Version is not 13")]
    UnsupportedVersion,
}

impl HandshakeError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::MethodNotGet => 405,
            HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// A stable snake-case name for the `error` field of the JSON body.
    pub fn error_name(&self) -> &'static str {
        match self {
            HandshakeError::MethodNotGet => "websocket_method_not_get",
            HandshakeError::HttpVersionTooOld => "websocket_http_version_too_old",
            HandshakeError::MissingUpgradeHeader => "websocket_upgrade_header_missing",
            HandshakeError::MissingConnectionUpgrade => "websocket_connection_upgrade_missing",
            HandshakeError::MissingKey => "websocket_key_missing",
            HandshakeError::InvalidKey => "websocket_key_invalid",
            HandshakeError::UnsupportedVersion => "websocket_version_unsupported",
        }
    }

    /// A human-readable sentence for the `detail` field of the JSON body.
    pub fn detail(&self) -> &'static str {
        match self {
            HandshakeError::MethodNotGet => "a WebSocket upgrade must use the GET method",
            HandshakeError::HttpVersionTooOld => "a WebSocket upgrade requires HTTP/1.1",
            HandshakeError::MissingUpgradeHeader => "the Upgrade header must name websocket",
            HandshakeError::MissingConnectionUpgrade => {
                "the Connection header must include the upgrade token"
            }
            HandshakeError::MissingKey => "the Sec-WebSocket-Key header is required",
            HandshakeError::InvalidKey => {
                "Sec-WebSocket-Key must be the base64 encoding of 16 bytes"
            }
            HandshakeError::UnsupportedVersion => "only WebSocket version 13 is supported",
        }
    }

    /// Headers the error response must carry besides the body (RFC 9110
    /// §15.5.6 for `Allow`, RFC 6455 §4.4 for `Sec-WebSocket-Version`).
    pub fn response_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            HandshakeError::MethodNotGet => &[("Allow", "GET")],
            HandshakeError::UnsupportedVersion => &[("Sec-WebSocket-Version", WEBSOCKET_VERSION)],
            _ => &[],
        }
    }
}

/// An accepted upgrade: what the 101 response needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    pub accept_key: String,
    /// The subprotocol chosen from the server's list, if any.
    pub subprotocol: Option<&'static str>,
}

/// Validates an upgrade request.
///
/// `supported_subprotocols` is the server's list in preference order; the
/// chosen one is the first of the server's list that the client offered in
/// `Sec-WebSocket-Protocol` (comma-separated, possibly over several header
/// lines). Subprotocol names are compared exactly: they are case-sensitive
/// tokens. None offered or none matching gives `None` and the handshake
/// still succeeds; browsers then fail the connection themselves if they
/// required one, which is the behaviour they expect from servers.
pub fn validate_upgrade(
    request: &RequestHead,
    supported_subprotocols: &[&'static str],
) -> Result<Accepted, HandshakeError> {
    if request.method != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if request.version_minor < 1 {
        return Err(HandshakeError::HttpVersionTooOld);
    }
    if !request.header_has_token("upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgradeHeader);
    }
    if !request.header_has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let key = request
        .header("sec-websocket-key")
        .ok_or(HandshakeError::MissingKey)?
        .trim_ascii();
    if !is_valid_key(key) {
        return Err(HandshakeError::InvalidKey);
    }
    let version = request
        .header("sec-websocket-version")
        .map(<[u8]>::trim_ascii);
    if version != Some(WEBSOCKET_VERSION.as_bytes()) {
        return Err(HandshakeError::UnsupportedVersion);
    }
    Ok(Accepted {
        accept_key: accept_key(key),
        subprotocol: choose_subprotocol(request, supported_subprotocols),
    })
}

/// Whether `key` is base64 (with padding) of exactly 16 bytes.
fn is_valid_key(key: &[u8]) -> bool {
    let mut nonce = [0u8; KEY_DECODE_BUFFER_BYTES];
    matches!(BASE64.decode_slice(key, &mut nonce), Ok(KEY_NONCE_BYTES))
}

/// The first of the server's subprotocols that the client offered.
fn choose_subprotocol(
    request: &RequestHead,
    supported_subprotocols: &[&'static str],
) -> Option<&'static str> {
    supported_subprotocols.iter().copied().find(|supported| {
        request
            .header_values("sec-websocket-protocol")
            .flat_map(|value| value.split(|&byte| byte == b','))
            .any(|offered| offered.trim_ascii() == supported.as_bytes())
    })
}

/// Appends the `HTTP/1.1 101 Switching Protocols` response (Upgrade,
/// Connection, Sec-WebSocket-Accept, and Sec-WebSocket-Protocol when one was
/// chosen) to `out`.
pub fn write_switching_protocols(accepted: &Accepted, out: &mut BytesMut) {
    out.put_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.put_slice(accepted.accept_key.as_bytes());
    out.put_slice(b"\r\n");
    if let Some(subprotocol) = accepted.subprotocol {
        out.put_slice(b"Sec-WebSocket-Protocol: ");
        out.put_slice(subprotocol.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::BodyFraming;
    use bytes::Bytes;

    /// The opening handshake of RFC 6455 §1.3, minus the header `without`,
    /// plus `extra_headers`.
    fn request(without: &str, extra_headers: &[(&str, &str)]) -> RequestHead {
        let rfc_headers = [
            ("host", "server.example.com"),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("origin", "http://example.com"),
            ("sec-websocket-version", "13"),
        ];
        let headers = rfc_headers
            .iter()
            .filter(|(name, _)| *name != without)
            .chain(extra_headers)
            .map(|(name, value)| (name.to_string(), Bytes::copy_from_slice(value.as_bytes())))
            .collect();
        RequestHead {
            method: "GET".to_string(),
            target: "/chat".to_string(),
            version_minor: 1,
            headers,
            body: BodyFraming::None,
            keep_alive: true,
        }
    }

    fn check_refused(request: RequestHead, expected: HandshakeError, expected_status: u16) {
        let error = validate_upgrade(&request, &["chat"]).expect_err("must be refused");
        assert_eq!(error, expected);
        assert_eq!(error.status(), expected_status, "{error}");
    }

    fn check_subprotocol(
        offered_lines: &[&str],
        supported: &[&'static str],
        expected: Option<&'static str>,
    ) {
        let extra: Vec<(&str, &str)> = offered_lines
            .iter()
            .map(|line| ("sec-websocket-protocol", *line))
            .collect();
        let accepted = validate_upgrade(&request("", &extra), supported).expect("accepted");
        assert_eq!(
            accepted.subprotocol, expected,
            "{offered_lines:?} / {supported:?}"
        );
    }

    #[test]
    fn accept_key_matches_the_rfc_6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_the_rfc_6455_example_request() {
        let accepted = validate_upgrade(
            &request("", &[("sec-websocket-protocol", "chat, superchat")]),
            &["chat"],
        )
        .unwrap();
        assert_eq!(
            accepted,
            Accepted {
                accept_key: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_string(),
                subprotocol: Some("chat"),
            }
        );
        let mut out = BytesMut::new();
        write_switching_protocols(&accepted, &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: chat\r\n\
              \r\n"
        );
    }

    #[test]
    fn the_response_has_no_protocol_header_when_none_was_chosen() {
        let accepted = validate_upgrade(&request("", &[]), &["chat"]).unwrap();
        assert_eq!(accepted.subprotocol, None);
        let mut out = BytesMut::new();
        write_switching_protocols(&accepted, &mut out);
        assert!(!out
            .windows(b"Sec-WebSocket-Protocol".len())
            .any(|window| window == b"Sec-WebSocket-Protocol"));
        assert!(out.ends_with(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"));
    }

    #[test]
    fn header_tokens_are_matched_as_browsers_send_them() {
        // Firefox sends `Connection: keep-alive, Upgrade`; case varies.
        let firefox = request("connection", &[("connection", "keep-alive, Upgrade")]);
        assert!(validate_upgrade(&firefox, &[]).is_ok());
        let mixed_case = request("upgrade", &[("upgrade", "WebSocket")]);
        assert!(validate_upgrade(&mixed_case, &[]).is_ok());
        let padded_key = request(
            "sec-websocket-key",
            &[("sec-websocket-key", " dGhlIHNhbXBsZSBub25jZQ== ")],
        );
        assert_eq!(
            validate_upgrade(&padded_key, &[]).unwrap().accept_key,
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn refuses_each_malformed_upgrade() {
        let mut post = request("", &[]);
        post.method = "POST".to_string();
        check_refused(post, HandshakeError::MethodNotGet, 405);

        let mut http_1_0 = request("", &[]);
        http_1_0.version_minor = 0;
        check_refused(http_1_0, HandshakeError::HttpVersionTooOld, 400);

        check_refused(
            request("upgrade", &[]),
            HandshakeError::MissingUpgradeHeader,
            400,
        );
        check_refused(
            request("upgrade", &[("upgrade", "h2c")]),
            HandshakeError::MissingUpgradeHeader,
            400,
        );
        check_refused(
            request("connection", &[]),
            HandshakeError::MissingConnectionUpgrade,
            400,
        );
        check_refused(
            request("connection", &[("connection", "keep-alive")]),
            HandshakeError::MissingConnectionUpgrade,
            400,
        );
        check_refused(
            request("sec-websocket-key", &[]),
            HandshakeError::MissingKey,
            400,
        );
        for invalid_key in [
            "",
            "AAAA",
            // No padding.
            "dGhlIHNhbXBsZSBub25jZQ",
            // 24 characters, but 17 bytes.
            "dGhlIHNhbXBsZSBub25jZQA=",
            // 24 characters, not base64.
            "!!!!!!!!!!!!!!!!!!!!!!==",
            // 20 bytes.
            "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            check_refused(
                request("sec-websocket-key", &[("sec-websocket-key", invalid_key)]),
                HandshakeError::InvalidKey,
                400,
            );
        }
        check_refused(
            request("sec-websocket-version", &[]),
            HandshakeError::UnsupportedVersion,
            426,
        );
        check_refused(
            request("sec-websocket-version", &[("sec-websocket-version", "8")]),
            HandshakeError::UnsupportedVersion,
            426,
        );
    }

    #[test]
    fn subprotocol_is_the_servers_first_choice_among_those_offered() {
        check_subprotocol(
            &["chat, superchat"],
            &["superchat", "chat"],
            Some("superchat"),
        );
        check_subprotocol(&["chat, superchat"], &["chat", "superchat"], Some("chat"));
        check_subprotocol(
            &["v1.veza", "x, v2.veza"],
            &["v2.veza", "v1.veza"],
            Some("v2.veza"),
        );
        check_subprotocol(&["a,b", " c ,d"], &["d"], Some("d"));
        check_subprotocol(&["chat"], &["other"], None);
        check_subprotocol(&[], &["chat"], None);
        check_subprotocol(&["chat"], &[], None);
        // Subprotocol names are case-sensitive.
        check_subprotocol(&["Chat"], &["chat"], None);
    }

    #[test]
    fn errors_name_themselves_stably_and_carry_their_headers() {
        type Headers = &'static [(&'static str, &'static str)];
        let cases: &[(HandshakeError, &str, Headers)] = &[
            (
                HandshakeError::MethodNotGet,
                "websocket_method_not_get",
                &[("Allow", "GET")],
            ),
            (
                HandshakeError::HttpVersionTooOld,
                "websocket_http_version_too_old",
                &[],
            ),
            (
                HandshakeError::MissingUpgradeHeader,
                "websocket_upgrade_header_missing",
                &[],
            ),
            (
                HandshakeError::MissingConnectionUpgrade,
                "websocket_connection_upgrade_missing",
                &[],
            ),
            (HandshakeError::MissingKey, "websocket_key_missing", &[]),
            (HandshakeError::InvalidKey, "websocket_key_invalid", &[]),
            (
                HandshakeError::UnsupportedVersion,
                "websocket_version_unsupported",
                &[("Sec-WebSocket-Version", "13")],
            ),
        ];
        for (error, expected_name, expected_headers) in cases {
            assert_eq!(error.error_name(), *expected_name);
            assert_eq!(error.response_headers(), *expected_headers);
            assert!(!error.detail().is_empty());
        }
    }
}
