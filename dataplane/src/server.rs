//! Process start-up and shutdown: binds every shard's listener, builds the
//! mesh, starts the shard threads, then watches them (stalls, signals) until
//! they have drained.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::metrics::ShardMetrics;
use crate::ring_mesh;
use crate::shard::{affinity_cpus, bind_listener, run_shard, ProcessShared, ShardStart};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {address}:{port}: {source}")]
    Bind {
        /// `server.listen_address`.
        address: String,
        /// The port.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// The mesh's doorbells could not be created.
    #[error("cannot create the shard mesh: {0}")]
    Mesh(std::io::Error),
    /// A shard thread could not be spawned.
    #[error("cannot start shard thread: {0}")]
    Thread(std::io::Error),
}

/// Runs the data plane until a signal sets `terminate` and the shards drain.
pub fn run(config: Config, terminate: Arc<AtomicBool>) -> Result<(), StartError> {
    let cpus = affinity_cpus();
    let shard_count = if config.server.shards == 0 {
        cpus.len().max(1)
    } else {
        config.server.shards
    };
    if shard_count > cpus.len() {
        tracing::warn!(
            shard_count,
            cpus = cpus.len(),
            "more shards than CPUs in the affinity mask; shards will share CPUs"
        );
    }
    let listeners = bind_all(&config, shard_count)?;
    let port = listeners[0]
        .local_addr()
        .map(|address| address.port())
        .unwrap_or(0);
    let (mesh, endpoints) =
        ring_mesh::build(shard_count, config.mesh.ring_capacity).map_err(StartError::Mesh)?;
    let process = Arc::new(ProcessShared {
        shard_metrics: (0..shard_count)
            .map(|_| Arc::new(ShardMetrics::default()))
            .collect(),
        mesh,
        shutting_down: AtomicBool::new(false),
        started: quanta::Instant::now(),
        control_status: (0..shard_count).map(|_| Arc::default()).collect(),
        live_directory: Default::default(),
        config,
    });
    let mut threads = Vec::with_capacity(shard_count);
    for (idx, (listener, mesh)) in listeners.into_iter().zip(endpoints).enumerate() {
        let start = ShardStart {
            idx,
            cpu: process
                .config
                .server
                .pin_shards
                .then(|| cpus[idx % cpus.len()]),
            listener,
            mesh,
        };
        let process = process.clone();
        let thread = std::thread::Builder::new()
            .name(format!("veza-shard-{idx}"))
            .spawn(move || {
                if let Err(error) = run_shard(start, process.clone()) {
                    tracing::error!(shard = idx, %error, "shard failed");
                    process.begin_shutdown();
                }
            })
            .map_err(StartError::Thread)?;
        threads.push(thread);
    }
    tracing::info!(
        address = %process.config.server.listen_address,
        port,
        shards = shard_count,
        "veza data plane listening"
    );
    watch(&process, &threads, &terminate);
    for thread in threads {
        let _ = thread.join();
    }
    tracing::info!("veza data plane stopped");
    Ok(())
}

fn bind_all(config: &Config, shard_count: usize) -> Result<Vec<std::net::TcpListener>, StartError> {
    let bind_error = |port, source| StartError::Bind {
        address: config.server.listen_address.clone(),
        port,
        source,
    };
    let first = bind_listener(config, config.server.listen_port)
        .map_err(|source| bind_error(config.server.listen_port, source))?;
    // With port 0 the first bind picks the port and every other shard joins it.
    let port = first
        .local_addr()
        .map_err(|source| bind_error(0, source))?
        .port();
    let mut listeners = vec![first];
    for _ in 1..shard_count {
        listeners.push(bind_listener(config, port).map_err(|source| bind_error(port, source))?);
    }
    Ok(listeners)
}

/// The watchdog loop of the main thread: reports ongoing stalls and starts
/// the graceful shutdown on a signal. Returns when every shard has stopped.
fn watch(process: &ProcessShared, threads: &[std::thread::JoinHandle<()>], terminate: &AtomicBool) {
    let budget_ns = process.config.stall.budget_ms * 1_000_000;
    let tick = Duration::from_millis(process.config.stall.budget_ms.clamp(5, 100));
    let mut stalled = vec![false; process.shard_count()];
    while !threads.iter().all(|thread| thread.is_finished()) {
        std::thread::sleep(tick);
        if terminate.load(Ordering::Relaxed) && !process.shutting_down.load(Ordering::Relaxed) {
            tracing::info!(
                drain_ms_max = process.config.server.shutdown_drain_ms_max,
                "signal received: draining"
            );
            process.begin_shutdown();
        }
        let now_ns = process.now_ns();
        for (idx, metrics) in process.shard_metrics.iter().enumerate() {
            if !metrics.serving.load(Ordering::Relaxed) {
                continue;
            }
            let silent_ns = now_ns.saturating_sub(metrics.heartbeat_ns.load(Ordering::Relaxed));
            let is_stalled = silent_ns > budget_ns;
            if is_stalled && !stalled[idx] {
                tracing::warn!(
                    shard = idx,
                    silent_ms = silent_ns / 1_000_000,
                    "shard is not turning its event loop"
                );
            }
            stalled[idx] = is_stalled;
        }
    }
}
