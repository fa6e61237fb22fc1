//! Veza's two processes for a chat benchmark, started as `scripts/start.sh`
//! starts them: the control plane on a fresh SQLite data directory (REST on
//! a free loopback port, control protocol on `<data_dir>/control.sock`),
//! then the data plane with `VEZA_CONTROL_ADDRESS=unix:<abs path>`, ready
//! when `GET /ready` answers 200 (every shard connected to the control
//! plane). Stopped in the same order as start.sh stops them: the data plane
//! first, then the control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::control_api::ControlApi;
use crate::server_process::{free_loopback_port, Readiness, ServerLaunch, ServerProcess};

use super::ChatServersError;

/// How long either process may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long either may take to exit after SIGTERM (the data plane drains
/// its connections first).
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// How long reading `/metrics` may take.
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);

/// Cheap password hashing: registering hundreds of benchmark users must not
/// take minutes; argon2 is not what is measured.
const FAST_HASHING: [(&str, &str); 2] = [
    ("VEZA_AUTH_ARGON2_MEMORY_KIB", "64"),
    ("VEZA_AUTH_ARGON2_ITERATIONS", "1"),
];

/// What to start and where.
#[derive(Debug, Clone)]
pub struct VezaLaunch {
    /// `veza-dataplane`.
    pub dataplane_bin: PathBuf,
    /// `veza-controlplane`.
    pub controlplane_bin: PathBuf,
    /// The data plane's CPUs (one shard each).
    pub shard_cpus: Vec<usize>,
    /// The control plane's CPUs; empty: unpinned.
    pub controlplane_cpus: Vec<usize>,
    /// More `VEZA_*` variables for the data plane.
    pub dataplane_environment: Vec<(String, String)>,
}

/// A running Veza: the control plane, and the data plane once started.
#[derive(Debug)]
pub struct VezaServers {
    launch: VezaLaunch,
    data_dir: tempfile::TempDir,
    dataplane: Option<ServerProcess>,
    controlplane: Option<ServerProcess>,
    api: ControlApi,
    dataplane_address: Option<SocketAddr>,
}

