//! Shards: one thread per core, each pinned to its CPU, running its own monoio
//! runtime, its own `SO_REUSEPORT` listener and every connection it accepts
//! for that connection's whole life.
//!
//! Architecture Invariant: a shard's state (`Shard`) is `!Send`; it never
//! leaves its thread. Other threads see only `ProcessShared` (atomics, the
//! mesh's doorbells) and talk to a shard only through [`ShardMessage`]s over
//! the ring mesh.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use monoio::io::AsyncReadRent;

use crate::config::Config;
use crate::local_event::{LocalEvent, LocalNotify};
use crate::metrics::{new_latency_histogram, DriverKind, ShardMetrics};
use crate::ring_mesh::{MeshEndpoint, MeshShared};

/// Everything that crosses between shards. A closed set: adding a message is
/// a deliberate change to the shard protocol.
pub enum ShardMessage {
    /// Asks for the receiver's loop-turn histogram, to merge into a scrape.
    MetricsRequest {
        /// Matches the reply to the waiting scrape.
        request_id: u64,
    },
    /// The answer to [`ShardMessage::MetricsRequest`].
    MetricsReply {
        /// The request this answers.
        request_id: u64,
        /// A copy of the shard's histogram.
        loop_turn: Box<Histogram<u64>>,
    },
    /// Chat: room commands, fan-out, replies, presence.
    Chat(crate::chat::ChatMessage),
    /// Live audio: sources, pages, listeners.
    Live(crate::live::LiveMessage),
}

/// What every thread of the process shares. Read-mostly.
pub struct ProcessShared {
    /// The validated configuration.
    pub config: Config,
    /// One entry per shard.
    pub shard_metrics: Vec<Arc<ShardMetrics>>,
    /// The mesh's doorbells, ring depths and counters.
    pub mesh: Arc<MeshShared<ShardMessage>>,
    /// Set once by the signal handler's thread.
    pub shutting_down: AtomicBool,
    /// Process start, the zero of every heartbeat.
    pub started: quanta::Instant,
    /// One entry per shard: its control-plane connection.
    pub control_status: Vec<Arc<crate::control_client::ControlStatus>>,
    /// Every live stream's counters, for status and metrics.
    pub live_directory: crate::live::Directory,
}

impl ProcessShared {
    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shard_metrics.len()
    }

    /// Nanoseconds since process start.
    pub fn now_ns(&self) -> u64 {
        quanta::Instant::now()
            .saturating_duration_since(self.started)
            .as_nanos() as u64
    }

    /// Whether every shard serves and none is stalled right now.
    pub fn all_shards_ready(&self) -> bool {
        let now_ns = self.now_ns();
        let stall_ns = self.config.stall.budget_ms * 1_000_000;
        self.shard_metrics.iter().all(|metrics| {
            metrics.serving.load(Ordering::Relaxed)
                && now_ns.saturating_sub(metrics.heartbeat_ns.load(Ordering::Relaxed)) <= stall_ns
        })
    }

    /// Whether every shard is connected to the control plane; true when no
    /// control plane is configured (standalone).
    pub fn control_connected_on_every_shard(&self) -> bool {
        !self.config.control.is_configured()
            || self
                .control_status
                .iter()
                .all(|status| status.connected.load(Ordering::Relaxed))
    }

    /// Starts a graceful shutdown: every shard wakes and stops accepting.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for shard_idx in 0..self.shard_count() {
            self.mesh.doorbell(shard_idx).ring();
        }
    }
}

/// How a shard reaches one of its open connections at shutdown.
pub enum ConnectionHandle {
    /// An HTTP connection: shutting down its read side ends it after the
    /// request in progress.
    Http(RawFd),
    /// A WebSocket session: it is sent close 1001.
    WebSocket(Rc<crate::websocket_session::WebSocketHandle>),
    /// A live listener: it gets what is queued, then the end of the body.
    LiveListener(Rc<crate::send_queue::Outbound>),
}

/// A pending metrics scrape on this shard.
struct PendingScrape {
    waiting_for: usize,
    merged: Histogram<u64>,
    done: Rc<LocalNotify>,
}

