//! Tracks on demand (`/v1/tracks/{id}/audio`, `/waveform`): ranges,
//! conditional requests, access rules, plays and invalidation, against a
//! real control plane that transcoded a real upload, on both drivers.

mod support;

use std::time::Duration;

use support::http::HttpConnection;
use support::tracks::{curl, sine_wav, TracksWorld};
use support::{eventually, for_each_driver, TestServer};

#[test]
fn tracks_are_refused_cleanly_when_disabled_unreachable_or_asked_for_a_bad_path() {
    for_each_driver(|driver| {
        let disabled = TestServer::start(driver, &[]);
        disabled
            .get("/v1/tracks/1/audio")
            .assert_error(503, "tracks_unavailable");
        drop(disabled);

        let media = tempfile::tempdir().unwrap();
        let server = TestServer::start(
            driver,
            &[("VEZA_TRACKS_MEDIA_DIR", media.path().to_str().unwrap())],
        );
        for (path, status, error) in [
            ("/v1/tracks/../../etc/passwd", 400, "invalid_track_id"),
            (
                "/v1/tracks/%2e%2e/%2e%2e/etc/passwd",
                400,
                "invalid_track_id",
            ),
            ("/v1/tracks/abc/audio", 400, "invalid_track_id"),
            ("/v1/tracks/-1/audio", 400, "invalid_track_id"),
            ("/v1/tracks/0/audio", 400, "invalid_track_id"),
            ("/v1/tracks/1/../../../etc/passwd", 404, "not_found"),
            (
                "/v1/tracks/1/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                404,
                "not_found",
            ),
            ("/v1/tracks/1/audio", 503, "control_plane_unavailable"),
        ] {
            let mut connection = HttpConnection::open(server.addr());
            let response = connection.request(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            );
            response.assert_error(status, error);
        }
        let mut connection = HttpConnection::open(server.addr());
        connection
            .request(b"DELETE /v1/tracks/1/audio HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .assert_error(405, "method_not_allowed");
    });
}

#[test]
fn tracks_are_served_with_ranges_conditions_access_rules_and_plays() {
    for_each_driver(|driver| {
        let world = TracksWorld::start(driver, &[]);
        let wav = sine_wav(3);
        let public = world.upload_ready(&wav, "public");
        let track_id = public["id"].as_i64().unwrap();
        let file = world.rendition_file(track_id, 96);
        let size = file.len();
        let audio = format!("/v1/tracks/{track_id}/audio");

        // A full GET is the file on disk, byte for byte, with every header.
        let full = world.get(&audio, &[]);
        assert_eq!(full.status, 200, "{}", full.body_text());
        assert_eq!(full.body, file);
        assert_eq!(full.header("content-type"), Some("audio/ogg"));
        assert_eq!(full.header("accept-ranges"), Some("bytes"));
        assert_eq!(
            full.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        let etag = full.header("etag").expect("ETag").to_owned();
        let last_modified = full
            .header("last-modified")
            .expect("Last-Modified")
            .to_owned();

        // HEAD: the same head, no body.
        let head = world.request("HEAD", &audio, &[]);
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some(size.to_string().as_str())
        );
        assert_eq!(head.header("etag"), Some(etag.as_str()));
        assert!(head.body.is_empty());

        // Ranges.
        let last = size - 1;
        for (range, start, end) in [
            ("bytes=0-99", 0, 100),
            ("bytes=100-", 100, size),
            ("bytes=-500", size - 500, size),
            ("bytes=0-0", 0, 1),
        ] {
            let partial = world.get(&audio, &[("Range", range)]);
            assert_eq!(partial.status, 206, "{range}");
            assert_eq!(partial.body, &file[start..end], "{range}");
            assert_eq!(
                partial.header("content-range"),
                Some(format!("bytes {start}-{}/{size}", end - 1).as_str())
            );
        }
        let beyond = world.get(&audio, &[("Range", &format!("bytes={size}-"))]);
        assert_eq!(beyond.status, 416);
        assert_eq!(
            beyond.header("content-range"),
            Some(format!("bytes */{size}").as_str())
        );
        for whole in ["bytes=0-1,5-6", "bytes=abc", "bytes=5-1"] {
            let response = world.get(&audio, &[("Range", whole)]);
            assert_eq!(response.status, 200, "{whole}");
            assert_eq!(response.body, file, "{whole}");
        }
        let not_modified = world.get(&audio, &[("If-None-Match", &etag)]);
        assert_eq!(not_modified.status, 304);
        assert_eq!(
            not_modified.header("content-length"),
            None,
            "a 304 does not claim an empty representation"
        );
        assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
        let if_range_hit = world.get(&audio, &[("Range", "bytes=0-9"), ("If-Range", &etag)]);
        assert_eq!(if_range_hit.status, 206);
        let if_range_date = world.get(
            &audio,
            &[("Range", "bytes=0-9"), ("If-Range", &last_modified)],
        );
        assert_eq!(if_range_date.status, 206);
        let if_range_miss = world.get(&audio, &[("Range", "bytes=0-9"), ("If-Range", "\"old\"")]);
        assert_eq!(if_range_miss.status, 200);
        assert_eq!(if_range_miss.body.len(), size);
        let _ = last;

        // ?br= picks the nearest rendition.
        let low = world.get(&format!("{audio}?br=60"), &[]);
        assert_eq!(low.body, world.rendition_file(track_id, 64));
        let high = world.get(&format!("{audio}?br=500"), &[]);
        assert_eq!(high.body, world.rendition_file(track_id, 160));

        // curl agrees.
        let url = format!("http://127.0.0.1:{}{audio}", world.server.port());
        let (status, _, body) = curl(&[&url]);
        assert_eq!((status, body.len()), (200, size));
        assert_eq!(body, file);
        let (status, headers, body) = curl(&["-r", "10-19", &url]);
        assert_eq!(status, 206);
        assert_eq!(body, &file[10..20]);
        assert!(headers.iter().any(
            |(name, value)| name == "content-range" && *value == format!("bytes 10-19/{size}")
        ));

        // Waveform.
        let waveform = world.get(&format!("/v1/tracks/{track_id}/waveform"), &[]);
        assert_eq!(waveform.status, 200);
        assert_eq!(waveform.header("content-type"), Some("application/json"));
        let _ = waveform.json();
        let waveform_etag = waveform.header("etag").unwrap().to_owned();
        let again = world.get(
            &format!("/v1/tracks/{track_id}/waveform"),
            &[("If-None-Match", &waveform_etag)],
        );
        assert_eq!(again.status, 304);

        // Unlisted: only with the link secret (or the owner).
        let unlisted = world.upload_ready(&wav, "unlisted");
        let unlisted_id = unlisted["id"].as_i64().unwrap();
        let secret = unlisted["link_secret"]
            .as_str()
            .expect("owner sees link_secret");
        let unlisted_audio = format!("/v1/tracks/{unlisted_id}/audio");
        world
            .get(&unlisted_audio, &[])
            .assert_error(404, "track_not_found");
        world
            .get(&format!("{unlisted_audio}?s=wrong"), &[])
            .assert_error(404, "track_not_found");
        assert_eq!(
            world
                .get(&format!("{unlisted_audio}?s={secret}"), &[])
                .status,
            200
        );
        let unlisted_response = world.get(&format!("{unlisted_audio}?s={secret}"), &[]);
        assert_eq!(
            unlisted_response.header("cache-control"),
            Some("private, max-age=0")
        );

        // Private: the owner's token or a signed URL.
        let private = world.upload_ready(&wav, "private");
        let private_id = private["id"].as_i64().unwrap();
        let private_audio = format!("/v1/tracks/{private_id}/audio");
        world
            .get(&private_audio, &[])
            .assert_error(404, "track_not_found");
        let bearer = format!("Bearer {}", world.owner_token);
        assert_eq!(
            world
                .get(&private_audio, &[("Authorization", &bearer)])
                .status,
            200
        );
        let other_token = {
            let (status, body) = world.control.rest(
                "POST",
                "/v1/accounts",
                None,
                serde_json::json!({"username": "listener", "email": "l@example.org", "password": "oboe-cello-9-flute"}),
            );
            assert_eq!(status, 201, "{body}");
            let (_, body) = world.control.rest(
                "POST",
                "/v1/sessions",
                None,
                serde_json::json!({"login": "listener", "password": "oboe-cello-9-flute"}),
            );
            body["access_token"].as_str().unwrap().to_owned()
        };
        world
            .get(
                &private_audio,
                &[("Authorization", &format!("Bearer {other_token}"))],
            )
            .assert_error(404, "track_not_found");
        let signed = world.signed_url(private_id, 60);
        assert_eq!(world.get(&signed, &[]).status, 200);
        let tampered = if signed.ends_with('A') {
            format!("{}B", &signed[..signed.len() - 1])
        } else {
            format!("{}A", &signed[..signed.len() - 1])
        };
        world
            .get(&tampered, &[])
            .assert_error(403, "signed_url_invalid");
        let expiring = world.signed_url(private_id, 1);
        std::thread::sleep(Duration::from_millis(2100));
        world
            .get(&expiring, &[])
            .assert_error(403, "signed_url_expired");

        // Plays: GETs from byte 0 reach the control plane.
        let before = world.track(track_id).1["play_count"].as_i64().unwrap();
        assert_eq!(world.get(&audio, &[]).status, 200);
        assert_eq!(world.get(&audio, &[("Range", "bytes=0-99")]).status, 206);
        assert_eq!(world.get(&audio, &[("Range", "bytes=100-")]).status, 206);
        eventually(Duration::from_secs(10), "plays are recorded", || {
            let count = world.track(track_id).1["play_count"].as_i64().unwrap();
            (count >= before + 2)
                .then_some(())
                .ok_or(format!("play_count {count}"))
        });

        // TrackChanged: a deleted track is gone on the next GET.
        let (status, body) = world.control.rest(
            "DELETE",
            &format!("/v1/tracks/{track_id}"),
            Some(&world.owner_token),
            serde_json::Value::Null,
        );
        assert!(status == 204 || status == 200, "delete: {status} {body}");
        eventually(Duration::from_secs(5), "the deleted track is gone", || {
            let response = world.get(&audio, &[]);
            (response.status == 404)
                .then_some(())
                .ok_or(format!("status {}", response.status))
        });
    });
}

#[test]
fn plays_counted_since_the_last_report_reach_the_control_plane_at_shutdown() {
    for_each_driver(|driver| {
        // A report interval far longer than the test: only the shutdown
        // report can carry these plays.
        let mut world = TracksWorld::start(
            driver,
            &[("VEZA_TRACKS_PLAYS_REPORT_INTERVAL_MS", "3600000")],
        );
        let track = world.upload_ready(&sine_wav(2), "public");
        let track_id = track["id"].as_i64().unwrap();
        let audio = format!("/v1/tracks/{track_id}/audio");
        let before = world.track(track_id).1["play_count"].as_i64().unwrap();
        assert_eq!(world.get(&audio, &[]).status, 200);
        assert_eq!(world.get(&audio, &[("Range", "bytes=0-99")]).status, 206);
        assert_eq!(world.get(&audio, &[("Range", "bytes=100-")]).status, 206);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            world.track(track_id).1["play_count"].as_i64().unwrap(),
            before,
            "no report before the interval"
        );

        world.server.signal(libc::SIGTERM);
        let status = world
            .server
            .wait_for_exit(Duration::from_secs(15))
            .expect("the data plane stops on SIGTERM");
        assert!(status.success(), "{status:?}\n{}", world.server.log());
        assert_eq!(
            world.track(track_id).1["play_count"].as_i64().unwrap(),
            before + 2,
            "the two plays from byte 0 were reported at shutdown\n{}",
            world.server.log()
        );
    });
}

