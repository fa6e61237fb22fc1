//! Client load in several processes: the bench runs itself again with the
//! hidden subcommand `veza-bench client-process`, hands each child a
//! [`ClientJob`] (one JSON line on its stdin), and follows it through
//! [`ClientEvent`]s (one JSON line each on its stdout).
//!
//! Why processes and not threads: one process may hold 20,000 open files
//! here and the limit cannot be raised, so fifteen thousand connections
//! (plus the server's own descriptors in another process) need several
//! client processes; each holds at most [`CONNECTIONS_PER_PROCESS_MAX`].
//!
//! The exchange, in order: the child reads its job and sends `prepared`;
//! if the job says so it waits for the line `go` (so that every child starts
//! a connect storm at once); it opens its connections and sends `opened`;
//! it holds them (answering pings, noting closes by the server) until the
//! line `close` or the end of its stdin; it closes them and sends `closed`,
//! then exits.
//!
//! - [`worker`]: the child's side.
//! - [`ClientFleet`]: the parent's side.

pub mod worker;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::chat_servers::ChatServerKind;

/// The most connections one child holds: far below the 20,000 open files a
/// process may have.
pub const CONNECTIONS_PER_PROCESS_MAX: usize = 18_000;

/// The hidden subcommand that runs a child.
pub const SUBCOMMAND: &str = "client-process";

/// How long a child may take to exit once told to close.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// What one child process does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientJob {
    /// Which protocol to speak.
    pub server: ChatServerKind,
    /// `ws://…/v1/chat` (Veza) or `ws://…` (nats-server).
    pub url: String,
    /// The run-wide number of this child's first connection: connection
    /// `c` uses source address `source_address(c)`, user `c % tokens`, room
    /// `c % rooms`.
    pub first_connection_idx: usize,
    /// Connections to open.
    pub n_connections: usize,
    /// Access tokens (Veza), one per user.
    pub tokens: Vec<String>,
    /// Room ids (Veza); for NATS only their number matters (subjects
    /// `room.<idx>`).
    pub room_ids: Vec<i64>,
    /// Subscribe each connection to its room after authenticating.
    pub subscribe: bool,
    /// Connections being opened at once.
    pub concurrency: usize,
    /// Wait for `go` before opening.
    pub wait_for_go: bool,
    /// Report each connection's handshake and auth time.
    pub record_latencies: bool,
    /// CPUs to pin the child to; empty: unpinned.
    pub cpus: Vec<usize>,
}

/// What a child reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClientEvent {
    /// The job is read; waiting for `go` if asked to.
    Prepared,
    /// Every connection was attempted.
    Opened(OpenReport),
    /// Every connection is closed.
    Closed(CloseReport),
    /// The child could not do its job.
    Failed {
        /// Why.
        reason: String,
    },
}

/// How opening went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpenReport {
    /// Connections open, authenticated (and subscribed, if asked).
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// The first failure, as text.
    pub first_error: Option<String>,
    /// From the start of opening to the last connection done, ms.
    pub elapsed_ms: f64,
    /// Per opened connection: TCP connect + WebSocket upgrade, µs.
    pub handshake_us: Vec<u64>,
    /// Per opened connection: `Auth` → `AuthOk` (NATS: `CONNECT` →
    /// `PONG`), plus `Subscribe` when asked, µs.
    pub auth_us: Vec<u64>,
}

/// How holding and closing went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloseReport {
    /// Connections the server closed (or that broke) while held.
    pub closed_by_server: usize,
    /// Those by close code (`1006` for no close frame).
    pub close_codes: BTreeMap<String, usize>,
    /// The first such close, as text.
    pub first_close: Option<String>,
}

/// Why the children could not do their jobs.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A child could not be started or talked to.
    #[error("client process {process_idx}: {reason}")]
    Child {
        /// Which child.
        process_idx: usize,
        /// What went wrong.
        reason: String,
    },
    /// A child did not report in time.
    #[error(
        "client process {process_idx} sent nothing within {timeout:?} (waiting for {waiting_for})"
    )]
    Timeout {
        /// Which child.
        process_idx: usize,
        /// The bound.
        timeout: Duration,
        /// The event awaited.
        waiting_for: &'static str,
    },
}

struct ChildProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Result<ClientEvent, String>>,
}

/// Child processes running [`ClientJob`]s. Dropping the fleet kills the
/// children still running (by PID, through their `Child` handles).
pub struct ClientFleet {
    children: Vec<ChildProcess>,
}

impl ClientFleet {
    /// Starts one child per job (this executable, `client-process`) and
    /// hands each its job.
    pub fn spawn(jobs: &[ClientJob]) -> Result<ClientFleet, FleetError> {
        let exe = std::env::current_exe().map_err(|error| FleetError::Child {
            process_idx: 0,
            reason: format!("locate this executable: {error}"),
        })?;
        let mut fleet = ClientFleet {
            children: Vec::with_capacity(jobs.len()),
        };
        for (process_idx, job) in jobs.iter().enumerate() {
            let child = spawn_child(&exe, job).map_err(|reason| FleetError::Child {
                process_idx,
                reason,
            })?;
            fleet.children.push(child);
        }
        Ok(fleet)
    }

