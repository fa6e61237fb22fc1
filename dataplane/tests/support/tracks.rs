//! Tracks on demand end to end: a real control plane (which stores and
//! transcodes uploads into `{data_dir}/media`) and a data plane serving that
//! directory (`VEZA_TRACKS_MEDIA_DIR`), with short report intervals.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::control_plane::{data_plane_options, ControlPlane};
use super::http::{HttpConnection, Response};
use super::{eventually, Driver, TestServer};

/// How long a track may take to be transcoded.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A control plane, a data plane serving its media, and an owner.
pub struct TracksWorld {
    /// The control plane.
    pub control: ControlPlane,
    /// The data plane.
    pub server: TestServer,
    /// The first user's access token (the instance admin; owns the tracks).
    pub owner_token: String,
}

impl TracksWorld {
    /// Starts both processes on `driver`; `env` goes to the data plane.
    pub fn start(driver: Driver, env: &[(&str, &str)]) -> TracksWorld {
        let control = ControlPlane::start();
        let media_dir = control.data_dir.path().join("media");
        let server = data_plane_options(driver, &control)
            .env(
                "VEZA_TRACKS_MEDIA_DIR",
                media_dir.to_str().expect("UTF-8 path"),
            )
            .env("VEZA_TRACKS_PLAYS_REPORT_INTERVAL_MS", "200")
            .envs(env)
            .start();
        let owner_token = control.admin_token();
        TracksWorld {
            control,
            server,
            owner_token,
        }
    }

    /// The control plane's media directory.
    pub fn media_dir(&self) -> PathBuf {
        self.control.data_dir.path().join("media")
    }

    /// Uploads `wav` with `visibility`, waits until it is ready and returns
    /// the owner's view of it.
    pub fn upload_ready(&self, wav: &[u8], visibility: &str) -> Value {
        let path = format!("/v1/tracks?title=test&visibility={visibility}");
        let raw = [
            format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: audio/wav\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                self.owner_token,
                wav.len()
            )
            .into_bytes(),
            wav.to_vec(),
        ]
        .concat();
        let response = HttpConnection::open(self.control.rest_addr()).request(&raw);
        assert_eq!(response.status, 202, "upload: {}", response.body_text());
        let track_id = response.json()["id"].as_i64().expect("track id");
        eventually(READY_TIMEOUT, "the track is ready", || {
            let (status, view) = self.track(track_id);
            match view["status"].as_str() {
                Some("ready") => Ok(view),
                Some("failed") => panic!("processing failed: {view}"),
                _ => Err(format!("status {status}: {view}")),
            }
        })
    }

    /// The owner's view of a track (`GET /v1/tracks/{id}`).
    pub fn track(&self, track_id: i64) -> (u16, Value) {
        self.control.rest(
            "GET",
            &format!("/v1/tracks/{track_id}"),
            Some(&self.owner_token),
            Value::Null,
        )
    }

    /// A signed audio URL (path and query) valid for `seconds`.
    pub fn signed_url(&self, track_id: i64, seconds: i64) -> String {
        let (status, body) = self.control.rest(
            "POST",
            &format!("/v1/tracks/{track_id}/signed-url"),
            Some(&self.owner_token),
            json!({"expires_in_seconds": seconds}),
        );
        assert_eq!(status, 200, "signed url: {body}");
        body["url"].as_str().expect("url").to_owned()
    }

    /// The stored rendition at `bitrate_kbps` (`tracks/{id}/{bitrate}.opus`).
    pub fn rendition_file(&self, track_id: i64, bitrate_kbps: u32) -> Vec<u8> {
        let path = self
            .media_dir()
            .join(format!("tracks/{track_id}/{bitrate_kbps}.opus"));
        std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    /// One request to the data plane with extra header lines.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("Connection: close\r\n\r\n");
        let mut connection = HttpConnection::open(self.server.addr());
        connection.send(raw.as_bytes());
        if method == "HEAD" {
            connection.read_response_to_head()
        } else {
            connection.read_response()
        }
    }

    /// `GET path` with extra headers.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers)
    }
}

/// A mono 16-bit 48 kHz WAV of a sine tone lasting `seconds`.
pub fn sine_wav(seconds: u32) -> Vec<u8> {
    let sample_rate = 48_000u32;
    let samples: Vec<i16> = (0..sample_rate * seconds)
        .map(|idx| {
            let phase = idx as f32 * 440.0 * std::f32::consts::TAU / sample_rate as f32;
            (phase.sin() * 8000.0) as i16
        })
        .collect();
    let data_bytes = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_bytes as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_bytes).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&sample_rate.to_le_bytes());
    wav.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_bytes.to_le_bytes());
    for sample in samples {
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    wav
}

/// Runs curl (a client we did not write) and returns its status line code,
/// headers (lower-case names) and body.
pub fn curl(args: &[&str]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let headers_path = dir.path().join("headers");
    let body_path = dir.path().join("body");
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(&headers_path)
        .arg("-o")
        .arg(&body_path)
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let head = std::fs::read_to_string(&headers_path).expect("curl headers");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (
        status,
        headers,
        std::fs::read(&body_path).unwrap_or_default(),
    )
}
