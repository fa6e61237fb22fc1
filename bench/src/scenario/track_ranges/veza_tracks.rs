//! Veza for `track-ranges`: the control plane on a fresh SQLite data
//! directory, `N` tracks uploaded through its REST API and transcoded to
//! the Opus ladder, then the data plane serving the files the control plane
//! wrote (`VEZA_TRACKS_MEDIA_DIR={data_dir}/media`).
//!
//! Both processes start with the environment `crate::chat_servers::veza`
//! gives them (as `scripts/start.sh` does); they are started here rather
//! than through it because the data plane needs the control plane's data
//! directory in its environment, and because the directory must outlive
//! the processes: nginx serves the same files afterwards.
//!
//! Setup, timed: the instance admin registers and logs in, the per-IP
//! limits are lifted (every client connection comes from 127.0.0.x), the
//! control plane's CPU seconds are sampled, then each track is
//! `POST /v1/tracks?title=T{i}&visibility=public` with a WAV body (`202
//! {id, status: "queued"}`), and `GET /v1/tracks/{id}` is polled until every
//! one is `ready` with its `renditions: [{bitrate_kbps, size_bytes}]`. The
//! control plane's CPU seconds then give the processing throughput: seconds
//! of audio transcoded to the whole ladder per CPU-second.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::control_api::{ControlApi, RuntimeSettings, REQUEST_TIMEOUT};
use crate::proc_stat::process_sample;
use crate::server_process::{
    free_loopback_port, Readiness, ServerError, ServerLaunch, ServerProcess,
};

use super::media::{track_seconds, wav_bytes};
use super::range_request::Rendition;

/// Uploads tried while the control plane's job queue is full (2 s apart).
const UPLOAD_ATTEMPTS_MAX: usize = 600;

/// How long either process may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long either may take to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// Processing may take this long, plus [`PROCESSING_SECS_PER_TRACK`] per
/// track, before the run gives up.
const PROCESSING_TIMEOUT_BASE: Duration = Duration::from_secs(60);

/// See [`PROCESSING_TIMEOUT_BASE`]: generous for a 20 s track on a busy CPU.
const PROCESSING_SECS_PER_TRACK: u64 = 5;

/// Between two polls of the pending tracks.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The account that uploads (the first one: the instance admin).
const OWNER_USERNAME: &str = "track-bench-owner";

/// Cheap password hashing, as for the chat scenarios: argon2 is not what
/// is measured.
const FAST_HASHING: [(&str, &str); 2] = [
    ("VEZA_AUTH_ARGON2_MEMORY_KIB", "64"),
    ("VEZA_AUTH_ARGON2_ITERATIONS", "1"),
];

/// The data plane's variable naming the media directory.
pub const MEDIA_DIR_VARIABLE: &str = "VEZA_TRACKS_MEDIA_DIR";

/// What the control plane's processing cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessingReport {
    /// Tracks uploaded.
    pub tracks: usize,
    /// Renditions made, all tracks.
    pub renditions: usize,
    /// Bytes uploaded (WAV).
    pub uploaded_bytes: u64,
    /// Seconds of audio, the sum of the tracks' `duration_ms` (or of the
    /// uploaded durations where the answer lacked it).
    pub audio_secs: f64,
    /// Whether every track's `duration_ms` came from the server.
    pub durations_from_server: bool,
    /// Control plane CPU seconds from before the first upload to the last
    /// track ready.
    pub control_plane_cpu_secs: f64,
    /// Wall-clock seconds over the same span.
    pub wall_secs: f64,
    /// `audio_secs / control_plane_cpu_secs`: seconds of audio transcoded
    /// to the full ladder per CPU-second.
    pub audio_secs_per_cpu_sec: Option<f64>,
}

