//! The child's side of `live-listeners`: the bench re-executes itself as the
//! hidden `veza-bench live-listener-process`, reads one [`ListenerJob`] (a
//! JSON line on stdin), answers `prepared`, waits for `go <start unix µs>`,
//! then opens its listeners on the fixed timetable and reports one
//! [`ListenerEvent::Finished`] line when the run's end has passed.
//!
//! The timetable is open loop: listener `i` of the run (process `i % P`
//! holds it) starts connecting at `start + i / R` whether or not earlier
//! listeners are connected yet, and every listener stops at
//! `start + (N − 1) / R + hold`. Every read and connect is bounded by that
//! end, so a child always finishes.
//!
//! Each listener is a plain HTTP/1.1 `GET` over TCP from its own source
//! address, with one read buffer of [`READ_BUFFER_BYTES`]; the body goes
//! through [`ListenerBody`] (Ogg pages, playout model).

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::timeout_at;

use crate::load_generator::source_address::source_address;

use super::ogg_listen::{ListenError, ListenerBody};

/// The hidden subcommand that runs a child.
pub const SUBCOMMAND: &str = "live-listener-process";

/// One read buffer per listener: it holds the response head (a few
/// hundred bytes from either server) and then each read of the body.
pub const READ_BUFFER_BYTES: usize = 4096;

/// The most listeners one child holds: below the 20,000 open files a
/// process may have.
pub const LISTENERS_PER_PROCESS_MAX: usize = 18_000;

/// Set once the child reported; the end of stdin then is no emergency.
static FINISHED: AtomicBool = AtomicBool::new(false);

/// What one child does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerJob {
    /// The server.
    pub address: SocketAddr,
    /// The request target, for example `/live.ogg`.
    pub path: String,
    /// This child's index: it holds listeners `process_idx`,
    /// `process_idx + n_processes`, …
    pub process_idx: usize,
    /// Children in the run.
    pub n_processes: usize,
    /// Listeners in the whole run.
    pub n_listeners_total: usize,
    /// New listeners per second over the whole run.
    pub ramp_per_second: f64,
    /// How long listening lasts after the last listener's start, seconds.
    pub hold_secs: f64,
    /// Audio a player buffers before it plays, ms.
    pub playout_start_ms: u64,
}

impl ListenerJob {
    /// The run-wide indexes of this child's listeners.
    pub fn listener_idxs(&self) -> impl Iterator<Item = usize> {
        (self.process_idx..self.n_listeners_total).step_by(self.n_processes.max(1))
    }

    /// When listener `listener_idx` starts, from the run's start.
    pub fn start_offset(&self, listener_idx: usize) -> Duration {
        Duration::from_secs_f64(listener_idx as f64 / self.ramp_per_second)
    }

    /// When every listener stops, from the run's start.
    pub fn end_offset(&self) -> Duration {
        self.start_offset(self.n_listeners_total.saturating_sub(1))
            + Duration::from_secs_f64(self.hold_secs)
    }

    fn validate(&self) -> Result<(), String> {
        let n_held = self.listener_idxs().count();
        if n_held > LISTENERS_PER_PROCESS_MAX {
            return Err(format!(
                "{n_held} listeners: at most {LISTENERS_PER_PROCESS_MAX} per process"
            ));
        }
        let valid = self.n_processes > 0
            && self.process_idx < self.n_processes
            && self.ramp_per_second.is_finite()
            && self.ramp_per_second > 0.0
            && self.hold_secs.is_finite()
            && self.hold_secs >= 0.0;
        valid.then_some(()).ok_or_else(|| {
            "a job needs a process index below its count, a positive ramp and a hold".into()
        })
    }
}

