//! The control protocol server for data planes (being built: see the control
//! plane issue).

use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;

use crate::config::ConfigError;
use crate::state::AppState;

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {}

impl ControlConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Connected data planes.
#[derive(Default)]
pub struct NodeRegistry {}

impl NodeRegistry {
    /// Renders node metrics.
    pub fn render_metrics(&self, _out: &mut String) {}
}

/// The admin routes about nodes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}

/// Serves the control protocol until `stop` turns true.
pub async fn serve(
    _state: AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let _ = stop.wait_for(|stopped| *stopped).await;
    Ok(())
}
