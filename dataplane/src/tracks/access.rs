//! Who may hear a track, decided on the shard without a round trip, and
//! which files of the media directory a track may name.
//!
//! - Public: anyone.
//! - Unlisted: the link's secret (`?s=`, compared in constant time), the
//!   owner's bearer token or a signed URL.
//! - Private: the owner's bearer token, or a signed URL
//!   `?exp={unix_s}&kid={kid}&sig={base64url, no padding}` whose signature
//!   is an Ed25519 signature by the control plane's signing key `kid` over
//!   the ASCII bytes `veza-track-url:{track_id}:{exp}`.
//!
//! Anything else is answered 404 like a missing track, so private tracks
//! are not revealed; only a signed URL that verifies but expired, or one
//! whose signature does not verify, is answered 403.

use std::path::{Component, Path, PathBuf};

use base64::Engine;
use veza_proto::control::{TrackMeta, TrackVisibility};

/// What a request carries that may grant access.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `?s=`.
    pub link_secret: Option<String>,
    /// The user id of a verified bearer token.
    pub token_user_id: Option<i64>,
    /// `?exp=&kid=&sig=`.
    pub signed_url: Option<SignedUrl>,
}

/// The signed-URL parameters of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    /// Expiry, Unix seconds.
    pub expires_unix_s: i64,
    /// The signing key's id.
    pub kid: String,
    /// The signature, base64url without padding.
    pub signature: String,
}

/// The answer of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Serve it.
    Granted,
    /// 404, as if the track did not exist.
    Hidden,
    /// 403: a signed URL that verified but expired.
    SignedUrlExpired,
    /// 403: a signed URL whose signature does not verify.
    SignedUrlInvalid,
}

/// The bytes a signed URL's signature covers.
pub fn signed_url_message(track_id: i64, expires_unix_s: i64) -> String {
    format!("veza-track-url:{track_id}:{expires_unix_s}")
}

/// Decides access to `meta` for `credentials` at `now_unix_s`;
/// `key_of(kid)` gives the control plane's public key `kid`.
pub fn decide(
    meta: &TrackMeta,
    credentials: &Credentials,
    now_unix_s: i64,
    key_of: impl Fn(&str) -> Option<ed25519_dalek::VerifyingKey>,
) -> Access {
    if meta.visibility == TrackVisibility::Public
        || credentials.token_user_id == Some(meta.owner_user_id)
    {
        return Access::Granted;
    }
    if meta.visibility == TrackVisibility::Unlisted {
        let secret_matches = credentials.link_secret.as_deref().is_some_and(|secret| {
            !meta.link_secret.is_empty()
                && constant_time_eq(secret.as_bytes(), meta.link_secret.as_bytes())
        });
        if secret_matches {
            return Access::Granted;
        }
    }
    let Some(signed) = &credentials.signed_url else {
        return Access::Hidden;
    };
    if !signature_verifies(meta.track_id, signed, key_of) {
        return Access::SignedUrlInvalid;
    }
    if signed.expires_unix_s < now_unix_s {
        return Access::SignedUrlExpired;
    }
    Access::Granted
}

fn signature_verifies(
    track_id: i64,
    signed: &SignedUrl,
    key_of: impl Fn(&str) -> Option<ed25519_dalek::VerifyingKey>,
) -> bool {
    let Some(key) = key_of(&signed.kid) else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&signed.signature)
    else {
        return false;
    };
    let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else {
        return false;
    };
    let message = signed_url_message(track_id, signed.expires_unix_s);
    key.verify_strict(message.as_bytes(), &signature).is_ok()
}

/// Compares without an early exit, so the time taken does not tell how
/// many leading bytes of a guessed secret were right. (The length may
/// leak; secrets have a fixed length.)
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b));
    std::hint::black_box(difference) == 0
}

