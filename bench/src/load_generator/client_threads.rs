//! Thread-per-core load: one std thread per client core, each running a
//! tokio `current_thread` runtime with a `LocalSet`, each owning its share of
//! the connections. Nothing is shared between threads while load runs; each
//! thread returns its own output (counters, a histogram) to be merged.
//!
//! A run has two phases so that connection setup never counts: every thread
//! first prepares (connects) and reports in, then all are handed one
//! [`MeasurementWindow`] and run to its drain deadline.

use std::future::Future;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long all threads together may take to prepare before the run is
/// abandoned. Connecting thousands of loopback sockets takes well under it.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);

/// How far in the future the window starts once every thread is prepared,
/// so that all threads see the start before it passes.
const START_DELAY: Duration = Duration::from_millis(20);

/// Which CPUs the load generator runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPlacement {
    /// The CPUs the threads are pinned to, one thread each; empty when the
    /// threads are left to the scheduler.
    pub cpus: Vec<usize>,
    /// How many threads run load.
    pub n_threads: usize,
}

impl ClientPlacement {
    /// One pinned thread per CPU of `allowed_cpus` that is not in
    /// `server_cpus`; if the server has them all, one unpinned thread per
    /// allowed CPU.
    pub fn beside_server(server_cpus: &[usize], allowed_cpus: &[usize]) -> ClientPlacement {
        let cpus: Vec<usize> = allowed_cpus
            .iter()
            .copied()
            .filter(|cpu| !server_cpus.contains(cpu))
            .collect();
        if cpus.is_empty() {
            return ClientPlacement {
                cpus,
                n_threads: allowed_cpus.len().max(1),
            };
        }
        ClientPlacement {
            n_threads: cpus.len(),
            cpus,
        }
    }

    /// Whether the threads are pinned.
    pub fn is_pinned(&self) -> bool {
        !self.cpus.is_empty()
    }

    /// A one-line description for reports, for example
    /// `2 threads pinned to CPUs 2,3` or `2 threads, unpinned (shares the
    /// server's CPUs)`.
    pub fn describe(&self) -> String {
        if self.is_pinned() {
            format!(
                "{} thread(s) pinned to CPUs {}",
                self.n_threads,
                join_cpus(&self.cpus)
            )
        } else {
            format!(
                "{} thread(s), unpinned (sharing the server's CPUs)",
                self.n_threads
            )
        }
    }
}

