//! Tracks: uploads (raw and multipart) processed by the real pipeline into
//! an Opus ladder, refused uploads leaving nothing behind, visibility,
//! changes and deletion, signed URLs verified against the published keys,
//! the control protocol's `LookupTrack` and `RecordPlays`, and a track that
//! survives `kill -9` of the control plane mid-processing. Every test runs on
//! SQLite and PostgreSQL.

mod rooms_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::BytesMut;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use rooms_support::{call, register, User, FAST_HASHING};
use serde_json::{json, Value};
use support::{Backend, TestControlPlane, BACKENDS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use veza_proto::control::handshake::hello;
use veza_proto::control::{
    ClientFrame, FrameEncoder, Request, RequestBody, RequestErrorCode, ResponseBody,
    ResponseResult, ServerFrame, ServerFrameDecoder, TrackMeta, TrackPlays, TrackVisibility,
    FRAME_BYTES_MAX_DEFAULT,
};

/// How long one protocol step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long processing may take (debug builds encode slowly).
const PROCESSING_TIMEOUT: Duration = Duration::from_secs(240);

async fn start(backend: Backend, extra_env: &[(&str, &str)]) -> TestControlPlane {
    let mut env = FAST_HASHING.to_vec();
    env.extend_from_slice(extra_env);
    TestControlPlane::start(backend, &env).await
}

/// A WAV file of a `seconds`-long sine, made by ffmpeg.
fn wav(seconds: u32) -> Vec<u8> {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sine.wav");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args(["-ac", "2", "-ar", "44100", "-f", "wav"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg made the test file");
    std::fs::read(path).unwrap()
}

fn media_dir(server: &TestControlPlane) -> PathBuf {
    server.data_dir.path().join("media")
}

