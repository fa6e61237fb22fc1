//! The database: embedded SQLite by default (a file in the data directory,
//! WAL mode, created on first start), PostgreSQL when `server.database_url`
//! points at one. Both go through one `sqlx::AnyPool`, so queries are written
//! once in the SQL both accept (`$1` placeholders, `RETURNING`, `ON CONFLICT`;
//! integers as BIGINT, booleans as 0/1 integers, times as unix milliseconds).
//! Where the dialects differ (full-text search), code asks [`Database::backend`].
//!
//! Migrations live in `migrations/sqlite` and `migrations/postgres` (one file
//! per change, same number in both) and run at start.

use std::path::Path;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use sqlx::Executor;

/// Which engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The pool and its backend.
#[derive(Clone, Debug)]
pub struct Database {
    /// The connection pool.
    pub pool: AnyPool,
    backend: Backend,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Connecting failed.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Database {
    /// Opens (and on first start creates) the database, then migrates it.
    pub async fn open(
        database_url: &str,
        data_dir: &Path,
        connections_max: u32,
    ) -> Result<Self, DatabaseError> {
        sqlx::any::install_default_drivers();
        let url = if database_url.is_empty() {
            std::fs::create_dir_all(data_dir).map_err(|source| DatabaseError::DataDir {
                path: data_dir.display().to_string(),
                source,
            })?;
            format!("sqlite://{}?mode=rwc", data_dir.join("veza.db").display())
        } else {
            database_url.to_string()
        };
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections_max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; synchronous=FULL
                        // fsyncs each commit, so an acknowledged write survives a
                        // crash of the process or of the machine.
                        connection
                            .execute(
                                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                                 PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
                            )
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(DatabaseError::Connect)?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await?;
        Ok(Self { pool, backend })
    }

    /// The engine behind the pool.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn is_reachable(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
