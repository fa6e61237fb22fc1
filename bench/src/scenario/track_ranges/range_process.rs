//! The child's side of `track-ranges`: the bench re-executes itself as the
//! hidden `veza-bench track-range-process`, reads one [`RangeJob`] (a JSON
//! line on stdin), answers `prepared` once its keep-alive connections are
//! open, waits for `go <start unix µs>`, runs them on one tokio
//! `current_thread` runtime and reports one [`RangeEvent::Finished`] line.
//!
//! Each connection has one request in flight. Open loop: connection `j` of
//! the run sends its `k`-th request at `start + j/R + k·C/R` (C connections,
//! R requests/s in all), a timetable fixed in advance; latency runs from
//! that scheduled time, so a server that stalls is charged for every
//! request it delayed (no coordinated omission). Closed loop: the next
//! request goes when the previous answer is in. A request counts when its
//! scheduled (open) or actual (closed) send time falls in the measured
//! window; one still unanswered at the drain deadline, or never sent by
//! then, is an error. Every read and write is bounded by that deadline, so
//! a child always finishes.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;
use tokio::time::timeout_at;

use crate::load_generator::latency::{LatencySummary, LATENCY_US_MAX};
use crate::load_generator::precise_timer::PreciseTimer;
use crate::load_generator::source_address::source_address;

use super::range_request::{
    check_head, choose_range, encode_request, ByteRange, PathStyle, Rendition, RequestRng,
};

/// The hidden subcommand that runs a child.
pub const SUBCOMMAND: &str = "track-range-process";

/// The most connections one child holds: below the 20,000 open files a
/// process may have.
pub const CONNECTIONS_PER_PROCESS_MAX: usize = 18_000;

/// Room for a response head before the body in a connection's buffer.
const HEAD_BYTES_MAX: usize = 8192;

/// Set once the child reported; the end of stdin then is no emergency.
static FINISHED: AtomicBool = AtomicBool::new(false);

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LoadShape {
    /// A fixed total rate over all connections of the run.
    Open {
        /// Requests per second, all processes together.
        rate_per_second: f64,
    },
    /// Each connection sends again as soon as it has its answer.
    Closed,
}

/// What one child does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangeJob {
    /// The server.
    pub address: SocketAddr,
    /// How the server spells rendition paths.
    pub path_style: PathStyle,
    /// Every rendition of the run; requests pick uniformly among them.
    pub renditions: Vec<Rendition>,
    /// Bytes per range, and their alignment.
    pub range_bytes: u64,
    /// This child's first run-wide connection index.
    pub connection_idx_first: usize,
    /// This child's connections.
    pub n_connections: usize,
    /// Connections of the whole run.
    pub n_connections_total: usize,
    /// Open or closed loop.
    pub load: LoadShape,
    /// Load before the measured window, seconds.
    pub warmup_secs: f64,
    /// The measured window, seconds.
    pub duration_secs: f64,
    /// After the window: how long answers are awaited, seconds.
    pub drain_secs: f64,
    /// The request generator's seed (the same for every server).
    pub seed: u64,
}

impl RangeJob {
    fn validate(&self) -> Result<(), String> {
        if self.n_connections == 0 || self.n_connections > CONNECTIONS_PER_PROCESS_MAX {
            return Err(format!(
                "1..={CONNECTIONS_PER_PROCESS_MAX} connections per process"
            ));
        }
        if self.renditions.is_empty() || self.renditions.iter().any(|r| r.size_bytes == 0) {
            return Err("no renditions, or an empty one".into());
        }
        if let LoadShape::Open { rate_per_second } = self.load {
            if !(rate_per_second.is_finite() && rate_per_second > 0.0) {
                return Err("the rate must be a positive number".into());
            }
        }
        let times = [self.warmup_secs, self.duration_secs, self.drain_secs];
        let valid = self.range_bytes > 0
            && self.connection_idx_first + self.n_connections <= self.n_connections_total
            && times.iter().all(|secs| secs.is_finite() && *secs >= 0.0);
        valid
            .then_some(())
            .ok_or_else(|| "bad range size, connection indexes or times".into())
    }
}

