//! What accounts keep in memory: the signing keys, the revoked token ids,
//! the login throttle, the password hasher and the counters.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use veza_proto::access_token::{self, AccessTokenClaims, TokenError};

use super::login_throttle::{LoginThrottle, ThrottleConfig};
use super::password::PasswordHashing;
use super::signing_keys::{self, KeyError, KeyRing};
use super::AuthConfig;
use crate::config::Config;
use crate::db::{now_ms, Database};
use crate::error::ApiError;

/// A public key data planes verify access tokens with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationKey {
    /// The JWT header's `kid`.
    pub kid: String,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
    /// Unix ms after which no token it signed is valid; `None` for the
    /// active key.
    pub valid_until_ms: Option<i64>,
}

/// Revoked token ids are pruned of expired ones when the set grows past this.
const REVOKED_PRUNE_THRESHOLD: usize = 4096;

#[derive(Default)]
struct Counters {
    logins: AtomicU64,
    login_failures: AtomicU64,
    login_throttled: AtomicU64,
    refresh_token_reuses: AtomicU64,
    tokens_revoked: AtomicU64,
}

/// Accounts' shared state (inside `AppState::auth`).
pub struct AuthState {
    config: AuthConfig,
    key_directory: PathBuf,
    key_ring: RwLock<Arc<KeyRing>>,
    /// Serialises rotations.
    rotation: tokio::sync::Mutex<()>,
    /// Revoked access-token ids → their expiry (Unix ms). Holds what was
    /// revoked and has not expired, so its size is bounded by the tokens
    /// issued within one access-token lifetime.
    revoked: Mutex<HashMap<String, i64>>,
    throttle: Mutex<LoginThrottle>,
    pub(super) passwords: PasswordHashing,
    counters: Counters,
}

impl AuthState {
    /// Loads (or on first start generates) the signing keys and the revoked
    /// token ids.
    pub async fn load(config: &Config, db: &Database) -> anyhow::Result<Self> {
        let auth = config.auth.clone();
        let key_directory = signing_keys::key_directory(&config.data_dir());
        let key_ring = signing_keys::load_or_create(db, &key_directory, ttl_ms(&auth)).await?;
        let revoked: HashMap<String, i64> = super::store::active_revocations(db)
            .await?
            .into_iter()
            .collect();
        let passwords = PasswordHashing::new(&auth)?;
        let throttle = LoginThrottle::new(ThrottleConfig {
            failures_free: auth.login_failures_free,
            delay_base_ms: auth.login_delay_base_ms,
            delay_max_ms: auth.login_delay_max_ms,
            forget_ms: auth.login_failures_forget_ms,
            entries_max: auth.throttle_entries_max,
        });
        tracing::info!(kid = %key_ring.active_kid, offered = key_ring.offered.len(), revoked = revoked.len(), "signing keys loaded");
        Ok(Self {
            config: auth,
            key_directory,
            key_ring: RwLock::new(Arc::new(key_ring)),
            rotation: tokio::sync::Mutex::new(()),
            revoked: Mutex::new(revoked),
            throttle: Mutex::new(throttle),
            passwords,
            counters: Counters::default(),
        })
    }

    /// The `[auth]` section.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The public keys tokens may currently be signed with: the active key
    /// and retired keys whose tokens have not all expired.
    pub fn verification_keys(&self) -> Vec<VerificationKey> {
        let now = now_ms();
        let ttl = ttl_ms(&self.config);
        self.ring()
            .offered
            .iter()
            .filter(|(row, _)| row.valid_until_ms(ttl).is_none_or(|until| until > now))
            .map(|(row, _)| VerificationKey {
                kid: row.kid.clone(),
                public_key: row.public_key,
                valid_until_ms: row.valid_until_ms(ttl),
            })
            .collect()
    }

    /// The id of the key new tokens are signed with.
    pub fn active_kid(&self) -> String {
        self.ring().active_kid.clone()
    }

    /// Signs `claims` with the active key. Callers that hand the token to a
    /// user must also record it (see `sessions`), or it cannot be revoked.
    pub fn sign_access_token(&self, claims: &AccessTokenClaims) -> String {
        let ring = self.ring();
        access_token::sign(claims, &ring.active_kid, &ring.active_key)
    }

    /// Verifies a token's signature and times (not revocation) at `now_ms`.
    pub fn verify_access_token(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<AccessTokenClaims, TokenError> {
        let ring = self.ring();
        let ttl = ttl_ms(&self.config);
        let key_for_kid = |kid: &str| {
            ring.offered
                .iter()
                .find(|(row, _)| row.kid == kid)
                .filter(|(row, _)| row.valid_until_ms(ttl).is_none_or(|until| until > now_ms))
                .map(|(_, key)| *key)
        };
        access_token::verify(token, key_for_kid, now_ms.div_euclid(1000))
    }

    /// Makes a new active key; the previous one stays offered until its
    /// tokens expire.
    pub async fn rotate_signing_key(&self, db: &Database) -> Result<String, KeyError> {
        let _rotation = self.rotation.lock().await;
        let ring = signing_keys::create(db, &self.key_directory, ttl_ms(&self.config)).await?;
        let kid = ring.active_kid.clone();
        *self.key_ring.write().expect("key ring lock") = Arc::new(ring);
        Ok(kid)
    }

    /// Whether the access token `jti` was revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.lock().expect("revoked lock").contains_key(jti)
    }