/// One shard's state. Lives on its thread only.
pub struct Shard {
    /// This shard's index.
    pub idx: usize,
    /// The process-wide view.
    pub process: Arc<ProcessShared>,
    /// This shard's counters.
    pub metrics: Arc<ShardMetrics>,
    /// The driver this shard's runtime uses.
    pub driver: DriverKind,
    mesh: RefCell<MeshEndpoint<ShardMessage>>,
    mesh_flush: LocalNotify,
    loop_turn: RefCell<Histogram<u64>>,
    scrapes: RefCell<HashMap<u64, PendingScrape>>,
    next_request_id: Cell<u64>,
    /// Set when this shard starts its graceful shutdown.
    pub shutdown: LocalEvent,
    connections: RefCell<slab::Slab<ConnectionHandle>>,
    /// Woken whenever a connection closes, for the shutdown drain.
    connection_closed: LocalNotify,
    /// The cached `Date` header value.
    pub http_date: RefCell<veza_codec::http1::HttpDate>,
    /// This shard's connection to the control plane.
    pub control: Rc<crate::control_client::ControlClient>,
    /// This shard's chat state.
    pub chat: crate::chat::ChatShard,
    /// This shard's live streams and listeners.
    pub live: crate::live::LiveShard,
    /// FIFO-per-destination sending of chat and live messages.
    pub ordered: crate::ordered_send::OrderedSender,
    /// This shard's track metadata cache, read buffers and play counts.
    pub tracks: crate::tracks::TracksShard,
}

impl Shard {
    /// Registers an open connection; the key deregisters it.
    pub fn register_connection(&self, handle: ConnectionHandle) -> usize {
        self.metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        self.connections.borrow_mut().insert(handle)
    }

    /// Replaces a connection's handle (an HTTP connection became a WebSocket).
    pub fn update_connection(&self, key: usize, handle: ConnectionHandle) {
        self.connections.borrow_mut()[key] = handle;
    }

    /// Deregisters a closed connection.
    pub fn deregister_connection(&self, key: usize) {
        self.connections.borrow_mut().remove(key);
        self.metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        self.connection_closed.notify();
    }

    /// Calls `visit` with every WebSocket on this shard.
    pub fn for_each_websocket(
        &self,
        mut visit: impl FnMut(&crate::websocket_session::WebSocketHandle),
    ) {
        for (_, handle) in self.connections.borrow().iter() {
            if let ConnectionHandle::WebSocket(handle) = handle {
                visit(handle);
            }
        }
    }

    /// Open connections on this shard.
    pub fn connection_count(&self) -> usize {
        self.connections.borrow().len()
    }

