//! Rooms, membership, moderation, messages and runtime settings (being built:
//! see the control plane issue).

use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;

use crate::config::ConfigError;
use crate::state::AppState;

/// `[chat]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {}

impl ChatConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// The rooms routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
