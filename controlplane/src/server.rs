//! Start-up and shutdown of the control plane.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::db::Database;
use crate::events::EventHub;
use crate::state::AppState;

/// Opens the database and builds the shared state.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let db = Database::open(
        &config.server.database_url,
        &config.data_dir(),
        config.server.database_connections_max,
    )
    .await?;
    tracing::info!(backend = ?db.backend(), "database ready");
    crate::live_streams::recorder::interrupt_stale(&db, config.live.recording_stale_ms).await?;
    let config = Arc::new(config);
    let auth = Arc::new(crate::accounts::AuthState::load(&config, &db).await?);
    let tracks = crate::tracks::TrackJobs::new(config.tracks.job_queue_max);
    let state = AppState {
        config,
        db,
        events: EventHub::default(),
        auth,
        nodes: Arc::default(),
        metrics: Arc::default(),
        tracks,
    };
    crate::tracks::jobs::start(&state).await?;
    Ok(state)
}

/// Serves REST and the control protocol until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = SocketAddr::new(
        state.config.server.listen_address.parse()?,
        state.config.server.listen_port,
    );
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "control plane REST listening");
    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    let mut control = tokio::spawn(crate::control_server::serve(
        state.clone(),
        stop_receiver.clone(),
    ));
    let mut rest_stop = stop_receiver;
    let app = crate::api::app(state);
    let rest = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = rest_stop.wait_for(|stopped| *stopped).await;
    })
    .into_future();
    tokio::pin!(rest);
    tokio::pin!(shutdown);
    // Whichever ends first (a signal, REST failing, the control server failing
    // to bind or dying) stops the other, so a half-working process never
    // lingers.
    tokio::select! {
        _ = &mut shutdown => {
            let _ = stop_sender.send(true);
            rest.await?;
            control.await??;
        }
        result = &mut rest => {
            let _ = stop_sender.send(true);
            result?;
            control.await??;
        }
        result = &mut control => {
            let _ = stop_sender.send(true);
            rest.await?;
            result??;
            anyhow::bail!("the control protocol server stopped unexpectedly");
        }
    }
    Ok(())
}