    /// Refreshes and returns the `Date` header value.
    pub fn date(&self) -> std::cell::Ref<'_, veza_codec::http1::HttpDate> {
        let unix_seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        self.http_date.borrow_mut().update(unix_seconds);
        self.http_date.borrow()
    }

    /// Collects every shard's loop-turn histogram over the mesh, waiting at
    /// most `timeout`. Returns the merge and the shards that did not answer.
    pub async fn collect_loop_turn_histograms(
        &self,
        timeout: Duration,
    ) -> (Histogram<u64>, Vec<usize>) {
        let request_id = self.next_request_id.get();
        self.next_request_id.set(request_id + 1);
        let mut missing = Vec::new();
        let mut asked = Vec::new();
        {
            let mut mesh = self.mesh.borrow_mut();
            for shard_idx in (0..self.process.shard_count()).filter(|&idx| idx != self.idx) {
                match mesh.send(shard_idx, ShardMessage::MetricsRequest { request_id }) {
                    Ok(()) => asked.push(shard_idx),
                    Err(full) => missing.push(full.destination_shard),
                }
            }
        }
        let done = Rc::new(LocalNotify::default());
        let mut merged = self.loop_turn.borrow().clone();
        if !asked.is_empty() {
            self.scrapes.borrow_mut().insert(
                request_id,
                PendingScrape {
                    waiting_for: asked.len(),
                    merged: new_latency_histogram(),
                    done: done.clone(),
                },
            );
            self.mesh_flush.notify();
            let answered_in_time = monoio::time::timeout(timeout, done.wait()).await.is_ok();
            let scrape = self
                .scrapes
                .borrow_mut()
                .remove(&request_id)
                .expect("registered");
            let _ = merged.add(&scrape.merged);
            if !answered_in_time {
                // Which ones are late is not tracked per shard; report the count.
                missing.extend(asked.iter().take(scrape.waiting_for));
            }
        }
        (merged, missing)
    }

    /// Sends `message` to another shard's ring; a full ring hands it back.
    /// The mesh flusher publishes it at the end of this loop turn.
    pub fn send_to_shard(
        &self,
        destination: usize,
        message: ShardMessage,
    ) -> Result<(), ShardMessage> {
        let sent = self.mesh.borrow_mut().send(destination, message);
        match sent {
            Ok(()) => {
                self.mesh_flush.notify();
                Ok(())
            }
            Err(full) => Err(full.message),
        }
    }

    fn handle_message(self: &Rc<Self>, source_shard: usize, message: ShardMessage) {
        match message {
            ShardMessage::Chat(_) | ShardMessage::Live(_) => {
                crate::ordered_send::send(self, self.idx, message)
            }
            ShardMessage::MetricsRequest { request_id } => {
                let reply = ShardMessage::MetricsReply {
                    request_id,
                    loop_turn: Box::new(self.loop_turn.borrow().clone()),
                };
                // A full ring drops the reply; the scrape reports this shard missing.
                let _ = self.mesh.borrow_mut().send(source_shard, reply);
            }
            ShardMessage::MetricsReply {
                request_id,
                loop_turn,
            } => {
                let mut scrapes = self.scrapes.borrow_mut();
                if let Some(scrape) = scrapes.get_mut(&request_id) {
                    let _ = scrape.merged.add(&*loop_turn);
                    scrape.waiting_for -= 1;
                    if scrape.waiting_for == 0 {
                        scrape.done.notify();
                    }
                }
            }
        }
    }

    /// Stops accepting and asks every connection to close.
    fn begin_local_shutdown(&self) {
        if self.shutdown.is_set() {
            return;
        }
        self.shutdown.set();
        for (_, handle) in self.connections.borrow().iter() {
            match handle {
                ConnectionHandle::Http(fd) => {
                    // SAFETY: the fd belongs to a registered, still-open connection.
                    unsafe { libc::shutdown(*fd, libc::SHUT_RD) };
                }
                ConnectionHandle::LiveListener(outbound) => outbound.finish(),
                ConnectionHandle::WebSocket(handle) => {
                    crate::websocket_session::close_outbound(
                        &handle.outbound,
                        veza_proto::close_code::GOING_AWAY,
                        "server shutting down",
                    );
                }
            }
        }
    }
}

/// Receives mesh messages; parks on the doorbell when every ring is empty.
async fn run_mesh_receiver(shard: Rc<Shard>, doorbell: std::os::unix::net::UnixStream) {
    let mut doorbell = monoio::net::UnixStream::from_std(doorbell).expect("doorbell registers");
    let batch_max = shard.process.config.mesh.drain_batch_max;
    let mut inbox: Vec<(usize, ShardMessage)> = Vec::with_capacity(batch_max);
    let mut scratch = vec![0u8; 64];
    loop {
        if shard.process.shutting_down.load(Ordering::Relaxed) {
            shard.begin_local_shutdown();
        }
        let handled = shard
            .mesh
            .borrow_mut()
            .drain(batch_max, |source, message| inbox.push((source, message)));
        for (source, message) in inbox.drain(..) {
            shard.handle_message(source, message);
        }
        if handled > 0 {
            shard.mesh.borrow_mut().flush();
            crate::local_event::yield_now().await;
            continue;
        }
        if !shard.mesh.borrow().prepare_to_sleep() {
            continue;
        }
        let (result, returned) = doorbell.read(scratch).await;
        scratch = returned;
        shard.mesh.borrow().woke_up();
        if result.is_err() {
            tracing::error!(
                shard = shard.idx,
                "doorbell read failed; mesh receiver stops"
            );
            return;
        }
    }
}

/// Publishes staged mesh messages once per loop turn.
async fn run_mesh_flusher(shard: Rc<Shard>) {
    loop {
        shard.mesh_flush.wait().await;
        shard.mesh.borrow_mut().flush();
    }
}

