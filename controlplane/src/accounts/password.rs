//! Passwords: the policy, and argon2id hashing off the async threads.
//!
//! argon2id is deliberately slow and memory-hard (19 MiB and tens of
//! milliseconds per hash by default), so every hash and every check runs in
//! `spawn_blocking`, never on a tokio worker, and at most
//! `password_hashes_concurrent_max` run at once: a flood of logins queues
//! instead of exhausting memory.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{OnceCell, Semaphore};

use super::{AuthConfig, PASSWORD_LENGTH_MAX};
use crate::error::ApiError;

/// Why a password was refused by the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    /// Too short.
    #[error("the password must have at least {0} characters")]
    TooShort(usize),
    /// Too long.
    #[error("the password must have at most {PASSWORD_LENGTH_MAX} characters")]
    TooLong,
    /// Contains the username.
    #[error("the password must not contain the username")]
    ContainsUsername,
    /// One character repeated.
    #[error("the password must not be a single repeated character")]
    SingleCharacter,
}

/// Checks `password` for `username` against the policy.
pub fn check_policy(
    password: &str,
    username: &str,
    length_min: usize,
) -> Result<(), PolicyViolation> {
    let length = password.chars().count();
    if length < length_min {
        return Err(PolicyViolation::TooShort(length_min));
    }
    if length > PASSWORD_LENGTH_MAX {
        return Err(PolicyViolation::TooLong);
    }
    if !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase()) {
        return Err(PolicyViolation::ContainsUsername);
    }
    let mut characters = password.chars();
    let first = characters.next();
    if characters.all(|character| Some(character) == first) {
        return Err(PolicyViolation::SingleCharacter);
    }
    Ok(())
}

/// argon2id with the configured parameters and a bound on concurrent work.
pub struct PasswordHashing {
    params: Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password, checked when the login names no account
    /// so that the answer takes as long as for a real one. Made on first
    /// need, not at start (a start should not cost a hash).
    decoy_hash: OnceCell<String>,
}

impl PasswordHashing {
    /// Builds the hasher.
    pub fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        let params = Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            None,
        )
        .map_err(|error| anyhow::anyhow!("argon2 parameters: {error}"))?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(config.password_hashes_concurrent_max)),
            decoy_hash: OnceCell::new(),
        })
    }

    /// The PHC string of `password` (salt and parameters included).
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_blocking(&params, &password))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    /// Whether `password` matches `stored_hash`; with `None` (no such
    /// account) checks the decoy and answers false.
    pub async fn verify(
        &self,
        password: String,
        stored_hash: Option<String>,
    ) -> Result<bool, ApiError> {
        let is_decoy = stored_hash.is_none();
        let hash = match stored_hash {
            Some(hash) => hash,
            None => self
                .decoy_hash
                .get_or_try_init(|| self.hash(super::secret::random_token("")))
                .await?
                .clone(),
        };
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let matches = tokio::task::spawn_blocking(move || verify_blocking(&password, &hash))
            .await
            .map_err(ApiError::internal)?;
        Ok(matches && !is_decoy)
    }
}

fn hash_blocking(params: &Params, password: &str) -> Result<String, argon2::password_hash::Error> {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(argon2
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// The stored string carries its own parameters, so hashes made before a
/// change of `[auth]` argon2 settings still verify.
fn verify_blocking(password: &str, stored_hash: &str) -> bool {
    match PasswordHash::new(stored_hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(error) => {
            tracing::error!(%error, "unparseable password hash in the database");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_refuses_short_long_username_and_repeated_passwords() {
        let check = |password: &str| check_policy(password, "alice", 10);
        assert_eq!(check("correct horse battery"), Ok(()));
        assert_eq!(check("short"), Err(PolicyViolation::TooShort(10)));
        assert_eq!(check(&"ab".repeat(129)), Err(PolicyViolation::TooLong));
        assert_eq!(
            check("xxALICE-2024xx"),
            Err(PolicyViolation::ContainsUsername)
        );
        assert_eq!(check("zzzzzzzzzzzz"), Err(PolicyViolation::SingleCharacter));
        // Length counts characters, not bytes.
        assert_eq!(check("ééééééééé"), Err(PolicyViolation::TooShort(10)));
    }

    #[tokio::test]
    async fn hashes_verify_only_their_password_and_the_decoy_never_matches() {
        let config = AuthConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..AuthConfig::default()
        };
        let hashing = PasswordHashing::new(&config).unwrap();
        let hash = hashing.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(hashing
            .verify("correct horse".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!hashing
            .verify("wrong horse".into(), Some(hash))
            .await
            .unwrap());
        assert!(!hashing.verify("anything".into(), None).await.unwrap());
    }
}