/// What a child reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ListenerEvent {
    /// The job is read; waiting for `go`.
    Prepared,
    /// Every listener stopped (boxed: far larger than the other variants).
    Finished(Box<ListenerProcessReport>),
    /// The child could not do its job.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One child's listeners, summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListenerProcessReport {
    /// Listeners started.
    pub listeners: usize,
    /// Listeners answered `200` with `audio/ogg`.
    pub connected: usize,
    /// Per connected listener: connect start → first response byte, µs.
    pub ttfb_us: Vec<u64>,
    /// Per listener that got audio: connect start → first complete audio
    /// page, µs.
    pub first_audio_us: Vec<u64>,
    /// Per listener: actual connect start − scheduled start, µs (a late
    /// client, not the server).
    pub schedule_lag_us: Vec<u64>,
    /// Stalls over all listeners.
    pub stalls: u64,
    /// Listeners with at least one stall.
    pub listeners_with_stall: usize,
    /// Rebuffering time after stalls, ms, over all listeners.
    pub stalled_ms: f64,
    /// Granule discontinuities seen.
    pub discontinuities: u64,
    /// Listeners that never started playing (less than the playout
    /// threshold arrived).
    pub never_played: usize,
    /// Evictions by kind (`closed_by_server`, `reset_by_server`, `http_503`…).
    pub evictions: BTreeMap<String, usize>,
    /// Errors by kind (`connect`, `bad_ogg`, …).
    pub errors: BTreeMap<String, usize>,
    /// The first eviction or error, as text.
    pub first_failure: Option<String>,
    /// Bytes received (heads and bodies).
    pub bytes_received: u64,
    /// Ogg pages received.
    pub pages: u64,
    /// Seconds listeners were connected (from the `200` to their end).
    pub listener_secs: f64,
    /// This child's CPU seconds over its life.
    pub cpu_secs: f64,
}

/// How one listener ended.
enum ListenerEnd {
    /// It listened until the run's end.
    Held,
    /// The server ended it.
    Evicted(String, String),
    /// It failed on its side or the answer broke the contract.
    Error(String, String),
}

/// One listener's numbers.
struct ListenerOutcome {
    schedule_lag_us: u64,
    ttfb_us: Option<u64>,
    connected_at: Option<Instant>,
    first_audio_us: Option<u64>,
    body: Option<ListenerBody>,
    bytes_received: u64,
    end: ListenerEnd,
    ended_at: Instant,
}

/// Why the child could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ListenerProcessError {
    /// stdin, stdout or the runtime failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The job or the `go` line is not valid.
    #[error("bad job: {0}")]
    BadJob(String),
}