/// What a child reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RangeEvent {
    /// The connections are open; waiting for `go`.
    Prepared,
    /// The run is over (boxed: far larger than the other variants).
    Finished(Box<RangeProcessReport>),
    /// The child could not do its job.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One child's connections, summed over the measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RangeProcessReport {
    /// Measured requests answered correctly.
    pub requests: u64,
    /// Body bytes of those.
    pub body_bytes: u64,
    /// Latency histogram, µs: `(value, count)` pairs (hdrhistogram buckets).
    pub latency_us_counts: Vec<(u64, u64)>,
    /// Open loop: actual send − scheduled send, µs (the client's lag).
    pub schedule_lag_us_counts: Vec<(u64, u64)>,
    /// Measured requests that failed, by kind.
    pub errors: BTreeMap<String, u64>,
    /// The first failure, as text.
    pub first_error: Option<String>,
    /// Connections opened again after an error or a server's close.
    pub reconnects: u64,
    /// Requests sent in all (warm-up and drain included).
    pub requests_sent_total: u64,
    /// This child's CPU seconds over its life.
    pub cpu_secs: f64,
}

/// Why the child could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum RangeProcessError {
    /// stdin, stdout or the runtime failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The job or the `go` line is not valid.
    #[error("bad job: {0}")]
    BadJob(String),
}

/// Runs one child: reads the job from stdin, reports on stdout.
pub fn run_from_stdin() -> Result<(), RangeProcessError> {
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    let job: RangeJob = serde_json::from_str(&line)
        .map_err(|error| RangeProcessError::BadJob(error.to_string()))?;
    if let Err(reason) = job.validate() {
        emit(&RangeEvent::Failed {
            reason: reason.clone(),
        })?;
        return Err(RangeProcessError::BadJob(reason));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let streams = match local.block_on(&runtime, connect_all(&job)) {
        Ok(streams) => streams,
        Err(reason) => {
            emit(&RangeEvent::Failed {
                reason: reason.clone(),
            })?;
            return Err(RangeProcessError::BadJob(reason));
        }
    };
    emit(&RangeEvent::Prepared)?;
    line.clear();
    stdin.read_line(&mut line)?;
    let start = parse_go(&line)
        .ok_or_else(|| RangeProcessError::BadJob(format!("expected go <unix µs>, got {line:?}")))?;
    drop(stdin);
    exit_when_the_parent_goes();
    let mut report = local.block_on(&runtime, run_connections(Rc::new(job), streams, start));
    report.cpu_secs =
        crate::proc_stat::process_sample(std::process::id()).map_or(0.0, |sample| sample.cpu_secs);
    FINISHED.store(true, Ordering::Relaxed);
    emit(&RangeEvent::Finished(Box::new(report)))?;
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
/// then means the parent is gone, and the connections must not outlive it.
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

fn emit(event: &RangeEvent) -> std::io::Result<()> {
    let line = serde_json::to_string(event).map_err(std::io::Error::other)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// How long opening all connections may take before the child gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

async fn connect_one(address: SocketAddr, connection_idx: usize) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source_address(connection_idx), 0))?;
    let stream = socket.connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn connect_all(job: &RangeJob) -> Result<Vec<TcpStream>, String> {
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let mut streams = Vec::with_capacity(job.n_connections);
    for connection_idx in job.connection_idx_first..job.connection_idx_first + job.n_connections {
        let stream = timeout_at(deadline, connect_one(job.address, connection_idx))
            .await
            .map_err(|_| format!("connections not open within {CONNECT_TIMEOUT:?}"))?
            .map_err(|error| format!("connect {connection_idx} to {}: {error}", job.address))?;
        streams.push(stream);
    }
    Ok(streams)
}

/// The run's timeline on this process's clock.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    start: Instant,
    measure_start: Instant,
    measure_end: Instant,
    drain_deadline: Instant,
}

impl Timeline {
    fn new(job: &RangeJob, start: Instant) -> Timeline {
        let measure_start = start + Duration::from_secs_f64(job.warmup_secs);
        let measure_end = measure_start + Duration::from_secs_f64(job.duration_secs);
        Timeline {
            start,
            measure_start,
            measure_end,
            drain_deadline: measure_end + Duration::from_secs_f64(job.drain_secs),
        }
    }

    fn is_measured(&self, at: Instant) -> bool {
        at >= self.measure_start && at < self.measure_end
    }
}

/// One connection's counts, merged into the process report at the end.
struct ConnectionTally {
    report: RangeProcessReport,
    latency: Histogram<u64>,
    schedule_lag: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("bounds are valid constants")
}

