//! Live audio end to end (issue #5), on both drivers, with real processes
//! and the tools broadcasters use: ffmpeg as the source (Icecast and HTTP
//! PUT), raw sources for every framing and credential, listeners on both
//! shards whose captures must satisfy opusinfo, oggz-validate, ffprobe and
//! an ffmpeg decode; refusals; the grace period; lagging listeners; status,
//! now-playing metadata and metrics.
//!
//! Every test runs a control plane and a two-shard data plane per driver;
//! the stream's owner shard is fixed by its name, so sources and listeners
//! land on both sides of the ring mesh.

mod support;

use std::io::{Cursor, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::for_each_driver;
use support::http::{self, HttpConnection, Response};
use support::live::{
    assert_same_pages, assert_tools_accept, encoder_output, ffmpeg_source, garbage, live_ogg,
    ogg_opus_encoder, pcm_encoder, split_response, write_capture, Capture, CaptureEnd, Credential,
    Framing, LiveOgg, LiveWorld, Pace, PumpEnd, RawSource, SourceRequest, StalledListener, NOISE,
    SINE,
};
use support::metrics::limit_hits;

const STREAM: &str = "radio";
const LISTEN_PATH: &str = "/v1/live/radio";

/// A short grace period, so a stream whose source finished ends (EOS,
/// connection closed) within a second and captures are complete.
const SHORT_GRACE: (&str, &str) = ("VEZA_LIVE_SOURCE_GRACE_MS", "1000");
/// A grace period long enough to watch listeners stay through it.
const GRACE_3_S: (&str, &str) = ("VEZA_LIVE_SOURCE_GRACE_MS", "3000");
/// 200 ms pages, for tests whose timing or sizes depend on the page
/// duration (pauses between pages, pages smaller than a listener's queue)
/// whatever the default is.
const PAGES_200_MS: (&str, &str) = ("VEZA_LIVE_PAGE_DURATION_MS", "200");

/// Asserts the response head every listener gets: 200, Ogg, delimited by
/// the connection's close.
fn assert_listener_head(capture: &Capture, what: &str) {
    assert_eq!(
        capture.status, 200,
        "{what}: status; headers {:?}",
        capture.headers
    );
    assert_eq!(capture.header("content-type"), Some("audio/ogg"), "{what}");
    assert_eq!(
        capture.header("content-length"),
        None,
        "{what}: no Content-Length"
    );
    assert_eq!(
        capture.header("transfer-encoding"),
        None,
        "{what}: not chunked"
    );
}

/// Checks a capture that ran until the stream ended: the head, one
/// continuous Ogg Opus stream ending with EOS, and every external tool.
fn assert_complete_valid_capture(world: &LiveWorld, capture: &Capture, what: &str) -> LiveOgg {
    assert_listener_head(capture, what);
    assert_eq!(
        capture.end,
        CaptureEnd::ClosedByServer,
        "{what}: closed by the server"
    );
    let stream = live_ogg(&capture.body, what);
    stream.assert_continuous(what);
    assert!(stream.ends_with_eos, "{what}: the last page is EOS");
    assert_eq!(
        stream.complete_bytes,
        capture.body.len(),
        "{what}: no torn page at the end"
    );
    assert_eq!(stream.channel_count, 2, "{what}: stereo OpusHead");
    let path = world.capture_path(&format!("{}.opus", what.replace(' ', "-")));
    write_capture(&path, &capture.body, &stream);
    assert_tools_accept(&path, &stream, 2);
    stream
}

/// A source request answered before its body: the refusal.
fn refusal(addr: SocketAddr, request: &SourceRequest) -> Response {
    let mut source = RawSource::connect(addr, request);
    source.read_response()
}

fn assert_asks_for_credentials(answer: &Response) {
    answer.assert_error(401, "unauthorized");
    let challenge = answer.header("www-authenticate").unwrap_or("");
    assert!(
        challenge.starts_with("Basic"),
        "401 carries a Basic challenge, got {challenge:?}"
    );
}

fn u64_at(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is a number in {value}"))
}

#[test]
fn an_ffmpeg_icecast_source_reaches_listeners_on_both_shards_as_one_valid_ogg_opus_stream() {
    for_each_driver(|driver| {
        let world = LiveWorld::start(driver, &[SHORT_GRACE]);
        let key = world.create_stream(STREAM, "Veza Test Radio");
        // What the issue gives broadcasters: ffmpeg's icecast protocol (PUT,
        // Expect: 100-continue, no length), stopping after 6 s of audio.
        let mut ffmpeg = ffmpeg_source(
            SINE,
            6,
            &[
                "-content_type",
                "audio/ogg",
                "-ice_name",
                "Veza Icecast Test",
                "-ice_genre",
                "Test",
                "-ice_public",
                "1",
            ],
            &world.icecast_url(&key, STREAM),
        );
        let status = world.wait_until_live(STREAM);
        assert_eq!(status["source"]["content_type"], "audio/ogg", "{status}");
        // Sixteen listeners over both shards: the first four go through
        // every external tool, all sixteen must hold the same pages.
        let listeners = world.listeners_on_every_shard(LISTEN_PATH, 16);
        ffmpeg.assert_exits_successfully(Duration::from_secs(15));
        let captures: Vec<Capture> = listeners
            .into_iter()
            .map(|listener| listener.wait_for_end(Duration::from_secs(8)))
            .collect();
        let mut streams = Vec::new();
        for (index, capture) in captures.iter().enumerate() {
            let what = format!("listener {index}");
            assert_eq!(
                capture.header("icy-name"),
                Some("Veza Icecast Test"),
                "{what}"
            );
            assert_eq!(capture.header("icy-genre"), Some("Test"), "{what}");
            assert_eq!(capture.header("icy-pub"), Some("1"), "{what}");
            let stream = if index < 4 {
                assert_complete_valid_capture(&world, capture, &what)
            } else {
                let stream = live_ogg(&capture.body, &what);
                stream.assert_continuous(&what);
                assert!(stream.ends_with_eos, "{what}: the last page is EOS");
                stream
            };
            assert!(
                stream.seconds() >= 3.0,
                "{what} heard {:.1} s of a 6 s broadcast",
                stream.seconds()
            );
            streams.push((what, stream));
        }
        let named: Vec<(&str, &LiveOgg)> = streams
            .iter()
            .map(|(what, stream)| (what.as_str(), stream))
            .collect();
        assert_same_pages(&named);
        world.wait_until_offline(STREAM, Duration::from_secs(5));
    });
}

#[test]
fn sources_broadcast_with_ffmpeg_http_put_the_legacy_source_method_and_the_owners_token() {
    for_each_driver(|driver| {
        let world = LiveWorld::start(driver, &[SHORT_GRACE]);
        let key = world.create_stream(STREAM, "Veza Test Radio");
        let addr = world.server.addr();

        // ffmpeg's http protocol: PUT with a chunked body and basic auth.
        let mut ffmpeg = ffmpeg_source(
            SINE,
            3,
            &[
                "-method",
                "PUT",
                "-auth_type",
                "basic",
                "-content_type",
                "audio/ogg",
            ],
            &world.http_url(&key, STREAM),
        );
        world.wait_until_live(STREAM);
        let listener = world.listen(LISTEN_PATH);
        ffmpeg.assert_exits_successfully(Duration::from_secs(10));
        let capture = listener.wait_for_end(Duration::from_secs(8));
        assert_complete_valid_capture(&world, &capture, "listener of ffmpeg http PUT");
        world.wait_until_offline(STREAM, Duration::from_secs(5));

        // The legacy method: Icecast answers 200 at once, before the body.
        let mut source = RawSource::connect(
            addr,
            &SourceRequest {
                method: "SOURCE",
                ..SourceRequest::ogg(STREAM, &key)
            },
        );
        let answer = source.read_response_head();
        assert_eq!(answer.status, 200, "SOURCE is answered at once: {answer:?}");
        source.pump_encoder(ogg_opus_encoder(SINE, 3, 64, true));
        world.wait_until_live(STREAM);
        let listener = world.listen(LISTEN_PATH);
        let end = source.wait_for_body_end(Duration::from_secs(10));
        assert!(matches!(end, PumpEnd::BodyEnded), "SOURCE body: {end:?}");
        source.drop_connection();
        let capture = listener.wait_for_end(Duration::from_secs(8));
        assert_complete_valid_capture(&world, &capture, "listener of SOURCE");
        world.wait_until_offline(STREAM, Duration::from_secs(5));

        // The owner's bearer token, Expect: 100-continue and a
        // Content-Length body sent in real time: 100, then 200 with JSON.
        let body = encoder_output(
            ogg_opus_encoder(SINE, 3, 64, false),
            Duration::from_secs(20),
        );
        let mut source = RawSource::connect(
            addr,
            &SourceRequest {
                credential: Credential::Bearer(world.admin_token.clone()),
                framing: Framing::ContentLength(body.len() as u64),
                expect_continue: true,
                ..SourceRequest::ogg(STREAM, "")
            },
        );
        let interim = source.read_response();
        assert_eq!(interim.status, 100, "Expect: 100-continue: {interim:?}");
        let bytes_per_second = body.len() as u64 / 3;
        source.pump(
            Box::new(Cursor::new(body.clone())),
            Pace::BytesPerSecond(bytes_per_second),
        );
        world.wait_until_live(STREAM);
        let listener = world.listen(LISTEN_PATH);
        let answer = source.finish(Duration::from_secs(10));
        assert_eq!(
            answer.status,
            200,
            "the end of the body: {}",
            answer.body_text()
        );
        let summary = answer.json();
        assert_eq!(summary["stream"], STREAM, "{summary}");
        assert_eq!(
            u64_at(&summary, "bytes_received"),
            body.len() as u64,
            "{summary}"
        );
        let capture = listener.wait_for_end(Duration::from_secs(8));
        assert_complete_valid_capture(&world, &capture, "listener of the bearer PUT");
    });
}

#[test]
fn a_pcm_source_is_encoded_to_the_opus_ladder_and_higher_renditions_carry_more_bits() {
    for_each_driver(|driver| {
        let world = LiveWorld::start(driver, &[SHORT_GRACE]);
        let key = world.create_stream(STREAM, "Veza PCM");
        let mut source = RawSource::connect(world.server.addr(), &SourceRequest::pcm(STREAM, &key));
        source.pump_encoder(pcm_encoder(NOISE, 5));
        let status = world.wait_until_live(STREAM);
        assert_eq!(status["source"]["content_type"], "audio/L16", "{status}");
        let ladder: Vec<u64> = status["renditions"]
            .as_array()
            .expect("renditions")
            .iter()
            .map(|rendition| u64_at(rendition, "bitrate_kbps"))
            .collect();
        assert_eq!(ladder, vec![64, 96, 160], "the default ladder: {status}");

        let low = world.listen("/v1/live/radio?br=64");
        let high = world.listen("/v1/live/radio?br=160");
        let nearest = world.listen("/v1/live/radio?br=100");
        let answer = source.finish(Duration::from_secs(15));
        assert_eq!(
            answer.status,
            200,
            "the end of the body: {}",
            answer.body_text()
        );
        assert_eq!(
            u64_at(&answer.json(), "bytes_received"),
            source.sent_bytes(),
            "bytes_received counts the de-chunked body"
        );
        let mut rates = Vec::new();
        for (listener, bitrate) in [(low, "64"), (high, "160"), (nearest, "96")] {
            let what = format!("listener at {bitrate} kbps");
            let capture = listener.wait_for_end(Duration::from_secs(8));
            assert_eq!(capture.header("x-veza-bitrate"), Some(bitrate), "{what}");
            let stream = assert_complete_valid_capture(&world, &capture, &what);
            assert!(
                stream.seconds() >= 3.0,
                "{what} heard {:.1} s",
                stream.seconds()
            );
            eprintln!(
                "{what}: {:.1} kb/s over {:.1} s",
                stream.bitrate_bps() / 1000.0,
                stream.seconds()
            );
            rates.push(stream.bitrate_bps());
        }
        assert!(
            rates[1] > 1.5 * rates[0],
            "the 160 kb/s rendition carries clearly more than the 64 one: {rates:?} b/s"
        );
        assert!(
            rates[0] < rates[2] && rates[2] < rates[1],
            "96 kb/s lies between: {rates:?} b/s"
        );
    });
}

#[test]
fn sources_are_refused_with_json_errors_and_a_second_source_leaves_the_first_on_air() {
    for_each_driver(|driver| {
        let world = LiveWorld::start(driver, &[SHORT_GRACE]);
        let key = world.create_stream(STREAM, "Veza Test Radio");
        let addr = world.server.addr();

        let answer = refusal(
            addr,
            &SourceRequest {
                credential: Credential::Missing,
                ..SourceRequest::ogg(STREAM, &key)
            },
        );
        assert_asks_for_credentials(&answer);
        assert_asks_for_credentials(&refusal(
            addr,
            &SourceRequest::ogg(STREAM, "vzs_not-the-key"),
        ));
        let stranger = world.other_user_token("mallory");
        assert_asks_for_credentials(&refusal(
            addr,
            &SourceRequest {
                credential: Credential::Bearer(stranger),
                ..SourceRequest::ogg(STREAM, &key)
            },
        ));
        refusal(addr, &SourceRequest::ogg("nosuch", &key)).assert_error(404, "stream_not_found");
        refusal(
            addr,
            &SourceRequest {
                content_type: Some("audio/mpeg".to_owned()),
                ..SourceRequest::ogg(STREAM, &key)
            },
        )
        .assert_error(415, "unsupported_media_type");
        http::get(addr, LISTEN_PATH).assert_error(404, "stream_offline");

        let mut first = RawSource::connect(addr, &SourceRequest::ogg(STREAM, &key));
        first.pump_encoder(ogg_opus_encoder(SINE, 20, 64, true));
        world.wait_until_live(STREAM);
        let listener = world.listen(LISTEN_PATH);
        listener.wait_for_more_than(0, Duration::from_secs(5));

        let mut second = RawSource::connect(addr, &SourceRequest::ogg(STREAM, &key));
        second.pump_encoder(ogg_opus_encoder(SINE, 20, 64, true));
        second.read_response().assert_error(409, "source_conflict");
        second.drop_connection();

        let status = world.stream_status(STREAM).expect("still live");
        assert_eq!(status["source"]["state"], "live", "{status}");
        assert_eq!(u64_at(&status["source"], "connections"), 1, "{status}");
        let before = listener.body_bytes();
        listener.wait_for_more_than(before + 4000, Duration::from_secs(4));
        assert!(!listener.has_ended(), "the listener stays connected");

        first.drop_connection();
        let capture = listener.wait_for_end(Duration::from_secs(5));
        let stream = live_ogg(&capture.body, "listener of the first source");
        stream.assert_continuous("listener of the first source");
        assert!(stream.ends_with_eos);
    });
}

#[test]
fn a_source_sending_what_is_not_ogg_opus_gets_400_while_its_listeners_hear_silence() {
    for_each_driver(|driver| {
        let world = LiveWorld::start(driver, &[GRACE_3_S, PAGES_200_MS]);
        let key = world.create_stream(STREAM, "Veza Test Radio");
        let addr = world.server.addr();

        // Garbage from the first byte.
        let mut source = RawSource::connect(addr, &SourceRequest::ogg(STREAM, &key));
        source.pump(Box::new(Cursor::new(garbage(64 * 1024))), Pace::AsReadable);
        match source.response_or_end() {
            Ok(answer) => answer.assert_error(400, "invalid_ogg"),
            Err(error) => panic!("random bytes must be answered 400 invalid_ogg; instead: {error}"),
        }
        drop(source);
        world.wait_until_offline(STREAM, Duration::from_secs(5));

        // A valid stream, then garbage.
        let mut encoder = ogg_opus_encoder(SINE, 20, 64, true);
        let body = encoder
            .take_stdout()
            .take(24_000)
            .chain(Cursor::new(garbage(32 * 1024)));
        let mut source = RawSource::connect(addr, &SourceRequest::ogg(STREAM, &key));
        source.pump(Box::new(body), Pace::AsReadable);
        world.wait_until_live(STREAM);
        let listener = world.listen(LISTEN_PATH);
        listener.wait_for_more_than(0, Duration::from_secs(5));
        match source.response_or_end() {
            Ok(answer) => answer.assert_error(400, "invalid_ogg"),
            Err(error) if http::is_timeout(&error) => {
                panic!("garbage after valid pages was neither answered nor disconnected: {error}")
            }
            Err(error) => {
                eprintln!("the corrupt source was disconnected without an answer: {error}")
            }
        }
        drop(source);
        drop(encoder);
        let refused_at = Instant::now();

        world.wait_for_status(
            STREAM,
            Duration::from_secs(2),
            "the grace period",
            |status| status["source"]["state"] == "grace",
        );
        let before = listener.body_bytes();
        listener.wait_for_more_than(before, Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(2000).saturating_sub(refused_at.elapsed()));
        assert!(!listener.has_ended(), "listeners stay for the grace period");
        let capture = listener.wait_for_end(Duration::from_secs(5));
        let stream =
            assert_complete_valid_capture(&world, &capture, "listener of the corrupt source");
        assert!(
            capture.longest_silence() < Duration::from_millis(1500),
            "the listener kept receiving pages; longest pause {:?}",
            capture.longest_silence()
        );
        assert!(
            stream.seconds() >= 3.0,
            "audio then silence: {:.1} s",
            stream.seconds()
        );
    });
}

#[test]
fn a_source_that_returns_within_the_grace_period_continues_the_same_ogg_stream() {
    for_each_driver(|driver| {
        let world = LiveWorld::start(driver, &[GRACE_3_S, PAGES_200_MS]);
        let key = world.create_stream(STREAM, "Veza Test Radio");
        let url = world.icecast_url(&key, STREAM);
        let options = ["-content_type", "audio/ogg", "-page_duration", "100000"];

        let mut first = ffmpeg_source(SINE, 30, &options, &url);
        world.wait_until_live(STREAM);
        let listener = world.listen(LISTEN_PATH);
        listener.wait_for_more_than(0, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1500));
        first.kill();
        world.wait_for_status(
            STREAM,
            Duration::from_secs(2),
            "the grace period",
            |status| status["source"]["state"] == "grace",
        );
        std::thread::sleep(Duration::from_millis(1000));
        assert!(
            !listener.has_ended(),
            "the listener stays while the source is away"
        );

        let dropped = world.stream_status(STREAM).expect("in its grace period");
        let mut second = ffmpeg_source("sine=frequency=660:sample_rate=48000", 2, &options, &url);
        let returned = world.wait_for_status(
            STREAM,
            Duration::from_secs(3),
            "the source returns",
            |status| {
                status["source"]["state"] == "live"
                    && status["source"]["connected_at_ms"] != dropped["source"]["connected_at_ms"]
            },
        );
        second.assert_exits_successfully(Duration::from_secs(10));
        let second_ended = listener.started().elapsed();
        let capture = listener.wait_for_end(Duration::from_secs(8));

        let what = "listener across the source's return";
        let stream = assert_complete_valid_capture(&world, &capture, what);
        eprintln!(
            "{what}: {} pages, {:.1} s of audio, longest pause {:?}",
            stream.pages.len(),
            stream.seconds(),
            capture.longest_silence()
        );
        let stayed = capture.ended_after.saturating_sub(second_ended);
        assert!(
            (Duration::from_millis(2500)..Duration::from_secs(6)).contains(&stayed),
            "{what}: the stream ends one grace period (3 s) after the source; it ended after {stayed:?}"
        );
        assert!(
            capture.longest_silence() < Duration::from_secs(1),
            "{what}: pages kept coming; longest pause {:?}",
            capture.longest_silence()
        );
        let first_byte = capture.arrivals.first().expect("arrivals").0;
        let listened = (capture.ended_after - first_byte).as_secs_f64();
        assert!(
            stream.seconds() >= listened - 1.5,
            "{what}: granules cover the gap: {:.1} s of audio in {listened:.1} s",
            stream.seconds()
        );
        assert_eq!(
            u64_at(&returned["source"], "connections"),
            2,
            "{what}: the returning source is the stream's second source connection: {returned}"
        );
    });
}

