//! Access-token signing keys. The private half of each key is a file
//! `<data_dir>/signing-keys/<kid>.key` (PKCS#8 DER, mode 0600, in a 0700
//! directory); the public half is a row of `signing_keys`. Exactly one key is
//! active (signs new tokens); rotation adds a new active key and retires the
//! old one, which stays offered for verification until every token it
//! signed has expired (`retired_at_ms + access_token_ttl`), then is dropped
//! and its file deleted.
//!
//! A key is written to disk (and fsynced) before its row is committed, so a
//! crash never leaves a row without its private half; a file without a row
//! is ignored.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sqlx::Row as _;

use super::secret;
use crate::db::{now_ms, Database};

/// Directory of the key files under the data directory.
pub const KEY_DIRECTORY_NAME: &str = "signing-keys";

/// A key as stored in `signing_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    /// Key id, the JWT header's `kid`.
    pub kid: String,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
    /// When it was created.
    pub created_at_ms: i64,
    /// When a newer key replaced it; `None` while active.
    pub retired_at_ms: Option<i64>,
}

impl SigningKeyRow {
    /// Until when tokens it signed can be valid; `None` while it signs.
    pub fn valid_until_ms(&self, access_token_ttl_ms: i64) -> Option<i64> {
        self.retired_at_ms
            .map(|retired| retired.saturating_add(access_token_ttl_ms))
    }
}

/// The keys in use: the one that signs, and every one still offered for
/// verification (the active one included).
pub struct KeyRing {
    /// Id of the signing key.
    pub active_kid: String,
    /// The signing key.
    pub active_key: SigningKey,
    /// Offered keys with their parsed public key, newest first.
    pub offered: Vec<(SigningKeyRow, VerifyingKey)>,
}

/// Why keys could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file operation failed.
    #[error("signing key file {path}: {source}")]
    File {
        /// The file or directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("signing keys table: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored public key is not a valid Ed25519 point.
    #[error("signing key {0} has an invalid public key in the database")]
    InvalidPublicKey(String),
}

/// The key directory under `data_dir`.
pub fn key_directory(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_DIRECTORY_NAME)
}

/// Every row, newest first.
pub async fn list(db: &Database) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT kid, public_key, created_at_ms, retired_at_ms FROM signing_keys \
         ORDER BY created_at_ms DESC, kid DESC",
    )
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| {
            let public_key: Vec<u8> = row.try_get("public_key")?;
            let kid: String = row.try_get("kid")?;
            Ok(SigningKeyRow {
                public_key: public_key.try_into().map_err(|_| {
                    sqlx::Error::Decode(format!("signing key {kid}: not 32 bytes").into())
                })?,
                kid,
                created_at_ms: row.try_get("created_at_ms")?,
                retired_at_ms: row.try_get("retired_at_ms")?,
            })
        })
        .collect()
}

/// Loads the key ring, generating a key on first start (or when the active
/// key's file is missing or does not match its row).
pub async fn load_or_create(
    db: &Database,
    directory: &Path,
    access_token_ttl_ms: i64,
) -> Result<KeyRing, KeyError> {
    let rows = list(db).await?;
    if let Some(active) = rows.iter().find(|row| row.retired_at_ms.is_none()) {
        match read_key_file(directory, &active.kid).await {
            Ok(key) if key.verifying_key().to_bytes() == active.public_key => {
                return ring(db, directory, active.kid.clone(), key, access_token_ttl_ms).await;
            }
            Ok(_) => {
                tracing::warn!(kid = %active.kid, "signing key file does not match its row: replacing the key")
            }
            Err(error) => {
                tracing::warn!(kid = %active.kid, %error, "active signing key unreadable: replacing the key")
            }
        }
    }
    create(db, directory, access_token_ttl_ms).await
}