/// Why a relative path from the control plane was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused media path {path:?}: {reason}")]
pub struct MediaPathError {
    /// The path as received.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Joins `relative` to `media_dir` after checking that it cannot leave it:
/// not empty, no NUL, not absolute, only normal components (no `..`, no
/// `.`). The control plane never sends such paths; one that does is a bug
/// there, answered 500 and logged.
pub fn media_path(media_dir: &Path, relative: &str) -> Result<PathBuf, MediaPathError> {
    let refuse = |reason| MediaPathError {
        path: relative.to_owned(),
        reason,
    };
    if relative.is_empty() {
        return Err(refuse("it is empty"));
    }
    if relative.contains('\0') {
        return Err(refuse("it contains NUL"));
    }
    let path = Path::new(relative);
    for component in path.components() {
        match component {
            Component::Normal(_) => {}
            Component::ParentDir => return Err(refuse("it contains ..")),
            Component::RootDir | Component::Prefix(_) => return Err(refuse("it is absolute")),
            Component::CurDir => return Err(refuse("it contains .")),
        }
    }
    Ok(media_dir.join(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer;

    const OWNER: i64 = 7;
    const NOW_UNIX_S: i64 = 1_700_000_000;

    fn meta(visibility: TrackVisibility) -> TrackMeta {
        TrackMeta {
            track_id: 42,
            owner_user_id: OWNER,
            visibility,
            link_secret: if visibility == TrackVisibility::Unlisted {
                "s3cret-link".into()
            } else {
                String::new()
            },
            renditions: Vec::new(),
            waveform_relative_path: "tracks/42/waveform.json".into(),
            duration_ms: 1000,
        }
    }

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[9; 32])
    }

    fn signed(track_id: i64, expires_unix_s: i64, kid: &str) -> SignedUrl {
        let signature = key().sign(signed_url_message(track_id, expires_unix_s).as_bytes());
        SignedUrl {
            expires_unix_s,
            kid: kid.into(),
            signature: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(signature.to_bytes()),
        }
    }

    /// `credentials` is a space-separated list of `secret=..`, `user=N`,
    /// `signed`, `signed-expired`, `signed-other-track`, `signed-unknown-kid`,
    /// `signed-tampered`.
    fn check(visibility: TrackVisibility, credentials: &str, expect: Access) {
        let mut given = Credentials::default();
        for word in credentials.split_whitespace() {
            match word.split_once('=') {
                Some(("secret", secret)) => given.link_secret = Some(secret.into()),
                Some(("user", user)) => given.token_user_id = Some(user.parse().unwrap()),
                _ => {
                    given.signed_url = Some(match word {
                        "signed" => signed(42, NOW_UNIX_S + 60, "k1"),
                        "signed-expired" => signed(42, NOW_UNIX_S - 1, "k1"),
                        "signed-other-track" => signed(43, NOW_UNIX_S + 60, "k1"),
                        "signed-unknown-kid" => signed(42, NOW_UNIX_S + 60, "k2"),
                        "signed-tampered" => SignedUrl {
                            expires_unix_s: NOW_UNIX_S + 3600,
                            ..signed(42, NOW_UNIX_S + 60, "k1")
                        },
                        other => panic!("unknown credential {other}"),
                    })
                }
            }
        }
        let key_of = |kid: &str| (kid == "k1").then(|| key().verifying_key());
        let actual = decide(&meta(visibility), &given, NOW_UNIX_S, key_of);
        assert_eq!(actual, expect, "{visibility:?} with {credentials:?}");
    }

    #[test]
    fn public_tracks_are_for_everyone() {
        check(TrackVisibility::Public, "", Access::Granted);
        check(TrackVisibility::Public, "user=99", Access::Granted);
    }

    #[test]
    fn unlisted_tracks_need_the_link_secret() {
        use TrackVisibility::Unlisted;
        check(Unlisted, "secret=s3cret-link", Access::Granted);
        check(Unlisted, "", Access::Hidden);
        check(Unlisted, "secret=s3cret-lin", Access::Hidden);
        check(Unlisted, "secret=s3cret-linK", Access::Hidden);
        check(Unlisted, "user=99", Access::Hidden);
        check(Unlisted, "user=7", Access::Granted);
        check(Unlisted, "signed", Access::Granted);
    }

    #[test]
    fn private_tracks_need_the_owner_or_a_signed_url() {
        use TrackVisibility::Private;
        check(Private, "", Access::Hidden);
        check(Private, "user=7", Access::Granted);
        check(Private, "user=99", Access::Hidden);
        check(Private, "secret=", Access::Hidden);
        check(Private, "signed", Access::Granted);
        check(Private, "user=99 signed", Access::Granted);
        check(Private, "signed-expired", Access::SignedUrlExpired);
        check(Private, "signed-other-track", Access::SignedUrlInvalid);
        check(Private, "signed-unknown-kid", Access::SignedUrlInvalid);
        check(Private, "signed-tampered", Access::SignedUrlInvalid);
    }

    #[test]
    fn an_unlisted_track_without_a_secret_opens_for_no_empty_secret() {
        let mut track = meta(TrackVisibility::Unlisted);
        track.link_secret.clear();
        let given = Credentials {
            link_secret: Some(String::new()),
            ..Credentials::default()
        };
        assert_eq!(decide(&track, &given, NOW_UNIX_S, |_| None), Access::Hidden);
    }

    #[test]
    fn media_paths_stay_inside_the_media_directory() {
        let media = Path::new("/srv/media");
        assert_eq!(
            media_path(media, "tracks/42/96.opus").unwrap(),
            Path::new("/srv/media/tracks/42/96.opus")
        );
        for (bad, reason) in [
            ("", "it is empty"),
            ("../etc/passwd", "it contains .."),
            ("tracks/../../etc/passwd", "it contains .."),
            ("/etc/passwd", "it is absolute"),
            ("tracks/42/\0.opus", "it contains NUL"),
            ("./tracks/42", "it contains ."),
        ] {
            assert_eq!(
                media_path(media, bad).unwrap_err().reason,
                reason,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn constant_time_comparison_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