    /// How many children.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Waits for every child's next event, in child order.
    pub fn next_events(
        &mut self,
        timeout: Duration,
        waiting_for: &'static str,
    ) -> Result<Vec<ClientEvent>, FleetError> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::with_capacity(self.children.len());
        for (process_idx, child) in self.children.iter_mut().enumerate() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let event = match child.events.recv_timeout(remaining) {
                Ok(Ok(ClientEvent::Failed { reason })) | Ok(Err(reason)) => {
                    return Err(FleetError::Child {
                        process_idx,
                        reason,
                    })
                }
                Ok(Ok(event)) => event,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(FleetError::Timeout {
                        process_idx,
                        timeout,
                        waiting_for,
                    })
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(FleetError::Child {
                        process_idx,
                        reason: format!("exited while {waiting_for} was awaited"),
                    })
                }
            };
            events.push(event);
        }
        Ok(events)
    }

    /// Sends `line` to every child.
    pub fn tell_all(&mut self, line: &str) -> Result<(), FleetError> {
        for (process_idx, child) in self.children.iter_mut().enumerate() {
            let stdin = child.stdin.as_mut().ok_or_else(|| FleetError::Child {
                process_idx,
                reason: "stdin already closed".into(),
            })?;
            writeln!(stdin, "{line}")
                .and_then(|()| stdin.flush())
                .map_err(|error| FleetError::Child {
                    process_idx,
                    reason: format!("write {line:?}: {error}"),
                })?;
        }
        Ok(())
    }

    /// Tells every child to close, collects their `closed` reports, and
    /// waits for them to exit (killing any that do not in time).
    pub fn close(mut self) -> Result<Vec<CloseReport>, FleetError> {
        self.tell_all("close")?;
        let events = self.next_events(EXIT_TIMEOUT, "closed")?;
        for child in &mut self.children {
            drop(child.stdin.take());
            wait_or_kill(&mut child.child, EXIT_TIMEOUT);
        }
        Ok(events
            .into_iter()
            .map(|event| match event {
                ClientEvent::Closed(report) => report,
                _ => CloseReport::default(),
            })
            .collect())
    }
}

impl Drop for ClientFleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
            if matches!(child.child.try_wait(), Ok(None)) {
                let _ = child.child.kill();
            }
            let _ = child.child.wait();
        }
    }
}

fn spawn_child(exe: &std::path::Path, job: &ClientJob) -> Result<ChildProcess, String> {
    let mut child = Command::new(exe)
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| format!("spawn {}: {error}", exe.display()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let job_line = serde_json::to_string(job).map_err(|error| error.to_string())?;
    writeln!(stdin, "{job_line}")
        .and_then(|()| stdin.flush())
        .map_err(|error| format!("send the job: {error}"))?;
    let (sender, events) = mpsc::channel();
    // One reader thread per child turns its stdout lines into events, so
    // that the parent can wait on all children with a timeout.
    std::thread::Builder::new()
        .name("client-process-events".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let event = match line {
                    Ok(line) => serde_json::from_str::<ClientEvent>(&line)
                        .map_err(|error| format!("bad event {line:?}: {error}")),
                    Err(error) => Err(error.to_string()),
                };
                if sender.send(event).is_err() {
                    return;
                }
            }
        })
        .map_err(|error| format!("start the event reader: {error}"))?;
    Ok(ChildProcess {
        child,
        stdin: Some(stdin),
        events,
    })
}

fn wait_or_kill(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    // Bounded by the deadline.
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Splits `n_connections` over processes of at most `per_process_max`
/// connections each, at least `processes_min` processes (when there are
/// that many connections), as evenly as possible: `(first_idx, count)`.
pub fn split_connections(
    n_connections: usize,
    per_process_max: usize,
    processes_min: usize,
) -> Vec<(usize, usize)> {
    assert!(per_process_max > 0);
    let n_processes = n_connections
        .div_ceil(per_process_max)
        .max(processes_min)
        .min(n_connections.max(1));
    let base = n_connections / n_processes;
    let extra = n_connections % n_processes;
    let mut first_idx = 0;
    (0..n_processes)
        .map(|process_idx| {
            let count = base + usize::from(process_idx < extra);
            let share = (first_idx, count);
            first_idx += count;
            share
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_split_evenly_within_the_per_process_bound() {
        assert_eq!(
            split_connections(15_000, 5_000, 2),
            vec![(0, 5000), (5000, 5000), (10_000, 5000)]
        );
        assert_eq!(
            split_connections(2000, 5000, 2),
            vec![(0, 1000), (1000, 1000)]
        );
        assert_eq!(
            split_connections(10_001, 5000, 2),
            vec![(0, 3334), (3334, 3334), (6668, 3333)]
        );
        assert_eq!(split_connections(1, 5000, 2), vec![(0, 1)]);
    }

    #[test]
    fn events_round_trip_as_one_json_line_each() {
        let event = ClientEvent::Opened(OpenReport {
            opened: 2,
            handshake_us: vec![10, 20],
            ..OpenReport::default()
        });
        let line = serde_json::to_string(&event).unwrap();
        assert!(!line.contains('\n'));
        assert!(line.starts_with(r#"{"event":"opened""#), "{line}");
        assert_eq!(serde_json::from_str::<ClientEvent>(&line).unwrap(), event);
        let prepared = serde_json::to_string(&ClientEvent::Prepared).unwrap();
        assert_eq!(prepared, r#"{"event":"prepared"}"#);
    }
}