/// Makes a new active key and retires the previous one.
pub async fn create(
    db: &Database,
    directory: &Path,
    access_token_ttl_ms: i64,
) -> Result<KeyRing, KeyError> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let kid = secret::random_token_id();
    write_key_file(directory, &kid, &key).await?;
    let now = now_ms();
    let mut transaction = db.pool.begin().await?;
    sqlx::query(
        "INSERT INTO signing_keys (kid, public_key, created_at_ms, retired_at_ms) \
         VALUES ($1, $2, $3, NULL)",
    )
    .bind(&kid)
    .bind(key.verifying_key().to_bytes().to_vec())
    .bind(now)
    .execute(&mut *transaction)
    .await?;
    sqlx::query(
        "UPDATE signing_keys SET retired_at_ms = $1 WHERE retired_at_ms IS NULL AND kid <> $2",
    )
    .bind(now)
    .bind(&kid)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    tracing::info!(%kid, "new access-token signing key");
    ring(db, directory, kid, key, access_token_ttl_ms).await
}

async fn ring(
    db: &Database,
    directory: &Path,
    active_kid: String,
    active_key: SigningKey,
    access_token_ttl_ms: i64,
) -> Result<KeyRing, KeyError> {
    let now = now_ms();
    let mut offered = Vec::new();
    for row in list(db).await? {
        let is_offered =
            row.retired_at_ms.is_none() || row.valid_until_ms(access_token_ttl_ms) > Some(now);
        if !is_offered {
            // Every token it signed has expired: its private half is waste.
            let path = directory.join(format!("{}.key", row.kid));
            let _ = tokio::fs::remove_file(path).await;
            continue;
        }
        let verifying_key = VerifyingKey::from_bytes(&row.public_key)
            .map_err(|_| KeyError::InvalidPublicKey(row.kid.clone()))?;
        offered.push((row, verifying_key));
    }
    debug_assert!(offered.iter().any(|(row, _)| row.kid == active_kid));
    Ok(KeyRing {
        active_kid,
        active_key,
        offered,
    })
}

async fn read_key_file(directory: &Path, kid: &str) -> Result<SigningKey, KeyError> {
    let path = directory.join(format!("{kid}.key"));
    let file_error = |source| KeyError::File {
        path: path.display().to_string(),
        source,
    };
    let bytes = tokio::fs::read(&path).await.map_err(file_error)?;
    SigningKey::from_pkcs8_der(&bytes).map_err(|error| {
        file_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            error.to_string(),
        ))
    })
}

/// Writes the key durably: a temporary file created 0600, fsynced, renamed
/// into place, and the directory fsynced.
async fn write_key_file(directory: &Path, kid: &str, key: &SigningKey) -> Result<(), KeyError> {
    let der = key.to_pkcs8_der().map_err(|error| KeyError::File {
        path: kid.to_string(),
        source: std::io::Error::other(error.to_string()),
    })?;
    let directory = directory.to_path_buf();
    let kid = kid.to_string();
    tokio::task::spawn_blocking(move || write_key_file_blocking(&directory, &kid, der.as_bytes()))
        .await
        .map_err(|error| KeyError::File {
            path: "signing key writer".into(),
            source: std::io::Error::other(error.to_string()),
        })?
}

fn write_key_file_blocking(directory: &Path, kid: &str, der: &[u8]) -> Result<(), KeyError> {
    let at = |path: &Path| {
        let path = path.display().to_string();
        move |source| KeyError::File { path, source }
    };
    std::fs::create_dir_all(directory).map_err(at(directory))?;
    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))
        .map_err(at(directory))?;
    let temporary = directory.join(format!("{kid}.key.tmp"));
    let path = directory.join(format!("{kid}.key"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(at(&temporary))?;
    file.write_all(der).map_err(at(&temporary))?;
    file.sync_all().map_err(at(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(at(&path))?;
    std::fs::File::open(directory)
        .and_then(|directory| directory.sync_all())
        .map_err(at(directory))?;
    Ok(())
}
