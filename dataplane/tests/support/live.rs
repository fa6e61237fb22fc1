//! Live audio test world: a real control plane and a two-shard data plane,
//! streams made over REST, sources (ffmpeg itself, or a raw client that
//! sends ffmpeg's output with exactly the headers and framing a test
//! wants), listeners that capture to memory with arrival times, a small
//! Ogg page parser, and the external checkers a broadcaster would trust
//! (`opusinfo`, `oggz-validate`, `ffprobe`, an `ffmpeg` decode).
//!
//! Every process started here (ffmpeg encoders and sources) is held by a
//! [`ChildGuard`] that kills it by pid when dropped; every thread (listener
//! captures, source pumps) has a stop flag and is joined on drop; every
//! wait has a limit.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::control_plane::{data_plane_options, ControlPlane};
use super::http::{self, HttpConnection, Response};
use super::metrics::Metrics;
use super::{eventually, Driver, TestServer};

/// Opus's (and every stream's here) sample rate.
pub const SAMPLE_RATE_HZ: u64 = 48_000;
/// A 440 Hz tone, as in the ffmpeg examples.
pub const SINE: &str = "sine=frequency=440:sample_rate=48000";
/// Pink noise: Opus spends its whole budget on it, so renditions differ in
/// size as their bitrates do (a pure tone is too cheap to show it).
pub const NOISE: &str = "anoisesrc=color=pink:sample_rate=48000:amplitude=0.3";
/// How long one listener or source socket operation may block.
const SOCKET_POLL: Duration = Duration::from_millis(100);
/// Bytes a source pump writes at once.
const PUMP_CHUNK_BYTES: usize = 4096;
/// Most listeners [`LiveWorld::listeners_on_every_shard`] opens before it
/// gives up on the kernel spreading them.
const SPREAD_LISTENERS_MAX: usize = 24;
/// A response head longer than this is a server bug.
const HEAD_BYTES_MAX: usize = 64 * 1024;

/// Live tests run one at a time: each streams audio in real time (ffmpeg
/// `-re`, the grace period's silence, arrival-gap checks), and two of them
/// sharing the machine's cores with their servers, encoders and checkers
/// would make those real-time assertions measure the machine instead of
/// the server.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A control plane, a data plane connected to it, and the instance admin
/// who owns the streams.
pub struct LiveWorld {
    /// The data plane (dropped first).
    pub server: TestServer,
    /// The control plane.
    pub control: ControlPlane,
    /// The admin's access token (the owner of every stream made here).
    pub admin_token: String,
    /// Where captures are written for the external checkers.
    pub dir: tempfile::TempDir,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl LiveWorld {
    /// Starts both processes; `env` goes to the data plane.
    pub fn start(driver: Driver, env: &[(&str, &str)]) -> LiveWorld {
        // A test that failed while holding the lock poisons it; the next
        // one starts its own processes, so the lock is taken anyway.
        let one_at_a_time = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let control = ControlPlane::start();
        let server = data_plane_options(driver, &control).envs(env).start();
        let admin_token = control.admin_token();
        LiveWorld {
            server,
            control,
            admin_token,
            dir: tempfile::tempdir().expect("capture directory"),
            _one_at_a_time: one_at_a_time,
        }
    }

    /// `POST /v1/streams` as the admin; returns the stream key.
    pub fn create_stream(&self, name: &str, title: &str) -> String {
        let (status, body) = self.control.rest(
            "POST",
            "/v1/streams",
            Some(&self.admin_token),
            json!({"name": name, "title": title}),
        );
        assert_eq!(status, 201, "POST /v1/streams {name}: {body}");
        body["stream_key"]
            .as_str()
            .unwrap_or_else(|| panic!("POST /v1/streams answers a stream_key: {body}"))
            .to_owned()
    }

    /// A new user (not the admin), logged in; returns the access token.
    pub fn other_user_token(&self, username: &str) -> String {
        let password = "oboe-marimba-9-cello";
        let (status, body) = self.control.rest(
            "POST",
            "/v1/accounts",
            None,
            json!({"username": username, "email": format!("{username}@example.org"), "password": password}),
        );
        assert_eq!(status, 201, "register {username}: {body}");
        let (status, body) = self.control.rest(
            "POST",
            "/v1/sessions",
            None,
            json!({"login": username, "password": password}),
        );
        assert_eq!(status, 200, "login {username}: {body}");
        body["access_token"].as_str().expect("token").to_owned()
    }

    /// `GET /v1/live/{name}/status`: `Some(status)` when live, `None` when
    /// the answer is 404 `stream_offline`.
    pub fn stream_status(&self, name: &str) -> Option<Value> {
        let response = self.server.get(&format!("/v1/live/{name}/status"));
        if response.status == 404 {
            response.assert_error(404, "stream_offline");
            return None;
        }
        assert_eq!(
            response.status,
            200,
            "GET /v1/live/{name}/status: {}",
            response.body_text()
        );
        Some(response.json())
    }

    /// Waits until `name` is live with its source sending and at least one
    /// page made (so listeners get headers at once); returns its status.
    pub fn wait_until_live(&self, name: &str) -> Value {
        eventually(
            Duration::from_secs(10),
            "the stream goes live",
            || match self.stream_status(name) {
                Some(status)
                    if status["source"]["state"] == "live"
                        && status["pages"].as_u64().unwrap_or(0) >= 1 =>
                {
                    Ok(status)
                }
                Some(status) => Err(format!("status {status}")),
                None => Err("offline".to_owned()),
            },
        )
    }

    /// Waits until `check` accepts the stream's status.
    pub fn wait_for_status(
        &self,
        name: &str,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Value) -> bool,
    ) -> Value {
        eventually(limit, what, || match self.stream_status(name) {
            Some(status) if check(&status) => Ok(status),
            Some(status) => Err(format!("status {status}")),
            None => Err("offline".to_owned()),
        })
    }