#[test]
fn concurrent_first_requests_for_a_track_share_one_lookup_per_shard() {
    for_each_driver(|driver| {
        let world = TracksWorld::start(driver, &[]);
        let track = world.upload_ready(&sine_wav(2), "public");
        let track_id = track["id"].as_i64().unwrap();
        let file = world.rendition_file(track_id, 96);
        let audio = format!("/v1/tracks/{track_id}/audio");
        const REQUESTS: usize = 8;

        // With the control plane stopped, every first request waits on a
        // lookup; let them all arrive before it answers.
        world.control.signal(libc::SIGSTOP);
        let responses = std::thread::scope(|scope| {
            let requests: Vec<_> = (0..REQUESTS)
                .map(|_| scope.spawn(|| world.get(&audio, &[("Range", "bytes=0-99")])))
                .collect();
            let waiting = eventually(Duration::from_secs(10), "every request waits", || {
                let metrics = world.server.metrics();
                let sent = metrics.sum("veza_tracks_lookups_total", &[]);
                let shared = metrics.sum("veza_tracks_lookups_shared_total", &[]);
                (sent + shared == REQUESTS as f64)
                    .then_some((sent, shared))
                    .ok_or(format!("{sent} lookups, {shared} waiting on them"))
            });
            world.control.signal(libc::SIGCONT);
            let responses: Vec<_> = requests.into_iter().map(|r| r.join().unwrap()).collect();
            (waiting, responses)
        });
        let ((sent, shared), responses) = responses;
        assert!(
            sent >= 1.0 && sent <= world.server.shards() as f64,
            "one lookup per shard at most: {sent}"
        );
        assert_eq!(shared, REQUESTS as f64 - sent);
        for response in responses {
            assert_eq!(response.status, 206, "{}", response.body_text());
            assert_eq!(response.body, &file[..100]);
        }
        // The answer was cached: a later request sends no lookup.
        assert_eq!(world.get(&audio, &[]).status, 200);
        let metrics = world.server.metrics();
        assert_eq!(metrics.sum("veza_tracks_lookups_total", &[]), sent);
    });
}