/// Fires every `stall.check_interval_ms`; how late it fires is how long the
/// loop was busy elsewhere. Late by more than `stall.budget_ms` is a stall.
async fn run_heartbeat(shard: Rc<Shard>) {
    let interval = Duration::from_millis(shard.process.config.stall.check_interval_ms);
    let budget = Duration::from_millis(shard.process.config.stall.budget_ms);
    loop {
        shard
            .metrics
            .heartbeat_ns
            .store(shard.process.now_ns(), Ordering::Relaxed);
        let expected = quanta::Instant::now() + interval;
        monoio::time::sleep(interval).await;
        let lateness = quanta::Instant::now().saturating_duration_since(expected);
        let _ = shard
            .loop_turn
            .borrow_mut()
            .record(lateness.as_nanos().max(1_000) as u64);
        if lateness > budget {
            shard.metrics.stalls_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                shard = shard.idx,
                stall_ms = lateness.as_millis() as u64,
                budget_ms = budget.as_millis() as u64,
                "shard event loop stalled"
            );
        }
    }
}

/// The listener of one shard, bound before the shard thread starts so that a
/// port conflict is reported at start-up.
pub fn bind_listener(config: &Config, port: u16) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let address: std::net::IpAddr = config.server.listen_address.parse().expect("validated");
    let socket_address = std::net::SocketAddr::new(address, port);
    let socket = Socket::new(
        Domain::for_address(socket_address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    // Every shard binds the same port; the kernel spreads new connections
    // over the shards' listeners by a hash of the 4-tuple.
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&socket_address.into())?;
    socket.listen(config.server.accept_backlog as i32)?;
    Ok(socket.into())
}

