//! Now-playing titles reach chat clients as `NowPlaying` events (protocol
//! v1, `WatchStream`), on both drivers with two shards: a title set over
//! REST or Icecast's `/admin/metadata` on whichever shard reaches the
//! watchers on every shard; a late watcher gets the current title right
//! after its `Ok`; an unwatched connection hears nothing more; bad names
//! and the per-connection limit are refused; and the listeners' Ogg stream
//! is never re-chained for a title (one logical stream, one BOS page).

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use support::chat::{frames_within, next_non_ephemeral, ChatWorld, STEP};
use support::http::HttpConnection;
use support::{for_each_driver, Driver, TestRuntime};
use veza_bench::chat_client::ChatClient;
use veza_proto::chat::{ClientFrame, ErrorCode, ServerFrame, WATCHED_STREAMS_MAX};

/// The stream every scenario broadcasts.
const STREAM: &str = "radio";
/// How long the ffmpeg encode of the test tone may take.
const ENCODE_TIMEOUT: Duration = Duration::from_secs(30);
/// Source bytes written per pacing tick (64 kb/s Opus is about 8 KB/s; this
/// runs at 1.5× real time so the owner never waits for audio).
const SOURCE_BYTES_PER_TICK: usize = 3 * 1024;
/// Pacing tick of the source.
const SOURCE_TICK: Duration = Duration::from_millis(250);
/// How long "nothing more arrives" is watched for.
const QUIET_WINDOW: Duration = Duration::from_millis(400);

#[test]
fn now_playing_reaches_watchers_on_every_shard_and_only_them() {
    let ogg = encode_test_tone();
    for_each_driver(|driver| {
        let runtime = TestRuntime::new();
        runtime.run(now_playing_scenario(driver, &ogg));
    });
}

#[test]
fn bad_stream_names_and_the_watch_limit_are_refused() {
    for_each_driver(|driver| {
        let runtime = TestRuntime::new();
        runtime.run(async {
            let world = ChatWorld::start(driver, &[]).await;
            let ana = world.user("ana").await;
            let mut client = client_on_shard(&world, &ana.access_token, None).await;
            refuses_bad_names(&mut client).await;
            refuses_past_the_limit(&mut client).await;
        });
    });
}

async fn now_playing_scenario(driver: Driver, ogg: &[u8]) {
    let world = ChatWorld::start(driver, &[]).await;
    let dj = world.user("deejay").await;
    let ana = world.user("ana").await;
    let key = create_stream(&world, &dj.access_token);
    let addr = world.server.addr();

    // Watching needs no live stream: `early` watches before the broadcast
    // and is sent nothing until a title is set.
    let mut early = client_on_shard(&world, &ana.access_token, Some(0)).await;
    early
        .watch_stream(STREAM, STEP)
        .await
        .expect("watch before live");
    assert_eq!(early.take_pending(), Vec::new());

    let source = tokio::task::block_in_place(|| PacedSource::start(addr, &key, ogg.to_vec()));
    let listener = tokio::task::block_in_place(|| OggListener::start(addr));
    // Live without a title: a watcher on the other shard gets only `Ok`.
    let mut other = client_on_shard(&world, &ana.access_token, Some(1)).await;
    other
        .watch_stream(STREAM, STEP)
        .await
        .expect("watch while live");
    assert_eq!(other.take_pending(), Vec::new());

    let first = set_title_over_rest(addr, &key, "Artist - Song");
    for client in [&mut early, &mut other] {
        expect_now_playing(client, "Artist - Song", first.clone()).await;
    }
    let second = set_title_over_icecast(addr, &key, "Other%20Song");
    for client in [&mut early, &mut other] {
        expect_now_playing(client, "Other Song", second.clone()).await;
    }
    let status = tokio::task::block_in_place(|| world.server.get("/v1/live/radio/status"));
    assert_eq!(status.json()["now_playing"], "Other Song");

    // A late watcher on `early`'s shard gets the current title (with the
    // time it was set) right after its `Ok`, and nothing before it.
    let mut late = client_on_shard(&world, &ana.access_token, Some(0)).await;
    late.watch_stream(STREAM, STEP).await.expect("late watch");
    assert_eq!(late.take_pending(), Vec::new(), "nothing before the Ok");
    let current = next_non_ephemeral(&mut late).await;
    let ServerFrame::NowPlaying {
        title,
        updated_at_ms,
        ..
    } = &current
    else {
        panic!("expected the current NowPlaying right after Ok, got {current:?}");
    };
    assert_eq!(title, "Other Song");
    assert!(
        second.contains(updated_at_ms),
        "{updated_at_ms} vs {second:?}"
    );

    // After `Ok` of UnwatchStream, nothing more; `late` (same shard) proves
    // the update was delivered there.
    early.unwatch_stream(STREAM, STEP).await.expect("unwatch");
    early
        .unwatch_stream(STREAM, STEP)
        .await
        .expect("unwatching again is Ok");
    let third = set_title_over_rest(addr, &key, "Third Song");
    for client in [&mut late, &mut other] {
        expect_now_playing(client, "Third Song", third.clone()).await;
    }
    assert_no_now_playing(&mut early).await;

    // A closed watcher leaves the lists; the others keep receiving.
    other.close(1000, STEP).await.expect("close");
    let fourth = set_title_over_rest(addr, &key, "");
    expect_now_playing(&mut late, "", fourth).await;

    let pages = tokio::task::block_in_place(|| listener.stop());
    assert_one_logical_stream(&pages);
    drop(source);
}