/// Runs one child: reads the job from stdin, reports on stdout.
pub fn run_from_stdin() -> Result<(), ListenerProcessError> {
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    let job: ListenerJob = serde_json::from_str(&line)
        .map_err(|error| ListenerProcessError::BadJob(error.to_string()))?;
    if let Err(reason) = job.validate() {
        emit(&ListenerEvent::Failed {
            reason: reason.clone(),
        })?;
        return Err(ListenerProcessError::BadJob(reason));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    emit(&ListenerEvent::Prepared)?;
    line.clear();
    stdin.read_line(&mut line)?;
    let start = parse_go(&line).ok_or_else(|| {
        ListenerProcessError::BadJob(format!("expected go <unix µs>, got {line:?}"))
    })?;
    drop(stdin);
    exit_when_the_parent_goes();
    let local = tokio::task::LocalSet::new();
    let mut report = local.block_on(&runtime, run_listeners(&job, start));
    report.cpu_secs =
        crate::proc_stat::process_sample(std::process::id()).map_or(0.0, |sample| sample.cpu_secs);
    FINISHED.store(true, Ordering::Relaxed);
    emit(&ListenerEvent::Finished(Box::new(report)))?;
    Ok(())
}

/// `go <unix µs>` → the same instant on this process's monotonic clock.
fn parse_go(line: &str) -> Option<Instant> {
    let start_unix_us: u64 = line.trim().strip_prefix("go ")?.trim().parse().ok()?;
    let now_unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_micros() as u64;
    let now = Instant::now();
    Some(if start_unix_us >= now_unix_us {
        now + Duration::from_micros(start_unix_us - now_unix_us)
    } else {
        now.checked_sub(Duration::from_micros(now_unix_us - start_unix_us))
            .unwrap_or(now)
    })
}

/// The parent holds our stdin until it has our report; its end before
/// then means the parent is gone, and the listeners must not outlive it.
fn exit_when_the_parent_goes() {
    std::thread::spawn(|| {
        let mut sink = String::new();
        // Bounded by the parent: the line loop ends at the end of stdin.
        while std::io::stdin()
            .lock()
            .read_line(&mut sink)
            .is_ok_and(|n| n > 0)
        {
            sink.clear();
        }
        if !FINISHED.load(Ordering::Relaxed) {
            std::process::exit(3);
        }
    });
}

fn emit(event: &ListenerEvent) -> std::io::Result<()> {
    let line = serde_json::to_string(event).map_err(std::io::Error::other)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

async fn run_listeners(job: &ListenerJob, start: Instant) -> ListenerProcessReport {
    let end = tokio::time::Instant::from_std(start + job.end_offset());
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: veza-bench\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n",
        job.path, job.address
    );
    let request: std::rc::Rc<str> = request.into();
    let mut tasks = Vec::with_capacity(job.listener_idxs().count());
    for listener_idx in job.listener_idxs() {
        let scheduled = start + job.start_offset(listener_idx);
        // Open loop: the next listener starts on time whatever the earlier
        // ones are doing.
        tokio::time::sleep_until(tokio::time::Instant::from_std(scheduled)).await;
        let request = std::rc::Rc::clone(&request);
        let (address, playout_start_ms) = (job.address, job.playout_start_ms);
        tasks.push(tokio::task::spawn_local(async move {
            listen(
                listener_idx,
                address,
                &request,
                scheduled,
                end,
                playout_start_ms,
            )
            .await
        }));
    }
    let mut report = ListenerProcessReport {
        listeners: tasks.len(),
        ..ListenerProcessReport::default()
    };
    for task in tasks {
        match task.await {
            Ok(outcome) => add_outcome(&mut report, outcome),
            Err(error) => note_failure(
                &mut report.errors,
                &mut report.first_failure,
                "panic",
                error.to_string(),
            ),
        }
    }
    report
}

fn add_outcome(report: &mut ListenerProcessReport, outcome: ListenerOutcome) {
    report.schedule_lag_us.push(outcome.schedule_lag_us);
    report.bytes_received += outcome.bytes_received;
    if let Some(ttfb_us) = outcome.ttfb_us {
        report.ttfb_us.push(ttfb_us);
    }
    if let Some(first_audio_us) = outcome.first_audio_us {
        report.first_audio_us.push(first_audio_us);
    }
    if let Some(connected_at) = outcome.connected_at {
        report.connected += 1;
        report.listener_secs += outcome
            .ended_at
            .saturating_duration_since(connected_at)
            .as_secs_f64();
    }
    if let Some(body) = &outcome.body {
        let playout = &body.playout;
        report.stalls += u64::from(playout.stalls);
        report.listeners_with_stall += usize::from(playout.stalls > 0);
        report.stalled_ms += playout.stalled_us as f64 / 1000.0;
        report.discontinuities += u64::from(playout.discontinuities);
        report.never_played += usize::from(playout.playback_started_at.is_none());
        report.pages += body.pages();
    }
    match outcome.end {
        ListenerEnd::Held => {}
        ListenerEnd::Evicted(kind, text) => note_failure(
            &mut report.evictions,
            &mut report.first_failure,
            &kind,
            text,
        ),
        ListenerEnd::Error(kind, text) => {
            note_failure(&mut report.errors, &mut report.first_failure, &kind, text)
        }
    }
}

fn note_failure(
    counts: &mut BTreeMap<String, usize>,
    first_failure: &mut Option<String>,
    kind: &str,
    text: String,
) {
    *counts.entry(kind.to_string()).or_default() += 1;
    first_failure.get_or_insert(text);
}

fn micros(duration: Duration) -> u64 {
    duration.as_micros().try_into().unwrap_or(u64::MAX)
}

/// One listener from its scheduled start to the run's end (or its
/// eviction).
async fn listen(
    listener_idx: usize,
    address: SocketAddr,
    request: &str,
    scheduled: Instant,
    end: tokio::time::Instant,
    playout_start_ms: u64,
) -> ListenerOutcome {
    let started = Instant::now();
    let mut outcome = ListenerOutcome {
        schedule_lag_us: micros(started.saturating_duration_since(scheduled)),
        ttfb_us: None,
        connected_at: None,
        first_audio_us: None,
        body: None,
        bytes_received: 0,
        end: ListenerEnd::Held,
        ended_at: started,
    };
    outcome.end = match connect(listener_idx, address, request, end).await {
        Ok(stream) => receive(stream, started, end, playout_start_ms, &mut outcome).await,
        Err(end) => end,
    };
    outcome.ended_at = Instant::now().min(end.into_std());
    if let Some(body) = outcome.body.as_mut() {
        body.playout
            .finish(outcome.ended_at.saturating_duration_since(started));
    }
    outcome
}

async fn connect(
    listener_idx: usize,
    address: SocketAddr,
    request: &str,
    end: tokio::time::Instant,
) -> Result<tokio::net::TcpStream, ListenerEnd> {
    let connect_error = |error: std::io::Error| {
        ListenerEnd::Error(
            "connect".into(),
            format!("listener {listener_idx}: connect: {error}"),
        )
    };
    let socket = tokio::net::TcpSocket::new_v4().map_err(connect_error)?;
    socket
        .bind(SocketAddr::new(source_address(listener_idx), 0))
        .map_err(connect_error)?;
    let mut stream = match timeout_at(end, socket.connect(address)).await {
        Ok(connected) => connected.map_err(connect_error)?,
        Err(_elapsed) => {
            return Err(ListenerEnd::Error(
                "not_connected_by_end".into(),
                format!("listener {listener_idx}: not connected by the end of the run"),
            ))
        }
    };
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(connect_error)?;
    Ok(stream)
}

/// Reads the response head, then the body until the end or the server's
/// close.
async fn receive(
    mut stream: tokio::net::TcpStream,
    started: Instant,
    end: tokio::time::Instant,
    playout_start_ms: u64,
    outcome: &mut ListenerOutcome,
) -> ListenerEnd {
    let mut buffer = vec![0u8; READ_BUFFER_BYTES].into_boxed_slice();
    let mut head_filled = 0;
    // Bounded by `end`: every read is.
    loop {
        let into = if outcome.body.is_some() {
            &mut buffer[..]
        } else {
            &mut buffer[head_filled..]
        };
        let n_read = match timeout_at(end, stream.read(into)).await {
            Err(_elapsed) if outcome.body.is_some() => return ListenerEnd::Held,
            Err(_elapsed) => {
                return ListenerEnd::Error(
                    "no_response_by_end".into(),
                    "no response head by the end of the run".into(),
                )
            }
            Ok(Ok(0)) => return closed_by_server(outcome.body.is_some()),
            Ok(Ok(n_read)) => n_read,
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return ListenerEnd::Evicted(
                    "reset_by_server".into(),
                    format!("reset by the server: {error}"),
                )
            }
            Ok(Err(error)) => return ListenerEnd::Error("read".into(), format!("read: {error}")),
        };
        let now = Instant::now();
        outcome.bytes_received += n_read as u64;
        outcome.ttfb_us.get_or_insert_with(|| micros(now - started));
        let since_start = now - started;
        let fed = match outcome.body.as_mut() {
            Some(body) => body.feed(since_start, &buffer[..n_read]),
            None => {
                head_filled += n_read;
                match parse_head(&buffer[..head_filled]) {
                    HeadParse::Partial if head_filled == buffer.len() => {
                        return ListenerEnd::Error(
                            "bad_response_head".into(),
                            format!("response head over {READ_BUFFER_BYTES} bytes"),
                        )
                    }
                    HeadParse::Partial => continue,
                    HeadParse::Failed(end) => return end,
                    HeadParse::Audio { head_len } => {
                        outcome.connected_at = Some(now);
                        let body = outcome.body.insert(ListenerBody::new(playout_start_ms));
                        body.feed(since_start, &buffer[head_len..head_filled])
                    }
                }
            }
        };
        if let Err(error) = fed {
            return bad_ogg(error);
        }
        if let Some(at) = outcome.body.as_ref().and_then(|body| body.first_audio_at) {
            outcome.first_audio_us.get_or_insert(micros(at));
        }
    }
}