    /// Remembers revoked tokens (after their revocation was committed).
    pub fn note_revoked(&self, tokens: &[(String, i64)]) {
        let now = now_ms();
        let mut revoked = self.revoked.lock().expect("revoked lock");
        if revoked.len() + tokens.len() > REVOKED_PRUNE_THRESHOLD {
            revoked.retain(|_, expires_at_ms| *expires_at_ms > now);
        }
        for (jti, expires_at_ms) in tokens {
            revoked.insert(jti.clone(), *expires_at_ms);
        }
        self.counters
            .tokens_revoked
            .fetch_add(tokens.len() as u64, Ordering::Relaxed);
    }

    /// Admits a credential check by `keys` (the account's first, then the
    /// client's address) at `now_ms`, or refuses it with 429 and
    /// `Retry-After` while any key is delayed. The returned [`Attempt`]
    /// reports the outcome; dropped unreported, it is released.
    pub(super) fn admit_attempt(
        &self,
        keys: Vec<String>,
        now_ms: i64,
    ) -> Result<Attempt<'_>, ApiError> {
        debug_assert!(!keys.is_empty(), "the account key comes first");
        let mut throttle = self.throttle.lock().expect("throttle lock");
        let wait_ms = keys
            .iter()
            .filter_map(|key| throttle.check(key, now_ms).err())
            .max();
        if let Some(wait_ms) = wait_ms {
            drop(throttle);
            self.counters
                .login_throttled
                .fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::rate_limited(
                wait_ms.div_ceil(1000),
                "too many failed attempts: wait before trying again",
            ));
        }
        for key in &keys {
            throttle.begin(key);
        }
        Ok(Attempt {
            auth: self,
            keys,
            reported: false,
        })
    }

    /// Runs `action` on the login throttle.
    pub(super) fn with_throttle<T>(&self, action: impl FnOnce(&mut LoginThrottle) -> T) -> T {
        action(&mut self.throttle.lock().expect("throttle lock"))
    }

    pub(super) fn count_login(&self) {
        self.counters.logins.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_refresh_token_reuse(&self) {
        self.counters
            .refresh_token_reuses
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Renders auth metrics.
    pub fn render_metrics(&self, out: &mut String) {
        let counters = [
            (
                "veza_logins_total",
                "Successful logins.",
                &self.counters.logins,
            ),
            (
                "veza_login_failures_total",
                "Failed logins: unknown account, wrong password or wrong TOTP code.",
                &self.counters.login_failures,
            ),
            (
                "veza_login_throttled_total",
                "Login attempts refused with 429 by the throttle.",
                &self.counters.login_throttled,
            ),
            (
                "veza_refresh_token_reuse_total",
                "Rotated refresh tokens presented again (their session was revoked).",
                &self.counters.refresh_token_reuses,
            ),
            (
                "veza_access_tokens_revoked_total",
                "Access tokens revoked before their expiry.",
                &self.counters.tokens_revoked,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "veza_login_throttle_entries",
                "Accounts and IPs in the login throttle table.",
                self.with_throttle(|throttle| throttle.len()),
            ),
            (
                "veza_revoked_access_tokens",
                "Revoked access tokens not yet expired, held in memory.",
                self.revoked.lock().expect("revoked lock").len(),
            ),
            (
                "veza_signing_keys_offered",
                "Signing keys offered for verification.",
                self.ring().offered.len(),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.key_ring.read().expect("key ring lock").clone()
    }
}

/// An admitted credential check. Every exit reports it: [`Attempt::failed`],
/// [`Attempt::succeeded`], or dropping it (released: neither, for example a
/// right password still missing its TOTP code, or an error on our side).
pub(super) struct Attempt<'a> {
    auth: &'a AuthState,
    /// The account's key first, then the address's.
    keys: Vec<String>,
    reported: bool,
}

impl Attempt<'_> {
    /// The credentials were wrong.
    pub fn failed(mut self) {
        self.reported = true;
        let now = now_ms();
        let mut throttle = self.auth.throttle.lock().expect("throttle lock");
        for key in &self.keys {
            throttle.fail(key, now);
        }
        drop(throttle);
        self.auth
            .counters
            .login_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The credentials were right: the account starts afresh; the address
    /// keeps its earlier failures (one success among many guesses from one
    /// place proves little).
    pub fn succeeded(mut self) {
        self.reported = true;
        let mut throttle = self.auth.throttle.lock().expect("throttle lock");
        throttle.remove(&self.keys[0]);
        for key in &self.keys[1..] {
            throttle.release(key);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.reported {
            return;
        }
        let mut throttle = self.auth.throttle.lock().expect("throttle lock");
        for key in &self.keys {
            throttle.release(key);
        }
    }
}

/// The access-token lifetime in milliseconds.
pub(super) fn ttl_ms(config: &AuthConfig) -> i64 {
    (config.access_token_ttl_seconds as i64).saturating_mul(1000)
}