/// Bad names are `invalid` for both commands; the longest valid name works.
async fn refuses_bad_names(client: &mut ChatClient) {
    let too_long = "x".repeat(veza_proto::chat::STREAM_NAME_BYTES_MAX + 1);
    for bad in ["", "Radio", "-radio", "a/b", "radio!", too_long.as_str()] {
        let watch = client.watch_stream(bad, STEP).await;
        assert_eq!(
            watch.map_err(|error| error.error_code()),
            Err(Some(ErrorCode::Invalid)),
            "WatchStream {bad:?}"
        );
        let unwatch = client.unwatch_stream(bad, STEP).await;
        assert_eq!(
            unwatch.map_err(|error| error.error_code()),
            Err(Some(ErrorCode::Invalid)),
            "UnwatchStream {bad:?}"
        );
    }
    let longest = "y".repeat(veza_proto::chat::STREAM_NAME_BYTES_MAX);
    client.watch_stream(&longest, STEP).await.expect("64 bytes");
    client
        .unwatch_stream(&longest, STEP)
        .await
        .expect("unwatch");
}

/// `WATCHED_STREAMS_MAX` watches, then `too_many_subscriptions`; watching
/// one again is no new watch; unwatching frees a place.
async fn refuses_past_the_limit(client: &mut ChatClient) {
    for index in 0..WATCHED_STREAMS_MAX {
        client
            .watch_stream(&format!("stream-{index}"), STEP)
            .await
            .unwrap_or_else(|error| panic!("watch {index}: {error}"));
    }
    let past = format!("stream-{WATCHED_STREAMS_MAX}");
    let refused = client.watch_stream(&past, STEP).await;
    assert_eq!(
        refused.map_err(|error| error.error_code()),
        Err(Some(ErrorCode::TooManySubscriptions))
    );
    client
        .watch_stream("stream-3", STEP)
        .await
        .expect("watching again is not a new watch");
    client
        .unwatch_stream("stream-0", STEP)
        .await
        .expect("unwatch");
    client
        .watch_stream(&past, STEP)
        .await
        .expect("a place is free");
    // The raw reply carries the request id of the command.
    let request_id = client.next_request_id();
    client
        .send(&ClientFrame::WatchStream {
            request_id,
            stream: "one-too-many".into(),
        })
        .await
        .unwrap();
    match next_non_ephemeral(client).await {
        ServerFrame::Error {
            request_id: answered,
            code: ErrorCode::TooManySubscriptions,
            ..
        } => assert_eq!(answered, request_id),
        other => panic!("expected too_many_subscriptions, got {other:?}"),
    }
}

/// Connects and authenticates until the connection lands on `shard` (any
/// shard for `None`); the kernel picks each connection's shard.
async fn client_on_shard(world: &ChatWorld, token: &str, shard: Option<u64>) -> ChatClient {
    for _attempt in 0..64 {
        let mut client = ChatClient::connect(&world.url()).await.expect("connect");
        let identity = client.authenticate(token, STEP).await.expect("auth");
        // The connection id carries the shard in its top 16 bits.
        let on_shard = identity.connection_id >> 48;
        if shard.is_none_or(|wanted| wanted == on_shard) {
            return client;
        }
        client.close(1000, STEP).await.expect("close");
    }
    panic!("64 connections never reached shard {shard:?}");
}