/// The open files the data plane holds under `dir`, as `/proc` names them
/// (a deleted file ends in " (deleted)").
fn open_files_under(pid: u32, dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.starts_with(dir.to_str().unwrap()))
        .collect()
}

/// Drops `path`'s clean pages from the page cache, as memory pressure would.
fn evict_from_page_cache(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: fadvise on a descriptor we own.
    let result = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(result, 0, "posix_fadvise");
}

#[test]
fn cached_ranges_go_out_with_sendfile_cold_ones_through_buffers_and_kept_files_close_on_change() {
    for_each_driver(|driver| {
        let world = TracksWorld::start(driver, &[]);
        let media_dir = world.media_dir();
        // 40 s at 160 kb/s: far more than the socket buffers hold.
        let track = world.upload_ready(&sine_wav(40), "public");
        let track_id = track["id"].as_i64().unwrap();
        let audio = format!("/v1/tracks/{track_id}/audio?br=160");
        let file = world.rendition_file(track_id, 160);
        let rendition_path = media_dir.join(format!("tracks/{track_id}/160.opus"));
        let bodies = |kind: &str| {
            world
                .server
                .metrics()
                .sum(&format!("veza_tracks_{kind}_bodies_total"), &[])
        };

        // Cold: the range is read with io_uring into a pooled buffer.
        evict_from_page_cache(&rendition_path);
        let cold = world.get(&audio, &[("Range", "bytes=0-")]);
        assert_eq!(cold.status, 206);
        assert_eq!(cold.body, file);
        assert_eq!(bodies("buffered"), 1.0);
        assert_eq!(bodies("zero_copy"), 0.0);

        // Now cached: sendfile, the same bytes.
        for (range, start, end) in [
            ("bytes=0-65535", 0, 65_536),
            ("bytes=-1000", file.len() - 1000, file.len()),
        ] {
            let warm = world.get(&audio, &[("Range", range)]);
            assert_eq!(warm.status, 206, "{range}");
            assert_eq!(warm.body, &file[start..end], "{range}");
        }
        assert_eq!(bodies("zero_copy"), 2.0);

        // A client that stops reading fills the socket: the send waits for
        // it without holding up the shard, and the body arrives whole.
        let mut slow =
            support::http::HttpConnection::open_with_receive_buffer(world.server.addr(), 4096);
        slow.send(
            format!("GET {audio} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..world.server.shards() * 2 {
            let other = world.get(&audio, &[("Range", "bytes=0-99")]);
            assert_eq!(other.body, &file[..100], "others are served meanwhile");
        }
        let whole = slow.read_response();
        assert_eq!(whole.status, 200);
        assert_eq!(whole.body.len(), file.len());
        assert!(whole.body == file, "the stalled download is the file");

        // The file is kept open, once per shard at most.
        let kept = world.server.metrics().sum("veza_tracks_open_files", &[]);
        assert!(
            (1.0..=world.server.shards() as f64).contains(&kept),
            "{kept} open files"
        );
        assert!(!open_files_under(world.server.pid(), &media_dir).is_empty());

        // Deleting the track (TrackChanged) closes it: the disk space of a
        // deleted rendition is not held by the data plane.
        let (status, body) = world.control.rest(
            "DELETE",
            &format!("/v1/tracks/{track_id}"),
            Some(&world.owner_token),
            serde_json::Value::Null,
        );
        assert!(status == 204 || status == 200, "delete: {status} {body}");
        eventually(
            Duration::from_secs(5),
            "the deleted rendition is closed",
            || {
                let held = open_files_under(world.server.pid(), &media_dir);
                let kept = world.server.metrics().sum("veza_tracks_open_files", &[]);
                (held.is_empty() && kept == 0.0)
                    .then_some(())
                    .ok_or(format!("{kept} kept, holding {held:?}"))
            },
        );
        world.get(&audio, &[]).assert_error(404, "track_not_found");
    });
}

#[test]
fn with_zero_copy_and_the_open_file_cache_off_every_body_is_read_and_every_file_closed() {
    for_each_driver(|driver| {
        let world = TracksWorld::start(
            driver,
            &[
                ("VEZA_TRACKS_ZERO_COPY", "false"),
                ("VEZA_TRACKS_OPEN_FILES_MAX", "0"),
            ],
        );
        let track = world.upload_ready(&sine_wav(3), "public");
        let track_id = track["id"].as_i64().unwrap();
        let file = world.rendition_file(track_id, 96);
        let audio = format!("/v1/tracks/{track_id}/audio");
        for _ in 0..3 {
            let response = world.get(&audio, &[("Range", "bytes=10-")]);
            assert_eq!(response.status, 206);
            assert_eq!(response.body, &file[10..]);
        }
        let metrics = world.server.metrics();
        assert_eq!(metrics.sum("veza_tracks_buffered_bodies_total", &[]), 3.0);
        assert_eq!(metrics.sum("veza_tracks_zero_copy_bodies_total", &[]), 0.0);
        assert_eq!(metrics.sum("veza_tracks_open_files", &[]), 0.0);
        eventually(Duration::from_secs(5), "every file is closed", || {
            let held = open_files_under(world.server.pid(), &world.media_dir());
            held.is_empty().then_some(()).ok_or(format!("{held:?}"))
        });
    });
}

/// `O_NONBLOCK` of the data plane's end of the connection whose client
/// port is `client_port`, from `/proc/<pid>/net/tcp` and `fdinfo`.
fn server_socket_non_blocking(pid: u32, client_port: u16) -> bool {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    let remote = format!(":{client_port:04X}");
    let inode = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields[2].ends_with(&remote) && fields[1].starts_with("0100007F"))
        .map(|fields| fields[9].to_owned())
        .expect("the server's end of the connection");
    let socket = format!("socket:[{inode}]");
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        if std::fs::read_link(entry.path()).is_ok_and(|target| target.to_str() == Some(&socket)) {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().to_str().unwrap()
            ))
            .unwrap();
            let flags = info
                .lines()
                .find_map(|line| line.strip_prefix("flags:"))
                .map(|octal| i64::from_str_radix(octal.trim(), 8).unwrap())
                .unwrap();
            return flags & i64::from(libc::O_NONBLOCK) != 0;
        }
    }
    panic!("no descriptor of {socket}");
}