/// The monoio runtime a shard runs, on whichever driver could be built.
pub type ShardRuntime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// Builds the runtime with `FusionDriver` (io_uring unless unavailable or
/// `MONOIO_FORCE_LEGACY_DRIVER=1`); if building the io_uring runtime fails
/// (for example RLIMIT_MEMLOCK or a seccomp filter), retries with epoll.
pub fn build_runtime(io_uring_entries: u32) -> std::io::Result<(ShardRuntime, DriverKind)> {
    // Completions need not interrupt the shard (COOP_TASKRUN: their work
    // runs when the shard next enters the kernel, which it does to submit
    // or to wait), and only this thread submits (SINGLE_ISSUER). Kernels
    // older than 6.0 refuse the flags; the ring is then built without them.
    let mut cooperative = io_uring::IoUring::builder();
    cooperative.setup_coop_taskrun().setup_single_issuer();
    let fused = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(io_uring_entries)
        .uring_builder(cooperative)
        .enable_timer()
        .build()
        .or_else(|error| {
            tracing::info!(%error, "io_uring refused COOP_TASKRUN|SINGLE_ISSUER; building the ring without them");
            monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .with_entries(io_uring_entries)
                .enable_timer()
                .build()
        });
    let runtime = match fused {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::warn!(%error, "io_uring runtime could not be built; retrying with the legacy (epoll) driver");
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()?
                .into()
        }
    };
    let driver = match runtime {
        monoio::FusionRuntime::Uring(_) => DriverKind::IoUring,
        monoio::FusionRuntime::Legacy(_) => DriverKind::Legacy,
    };
    Ok((runtime, driver))
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; the calls only read the set we built.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPUs in this process's affinity mask, in order.
pub fn affinity_cpus() -> Vec<usize> {
    // SAFETY: as above.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// What a shard thread is started with.
pub struct ShardStart {
    /// Index of the shard.
    pub idx: usize,
    /// CPU to pin to, if pinning.
    pub cpu: Option<usize>,
    /// The bound listener.
    pub listener: std::net::TcpListener,
    /// This shard's mesh endpoint.
    pub mesh: MeshEndpoint<ShardMessage>,
}

/// Runs one shard on the current thread until its graceful shutdown ends.
pub fn run_shard(start: ShardStart, process: Arc<ProcessShared>) -> std::io::Result<()> {
    if let Some(cpu) = start.cpu {
        if let Err(error) = pin_current_thread(cpu) {
            tracing::warn!(shard = start.idx, cpu, %error, "could not pin shard thread");
        }
    }
    let (mut runtime, driver) = build_runtime(process.config.server.io_uring_entries)?;
    let metrics = process.shard_metrics[start.idx].clone();
    metrics.set_driver(driver);
    tracing::info!(shard = start.idx, cpu = ?start.cpu, driver = driver.label(), "shard starting");
    let doorbell = process
        .mesh
        .doorbell(start.idx)
        .take_reader()
        .expect("each doorbell reader is taken once");
    let shard = Rc::new(Shard {
        idx: start.idx,
        process: process.clone(),
        metrics,
        driver,
        mesh: RefCell::new(start.mesh),
        mesh_flush: LocalNotify::default(),
        loop_turn: RefCell::new(new_latency_histogram()),
        scrapes: RefCell::new(HashMap::new()),
        next_request_id: Cell::new(0),
        shutdown: LocalEvent::default(),
        connections: RefCell::new(slab::Slab::with_capacity(1024)),
        connection_closed: LocalNotify::default(),
        http_date: RefCell::new(veza_codec::http1::HttpDate::new()),
        control: Rc::new(crate::control_client::ControlClient::new(
            start.idx,
            process.shard_count(),
            &process.config.control,
            process.control_status[start.idx].clone(),
        )),
        chat: crate::chat::ChatShard::default(),
        live: crate::live::LiveShard::default(),
        ordered: crate::ordered_send::OrderedSender::new(process.shard_count()),
        tracks: crate::tracks::TracksShard::new(&process.config.tracks),
    });
    match &mut runtime {
        monoio::FusionRuntime::Uring(runtime) => {
            runtime.block_on(shard_main(shard, start.listener, doorbell))
        }
        monoio::FusionRuntime::Legacy(runtime) => {
            runtime.block_on(shard_main(shard, start.listener, doorbell))
        }
    }
}

async fn shard_main(
    shard: Rc<Shard>,
    listener: std::net::TcpListener,
    doorbell: std::os::unix::net::UnixStream,
) -> std::io::Result<()> {
    monoio::spawn(run_mesh_receiver(shard.clone(), doorbell));
    monoio::spawn(run_mesh_flusher(shard.clone()));
    monoio::spawn(run_heartbeat(shard.clone()));
    if shard.control.is_configured() {
        monoio::spawn(crate::control_client::run(shard.control.clone()));
    }
    monoio::spawn(crate::ordered_send::run_mesh_retry(shard.clone()));
    crate::chat::start(&shard);
    crate::tracks::start(&shard);
    monoio::spawn(crate::websocket_session::run_keep_alive_sweeper(
        shard.clone(),
    ));
    let listener = monoio::net::TcpListener::from_std(listener)?;
    shard.metrics.serving.store(true, Ordering::Relaxed);
    accept_until_shutdown(&shard, &listener).await;
    shard.metrics.serving.store(false, Ordering::Relaxed);
    drop(listener);
    drain_connections(&shard).await;
    crate::tracks::report_remaining_plays(&shard).await;
    crate::chat::room::release_seqs_at_shutdown(&shard).await;
    Ok(())
}

async fn accept_until_shutdown(shard: &Rc<Shard>, listener: &monoio::net::TcpListener) {
    let limit = shard.process.config.limits.connections_per_shard_max;
    loop {
        monoio::select! {
            _ = shard.shutdown.wait() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    ShardMetrics::add(&shard.metrics.connections_accepted_total, 1);
                    let _ = stream.set_nodelay(true);
                    if shard.connection_count() >= limit {
                        shard.metrics.limit_hit(crate::metrics::LimitKind::ConnectionsPerShard);
                        monoio::spawn(crate::http_connection::refuse_over_limit(shard.clone(), stream));
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    let key = shard.register_connection(ConnectionHandle::Http(fd));
                    monoio::spawn(crate::http_connection::serve(shard.clone(), stream, peer, key));
                }
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(shard = shard.idx, %error, "accept failed");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

async fn drain_connections(shard: &Rc<Shard>) {
    let deadline = Duration::from_millis(shard.process.config.server.shutdown_drain_ms_max);
    let drained = monoio::time::timeout(deadline, async {
        while shard.connection_count() > 0 {
            shard.connection_closed.wait().await;
        }
    })
    .await
    .is_ok();
    if drained {
        tracing::info!(shard = shard.idx, "shard drained");
    } else {
        tracing::warn!(
            shard = shard.idx,
            open = shard.connection_count(),
            "drain deadline passed; closing remaining connections"
        );
    }
}
