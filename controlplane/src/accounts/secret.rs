//! Random secrets and their stored form: refresh tokens, API keys, backup
//! codes and token ids are random bytes shown once and stored as SHA-256.
//! A plain hash suffices (unlike passwords) because each secret carries at
//! least 80 random bits: there is nothing to guess from a dictionary.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// Prefix of refresh tokens, so that secret scanners recognise them.
pub const REFRESH_TOKEN_PREFIX: &str = "vzr_";

/// Prefix of API keys.
pub const API_KEY_PREFIX: &str = "vzk_";

/// Random bytes in a refresh token or API key (256 bits).
const TOKEN_RANDOM_BYTES: usize = 32;

/// `count` random bytes from the operating system.
pub fn random_bytes(count: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; count];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// `prefix` followed by 256 random bits in base64url.
pub fn random_token(prefix: &str) -> String {
    let mut token = String::with_capacity(prefix.len() + 43);
    token.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(random_bytes(TOKEN_RANDOM_BYTES), &mut token);
    token
}

/// A random access-token id (128 bits, base64url).
pub fn random_token_id() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(16))
}

/// The stored form of a secret.
pub fn sha256(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Alphabet of backup codes: lower-case letters and digits without the
/// look-alikes 0, 1, l and o (32 symbols, 5 bits each).
const BACKUP_CODE_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// A backup code: 16 symbols (80 bits) shown as `xxxx-xxxx-xxxx-xxxx`.
pub fn random_backup_code() -> String {
    let bytes = random_bytes(16);
    let mut code = String::with_capacity(19);
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 && index % 4 == 0 {
            code.push('-');
        }
        code.push(char::from(BACKUP_CODE_ALPHABET[usize::from(byte & 31)]));
    }
    code
}

/// The form a backup code is hashed in: without separators or spaces, lower
/// case, so that `ABCD-EFGH...` and `abcdefgh...` are the same code.
pub fn normalize_backup_code(code: &str) -> String {
    code.chars()
        .filter(|character| !matches!(character, '-' | ' '))
        .map(|character| character.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_prefix_and_256_bits() {
        let token = random_token(API_KEY_PREFIX);
        assert!(token.starts_with("vzk_"));
        assert_eq!(URL_SAFE_NO_PAD.decode(&token[4..]).unwrap().len(), 32);
        assert_ne!(token, random_token(API_KEY_PREFIX));
    }

    #[test]
    fn backup_codes_normalise_to_sixteen_symbols() {
        let code = random_backup_code();
        assert_eq!(code.len(), 19);
        assert_eq!(code.matches('-').count(), 3);
        let normalized = normalize_backup_code(&code.to_uppercase());
        assert_eq!(normalized.len(), 16);
        assert_eq!(normalized, code.replace('-', ""));
    }
}
