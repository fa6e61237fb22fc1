//! Access tokens: EdDSA (Ed25519) JWTs signed by the control plane and
//! verified by data planes.
//!
//! A token is `base64url(header) . base64url(claims) . base64url(signature)`
//! (RFC 7519 with RFC 8037's `EdDSA`), header
//! `{"alg":"EdDSA","typ":"JWT","kid":"<key id>"}`, claims
//! [`AccessTokenClaims`]. The control plane signs with [`sign`]; whoever
//! holds the public keys (from the control protocol) checks with [`verify`].
//!
//! [`verify`] sits on the data plane's hot path, so it decodes into stack
//! buffers, checks one signature and parses the claims once; it allocates
//! only the claims' strings. It trusts nothing before the signature holds:
//! the header is read only to pick the key, and only `EdDSA` is accepted
//! (so `"alg":"none"` and HMAC confusion cannot happen). Time is an argument
//! (no clock is read here), so tests and callers decide what "now" is.

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The only algorithm signed and accepted.
pub const ALGORITHM: &str = "EdDSA";

/// Longest token accepted; longer input is refused before any decoding.
pub const TOKEN_BYTES_MAX: usize = 2048;

/// Longest encoded header accepted (a header is about 70 bytes).
const HEADER_ENCODED_BYTES_MAX: usize = 340;

/// Longest encoded claims accepted.
const CLAIMS_ENCODED_BYTES_MAX: usize = 1200;

/// An Ed25519 signature is 64 bytes, 86 characters of unpadded base64url.
const SIGNATURE_ENCODED_BYTES: usize = 86;

/// How far in the future `iat` may be before the token is refused: clocks of
/// the control plane and of data planes may differ by this much.
pub const CLOCK_SKEW_SECONDS_MAX: i64 = 60;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// The user id as a string (the registered JWT subject); equals `uid`.
    pub sub: String,
    /// The user id.
    pub uid: i64,
    /// The username at issue time.
    pub name: String,
    /// Whether the user is an instance admin.
    pub adm: bool,
    /// The login session (refresh-token family) the token belongs to.
    pub sid: i64,
    /// The token id, unique per token; revocations name it.
    pub jti: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds (the token is refused from this second on).
    pub exp: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, bad JSON, missing claims, too long.
    #[error("the token is malformed")]
    Malformed,
    /// The header names a key id that is not (or no longer) known.
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    /// The signature does not match the header and claims.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `iat` is further in the future than clock skew explains.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The header's `alg` is not `EdDSA` (for example `none` or `HS256`).
    #[error("the token's algorithm is not EdDSA")]
    WrongAlgorithm,
}

impl TokenError {
    /// A stable snake-case name, for error bodies and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            TokenError::Malformed => "token_malformed",
            TokenError::UnknownKey => "token_unknown_key",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::WrongAlgorithm => "token_wrong_algorithm",
        }
    }
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

#[derive(Deserialize)]
struct HeaderIn<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow)]
    kid: Cow<'a, str>,
    /// RFC 7515 §4.1.11: a token with critical extensions we do not
    /// understand must be refused.
    crit: Option<serde::de::IgnoredAny>,
}

/// Signs `claims` with `key`, naming it `kid` in the header.
pub fn sign(claims: &AccessTokenClaims, kid: &str, key: &SigningKey) -> String {
    debug_assert_eq!(claims.sub, claims.uid.to_string(), "sub must equal uid");
    let header = HeaderOut {
        alg: ALGORITHM,
        typ: "JWT",
        kid,
    };
    // Serialising plain strings and integers cannot fail.
    let header_json = serde_json::to_vec(&header).expect("header serialises");
    let claims_json = serde_json::to_vec(claims).expect("claims serialise");
    let mut token = String::with_capacity(
        (header_json.len() + claims_json.len()) * 4 / 3 + SIGNATURE_ENCODED_BYTES + 8,
    );
    URL_SAFE_NO_PAD.encode_string(&header_json, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&claims_json, &mut token);
    let signature = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
    debug_assert!(
        token.len() <= TOKEN_BYTES_MAX,
        "signed token over the limit"
    );
    token
}

/// Verifies `token` at `now_unix_seconds` with the key `key_for_kid` returns
/// for the header's `kid`, and returns its claims.
pub fn verify(
    token: &str,
    key_for_kid: impl Fn(&str) -> Option<VerifyingKey>,
    now_unix_seconds: i64,
) -> Result<AccessTokenClaims, TokenError> {
    if token.len() > TOKEN_BYTES_MAX {
        return Err(TokenError::Malformed);
    }
    let (signed_part, signature_part) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (header_part, claims_part) = signed_part.split_once('.').ok_or(TokenError::Malformed)?;
    if header_part.len() > HEADER_ENCODED_BYTES_MAX || claims_part.len() > CLAIMS_ENCODED_BYTES_MAX
    {
        return Err(TokenError::Malformed);
    }

    let mut header_bytes = [0u8; HEADER_ENCODED_BYTES_MAX * 3 / 4 + 3];
    let header_length = decode(header_part, &mut header_bytes)?;
    let header: HeaderIn<'_> = serde_json::from_slice(&header_bytes[..header_length])
        .map_err(|_| TokenError::Malformed)?;
    if header.alg != ALGORITHM {
        return Err(TokenError::WrongAlgorithm);
    }
    if header.crit.is_some() {
        return Err(TokenError::Malformed);
    }
    let key = key_for_kid(&header.kid).ok_or(TokenError::UnknownKey)?;

    if signature_part.len() != SIGNATURE_ENCODED_BYTES {
        return Err(TokenError::Malformed);
    }
    let mut signature_bytes = [0u8; 66];
    if decode(signature_part, &mut signature_bytes)? != 64 {
        return Err(TokenError::Malformed);
    }
    let signature_bytes: &[u8; 64] = signature_bytes[..64].try_into().expect("64 bytes");
    key.verify_strict(
        signed_part.as_bytes(),
        &Signature::from_bytes(signature_bytes),
    )
    .map_err(|_| TokenError::BadSignature)?;

    let mut claims_bytes = [0u8; CLAIMS_ENCODED_BYTES_MAX * 3 / 4 + 3];
    let claims_length = decode(claims_part, &mut claims_bytes)?;
    let claims: AccessTokenClaims = serde_json::from_slice(&claims_bytes[..claims_length])
        .map_err(|_| TokenError::Malformed)?;
    check_claims(&claims, now_unix_seconds)?;
    Ok(claims)
}

