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

use crate::proc_stat::ProcessSample;
use crate::server_process::{ServerError, ServerProcess};

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
