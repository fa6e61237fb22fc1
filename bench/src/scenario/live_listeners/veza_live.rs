//! Veza for `live-listeners`: both processes started as the chat scenarios
//! start them ([`crate::chat_servers::veza`]), the instance admin
//! registered and logged in, runtime settings unthrottled (per-IP
//! connection limits would otherwise refuse the listeners of one source
//! address), then `POST /v1/streams {"name":"bench"}` → `201` with the
//! `stream_key` the source authenticates with. The source `PUT`s to
//! `/v1/live/bench`; listeners `GET /v1/live/bench?br=<kbps>`.

use serde_json::json;

use crate::chat_servers::veza::{VezaLaunch, VezaServers};
use crate::chat_servers::ChatServersError;
use crate::control_api::{ControlApi, ControlApiError, RuntimeSettings, Session};

/// The stream's name, and so its path.
pub const STREAM_NAME: &str = "bench";

/// The user that owns the stream (the first account: the instance admin).
const OWNER_USERNAME: &str = "live-bench-owner";

/// The source's mount on the data plane.
pub fn source_mount() -> String {
    format!("/v1/live/{STREAM_NAME}")
}

/// What listeners request.
pub fn listener_path(bitrate_kbps: u32) -> String {
    format!("/v1/live/{STREAM_NAME}?br={bitrate_kbps}")
}

/// Starts Veza and creates the stream; the stream key.
pub fn start(
    launch: &VezaLaunch,
    runtime: &tokio::runtime::Runtime,
) -> Result<(VezaServers, String), ChatServersError> {
    let mut servers = VezaServers::start_control_plane(launch)?;
    let stream_key = runtime.block_on(async {
        let owner = servers.api().register_and_login(OWNER_USERNAME).await?;
        servers
            .api()
            .update_runtime_settings(&owner.access_token, &RuntimeSettings::unthrottled(4096))
            .await?;
        create_stream(servers.api(), &owner).await
    })?;
    servers.start_data_plane()?;
    Ok((servers, stream_key))
}

/// `POST /v1/streams {"name": STREAM_NAME}` → `201 {"stream_key": …}`.
async fn create_stream(api: &ControlApi, owner: &Session) -> Result<String, ControlApiError> {
    const STEP: &str = "create the live stream (POST /v1/streams)";
    let transport = |error: reqwest::Error| ControlApiError::Transport {
        step: STEP,
        reason: error.to_string(),
    };
    let response = reqwest::Client::new()
        .post(format!("{}/v1/streams", api.base_url()))
        .bearer_auth(&owner.access_token)
        .json(&json!({ "name": STREAM_NAME }))
        .timeout(crate::control_api::REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(transport)?;
    if status != 201 {
        return Err(ControlApiError::Status {
            step: STEP,
            status,
            body,
        });
    }
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|value| value["stream_key"].as_str().map(String::from))
        .ok_or(ControlApiError::Malformed { step: STEP, body })
}