fn decode(part: &str, out: &mut [u8]) -> Result<usize, TokenError> {
    URL_SAFE_NO_PAD
        .decode_slice(part, out)
        .map_err(|_| TokenError::Malformed)
}

fn check_claims(claims: &AccessTokenClaims, now_unix_seconds: i64) -> Result<(), TokenError> {
    if claims.sub.parse::<i64>() != Ok(claims.uid) || claims.exp <= claims.iat {
        return Err(TokenError::Malformed);
    }
    if claims.exp <= now_unix_seconds {
        return Err(TokenError::Expired);
    }
    if claims.iat > now_unix_seconds.saturating_add(CLOCK_SKEW_SECONDS_MAX) {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn claims() -> AccessTokenClaims {
        AccessTokenClaims {
            sub: "42".into(),
            uid: 42,
            name: "alice".into(),
            adm: false,
            sid: 7,
            jti: "t0k3n-id".into(),
            iat: NOW,
            exp: NOW + 900,
        }
    }

    /// Verifies with one known key, `kid` "k1" = seed 1.
    fn check(token: &str, now: i64) -> Result<AccessTokenClaims, TokenError> {
        verify(
            token,
            |kid| (kid == "k1").then(|| key(1).verifying_key()),
            now,
        )
    }

    fn forge(header: &str, claims_json: &str, signer: &SigningKey) -> String {
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims_json)
        );
        let signature = signer.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        token
    }

    #[test]
    fn a_signed_token_verifies_and_returns_its_claims() {
        let token = sign(&claims(), "k1", &key(1));
        assert_eq!(check(&token, NOW + 1), Ok(claims()));
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        assert_eq!(header, br#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#);
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let token = sign(&claims(), "k1", &key(1));
        let mut admin = claims();
        admin.adm = true;
        let forged_claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin).unwrap());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(check(&forged, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let token = sign(&claims(), "k1", &key(1));
        for index in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            if changed != token {
                assert!(check(&changed, NOW).is_err(), "change at {index} accepted");
            }
        }
    }

    #[test]
    fn a_token_signed_by_another_key_under_our_kid_is_refused() {
        let token = sign(&claims(), "k1", &key(2));
        assert_eq!(check(&token, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn an_unknown_kid_is_refused() {
        let token = sign(&claims(), "k9", &key(1));
        assert_eq!(check(&token, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn expiry_is_exclusive_and_iat_allows_clock_skew() {
        let token = sign(&claims(), "k1", &key(1));
        assert!(check(&token, NOW + 899).is_ok());
        assert_eq!(check(&token, NOW + 900), Err(TokenError::Expired));
        assert!(check(&token, NOW - CLOCK_SKEW_SECONDS_MAX).is_ok());
        assert_eq!(
            check(&token, NOW - CLOCK_SKEW_SECONDS_MAX - 1),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn alg_none_and_hmac_are_refused_before_any_key_is_used() {
        let payload = serde_json::to_string(&claims()).unwrap();
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode(&payload)
        );
        assert_eq!(check(&unsigned, NOW), Err(TokenError::WrongAlgorithm));
        let hmac = forge(r#"{"alg":"HS256","kid":"k1"}"#, &payload, &key(1));
        assert_eq!(check(&hmac, NOW), Err(TokenError::WrongAlgorithm));
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let payload = serde_json::to_string(&claims()).unwrap();
        let token = forge(
            r#"{"alg":"EdDSA","kid":"k1","crit":["x"]}"#,
            &payload,
            &key(1),
        );
        assert_eq!(check(&token, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn signed_but_inconsistent_claims_are_malformed() {
        let header = r#"{"alg":"EdDSA","kid":"k1"}"#;
        for claims_json in [
            r#"{"sub":"1","uid":2,"name":"a","adm":false,"sid":1,"jti":"j","iat":1,"exp":2}"#,
            r#"{"sub":"1","uid":1,"name":"a","adm":false,"sid":1,"jti":"j","iat":5,"exp":5}"#,
            r#"{"sub":"1","uid":1}"#,
            r#"[1,2,3]"#,
        ] {
            let token = forge(header, claims_json, &key(1));
            assert_eq!(
                check(&token, 1),
                Err(TokenError::Malformed),
                "{claims_json}"
            );
        }
    }

    #[test]
    fn garbage_is_malformed_and_never_panics() {
        let long = "a".repeat(TOKEN_BYTES_MAX + 1);
        let valid = sign(&claims(), "k1", &key(1));
        let truncated = &valid[..valid.len() - 2];
        for input in [
            "",
            ".",
            "..",
            "abc",
            "a.b",
            "a.b.c",
            "!!!.???.***",
            "eyJhbGciOiJFZERTQSJ9..",
            "eyJhbGciOiJFZERTQSJ9.e30.e30",
            long.as_str(),
            truncated,
        ] {
            assert!(check(input, NOW).is_err(), "{input:?} accepted");
        }
        assert_eq!(check("a.b.c", NOW), Err(TokenError::Malformed));
    }
}
