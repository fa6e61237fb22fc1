//! Incremental UTF-8 validation for text messages that arrive in fragments.
//!
//! A fragment boundary may fall inside a character, so the validator keeps
//! the incomplete trailing sequence (at most three bytes) from one fragment
//! and completes it with the first bytes of the next. It fails as soon as the
//! bytes seen so far can no longer be the start of valid UTF-8 (Autobahn
//! 6.x "fail fast"): `simdutf8::compat` tells an invalid sequence
//! (`error_len() == Some(_)`) from one that is merely cut off at the end
//! (`error_len() == None`), exactly as `std::str::from_utf8` does.

use simdutf8::compat::from_utf8;

/// The longest UTF-8 sequence.
const SEQUENCE_BYTES_MAX: usize = 4;

/// Why bytes are not valid UTF-8.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum Utf8Error {
    /// A byte sequence that no continuation can make valid.
    #[error("invalid UTF-8 sequence")]
    InvalidSequence,
    /// The text ended inside a multi-byte character.
    #[error("text ends inside a UTF-8 sequence")]
    IncompleteSequence,
}

/// Incremental UTF-8 validator for text messages split across fragments:
/// carries an incomplete trailing sequence (at most 3 bytes) from one call to
/// the next; fails as soon as bytes can no longer be valid.
///
/// After an error the validator is reset, ready for a new text.
#[derive(Debug, Default)]
pub struct Utf8Validator {
    /// The start of a character cut off at the end of the last fed bytes.
    pending: [u8; SEQUENCE_BYTES_MAX],
    /// How many bytes of `pending` are in use (0 to 3).
    pending_bytes: usize,
}

