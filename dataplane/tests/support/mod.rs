//! The harness shared by the data plane's integration tests.
//!
//! A test that needs a server starts the real `veza-dataplane` binary itself
//! on a free loopback port ([`TestServer::start`]); the server is stopped when
//! its handle drops (SIGTERM, then SIGKILL after five seconds). The server's
//! stdout and stderr go to temporary files that are printed when a test
//! fails, so a red test shows what the server said.
//!
//! Every wait is bounded: sockets carry read and write timeouts, async work
//! runs under [`block_on`]'s deadline and [`within`]'s per-step timeout, and
//! polling loops ([`eventually`]) give up after a fixed time. Nothing here may
//! hang CI.
//!
//! - [`http`]: raw HTTP/1.1 over a `TcpStream`, so tests control every byte.
//! - [`metrics`]: a Prometheus text parser with lookups by name and labels.
//! - [`raw_websocket`]: hand-built WebSocket frames for protocol-error tests.
//! - [`websocket`]: tokio-tungstenite clients for conformance tests.

// Each test crate includes this module and uses a different part of it.
#![allow(dead_code)]

pub mod chat;
pub mod control_plane;
pub mod http;
pub mod live;
pub mod metrics;
pub mod python;
pub mod raw_websocket;
pub mod tracks;
pub mod websocket;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::Metrics;

/// How long a server may take to answer `GET /ready` with 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a server may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one async test body may run in total.
pub const TEST_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one awaited step (a connect, a reply) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a start is retried when the chosen port was taken meanwhile.
const START_ATTEMPTS_MAX: usize = 3;

/// The I/O driver a server runs on. Every server test runs on both, because
/// the two drivers take different code paths for the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// monoio's io_uring driver, the default.
    IoUring,
    /// monoio's epoll driver, forced with `MONOIO_FORCE_LEGACY_DRIVER=1`.
    Legacy,
}

impl Driver {
    /// Both drivers, io_uring first.
    pub const ALL: [Driver; 2] = [Driver::IoUring, Driver::Legacy];

    /// The `driver` label the server reports in `veza_shard_driver`.
    pub fn metric_label(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Legacy => "legacy",
        }
    }
}

/// Runs `test` once per driver. The driver's name is printed first, so a
/// failing run says which driver it was on.
pub fn for_each_driver(mut test: impl FnMut(Driver)) {
    for driver in Driver::ALL {
        eprintln!("=== on the {} driver ===", driver.metric_label());
        test(driver);
    }
}

/// A two-worker tokio runtime for async test bodies. Tests that alternate
/// async steps with blocking ones (signals, raw sockets) keep one runtime,
/// because tokio sockets belong to the runtime that opened them.
pub struct TestRuntime {
    runtime: tokio::runtime::Runtime,
}

impl TestRuntime {
    /// A new runtime.
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime builds");
        Self { runtime }
    }

    /// Runs `future` to completion; fails the test if it takes longer than
    /// [`TEST_BODY_TIMEOUT`].
    pub fn run<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(async {
            match tokio::time::timeout(TEST_BODY_TIMEOUT, future).await {
                Ok(output) => output,
                Err(_) => panic!("test body did not finish within {TEST_BODY_TIMEOUT:?}"),
            }
        })
    }
}

/// Runs one async test body on a fresh [`TestRuntime`].
pub fn block_on<F: Future>(future: F) -> F::Output {
    TestRuntime::new().run(future)
}

/// Awaits `future` for at most [`STEP_TIMEOUT`], failing the test with `what`.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    within_for(STEP_TIMEOUT, what, future).await
}