    /// Waits until `name` is offline (404 `stream_offline`).
    pub fn wait_until_offline(&self, name: &str, limit: Duration) {
        eventually(limit, "the stream ends", || {
            match self.stream_status(name) {
                None => Ok(()),
                Some(status) => Err(format!("still listed: {status}")),
            }
        });
    }

    /// A listener of `path` (for example `/v1/live/radio?br=64`).
    pub fn listen(&self, path: &str) -> Listener {
        Listener::start(self.server.addr(), path)
    }

    /// Listeners of `path`, at least `count`, until both shards accepted at
    /// least one. The kernel picks each connection's shard (SO_REUSEPORT),
    /// so this keeps connecting until both are used; per-shard accept
    /// counters read over one kept-alive connection tell where they went.
    pub fn listeners_on_every_shard(&self, path: &str, count: usize) -> Vec<Listener> {
        let mut scraper = HttpConnection::open(self.server.addr());
        let before = accepted_per_shard(&mut scraper, self.server.shards());
        let mut listeners = Vec::new();
        while listeners.len() < SPREAD_LISTENERS_MAX {
            let listener = self.listen(path);
            let status = listener.wait_for_head(Duration::from_secs(5));
            assert_eq!(status, 200, "listener of {path}");
            listeners.push(listener);
            if listeners.len() < count {
                continue;
            }
            let after = accepted_per_shard(&mut scraper, self.server.shards());
            let per_shard: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
            if per_shard.iter().all(|accepted| *accepted >= 1.0) {
                eprintln!(
                    "{} listeners, accepted per shard: {per_shard:?}",
                    listeners.len()
                );
                return listeners;
            }
        }
        panic!("{SPREAD_LISTENERS_MAX} listeners never reached every shard");
    }

    /// A path for a capture file in this world's directory.
    pub fn capture_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The current metrics.
    pub fn metrics(&self) -> Metrics {
        self.server.metrics()
    }

    /// `icecast://source:KEY@127.0.0.1:PORT/v1/live/{name}`.
    pub fn icecast_url(&self, key: &str, name: &str) -> String {
        format!(
            "icecast://source:{key}@127.0.0.1:{}/v1/live/{name}",
            self.server.port()
        )
    }

    /// `http://source:KEY@127.0.0.1:PORT/v1/live/{name}`.
    pub fn http_url(&self, key: &str, name: &str) -> String {
        format!(
            "http://source:{key}@127.0.0.1:{}/v1/live/{name}",
            self.server.port()
        )
    }
}

/// Unix time in milliseconds, to compare with the status's timestamps.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn accepted_per_shard(scraper: &mut HttpConnection, shards: usize) -> Vec<f64> {
    let response = scraper.request(&http::get_request("/metrics"));
    assert_eq!(response.status, 200, "GET /metrics");
    let metrics = Metrics::parse(&response.body_text());
    (0..shards)
        .map(|shard| {
            metrics
                .value(
                    "veza_connections_accepted_total",
                    &[("shard", &shard.to_string())],
                )
                .unwrap_or(0.0)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Processes

/// A child process killed by its pid (SIGKILL) when dropped, with its
/// stderr kept in a file for failure messages.
pub struct ChildGuard {
    child: Child,
    name: String,
    log: tempfile::NamedTempFile,
    exit: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `command` (whose stdout the caller may have piped) with
    /// stderr to a log file.
    pub fn spawn(name: &str, mut command: Command) -> ChildGuard {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let stderr = log.reopen().expect("reopen the log file");
        let child = command
            .stdin(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {name}: {error}"));
        ChildGuard {
            child,
            name: name.to_owned(),
            log,
            exit: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stdout, once (when it was piped).
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("{}'s stdout is piped and taken once", self.name))
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits up to `limit` for it to exit by itself.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit {
                return Some(status);
            }
            if let Some(status) = self.child.try_wait().expect("poll a child") {
                self.exit = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails the test unless it exits with status 0 within `limit`.
    pub fn assert_exits_successfully(&mut self, limit: Duration) {
        match self.wait_for_exit(limit) {
            Some(status) if status.success() => {}
            Some(status) => panic!("{} exited with {status}:\n{}", self.name, self.log()),
            None => panic!("{} still runs after {limit:?}:\n{}", self.name, self.log()),
        }
    }

    /// Sends `signal` if it still runs, then reaps it.
    pub fn signal_and_reap(&mut self, signal: libc::c_int) {
        if self.wait_for_exit(Duration::ZERO).is_some() {
            return;
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) takes plain integers and has no memory effects;
        // the child is not reaped yet, so the pid is still ours.
        unsafe { libc::kill(pid, signal) };
        if self.wait_for_exit(Duration::from_secs(5)).is_none() {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            self.exit = Some(self.child.wait().expect("reap a killed child"));
        }
    }

    /// Kills it at once (SIGKILL): a source that drops.
    pub fn kill(&mut self) {
        self.signal_and_reap(libc::SIGKILL);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {} (pid {}) stderr ---\n{}",
                self.name,
                self.pid(),
                self.log()
            );
        }
    }
}

/// `ffmpeg`, quiet, never reading stdin, with `args`.
pub fn ffmpeg_command(args: &[&str]) -> Command {
    let mut command = Command::new("ffmpeg");
    command
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(args);
    command
}

/// ffmpeg itself as the source: encodes `lavfi` for `seconds` in real time
/// (`-re`) to Ogg Opus at 64 kb/s and sends it to `url` (an `icecast://`
/// or `http://` URL); `output_args` go before the URL (protocol options).
pub fn ffmpeg_source(lavfi: &str, seconds: u32, output_args: &[&str], url: &str) -> ChildGuard {
    let seconds = seconds.to_string();
    let mut args = vec![
        "-re", "-f", "lavfi", "-i", lavfi, "-t", &seconds, "-ac", "2", "-c:a", "libopus", "-b:a",
        "64k", "-f", "ogg",
    ];
    args.extend_from_slice(output_args);
    args.push(url);
    ChildGuard::spawn("ffmpeg source", ffmpeg_command(&args))
}

/// ffmpeg encoding `lavfi` for `seconds` to Ogg Opus on its stdout, in
/// real time (`-re`) or as fast as it can, with 100 ms Ogg pages flushed
/// at once so the data arrives smoothly.
pub fn ogg_opus_encoder(
    lavfi: &str,
    seconds: u32,
    bitrate_kbps: u32,
    real_time: bool,
) -> ChildGuard {
    let seconds = seconds.to_string();
    let bitrate = format!("{bitrate_kbps}k");
    let mut args = Vec::new();
    if real_time {
        args.push("-re");
    }
    args.extend([
        "-f",
        "lavfi",
        "-i",
        lavfi,
        "-t",
        &seconds,
        "-ac",
        "2",
        "-c:a",
        "libopus",
        "-b:a",
        &bitrate,
        "-page_duration",
        "100000",
        "-flush_packets",
        "1",
        "-f",
        "ogg",
        "pipe:1",
    ]);
    let mut command = ffmpeg_command(&args);
    command.stdout(Stdio::piped());
    ChildGuard::spawn("ffmpeg Ogg Opus encoder", command)
}

/// ffmpeg writing `lavfi` for `seconds` as big-endian s16 stereo 48 kHz PCM
/// on its stdout, in real time.
pub fn pcm_encoder(lavfi: &str, seconds: u32) -> ChildGuard {
    let seconds = seconds.to_string();
    let mut command = ffmpeg_command(&[
        "-re",
        "-f",
        "lavfi",
        "-i",
        lavfi,
        "-t",
        &seconds,
        "-ac",
        "2",
        "-ar",
        "48000",
        "-flush_packets",
        "1",
        "-f",
        "s16be",
        "pipe:1",
    ]);
    command.stdout(Stdio::piped());
    ChildGuard::spawn("ffmpeg PCM encoder", command)
}

/// All of an encoder's output, waiting at most `limit`.
pub fn encoder_output(mut encoder: ChildGuard, limit: Duration) -> Vec<u8> {
    let mut stdout = encoder.take_stdout();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).map(|_| bytes)
    });
    encoder.assert_exits_successfully(limit);
    reader
        .join()
        .expect("reader thread")
        .expect("read the encoder's output")
}

