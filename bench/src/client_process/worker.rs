//! The child's side of [`super::ClientFleet`]: read a [`ClientJob`], open its
//! connections (`concurrency` at a time, on one tokio `current_thread`
//! runtime), hold them, close them, and report each step as one JSON line.

use std::cell::RefCell;
use std::io::{BufRead as _, Write as _};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};

use crate::chat_client::{ChatClient, ChatClientError};
use crate::chat_servers::ChatServerKind;
use crate::load_generator::source_address::source_address;
use crate::nats_client::{room_subject, NatsClient, NatsClientError, ServerOp};

use super::{ClientEvent, ClientJob, CloseReport, OpenReport};

/// How long one connection may take to open (connect, upgrade, auth,
/// subscribe).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a held connection waits for the server's close after its own.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How often an idle held connection re-arms its read timeout.
const HOLD_POLL: Duration = Duration::from_secs(60);

/// The subscription id of every NATS connection.
const SUBSCRIPTION_ID: u64 = 1;

/// Why the child could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Reading stdin, writing stdout or building the runtime failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The job line is not a valid job.
    #[error("bad job: {0}")]
    BadJob(String),
}

/// Runs one child: reads the job from stdin, reports on stdout.
pub fn run_from_stdin() -> Result<(), WorkerError> {
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    let job: ClientJob =
        serde_json::from_str(&line).map_err(|error| WorkerError::BadJob(error.to_string()))?;
    if let Err(reason) = validate(&job) {
        emit(&ClientEvent::Failed {
            reason: reason.clone(),
        })?;
        return Err(WorkerError::BadJob(reason));
    }
    if !job.cpus.is_empty() {
        pin_current_thread(&job.cpus)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    emit(&ClientEvent::Prepared)?;
    if job.wait_for_go {
        line.clear();
        stdin.read_line(&mut line)?;
        if line.trim() != "go" {
            return Err(WorkerError::BadJob(format!("expected go, got {line:?}")));
        }
    }
    drop(stdin);
    let commands = stdin_commands();
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run_job(job, commands))
}

fn validate(job: &ClientJob) -> Result<(), String> {
    if job.n_connections > super::CONNECTIONS_PER_PROCESS_MAX {
        return Err(format!(
            "{} connections: at most {} per process",
            job.n_connections,
            super::CONNECTIONS_PER_PROCESS_MAX
        ));
    }
    if job.room_ids.is_empty() || job.concurrency == 0 {
        return Err("a job needs rooms and a concurrency of at least 1".into());
    }
    if job.server == ChatServerKind::Veza && job.tokens.is_empty() {
        return Err("a Veza job needs tokens".into());
    }
    Ok(())
}

/// Lines from stdin, read on a thread of their own so that the runtime
/// never blocks on them; the end of stdin is a `close`.
fn stdin_commands() -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.send(line.trim().to_string()).is_err() {
                return;
            }
        }
        let _ = sender.send("close".into());
    });
    receiver
}

fn emit(event: &ClientEvent) -> Result<(), WorkerError> {
    let line = serde_json::to_string(event).map_err(std::io::Error::other)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

/// One open connection (a chat client is boxed: it is larger than a NATS
/// one).
enum HeldConnection {
    Veza(Box<ChatClient>),
    Nats(NatsClient),
}

/// One connection opened, with its times.
struct Opened {
    connection: HeldConnection,
    handshake_us: u64,
    auth_us: u64,
}

async fn run_job(
    job: ClientJob,
    mut commands: mpsc::UnboundedReceiver<String>,
) -> Result<(), WorkerError> {
    let started = Instant::now();
    let outcomes: Vec<Result<Opened, String>> = futures_util::stream::iter(0..job.n_connections)
        .map(|offset| open_one(&job, job.first_connection_idx + offset))
        .buffer_unordered(job.concurrency)
        .collect()
        .await;
    let mut report = OpenReport {
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        ..OpenReport::default()
    };
    let mut held = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match outcome {
            Ok(opened) => {
                report.opened += 1;
                if job.record_latencies {
                    report.handshake_us.push(opened.handshake_us);
                    report.auth_us.push(opened.auth_us);
                }
                held.push(opened.connection);
            }
            Err(error) => {
                report.failed += 1;
                report.first_error.get_or_insert(error);
            }
        }
    }
    emit(&ClientEvent::Opened(report))?;
    let closes = Rc::new(RefCell::new(CloseReport::default()));
    let (shutdown_sender, shutdown) = watch::channel(false);
    let tasks: Vec<_> = held
        .into_iter()
        .map(|connection| {
            let (shutdown, closes) = (shutdown.clone(), Rc::clone(&closes));
            tokio::task::spawn_local(hold(connection, shutdown, closes))
        })
        .collect();
    // Bounded by the parent, which sends `close` or ends stdin.
    while let Some(command) = commands.recv().await {
        if command == "close" {
            break;
        }
    }
    let _ = shutdown_sender.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let report = closes.borrow().clone();
    emit(&ClientEvent::Closed(report))
}