/// Why Veza's setup failed.
#[derive(Debug, thiserror::Error)]
pub enum VezaTracksError {
    /// A process could not be started or sampled.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A REST call failed.
    #[error(transparent)]
    ControlApi(#[from] crate::control_api::ControlApiError),
    /// The tracks API answered something unexpected, or processing failed.
    #[error("{0}")]
    Tracks(String),
    /// A directory could not be made.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running Veza with its data directory.
#[derive(Debug)]
pub struct VezaTracks {
    // Fields drop in order: the data plane first, as start.sh stops them,
    // and the directory last.
    dataplane: Option<ServerProcess>,
    controlplane: Option<ServerProcess>,
    api: ControlApi,
    dataplane_address: Option<SocketAddr>,
    data_dir: tempfile::TempDir,
}

impl VezaTracks {
    /// Starts the control plane pinned to `cpus` (empty: unpinned).
    pub fn start_control_plane(
        program: &Path,
        cpus: &[usize],
    ) -> Result<VezaTracks, VezaTracksError> {
        let data_dir = tempfile::Builder::new()
            .prefix("veza-bench-tracks-")
            .tempdir()?;
        let port = free_loopback_port()?;
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
            program: program.to_path_buf(),
            args: Vec::new(),
            environment,
            cpus: cpus.to_vec(),
            address,
            readiness: Readiness::HttpGet {
                path: "/ready".into(),
            },
            ready_timeout: READY_TIMEOUT,
            log_path: data_dir.path().join("controlplane.log"),
        })?;
        let api = ControlApi::new(format!("http://{address}"))?;
        Ok(VezaTracks {
            dataplane: None,
            controlplane: Some(controlplane),
            api,
            dataplane_address: None,
            data_dir,
        })
    }

    /// `{data_dir}/media`: where the control plane writes renditions.
    pub fn media_root(&self) -> PathBuf {
        self.data_dir.path().join("media")
    }

    /// Starts the data plane pinned to `cpus` (one shard each), serving
    /// [`VezaTracks::media_root`], and waits until every shard is connected.
    pub fn start_data_plane(
        &mut self,
        program: &Path,
        cpus: &[usize],
    ) -> Result<(), VezaTracksError> {
        assert!(self.dataplane.is_none(), "the data plane starts once");
        let socket = std::fs::canonicalize(self.data_dir.path().join("control.sock"))?;
        let port = free_loopback_port()?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let environment: Vec<(String, String)> = vec![
            ("VEZA_SERVER_LISTEN_ADDRESS".into(), "127.0.0.1".into()),
            ("VEZA_SERVER_LISTEN_PORT".into(), port.to_string()),
            ("VEZA_SERVER_SHARDS".into(), cpus.len().to_string()),
            ("VEZA_SERVER_LOG_LEVEL".into(), "warn".into()),
            (
                "VEZA_CONTROL_ADDRESS".into(),
                format!("unix:{}", socket.display()),
            ),
            (
                MEDIA_DIR_VARIABLE.into(),
                self.media_root().display().to_string(),
            ),
        ];
        self.dataplane = Some(ServerProcess::start(&ServerLaunch {
            name: "veza-dataplane".into(),
            program: program.to_path_buf(),
            args: Vec::new(),
            environment,
            cpus: cpus.to_vec(),
            address,
            readiness: Readiness::HttpGet {
                path: "/ready".into(),
            },
            ready_timeout: READY_TIMEOUT,
            log_path: self.data_dir.path().join("dataplane.log"),
        })?);
        self.dataplane_address = Some(address);
        Ok(())
    }

