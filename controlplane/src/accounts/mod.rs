//! Accounts and tokens: registration, login, sessions, access and refresh
//! tokens, TOTP two-factor, API keys, login throttling, signing keys.
//!
//! # How a caller proves who it is
//!
//! - `POST /v1/sessions` (login) answers a short-lived **access token** (an
//!   EdDSA JWT, [`veza_proto::access_token`]) and an opaque **refresh token**.
//!   Every other route takes `Authorization: Bearer <access token>`; data
//!   planes verify the same tokens themselves with the public keys from
//!   [`AuthState::verification_keys`].
//! - A **session** is one refresh-token family. `POST /v1/sessions/refresh`
//!   trades a refresh token for a new pair and marks the old one used; a used
//!   one presented again means it was stolen, so the whole session is revoked.
//! - Revoking a session revokes the access tokens issued to it that have not
//!   expired: they are recorded per session (`access_tokens`), kept in memory
//!   ([`AuthState`]) and published as `ControlEvent::TokensRevoked`.
//! - Bots use **API keys** (`Authorization: Bearer vzk_...`) limited to
//!   [`scopes`].
//!
//! # Codemap
//!
//! - [`authenticated`]: the [`Authenticated`] extractor every area uses.
//! - `auth_state`: [`AuthState`], what lives in memory (keys, revocations,
//!   throttle, counters).
//! - `signing_keys`: key files, the `signing_keys` table, rotation.
//! - `login_throttle`: per-account and per-IP delays (pure, handed the time).
//! - `password`: the password policy and argon2id off the async threads.
//! - `account`, `sessions`, `two_factor`, `api_keys`, `admin`: the routes.
//! - [`store`]: SQL shared by several of them.
//!
//! Architecture Invariant: only the hashes of refresh tokens, API keys and
//! backup codes are stored; a database dump gives no working credential
//! (TOTP secrets, which must be read back to check codes, are the exception).

use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use veza_codec::config_layers;

use crate::config::ConfigError;
use crate::state::AppState;

mod account;
mod admin;
mod api_keys;
mod auth_state;
pub mod authenticated;
mod extract;
mod login_throttle;
mod password;
pub(crate) mod secret;
mod sessions;
mod signing_keys;
pub mod store;
mod two_factor;

pub use auth_state::{AuthState, VerificationKey};
pub use authenticated::Authenticated;

/// The scopes an API key can hold. A user's own access token holds all of
/// them (limited by the user's rights, as always).
pub mod scopes {
    /// Read rooms, memberships and room settings.
    pub const ROOMS_READ: &str = "rooms:read";
    /// Create, change, join, leave and moderate rooms.
    pub const ROOMS_WRITE: &str = "rooms:write";
    /// Read message history and search it.
    pub const MESSAGES_READ: &str = "messages:read";
    /// Post, edit, delete and react to messages.
    pub const MESSAGES_WRITE: &str = "messages:write";
    /// Call `/v1/admin/*`; only an instance admin's key may hold it.
    pub const ADMIN: &str = "admin";
    /// Every scope, in documentation order.
    pub const ALL: [&str; 5] = [
        ROOMS_READ,
        ROOMS_WRITE,
        MESSAGES_READ,
        MESSAGES_WRITE,
        ADMIN,
    ];
}

/// Shortest allowed `auth.password_length_min`.
const PASSWORD_LENGTH_MIN_FLOOR: usize = 8;

/// Longest password accepted, in characters.
pub const PASSWORD_LENGTH_MAX: usize = 256;

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Shortest password accepted, in characters (the longest is 256).
    pub password_length_min: usize,
    /// argon2id memory per hash, KiB (OWASP's 19 MiB by default).
    pub argon2_memory_kib: u32,
    /// argon2id passes.
    pub argon2_iterations: u32,
    /// argon2id lanes.
    pub argon2_parallelism: u32,
    /// Password hashes computed at once; more wait. Bounds the memory
    /// (`argon2_memory_kib` each) and CPU that logins can take.
    pub password_hashes_concurrent_max: usize,
    /// Lifetime of an access token.
    pub access_token_ttl_seconds: u64,
    /// Lifetime of a refresh token (each refresh starts a new one).
    pub refresh_token_ttl_seconds: u64,
    /// Live sessions per user; a login past it ends the least recently used.
    pub sessions_per_user_max: u64,
    /// API keys per user.
    pub api_keys_per_user_max: u64,
    /// The issuer shown by authenticator apps.
    pub totp_issuer: String,
    /// Consecutive failed logins allowed before delays start.
    pub login_failures_free: u32,
    /// The first delay; each further failure doubles it.
    pub login_delay_base_ms: u64,
    /// The longest delay.
    pub login_delay_max_ms: u64,
    /// A throttle entry without failures for this long is forgotten.
    pub login_failures_forget_ms: u64,
    /// Throttle entries kept (accounts and IPs); past it the oldest goes.
    pub throttle_entries_max: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            password_length_min: 10,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            password_hashes_concurrent_max: 4,
            access_token_ttl_seconds: 900,
            refresh_token_ttl_seconds: 30 * 24 * 3600,
            sessions_per_user_max: 100,
            api_keys_per_user_max: 50,
            totp_issuer: "Veza".into(),
            login_failures_free: 5,
            login_delay_base_ms: 1_000,
            login_delay_max_ms: 60_000,
            login_failures_forget_ms: 15 * 60 * 1_000,
            throttle_entries_max: 100_000,
        }
    }
}

