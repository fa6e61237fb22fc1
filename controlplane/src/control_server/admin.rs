//! `GET /v1/admin/nodes`: the connected data planes, per shard, with their
//! counters.

use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::Authenticated;
use crate::error::{ApiError, Json};
use crate::state::AppState;

use super::registry::NodeView;

/// The admin routes about nodes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_nodes))
}

/// The answer of `GET /v1/admin/nodes`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeList {
    /// One entry per connected data-plane shard, by node then shard.
    pub nodes: Vec<NodeView>,
}

/// Lists the data-plane shards connected over the control protocol. Admins only.
#[utoipa::path(get, path = "/v1/admin/nodes", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "connected data-plane shards", body = NodeList),
        (status = 401, description = "no valid credentials", body = crate::api::ErrorResponse),
        (status = 403, description = "not an instance admin", body = crate::api::ErrorResponse)))]
async fn list_nodes(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<NodeList>, ApiError> {
    caller.require_admin()?;
    Ok(Json(NodeList {
        nodes: state.nodes.list(),
    }))
}
