//! Test harness: starts a real `veza-controlplane` on a free loopback port
//! against SQLite (a temporary data directory) or PostgreSQL (a fresh
//! database on the throw-away server that `scripts/test.sh` starts and names
//! in `VEZA_TEST_POSTGRES_URL`), and stops it when dropped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite in a temporary data directory.
    Sqlite,
    /// A fresh database on the throw-away PostgreSQL server.
    Postgres,
}

/// Both backends: every integration test runs on each.
pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

static DATABASE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running control plane.
pub struct TestControlPlane {
    pub backend: Backend,
    pub base_url: String,
    pub port: u16,
    pub data_dir: tempfile::TempDir,
    pub database_url: String,
    pub extra_env: Vec<(String, String)>,
    child: Option<Child>,
    log_path: PathBuf,
    pub http: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn fresh_postgres_database() -> String {
    let admin_url = std::env::var("VEZA_TEST_POSTGRES_URL").expect(
        "VEZA_TEST_POSTGRES_URL is not set: run the tests with `bash scripts/test.sh`, which starts a throw-away PostgreSQL",
    );
    let name = format!(
        "veza_test_{}_{}",
        std::process::id(),
        DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut connection = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut connection)
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').expect("URL has a database").0;
    format!("{base}/{name}")
}

impl TestControlPlane {
    /// Starts a server on `backend` with extra `VEZA_*` variables.
    pub async fn start(backend: Backend, extra_env: &[(&str, &str)]) -> Self {
        let database_url = match backend {
            Backend::Sqlite => String::new(),
            Backend::Postgres => fresh_postgres_database().await,
        };
        let data_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut server = Self {
            backend,
            base_url: format!("http://127.0.0.1:{port}"),
            port,
            log_path: data_dir.path().join("server.log"),
            data_dir,
            database_url,
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_veza-controlplane"));
        command
            .env("VEZA_SERVER_LISTEN_ADDRESS", "127.0.0.1")
            .env("VEZA_SERVER_LISTEN_PORT", self.port.to_string())
            .env("VEZA_SERVER_DATA_DIR", self.data_dir.path())
            .env("VEZA_SERVER_DATABASE_URL", &self.database_url)
            .env("VEZA_SERVER_LOG_LEVEL", "info")
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(command.spawn().expect("spawn veza-controlplane"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = self.http.get(self.url("/ready")).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "veza-controlplane exited with {status} during start:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "veza-controlplane not ready in 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// An absolute URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `kill -9` the server (nothing flushed beyond what it already committed).
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory and database.
    pub async fn restart(&mut self) {
        self.kill_hard();
        self.spawn().await;
    }

    /// Sends a request with an optional bearer token and JSON body; returns
    /// (status, JSON body or Null).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request reaches the server");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, value)
    }

    /// Asserts an error response has the JSON shape `{"error", "detail"}`.
    pub fn assert_error_shape(body: &Value) {
        assert!(
            body["error"].is_string(),
            "error body lacks \"error\": {body}"
        );
        assert!(
            body["detail"].is_string(),
            "error body lacks \"detail\": {body}"
        );
    }
}

impl Drop for TestControlPlane {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: sending SIGTERM to our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
