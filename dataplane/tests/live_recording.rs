//! Recording a live broadcast: a stream with recording enabled is stored by
//! the control plane at its highest rendition, whole, and made available
//! when the broadcast ends (the tracks issue turns it into a track).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::for_each_driver;
use support::http::HttpConnection;
use support::live::{
    assert_tools_accept, live_ogg, pcm_encoder, write_capture, LiveWorld, RawSource, SourceRequest,
    NOISE,
};

const STREAM: &str = "radio";

/// The recording list once its newest entry is complete.
fn wait_for_complete_recording(world: &LiveWorld, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = world.control.rest(
            "GET",
            "/v1/streams/radio/recordings",
            Some(&world.admin_token),
            Value::Null,
        );
        assert_eq!(status, 200, "GET recordings: {body}");
        if let Some(first) = body["recordings"].as_array().and_then(|list| list.first()) {
            if first["status"] == "complete" {
                return first.clone();
            }
        }
        assert!(
            started.elapsed() < limit,
            "no complete recording within {limit:?}: {body}\n{}",
            world.control.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_recorded_broadcast_is_stored_whole_at_its_highest_rendition_when_it_ends() {
    for_each_driver(|driver| {
        let grace_ms = 1000;
        let world = LiveWorld::start(
            driver,
            &[
                ("VEZA_LIVE_SOURCE_GRACE_MS", "1000"),
                // Several chunks for a few seconds of 160 kb/s.
                ("VEZA_LIVE_RECORDING_CHUNK_BYTES", "16384"),
            ],
        );
        let key = world.create_stream(STREAM, "Recorded show");
        let (status, body) = world.control.rest(
            "PATCH",
            "/v1/streams/radio",
            Some(&world.admin_token),
            json!({"recording_enabled": true}),
        );
        assert_eq!(status, 200, "enable recording: {body}");

        let source_seconds = 4.0;
        let mut source = RawSource::connect(world.server.addr(), &SourceRequest::pcm(STREAM, &key));
        source.pump_encoder(pcm_encoder(NOISE, source_seconds as u32));
        world.wait_until_live(STREAM);
        let answer = source.finish(Duration::from_secs(15));
        assert_eq!(answer.status, 200, "{}", answer.body_text());
        world.wait_until_offline(STREAM, Duration::from_secs(10));

        let recording = wait_for_complete_recording(&world, Duration::from_secs(10));
        let id = recording["id"].as_i64().expect("recording id");
        let raw = format!(
            "GET /v1/streams/radio/recordings/{id}/audio HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            world.admin_token
        );
        let response = HttpConnection::open(world.control.rest_addr()).request(raw.as_bytes());
        assert_eq!(response.status, 200, "download the recording");
        assert_eq!(
            response.body.len() as u64,
            recording["bytes"].as_u64().expect("bytes"),
            "the listed size is the file's"
        );
        let what = format!("{driver:?} recording");
        let stream = live_ogg(&response.body, &what);
        stream.assert_continuous(&what);
        assert!(stream.ends_with_eos, "{what}: ends with the EOS page");
        assert_eq!(
            stream.first_audio_seq, 2,
            "{what}: from the first audio page"
        );
        assert_eq!(
            stream.complete_bytes,
            response.body.len(),
            "{what}: whole pages"
        );
        // The source's audio plus the grace period's silence, at the
        // highest rendition of the default ladder (160 kb/s).
        let expected_seconds = source_seconds + grace_ms as f64 / 1000.0;
        assert!(
            (stream.seconds() - expected_seconds).abs() < 1.0,
            "{what}: {:.2} s recorded, expected about {expected_seconds} s",
            stream.seconds()
        );
        assert!(
            stream.bitrate_bps() > 120_000.0,
            "{what}: the highest rendition, {:.0} b/s",
            stream.bitrate_bps()
        );
        let path = world.capture_path("recording.opus");
        write_capture(&path, &response.body, &stream);
        assert_tools_accept(&path, &stream, 2);

        // The finished recording became a track of the stream's owner,
        // processed like an upload.
        let track = wait_for_ready_track(&world, Duration::from_secs(60));
        assert!(
            track["title"]
                .as_str()
                .is_some_and(|title| title.starts_with("Recorded show (live, ")),
            "{track}"
        );
        assert_eq!(track["visibility"], "public", "{track}");
        let duration_ms = track["duration_ms"].as_i64().expect("duration");
        assert!(
            (duration_ms as f64 / 1000.0 - stream.seconds()).abs() < 0.5,
            "the track lasts as long as the recording: {duration_ms} ms against {:.2} s",
            stream.seconds()
        );
        assert_eq!(
            track["renditions"].as_array().map(Vec::len),
            Some(3),
            "{track}"
        );
    });
}

/// The owner's only track, once it is ready.
fn wait_for_ready_track(world: &LiveWorld, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = world.control.rest(
            "GET",
            "/v1/tracks?owner=me",
            Some(&world.admin_token),
            Value::Null,
        );
        assert_eq!(status, 200, "GET /v1/tracks?owner=me: {body}");
        if let Some(track) = body["tracks"].as_array().and_then(|tracks| tracks.first()) {
            assert_ne!(track["status"], "failed", "{track}");
            if track["status"] == "ready" {
                return track.clone();
            }
        }
        assert!(
            started.elapsed() < limit,
            "no ready track within {limit:?}: {body}\n{}",
            world.control.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_stream_without_recording_leaves_no_recording() {
    for_each_driver(|driver| {
        let world = LiveWorld::start(driver, &[("VEZA_LIVE_SOURCE_GRACE_MS", "500")]);
        let key = world.create_stream(STREAM, "Not recorded");
        let mut source = RawSource::connect(world.server.addr(), &SourceRequest::pcm(STREAM, &key));
        source.pump_encoder(pcm_encoder(NOISE, 2));
        world.wait_until_live(STREAM);
        let answer = source.finish(Duration::from_secs(15));
        assert_eq!(answer.status, 200, "{}", answer.body_text());
        world.wait_until_offline(STREAM, Duration::from_secs(10));
        let (status, body) = world.control.rest(
            "GET",
            "/v1/streams/radio/recordings",
            Some(&world.admin_token),
            Value::Null,
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["recordings"], json!([]), "{body}");
    });
}
