//! The database: embedded SQLite by default (a file in the data directory,
//! WAL mode, created on first start), PostgreSQL when `server.database_url`
//! points at one. Both go through one `sqlx::AnyPool`, so queries are written
//! once in the SQL both accept (`$1` bind parameters, `RETURNING`, `ON CONFLICT`;
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
    /// Where write transactions run. SQLite admits one writer at a time: a
    /// single-connection pool makes concurrent writers queue fairly for it,
    /// instead of spinning in SQLite's busy handler until `busy_timeout`
    /// fails them with "database is locked". On PostgreSQL it is `pool`.
    write_pool: AnyPool,
    backend: Backend,
}

/// How long a write transaction may wait for SQLite's single writer.
const WRITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

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
        let pool = pool_options(backend, connections_max, Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(DatabaseError::Connect)?;
        let write_pool = match backend {
            Backend::Sqlite => pool_options(backend, 1, WRITE_ACQUIRE_TIMEOUT)
                .connect(&url)
                .await
                .map_err(DatabaseError::Connect)?,
            Backend::Postgres => pool.clone(),
        };
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&write_pool).await?;
        Ok(Self {
            pool,
            write_pool,
            backend,
        })
    }

    /// Begins a write transaction (SQLite: `BEGIN IMMEDIATE` on the single
    /// writer connection, so the write lock is taken up front, never upgraded
    /// half-way).
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.write_pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.write_pool.begin().await,
        }
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

fn pool_options(
    backend: Backend,
    connections_max: u32,
    acquire_timeout: Duration,
) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(connections_max)
        .acquire_timeout(acquire_timeout)
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
}