fn closed_by_server(had_head: bool) -> ListenerEnd {
    let text = if had_head {
        "the server closed the stream"
    } else {
        "the server closed before answering"
    };
    ListenerEnd::Evicted("closed_by_server".into(), text.into())
}

fn bad_ogg(error: ListenError) -> ListenerEnd {
    ListenerEnd::Error("bad_ogg".into(), format!("bad Ogg Opus stream: {error}"))
}

enum HeadParse {
    Partial,
    Failed(ListenerEnd),
    Audio { head_len: usize },
}

/// The response head: `200` with `Content-Type: audio/ogg`, or why not.
fn parse_head(bytes: &[u8]) -> HeadParse {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) => return HeadParse::Partial,
        Err(error) => {
            return HeadParse::Failed(ListenerEnd::Error(
                "bad_response_head".into(),
                format!("response head: {error}"),
            ))
        }
    };
    let status = response.code.unwrap_or(0);
    if status != 200 {
        return HeadParse::Failed(ListenerEnd::Evicted(
            format!("http_{status}"),
            format!("HTTP {status} {}", response.reason.unwrap_or("")),
        ));
    }
    let content_type = response
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-type"))
        .map(|header| {
            String::from_utf8_lossy(header.value)
                .trim()
                .to_ascii_lowercase()
        });
    let media_type = content_type
        .as_deref()
        .and_then(|value| value.split(';').next())
        .map(str::trim);
    if media_type != Some("audio/ogg") {
        return HeadParse::Failed(ListenerEnd::Error(
            "wrong_content_type".into(),
            format!("Content-Type {content_type:?}, expected audio/ogg"),
        ));
    }
    HeadParse::Audio { head_len }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(process_idx: usize) -> ListenerJob {
        ListenerJob {
            address: "127.0.0.1:1".parse().unwrap(),
            path: "/live.ogg".into(),
            process_idx,
            n_processes: 2,
            n_listeners_total: 5,
            ramp_per_second: 10.0,
            hold_secs: 3.0,
            playout_start_ms: 2000,
        }
    }

    #[test]
    fn listeners_are_dealt_round_robin_on_one_run_wide_timetable() {
        assert_eq!(job(0).listener_idxs().collect::<Vec<_>>(), [0, 2, 4]);
        assert_eq!(job(1).listener_idxs().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(job(1).start_offset(3), Duration::from_millis(300));
        assert_eq!(job(0).end_offset(), Duration::from_millis(3400));
        assert!(job(0).validate().is_ok());
        let mut bad = job(2);
        assert!(bad.validate().is_err());
        bad.process_idx = 0;
        bad.ramp_per_second = 0.0;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn a_200_audio_ogg_head_is_accepted_and_anything_else_is_named() {
        let head =
            b"HTTP/1.0 200 OK\r\nContent-Type: audio/ogg\r\nServer: Icecast 2.4.4\r\n\r\nOggS";
        assert!(
            matches!(parse_head(head), HeadParse::Audio { head_len } if head_len == head.len() - 4)
        );
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-"),
            HeadParse::Partial
        ));
        let HeadParse::Failed(ListenerEnd::Evicted(kind, _)) =
            parse_head(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
        else {
            panic!("503 is an eviction")
        };
        assert_eq!(kind, "http_503");
        let HeadParse::Failed(ListenerEnd::Error(kind, _)) =
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n")
        else {
            panic!("text/html is an error")
        };
        assert_eq!(kind, "wrong_content_type");
    }

    #[test]
    fn go_lines_map_to_this_clock() {
        let now_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let start = parse_go(&format!("go {}\n", now_unix_us + 500_000)).unwrap();
        let ahead = start.saturating_duration_since(Instant::now());
        assert!(ahead > Duration::from_millis(400) && ahead <= Duration::from_millis(500));
        assert!(parse_go("close").is_none());
    }

    #[test]
    fn events_are_one_json_line_each() {
        let line = serde_json::to_string(&ListenerEvent::Finished(Box::default())).unwrap();
        assert!(line.starts_with(r#"{"event":"finished""#) && !line.contains('\n'));
    }
}
