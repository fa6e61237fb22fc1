//! The chat servers the chat scenarios compare, started and stopped as child
//! processes: Veza (its two processes) and nats-server with its WebSocket
//! listener.
//!
//! - [`veza`]: `veza-controlplane` on a temporary SQLite data directory,
//!   then `veza-dataplane` connected to it over the Unix control socket,
//!   as `scripts/start.sh` does.
//! - [`nats`]: `nats-server` from a generated configuration file.
//! - [`population`]: users, rooms, memberships and unthrottled runtime
//!   settings created through the control plane's REST API, and the check
//!   that the data plane applies those settings.
//!
//! Placement: the process that fans messages out (the data plane, or
//! nats-server) is pinned to CPUs `0..shards` with `taskset`; its CPU seconds
//! are the denominator of "deliveries per server CPU-second". Veza's control
//! plane (persistence, tokens) is pinned to the CPUs the data plane leaves,
//! which on a 2-CPU machine with 1 shard is the load generator's CPU, and
//! left unpinned when the data plane has every CPU; its CPU seconds are
//! reported on their own.

pub mod nats;
pub mod population;
pub mod veza;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::control_api::RuntimeSettings;
use crate::proc_stat::ProcessSample;
use crate::server_process::{ServerError, ServerProcess};

use nats::NatsServer;
use population::{populate, wait_until_settings_applied, PopulationPlan};
use veza::{VezaLaunch, VezaServers};

/// A chat server this kit can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatServerKind {
    /// `veza-dataplane` + `veza-controlplane`, chat protocol v1.
    Veza,
    /// `nats-server` over WebSocket, the NATS text protocol.
    Nats,
}

impl ChatServerKind {
    /// The name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ChatServerKind::Veza => "veza",
            ChatServerKind::Nats => "nats",
        }
    }
}

/// Why the servers could not be started, populated or measured.
#[derive(Debug, thiserror::Error)]
pub enum ChatServersError {
    /// A process could not be started, sampled or stopped.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A REST call failed during setup.
    #[error(transparent)]
    ControlApi(#[from] crate::control_api::ControlApiError),
    /// A chat connection failed during setup.
    #[error("chat setup: {0}")]
    Chat(#[from] crate::chat_client::ChatClientError),
    /// The data plane did not apply the runtime settings in time.
    #[error("the data plane did not apply the runtime settings within {0:?}")]
    SettingsNotApplied(std::time::Duration),
    /// A temporary directory, a config file or a port could not be made.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl ChatServersError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ChatServersError {
        let context = context.into();
        move |source| ChatServersError::Io { context, source }
    }
}

/// CPU seconds and RSS of the server processes of one run at one instant:
/// the process that fans out first, then the others (Veza's control plane).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSamples {
    /// The data plane or nats-server.
    pub fanout: ProcessSample,
    /// Veza's control plane; `None` for NATS.
    pub control_plane: Option<ProcessSample>,
}

/// Samples the processes of a run.
pub fn sample(
    fanout: &ServerProcess,
    control_plane: Option<&ServerProcess>,
) -> Result<ServerSamples, ServerError> {
    Ok(ServerSamples {
        fanout: fanout.sample()?,
        control_plane: control_plane.map(ServerProcess::sample).transpose()?,
    })
}

/// The CPUs a run gives the fanning-out server and Veza's control plane,
/// out of `allowed_cpus`: the first `shards` for the server, the rest (or
/// none, meaning unpinned) for the control plane.
pub fn server_cpus(shards: usize, allowed_cpus: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let shards = shards.min(allowed_cpus.len());
    (
        allowed_cpus[..shards].to_vec(),
        allowed_cpus[shards..].to_vec(),
    )
}

/// How long the data plane may take to apply the runtime settings.
const SETTINGS_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to start one chat server for a run and populate it.
#[derive(Debug, Clone)]
pub struct ChatServerSetup {
    /// Which server.
    pub kind: ChatServerKind,
    /// `veza-dataplane`.
    pub dataplane_bin: PathBuf,
    /// `veza-controlplane`.
    pub controlplane_bin: PathBuf,
    /// `nats-server`.
    pub nats_bin: PathBuf,
    /// The fanning-out process's CPUs (one shard, or one `GOMAXPROCS`, each).
    pub server_cpus: Vec<usize>,
    /// Veza's control plane's CPUs (empty: unpinned).
    pub control_plane_cpus: Vec<usize>,
    /// Users (Veza).
    pub n_users: usize,
    /// Rooms.
    pub n_rooms: usize,
    /// `(user_idx, room_idx)` memberships (Veza).
    pub memberships: BTreeSet<(usize, usize)>,
    /// Runtime settings (Veza).
    pub settings: RuntimeSettings,
    /// Connections the server must accept (nats-server's `max_connections`).
    pub connections_max: usize,
}