impl ConnectionTally {
    fn new() -> ConnectionTally {
        ConnectionTally {
            report: RangeProcessReport::default(),
            latency: histogram(),
            schedule_lag: histogram(),
        }
    }

    fn error(&mut self, kind: &str, text: String) {
        *self.report.errors.entry(kind.to_string()).or_default() += 1;
        self.report.first_error.get_or_insert(text);
    }
}

async fn run_connections(
    job: Rc<RangeJob>,
    streams: Vec<TcpStream>,
    start: Instant,
) -> RangeProcessReport {
    let timeline = Timeline::new(&job, start);
    let paths: Rc<Vec<String>> = Rc::new(
        job.renditions
            .iter()
            .map(|rendition| job.path_style.path(rendition))
            .collect(),
    );
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(local_idx, stream)| {
            let (job, paths) = (Rc::clone(&job), Rc::clone(&paths));
            let connection_idx = job.connection_idx_first + local_idx;
            tokio::task::spawn_local(async move {
                run_connection(&job, &paths, connection_idx, stream, timeline).await
            })
        })
        .collect();
    let mut total = ConnectionTally::new();
    for task in tasks {
        match task.await {
            Ok(tally) => merge(&mut total, tally),
            Err(error) => total.error("panic", error.to_string()),
        }
    }
    total.report.latency_us_counts = buckets(&total.latency);
    total.report.schedule_lag_us_counts = buckets(&total.schedule_lag);
    total.report
}

fn merge(total: &mut ConnectionTally, tally: ConnectionTally) {
    let (into, from) = (&mut total.report, tally.report);
    into.requests += from.requests;
    into.body_bytes += from.body_bytes;
    into.reconnects += from.reconnects;
    into.requests_sent_total += from.requests_sent_total;
    for (kind, count) in from.errors {
        *into.errors.entry(kind).or_default() += count;
    }
    if into.first_error.is_none() {
        into.first_error = from.first_error;
    }
    let _ = total.latency.add(&tally.latency);
    let _ = total.schedule_lag.add(&tally.schedule_lag);
}

/// The recorded buckets of `histogram` as `(value, count)` pairs.
pub fn buckets(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
    histogram
        .iter_recorded()
        .map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value()))
        .collect()
}

/// Percentiles of merged `(value, count)` pairs.
pub fn summarize(pairs: impl Iterator<Item = (u64, u64)>) -> LatencySummary {
    let mut merged = histogram();
    for (value_us, count) in pairs {
        let _ = merged.record_n(value_us.clamp(1, LATENCY_US_MAX), count);
    }
    if merged.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        p50_us: merged.value_at_quantile(0.50),
        p90_us: merged.value_at_quantile(0.90),
        p99_us: merged.value_at_quantile(0.99),
        p999_us: merged.value_at_quantile(0.999),
        max_us: merged.max(),
    }
}

fn micros(duration: Duration) -> u64 {
    duration.as_micros().try_into().unwrap_or(u64::MAX)
}

/// When this connection sends its requests (open loop).
struct Schedule {
    first: Instant,
    interval: Duration,
}

impl Schedule {
    fn at(&self, request_idx: u64) -> Instant {
        self.first + self.interval.mul_f64(request_idx as f64)
    }
}

