//! Signed audio URLs: `/v1/tracks/{id}/audio?exp={unix_s}&kid={kid}&sig={sig}`
//! where `sig` is the base64url (no padding) Ed25519 signature, by the
//! access-token signing key named `kid`, over the ASCII bytes of
//! [`signed_url_message`]. The data plane checks them with the public keys
//! it already receives (`FetchSigningKeys`, `SigningKeysChanged`), so no new
//! secret is shared; a rotated key keeps verifying until it is dropped.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::{Signer as _, SigningKey};

use crate::error::ApiError;
use crate::state::AppState;

/// The bytes a signed URL's signature covers:
/// `veza-track-url:{track_id}:{expires_at_unix_s}` (decimal, ASCII). The
/// prefix keeps a URL signature from ever being mistaken for a token's.
pub fn signed_url_message(track_id: i64, expires_at_unix_s: i64) -> String {
    format!("veza-track-url:{track_id}:{expires_at_unix_s}")
}

/// Signs the URL of `track_id` expiring at `expires_at_unix_s` with the
/// current signing key; returns the key id and the base64url signature.
///
/// The private key is read from its file (`signing-keys/{kid}.key`): the
/// accounts area keeps its key ring to itself, and a signed URL is rare
/// enough that one small read per request costs nothing. A rotation between
/// reading the kid and the file is harmless: the retired key's file stays
/// until its tokens expire, and the data plane accepts it until then.
pub async fn sign(
    state: &AppState,
    track_id: i64,
    expires_at_unix_s: i64,
) -> Result<(String, String), ApiError> {
    let kid = state.auth.active_kid();
    // The layout of `accounts::signing_keys` (private to accounts):
    // `{data_dir}/signing-keys/{kid}.key`, PKCS#8 DER.
    let path = state
        .config
        .data_dir()
        .join("signing-keys")
        .join(format!("{kid}.key"));
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|error| ApiError::internal(format!("signing key {}: {error}", path.display())))?;
    let key = SigningKey::from_pkcs8_der(&bytes)
        .map_err(|error| ApiError::internal(format!("signing key {kid}: {error}")))?;
    let signature = key.sign(signed_url_message(track_id, expires_at_unix_s).as_bytes());
    Ok((kid, URL_SAFE_NO_PAD.encode(signature.to_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_track_and_the_expiry() {
        assert_eq!(
            signed_url_message(42, 1_700_000_000),
            "veza-track-url:42:1700000000"
        );
    }
}
