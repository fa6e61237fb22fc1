//! WebSocket close codes (RFC 6455 §7.4) as Veza uses them.
//!
//! Codes below 4000 are the RFC's; codes from 4000 are Veza's own and are part
//! of the client protocol: a client must treat them as documented here.

/// Normal closure: the purpose of the connection was fulfilled.
pub const NORMAL: u16 = 1000;
/// The server is going away (shutdown or restart). Reconnect with backoff.
pub const GOING_AWAY: u16 = 1001;
/// The peer broke the WebSocket protocol (bad framing, masking, opcodes).
pub const PROTOCOL_ERROR: u16 = 1002;
/// The peer sent a data type the endpoint cannot accept.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// Reserved: no status code was present. Never sent on the wire.
pub const NO_STATUS_RECEIVED: u16 = 1005;
/// Reserved: the connection closed without a close frame. Never sent on the wire.
pub const ABNORMAL_CLOSURE: u16 = 1006;
/// A text message was not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// The peer violated a policy (for example persistent rate-limit abuse).
pub const POLICY_VIOLATION: u16 = 1008;
/// A frame or message exceeded the configured size limit.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The server hit an unexpected condition.
pub const INTERNAL_ERROR: u16 = 1011;
/// Reserved: TLS handshake failure. Never sent on the wire.
pub const TLS_HANDSHAKE: u16 = 1015;

/// Veza: the access token in `Auth` is invalid (bad signature, unknown key,
/// malformed). Do not retry with the same token: log in again.
pub const AUTH_FAILED: u16 = 4001;
/// Veza: the access token in `Auth` has expired. Refresh it
/// (`POST /v1/sessions/refresh`) and reconnect.
pub const TOKEN_EXPIRED: u16 = 4002;
/// Veza: the access token was revoked, either when presented in `Auth` or
/// later, when the control plane pushed the revocation (the connection is
/// then closed). Log in again.
pub const TOKEN_REVOKED: u16 = 4003;
/// Veza: no `Auth` arrived within the server's configured auth deadline.
pub const AUTH_TIMEOUT: u16 = 4004;
/// Veza: the data plane has no control plane connection to verify tokens
/// with. Nothing is wrong with the token: reconnect with backoff.
pub const CHAT_UNAVAILABLE: u16 = 4005;
/// Veza: the connection's send queue passed its hard bound because the client
/// did not read fast enough. Nothing persisted is lost: reconnect and resume.
pub const SEND_QUEUE_OVERFLOW: u16 = 4008;
/// Veza: the peer stopped answering pings within the configured timeout.
pub const PING_TIMEOUT: u16 = 4009;

/// Whether `code` may appear in a close frame on the wire (RFC 6455 §7.4.1–2).
///
/// 1005, 1006 and 1015 are reserved for local use; 1004 and 1016–2999 are
/// reserved for future use; 3000–4999 belong to registered and private use.
pub fn is_valid_on_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_codes_are_not_valid_on_the_wire() {
        for code in [0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 2999, 5000] {
            assert!(!is_valid_on_wire(code), "{code} must be refused");
        }
    }

    #[test]
    fn codes_veza_sends_are_valid_on_the_wire() {
        for code in [
            NORMAL,
            GOING_AWAY,
            PROTOCOL_ERROR,
            UNSUPPORTED_DATA,
            INVALID_PAYLOAD,
            POLICY_VIOLATION,
            MESSAGE_TOO_BIG,
            INTERNAL_ERROR,
            AUTH_FAILED,
            TOKEN_EXPIRED,
            TOKEN_REVOKED,
            AUTH_TIMEOUT,
            CHAT_UNAVAILABLE,
            SEND_QUEUE_OVERFLOW,
            PING_TIMEOUT,
        ] {
            assert!(is_valid_on_wire(code), "{code} must be sendable");
        }
    }
}
