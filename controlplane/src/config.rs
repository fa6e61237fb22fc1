//! Control plane configuration: defaults, a TOML file (`--config PATH`), then
//! `VEZA_<SECTION>_<KEY>` variables; an invalid value exits with code 2 and
//! names the key. Each area owns its section type in its own module.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use veza_codec::config_layers;

pub use crate::accounts::AuthConfig;
pub use crate::control_server::ControlConfig;
pub use crate::live_streams::LiveConfig;
pub use crate::rooms::ChatConfig;
pub use crate::social::SocialConfig;
pub use crate::tracks::TracksConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Unreadable {
        /// The path given with `--config`.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// A malformed or out-of-range value.
    #[error(transparent)]
    Layer(#[from] config_layers::LayerError),
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// REST listener, storage, logging.
    pub server: ServerConfig,
    /// Accounts, passwords, tokens, throttling.
    pub auth: AuthConfig,
    /// Rooms, messages, moderation defaults.
    pub chat: ChatConfig,
    /// The control protocol listener for data planes.
    pub control: ControlConfig,
    /// Live streams.
    pub live: LiveConfig,
    /// Tracks: uploads, processing, signed URLs.
    pub tracks: TracksConfig,
    /// Likes, reposts, follows, playlists, comments, the feed.
    pub social: SocialConfig,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the REST API.
    pub listen_address: String,
    /// Port of the REST API.
    pub listen_port: u16,
    /// Where the embedded database, signing keys and sockets live.
    pub data_dir: String,
    /// Empty: embedded SQLite at `<data_dir>/veza.db`. Otherwise a
    /// `postgres://` (or `sqlite://`) URL.
    pub database_url: String,
    /// Connections in the database pool.
    pub database_connections_max: u32,
    /// Largest REST request body; past it 413.
    pub request_body_bytes_max: usize,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter.
    pub log_level: String,
    /// How long shutdown waits for requests in flight.
    pub shutdown_drain_ms_max: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen_address: "127.0.0.1".into(),
            listen_port: 8081,
            data_dir: "var".into(),
            database_url: String::new(),
            database_connections_max: 8,
            request_body_bytes_max: 65_536,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_drain_ms_max: 10_000,
        }
    }
}

impl Config {
    /// Loads defaults, then `path`, then `VEZA_*` variables, then validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text =
            match path {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|error| {
                    ConfigError::Unreadable {
                        path: path.display().to_string(),
                        reason: error.to_string(),
                    }
                })?),
                None => None,
            };
        let path_name = path
            .map(|path| path.display().to_string())
            .unwrap_or_default();
        let document = text.as_deref().map(|text| (path_name.as_str(), text));
        let (config, warnings) = config_layers::load::<Config>(document, env)?;
        for warning in warnings {
            eprintln!("warning: {warning}");
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges; each area checks its own section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        if server.listen_address.parse::<std::net::IpAddr>().is_err() {
            return Err(config_layers::invalid(
                "server.listen_address",
                "must be an IPv4 or IPv6 address",
            )
            .into());
        }
        if server.data_dir.is_empty() {
            return Err(config_layers::invalid("server.data_dir", "must not be empty").into());
        }
        if server.database_connections_max == 0 {
            return Err(config_layers::invalid(
                "server.database_connections_max",
                "must be greater than 0",
            )
            .into());
        }
        if server.request_body_bytes_max < 1024 {
            return Err(config_layers::invalid(
                "server.request_body_bytes_max",
                "must be at least 1024",
            )
            .into());
        }
        if !(server.database_url.is_empty()
            || server.database_url.starts_with("postgres://")
            || server.database_url.starts_with("postgresql://")
            || server.database_url.starts_with("sqlite:"))
        {
            return Err(config_layers::invalid(
                "server.database_url",
                "must be empty (embedded SQLite), postgres://... or sqlite:...",
            )
            .into());
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&server.log_level) {
            return Err(config_layers::invalid("server.log_level", &error.to_string()).into());
        }
        self.auth.validate()?;
        self.chat.validate()?;
        self.control.validate()?;
        self.live.validate()?;
        self.tracks.validate()?;
        self.social.validate()?;
        Ok(())
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.server.data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_file_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/veza-controlplane.toml");
        let config = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(
            config,
            Config::default(),
            "deploy/veza-controlplane.toml must document the defaults"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        for ((section, key), _) in config_layers::known_keys::<Config>() {
            assert!(
                text.contains(&format!("\n{key} = ")),
                "{section}.{key} is not documented"
            );
        }
    }

    #[test]
    fn invalid_values_name_their_key() {
        let env = |key: &str, value: &str| vec![(key.to_string(), value.to_string())];
        for (key, value, named) in [
            ("VEZA_SERVER_LISTEN_PORT", "x", "server.listen_port"),
            (
                "VEZA_SERVER_DATABASE_URL",
                "mysql://x",
                "server.database_url",
            ),
            (
                "VEZA_AUTH_ACCESS_TOKEN_TTL_SECONDS",
                "-5",
                "auth.access_token_ttl_seconds",
            ),
        ] {
            let error = Config::load(None, env(key, value)).unwrap_err().to_string();
            assert!(error.contains(named), "{error} should name {named}");
        }
    }
}