/// `POST /v1/streams` on the control plane; the stream key.
fn create_stream(world: &ChatWorld, token: &str) -> String {
    let (status, body) = tokio::task::block_in_place(|| {
        world.control.rest(
            "POST",
            "/v1/streams",
            Some(token),
            json!({"name": STREAM, "title": "Radio"}),
        )
    });
    assert_eq!(status, 201, "POST /v1/streams: {body}");
    body["stream_key"].as_str().expect("stream_key").to_owned()
}

fn basic_auth(key: &str) -> String {
    let credentials = format!("source:{key}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// Unix time in milliseconds.
fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// Sends `raw` on a new connection, expects 200; the Unix ms range the
/// server set the title in.
fn update_metadata(addr: SocketAddr, raw: &[u8]) -> std::ops::RangeInclusive<i64> {
    tokio::task::block_in_place(|| {
        let before_ms = unix_now_ms();
        let response = HttpConnection::open(addr).request(raw);
        assert_eq!(response.status, 200, "{}", response.body_text());
        before_ms..=unix_now_ms()
    })
}

/// `POST /v1/live/radio/metadata {"title"}` with the stream key.
fn set_title_over_rest(addr: SocketAddr, key: &str, title: &str) -> std::ops::RangeInclusive<i64> {
    let body = json!({ "title": title }).to_string();
    let raw = format!(
        "POST /v1/live/{STREAM}/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        basic_auth(key),
        body.len()
    );
    update_metadata(addr, raw.as_bytes())
}

/// Icecast's `GET /admin/metadata?mount=...&mode=updinfo&song=...`.
fn set_title_over_icecast(
    addr: SocketAddr,
    key: &str,
    song_escaped: &str,
) -> std::ops::RangeInclusive<i64> {
    let raw = format!(
        "GET /admin/metadata?mount=/v1/live/{STREAM}&mode=updinfo&song={song_escaped} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\n\r\n",
        basic_auth(key)
    );
    update_metadata(addr, raw.as_bytes())
}

/// The next frame (presence and typing aside) is `NowPlaying` of the
/// stream with `title`, set within `set_within`.
async fn expect_now_playing(
    client: &mut ChatClient,
    title: &str,
    set_within: std::ops::RangeInclusive<i64>,
) {
    match next_non_ephemeral(client).await {
        ServerFrame::NowPlaying {
            stream,
            title: got,
            updated_at_ms,
        } => {
            assert_eq!((stream.as_str(), got.as_str()), (STREAM, title));
            assert!(
                set_within.contains(&updated_at_ms),
                "updated_at_ms {updated_at_ms} outside {set_within:?}"
            );
        }
        other => panic!("expected NowPlaying {title:?}, got {other:?}"),
    }
}

async fn assert_no_now_playing(client: &mut ChatClient) {
    let frames = frames_within(client, QUIET_WINDOW).await;
    assert!(
        !frames
            .iter()
            .any(|frame| matches!(frame, ServerFrame::NowPlaying { .. })),
        "an unwatched stream's title arrived: {frames:?}"
    );
}

/// A 30 s 440 Hz tone as Ogg Opus at 64 kb/s, from ffmpeg.
fn encode_test_tone() -> Vec<u8> {
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi"])
        .args(["-i", "sine=frequency=440:duration=30"])
        .args(["-c:a", "libopus", "-b:a", "64k", "-f", "ogg", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run ffmpeg (it must be installed)");
    let mut stdout = child.stdout.take().expect("ffmpeg stdout");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).map(|_| bytes)
    });
    let deadline = Instant::now() + ENCODE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll ffmpeg") {
            break status;
        }
        if Instant::now() >= deadline {
            // Kills this child by its handle (its pid), nothing else.
            let _ = child.kill();
            let _ = child.wait();
            panic!("ffmpeg did not finish within {ENCODE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "ffmpeg failed: {status}");
    let bytes = reader
        .join()
        .expect("reader thread")
        .expect("ffmpeg output");
    assert!(bytes.starts_with(b"OggS"), "ffmpeg wrote Ogg");
    bytes
}

/// A source on `PUT /v1/live/radio` whose body a thread writes at 1.5× real
/// time until the audio ends or the source is dropped.
struct PacedSource {
    stop: Arc<AtomicBool>,
    pump: Option<JoinHandle<()>>,
}

impl PacedSource {
    /// Connects, waits for `100 Continue` (the owner took the stream), then
    /// starts the pump.
    fn start(addr: SocketAddr, key: &str, ogg: Vec<u8>) -> PacedSource {
        let mut connection = HttpConnection::open(addr);
        let head = format!(
            "PUT /v1/live/{STREAM} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nContent-Type: audio/ogg\r\nExpect: 100-continue\r\n\r\n",
            basic_auth(key)
        );
        let answer = connection.request(head.as_bytes());
        assert_eq!(answer.status, 100, "the source is accepted");
        let (mut socket, _) = connection.into_parts();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let pump = std::thread::spawn(move || {
            for chunk in ogg.chunks(SOURCE_BYTES_PER_TICK) {
                if stop_flag.load(Ordering::Relaxed) || socket.write_all(chunk).is_err() {
                    return;
                }
                std::thread::sleep(SOURCE_TICK);
            }
        });
        PacedSource {
            stop,
            pump: Some(pump),
        }
    }
}

impl Drop for PacedSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(pump) = self.pump.take() {
            let _ = pump.join();
        }
    }
}