#[test]
fn a_connection_that_got_a_zero_copy_body_hands_websocket_a_socket_in_the_drivers_mode() {
    for_each_driver(|driver| {
        let world = TracksWorld::start(driver, &[]);
        let track = world.upload_ready(&sine_wav(3), "public");
        let track_id = track["id"].as_i64().unwrap();
        let file = world.rendition_file(track_id, 96);
        let mut connection = support::http::HttpConnection::open(world.server.addr());
        let client_port = connection.stream().local_addr().unwrap().port();
        let response = connection.request(
            format!("GET /v1/tracks/{track_id}/audio HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        assert_eq!(response.status, 200);
        assert_eq!(response.body, file);
        let metrics = world.server.metrics();
        assert_eq!(metrics.sum("veza_tracks_zero_copy_bodies_total", &[]), 1.0);
        let pid = world.server.pid();
        // sendfile needs a non-blocking socket: the epoll driver's always
        // is, io_uring's is switched for it.
        assert!(server_socket_non_blocking(pid, client_port));

        // The same connection becomes a WebSocket: io_uring's writers get
        // the blocking socket they expect, and a large echo (more than the
        // socket buffers hold) comes back whole.
        let (mut websocket, _) =
            support::raw_websocket::RawWebSocket::handshake_on(connection, &[]);
        assert_eq!(
            server_socket_non_blocking(pid, client_port),
            driver == support::Driver::Legacy,
            "{driver:?}"
        );
        let payload: Vec<u8> = (0..600_000u32).map(|idx| (idx % 251) as u8).collect();
        websocket.assert_echoes(&payload);
    });
}
