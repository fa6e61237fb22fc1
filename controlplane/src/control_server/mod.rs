//! The control protocol server for data planes (DESIGN.md §5): a Unix socket
//! (always) and a TCP listener (when `control.tcp_listen` is set), one tokio
//! task per connection speaking `veza_proto::control`.
//!
//! - [`config`]: `[control]`, every bound with its key.
//! - `connection`: one connection's handshake, requests, pushes and close.
//! - `pushes`: committed changes from the event hub, encoded once and
//!   broadcast to every connection.
//! - `operations`: the adapter from protocol requests to the accounts and
//!   rooms areas (conversions between their types and the protocol's).
//! - [`registry`]: connected nodes and counters for `/v1/admin/nodes` and
//!   `/metrics`.
//!
//! Architecture Invariant: this module is the only place that knows both the
//! control plane's domain types and the protocol's mirrors of them.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use utoipa_axum::router::OpenApiRouter;
use veza_proto::control::Push;

use crate::events::EVENT_BACKLOG_MAX;
use crate::state::AppState;

mod admin;
pub mod config;
mod connection;
mod operations;
mod pushes;
pub mod registry;

pub use config::ControlConfig;
pub use registry::NodeRegistry;

use connection::Peer;

/// What every connection task shares.
pub(crate) struct ServerContext {
    /// The application state.
    pub state: AppState,
    /// A `Resync` push, encoded once.
    pub resync_frame: Bytes,
}

/// Resolves once `stop` turns true (or its sender is gone). The watch
/// guard stays inside, so callers' futures remain `Send`.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// The admin routes about nodes.
pub fn router() -> OpenApiRouter<AppState> {
    admin::router()
}

/// An accepted socket of either kind.
enum Accepted {
    Unix(UnixStream),
    Tcp(TcpStream, std::net::SocketAddr),
}

/// Serves the control protocol until `stop` turns true, then lets each
/// connection finish what it started (bounded by
/// `server.shutdown_drain_ms_max`) and removes the socket file.
pub async fn serve(state: AppState, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let result = serve_until_stopped(state, stop).await;
    if let Err(error) = &result {
        // The caller sees this error only once REST stops too; say it now.
        tracing::error!(error = %format!("{error:#}"), "the control protocol server failed");
    }
    result
}

async fn serve_until_stopped(
    state: AppState,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let config = &state.config.control;
    let socket_path = config.socket_path(&state.config.data_dir());
    let unix = bind_unix(&socket_path).await?;
    tracing::info!(path = %socket_path.display(), "control protocol listening on a Unix socket");
    let tcp = if config.tcp_listen.is_empty() {
        None
    } else {
        let listener = TcpListener::bind(&config.tcp_listen)
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "cannot listen on control.tcp_listen {}: {error}",
                    config.tcp_listen
                )
            })?;
        tracing::info!(address = %config.tcp_listen, "control protocol listening on TCP");
        Some(listener)
    };
    let resync_frame = pushes::encode(Push::Resync, config.frame_bytes_max)
        .ok_or_else(|| anyhow::anyhow!("the Resync push cannot be encoded"))?;
    let (push_sender, _) = broadcast::channel(EVENT_BACKLOG_MAX);
    let context = Arc::new(ServerContext {
        state: state.clone(),
        resync_frame,
    });
    let fan_out = tokio::spawn(pushes::fan_out(
        state.clone(),
        push_sender.clone(),
        stop.clone(),
    ));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = unix.accept() => accepted.map(|(stream, _)| Accepted::Unix(stream)),
            accepted = accept_tcp(tcp.as_ref()) => accepted.map(|(stream, peer)| Accepted::Tcp(stream, peer)),
        };
        match accepted {
            Ok(accepted) => admit(&context, &mut connections, accepted, &push_sender, &stop),
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(%error, "control accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(unix);
    let _ = std::fs::remove_file(&socket_path);
    let drain = Duration::from_millis(state.config.server.shutdown_drain_ms_max);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        tracing::warn!("control connections did not close in time; dropping them");
        connections.abort_all();
    }
    fan_out.abort();
    Ok(())
}

fn admit(
    context: &Arc<ServerContext>,
    connections: &mut JoinSet<()>,
    accepted: Accepted,
    push_sender: &broadcast::Sender<Bytes>,
    stop: &watch::Receiver<bool>,
) {
    let registry = &context.state.nodes;
    registry.accepted_total.fetch_add(1, Ordering::Relaxed);
    let open = registry.open_connections.load(Ordering::Relaxed);
    if open >= context.state.config.control.connections_max as u64 {
        registry.refused_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            open,
            "control connection refused: control.connections_max reached"
        );
        return;
    }
    registry.open_connections.fetch_add(1, Ordering::Relaxed);
    // Subscribed before the data plane can fetch anything, so no change
    // committed after its fetches is missed.
    let pushes = push_sender.subscribe();
    let context = context.clone();
    let stop = stop.clone();
    connections.spawn(async move {
        match accepted {
            Accepted::Unix(stream) => {
                let peer = Peer {
                    transport: "unix",
                    address: String::new(),
                };
                connection::run(context.clone(), stream, peer, pushes, stop).await;
            }
            Accepted::Tcp(stream, address) => {
                let _ = stream.set_nodelay(true);
                let peer = Peer {
                    transport: "tcp",
                    address: address.to_string(),
                };
                connection::run(context.clone(), stream, peer, pushes, stop).await;
            }
        }
        context
            .state
            .nodes
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
    });
}

async fn accept_tcp(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Binds the Unix socket with permissions 0600, after removing a stale socket
/// file that no process listens on (left by a crash). Refuses to start when
/// another control plane answers on it, or when the path is not a socket.
async fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|error| {
            anyhow::anyhow!(
                "cannot create {} for the control socket: {error}",
                parent.display()
            )
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if !metadata.file_type().is_socket() => {
            anyhow::bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )
        }
        Ok(_) => {
            if UnixStream::connect(path).await.is_ok() {
                anyhow::bail!(
                    "another process listens on the control socket {}",
                    path.display()
                );
            }
            std::fs::remove_file(path)?;
            tracing::info!(path = %path.display(), "removed a stale control socket");
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error.into()),
    }
    let listener = UnixListener::bind(path).map_err(|error| {
        anyhow::anyhow!("cannot bind the control socket {}: {error}", path.display())
    })?;
    // Only the control plane's user may connect: the protocol carries no
    // credentials of its own, so the socket's permissions are its access control.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