impl VezaServers {
    /// Starts the control plane on a fresh data directory and waits until
    /// it is ready. Populate it through [`VezaServers::api`], then call
    /// [`VezaServers::start_data_plane`], which then reads the runtime
    /// settings as they are.
    pub fn start_control_plane(launch: &VezaLaunch) -> Result<VezaServers, ChatServersError> {
        let data_dir = tempfile::Builder::new()
            .prefix("veza-bench-chat-")
            .tempdir()
            .map_err(ChatServersError::io("create the data directory"))?;
        let port = free_loopback_port().map_err(ChatServersError::io("pick a port"))?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let mut environment: Vec<(String, String)> = vec![
            ("VEZA_SERVER_LISTEN_ADDRESS".into(), "127.0.0.1".into()),
            ("VEZA_SERVER_LISTEN_PORT".into(), port.to_string()),
            (
                "VEZA_SERVER_DATA_DIR".into(),
                data_dir.path().display().to_string(),
            ),
            ("VEZA_SERVER_DATABASE_URL".into(), String::new()),
            ("VEZA_SERVER_LOG_LEVEL".into(), "warn".into()),
        ];
        environment.extend(
            FAST_HASHING
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string())),
        );
        let controlplane = ServerProcess::start(&ServerLaunch {
            name: "veza-controlplane".into(),
            program: launch.controlplane_bin.clone(),
            args: Vec::new(),
            environment,
            cpus: launch.controlplane_cpus.clone(),
            address,
            readiness: Readiness::HttpGet {
                path: "/ready".into(),
            },
            ready_timeout: READY_TIMEOUT,
            log_path: data_dir.path().join("controlplane.log"),
        })?;
        let api = ControlApi::new(format!("http://{address}"))?;
        Ok(VezaServers {
            launch: launch.clone(),
            data_dir,
            dataplane: None,
            controlplane: Some(controlplane),
            api,
            dataplane_address: None,
        })
    }

    /// Starts the data plane, connected to the control plane over its Unix
    /// socket, and waits until every shard is connected.
    pub fn start_data_plane(&mut self) -> Result<(), ChatServersError> {
        assert!(self.dataplane.is_none(), "the data plane starts once");
        let socket = self.data_dir.path().join("control.sock");
        let socket = std::fs::canonicalize(&socket)
            .map_err(ChatServersError::io(format!("find {}", socket.display())))?;
        let port = free_loopback_port().map_err(ChatServersError::io("pick a port"))?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let mut environment: Vec<(String, String)> = vec![
            ("VEZA_SERVER_LISTEN_ADDRESS".into(), "127.0.0.1".into()),
            ("VEZA_SERVER_LISTEN_PORT".into(), port.to_string()),
            (
                "VEZA_SERVER_SHARDS".into(),
                self.launch.shard_cpus.len().to_string(),
            ),
            ("VEZA_SERVER_LOG_LEVEL".into(), "warn".into()),
            (
                "VEZA_CONTROL_ADDRESS".into(),
                format!("unix:{}", socket.display()),
            ),
        ];
        environment.extend(self.launch.dataplane_environment.iter().cloned());
        let dataplane = ServerProcess::start(&ServerLaunch {
            name: "veza-dataplane".into(),
            program: self.launch.dataplane_bin.clone(),
            args: Vec::new(),
            environment,
            cpus: self.launch.shard_cpus.clone(),
            address,
            readiness: Readiness::HttpGet {
                path: "/ready".into(),
            },
            ready_timeout: READY_TIMEOUT,
            log_path: self.data_dir.path().join("dataplane.log"),
        })?;
        self.dataplane = Some(dataplane);
        self.dataplane_address = Some(address);
        Ok(())
    }

    /// The control plane's REST API.
    pub fn api(&self) -> &ControlApi {
        &self.api
    }

    /// `ws://127.0.0.1:PORT/v1/chat` of the data plane.
    pub fn chat_url(&self) -> String {
        let address = self.dataplane_address.expect("the data plane is started");
        format!("ws://{address}{}", veza_proto::chat::CHAT_PATH)
    }

    /// The data plane's address.
    pub fn dataplane_address(&self) -> Option<SocketAddr> {
        self.dataplane_address
    }

    /// The sum over shards of the data plane's Prometheus series `name`
    /// (`GET /metrics`); `None` when it cannot be read.
    pub fn dataplane_metric_sum(&self, name: &str) -> Option<f64> {
        let text = http_get(self.dataplane_address?, "/metrics")?;
        Some(prometheus_sum(&text, name))
    }

    /// The data plane process.
    pub fn dataplane(&self) -> &ServerProcess {
        self.dataplane.as_ref().expect("the data plane is started")
    }

    /// The control plane process.
    pub fn controlplane(&self) -> &ServerProcess {
        self.controlplane.as_ref().expect("the control plane runs")
    }

    /// The last bytes of both logs, for an error report.
    pub fn log_tails(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.data_dir.path().join(name)).unwrap_or_default();
            let start = text.len().saturating_sub(4096);
            let start = (start..text.len())
                .find(|&idx| text.is_char_boundary(idx))
                .unwrap_or(text.len());
            format!("--- {name} ---\n{}", &text[start..])
        };
        format!("{}\n{}", tail("dataplane.log"), tail("controlplane.log"))
    }

    /// Stops the data plane, then the control plane.
    pub fn stop(mut self) -> Result<(), ChatServersError> {
        if let Some(dataplane) = self.dataplane.take() {
            dataplane.stop(STOP_DEADLINE)?;
        }
        if let Some(controlplane) = self.controlplane.take() {
            controlplane.stop(STOP_DEADLINE)?;
        }
        Ok(())
    }
}

/// `GET path` over a fresh connection; the body of a 200 answer.
fn http_get(address: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&address, METRICS_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(METRICS_TIMEOUT)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The sum of every sample of series `name` (all label sets) in a
/// Prometheus text exposition.
pub fn prometheus_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            rest.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

impl Drop for VezaServers {
    fn drop(&mut self) {
        // The data plane first, as in `stop`; each ServerProcess stops its
        // own child when dropped.
        drop(self.dataplane.take());
        drop(self.controlplane.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_summed_over_shards_and_no_other_series_counts() {
        let text = "# HELP veza_chat_persist_batches_total Batches.\n\
                    veza_chat_persist_batches_total{shard=\"0\"} 12\n\
                    veza_chat_persist_batches_total{shard=\"1\"} 30\n\
                    veza_chat_persist_batches_total_extra{shard=\"0\"} 999\n\
                    veza_up 1\n";
        assert_eq!(
            prometheus_sum(text, "veza_chat_persist_batches_total"),
            42.0
        );
        assert_eq!(prometheus_sum(text, "veza_up"), 1.0);
        assert_eq!(prometheus_sum(text, "missing"), 0.0);
    }
}