/// Files in `directory` (none when it does not exist).
fn files_in(directory: &Path) -> Vec<String> {
    match std::fs::read_dir(directory) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `POST /v1/tracks` with a raw body.
async fn upload_raw(
    server: &TestControlPlane,
    user: &User,
    query: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(&format!("/v1/tracks{query}")))
        .bearer_auth(&user.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `POST /v1/tracks` as `multipart/form-data` with text `fields` and a file.
async fn upload_multipart(
    server: &TestControlPlane,
    user: &User,
    fields: &[(&str, &str)],
    file: &[u8],
) -> (u16, Value) {
    let boundary = "veza-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
             content-type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    upload_raw(
        server,
        user,
        "",
        &format!("multipart/form-data; boundary={boundary}"),
        body,
    )
    .await
}

/// Polls the track until its status is one of `statuses`.
async fn wait_for_status(
    server: &TestControlPlane,
    user: &User,
    track_id: i64,
    statuses: &[&str],
) -> Value {
    let deadline = Instant::now() + PROCESSING_TIMEOUT;
    loop {
        let (status, track) =
            call(server, user, "GET", &format!("/v1/tracks/{track_id}"), None).await;
        assert_eq!(status, 200, "{track}");
        if statuses.contains(&track["status"].as_str().unwrap()) {
            return track;
        }
        assert!(
            Instant::now() < deadline,
            "track {track_id} is still {} after {PROCESSING_TIMEOUT:?}:\n{}",
            track["status"],
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
            .send(&ClientFrame::Hello(hello("tracks-test", 0, 1)))
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

    /// Sends a request and returns its answer; pushes that arrive first are
    /// skipped.
    async fn ask(&mut self, body: RequestBody) -> ResponseResult {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
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

    async fn lookup(&mut self, track_id: i64) -> Result<TrackMeta, RequestErrorCode> {
        match self.ask(RequestBody::LookupTrack { track_id }).await {
            ResponseResult::Ok(ResponseBody::Track(meta)) => Ok(meta),
            ResponseResult::Err(error) => Err(error.code),
            other => panic!("expected Track, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn uploads_become_ready_with_renditions_and_the_data_plane_can_serve_and_count_them() {
    let wav = wav(3);
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let owner = register(&server, "composer").await;
        let listener = register(&server, "listener").await;

        let (status, queued) = upload_raw(
            &server,
            &owner,
            "?title=Sine&tags=test,%20drone&visibility=public",
            "audio/wav",
            wav.clone(),
        )
        .await;
        assert_eq!(status, 202, "{backend:?}: {queued}");
        assert_eq!(queued["status"], "queued", "{queued}");
        assert_eq!(queued["title"], "Sine");
        assert_eq!(queued["tags"], json!(["test", "drone"]));
        let track_id = queued["id"].as_i64().unwrap();

        let ready = wait_for_status(&server, &owner, track_id, &["ready", "failed"]).await;
        assert_eq!(ready["status"], "ready", "{backend:?}: {ready}");
        assert_eq!(ready["progress"], 1.0);
        let duration_ms = ready["duration_ms"].as_i64().unwrap();
        assert!(
            (2900..=3100).contains(&duration_ms),
            "duration {duration_ms}"
        );
        let bitrates: Vec<i64> = ready["renditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|rendition| rendition["bitrate_kbps"].as_i64().unwrap())
            .collect();
        assert_eq!(bitrates, [64, 96, 160]);
        assert!(ready["loudness_lufs"].is_number(), "{ready}");
        assert_eq!(
            ready["links"]["audio"],
            format!("/v1/tracks/{track_id}/audio")
        );
        assert!(files_in(&media_dir(&server).join("uploads")).is_empty());

        // Anyone authenticated sees a public track.
        let (status, seen) = call(
            &server,
            &listener,
            "GET",
            &format!("/v1/tracks/{track_id}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{seen}");
        assert!(seen.get("link_secret").is_none());

        let mut data_plane = DataPlane::connect(&server).await;
        let meta = data_plane.lookup(track_id).await.expect("a ready track");
        assert_eq!(meta.owner_user_id, owner.id);
        assert_eq!(meta.visibility, TrackVisibility::Public);
        assert!(meta.link_secret.is_empty());
        assert_eq!(
            meta.waveform_relative_path,
            format!("tracks/{track_id}/waveform.json")
        );
        assert!(media_dir(&server)
            .join(&meta.waveform_relative_path)
            .is_file());
        assert_eq!(meta.renditions.len(), 3);
        for rendition in &meta.renditions {
            let bitrate = rendition.bitrate_kbps;
            assert_eq!(
                rendition.relative_path,
                format!("tracks/{track_id}/{bitrate}.opus")
            );
            let file = media_dir(&server).join(&rendition.relative_path);
            let bytes = std::fs::read(&file).unwrap();
            assert_eq!(bytes.len() as u64, rendition.size_bytes);
            assert!(bytes.starts_with(b"OggS"), "{} is Ogg", file.display());
            assert_eq!(
                rendition.etag,
                format!(
                    "\"{track_id}-{bitrate}-{}-{}\"",
                    rendition.size_bytes, rendition.modified_at_ms
                )
            );
        }

        let recorded = data_plane
            .ask(RequestBody::RecordPlays {
                plays: vec![
                    TrackPlays { track_id, plays: 3 },
                    TrackPlays {
                        track_id: 999_999,
                        plays: 1,
                    },
                ],
            })
            .await;
        assert_eq!(recorded, ResponseResult::Ok(ResponseBody::PlaysRecorded));
        data_plane
            .ask(RequestBody::RecordPlays {
                plays: vec![TrackPlays { track_id, plays: 2 }],
            })
            .await;
        let (_, counted) = call(
            &server,
            &owner,
            "GET",
            &format!("/v1/tracks/{track_id}"),
            None,
        )
        .await;
        assert_eq!(counted["play_count"], 5);

        // The same audio as a multipart form.
        let (status, form_track) = upload_multipart(
            &server,
            &owner,
            &[
                ("title", "Form sine"),
                ("tags", "a,b"),
                ("visibility", "unlisted"),
            ],
            &wav,
        )
        .await;
        assert_eq!(status, 202, "{backend:?}: {form_track}");
        assert_eq!(form_track["title"], "Form sine");
        assert_eq!(form_track["visibility"], "unlisted");
        let form_id = form_track["id"].as_i64().unwrap();
        let ready = wait_for_status(&server, &owner, form_id, &["ready", "failed"]).await;
        assert_eq!(ready["status"], "ready", "{ready}");
        let meta = data_plane.lookup(form_id).await.expect("a ready track");
        assert_eq!(meta.visibility, TrackVisibility::Unlisted);
        assert_eq!(meta.link_secret, ready["link_secret"].as_str().unwrap());

        let (status, page) =
            call(&server, &owner, "GET", "/v1/tracks?owner=me&limit=1", None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["tracks"][0]["id"], track_id);
        assert_eq!(page["next_after"], track_id);
        let (_, page) = call(
            &server,
            &owner,
            "GET",
            &format!("/v1/tracks?owner=me&after={track_id}"),
            None,
        )
        .await;
        assert_eq!(page["tracks"][0]["id"], form_id);
        assert_eq!(page["next_after"], Value::Null);
    }
}

/// Sends a chunked upload with no `Content-Length` over a raw socket;
/// returns the status line.
async fn chunked_upload(
    server: &TestControlPlane,
    user: &User,
    chunks: usize,
    chunk_bytes: usize,
) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/tracks HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\n\
         content-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        user.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![0x55u8; chunk_bytes];
    for _ in 0..chunks {
        let framed = [format!("{chunk_bytes:x}\r\n").as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(STEP_TIMEOUT, stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn refused_and_failed_uploads_leave_no_track_and_no_stray_file() {
    for backend in BACKENDS {
        let server = start(backend, &[("VEZA_TRACKS_UPLOAD_BYTES_MAX", "65536")]).await;
        let owner = register(&server, "composer").await;
        let uploads = media_dir(&server).join("uploads");

        let (status, body) = upload_raw(&server, &owner, "", "audio/wav", vec![1; 70_000]).await;
        assert_eq!(status, 413, "{backend:?}: {body}");
        assert_eq!(body["error"], "upload_too_large");
        // Refused before its body was read: the connection cannot be reused.
        let refused = server
            .http
            .post(server.url("/v1/tracks"))
            .bearer_auth(&owner.token)
            .header("content-type", "audio/wav")
            .body(vec![1; 70_000])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 413);
        assert_eq!(
            refused
                .headers()
                .get("connection")
                .map(|value| value.as_bytes()),
            Some(&b"close"[..]),
            "a refused upload closes its connection"
        );
        // Without a Content-Length the limit is found while streaming.
        let status_line = chunked_upload(&server, &owner, 40, 4096).await;
        assert!(status_line.contains(" 413 "), "{status_line}");
        let (status, body) = upload_raw(&server, &owner, "", "audio/wav", Vec::new()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "empty_upload");
        let (status, body) = upload_raw(&server, &owner, "", "text/plain", vec![1; 10]).await;
        assert_eq!(status, 415, "{body}");
        let (status, body) = upload_raw(
            &server,
            &owner,
            "?visibility=secret",
            "audio/wav",
            vec![1; 10],
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (status, body) =
            upload_multipart(&server, &owner, &[("colour", "blue")], b"RIFF").await;
        assert_eq!(status, 422, "{body}");

        let (_, page) = call(&server, &owner, "GET", "/v1/tracks?owner=me", None).await;
        assert_eq!(page["tracks"], json!([]), "{backend:?}: no track was made");
        assert!(files_in(&uploads).is_empty(), "{:?}", files_in(&uploads));
        assert!(files_in(&media_dir(&server).join("originals")).is_empty());

        // Not audio: stored and queued, then failed with a reason.
        let (status, queued) = upload_raw(
            &server,
            &owner,
            "",
            "application/octet-stream",
            b"this is not audio at all".repeat(100),
        )
        .await;
        assert_eq!(status, 202, "{queued}");
        let track_id = queued["id"].as_i64().unwrap();
        let failed = wait_for_status(&server, &owner, track_id, &["ready", "failed"]).await;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert!(!failed["failure_reason"].as_str().unwrap().is_empty());
        assert_eq!(failed["renditions"], json!([]));
        assert!(!media_dir(&server)
            .join(format!("tracks/{track_id}"))
            .exists());
        assert!(!media_dir(&server)
            .join(format!("originals/{track_id}"))
            .exists());
        let mut data_plane = DataPlane::connect(&server).await;
        assert_eq!(
            data_plane.lookup(track_id).await.unwrap_err(),
            RequestErrorCode::NotFound
        );
        assert_eq!(
            data_plane.lookup(424_242).await.unwrap_err(),
            RequestErrorCode::NotFound
        );
    }
}

#[tokio::test]
async fn visibility_changes_deletion_and_signed_urls() {
    let wav = wav(1);
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let owner = register(&server, "composer").await;
        let other = register(&server, "stranger").await;
        let (status, track) = upload_raw(
            &server,
            &owner,
            "?visibility=private",
            "audio/wav",
            wav.clone(),
        )
        .await;
        assert_eq!(status, 202, "{track}");
        let track_id = track["id"].as_i64().unwrap();
        let path = format!("/v1/tracks/{track_id}");
        wait_for_status(&server, &owner, track_id, &["ready"]).await;

        let (status, _) = call(&server, &other, "GET", &path, None).await;
        assert_eq!(
            status, 404,
            "{backend:?}: a private track does not exist for others"
        );
        let (status, _) = call(
            &server,
            &other,
            "PATCH",
            &path,
            Some(json!({"title": "mine"})),
        )
        .await;
        assert_eq!(status, 404);

        let (status, changed) = call(
            &server,
            &owner,
            "PATCH",
            &path,
            Some(json!({"visibility": "unlisted", "title": "  Renamed ", "tags": ["x"]})),
        )
        .await;
        assert_eq!(status, 200, "{changed}");
        assert_eq!(changed["title"], "Renamed");
        let secret = changed["link_secret"]
            .as_str()
            .expect("the owner sees the secret")
            .to_string();
        assert_eq!(
            changed["links"]["audio"],
            format!("/v1/tracks/{track_id}/audio?s={secret}")
        );
        let (status, seen) = call(&server, &other, "GET", &path, None).await;
        assert_eq!(status, 200, "{seen}");
        assert!(seen.get("link_secret").is_none(), "{seen}");
        let (status, _) = call(
            &server,
            &other,
            "PATCH",
            &path,
            Some(json!({"title": "mine"})),
        )
        .await;
        assert_eq!(status, 403);

        // A signed URL, verified as the data plane would.
        let (status, signed) = call(
            &server,
            &owner,
            "POST",
            &format!("{path}/signed-url"),
            Some(json!({"expires_in_seconds": 600})),
        )
        .await;
        assert_eq!(status, 200, "{signed}");
        let url = signed["url"].as_str().unwrap();
        let query = url
            .strip_prefix(&format!("/v1/tracks/{track_id}/audio?"))
            .expect(url);
        let parameter = |name: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_string()
        };
        let expires_at_s: i64 = parameter("exp").parse().unwrap();
        assert_eq!(
            signed["expires_at_ms"].as_i64().unwrap(),
            expires_at_s * 1000
        );
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now_s + 590..=now_s + 610).contains(&expires_at_s));
        let mut data_plane = DataPlane::connect(&server).await;
        let ResponseResult::Ok(ResponseBody::SigningKeys { keys }) =
            data_plane.ask(RequestBody::FetchSigningKeys).await
        else {
            panic!("signing keys");
        };
        let key = keys
            .iter()
            .find(|key| key.kid == parameter("kid"))
            .expect("the kid is published");
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parameter("sig"))
            .unwrap();
        let signature = Signature::from_slice(&signature).unwrap();
        let verifying_key = VerifyingKey::from_bytes(&key.public_key).unwrap();
        let message = format!("veza-track-url:{track_id}:{expires_at_s}");
        verifying_key
            .verify(message.as_bytes(), &signature)
            .expect("the signature verifies");
        assert!(verifying_key
            .verify(
                format!("veza-track-url:{}:{expires_at_s}", track_id + 1).as_bytes(),
                &signature
            )
            .is_err());
        let (status, _) = call(
            &server,
            &owner,
            "POST",
            &format!("{path}/signed-url"),
            Some(json!({"expires_in_seconds": 8 * 24 * 3600})),
        )
        .await;
        assert_eq!(status, 422, "past tracks.signed_url_seconds_max");
        let (status, _) = call(
            &server,
            &other,
            "POST",
            &format!("{path}/signed-url"),
            Some(json!({"expires_in_seconds": 60})),
        )
        .await;
        assert_eq!(status, 403);

        let (status, _) = call(&server, &other, "DELETE", &path, None).await;
        assert_eq!(status, 403);
        let (status, _) = call(&server, &owner, "DELETE", &path, None).await;
        assert_eq!(status, 204);
        let (status, _) = call(&server, &owner, "GET", &path, None).await;
        assert_eq!(status, 404);
        assert!(!media_dir(&server)
            .join(format!("tracks/{track_id}"))
            .exists());
        assert!(!media_dir(&server)
            .join(format!("originals/{track_id}"))
            .exists());
        assert_eq!(
            data_plane.lookup(track_id).await.unwrap_err(),
            RequestErrorCode::NotFound
        );
    }
}

#[tokio::test]
async fn a_track_processing_when_the_control_plane_is_killed_is_ready_after_restart() {
    let wav = wav(60);
    for backend in BACKENDS {
        let mut server = start(backend, &[]).await;
        let owner = register(&server, "composer").await;
        let (status, track) =
            upload_raw(&server, &owner, "?title=Long", "audio/wav", wav.clone()).await;
        assert_eq!(status, 202, "{track}");
        let track_id = track["id"].as_i64().unwrap();
        let processing = wait_for_status(&server, &owner, track_id, &["processing", "ready"]).await;
        assert_eq!(
            processing["status"], "processing",
            "{backend:?}: the 60 s track is still processing"
        );
        let mut data_plane = DataPlane::connect(&server).await;
        assert_eq!(
            data_plane.lookup(track_id).await.unwrap_err(),
            RequestErrorCode::NotFound
        );
        drop(data_plane);

        server.kill_hard();
        server.restart().await;
        let ready = wait_for_status(&server, &owner, track_id, &["ready", "failed"]).await;
        assert_eq!(ready["status"], "ready", "{backend:?}: {ready}");
        let duration_ms = ready["duration_ms"].as_i64().unwrap();
        assert!(
            (59_900..=60_100).contains(&duration_ms),
            "duration {duration_ms}"
        );
        assert!(files_in(&media_dir(&server).join("uploads")).is_empty());
    }
}
