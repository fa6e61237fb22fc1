//! A server under test as a child process: started pinned with `taskset`,
//! polled until ready, measured from `/proc`, stopped by PID.
//!
//! CPU seconds are `utime + stime` of `/proc/PID/stat` (all threads of the
//! process) divided by `sysconf(_SC_CLK_TCK)`; RSS is `VmRSS` of
//! `/proc/PID/status`. `taskset` execs the server, so the PID of the child is
//! the server's own.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::load_generator::client_threads::join_cpus;
use crate::proc_stat::{process_sample, ProcError, ProcessSample};

/// How often readiness and exit are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The last bytes of a server's log quoted in an error.
const LOG_TAIL_BYTES_MAX: u64 = 2048;

/// How a server shows that it accepts work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// `GET path` answers `200`.
    HttpGet {
        /// The request target, for example `/ready`.
        path: String,
    },
    /// A TCP connect succeeds (for servers without a readiness endpoint).
    TcpConnect,
}

/// Everything needed to start one server.
#[derive(Debug, Clone)]
pub struct ServerLaunch {
    /// A short name for logs and errors, for example `veza`.
    pub name: String,
    /// The server binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub environment: Vec<(String, String)>,
    /// The CPUs it is pinned to with `taskset -c`; empty for no pinning.
    pub cpus: Vec<usize>,
    /// Where it listens.
    pub address: SocketAddr,
    /// How to tell that it is ready.
    pub readiness: Readiness,
    /// How long it may take to become ready.
    pub ready_timeout: Duration,
    /// Where its stdout and stderr go.
    pub log_path: PathBuf,
}

/// Why a server could not be started, measured or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The binary does not exist.
    #[error("server binary {0} not found")]
    MissingBinary(PathBuf),
    /// Spawning, reading `/proc` or signalling failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The server exited before it was ready.
    #[error("server {name} exited with {status} before it was ready; log tail:\n{log_tail}")]
    ExitedEarly {
        /// The server's name.
        name: String,
        /// Its exit status.
        status: ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// The server was not ready in time.
    #[error("server {name} not ready within {timeout:?}; log tail:\n{log_tail}")]
    NotReady {
        /// The server's name.
        name: String,
        /// The timeout.
        timeout: Duration,
        /// The end of its log.
        log_tail: String,
    },
    /// `/proc` could not be read or held something unexpected.
    #[error("sampling the server: {0}")]
    Proc(#[from] ProcError),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// How a server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It exited after SIGTERM.
    Terminated(ExitStatus),
    /// It ignored SIGTERM past the deadline and was killed.
    Killed,
}

/// A running server. Dropping it stops it.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
}

/// A loopback port that was free a moment ago (the OS picked it).
pub fn free_loopback_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl ServerProcess {
    /// Starts the server and waits until it is ready.
    pub fn start(launch: &ServerLaunch) -> Result<ServerProcess, ServerError> {
        if !launch.program.is_file() {
            return Err(ServerError::MissingBinary(launch.program.clone()));
        }
        let log = File::create(&launch.log_path).map_err(io_error("create server log"))?;
        let log_for_stderr = log.try_clone().map_err(io_error("clone server log"))?;
        let mut command = if launch.cpus.is_empty() {
            Command::new(&launch.program)
        } else {
            let mut taskset = Command::new("taskset");
            taskset
                .arg("-c")
                .arg(join_cpus(&launch.cpus))
                .arg(&launch.program);
            taskset
        };
        command
            .args(&launch.args)
            .envs(launch.environment.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr);
        let child = command
            .spawn()
            .map_err(io_error(format!("spawn {}", launch.name)))?;
        let mut server = ServerProcess {
            name: launch.name.clone(),
            child: Some(child),
            log_path: launch.log_path.clone(),
        };
        server.wait_ready(launch)?;
        Ok(server)
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("a started server has a child")
            .id()
    }

    fn wait_ready(&mut self, launch: &ServerLaunch) -> Result<(), ServerError> {
        let deadline = Instant::now() + launch.ready_timeout;
        // Bounded by the deadline.
        loop {
            let child = self.child.as_mut().expect("a started server has a child");
            if let Some(status) = child.try_wait().map_err(io_error("poll server"))? {
                self.child = None;
                let log_tail = log_tail(&self.log_path);
                return Err(ServerError::ExitedEarly {
                    name: self.name.clone(),
                    status,
                    log_tail,
                });
            }
            if probe_ready(launch.address, &launch.readiness) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let (name, log_tail) = (self.name.clone(), log_tail(&self.log_path));
                return Err(ServerError::NotReady {
                    name,
                    timeout: launch.ready_timeout,
                    log_tail,
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Reads the server's CPU seconds and RSS now.
    pub fn sample(&self) -> Result<ProcessSample, ServerError> {
        Ok(process_sample(self.pid())?)
    }

    /// Sends SIGTERM, waits up to `deadline`, then sends SIGKILL.
    pub fn stop(mut self, deadline: Duration) -> Result<StopOutcome, ServerError> {
        self.stop_child(deadline)
    }

    fn stop_child(&mut self, deadline: Duration) -> Result<StopOutcome, ServerError> {
        let Some(mut child) = self.child.take() else {
            return Ok(StopOutcome::Killed);
        };
        let pid = libc::pid_t::try_from(child.id()).expect("PIDs fit in pid_t");
        // SAFETY: kill has no memory effects; the PID is our own child, not
        // yet reaped, so it cannot name another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let give_up = Instant::now() + deadline;
        // Bounded by the deadline.
        while Instant::now() < give_up {
            if let Some(status) = child.try_wait().map_err(io_error("poll server"))? {
                return Ok(StopOutcome::Terminated(status));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        child.kill().map_err(io_error("SIGKILL server"))?;
        child.wait().map_err(io_error("reap server"))?;
        Ok(StopOutcome::Killed)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.stop_child(Duration::from_secs(2));
    }
}

fn probe_ready(address: SocketAddr, readiness: &Readiness) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, PROBE_TIMEOUT) else {
        return false;
    };
    let Readiness::HttpGet { path } = readiness else {
        return true;
    };
    // A keep-alive request: the probe reads the status line and hangs up,
    // which every server handles; it needs nothing more from `close`.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n");
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut status_line = [0u8; 12];
    stream.read_exact(&mut status_line).is_ok() && status_line.ends_with(b" 200")
}

fn log_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let length = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let start = length.saturating_sub(LOG_TAIL_BYTES_MAX);
    let mut tail = Vec::new();
    use std::io::Seek as _;
    let _ = file.seek(std::io::SeekFrom::Start(start));
    let _ = file.read_to_end(&mut tail);
    String::from_utf8_lossy(&tail).into_owned()
}
