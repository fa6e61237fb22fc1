//! Start-up and shutdown of the control plane.

use std::future::Future;
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
    let config = Arc::new(config);
    let auth = Arc::new(crate::accounts::AuthState::load(&config, &db).await?);
    Ok(AppState {
        config,
        db,
        events: EventHub::default(),
        auth,
        nodes: Arc::default(),
        metrics: Arc::default(),
    })
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
    let control = tokio::spawn(crate::control_server::serve(
        state.clone(),
        stop_receiver.clone(),
    ));
    let app = crate::api::app(state);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_sender.send(true);
        })
        .await?;
    control.await??;
    Ok(())
}
