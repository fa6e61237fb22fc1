//! What `idle-connections` and `connect-storm` share: many chat connections
//! opened from several client processes ([`crate::client_process`]) to one
//! server, Veza or nats-server, started and populated by
//! [`crate::chat_servers::RunningChatServer`].
//!
//! Connection `c` (over the whole run) logs in as user `c % users` and
//! subscribes (when asked) to room `c % rooms`; it uses source address
//! `127.0.0.<2 + c / 4000>`; connections are dealt to processes in
//! contiguous blocks of at most `connections_per_process`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::chat_servers::{ChatServerKind, ChatServerSetup, ChatWorld};
use crate::client_process::{split_connections, ClientJob, CONNECTIONS_PER_PROCESS_MAX};
use crate::control_api::RuntimeSettings;

/// The shape of a fleet of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetShape {
    /// Connections over all processes.
    pub n_connections: usize,
    /// Most connections per client process.
    pub connections_per_process: usize,
    /// Fewest client processes.
    pub processes_min: usize,
    /// Connections each process opens at once.
    pub concurrency: usize,
    /// Distinct users (Veza).
    pub n_users: usize,
    /// Rooms.
    pub n_rooms: usize,
    /// Whether each connection subscribes to its room.
    pub subscribe: bool,
}

impl FleetShape {
    /// Checks the shape's limits; the error names the option.
    pub fn validate(&self) -> Result<(), String> {
        if self.n_connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if !(1..=CONNECTIONS_PER_PROCESS_MAX).contains(&self.connections_per_process) {
            return Err(format!(
                "--connections-per-process must be 1..={CONNECTIONS_PER_PROCESS_MAX} \
                 (a process may hold 20000 files)"
            ));
        }
        if self.concurrency == 0 || self.n_users == 0 || self.n_rooms == 0 {
            return Err("--concurrency, --users and --rooms must be at least 1".into());
        }
        if self.n_rooms > 100 * (self.n_users + 1) {
            return Err("too many rooms for the users to own (100 each)".into());
        }
        Ok(())
    }

    /// The `(user, room)` pairs the connections use.
    pub fn memberships(&self) -> BTreeSet<(usize, usize)> {
        (0..self.n_connections)
            .map(|connection_idx| (connection_idx % self.n_users, connection_idx % self.n_rooms))
            .collect()
    }

    /// `(first connection, connections)` per process.
    pub fn processes(&self) -> Vec<(usize, usize)> {
        split_connections(
            self.n_connections,
            self.connections_per_process,
            self.processes_min,
        )
    }

    /// The server to start for this fleet.
    pub fn server_setup(
        &self,
        kind: ChatServerKind,
        binaries: &FleetBinaries,
        server_cpus: Vec<usize>,
        control_plane_cpus: Vec<usize>,
    ) -> ChatServerSetup {
        ChatServerSetup {
            kind,
            dataplane_bin: binaries.dataplane.clone(),
            controlplane_bin: binaries.controlplane.clone(),
            nats_bin: binaries.nats.clone(),
            server_cpus,
            control_plane_cpus,
            n_users: self.n_users,
            n_rooms: self.n_rooms,
            memberships: self.memberships(),
            settings: RuntimeSettings::unthrottled(4096),
            connections_max: self.n_connections + 64,
        }
    }

    /// One job per client process.
    pub fn jobs(&self, kind: ChatServerKind, world: &ChatWorld, mode: JobMode) -> Vec<ClientJob> {
        self.processes()
            .into_iter()
            .map(|(first_connection_idx, n_connections)| ClientJob {
                server: kind,
                url: world.url.clone(),
                first_connection_idx,
                n_connections,
                tokens: world.tokens.clone(),
                room_ids: world.room_ids.clone(),
                subscribe: self.subscribe,
                concurrency: self.concurrency,
                wait_for_go: mode.wait_for_go,
                record_latencies: mode.record_latencies,
                cpus: mode.cpus.clone(),
            })
            .collect()
    }
}

/// How the client processes behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMode {
    /// Wait for `go` before opening (a synchronised storm).
    pub wait_for_go: bool,
    /// Report per-connection times.
    pub record_latencies: bool,
    /// CPUs for the client processes (empty: unpinned).
    pub cpus: Vec<usize>,
}

/// The server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetBinaries {
    /// `veza-dataplane`.
    pub dataplane: PathBuf,
    /// `veza-controlplane`.
    pub controlplane: PathBuf,
    /// `nats-server`.
    pub nats: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> FleetShape {
        FleetShape {
            n_connections: 15_000,
            connections_per_process: 5000,
            processes_min: 2,
            concurrency: 64,
            n_users: 100,
            n_rooms: 10,
            subscribe: true,
        }
    }

    #[test]
    fn fifteen_thousand_connections_take_three_processes_and_a_hundred_memberships() {
        let shape = shape();
        shape.validate().unwrap();
        assert_eq!(shape.processes().len(), 3);
        assert_eq!(
            shape.memberships().len(),
            100,
            "user u is always in room u % 10"
        );
        let world = ChatWorld {
            url: "ws://127.0.0.1:1/v1/chat".into(),
            tokens: vec!["t".into(); 100],
            room_ids: (1..=10).collect(),
        };
        let mode = JobMode {
            wait_for_go: false,
            record_latencies: false,
            cpus: vec![],
        };
        let jobs = shape.jobs(ChatServerKind::Veza, &world, mode);
        assert_eq!(jobs[2].first_connection_idx, 10_000);
        assert!(jobs
            .iter()
            .all(|job| job.n_connections == 5000 && job.subscribe));
    }

    #[test]
    fn a_process_may_not_hold_more_than_the_file_limit_allows() {
        let mut too_many = shape();
        too_many.connections_per_process = 20_000;
        assert!(too_many
            .validate()
            .unwrap_err()
            .contains("--connections-per-process"));
    }
}
