//! `[control]`: where the control protocol listens and every bound it keeps.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use veza_codec::config_layers;
use veza_proto::control::frame::{FRAME_BYTES_MAX_DEFAULT, FRAME_BYTES_MAX_LIMIT};

use crate::config::ConfigError;

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The Unix socket data planes connect to. Empty:
    /// `<server.data_dir>/control.sock`. Created with permissions 0600; a
    /// stale file left by a crash is removed at start.
    pub socket_path: String,
    /// Also listen on TCP at this `address:port` (for data planes on other
    /// machines). Empty: Unix socket only.
    pub tcp_listen: String,
    /// The largest frame (rkyv archive) accepted or sent; a larger one is a
    /// protocol error that closes the connection.
    pub frame_bytes_max: usize,
    /// Frames queued for sending on one connection. Responses wait for room;
    /// pushes that find no room are dropped and replaced by one `Resync`.
    pub outbound_frames_max: usize,
    /// Requests (other than batches) one connection may have in progress;
    /// past it the server stops reading that connection until one finishes.
    pub requests_in_flight_max: usize,
    /// `PersistBatch` requests queued per connection; batches of one
    /// connection commit one at a time, in the order they arrived.
    pub persist_batches_queued_max: usize,
    /// Changes one `PersistBatch` may carry; more is answered `BadRequest`.
    pub batch_changes_max: usize,
    /// The largest `limit` of `FetchHistory`; more is answered `BadRequest`.
    pub history_limit_max: u32,
    /// Open control connections; past it new ones are closed at once.
    pub connections_max: usize,
    /// Time a new connection has to send `Hello`.
    pub handshake_timeout_ms: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket_path: String::new(),
            tcp_listen: String::new(),
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            outbound_frames_max: 1024,
            requests_in_flight_max: 256,
            persist_batches_queued_max: 64,
            batch_changes_max: 4096,
            history_limit_max: 1000,
            connections_max: 4096,
            handshake_timeout_ms: 5_000,
        }
    }
}

impl ControlConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 8] = [
            ("control.frame_bytes_max", self.frame_bytes_max as u64),
            (
                "control.outbound_frames_max",
                self.outbound_frames_max as u64,
            ),
            (
                "control.requests_in_flight_max",
                self.requests_in_flight_max as u64,
            ),
            (
                "control.persist_batches_queued_max",
                self.persist_batches_queued_max as u64,
            ),
            ("control.batch_changes_max", self.batch_changes_max as u64),
            (
                "control.history_limit_max",
                u64::from(self.history_limit_max),
            ),
            ("control.connections_max", self.connections_max as u64),
            ("control.handshake_timeout_ms", self.handshake_timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(config_layers::invalid(key, "must be greater than 0").into());
            }
        }
        if self.frame_bytes_max < 4096 || self.frame_bytes_max > FRAME_BYTES_MAX_LIMIT {
            return Err(config_layers::invalid(
                "control.frame_bytes_max",
                "must be between 4096 and 4294967295",
            )
            .into());
        }
        if !self.tcp_listen.is_empty() && self.tcp_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(config_layers::invalid(
                "control.tcp_listen",
                "must be empty or an address:port such as 127.0.0.1:8082",
            )
            .into());
        }
        // sun_path holds 108 bytes including the terminating NUL.
        if self.socket_path.len() > 107 {
            return Err(config_layers::invalid(
                "control.socket_path",
                "must be at most 107 bytes (the limit of a Unix socket path)",
            )
            .into());
        }
        Ok(())
    }

    /// The Unix socket path: `socket_path`, or `control.sock` in `data_dir`.
    pub fn socket_path(&self, data_dir: &Path) -> PathBuf {
        if self.socket_path.is_empty() {
            data_dir.join("control.sock")
        } else {
            PathBuf::from(&self.socket_path)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn refused(key: &str, value: &str) -> String {
        let variable = format!("VEZA_CONTROL_{}", key.to_uppercase());
        Config::load(None, vec![(variable, value.to_owned())])
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_are_valid_and_the_socket_lives_in_the_data_directory() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert_eq!(
            config.control.socket_path(std::path::Path::new("var")),
            std::path::PathBuf::from("var/control.sock")
        );
        assert!(config.control.tcp_listen.is_empty());
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        for (key, value) in [
            ("frame_bytes_max", "0"),
            ("frame_bytes_max", "100"),
            ("outbound_frames_max", "0"),
            ("tcp_listen", "localhost"),
            ("handshake_timeout_ms", "0"),
        ] {
            let error = refused(key, value);
            assert!(error.contains(&format!("control.{key}")), "{key}: {error}");
        }
    }
}
