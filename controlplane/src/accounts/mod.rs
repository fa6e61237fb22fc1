//! Accounts and tokens (being built: see the control plane issue).

use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;

use crate::config::ConfigError;
use crate::state::AppState;

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {}

impl AuthConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Signing keys and login throttling state.
#[derive(Default)]
pub struct AuthState {}

impl AuthState {
    /// Loads (or on first start generates) the signing keys.
    pub async fn load(
        _config: &crate::config::Config,
        _db: &crate::db::Database,
    ) -> anyhow::Result<Self> {
        Ok(Self {})
    }

    /// Renders auth metrics.
    pub fn render_metrics(&self, _out: &mut String) {}
}

/// The accounts routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
