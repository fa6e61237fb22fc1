//! The parent's side of a scenario's client processes: start one child per
//! job (this executable with the scenario's hidden subcommand, pinned with
//! `taskset` when CPUs are given), follow their JSON events, and kill any
//! child still running when the fleet is dropped, by PID through its
//! `Child` handle, on every exit path. `live-listeners` and `track-ranges`
//! use it with their own job and event types.
//!
//! The same exchange as [`crate::client_process`] (whose job and events are
//! those of chat connections): one JSON line in, JSON lines out, and a
//! reader thread per child so that the parent waits with a timeout.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::load_generator::client_threads::join_cpus;

/// How long a child may take to exit once it reported.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a fleet's children report, one JSON line each.
pub trait FleetEvent: DeserializeOwned + Send + 'static {
    /// What the `finished` event carries.
    type Report: Default;
    /// The reason, when this event says the child failed.
    fn failure(&self) -> Option<&str>;
    /// The report, when this is the `finished` event.
    fn into_report(self) -> Option<Self::Report>;
}

struct FleetChild<E> {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Result<E, String>>,
}

/// The running client processes of one scenario.
pub struct ProcessFleet<E: FleetEvent> {
    children: Vec<FleetChild<E>>,
    /// "listener process", "client process": names a child in errors.
    label: &'static str,
}

impl<E: FleetEvent> ProcessFleet<E> {
    /// Starts one child per job on `cpus` (empty: unpinned): this
    /// executable with `subcommand`, the job as its first stdin line.
    pub fn spawn<J: Serialize>(
        subcommand: &'static str,
        label: &'static str,
        jobs: &[J],
        cpus: &[usize],
    ) -> Result<Self, String> {
        let exe =
            std::env::current_exe().map_err(|error| format!("locate this executable: {error}"))?;
        let mut fleet = ProcessFleet {
            children: Vec::with_capacity(jobs.len()),
            label,
        };
        for (process_idx, job) in jobs.iter().enumerate() {
            let child = spawn_child(&exe, subcommand, job, cpus)
                .map_err(|reason| format!("{label} {process_idx}: {reason}"))?;
            fleet.children.push(child);
        }
        Ok(fleet)
    }

    /// Waits for every child's next event, in child order; a `failed`
    /// event, a bad line or an exit is an error.
    pub fn next_events(&mut self, timeout: Duration, waiting_for: &str) -> Result<Vec<E>, String> {
        let label = self.label;
        let deadline = Instant::now() + timeout;
        let mut events = Vec::with_capacity(self.children.len());
        for (process_idx, child) in self.children.iter_mut().enumerate() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let event = match child.events.recv_timeout(remaining) {
                Ok(Ok(event)) => match event.failure() {
                    Some(reason) => return Err(format!("{label} {process_idx}: {reason}")),
                    None => event,
                },
                Ok(Err(reason)) => return Err(format!("{label} {process_idx}: {reason}")),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{label} {process_idx} sent nothing within {timeout:?} (waiting for {waiting_for})"
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("{label} {process_idx} exited while {waiting_for} was awaited"))
                }
            };
            events.push(event);
        }
        Ok(events)
    }

    /// Sends `line` to every child.
    pub fn tell_all(&mut self, line: &str) -> Result<(), String> {
        let label = self.label;
        for (process_idx, child) in self.children.iter_mut().enumerate() {
            let stdin = child
                .stdin
                .as_mut()
                .ok_or_else(|| format!("{label} {process_idx}: stdin closed"))?;
            writeln!(stdin, "{line}")
                .and_then(|()| stdin.flush())
                .map_err(|error| format!("{label} {process_idx}: write {line:?}: {error}"))?;
        }
        Ok(())
    }

    /// Collects every child's `finished` report and waits for the children
    /// to exit (killing any that do not in time).
    pub fn finish(mut self, timeout: Duration) -> Result<Vec<E::Report>, String> {
        let events = self.next_events(timeout, "finished")?;
        for child in &mut self.children {
            drop(child.stdin.take());
            wait_or_kill(&mut child.child, EXIT_TIMEOUT);
        }
        Ok(events
            .into_iter()
            .map(|event| event.into_report().unwrap_or_default())
            .collect())
    }
}

impl<E: FleetEvent> Drop for ProcessFleet<E> {
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

fn spawn_child<J: Serialize, E: FleetEvent>(
    exe: &Path,
    subcommand: &str,
    job: &J,
    cpus: &[usize],
) -> Result<FleetChild<E>, String> {
    // `taskset` execs the child, so the PID is the child's own.
    let mut command = if cpus.is_empty() {
        Command::new(exe)
    } else {
        let mut taskset = Command::new("taskset");
        taskset.arg("-c").arg(join_cpus(cpus)).arg(exe);
        taskset
    };
    let mut child = command
        .arg(subcommand)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| format!("spawn {}: {error}", exe.display()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, events) = mpsc::channel();
    let mut fleet_child = FleetChild {
        child,
        stdin: None,
        events,
    };
    let job_line = serde_json::to_string(job).map_err(|error| error.to_string())?;
    if let Err(error) = writeln!(stdin, "{job_line}").and_then(|()| stdin.flush()) {
        let _ = fleet_child.child.kill();
        let _ = fleet_child.child.wait();
        return Err(format!("send the job: {error}"));
    }
    fleet_child.stdin = Some(stdin);
    let reader = std::thread::Builder::new()
        .name(format!("{subcommand}-events"))
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let event = match line {
                    Ok(line) => serde_json::from_str::<E>(&line)
                        .map_err(|error| format!("bad event {line:?}: {error}")),
                    Err(error) => Err(error.to_string()),
                };
                if sender.send(event).is_err() {
                    return;
                }
            }
        });
    if let Err(error) = reader {
        let _ = fleet_child.child.kill();
        let _ = fleet_child.child.wait();
        return Err(format!("start the event reader: {error}"));
    }
    Ok(fleet_child)
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
