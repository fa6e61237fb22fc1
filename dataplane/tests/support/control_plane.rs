//! A real `veza-controlplane` (built from this workspace) for tests that
//! need one: SQLite in a temporary directory, control socket at
//! `<data_dir>/control.sock`, fast argon2, killed (`kill -9`) on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use super::http::{self, HttpConnection};
use super::{eventually, free_loopback_port, Driver, ServerOptions};

/// How long a shard may take to (re)connect: the reconnect delay is capped
/// at 400 ms in these tests, plus the control plane's start.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The `veza-controlplane` binary next to this test's target directory,
/// built first when missing (`cargo test --workspace` builds it anyway).
pub fn control_plane_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // The test runs from <target>/<profile>/deps/.
        let test_binary = std::env::current_exe().expect("test binary path");
        let profile_dir = test_binary
            .parent()
            .and_then(Path::parent)
            .expect("<target>/<profile>");
        let binary = profile_dir.join("veza-controlplane");
        if !binary.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut command = Command::new(cargo);
            command
                .args(["build", "-p", "veza-controlplane"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir
                .file_name()
                .is_some_and(|name| name == "release")
            {
                command.arg("--release");
            }
            let status = command.status().expect("run cargo build");
            assert!(status.success(), "cargo build -p veza-controlplane failed");
        }
        assert!(binary.exists(), "{} is missing", binary.display());
        binary
    })
}

/// A running `veza-controlplane` on SQLite in a temporary directory, with
/// its control socket at `<data_dir>/control.sock`.
pub struct ControlPlane {
    child: Option<Child>,
    /// Extra environment for the control plane.
    env: Vec<(String, String)>,
    /// The control plane's data directory (database, keys, socket, log).
    pub data_dir: tempfile::TempDir,
    /// The REST port.
    pub rest_port: u16,
}

impl ControlPlane {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts one with extra `VEZA_*` environment.
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let mut control = Self {
            child: None,
            env: env
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            data_dir: tempfile::tempdir().expect("data directory"),
            rest_port: free_loopback_port(),
        };
        control.spawn();
        control
    }

    pub fn socket_path(&self) -> PathBuf {
        self.data_dir.path().join("control.sock")
    }

    pub fn address(&self) -> String {
        format!("unix:{}", self.socket_path().display())
    }

    pub fn rest_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.rest_port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("control.log")).unwrap_or_default()
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.path().join("control.log"))
            .expect("control plane log");
        let mut command = Command::new(control_plane_binary());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("VEZA_") {
                command.env_remove(&key);
            }
        }
        let child = command
            .env("VEZA_SERVER_LISTEN_ADDRESS", "127.0.0.1")
            .env("VEZA_SERVER_LISTEN_PORT", self.rest_port.to_string())
            .env("VEZA_SERVER_DATA_DIR", self.data_dir.path())
            .env("VEZA_AUTH_ARGON2_MEMORY_KIB", "64")
            .env("VEZA_AUTH_ARGON2_ITERATIONS", "1")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn veza-controlplane");
        self.child = Some(child);
        eventually(
            CONNECT_TIMEOUT,
            "the control plane answers /ready",
            || match http::try_get(self.rest_addr(), "/ready", Duration::from_millis(500)) {
                Ok(response) if response.status == 200 => Ok(()),
                Ok(response) => Err(format!("status {}", response.status)),
                Err(error) => Err(format!("{error}\n{}", self.log())),
            },
        );
    }

    /// Sends `signal` (for example `SIGSTOP`, then `SIGCONT`) to the running
    /// control plane, which this test started.
    pub fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the control plane runs");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) takes plain integers and has no memory effects.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A JSON request to the REST API; returns the status and the JSON body.
    pub fn rest(&self, method: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let body = body.to_string();
        let authorization = token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let response = HttpConnection::open(self.rest_addr()).request(raw.as_bytes());
        let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, value)
    }

    /// Registers the first user (the instance admin) and returns its token.
    pub fn admin_token(&self) -> String {
        let password = "tuba-glockenspiel-7-harp";
        let (status, body) = self.rest(
            "POST",
            "/v1/accounts",
            None,
            json!({"username": "admin", "email": "admin@example.org", "password": password}),
        );
        assert_eq!(status, 201, "register: {body}");
        let (status, body) = self.rest(
            "POST",
            "/v1/sessions",
            None,
            json!({"login": "admin", "password": password}),
        );
        assert_eq!(status, 200, "login: {body}");
        body["access_token"].as_str().expect("token").to_owned()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- control plane log ---\n{}", self.log());
        }
    }
}

pub fn data_plane_options(driver: Driver, control: &ControlPlane) -> ServerOptions {
    ServerOptions::new(driver)
        .env("VEZA_CONTROL_ADDRESS", &control.address())
        .env("VEZA_CONTROL_NODE_ID", "test-node")
        .env("VEZA_CONTROL_RECONNECT_DELAY_MS_MIN", "50")
        .env("VEZA_CONTROL_RECONNECT_DELAY_MS_MAX", "400")
}