/// One connection from the start to its last answer (or the deadline).
async fn run_connection(
    job: &RangeJob,
    paths: &[String],
    connection_idx: usize,
    stream: TcpStream,
    timeline: Timeline,
) -> ConnectionTally {
    let mut tally = ConnectionTally::new();
    let schedule = match job.load {
        LoadShape::Open { rate_per_second } => Some(Schedule {
            first: timeline.start
                + Duration::from_secs_f64(connection_idx as f64 / rate_per_second),
            interval: Duration::from_secs_f64(job.n_connections_total as f64 / rate_per_second),
        }),
        LoadShape::Closed => None,
    };
    let mut timer = match PreciseTimer::new() {
        Ok(timer) => timer,
        Err(error) => {
            tally.error("timer", format!("timerfd: {error}"));
            return tally;
        }
    };
    let mut rng = RequestRng::new(job.seed, connection_idx);
    let mut stream = Some(stream);
    let host = job.address.to_string();
    let mut request = Vec::with_capacity(256);
    // One buffer per connection: the head and then each read of the body.
    let mut buffer = vec![0u8; HEAD_BYTES_MAX + job.range_bytes as usize].into_boxed_slice();
    let mut request_idx = 0u64;
    // Bounded: the schedule ends at the window's end, closed loop too.
    loop {
        let scheduled = match &schedule {
            Some(schedule) => schedule.at(request_idx),
            None => Instant::now().max(timeline.start),
        };
        if scheduled >= timeline.measure_end {
            break;
        }
        if Instant::now() >= timeline.drain_deadline {
            count_unsent(&mut tally, schedule.as_ref(), request_idx, &timeline);
            break;
        }
        if let Err(error) = timer.sleep_until(scheduled).await {
            tally.error("timer", format!("timerfd: {error}"));
            break;
        }
        let sent_at = Instant::now();
        let measured = timeline.is_measured(scheduled);
        if schedule.is_some() && measured {
            let _ = tally
                .schedule_lag
                .record(micros(sent_at - scheduled).max(1));
        }
        let range = choose_range(&mut rng, &job.renditions, job.range_bytes);
        encode_request(&mut request, &paths[range.rendition_idx], &host, &range);
        request_idx += 1;
        tally.report.requests_sent_total += 1;
        let outcome = match stream.as_mut() {
            Some(open) => {
                exchange(open, &request, &range, &mut buffer, timeline.drain_deadline).await
            }
            None => Err(Failure::new("connect", "no connection".into())),
        };
        let keep = match outcome {
            Ok(answer) => {
                if measured {
                    tally.report.requests += 1;
                    tally.report.body_bytes += range.len();
                    let _ = tally
                        .latency
                        .record(micros(Instant::now() - scheduled).max(1));
                }
                !answer.closes
            }
            Err(failure) => {
                if measured {
                    tally.error(
                        &failure.kind,
                        format!("{}: {}", paths[range.rendition_idx], failure.text),
                    );
                }
                false
            }
        };
        if !keep {
            stream = reopen(
                job.address,
                connection_idx,
                timeline.drain_deadline,
                &mut tally,
            )
            .await;
        }
    }
    tally
}

/// Open loop: the window's slots this connection never reached count as
/// errors (the server kept it busy past the deadline).
fn count_unsent(
    tally: &mut ConnectionTally,
    schedule: Option<&Schedule>,
    from_idx: u64,
    timeline: &Timeline,
) {
    let Some(schedule) = schedule else { return };
    let unsent = (from_idx..)
        .map(|idx| schedule.at(idx))
        .take_while(|at| *at < timeline.measure_end)
        .filter(|at| timeline.is_measured(*at))
        .count() as u64;
    if unsent > 0 {
        *tally
            .report
            .errors
            .entry("not_sent_by_deadline".into())
            .or_default() += unsent;
        tally
            .report
            .first_error
            .get_or_insert_with(|| format!("{unsent} requests not sent by the drain deadline"));
    }
}

async fn reopen(
    address: SocketAddr,
    connection_idx: usize,
    deadline: Instant,
    tally: &mut ConnectionTally,
) -> Option<TcpStream> {
    tally.report.reconnects += 1;
    match timeout_at(deadline.into(), connect_one(address, connection_idx)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tally.error("connect", format!("reconnect: {error}"));
            None
        }
        Err(_elapsed) => None,
    }
}

/// A failed exchange: its kind and text.
struct Failure {
    kind: String,
    text: String,
}

impl Failure {
    fn new(kind: &str, text: String) -> Failure {
        Failure {
            kind: kind.into(),
            text,
        }
    }
}

/// A correct answer.
struct Answer {
    closes: bool,
}

