//! [`ErrorCode`], the code of every `Error` reply, and [`DecodeError`], why a
//! frame's bytes could not be decoded.

/// The code of an `Error` reply (u16 on the wire). The set is closed: a
/// frame carrying any other code is malformed. No error code closes the
/// connection; conditions that do are close codes
/// ([`crate::close_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame could not be decoded (truncated, trailing bytes, invalid
    /// UTF-8, a bool not 0 or 1, an unknown enumeration byte).
    Malformed = 1,
    /// The frame's opcode is not a client command.
    UnknownOpcode = 2,
    /// A command other than `Auth` came before a successful `Auth`.
    NotAuthenticated = 3,
    /// `Auth` came on a connection that is already authenticated.
    AlreadyAuthenticated = 4,
    /// The user has no permission for this room or action.
    Forbidden = 5,
    /// The room or message does not exist (or the user may not know of it).
    NotFound = 6,
    /// The connection's rate limit is exhausted; `retry_after_ms` says when
    /// to retry.
    RateLimited = 7,
    /// The room's slow mode forbids another message yet; `retry_after_ms`
    /// says when to retry.
    SlowMode = 8,
    /// The user is muted in the room; `retry_after_ms` is the time until the
    /// mute ends, 0 if it has no end.
    Muted = 9,
    /// The message body is over `AuthOk::message_bytes_max`.
    TooLarge = 10,
    /// Persistence or the control plane is unavailable; the command had no
    /// effect; `retry_after_ms` says when to retry.
    Unavailable = 11,
    /// A value is refused: an empty body, a bad seq, too many mentions, a
    /// nonce or emoji too long, a history limit of 0 or over the maximum.
    Invalid = 12,
    /// The connection already holds the most subscriptions allowed.
    TooManySubscriptions = 13,
    /// The server hit an unexpected condition.
    Internal = 14,
}

impl ErrorCode {
    /// Every code, in wire-value order.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::Malformed,
        ErrorCode::UnknownOpcode,
        ErrorCode::NotAuthenticated,
        ErrorCode::AlreadyAuthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::RateLimited,
        ErrorCode::SlowMode,
        ErrorCode::Muted,
        ErrorCode::TooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Invalid,
        ErrorCode::TooManySubscriptions,
        ErrorCode::Internal,
    ];

    /// The code with wire value `value`, if there is one.
    pub fn from_u16(value: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|code| *code as u16 == value)
    }

    /// The stable snake-case name, for logs, metrics and documents.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownOpcode => "unknown_opcode",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::SlowMode => "slow_mode",
            ErrorCode::Muted => "muted",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Invalid => "invalid",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::Internal => "internal",
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code as u16
    }
}

/// Why a frame's bytes could not be decoded. The server answers it with an
/// `Error` reply carrying the same `request_id`, `code` and, as message,
/// `detail`; the connection continues.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", .code.name())]
pub struct DecodeError {
    /// The frame's request id when the opcode and the 4 bytes after it were
    /// present (and the opcode is not an event's), else 0.
    pub request_id: u32,
    /// [`ErrorCode::Malformed`] or [`ErrorCode::UnknownOpcode`].
    pub code: ErrorCode,
    /// What was wrong, as a short sentence.
    pub detail: &'static str,
}

impl DecodeError {
    /// A malformed frame.
    pub(crate) fn malformed(request_id: u32, detail: &'static str) -> Self {
        Self {
            request_id,
            code: ErrorCode::Malformed,
            detail,
        }
    }

    /// A frame whose opcode is not one the decoder knows.
    pub(crate) fn unknown_opcode(request_id: u32) -> Self {
        Self {
            request_id,
            code: ErrorCode::UnknownOpcode,
            detail: "unknown opcode",
        }
    }
}