/// Awaits `future` for at most `limit`, failing the test with `what`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `check` every 20 ms until it returns `Ok` or `limit` passes, then
/// fails the test with `what` and the last reason `check` gave.
pub fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(value) => return value,
            Err(reason) if Instant::now() >= deadline => {
                panic!("{what}: still not true after {limit:?}: {reason}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A loopback port no other server of this test process was given. The
/// listener that found it is closed before the server binds it; ports are
/// remembered so that two tests running in parallel never share one.
pub fn free_loopback_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
        let port = listener
            .local_addr()
            .expect("listener has an address")
            .port();
        drop(listener);
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// How to start a server: driver, extra environment and arguments. The
/// harness's own settings (loopback address, free port, two shards) come
/// first, so `env` can override any of them.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    driver: Driver,
    env: BTreeMap<String, String>,
    args: Vec<OsString>,
}

impl ServerOptions {
    /// Options for a server on `driver` with the harness's defaults.
    pub fn new(driver: Driver) -> Self {
        let mut env = BTreeMap::new();
        env.insert(
            "VEZA_SERVER_LISTEN_ADDRESS".to_owned(),
            "127.0.0.1".to_owned(),
        );
        env.insert("VEZA_SERVER_SHARDS".to_owned(), "2".to_owned());
        Self {
            driver,
            env,
            args: Vec::new(),
        }
    }

    /// Sets one environment variable for the server.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets several environment variables for the server.
    pub fn envs(mut self, pairs: &[(&str, &str)]) -> Self {
        for (key, value) in pairs {
            self = self.env(key, value);
        }
        self
    }

    /// Adds one command-line argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// The number of shards the server will run, from `VEZA_SERVER_SHARDS`.
    fn shards(&self) -> usize {
        self.env["VEZA_SERVER_SHARDS"]
            .parse()
            .expect("tests give VEZA_SERVER_SHARDS as a number")
    }

    /// Starts the server and waits until `GET /ready` answers 200 and
    /// `/metrics` reports the requested driver on every shard.
    pub fn start(self) -> TestServer {
        for attempt in 1..=START_ATTEMPTS_MAX {
            let port = self.listen_port().unwrap_or_else(free_loopback_port);
            let mut server = TestServer::spawn(&self, port);
            match server.wait_until_ready() {
                Ok(()) => {
                    server.assert_driver();
                    return server;
                }
                Err(reason) => {
                    let log = server.log();
                    let port_taken = log.contains("in use") || log.contains("os error 98");
                    if port_taken && attempt < START_ATTEMPTS_MAX && self.listen_port().is_none() {
                        continue;
                    }
                    // `server` drops while this panic unwinds and prints its log.
                    panic!("server did not become ready: {reason}");
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Runs the binary expecting it to exit by itself (a configuration it
    /// must refuse). Kills it and fails the test if it is still running
    /// after `limit`.
    pub fn run_expecting_exit(self, limit: Duration) -> Exited {
        let port = self.listen_port().unwrap_or_else(free_loopback_port);
        let mut server = TestServer::spawn(&self, port);
        let status = server.wait_for_exit(limit).unwrap_or_else(|| {
            panic!(
                "the server kept running for {limit:?} instead of exiting\n--- server log ---\n{}",
                server.log()
            )
        });
        Exited {
            status,
            stdout: std::fs::read_to_string(&server.stdout_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&server.stderr_path).unwrap_or_default(),
        }
    }

    fn listen_port(&self) -> Option<u16> {
        self.env.get("VEZA_SERVER_LISTEN_PORT").map(|port| {
            port.parse()
                .expect("tests give VEZA_SERVER_LISTEN_PORT as a number")
        })
    }
}

/// How a server process ended by itself.
#[derive(Debug)]
pub struct Exited {
    /// The exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// A running `veza-dataplane` process. Dropping it stops the process.
pub struct TestServer {
    child: Child,
    port: u16,
    driver: Driver,
    shards: usize,
    // Kept so that the log files live as long as the server.
    _log_dir: tempfile::TempDir,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl TestServer {
    /// Starts a server on `driver` with extra environment variables.
    pub fn start(driver: Driver, env: &[(&str, &str)]) -> TestServer {
        ServerOptions::new(driver).envs(env).start()
    }

    fn spawn(options: &ServerOptions, port: u16) -> TestServer {
        let log_dir = tempfile::tempdir().expect("create a log directory");
        let stdout_path = log_dir.path().join("stdout.log");
        let stderr_path = log_dir.path().join("stderr.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_veza-dataplane"));
        // The server must see only the configuration this test gives it.
        for (key, _) in std::env::vars_os() {
            let inherited = key.to_string_lossy();
            if inherited.starts_with("VEZA_") || inherited == "MONOIO_FORCE_LEGACY_DRIVER" {
                command.env_remove(&key);
            }
        }
        command
            .envs(&options.env)
            .env("VEZA_SERVER_LISTEN_PORT", port.to_string())
            .args(&options.args)
            .stdin(Stdio::null())
            .stdout(append_to(&stdout_path))
            .stderr(append_to(&stderr_path));
        if options.driver == Driver::Legacy {
            command.env("MONOIO_FORCE_LEGACY_DRIVER", "1");
        }
        let child = command.spawn().expect("spawn veza-dataplane");
        TestServer {
            child,
            port,
            driver: options.driver,
            shards: options.shards(),
            _log_dir: log_dir,
            stdout_path,
            stderr_path,
        }
    }

    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll the server process") {
                return Err(format!("it exited with {status} (last /ready: {last})"));
            }
            match http::try_get(self.addr(), "/ready", Duration::from_millis(500)) {
                Ok(response) if response.status == 200 => return Ok(()),
                Ok(response) => last = format!("status {}", response.status),
                Err(error) => last = error.to_string(),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "no 200 from /ready within {READY_TIMEOUT:?} (last: {last})"
        ))
    }

    fn assert_driver(&self) {
        let metrics = self.metrics();
        for shard in 0..self.shards {
            let shard = shard.to_string();
            let labels = [
                ("shard", shard.as_str()),
                ("driver", self.driver.metric_label()),
            ];
            assert_eq!(
                metrics.value("veza_shard_driver", &labels),
                Some(1.0),
                "shard {shard} must report driver {}; the server reported:\n{}",
                self.driver.metric_label(),
                metrics.lines_of("veza_shard_driver"),
            );
        }
    }

    /// The server's listening address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The driver the server runs on.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// The number of shards the server runs.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `ws://` URL for `path` on this server.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// `GET path` on a new connection.
    pub fn get(&self, path: &str) -> http::Response {
        http::get(self.addr(), path)
    }

    /// The current metrics.
    pub fn metrics(&self) -> Metrics {
        Metrics::fetch(self.addr())
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        let stdout = std::fs::read_to_string(&self.stdout_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        format!("[stdout]\n{stdout}\n[stderr]\n{stderr}")
    }

    /// Sends `signal` (for example `libc::SIGTERM`) to the server process.
    pub fn signal(&mut self, signal: libc::c_int) {
        // The child is not reaped yet, so its pid cannot have been reused.
        if self
            .child
            .try_wait()
            .expect("poll the server process")
            .is_none()
        {
            let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
            // SAFETY: kill(2) takes plain integers and has no memory effects.
            let result = unsafe { libc::kill(pid, signal) };
            assert_eq!(result, 0, "kill({pid}, {signal}) failed");
        }
    }

    /// Waits up to `limit` for the process to exit; `None` if it still runs.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server process") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL if it is still running after
    /// [`STOP_TIMEOUT`]. Returns how it ended.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_for_exit(STOP_TIMEOUT) {
            return status;
        }
        eprintln!(
            "server {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
            self.pid()
        );
        let _ = self.child.kill();
        self.child.wait().expect("reap the killed server")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- log of the {} server on port {} ---\n{}",
                self.driver.metric_label(),
                self.port,
                self.log()
            );
        }
    }
}

fn append_to(path: &PathBuf) -> File {
    // Append mode, so stdout and stderr handles never overwrite each other.
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open a server log file")
}
