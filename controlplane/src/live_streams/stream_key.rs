//! Stream keys: `vzs_` followed by 32 random bytes (OsRng) in base64url
//! without padding. The prefix makes a leaked key greppable by secret
//! scanners; the stored form is the lower-case hex SHA-256, and a presented
//! key is checked against it in constant time.

use sha2::{Digest as _, Sha256};

use crate::accounts::secret;

/// Prefix of stream keys.
pub const STREAM_KEY_PREFIX: &str = "vzs_";

/// A new stream key (256 random bits).
pub fn generate() -> String {
    secret::random_token(STREAM_KEY_PREFIX)
}

/// The stored form of `key`: its SHA-256 as 64 lower-case hex digits. A plain
/// hash suffices (unlike passwords) because a key carries 256 random bits:
/// there is nothing to guess from a dictionary.
pub fn hash(key: &str) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Whether `presented` is the key whose stored form is `stored_hash`. The
/// comparison takes the same time wherever the hashes differ, so timing does
/// not tell a guesser how much of a hash it got right.
pub fn matches(presented: &str, stored_hash: &str) -> bool {
    let presented_hash = hash(presented);
    let (left, right) = (presented_hash.as_bytes(), stored_hash.as_bytes());
    left.len() == right.len()
        && std::hint::black_box(
            left.iter()
                .zip(right)
                .fold(0u8, |difference, (x, y)| difference | (x ^ y)),
        ) == 0
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    use super::*;

    #[test]
    fn keys_carry_the_prefix_and_256_random_bits() {
        let key = generate();
        assert!(key.starts_with("vzs_"), "{key}");
        let random = URL_SAFE_NO_PAD.decode(&key[4..]).unwrap();
        assert_eq!(random.len(), 32);
        assert_ne!(key, generate());
    }

    #[test]
    fn the_stored_form_is_sha256_hex_and_only_the_key_matches_it() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let key = generate();
        let stored = hash(&key);
        assert!(matches(&key, &stored));
        assert!(!matches(&generate(), &stored));
        assert!(!matches("", &stored));
        assert!(!matches(&key, ""));
        assert!(!matches(&key, &stored.to_uppercase()));
    }
}