/// What clients need to reach a started server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatWorld {
    /// Where clients connect.
    pub url: String,
    /// Access token per user index (empty for NATS).
    pub tokens: Vec<String>,
    /// Room id per room index (for NATS, the indexes themselves).
    pub room_ids: Vec<i64>,
}

/// A started chat server.
#[derive(Debug)]
pub enum RunningChatServer {
    /// Veza's two processes (boxed: much larger than the other variant).
    Veza(Box<VezaServers>),
    /// nats-server.
    Nats(NatsServer),
}

impl RunningChatServer {
    /// Starts the server `setup` names, populates it (Veza: through REST,
    /// before the data plane starts, then checks the settings apply), and
    /// returns what clients need.
    pub fn start(
        setup: &ChatServerSetup,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<(RunningChatServer, ChatWorld), ChatServersError> {
        match setup.kind {
            ChatServerKind::Nats => {
                let server =
                    NatsServer::start(&setup.nats_bin, &setup.server_cpus, setup.connections_max)?;
                let world = ChatWorld {
                    url: server.websocket_url(),
                    tokens: Vec::new(),
                    room_ids: (0..setup.n_rooms as i64).collect(),
                };
                Ok((RunningChatServer::Nats(server), world))
            }
            ChatServerKind::Veza => {
                let launch = VezaLaunch {
                    dataplane_bin: setup.dataplane_bin.clone(),
                    controlplane_bin: setup.controlplane_bin.clone(),
                    shard_cpus: setup.server_cpus.clone(),
                    controlplane_cpus: setup.control_plane_cpus.clone(),
                    dataplane_environment: Vec::new(),
                };
                let mut servers = VezaServers::start_control_plane(&launch)?;
                let plan = PopulationPlan {
                    n_users: setup.n_users,
                    n_rooms: setup.n_rooms,
                    memberships: setup.memberships.clone(),
                    settings: setup.settings.clone(),
                };
                let population = runtime.block_on(populate(servers.api(), &plan))?;
                servers.start_data_plane()?;
                let url = servers.chat_url();
                runtime.block_on(wait_until_settings_applied(
                    &url,
                    &population.admin.access_token,
                    setup.settings.message_bytes_max as u32,
                    setup.server_cpus.len() * 2,
                    SETTINGS_TIMEOUT,
                ))?;
                let world = ChatWorld {
                    url,
                    tokens: population
                        .users
                        .iter()
                        .map(|session| session.access_token.clone())
                        .collect(),
                    room_ids: population.room_ids,
                };
                Ok((RunningChatServer::Veza(Box::new(servers)), world))
            }
        }
    }

    /// The process that holds the connections and fans out.
    pub fn fanout_process(&self) -> &ServerProcess {
        match self {
            RunningChatServer::Veza(servers) => servers.dataplane(),
            RunningChatServer::Nats(server) => server.process(),
        }
    }

    /// Veza's control plane.
    pub fn control_plane(&self) -> Option<&ServerProcess> {
        match self {
            RunningChatServer::Veza(servers) => Some(servers.controlplane()),
            RunningChatServer::Nats(_) => None,
        }
    }

    /// Samples both processes.
    pub fn sample(&self) -> Result<ServerSamples, ServerError> {
        sample(self.fanout_process(), self.control_plane())
    }

    /// The end of the servers' logs (Veza), for error reports.
    pub fn log_tails(&self) -> String {
        match self {
            RunningChatServer::Veza(servers) => servers.log_tails(),
            RunningChatServer::Nats(_) => String::new(),
        }
    }

    /// Stops the processes (Veza: data plane first).
    pub fn stop(self) -> Result<(), ChatServersError> {
        match self {
            RunningChatServer::Veza(servers) => (*servers).stop(),
            RunningChatServer::Nats(server) => server.stop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_plane_gets_the_cpus_the_shards_leave_or_floats() {
        assert_eq!(server_cpus(1, &[0, 1]), (vec![0], vec![1]));
        assert_eq!(server_cpus(2, &[0, 1]), (vec![0, 1], vec![]));
        assert_eq!(server_cpus(2, &[0, 1, 2, 3]), (vec![0, 1], vec![2, 3]));
    }
}