    /// The data plane's address once started.
    pub fn dataplane_address(&self) -> Option<SocketAddr> {
        self.dataplane_address
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

    /// Stops the data plane, then the control plane; the data directory
    /// (and so the media) lives on in the value returned.
    pub fn stop(mut self) -> Result<tempfile::TempDir, VezaTracksError> {
        if let Some(dataplane) = self.dataplane.take() {
            dataplane.stop(STOP_DEADLINE)?;
        }
        if let Some(controlplane) = self.controlplane.take() {
            controlplane.stop(STOP_DEADLINE)?;
        }
        Ok(self.data_dir)
    }

    /// Uploads `n_tracks` WAVs and waits until all are transcoded; the
    /// renditions (sizes read from the files) and what processing cost.
    pub async fn upload_tracks(
        &self,
        n_tracks: usize,
    ) -> Result<(Vec<Rendition>, ProcessingReport), VezaTracksError> {
        let owner = self.api.register_and_login(OWNER_USERNAME).await?;
        self.api
            .update_runtime_settings(&owner.access_token, &RuntimeSettings::unthrottled(4096))
            .await?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| VezaTracksError::Tracks(error.to_string()))?;
        let client = TracksClient {
            http,
            base_url: self.api.base_url().to_string(),
            token: owner.access_token,
        };
        let controlplane_pid = self.controlplane().pid();
        let cpu_before = process_sample(controlplane_pid)
            .map_err(ServerError::from)?
            .cpu_secs;
        let started = Instant::now();
        let mut uploaded_bytes = 0;
        let mut track_ids = Vec::with_capacity(n_tracks);
        for track_idx in 0..n_tracks {
            let wav = wav_bytes(track_idx);
            uploaded_bytes += wav.len() as u64;
            track_ids.push(client.upload(track_idx, wav).await?);
        }
        let timeout = PROCESSING_TIMEOUT_BASE
            + Duration::from_secs(PROCESSING_SECS_PER_TRACK * n_tracks as u64);
        let tracks = client
            .wait_until_ready(&track_ids, started + timeout)
            .await?;
        let cpu_after = process_sample(controlplane_pid)
            .map_err(ServerError::from)?
            .cpu_secs;
        let wall_secs = started.elapsed().as_secs_f64();
        let durations_from_server = tracks.iter().all(|track| track.duration_ms.is_some());
        let audio_secs: f64 = tracks
            .iter()
            .enumerate()
            .map(|(track_idx, track)| {
                track
                    .duration_ms
                    .map_or(f64::from(track_seconds(track_idx)), |ms| ms as f64 / 1000.0)
            })
            .sum();
        let renditions = self.renditions_on_disk(&tracks)?;
        let control_plane_cpu_secs = cpu_after - cpu_before;
        let processing = ProcessingReport {
            tracks: n_tracks,
            renditions: renditions.len(),
            uploaded_bytes,
            audio_secs,
            durations_from_server,
            control_plane_cpu_secs,
            wall_secs,
            audio_secs_per_cpu_sec: (control_plane_cpu_secs > 0.0)
                .then(|| audio_secs / control_plane_cpu_secs),
        };
        Ok((renditions, processing))
    }

    /// The renditions the answers list, each checked against its file
    /// `{media}/tracks/{id}/{kbps}.opus`: both servers serve that file, so
    /// its size is what `Content-Range` must carry.
    fn renditions_on_disk(&self, tracks: &[ReadyTrack]) -> Result<Vec<Rendition>, VezaTracksError> {
        let mut renditions = Vec::new();
        for track in tracks {
            for &(bitrate_kbps, size_bytes) in &track.renditions {
                let path = self
                    .media_root()
                    .join("tracks")
                    .join(&track.id)
                    .join(format!("{bitrate_kbps}.opus"));
                let on_disk = std::fs::metadata(&path)
                    .map_err(|error| {
                        VezaTracksError::Tracks(format!(
                            "rendition file {}: {error}",
                            path.display()
                        ))
                    })?
                    .len();
                if size_bytes.is_some_and(|size| size != on_disk) || on_disk == 0 {
                    return Err(VezaTracksError::Tracks(format!(
                        "{} holds {on_disk} bytes, the API says {size_bytes:?}",
                        path.display()
                    )));
                }
                renditions.push(Rendition {
                    track_id: track.id.clone(),
                    bitrate_kbps,
                    size_bytes: on_disk,
                });
            }
        }
        Ok(renditions)
    }
}

/// A track the control plane finished.
struct ReadyTrack {
    id: String,
    duration_ms: Option<u64>,
    /// `(bitrate_kbps, size_bytes)` as listed.
    renditions: Vec<(u32, Option<u64>)>,
}

/// The tracks routes, with the uploader's token.
struct TracksClient {
    http: reqwest::Client,
    base_url: String,
    token: String,
}

/// A JSON id as path text: `17` or `"01J…"` both work.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

