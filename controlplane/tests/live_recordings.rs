//! Recording live broadcasts: the control protocol's `AppendRecording` (as a
//! data plane's owner shard sends a broadcast's highest rendition) writing
//! real Ogg Opus pages to storage, and the REST routes listing recordings
//! and serving their audio. Every test runs on SQLite and PostgreSQL.

mod rooms_support;
mod support;

use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use rooms_support::{assert_error, call, open_database, register, User, FAST_HASHING};
use serde_json::{json, Value};
use support::{Backend, TestControlPlane, BACKENDS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use veza_proto::control::handshake::hello;
use veza_proto::control::{
    ClientFrame, FrameEncoder, Request, RequestBody, RequestErrorCode, ResponseBody,
    ResponseResult, ServerFrame, ServerFrameDecoder, FRAME_BYTES_MAX_DEFAULT,
};

/// How long one protocol step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The broadcast's id as a data plane picks it (its start in Unix ms).
const RECORDING_ID: i64 = 1_700_000_000_000;

async fn start(backend: Backend, extra_env: &[(&str, &str)]) -> TestControlPlane {
    let mut env = FAST_HASHING.to_vec();
    env.extend_from_slice(extra_env);
    TestControlPlane::start(backend, &env).await
}

/// A stream with recording enabled; returns its id.
async fn recorded_stream(server: &TestControlPlane, owner: &User, name: &str) -> i64 {
    let body = json!({"name": name, "recording_enabled": true});
    let (status, created) = call(server, owner, "POST", "/v1/streams", Some(body)).await;
    assert_eq!(status, 201, "create stream: {created}");
    assert_eq!(created["recording_enabled"], true);
    created["id"].as_i64().unwrap()
}

/// A 2-second Ogg Opus file made by ffmpeg, as the data plane's highest
/// rendition would be.
fn ogg_opus_file() -> Vec<u8> {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sine.opus");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("sine=frequency=440:duration=2")
        .args(["-c:a", "libopus", "-b:a", "64k", "-f", "ogg"])
        // 100 ms pages (the default is 1 s), so that 2 s make many pages.
        .args(["-page_duration", "100000"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg made the test file");
    std::fs::read(path).unwrap()
}

/// Splits an Ogg file into `n_chunks` chunks of whole pages; chunk 0 holds
/// the OpusHead and OpusTags pages (and the first audio page).
fn page_chunks(file: &[u8], n_chunks: usize) -> Vec<Vec<u8>> {
    let mut page_starts: Vec<usize> = (0..file.len().saturating_sub(3))
        .filter(|&offset| &file[offset..offset + 4] == b"OggS")
        .collect();
    assert_eq!(
        page_starts.first(),
        Some(&0),
        "an Ogg file starts with a page"
    );
    page_starts.push(file.len());
    let n_pages = page_starts.len() - 1;
    assert!(n_pages >= n_chunks + 2, "{n_pages} pages are too few");
    // Chunk 0: OpusHead, OpusTags and one audio page; the rest spread evenly.
    let mut boundaries = vec![0, 3];
    for chunk_idx in 1..n_chunks {
        boundaries.push(3 + (n_pages - 3) * chunk_idx / (n_chunks - 1));
    }
    boundaries
        .windows(2)
        .map(|pair| file[page_starts[pair[0]]..page_starts[pair[1]]].to_vec())
        .collect()
}

/// A data plane's side of the control protocol over the Unix socket.
struct DataPlane {
    stream: UnixStream,
    buffer: BytesMut,
    decoder: ServerFrameDecoder,
    next_request_id: u64,
}

impl DataPlane {
    async fn connect(server: &TestControlPlane) -> Self {
        let socket = server.data_dir.path().join("control.sock");
        let mut data_plane = Self {
            stream: UnixStream::connect(socket).await.unwrap(),
            buffer: BytesMut::new(),
            decoder: ServerFrameDecoder::new(FRAME_BYTES_MAX_DEFAULT),
            next_request_id: 1,
        };
        data_plane
            .send(&ClientFrame::Hello(hello("recording-test", 0, 1)))
            .await;
        match data_plane.receive().await {
            ServerFrame::Welcome(_) => data_plane,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn send(&mut self, frame: &ClientFrame) {
        let mut out = BytesMut::new();
        FrameEncoder::new(FRAME_BYTES_MAX_DEFAULT)
            .encode(frame, &mut out)
            .unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    async fn receive(&mut self) -> ServerFrame {
        tokio::time::timeout(STEP_TIMEOUT, async {
            loop {
                if let Some(frame) = self.decoder.decode(&mut self.buffer).unwrap() {
                    return frame;
                }
                let read = self.stream.read_buf(&mut self.buffer).await.unwrap();
                assert!(read > 0, "the control plane closed the connection");
            }
        })
        .await
        .expect("the control plane answers in time")
    }

    /// Sends one `AppendRecording` and returns its answer (pushes that
    /// arrive first are skipped).
    async fn append(
        &mut self,
        stream_id: i64,
        chunk_idx: u32,
        data: &[u8],
        last: bool,
    ) -> ResponseResult {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let body = RequestBody::AppendRecording {
            stream_id,
            recording_id: RECORDING_ID,
            chunk_idx,
            data: data.to_vec(),
            last,
        };
        self.send(&ClientFrame::Request(Request { request_id, body }))
            .await;
        loop {
            match self.receive().await {
                ServerFrame::Response(response) => {
                    assert_eq!(response.request_id, request_id);
                    return response.result;
                }
                ServerFrame::Push(_) => {}
                other => panic!("expected a response, got {other:?}"),
            }
        }
    }
}

fn expect_stored(result: ResponseResult, context: &str) -> u64 {
    match result {
        ResponseResult::Ok(ResponseBody::RecordingStored { bytes_total }) => bytes_total,
        other => panic!("{context}: expected RecordingStored, got {other:?}"),
    }
}

fn expect_bad_request(result: ResponseResult, context: &str) -> String {
    match result {
        ResponseResult::Err(error) => {
            assert_eq!(
                error.code,
                RequestErrorCode::BadRequest,
                "{context}: {error:?}"
            );
            error.message
        }
        other => panic!("{context}: expected BadRequest, got {other:?}"),
    }
}

async fn recordings(server: &TestControlPlane, user: &User, stream: &str) -> Vec<Value> {
    let path = format!("/v1/streams/{stream}/recordings");
    let (status, body) = call(server, user, "GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    body["recordings"].as_array().unwrap().clone()
}

async fn audio(server: &TestControlPlane, user: &User, path: &str) -> reqwest::Response {
    server
        .http
        .get(server.url(path))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_broadcast_is_recorded_chunk_by_chunk_once_each_and_served_when_complete() {
    let file = ogg_opus_file();
    let chunks = page_chunks(&file, 4);
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let owner = register(&server, "owner").await;
        let stream_id = recorded_stream(&server, &owner, "night-shift").await;
        let mut data_plane = DataPlane::connect(&server).await;

        let mut bytes_sent = 0u64;
        for (chunk_idx, chunk) in chunks.iter().enumerate().take(3) {
            bytes_sent += chunk.len() as u64;
            let stored = data_plane
                .append(stream_id, chunk_idx as u32, chunk, false)
                .await;
            assert_eq!(expect_stored(stored, "chunk"), bytes_sent, "{backend:?}");
        }
        let retry = data_plane.append(stream_id, 2, &chunks[2], false).await;
        assert_eq!(
            expect_stored(retry, "a retried chunk"),
            bytes_sent,
            "a retry is answered without appending twice"
        );

        let listed = recordings(&server, &owner, "night-shift").await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["status"], "recording");
        assert_eq!(listed[0]["ended_at_ms"], Value::Null);
        let audio_path = format!(
            "/v1/streams/night-shift/recordings/{}/audio",
            listed[0]["id"]
        );
        let response = audio(&server, &owner, &audio_path).await;
        assert_eq!(response.status(), 404, "no audio while recording");

        let last = data_plane.append(stream_id, 3, &chunks[3], true).await;
        assert_eq!(
            expect_stored(last, "the last chunk"),
            file.len() as u64,
            "{backend:?}"
        );
        let retry = data_plane.append(stream_id, 3, &chunks[3], true).await;
        assert_eq!(
            expect_stored(retry, "a retried last chunk"),
            file.len() as u64
        );

        let listed = recordings(&server, &owner, "night-shift").await;
        assert_eq!(listed[0]["status"], "complete", "{listed:?}");
        assert_eq!(listed[0]["bytes"], file.len() as u64);
        assert_eq!(listed[0]["recording_id"], RECORDING_ID);
        assert!(
            listed[0]["ended_at_ms"].as_i64().unwrap()
                >= listed[0]["started_at_ms"].as_i64().unwrap()
        );
        let stored_path = server
            .data_dir
            .path()
            .join(format!("recordings/{stream_id}/{RECORDING_ID}.opus"));
        assert_eq!(
            std::fs::read(&stored_path).unwrap(),
            file,
            "the file on disk"
        );
        assert!(!stored_path.with_extension("opus.part").exists());

        let response = audio(&server, &owner, &audio_path).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "audio/ogg");
        assert_eq!(
            response.headers()["content-length"],
            file.len().to_string().as_str()
        );
        let downloaded = response.bytes().await.unwrap();
        assert_eq!(
            downloaded.as_ref(),
            file.as_slice(),
            "exactly the recorded bytes"
        );
        let downloaded_path = server.data_dir.path().join("downloaded.opus");
        std::fs::write(&downloaded_path, &downloaded).unwrap();
        let opusinfo = Command::new("opusinfo")
            .arg(&downloaded_path)
            .output()
            .expect("opusinfo runs");
        assert!(
            opusinfo.status.success(),
            "opusinfo accepts the recording: {}",
            String::from_utf8_lossy(&opusinfo.stdout)
        );

        let late = data_plane.append(stream_id, 4, &chunks[3], false).await;
        expect_bad_request(late, "a chunk after the last");
    }
}

#[tokio::test]
async fn gaps_unknown_streams_and_missing_first_chunks_are_bad_requests() {
    let file = ogg_opus_file();
    let chunks = page_chunks(&file, 4);
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let owner = register(&server, "owner").await;
        let stream_id = recorded_stream(&server, &owner, "gappy").await;
        let mut data_plane = DataPlane::connect(&server).await;

        let unknown = data_plane
            .append(stream_id + 1000, 0, &chunks[0], false)
            .await;
        expect_bad_request(unknown, "an unknown stream");
        let no_start = data_plane.append(stream_id, 1, &chunks[1], false).await;
        expect_bad_request(no_start, "a chunk before chunk 0");

        expect_stored(
            data_plane.append(stream_id, 0, &chunks[0], false).await,
            "chunk 0",
        );
        let gap = data_plane.append(stream_id, 2, &chunks[2], false).await;
        let message = expect_bad_request(gap, "a gap");
        assert!(message.contains("next chunk is 1"), "{message}");
        let stored = data_plane.append(stream_id, 1, &chunks[1], false).await;
        assert_eq!(
            expect_stored(stored, "the gap filled"),
            (chunks[0].len() + chunks[1].len()) as u64,
            "{backend:?}: a refused chunk wrote nothing"
        );
    }
}

#[tokio::test]
async fn a_recording_past_recording_bytes_max_is_refused_and_interrupted() {
    for backend in BACKENDS {
        let server = start(backend, &[("VEZA_LIVE_RECORDING_BYTES_MAX", "2048")]).await;
        let owner = register(&server, "owner").await;
        let stream_id = recorded_stream(&server, &owner, "big").await;
        let mut data_plane = DataPlane::connect(&server).await;
        let stored = data_plane.append(stream_id, 0, &[7; 1500], false).await;
        assert_eq!(expect_stored(stored, "under the bound"), 1500);
        let over = data_plane.append(stream_id, 1, &[7; 1000], false).await;
        let message = expect_bad_request(over, "over the bound");
        assert!(message.contains("live.recording_bytes_max"), "{message}");
        let after = data_plane.append(stream_id, 2, &[7; 10], false).await;
        expect_bad_request(after, "an interrupted recording takes no chunk");

        let listed = recordings(&server, &owner, "big").await;
        assert_eq!(
            (listed[0]["status"].as_str(), listed[0]["bytes"].as_i64()),
            (Some("interrupted"), Some(1500)),
            "{backend:?}"
        );
        let path = format!("/v1/streams/big/recordings/{}/audio", listed[0]["id"]);
        assert_eq!(audio(&server, &owner, &path).await.status(), 404);
    }
}

#[tokio::test]
async fn recordings_are_the_owners_alone() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let owner = register(&server, "owner").await;
        let other = register(&server, "other").await;
        let stream_id = recorded_stream(&server, &owner, "public-one").await;
        let body = json!({"name": "private-one", "is_public": false, "recording_enabled": true});
        let (status, _) = call(&server, &owner, "POST", "/v1/streams", Some(body)).await;
        assert_eq!(status, 201);
        let mut data_plane = DataPlane::connect(&server).await;
        expect_stored(
            data_plane.append(stream_id, 0, b"OggS", true).await,
            "a tiny recording",
        );
        let id = recordings(&server, &owner, "public-one").await[0]["id"].clone();

        for (path, expected) in [
            ("/v1/streams/public-one/recordings".to_string(), 403),
            (format!("/v1/streams/public-one/recordings/{id}/audio"), 403),
            ("/v1/streams/private-one/recordings".to_string(), 404),
            ("/v1/streams/nothing/recordings".to_string(), 404),
        ] {
            let (status, body) = call(&server, &other, "GET", &path, None).await;
            assert_error(status, &body, expected, &format!("{backend:?} {path}"));
        }
        let (status, body) = call(
            &server,
            &owner,
            "GET",
            "/v1/streams/public-one/recordings/999999/audio",
            None,
        )
        .await;
        assert_error(status, &body, 404, "no such recording");
        assert!(recordings(&server, &owner, "private-one").await.is_empty());
    }
}

#[tokio::test]
async fn recordings_left_recording_are_interrupted_at_start_and_keep_their_file() {
    for backend in BACKENDS {
        let mut server = start(backend, &[("VEZA_LIVE_RECORDING_STALE_MS", "60000")]).await;
        let owner = register(&server, "owner").await;
        let stream_id = recorded_stream(&server, &owner, "stale").await;
        let fresh_stream_id = recorded_stream(&server, &owner, "fresh").await;
        let mut data_plane = DataPlane::connect(&server).await;
        expect_stored(
            data_plane.append(stream_id, 0, b"OggS-stale", false).await,
            "stale",
        );
        expect_stored(
            data_plane
                .append(fresh_stream_id, 0, b"OggS-fresh", false)
                .await,
            "fresh",
        );
        drop(data_plane);
        let database = open_database(&server).await;
        sqlx::query("UPDATE live_recordings SET updated_at_ms = updated_at_ms - 120000 WHERE stream_id = $1")
            .bind(stream_id)
            .execute(&database.pool)
            .await
            .unwrap();
        drop(database);

        server.restart().await;
        let stale = recordings(&server, &owner, "stale").await;
        assert_eq!(stale[0]["status"], "interrupted", "{backend:?}");
        let fresh = recordings(&server, &owner, "fresh").await;
        assert_eq!(fresh[0]["status"], "recording", "a recent one may go on");
        let part = server
            .data_dir
            .path()
            .join(format!("recordings/{stream_id}/{RECORDING_ID}.opus.part"));
        assert_eq!(
            std::fs::read(part).unwrap(),
            b"OggS-stale",
            "the .part file is kept"
        );
    }
}