#[test]
fn a_listener_that_stops_reading_is_evicted_or_skipped_by_policy_while_a_reading_one_gets_every_page(
) {
    for_each_driver(|driver| {
        for policy in ["disconnect", "skip"] {
            eprintln!("--- lagging_listener_policy = {policy}");
            let world = LiveWorld::start(
                driver,
                &[
                    ("VEZA_LIVE_BURST_BYTES", "4096"),
                    ("VEZA_LIVE_LISTENER_QUEUE_BYTES_MAX", "8192"),
                    ("VEZA_LIVE_LAGGING_LISTENER_POLICY", policy),
                    SHORT_GRACE,
                    PAGES_200_MS,
                ],
            );
            let key = world.create_stream(STREAM, "Veza Test Radio");
            let addr = world.server.addr();
            // 128 kb/s sent six times faster than real time, so a stalled
            // listener falls behind in seconds.
            let mut encoder = ogg_opus_encoder(NOISE, 60, 128, false);
            let mut source = RawSource::connect(addr, &SourceRequest::ogg(STREAM, &key));
            source.pump(
                Box::new(encoder.take_stdout()),
                Pace::BytesPerSecond(96 * 1024),
            );
            world.wait_until_live(STREAM);
            let reader = world.listen(LISTEN_PATH);
            reader.wait_for_more_than(0, Duration::from_secs(5));
            let stalled = StalledListener::connect(addr, LISTEN_PATH);

            let counted = if policy == "disconnect" {
                "evictions"
            } else {
                "skips"
            };
            let status = world.wait_for_status(
                STREAM,
                Duration::from_secs(10),
                &format!("the stalled listener is counted in {counted}"),
                |status| status[counted].as_u64().unwrap_or(0) >= 1,
            );
            let metrics = world.metrics();
            assert!(
                limit_hits(&metrics, "live_listener_queue") >= 1.0,
                "{}",
                metrics.lines_of("veza_limit_hits_total")
            );
            let series = format!("veza_live_{counted}_total");
            assert!(
                metrics.value(&series, &[("stream", STREAM)]).unwrap_or(0.0) >= 1.0,
                "{}",
                metrics.lines_of(&series)
            );
            if policy == "disconnect" {
                assert_eq!(u64_at(&status, "skips"), 0, "{status}");
                world.wait_for_status(
                    STREAM,
                    Duration::from_secs(2),
                    "one listener left",
                    |status| status["listeners"] == 1,
                );
                let (raw, end) = stalled.drain(Duration::from_secs(10));
                assert!(
                    matches!(end, CaptureEnd::ClosedByServer | CaptureEnd::Reset(_)),
                    "the evicted listener's connection ends: {end:?} after {} bytes",
                    raw.len()
                );
                assert_eq!(split_response(&raw).0, 200);
                source.drop_connection();
            } else {
                assert_eq!(u64_at(&status, "evictions"), 0, "{status}");
                assert_eq!(
                    u64_at(&status, "listeners"),
                    2,
                    "the skipped listener stays: {status}"
                );
                source.drop_connection();
                let (raw, end) = stalled.drain(Duration::from_secs(15));
                assert_eq!(end, CaptureEnd::ClosedByServer, "after {} bytes", raw.len());
                let (status, _, body) = split_response(&raw);
                assert_eq!(status, 200);
                let what = "skipped listener";
                let stream = live_ogg(&body, what);
                assert_eq!(
                    stream.complete_bytes,
                    body.len(),
                    "{what}: whole pages only"
                );
                assert!(
                    !stream.seq_gaps.is_empty(),
                    "{what}: skipped pages leave a gap"
                );
                assert!(stream.ends_with_eos, "{what}: still there for the end");
            }
            drop(encoder);
            let capture = reader.wait_for_end(Duration::from_secs(5));
            // It joined mid-stream (a 4 KiB burst), which every tool accepts.
            let what = format!("reading listener with policy {policy}");
            assert_complete_valid_capture(&world, &capture, &what);
        }
    });
}