impl TracksClient {
    async fn send(
        &self,
        step: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, String), VezaTracksError> {
        let fail = |error: reqwest::Error| VezaTracksError::Tracks(format!("{step}: {error}"));
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(fail)?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.map_err(fail)?))
    }

    /// `POST /v1/tracks?title=T{i}&visibility=public`, `audio/wav` → `202`.
    async fn upload(&self, track_idx: usize, wav: Vec<u8>) -> Result<String, VezaTracksError> {
        let step = format!("upload track {track_idx} (POST /v1/tracks)");
        // A full job queue answers 503 with Retry-After, as a client should
        // expect: wait and send again, within a bound (a server that never
        // takes the upload still ends the run with an error).
        for _ in 0..UPLOAD_ATTEMPTS_MAX {
            let request = self
                .http
                .post(format!(
                    "{}/v1/tracks?title=T{track_idx}&visibility=public",
                    self.base_url
                ))
                .header("content-type", "audio/wav")
                .body(wav.clone());
            // A refusal sent while the body is still going out (queue full)
            // can end the connection under the client: also a reason to
            // wait and retry.
            let (status, body) = match self.send(&step, request).await {
                Ok(answer) => answer,
                Err(_) => (503, "track_queue_full (connection closed)".to_owned()),
            };
            if status == 503 && body.contains("track_queue_full") {
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            if !matches!(status, 201 | 202) {
                return Err(VezaTracksError::Tracks(format!(
                    "{step}: HTTP {status}: {body}"
                )));
            }
            return serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|value| id_text(&value["id"]))
                .ok_or_else(|| VezaTracksError::Tracks(format!("{step}: no id in {body}")));
        }
        Err(VezaTracksError::Tracks(format!(
            "{step}: the job queue stayed full for {UPLOAD_ATTEMPTS_MAX} attempts"
        )))
    }

    /// Polls every pending track until all are `ready`; `failed` (or any
    /// status but queued/processing/ready) ends the run.
    async fn wait_until_ready(
        &self,
        track_ids: &[String],
        deadline: Instant,
    ) -> Result<Vec<ReadyTrack>, VezaTracksError> {
        let mut ready: Vec<Option<ReadyTrack>> = track_ids.iter().map(|_| None).collect();
        // Bounded by the deadline.
        loop {
            for (track_idx, id) in track_ids.iter().enumerate() {
                if ready[track_idx].is_none() {
                    ready[track_idx] = self.poll(id).await?;
                }
            }
            let n_pending = ready.iter().filter(|track| track.is_none()).count();
            if n_pending == 0 {
                return Ok(ready.into_iter().flatten().collect());
            }
            if Instant::now() >= deadline {
                return Err(VezaTracksError::Tracks(format!(
                    "{n_pending} of {} tracks not ready by the processing deadline",
                    track_ids.len()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn poll(&self, id: &str) -> Result<Option<ReadyTrack>, VezaTracksError> {
        let step = format!("read track {id} (GET /v1/tracks/{id})");
        let request = self.http.get(format!("{}/v1/tracks/{id}", self.base_url));
        let (status, body) = self.send(&step, request).await?;
        let malformed = || VezaTracksError::Tracks(format!("{step}: unexpected answer: {body}"));
        if status != 200 {
            return Err(VezaTracksError::Tracks(format!(
                "{step}: HTTP {status}: {body}"
            )));
        }
        let value: Value = serde_json::from_str(&body).map_err(|_| malformed())?;
        match value["status"].as_str() {
            Some("queued" | "processing") => return Ok(None),
            Some("ready") => {}
            _ => return Err(malformed()),
        }
        let renditions = value["renditions"]
            .as_array()
            .filter(|list| !list.is_empty())
            .ok_or_else(malformed)?
            .iter()
            .map(|rendition| {
                let bitrate = rendition["bitrate_kbps"]
                    .as_u64()
                    .and_then(|kbps| u32::try_from(kbps).ok());
                bitrate.map(|kbps| (kbps, rendition["size_bytes"].as_u64()))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(malformed)?;
        Ok(Some(ReadyTrack {
            id: id.to_string(),
            duration_ms: value["duration_ms"].as_u64(),
            renditions,
        }))
    }
}
