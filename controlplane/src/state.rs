//! What every request handler and the control server share.

use std::sync::Arc;

use crate::config::Config;
use crate::db::Database;
use crate::events::EventHub;
use crate::metrics::RestMetrics;

/// Shared application state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The database.
    pub db: Database,
    /// Changes pushed to data planes.
    pub events: EventHub,
    /// Accounts and tokens: signing keys, login throttling.
    pub auth: Arc<crate::accounts::AuthState>,
    /// Connected data planes.
    pub nodes: Arc<crate::control_server::NodeRegistry>,
    /// REST counters.
    pub metrics: Arc<RestMetrics>,
    /// Tracks waiting for a processing worker.
    pub tracks: Arc<crate::tracks::TrackJobs>,
}