impl AuthConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| -> Result<(), ConfigError> {
            Err(config_layers::invalid(&format!("auth.{key}"), reason).into())
        };
        if !(PASSWORD_LENGTH_MIN_FLOOR..=PASSWORD_LENGTH_MAX).contains(&self.password_length_min) {
            return invalid("password_length_min", "must be between 8 and 256");
        }
        if self.argon2_parallelism == 0 || self.argon2_parallelism > 16 {
            return invalid("argon2_parallelism", "must be between 1 and 16");
        }
        if self.argon2_memory_kib < 8 * self.argon2_parallelism
            || self.argon2_memory_kib > 4 * 1024 * 1024
        {
            return invalid(
                "argon2_memory_kib",
                "must be between 8 × argon2_parallelism and 4194304 (4 GiB)",
            );
        }
        if !(1..=100).contains(&self.argon2_iterations) {
            return invalid("argon2_iterations", "must be between 1 and 100");
        }
        if !(1..=1024).contains(&self.password_hashes_concurrent_max) {
            return invalid(
                "password_hashes_concurrent_max",
                "must be between 1 and 1024",
            );
        }
        if !(1..=24 * 3600).contains(&self.access_token_ttl_seconds) {
            return invalid("access_token_ttl_seconds", "must be between 1 and 86400");
        }
        if self.refresh_token_ttl_seconds < self.access_token_ttl_seconds
            || self.refresh_token_ttl_seconds > 365 * 24 * 3600
        {
            return invalid(
                "refresh_token_ttl_seconds",
                "must be at least access_token_ttl_seconds and at most a year",
            );
        }
        if !(1..=10_000).contains(&self.sessions_per_user_max) {
            return invalid("sessions_per_user_max", "must be between 1 and 10000");
        }
        if !(1..=10_000).contains(&self.api_keys_per_user_max) {
            return invalid("api_keys_per_user_max", "must be between 1 and 10000");
        }
        if self.totp_issuer.is_empty()
            || self.totp_issuer.len() > 64
            || self.totp_issuer.contains(':')
        {
            return invalid("totp_issuer", "must be 1 to 64 bytes without ':'");
        }
        self.validate_throttle()
    }

    fn validate_throttle(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| -> Result<(), ConfigError> {
            Err(config_layers::invalid(&format!("auth.{key}"), reason).into())
        };
        if self.login_failures_free > 1_000 {
            return invalid("login_failures_free", "must be at most 1000");
        }
        if self.login_delay_base_ms == 0 || self.login_delay_base_ms > self.login_delay_max_ms {
            return invalid(
                "login_delay_base_ms",
                "must be between 1 and login_delay_max_ms",
            );
        }
        if self.login_delay_max_ms > 24 * 3600 * 1_000 {
            return invalid("login_delay_max_ms", "must be at most a day");
        }
        if self.login_failures_forget_ms < self.login_delay_max_ms {
            return invalid(
                "login_failures_forget_ms",
                "must be at least login_delay_max_ms",
            );
        }
        if !(16..=10_000_000).contains(&self.throttle_entries_max) {
            return invalid("throttle_entries_max", "must be between 16 and 10000000");
        }
        Ok(())
    }
}

/// The accounts routes. Every 401 they answer carries `WWW-Authenticate:
/// Bearer` (RFC 6750).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(account::router())
        .merge(sessions::router())
        .merge(two_factor::router())
        .merge(api_keys::router())
        .merge(admin::router())
        .route_layer(axum::middleware::map_response(
            authenticated::add_www_authenticate,
        ))
}