/// Writes one request and reads its whole answer, checking the head.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    range: &ByteRange,
    buffer: &mut [u8],
    deadline: Instant,
) -> Result<Answer, Failure> {
    let deadline = tokio::time::Instant::from_std(deadline);
    let timed_out = |_| {
        Failure::new(
            "unanswered_by_deadline",
            "no complete answer by the drain deadline".into(),
        )
    };
    timeout_at(deadline, stream.write_all(request))
        .await
        .map_err(timed_out)?
        .map_err(|error| Failure::new("write", error.to_string()))?;
    let mut filled = 0;
    // Bounded by the deadline and by the head's room in the buffer.
    let head = loop {
        if filled == HEAD_BYTES_MAX {
            return Err(Failure::new(
                "bad_response_head",
                format!("head over {HEAD_BYTES_MAX} bytes"),
            ));
        }
        let n_read = read_some(stream, &mut buffer[filled..HEAD_BYTES_MAX], deadline).await?;
        filled += n_read;
        match check_head(&buffer[..filled], range) {
            Ok(Some(head)) => break head,
            Ok(None) => continue,
            Err(mismatch) => return Err(Failure::new(&mismatch.kind(), mismatch.to_string())),
        }
    };
    let mut body_received = (filled - head.head_len) as u64;
    // Bounded by the deadline: every read is. Only the head is copied out;
    // the body's bytes are counted and dropped in the kernel.
    while body_received < head.body_len {
        let want = (head.body_len - body_received).min(buffer.len() as u64) as usize;
        body_received += discard_some(stream, &mut buffer[..want], deadline).await? as u64;
    }
    if body_received != head.body_len {
        return Err(Failure::new(
            "extra_bytes",
            format!(
                "{body_received} body bytes for a {}-byte range",
                head.body_len
            ),
        ));
    }
    Ok(Answer {
        closes: head.closes,
    })
}

async fn read_some(
    stream: &mut TcpStream,
    into: &mut [u8],
    deadline: tokio::time::Instant,
) -> Result<usize, Failure> {
    match timeout_at(deadline, stream.read(into)).await {
        Err(_elapsed) => Err(Failure::new(
            "unanswered_by_deadline",
            "no complete answer by the drain deadline".into(),
        )),
        Ok(Ok(0)) => Err(Failure::new(
            "closed_by_server",
            "the server closed the connection".into(),
        )),
        Ok(Ok(n_read)) => Ok(n_read),
        Ok(Err(error)) => Err(Failure::new("read", error.to_string())),
    }
}

/// Drops up to `room.len()` received bytes without copying them:
/// `recv(MSG_TRUNC)` on a TCP socket discards from the receive queue and
/// returns the count. The load generator shares the machine with the
/// server; copying 64 KiB per answer made it, not the server, the closed
/// loop's bottleneck (both servers then ran at half their rate, 85% busy).
/// The bytes are counted, never inspected, so nothing checked is lost.
async fn discard_some(
    stream: &TcpStream,
    room: &mut [u8],
    deadline: tokio::time::Instant,
) -> Result<usize, Failure> {
    let fd = stream.as_raw_fd();
    // Bounded by the deadline.
    loop {
        match timeout_at(deadline, stream.readable()).await {
            Err(_elapsed) => {
                return Err(Failure::new(
                    "unanswered_by_deadline",
                    "no complete answer by the drain deadline".into(),
                ))
            }
            Ok(Err(error)) => return Err(Failure::new("read", error.to_string())),
            Ok(Ok(())) => {}
        }
        let discarded = stream.try_io(Interest::READABLE, || {
            // SAFETY: `room` is valid for writes of `room.len()` bytes, and
            // with MSG_TRUNC the kernel writes none of them.
            let n = unsafe {
                libc::recv(
                    fd,
                    room.as_mut_ptr().cast(),
                    room.len(),
                    libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                )
            };
            usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
        });
        match discarded {
            Ok(0) => {
                return Err(Failure::new(
                    "closed_by_server",
                    "the server closed the connection".into(),
                ))
            }
            Ok(n) => return Ok(n),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(Failure::new("read", error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_slots_spread_the_rate_over_connections() {
        let start = Instant::now();
        let schedule = Schedule {
            first: start + Duration::from_secs_f64(3.0 / 100.0),
            interval: Duration::from_secs_f64(4.0 / 100.0),
        };
        assert_eq!(schedule.at(0) - start, Duration::from_millis(30));
        assert_eq!(schedule.at(2) - start, Duration::from_millis(110));
    }

    #[test]
    fn histograms_travel_as_buckets_and_keep_their_percentiles() {
        let mut latency = histogram();
        for value_us in 1..=1000u64 {
            latency.record(value_us).unwrap();
        }
        let summary = summarize(buckets(&latency).into_iter());
        assert!((495..=505).contains(&summary.p50_us), "{summary:?}");
        assert!((985..=995).contains(&summary.p99_us), "{summary:?}");
        assert_eq!(summarize(std::iter::empty()), LatencySummary::default());
    }

    #[test]
    fn events_are_one_json_line_each() {
        let line = serde_json::to_string(&RangeEvent::Finished(Box::default())).unwrap();
        assert!(line.starts_with(r#"{"event":"finished""#) && !line.contains('\n'));
    }
}