/// `[0, 1]` as `0,1`: the form `taskset -c` takes.
pub fn join_cpus(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The CPUs this process may run on (its affinity mask).
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let status =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if status != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let cpus = (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    Ok(cpus)
}

fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: as in allowed_cpus; pid 0 means the calling thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let status =
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if status != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The timeline of one run, shared by every thread and the scenario.
#[derive(Debug, Clone, Copy)]
pub struct MeasurementWindow {
    /// Time zero for timestamps carried in payloads.
    pub epoch: Instant,
    /// When load starts (the warm-up begins).
    pub load_start: Instant,
    /// When measurement starts (the warm-up ends).
    pub measure_start: Instant,
    /// When measurement ends and sending stops.
    pub measure_end: Instant,
    /// When waiting for replies stops; replies still missing are errors.
    pub drain_deadline: Instant,
}

impl MeasurementWindow {
    /// A window that starts shortly after now.
    pub fn starting_soon(warmup: Duration, duration: Duration, drain: Duration) -> Self {
        let epoch = Instant::now();
        let load_start = epoch + START_DELAY;
        let measure_start = load_start + warmup;
        let measure_end = measure_start + duration;
        let drain_deadline = measure_end + drain;
        MeasurementWindow {
            epoch,
            load_start,
            measure_start,
            measure_end,
            drain_deadline,
        }
    }

    /// `instant` as nanoseconds since the epoch (0 for earlier instants).
    pub fn ns_since_epoch(&self, instant: Instant) -> u64 {
        instant.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The instant `ns` nanoseconds after the epoch.
    pub fn instant_at_ns(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    /// Whether a message stamped `ns` belongs to the measurement.
    pub fn is_measured_ns(&self, ns: u64) -> bool {
        let start_ns = self.ns_since_epoch(self.measure_start);
        let end_ns = self.ns_since_epoch(self.measure_end);
        (start_ns..end_ns).contains(&ns)
    }

    /// The measured length in seconds.
    pub fn measured_secs(&self) -> f64 {
        (self.measure_end - self.measure_start).as_secs_f64()
    }
}

/// The share of the load that one client thread runs.
///
/// Both futures run inside a `LocalSet` on the thread's own
/// `current_thread` runtime, so they need not be `Send` and may use
/// `tokio::task::spawn_local`.
pub trait ThreadWorkload: Send + 'static {
    /// What `prepare` leaves for `run` (open connections, say).
    type Prepared: 'static;
    /// What the thread reports when its run ends.
    type Output: Send + 'static;
    /// Why preparing failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Sets up before the clock starts: connect, handshake.
    fn prepare(&mut self) -> impl Future<Output = Result<Self::Prepared, Self::Error>>;

    /// Runs load over `window`; must return by `window.drain_deadline`.
    fn run(
        self,
        prepared: Self::Prepared,
        window: MeasurementWindow,
    ) -> impl Future<Output = Self::Output>;
}

/// Why a load run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A client thread or its runtime could not be set up.
    #[error("client thread setup: {0}")]
    ThreadSetup(#[from] std::io::Error),
    /// A thread's `prepare` failed.
    #[error("client thread {thread_idx} failed to prepare: {reason}")]
    Prepare {
        /// Which thread.
        thread_idx: usize,
        /// The workload's error, as text.
        reason: String,
    },
    /// Not every thread prepared within the timeout.
    #[error("client threads did not prepare within {0:?}")]
    PrepareTimeout(Duration),
    /// A client thread panicked.
    #[error("client thread {0} panicked")]
    Panicked(usize),
}

struct ClientThread<O> {
    window_sender: mpsc::Sender<MeasurementWindow>,
    join_handle: JoinHandle<Option<O>>,
}

/// Threads that have prepared and wait for their window.
pub struct PreparedLoad<O> {
    threads: Vec<ClientThread<O>>,
}

/// Threads that are running load.
pub struct RunningLoad<O> {
    threads: Vec<JoinHandle<Option<O>>>,
}

/// Starts one thread per workload, placed by `placement`, and returns once
/// all have prepared. Any failure stops the threads that did start.
pub fn prepare_load<W: ThreadWorkload>(
    placement: &ClientPlacement,
    workloads: Vec<W>,
) -> Result<PreparedLoad<W::Output>, LoadError> {
    assert_eq!(
        workloads.len(),
        placement.n_threads,
        "one workload per client thread"
    );
    let (ready_sender, ready_receiver) = mpsc::channel::<(usize, Result<(), String>)>();
    let mut threads = Vec::with_capacity(workloads.len());
    for (thread_idx, workload) in workloads.into_iter().enumerate() {
        let cpu = placement
            .cpus
            .get(thread_idx % placement.cpus.len().max(1))
            .copied();
        let (window_sender, window_receiver) = mpsc::channel();
        let ready_sender = ready_sender.clone();
        let join_handle = std::thread::Builder::new()
            .name(format!("client-{thread_idx}"))
            .spawn(move || {
                run_client_thread(thread_idx, cpu, workload, ready_sender, window_receiver)
            })?;
        threads.push(ClientThread {
            window_sender,
            join_handle,
        });
    }
    drop(ready_sender);
    let prepared = PreparedLoad { threads };
    let deadline = Instant::now() + PREPARE_TIMEOUT;
    for _ in 0..prepared.threads.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match ready_receiver.recv_timeout(remaining) {
            Ok((_, Ok(()))) => {}
            Ok((thread_idx, Err(reason))) => {
                prepared.abandon();
                return Err(LoadError::Prepare { thread_idx, reason });
            }
            Err(_) => {
                prepared.abandon();
                return Err(LoadError::PrepareTimeout(PREPARE_TIMEOUT));
            }
        }
    }
    Ok(prepared)
}

fn run_client_thread<W: ThreadWorkload>(
    thread_idx: usize,
    cpu: Option<usize>,
    mut workload: W,
    ready_sender: mpsc::Sender<(usize, Result<(), String>)>,
    window_receiver: mpsc::Receiver<MeasurementWindow>,
) -> Option<W::Output> {
    let setup = cpu.map_or(Ok(()), pin_current_thread).and_then(|()| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    });
    let runtime = match setup {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready_sender.send((thread_idx, Err(error.to_string())));
            return None;
        }
    };
    let local_set = tokio::task::LocalSet::new();
    let prepared = local_set.block_on(&runtime, workload.prepare());
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            let _ = ready_sender.send((thread_idx, Err(error.to_string())));
            return None;
        }
    };
    let _ = ready_sender.send((thread_idx, Ok(())));
    // The sender is dropped without a window when another thread failed.
    let window = window_receiver.recv().ok()?;
    Some(local_set.block_on(&runtime, workload.run(prepared, window)))
}