/// A request with a credential on a new connection.
fn request_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    credential: &Credential,
    json_body: Option<&str>,
) -> Response {
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(value) = credential.authorization() {
        raw.push_str(&format!("Authorization: {value}\r\n"));
    }
    let body = json_body.unwrap_or("");
    if json_body.is_some() {
        raw.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    HttpConnection::open(addr).request(raw.as_bytes())
}

#[test]
fn status_metadata_and_metrics_describe_a_live_stream() {
    for_each_driver(|driver| {
        let world = LiveWorld::start(driver, &[SHORT_GRACE]);
        let key = world.create_stream(STREAM, "Morning Show");
        let addr = world.server.addr();
        let all = world.server.get("/v1/live");
        assert_eq!(all.status, 200, "{}", all.body_text());
        assert_eq!(all.json(), serde_json::json!({"streams": []}));
        assert!(world.stream_status(STREAM).is_none());

        let started = support::live::unix_now_ms();
        let mut source = RawSource::connect(addr, &SourceRequest::pcm(STREAM, &key));
        source.pump_encoder(pcm_encoder(SINE, 20));
        let status = world.wait_until_live(STREAM);
        assert_eq!(status["name"], STREAM, "{status}");
        assert!(u64_at(&status, "stream_id") > 0, "{status}");
        assert_eq!(status["title"], "Morning Show", "{status}");
        assert!(
            status["description"].is_string() && status["genre"].is_string(),
            "{status}"
        );
        assert!(status["public"].is_boolean(), "{status}");
        assert_eq!(status["now_playing"], "", "{status}");
        let source_status = &status["source"];
        assert_eq!(source_status["state"], "live", "{status}");
        assert_eq!(source_status["content_type"], "audio/L16", "{status}");
        assert!(
            u64_at(source_status, "connected_at_ms") >= started - 1000,
            "{status}"
        );
        assert_eq!(u64_at(source_status, "connections"), 1, "{status}");
        assert!(
            u64_at(&status, "started_at_ms") >= started - 1000,
            "{status}"
        );
        for counter in [
            "listeners",
            "peak_listeners",
            "listener_connections",
            "skips",
            "evictions",
        ] {
            assert_eq!(u64_at(&status, counter), 0, "{counter}: {status}");
        }
        assert!(u64_at(&status, "pages") >= 1, "{status}");
        u64_at(&status, "bytes_out");

        let listeners = [
            world.listen("/v1/live/radio?br=64"),
            world.listen("/v1/live/radio?br=64"),
            world.listen(LISTEN_PATH),
            world.listen("/v1/live/radio?br=160"),
        ];
        for listener in &listeners {
            assert_eq!(listener.wait_for_head(Duration::from_secs(5)), 200);
        }
        let status =
            world.wait_for_status(STREAM, Duration::from_secs(3), "4 listeners", |status| {
                status["listeners"] == 4
            });
        let per_rendition = |status: &Value| -> Vec<(u64, u64)> {
            status["renditions"]
                .as_array()
                .expect("renditions")
                .iter()
                .map(|rendition| {
                    (
                        u64_at(rendition, "bitrate_kbps"),
                        u64_at(rendition, "listeners"),
                    )
                })
                .collect()
        };
        assert_eq!(
            per_rendition(&status),
            vec![(64, 2), (96, 1), (160, 1)],
            "{status}"
        );
        assert_eq!(u64_at(&status, "peak_listeners"), 4, "{status}");
        assert_eq!(u64_at(&status, "listener_connections"), 4, "{status}");
        let all = world.server.get("/v1/live").json();
        let listed = all["streams"].as_array().expect("streams");
        assert_eq!(listed.len(), 1, "{all}");
        assert_eq!(listed[0]["name"], STREAM, "{all}");
        assert_eq!(listed[0]["listeners"], 4, "{all}");

        let metrics = world.metrics();
        for (bitrate, count) in [("64", 2.0), ("96", 1.0), ("160", 1.0)] {
            assert_eq!(
                metrics.value(
                    "veza_live_listeners",
                    &[("stream", STREAM), ("bitrate_kbps", bitrate)]
                ),
                Some(count),
                "{}",
                metrics.lines_of("veza_live_listeners")
            );
        }
        for (series, value) in [
            ("veza_live_source_connected", 1.0),
            ("veza_live_skips_total", 0.0),
            ("veza_live_evictions_total", 0.0),
        ] {
            assert_eq!(
                metrics.value(series, &[("stream", STREAM)]),
                Some(value),
                "{}",
                metrics.lines_of(series)
            );
        }

        // HEAD: the listener's headers, no body, not a listener.
        let mut connection = HttpConnection::open(addr);
        connection.send(b"HEAD /v1/live/radio?br=64 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let head = connection.read_response_to_head();
        assert_eq!(head.status, 200, "{head:?}");
        assert_eq!(head.header("content-type"), Some("audio/ogg"), "{head:?}");
        assert_eq!(head.header("x-veza-bitrate"), Some("64"), "{head:?}");
        assert_eq!(head.header("icy-name"), Some("Morning Show"), "{head:?}");
        connection.assert_closed_by_server(Duration::from_secs(3));

        let [first_64, second_64, default, high] = listeners;
        drop(second_64.stop());
        let status =
            world.wait_for_status(STREAM, Duration::from_secs(3), "3 listeners", |status| {
                status["listeners"] == 3
            });
        assert_eq!(
            per_rendition(&status),
            vec![(64, 1), (96, 1), (160, 1)],
            "{status}"
        );
        assert_eq!(u64_at(&status, "peak_listeners"), 4, "{status}");
        assert_eq!(
            u64_at(&status, "listener_connections"),
            4,
            "HEAD is no listener: {status}"
        );
        assert!(u64_at(&status, "bytes_out") > 0, "{status}");

        // Now playing: the JSON endpoint with the key or the owner's token,
        // and Icecast's admin endpoint.
        let metadata = "/v1/live/radio/metadata";
        let with_key = Credential::StreamKey(key.clone());
        let answer = request_with(
            addr,
            "POST",
            metadata,
            &with_key,
            Some(r#"{"title":"Artist - First Song"}"#),
        );
        assert_eq!(answer.status, 200, "{}", answer.body_text());
        let status = world.stream_status(STREAM).expect("live");
        assert_eq!(status["now_playing"], "Artist - First Song", "{status}");
        let wrong = Credential::StreamKey("vzs_not-the-key".to_owned());
        assert_asks_for_credentials(&request_with(
            addr,
            "POST",
            metadata,
            &wrong,
            Some(r#"{"title":"x"}"#),
        ));
        let owner = Credential::Bearer(world.admin_token.clone());
        let answer = request_with(
            addr,
            "POST",
            metadata,
            &owner,
            Some(r#"{"title":"Artist - Token Song"}"#),
        );
        assert_eq!(answer.status, 200, "{}", answer.body_text());
        let status = world.stream_status(STREAM).expect("live");
        assert_eq!(status["now_playing"], "Artist - Token Song", "{status}");
        let icecast =
            "/admin/metadata?mount=/v1/live/radio&mode=updinfo&song=Artist%20-%20Second%20Song";
        let answer = request_with(addr, "GET", icecast, &with_key, None);
        assert_eq!(answer.status, 200, "{}", answer.body_text());
        let status = world.stream_status(STREAM).expect("live");
        assert_eq!(status["now_playing"], "Artist - Second Song", "{status}");

        // The source drops: grace, then the end.
        source.drop_connection();
        world.wait_for_status(
            STREAM,
            Duration::from_secs(2),
            "the grace period",
            |status| status["source"]["state"] == "grace",
        );
        let metrics = world.metrics();
        assert_eq!(
            metrics.value("veza_live_source_connected", &[("stream", STREAM)]),
            Some(0.0),
            "{}",
            metrics.lines_of("veza_live_source_connected")
        );
        world.wait_until_offline(STREAM, Duration::from_secs(5));
        assert_eq!(
            world.server.get("/v1/live").json(),
            serde_json::json!({"streams": []})
        );
        for listener in [first_64, default, high] {
            let capture = listener.wait_for_end(Duration::from_secs(3));
            live_ogg(&capture.body, "status listener").assert_continuous("status listener");
        }
    });
}