async fn open_one(job: &ClientJob, connection_idx: usize) -> Result<Opened, String> {
    let opening = async {
        match job.server {
            ChatServerKind::Veza => open_veza(job, connection_idx)
                .await
                .map_err(|e| e.to_string()),
            ChatServerKind::Nats => open_nats(job, connection_idx)
                .await
                .map_err(|e| e.to_string()),
        }
    };
    tokio::time::timeout(OPEN_TIMEOUT, opening)
        .await
        .unwrap_or_else(|_elapsed| Err(format!("not open within {OPEN_TIMEOUT:?}")))
}

async fn open_veza(job: &ClientJob, connection_idx: usize) -> Result<Opened, ChatClientError> {
    let started = Instant::now();
    let mut client = ChatClient::connect_from(&job.url, source_address(connection_idx)).await?;
    let handshaken = Instant::now();
    let token = &job.tokens[connection_idx % job.tokens.len()];
    client.authenticate(token, OPEN_TIMEOUT).await?;
    if job.subscribe {
        let room_id = job.room_ids[connection_idx % job.room_ids.len()];
        client.subscribe(room_id, -1, OPEN_TIMEOUT).await?;
    }
    Ok(Opened {
        connection: HeldConnection::Veza(Box::new(client)),
        handshake_us: micros(handshaken - started),
        auth_us: micros(handshaken.elapsed()),
    })
}

async fn open_nats(job: &ClientJob, connection_idx: usize) -> Result<Opened, NatsClientError> {
    let started = Instant::now();
    let mut client = NatsClient::connect(&job.url, Some(source_address(connection_idx))).await?;
    let handshaken = Instant::now();
    if job.subscribe {
        let subject = room_subject(connection_idx % job.room_ids.len());
        client.subscribe(&subject, SUBSCRIPTION_ID).await?;
    }
    client.ping(OPEN_TIMEOUT).await?;
    Ok(Opened {
        connection: HeldConnection::Nats(client),
        handshake_us: micros(handshaken - started),
        auth_us: micros(handshaken.elapsed()),
    })
}

fn micros(duration: Duration) -> u64 {
    duration.as_micros().try_into().unwrap_or(u64::MAX)
}

/// Keeps a connection open and answered until shutdown, noting a close by
/// the server.
async fn hold(
    connection: HeldConnection,
    mut shutdown: watch::Receiver<bool>,
    closes: Rc<RefCell<CloseReport>>,
) {
    let note = |code: u16, text: String| {
        let mut closes = closes.borrow_mut();
        closes.closed_by_server += 1;
        *closes.close_codes.entry(code.to_string()).or_default() += 1;
        closes.first_close.get_or_insert(text);
    };
    match connection {
        HeldConnection::Veza(mut client) => loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    let _ = client.close(1000, CLOSE_WAIT).await;
                    return;
                }
                frame = client.next_frame(HOLD_POLL) => match frame {
                    Ok(_) | Err(ChatClientError::Timeout) => {}
                    Err(error) => {
                        return note(error.close_code().unwrap_or(1006), error.to_string());
                    }
                }
            }
        },
        HeldConnection::Nats(client) => {
            let (mut sender, mut receiver) = client.split();
            loop {
                let deadline = tokio::time::Instant::now() + HOLD_POLL;
                tokio::select! {
                    _ = shutdown.changed() => {
                        let _ = tokio::time::timeout(CLOSE_WAIT, sender.close()).await;
                        return;
                    }
                    op = receiver.next_op(deadline) => match op {
                        Ok(ServerOp::Ping) => {
                            if let Err(error) = sender.pong().await {
                                return note(1006, error.to_string());
                            }
                        }
                        Ok(_) | Err(NatsClientError::Timeout) => {}
                        Err(error) => return note(1006, error.to_string()),
                    }
                }
            }
        }
    }
}

fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it and
    // sched_setaffinity reads size_of::<cpu_set_t>() bytes of it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    let status =
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if status != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