// ---------------------------------------------------------------------------
// Sources

/// The `Authorization` a source sends.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Basic auth, user `source`, the stream key as password.
    StreamKey(String),
    /// `Bearer <token>`.
    Bearer(String),
    /// None at all.
    Missing,
}

impl Credential {
    /// The `Authorization` value, if any.
    pub fn authorization(&self) -> Option<String> {
        match self {
            Credential::StreamKey(key) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("source:{key}"))
            )),
            Credential::Bearer(token) => Some(format!("Bearer {token}")),
            Credential::Missing => None,
        }
    }
}

/// How a source's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length: n`.
    ContentLength(u64),
    /// Neither: the body runs until the connection closes (Icecast).
    UntilClose,
}

/// The request head of a source.
#[derive(Debug, Clone)]
pub struct SourceRequest {
    /// `PUT` or `SOURCE`.
    pub method: &'static str,
    /// The stream name.
    pub stream: String,
    /// The credential.
    pub credential: Credential,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body's framing.
    pub framing: Framing,
    /// Sends `Expect: 100-continue`.
    pub expect_continue: bool,
}

impl SourceRequest {
    /// `PUT /v1/live/{stream}` of Ogg Opus with the stream key, no length.
    pub fn ogg(stream: &str, key: &str) -> SourceRequest {
        SourceRequest {
            method: "PUT",
            stream: stream.to_owned(),
            credential: Credential::StreamKey(key.to_owned()),
            content_type: Some("audio/ogg".to_owned()),
            framing: Framing::UntilClose,
            expect_continue: false,
        }
    }

    /// `PUT /v1/live/{stream}` of raw stereo 48 kHz PCM, chunked.
    pub fn pcm(stream: &str, key: &str) -> SourceRequest {
        SourceRequest {
            content_type: Some("audio/L16;rate=48000;channels=2".to_owned()),
            framing: Framing::Chunked,
            ..SourceRequest::ogg(stream, key)
        }
    }