impl<O> PreparedLoad<O> {
    /// Hands every thread the window; load starts at `window.load_start`.
    pub fn start(self, window: MeasurementWindow) -> RunningLoad<O> {
        let threads = self
            .threads
            .into_iter()
            .map(|thread| {
                // A thread that already exited shows up as an error at join.
                let _ = thread.window_sender.send(window);
                thread.join_handle
            })
            .collect();
        RunningLoad { threads }
    }

    fn abandon(self) {
        for thread in self.threads {
            drop(thread.window_sender);
            let _ = thread.join_handle.join();
        }
    }
}

impl<O> RunningLoad<O> {
    /// Waits for every thread and returns their outputs in thread order.
    pub fn join(self) -> Result<Vec<O>, LoadError> {
        let mut outputs = Vec::with_capacity(self.threads.len());
        for (thread_idx, handle) in self.threads.into_iter().enumerate() {
            match handle.join() {
                Ok(Some(output)) => outputs.push(output),
                Ok(None) | Err(_) => return Err(LoadError::Panicked(thread_idx)),
            }
        }
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_takes_the_cpus_the_server_leaves() {
        let placement = ClientPlacement::beside_server(&[0], &[0, 1]);
        assert_eq!(
            placement,
            ClientPlacement {
                cpus: vec![1],
                n_threads: 1
            }
        );
        assert!(placement.describe().contains("pinned to CPUs 1"));
    }

    #[test]
    fn client_is_unpinned_when_the_server_has_every_cpu() {
        let placement = ClientPlacement::beside_server(&[0, 1], &[0, 1]);
        assert_eq!(
            placement,
            ClientPlacement {
                cpus: vec![],
                n_threads: 2
            }
        );
        assert!(placement.describe().contains("unpinned"));
    }

    #[test]
    fn window_measures_only_between_its_start_and_end() {
        let window = MeasurementWindow::starting_soon(
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(1),
        );
        let start_ns = window.ns_since_epoch(window.measure_start);
        let end_ns = window.ns_since_epoch(window.measure_end);
        assert!(!window.is_measured_ns(start_ns - 1));
        assert!(window.is_measured_ns(start_ns));
        assert!(!window.is_measured_ns(end_ns));
        assert_eq!(window.instant_at_ns(end_ns), window.measure_end);
        assert_eq!(window.measured_secs(), 2.0);
    }

    struct Echoing(usize);

    impl ThreadWorkload for Echoing {
        type Prepared = usize;
        type Output = usize;
        type Error = std::io::Error;

        async fn prepare(&mut self) -> Result<usize, std::io::Error> {
            Ok(self.0 * 10)
        }

        async fn run(self, prepared: usize, window: MeasurementWindow) -> usize {
            tokio::time::sleep_until(window.measure_end.into()).await;
            prepared + 1
        }
    }

    #[test]
    fn every_thread_prepares_runs_and_reports_in_order() {
        let placement = ClientPlacement {
            cpus: vec![],
            n_threads: 3,
        };
        let workloads = (0..3).map(Echoing).collect();
        let prepared = prepare_load(&placement, workloads).unwrap();
        let window = MeasurementWindow::starting_soon(
            Duration::ZERO,
            Duration::from_millis(10),
            Duration::ZERO,
        );
        assert_eq!(prepared.start(window).join().unwrap(), vec![1, 11, 21]);
    }
}