impl Utf8Validator {
    /// A validator at the start of a text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece of the text.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Utf8Error> {
        let result = self.feed_inner(bytes);
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// Ends the text: an error if it stopped inside a character. Resets the
    /// validator either way.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let pending_bytes = self.pending_bytes;
        self.reset();
        if pending_bytes == 0 {
            Ok(())
        } else {
            Err(Utf8Error::IncompleteSequence)
        }
    }

    /// Forgets any pending partial character, ready for a new text.
    pub fn reset(&mut self) {
        self.pending_bytes = 0;
    }

    fn feed_inner(&mut self, bytes: &[u8]) -> Result<(), Utf8Error> {
        let bytes = self.complete_pending(bytes)?;
        match from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(error) if error.error_len().is_some() => Err(Utf8Error::InvalidSequence),
            Err(error) => {
                // Only a valid prefix of one character is left over, so it
                // is shorter than a whole sequence.
                let tail = &bytes[error.valid_up_to()..];
                debug_assert!(tail.len() < SEQUENCE_BYTES_MAX);
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_bytes = tail.len();
                Ok(())
            }
        }
    }

    /// Completes the pending character with the first bytes of `bytes` and
    /// returns the bytes after it. If `bytes` is too short to complete it,
    /// keeps them all as pending and returns an empty slice.
    fn complete_pending<'a>(&mut self, bytes: &'a [u8]) -> Result<&'a [u8], Utf8Error> {
        if self.pending_bytes == 0 {
            return Ok(bytes);
        }
        let borrowed_bytes = bytes.len().min(SEQUENCE_BYTES_MAX - self.pending_bytes);
        let mut joined = self.pending;
        joined[self.pending_bytes..self.pending_bytes + borrowed_bytes]
            .copy_from_slice(&bytes[..borrowed_bytes]);
        let joined_bytes = self.pending_bytes + borrowed_bytes;
        let valid_bytes = match from_utf8(&joined[..joined_bytes]) {
            Ok(_) => joined_bytes,
            Err(error) if error.error_len().is_some() => return Err(Utf8Error::InvalidSequence),
            Err(error) => error.valid_up_to(),
        };
        if valid_bytes <= self.pending_bytes {
            // Still inside the same character: every byte so far is a valid
            // prefix of it, and `bytes` has nothing after it.
            self.pending = joined;
            self.pending_bytes = joined_bytes;
            debug_assert!(self.pending_bytes < SEQUENCE_BYTES_MAX);
            return Ok(&[]);
        }
        let consumed_bytes = valid_bytes - self.pending_bytes;
        self.pending_bytes = 0;
        Ok(&bytes[consumed_bytes..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `bytes` one byte at a time and expects the first error at
    /// `failing_byte_idx` (`None`: every byte is accepted).
    fn check_fails_at(bytes: &[u8], failing_byte_idx: Option<usize>) {
        let mut validator = Utf8Validator::new();
        for (byte_idx, byte) in bytes.iter().enumerate() {
            let result = validator.feed(std::slice::from_ref(byte));
            if Some(byte_idx) == failing_byte_idx {
                assert_eq!(result, Err(Utf8Error::InvalidSequence), "{bytes:02x?}");
                return;
            }
            assert_eq!(result, Ok(()), "byte {byte_idx} of {bytes:02x?}");
        }
        assert_eq!(failing_byte_idx, None, "{bytes:02x?} was accepted");
    }

    /// Feeds `text` in the given pieces and expects `expected` from `finish`.
    fn check_pieces(pieces: &[&[u8]], expected: Result<(), Utf8Error>) {
        let mut validator = Utf8Validator::new();
        for piece in pieces {
            validator
                .feed(piece)
                .expect("every piece is a valid prefix");
        }
        assert_eq!(validator.finish(), expected, "{pieces:02x?}");
    }

    #[test]
    fn valid_text_split_at_every_byte_position_is_accepted() {
        let text = "κόσμε a € 😀 \u{10FFFF} end".as_bytes();
        for split_idx in 0..=text.len() {
            let (head, tail) = text.split_at(split_idx);
            check_pieces(&[head, tail], Ok(()));
        }
        for first_split_idx in 0..=text.len() {
            for second_split_idx in first_split_idx..=text.len() {
                check_pieces(
                    &[
                        &text[..first_split_idx],
                        &text[first_split_idx..second_split_idx],
                        &text[second_split_idx..],
                    ],
                    Ok(()),
                );
            }
        }
    }

    #[test]
    fn invalid_sequences_fail_at_the_first_impossible_byte() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"plain ascii", None),
            ("😀€é".as_bytes(), None),
            // Autobahn 6.4.1: a UTF-16 surrogate (U+D800) after valid text.
            (
                b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
                Some(12),
            ),
            // Above U+10FFFF: F4 90 is already impossible.
            (b"\xf4\x90\x80\x80", Some(1)),
            // C0 and C1 only ever start overlong encodings.
            (b"\xc0\xaf", Some(0)),
            (b"\xc1\xbf", Some(0)),
            // Overlong three-byte form of '/'.
            (b"\xe0\x80\xaf", Some(1)),
            // Bytes that never appear in UTF-8.
            (b"a\xf5", Some(1)),
            (b"ab\xff", Some(2)),
            // A continuation byte with no lead byte.
            (b"\x80", Some(0)),
            // A lead byte followed by ASCII instead of a continuation.
            (b"\xc2A", Some(1)),
            (b"\xf0\x9f\x98A", Some(3)),
        ];
        for (bytes, failing_byte_idx) in cases {
            check_fails_at(bytes, *failing_byte_idx);
        }
    }

    #[test]
    fn text_ending_inside_a_character_fails_at_finish() {
        check_pieces(&[b"ok \xe2\x82"], Err(Utf8Error::IncompleteSequence));
        check_pieces(
            &[b"\xf0", b"\x9f", b"\x98"],
            Err(Utf8Error::IncompleteSequence),
        );
        check_pieces(&[b"\xf0", b"\x9f", b"\x98", b"\x80"], Ok(()));
        check_pieces(&[], Ok(()));
        check_pieces(&[b"", b""], Ok(()));
    }

    #[test]
    fn the_validator_is_ready_for_a_new_text_after_finish_or_error() {
        let mut validator = Utf8Validator::new();
        validator.feed(b"\xe2\x82").unwrap();
        assert!(validator.finish().is_err());
        assert_eq!(validator.feed(b"\xac"), Err(Utf8Error::InvalidSequence));
        validator.feed(b"fresh \xe2").unwrap();
        assert_eq!(validator.feed(b"\xff"), Err(Utf8Error::InvalidSequence));
        validator.feed(b"fresh again").unwrap();
        assert_eq!(validator.finish(), Ok(()));
    }

    proptest! {
        #[test]
        fn agrees_with_std_on_arbitrary_bytes_in_arbitrary_pieces(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(0x80u8), Just(0xe2u8), Just(0xf0u8)],
                0..64,
            ),
            split_idxs in proptest::collection::vec(0usize..64, 0..8),
        ) {
            let mut split_idxs: Vec<usize> =
                split_idxs.into_iter().map(|idx| idx.min(bytes.len())).collect();
            split_idxs.sort_unstable();
            let mut validator = Utf8Validator::new();
            let mut start = 0;
            let mut result = Ok(());
            for end in split_idxs.into_iter().chain([bytes.len()]) {
                result = validator.feed(&bytes[start..end]);
                start = end;
                // Fail fast, and only then: a piece is refused exactly when
                // the text up to its end can no longer become valid.
                let prefix_is_impossible = std::str::from_utf8(&bytes[..end])
                    .is_err_and(|error| error.error_len().is_some());
                prop_assert_eq!(result.is_err(), prefix_is_impossible);
                if result.is_err() {
                    break;
                }
            }
            let result = result.and_then(|()| validator.finish());
            prop_assert_eq!(result.is_ok(), std::str::from_utf8(&bytes).is_ok());
        }

        #[test]
        fn valid_strings_in_arbitrary_pieces_are_accepted(
            text in "\\PC{0,40}",
            split_idxs in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let bytes = text.as_bytes();
            let mut split_idxs: Vec<usize> =
                split_idxs.into_iter().map(|idx| idx.min(bytes.len())).collect();
            split_idxs.sort_unstable();
            let mut validator = Utf8Validator::new();
            let mut start = 0;
            for end in split_idxs.into_iter().chain([bytes.len()]) {
                prop_assert_eq!(validator.feed(&bytes[start..end]), Ok(()));
                start = end;
            }
            prop_assert_eq!(validator.finish(), Ok(()));
        }
    }
}