    fn head(&self) -> Vec<u8> {
        let mut head = format!(
            "{} /v1/live/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: veza-live-test\r\n",
            self.method, self.stream
        );
        if let Some(value) = self.credential.authorization() {
            head.push_str(&format!("Authorization: {value}\r\n"));
        }
        if let Some(content_type) = &self.content_type {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        match self.framing {
            Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
            Framing::ContentLength(length) => {
                head.push_str(&format!("Content-Length: {length}\r\n"))
            }
            Framing::UntilClose => {}
        }
        if self.expect_continue {
            head.push_str("Expect: 100-continue\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

/// How fast a pump sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As fast as the body's reader gives bytes (an encoder with `-re`
    /// paces itself).
    AsReadable,
    /// At most this many bytes per second.
    BytesPerSecond(u64),
}

/// How a pump ended.
#[derive(Debug)]
pub enum PumpEnd {
    /// The body's reader ended and the body was terminated (chunked).
    BodyEnded,
    /// The test stopped it.
    Stopped,
    /// A write failed (the server closed or reset the connection).
    WriteFailed(io::Error),
    /// The body's reader failed.
    ReaderFailed(io::Error),
}

struct Pump {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<PumpEnd>>,
    sent_bytes: Arc<AtomicU64>,
}

/// A source connection from this process: the head as the test chose it,
/// then a body pumped by a thread from any reader (an encoder's stdout,
/// bytes in memory, garbage).
pub struct RawSource {
    connection: HttpConnection,
    framing: Framing,
    pump: Option<Pump>,
    encoder: Option<ChildGuard>,
}

impl RawSource {
    /// Connects and sends the head of `request`.
    pub fn connect(addr: SocketAddr, request: &SourceRequest) -> RawSource {
        let mut connection = HttpConnection::open(addr);
        connection.send(&request.head());
        RawSource {
            connection,
            framing: request.framing,
            pump: None,
            encoder: None,
        }
    }

    /// Reads the next response, body included.
    pub fn read_response(&mut self) -> Response {
        self.connection.read_response()
    }

    /// Reads the next response's head only (an answer whose body would run
    /// to the connection's end, like Icecast's `HTTP/1.0 200 OK`).
    pub fn read_response_head(&mut self) -> Response {
        self.connection.read_response_to_head()
    }

    /// The next response, or how the connection ended instead (a read
    /// timeout means the server neither answered nor closed).
    pub fn response_or_end(&mut self) -> io::Result<Response> {
        self.connection.try_read_response(false)
    }

    /// Pumps `body` in a thread.
    pub fn pump(&mut self, body: Box<dyn Read + Send>, pace: Pace) {
        assert!(self.pump.is_none(), "one pump per source");
        let socket = self
            .connection
            .stream()
            .try_clone()
            .expect("clone the source socket");
        let stop = Arc::new(AtomicBool::new(false));
        let sent_bytes = Arc::new(AtomicU64::new(0));
        let framing = self.framing;
        let thread = {
            let stop = stop.clone();
            let sent_bytes = sent_bytes.clone();
            std::thread::spawn(move || run_pump(socket, body, pace, framing, &stop, &sent_bytes))
        };
        self.pump = Some(Pump {
            stop,
            thread: Some(thread),
            sent_bytes,
        });
    }

    /// Pumps an encoder's stdout as it comes; the encoder is killed with
    /// the source.
    pub fn pump_encoder(&mut self, mut encoder: ChildGuard) {
        let stdout = encoder.take_stdout();
        self.encoder = Some(encoder);
        self.pump(Box::new(stdout), Pace::AsReadable);
    }

    /// Body bytes sent so far (without chunk framing).
    pub fn sent_bytes(&self) -> u64 {
        self.pump
            .as_ref()
            .map_or(0, |pump| pump.sent_bytes.load(Ordering::Relaxed))
    }

    /// Waits up to `limit` for the pump to end by itself.
    pub fn wait_for_body_end(&mut self, limit: Duration) -> PumpEnd {
        let pump = self.pump.as_mut().expect("a pump runs");
        let thread = pump.thread.take().expect("the pump was not joined yet");
        let deadline = Instant::now() + limit;
        while !thread.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the source's body did not end within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        thread.join().expect("pump thread")
    }

    /// Waits for the body to end, half-closes when the body runs until the
    /// close, and reads the final response.
    pub fn finish(&mut self, limit: Duration) -> Response {
        let end = self.wait_for_body_end(limit);
        assert!(
            matches!(end, PumpEnd::BodyEnded),
            "the body must be sent whole, the pump ended with {end:?}"
        );
        if self.framing == Framing::UntilClose {
            self.connection
                .stream()
                .shutdown(Shutdown::Write)
                .expect("half-close the source");
        }
        self.read_response()
    }

    /// The source drops: the pump stops mid-body, the encoder is killed and
    /// the connection closed (no chunked terminator, no half-close).
    pub fn drop_connection(mut self) {
        self.stop_everything();
    }

    fn stop_everything(&mut self) {
        if let Some(pump) = self.pump.as_mut() {
            pump.stop.store(true, Ordering::Relaxed);
        }
        if let Some(encoder) = self.encoder.as_mut() {
            encoder.kill();
        }
        let _ = self.connection.stream().shutdown(Shutdown::Both);
        if let Some(pump) = self.pump.as_mut() {
            if let Some(thread) = pump.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for RawSource {
    fn drop(&mut self) {
        self.stop_everything();
    }
}

fn run_pump(
    mut socket: TcpStream,
    mut body: Box<dyn Read + Send>,
    pace: Pace,
    framing: Framing,
    stop: &AtomicBool,
    sent_bytes: &AtomicU64,
) -> PumpEnd {
    let started = Instant::now();
    let mut chunk = vec![0u8; PUMP_CHUNK_BYTES];
    let mut total: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return PumpEnd::Stopped;
        }
        let n_read = match body.read(&mut chunk) {
            Ok(0) => break,
            Ok(n_read) => n_read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return PumpEnd::ReaderFailed(error),
        };
        if let Pace::BytesPerSecond(rate) = pace {
            let due = Duration::from_secs_f64(total as f64 / rate as f64);
            // Bounded by the due time, checked against the stop flag.
            while started.elapsed() < due {
                if stop.load(Ordering::Relaxed) {
                    return PumpEnd::Stopped;
                }
                std::thread::sleep((due - started.elapsed()).min(Duration::from_millis(20)));
            }
        }
        if stop.load(Ordering::Relaxed) {
            return PumpEnd::Stopped;
        }
        let data = &chunk[..n_read];
        let written = match framing {
            Framing::Chunked => {
                let mut framed = format!("{n_read:x}\r\n").into_bytes();
                framed.extend_from_slice(data);
                framed.extend_from_slice(b"\r\n");
                socket.write_all(&framed)
            }
            Framing::ContentLength(_) | Framing::UntilClose => socket.write_all(data),
        };
        if let Err(error) = written {
            return PumpEnd::WriteFailed(error);
        }
        total += n_read as u64;
        sent_bytes.store(total, Ordering::Relaxed);
    }
    if framing == Framing::Chunked {
        if let Err(error) = socket.write_all(b"0\r\n\r\n") {
            return PumpEnd::WriteFailed(error);
        }
    }
    PumpEnd::BodyEnded
}

/// `n` bytes that are not Ogg (xorshift, so a failure is reproducible).
pub fn garbage(n: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Listeners

/// How a listener's connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CaptureEnd {
    /// The server closed it (end of stream).
    ClosedByServer,
    /// The server reset it.
    Reset(String),
    /// The test stopped listening.
    Stopped,
    /// Connecting or reading failed otherwise.
    Failed(String),
}

/// What a listener received.
#[derive(Debug, Clone)]
pub struct Capture {
    /// The response's status (0 if no head arrived).
    pub status: u16,
    /// The response's header fields.
    pub headers: Vec<(String, String)>,
    /// Everything after the head.
    pub body: Vec<u8>,
    /// (time since the request, body bytes so far) at each read.
    pub arrivals: Vec<(Duration, usize)>,
    /// How it ended.
    pub end: CaptureEnd,
    /// When it ended, since the request.
    pub ended_after: Duration,
}

impl Capture {
    /// The first value of header `name`, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The longest time between two reads that brought data, from the
    /// first body byte to the end of the capture.
    pub fn longest_silence(&self) -> Duration {
        let mut times: Vec<Duration> = self.arrivals.iter().map(|(time, _)| *time).collect();
        times.push(self.ended_after);
        times
            .windows(2)
            .map(|pair| pair[1].saturating_sub(pair[0]))
            .max()
            .unwrap_or_default()
    }

    /// Body bytes received by `time` (since the request).
    pub fn body_bytes_at(&self, time: Duration) -> usize {
        self.arrivals
            .iter()
            .take_while(|(at, _)| *at <= time)
            .last()
            .map_or(0, |(_, bytes)| *bytes)
    }
}

#[derive(Default)]
struct Progress {
    status: AtomicUsize,
    body_bytes: AtomicUsize,
    ended: AtomicBool,
}

/// A listener reading in its own thread until the server closes or the
/// test stops it.
pub struct Listener {
    path: String,
    started: Instant,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    thread: Option<JoinHandle<Capture>>,
}

impl Listener {
    /// `GET path` on a new connection to `addr`, captured in a thread.
    pub fn start(addr: SocketAddr, path: &str) -> Listener {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: veza-live-test\r\nIcy-MetaData: 0\r\n\r\n"
        )
        .into_bytes();
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let started = Instant::now();
        let thread = {
            let stop = stop.clone();
            let progress = progress.clone();
            std::thread::spawn(move || capture(addr, &request, started, &stop, &progress))
        };
        Listener {
            path: path.to_owned(),
            started,
            stop,
            progress,
            thread: Some(thread),
        }
    }

    /// When the request was made.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits for the response head; returns its status.
    pub fn wait_for_head(&self, limit: Duration) -> u16 {
        eventually(
            limit,
            &format!("a response head for GET {}", self.path),
            || {
                match self.progress.status.load(Ordering::Relaxed) {
                    0 if self.progress.ended.load(Ordering::Relaxed) => {
                        Ok(0) // Ended without a head; the capture says why.
                    }
                    0 => Err("no head yet".to_owned()),
                    status => Ok(status as u16),
                }
            },
        )
    }

    /// Body bytes received so far.
    pub fn body_bytes(&self) -> usize {
        self.progress.body_bytes.load(Ordering::Relaxed)
    }

    /// Whether the connection ended.
    pub fn has_ended(&self) -> bool {
        self.progress.ended.load(Ordering::Relaxed)
    }

    /// Waits until more than `bytes` body bytes arrived.
    pub fn wait_for_more_than(&self, bytes: usize, limit: Duration) {
        eventually(
            limit,
            &format!("GET {} receives more than {bytes} bytes", self.path),
            || {
                let received = self.body_bytes();
                if received > bytes {
                    Ok(())
                } else if self.has_ended() {
                    Err(format!("the connection ended after {received} bytes"))
                } else {
                    Err(format!("{received} bytes"))
                }
            },
        )
    }

    /// Stops listening; returns what arrived.
    pub fn stop(mut self) -> Capture {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits up to `limit` for the server to end the connection; fails the
    /// test (showing what arrived) if it does not.
    pub fn wait_for_end(mut self, limit: Duration) -> Capture {
        let deadline = Instant::now() + limit;
        while !self.has_ended() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let ended = self.has_ended();
        self.stop.store(true, Ordering::Relaxed);
        let capture = self.join();
        assert!(
            ended,
            "GET {}: the server did not end the connection within {limit:?} ({} body bytes)",
            self.path,
            capture.body.len()
        );
        capture
    }

    fn join(&mut self) -> Capture {
        self.thread
            .take()
            .expect("joined once")
            .join()
            .expect("listener thread")
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn capture(
    addr: SocketAddr,
    request: &[u8],
    started: Instant,
    stop: &AtomicBool,
    progress: &Progress,
) -> Capture {
    let mut result = Capture {
        status: 0,
        headers: Vec::new(),
        body: Vec::new(),
        arrivals: Vec::new(),
        end: CaptureEnd::Stopped,
        ended_after: Duration::ZERO,
    };
    let connected = TcpStream::connect_timeout(&addr, http::IO_TIMEOUT).and_then(|mut stream| {
        stream.set_read_timeout(Some(SOCKET_POLL))?;
        stream.set_write_timeout(Some(http::IO_TIMEOUT))?;
        stream.write_all(request)?;
        Ok(stream)
    });
    let mut stream = match connected {
        Ok(stream) => stream,
        Err(error) => {
            result.end = CaptureEnd::Failed(format!("connect and send: {error}"));
            progress.ended.store(true, Ordering::Relaxed);
            return result;
        }
    };
    let mut head: Option<usize> = None;
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    // Bounded by the stop flag, checked at least every SOCKET_POLL.
    result.end = loop {
        if stop.load(Ordering::Relaxed) {
            break CaptureEnd::Stopped;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break CaptureEnd::ClosedByServer,
            Ok(n_read) => raw.extend_from_slice(&chunk[..n_read]),
            Err(error) if http::is_timeout(&error) => continue,
            Err(error) if http::is_reset(&error) => break CaptureEnd::Reset(error.to_string()),
            Err(error) => break CaptureEnd::Failed(error.to_string()),
        }
        if head.is_none() {
            match parse_head(&raw) {
                Ok(Some(parsed)) => {
                    head = Some(parsed.length);
                    result.status = parsed.status;
                    result.headers = parsed.headers;
                    progress
                        .status
                        .store(parsed.status as usize, Ordering::Relaxed);
                }
                Ok(None) => continue,
                Err(reason) => break CaptureEnd::Failed(reason),
            }
        }
        let body_bytes = raw.len() - head.expect("parsed");
        result.arrivals.push((started.elapsed(), body_bytes));
        progress.body_bytes.store(body_bytes, Ordering::Relaxed);
    };
    result.ended_after = started.elapsed();
    if let Some(length) = head {
        result.body = raw.split_off(length);
    }
    progress.ended.store(true, Ordering::Relaxed);
    result
}

/// A response head parsed from raw bytes.
struct ParsedHead {
    /// Bytes of the head, blank line included.
    length: usize,
    status: u16,
    headers: Vec<(String, String)>,
}

/// Parses a response head at the start of `raw`; `None` while incomplete.
fn parse_head(raw: &[u8]) -> Result<Option<ParsedHead>, String> {
    let Some(end) = raw.windows(4).position(|window| window == b"\r\n\r\n") else {
        return if raw.len() > HEAD_BYTES_MAX {
            Err("response head too long".to_owned())
        } else {
            Ok(None)
        };
    };
    let text = String::from_utf8_lossy(&raw[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not a status line: {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(Some(ParsedHead {
        length: end + 4,
        status,
        headers,
    }))
}

/// A listener that sends its request and then never reads: a receive
/// buffer of 4 KiB and a maximum segment of 1000 bytes keep what the
/// server's kernel buffers for it near 100 KiB (with the loopback's 64 KiB
/// segments the send buffer autotunes to megabytes), so the server's own
/// per-listener queue is what fills.
pub struct StalledListener {
    stream: TcpStream,
}

impl StalledListener {
    /// Connects and sends `GET path`.
    pub fn connect(addr: SocketAddr, path: &str) -> StalledListener {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("create a socket");
        socket.set_recv_buffer_size(4096).expect("set SO_RCVBUF");
        socket.set_tcp_mss(1000).expect("set TCP_MAXSEG");
        socket
            .connect_timeout(&addr.into(), http::IO_TIMEOUT)
            .unwrap_or_else(|error| panic!("connect to {addr}: {error}"));
        let mut stream: TcpStream = socket.into();
        stream
            .set_write_timeout(Some(http::IO_TIMEOUT))
            .expect("set a write timeout");
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .expect("send the request");
        StalledListener { stream }
    }

    /// Starts reading at last: everything until the server ends the
    /// connection, or `limit`.
    pub fn drain(mut self, limit: Duration) -> (Vec<u8>, CaptureEnd) {
        let deadline = Instant::now() + limit;
        self.stream
            .set_read_timeout(Some(SOCKET_POLL))
            .expect("set a read timeout");
        let mut raw = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        // Bounded by the deadline.
        let end = loop {
            if Instant::now() >= deadline {
                break CaptureEnd::Stopped;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => break CaptureEnd::ClosedByServer,
                Ok(n_read) => raw.extend_from_slice(&chunk[..n_read]),
                Err(error) if http::is_timeout(&error) => continue,
                Err(error) if http::is_reset(&error) => break CaptureEnd::Reset(error.to_string()),
                Err(error) => break CaptureEnd::Failed(error.to_string()),
            }
        };
        (raw, end)
    }
}

/// Splits a raw response into its status and body (after the head).
pub fn split_response(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    match parse_head(raw) {
        Ok(Some(parsed)) => (parsed.status, parsed.headers, raw[parsed.length..].to_vec()),
        _ => panic!(
            "no response head in {} bytes: {:?}",
            raw.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        ),
    }
}

// ---------------------------------------------------------------------------
// Ogg

/// One Ogg page as it arrived.
#[derive(Debug, Clone)]
pub struct OggPage {
    /// Flags: 1 continued packet, 2 first page (BOS), 4 last page (EOS).
    pub header_type: u8,
    /// The granule position (`u64::MAX`: no packet ends on this page).
    pub granule: u64,
    /// The logical stream's serial number.
    pub serial: u32,
    /// The page sequence number.
    pub seq: u32,
    /// Whether the CRC matches.
    pub crc_ok: bool,
    /// The whole page.
    pub bytes: Vec<u8>,
    /// Where the body starts in `bytes`.
    pub body_start: usize,
}

impl OggPage {
    /// The first page of its stream.
    pub fn is_bos(&self) -> bool {
        self.header_type & 0x02 != 0
    }

    /// The last page of its stream.
    pub fn is_eos(&self) -> bool {
        self.header_type & 0x04 != 0
    }

    /// The page's body (packet data).
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.body_start..]
    }
}

/// The pages at the start of `bytes`, and how many bytes they cover (an
/// incomplete last page, as a stopped capture ends, is left out). Anything
/// that is not a page where one must start is an error.
pub fn parse_ogg(bytes: &[u8]) -> Result<(Vec<OggPage>, usize), String> {
    let mut pages = Vec::new();
    let mut offset = 0;
    while bytes.len() - offset >= 27 {
        let page = &bytes[offset..];
        if &page[..4] != b"OggS" {
            return Err(format!(
                "no OggS capture pattern at byte {offset} (after {} pages): {:02x?}",
                pages.len(),
                &page[..page.len().min(16)]
            ));
        }
        if page[4] != 0 {
            return Err(format!("Ogg version {} at byte {offset}", page[4]));
        }
        let segment_count = page[26] as usize;
        if page.len() < 27 + segment_count {
            break;
        }
        let body_length: usize = page[27..27 + segment_count]
            .iter()
            .map(|&n| n as usize)
            .sum();
        let length = 27 + segment_count + body_length;
        if page.len() < length {
            break;
        }
        let whole = page[..length].to_vec();
        let stored_crc = u32::from_le_bytes(whole[22..26].try_into().expect("4 bytes"));
        let mut zeroed = whole.clone();
        zeroed[22..26].fill(0);
        pages.push(OggPage {
            header_type: whole[5],
            granule: u64::from_le_bytes(whole[6..14].try_into().expect("8 bytes")),
            serial: u32::from_le_bytes(whole[14..18].try_into().expect("4 bytes")),
            seq: u32::from_le_bytes(whole[18..22].try_into().expect("4 bytes")),
            crc_ok: ogg_crc(&zeroed) == stored_crc,
            body_start: 27 + segment_count,
            bytes: whole,
        });
        offset += length;
    }
    Ok((pages, offset))
}

/// Ogg's CRC-32: polynomial 0x04c11db7, not reflected, initial value 0.
fn ogg_crc(bytes: &[u8]) -> u32 {
    let mut crc: u32 = 0;
    for &byte in bytes {
        crc ^= (byte as u32) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// What a captured live Ogg Opus stream looks like.
#[derive(Debug, Clone)]
pub struct LiveOgg {
    /// Every whole page, in order.
    pub pages: Vec<OggPage>,
    /// Bytes of the capture the whole pages cover.
    pub complete_bytes: usize,
    /// The one serial number.
    pub serial: u32,
    /// The OpusHead's channel count.
    pub channel_count: u8,
    /// The first page after OpusHead and OpusTags (2 when the listener
    /// heard the stream from its first audio page).
    pub first_audio_seq: u32,
    /// Whether the last page is the end of the stream.
    pub ends_with_eos: bool,
    /// Audio page sequence numbers that do not follow their predecessor:
    /// (expected, got).
    pub seq_gaps: Vec<(u32, u32)>,
    /// Granule of the first and of the last audio page with one.
    pub granule_range: (u64, u64),
    /// Bytes of audio pages after the first (for byte rates over the
    /// granule range).
    pub audio_bytes_after_first: usize,
}

impl LiveOgg {
    /// Audio duration the granules cover, in seconds.
    pub fn seconds(&self) -> f64 {
        (self.granule_range.1 - self.granule_range.0) as f64 / SAMPLE_RATE_HZ as f64
    }

    /// Bits per second over the granule range.
    pub fn bitrate_bps(&self) -> f64 {
        self.audio_bytes_after_first as f64 * 8.0 / self.seconds().max(0.001)
    }

    /// Fails the test unless the audio pages' sequence numbers are
    /// continuous.
    pub fn assert_continuous(&self, what: &str) {
        assert!(
            self.seq_gaps.is_empty(),
            "{what}: page sequence gaps (expected, got) {:?}",
            self.seq_gaps
        );
    }
}

/// Parses a listener's body as a live Ogg Opus stream and asserts what
/// holds for every listener: whole pages with valid CRCs back to back, one
/// serial, OpusHead (BOS, sequence 0) then OpusTags (sequence 1), then
/// audio pages, EOS on the last page only, granules never decreasing.
/// Sequence gaps are recorded, not asserted (a skipped listener has them).
pub fn live_ogg(body: &[u8], what: &str) -> LiveOgg {
    let (pages, complete_bytes) =
        parse_ogg(body).unwrap_or_else(|error| panic!("{what}: not Ogg: {error}"));
    assert!(
        pages.len() >= 3,
        "{what}: {} pages in {} bytes, expected OpusHead, OpusTags and audio",
        pages.len(),
        body.len()
    );
    for page in &pages {
        assert!(page.crc_ok, "{what}: page {} has a bad CRC", page.seq);
    }
    let serial = pages[0].serial;
    for page in &pages {
        assert_eq!(
            page.serial, serial,
            "{what}: one serial, page {} has another",
            page.seq
        );
    }
    let (head, tags) = (&pages[0], &pages[1]);
    assert!(head.is_bos(), "{what}: the first page is BOS");
    assert_eq!((head.seq, head.granule), (0, 0), "{what}: OpusHead page");
    assert!(
        head.body().starts_with(b"OpusHead"),
        "{what}: OpusHead first"
    );
    let channel_count = head.body()[9];
    assert_eq!((tags.seq, tags.granule), (1, 0), "{what}: OpusTags page");
    assert!(
        tags.body().starts_with(b"OpusTags"),
        "{what}: OpusTags second"
    );
    for page in &pages[1..] {
        assert!(!page.is_bos(), "{what}: page {} is a second BOS", page.seq);
    }
    for page in &pages[..pages.len() - 1] {
        assert!(
            !page.is_eos(),
            "{what}: page {} is EOS but not last",
            page.seq
        );
    }
    let audio = &pages[2..];
    let mut seq_gaps = Vec::new();
    for pair in audio.windows(2) {
        if pair[1].seq != pair[0].seq.wrapping_add(1) {
            seq_gaps.push((pair[0].seq.wrapping_add(1), pair[1].seq));
        }
    }
    let granules: Vec<u64> = audio
        .iter()
        .map(|page| page.granule)
        .filter(|granule| *granule != u64::MAX)
        .collect();
    for pair in granules.windows(2) {
        assert!(
            pair[1] >= pair[0],
            "{what}: granule decreases from {} to {}",
            pair[0],
            pair[1]
        );
    }
    LiveOgg {
        serial,
        channel_count,
        first_audio_seq: audio[0].seq,
        ends_with_eos: pages.last().expect("pages").is_eos(),
        seq_gaps,
        granule_range: (
            granules.first().copied().unwrap_or(0),
            granules.last().copied().unwrap_or(0),
        ),
        audio_bytes_after_first: audio[1..].iter().map(|page| page.bytes.len()).sum(),
        complete_bytes,
        pages,
    }
}

/// Fails the test unless listeners that heard the same page (by sequence
/// number) got the same bytes, headers included.
pub fn assert_same_pages(streams: &[(&str, &LiveOgg)]) {
    let (first_name, first) = streams[0];
    let by_seq: std::collections::BTreeMap<u32, &OggPage> =
        first.pages.iter().map(|page| (page.seq, page)).collect();
    for (name, stream) in &streams[1..] {
        let mut common = 0;
        for page in &stream.pages {
            if let Some(other) = by_seq.get(&page.seq) {
                assert!(
                    other.bytes == page.bytes,
                    "{name} and {first_name} got different bytes for page {}",
                    page.seq
                );
                common += 1;
            }
        }
        assert!(
            common >= 3,
            "{name} and {first_name} share only {common} pages"
        );
    }
}

// ---------------------------------------------------------------------------
// External checkers

/// Writes the whole pages of `stream` (from `body`) to `path`.
pub fn write_capture(path: &Path, body: &[u8], stream: &LiveOgg) {
    std::fs::write(path, &body[..stream.complete_bytes]).expect("write a capture");
}

/// Runs a checker; returns its status, stdout and stderr.
fn run_tool(program: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("run {program} (installed by scripts/setup.sh): {error}"));
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs every checker on the capture at `path`, whose parse is `stream`:
/// `opusinfo` (no warnings but the two a mid-stream joiner or a capture
/// cut before its end must cause), `oggz-validate` (no errors),
/// `ffprobe` (Opus, `channel_count` channels, 48 kHz) and a full decode.
pub fn assert_tools_accept(path: &Path, stream: &LiveOgg, channel_count: u32) {
    let file = path.to_str().expect("UTF-8 path");
    let joined_mid_stream = stream.first_audio_seq > 2;

    let (status, stdout, stderr) = run_tool("opusinfo", &[file]);
    let output = format!("{stdout}{stderr}");
    let mut warnings = Vec::new();
    for line in output.lines() {
        if !(line.contains("WARNING") || line.contains("ERROR") || line.contains("error")) {
            continue;
        }
        let joiner_gap = line.contains("sequence number gap")
            && line.contains(&format!(
                "Got page {} when expecting page 2",
                stream.first_audio_seq
            ));
        let allowed = (joined_mid_stream
            && (joiner_gap || line.contains("discontinuity in stream")))
            || (!stream.ends_with_eos && line.contains("EOS not set"));
        if !allowed {
            warnings.push(line.to_owned());
        }
    }
    assert!(
        warnings.is_empty(),
        "opusinfo {file} warns:\n{}\n--- full output ---\n{output}",
        warnings.join("\n")
    );
    let warned_at_all = output.contains("WARNING");
    assert!(
        status.success() || warned_at_all,
        "opusinfo {file} failed ({status}):\n{output}"
    );
    assert!(
        output.contains(&format!("Channels: {channel_count}")),
        "opusinfo {file} reports {channel_count} channels:\n{output}"
    );

    let (status, stdout, stderr) = run_tool("oggz-validate", &[file]);
    let output = format!("{stdout}{stderr}");
    let errors: Vec<&str> = output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| !line.ends_with(": Error:"))
        .filter(|line| stream.ends_with_eos || !line.contains("missing *** eos"))
        .collect();
    assert!(
        errors.is_empty() && (status.success() || !stream.ends_with_eos),
        "oggz-validate {file} ({status}):\n{output}"
    );

    let (status, stdout, stderr) = run_tool(
        "ffprobe",
        &["-v", "error", "-show_streams", "-of", "json", file],
    );
    assert!(
        status.success() && stderr.trim().is_empty(),
        "ffprobe {file} ({status}):\n{stderr}"
    );
    let probe: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("ffprobe {file} JSON ({error}):\n{stdout}"));
    let probed = &probe["streams"][0];
    assert_eq!(probed["codec_name"], "opus", "ffprobe {file}: {probe}");
    assert_eq!(probed["channels"], channel_count, "ffprobe {file}: {probe}");
    assert_eq!(probed["sample_rate"], "48000", "ffprobe {file}: {probe}");
    assert_eq!(
        probe["streams"].as_array().map(Vec::len),
        Some(1),
        "ffprobe {file}: one stream: {probe}"
    );

    let (status, stdout, stderr) = run_tool(
        "ffmpeg",
        &[
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-i",
            file,
            "-f",
            "null",
            "-",
        ],
    );
    let output = format!("{stdout}{stderr}");
    assert!(
        status.success() && output.trim().is_empty(),
        "ffmpeg decoding {file} ({status}):\n{output}"
    );
}
