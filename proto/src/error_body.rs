//! The JSON body of every HTTP error Veza answers:
//! `{"error": "header_too_large", "detail": "request head exceeds 8192 bytes"}`.
//!
//! `error` is a stable machine-readable name (snake case); `detail` is a
//! human-readable sentence that may change between releases.

use serde::{Deserialize, Serialize};

/// An HTTP error response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable error name, for example `body_too_large`.
    pub error: String,
    /// Human-readable explanation.
    pub detail: String,
}

impl ErrorBody {
    /// Builds a body from a stable name and a detail sentence.
    pub fn new(error: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            detail: detail.into(),
        }
    }

    /// Serialises the body to JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising two strings cannot fail.
        serde_json::to_vec(self).expect("ErrorBody serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trips_with_escaping() {
        let body = ErrorBody::new("bad_request", "header \"x\" has a\nnewline");
        let json = body.to_json();
        let back: ErrorBody = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, body);
        assert!(json.starts_with(b"{\"error\":\"bad_request\""));
    }
}