/// A listener on `GET /v1/live/radio` whose thread keeps every byte.
struct OggListener {
    stop: Arc<AtomicBool>,
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl OggListener {
    fn start(addr: SocketAddr) -> OggListener {
        let mut socket = TcpStream::connect_timeout(&addr, STEP).expect("connect a listener");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        socket
            .write_all(b"GET /v1/live/radio HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("listener request");
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (stop_flag, kept) = (stop.clone(), bytes.clone());
        let reader = std::thread::spawn(move || {
            let mut buffer = [0_u8; 16 * 1024];
            // Bounded by the stop flag (checked every read timeout).
            while !stop_flag.load(Ordering::Relaxed) {
                match socket.read(&mut buffer) {
                    Ok(0) => return,
                    Ok(read) => kept.lock().unwrap().extend_from_slice(&buffer[..read]),
                    Err(error) if support::http::is_timeout(&error) => {}
                    Err(_) => return,
                }
            }
        });
        OggListener {
            stop,
            bytes,
            reader: Some(reader),
        }
    }

    /// Stops reading; the Ogg pages received (the HTTP head removed).
    fn stop(mut self) -> Vec<u8> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let bytes = std::mem::take(&mut *self.bytes.lock().unwrap());
        let head_end = bytes
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .expect("the listener got a response head");
        assert!(bytes.starts_with(b"HTTP/1.1 200"), "listener answered 200");
        bytes[head_end + 4..].to_vec()
    }
}

impl Drop for OggListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The listener's bytes are whole Ogg pages of one logical stream: one BOS
/// page first, one serial, no EOS; title updates did not chain a new one.
fn assert_one_logical_stream(pages: &[u8]) {
    let mut offset = 0;
    let mut serials = Vec::new();
    let mut bos_pages = 0;
    let mut page_count = 0;
    // Bounded by the bytes: every page advances `offset` by at least 27.
    while offset + 27 <= pages.len() {
        let page = &pages[offset..];
        assert_eq!(&page[..4], b"OggS", "a page starts at byte {offset}");
        let header_type = page[5];
        let serial = u32::from_le_bytes(page[14..18].try_into().unwrap());
        let segment_count = page[26] as usize;
        if page.len() < 27 + segment_count {
            break;
        }
        let body_bytes: usize = page[27..27 + segment_count]
            .iter()
            .map(|&lacing| lacing as usize)
            .sum();
        let page_bytes = 27 + segment_count + body_bytes;
        if page.len() < page_bytes {
            break;
        }
        if header_type & 0x02 != 0 {
            bos_pages += 1;
        }
        assert_eq!(header_type & 0x04, 0, "no EOS page while the source sends");
        if !serials.contains(&serial) {
            serials.push(serial);
        }
        page_count += 1;
        offset += page_bytes;
    }
    assert!(
        page_count > 2,
        "the listener heard audio ({page_count} pages)"
    );
    assert_eq!(bos_pages, 1, "one BOS page: no chained stream for a title");
    assert_eq!(serials.len(), 1, "one serial: {serials:?}");
}
