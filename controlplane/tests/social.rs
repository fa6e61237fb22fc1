//! The social features of tracks over REST: likes, follows, timed comments,
//! reposts and the feed, playlists and their order, per-track counts, and
//! the visibility rules across all of them. Tracks are uploaded through the
//! tracks API (a short WAV) and processed by the server before use. Every
//! test runs on SQLite and PostgreSQL.

mod rooms_support;
mod support;

use std::time::{Duration, Instant};

use rooms_support::{assert_error, call, register, User, FAST_HASHING};
use serde_json::{json, Value};
use support::{Backend, TestControlPlane, BACKENDS};

/// One second of a 440 Hz tone, 48 kHz mono 16-bit PCM, as a WAV file.
fn one_second_wav() -> Vec<u8> {
    let rate: u32 = 48_000;
    let samples: Vec<i16> = (0..rate)
        .map(|index| {
            let phase = index as f64 * 440.0 * std::f64::consts::TAU / f64::from(rate);
            (phase.sin() * 8_000.0) as i16
        })
        .collect();
    let data_bytes = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_bytes as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_bytes).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_bytes.to_le_bytes());
    for sample in samples {
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    wav
}

/// Uploads a track (`POST /v1/tracks`, raw WAV) and waits until it is
/// processed; returns its id.
async fn upload(server: &TestControlPlane, owner: &User, title: &str, visibility: &str) -> i64 {
    let response = server
        .http
        .post(server.url("/v1/tracks"))
        .query(&[("title", title), ("visibility", visibility)])
        .bearer_auth(&owner.token)
        .header("content-type", "audio/wav")
        .body(one_second_wav())
        .send()
        .await
        .expect("upload reaches the server");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 202, "upload {title}: {body}");
    let track_id = body["id"].as_i64().expect("track id");
    wait_ready(server, owner, track_id).await;
    track_id
}

async fn wait_ready(server: &TestControlPlane, owner: &User, track_id: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, track) = call(
            server,
            owner,
            "GET",
            &format!("/v1/tracks/{track_id}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{track}");
        match track["status"].as_str() {
            Some("ready") => return,
            Some("failed") => panic!("track {track_id} failed: {track}\n{}", server.log()),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "track {track_id} not ready: {track}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(backend: Backend, extra_env: &[(&str, &str)]) -> TestControlPlane {
    let mut env: Vec<(&str, &str)> = FAST_HASHING.to_vec();
    env.extend_from_slice(extra_env);
    TestControlPlane::start(backend, &env).await
}

/// Sends `method path` as `user` and asserts 204.
async fn no_content(server: &TestControlPlane, user: &User, method: &str, path: &str) {
    let (status, body) = call(server, user, method, path, None).await;
    assert_eq!(status, 204, "{method} {path} as {}: {body}", user.name);
}

/// The ids of `field`'s items, read through `id_of`.
fn ids(page: &Value, field: &str, id_of: fn(&Value) -> i64) -> Vec<i64> {
    page[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {page}"))
        .iter()
        .map(id_of)
        .collect()
}

fn track_id_of(item: &Value) -> i64 {
    item["track"]["id"].as_i64().unwrap()
}

fn user_id_of(item: &Value) -> i64 {
    item["user_id"].as_i64().unwrap()
}

/// Gets every page of `path` (which has a `?`) with `limit`, and returns
/// the items of `field` in order.
async fn all_pages(
    server: &TestControlPlane,
    user: &User,
    path: &str,
    field: &str,
    limit: i64,
) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let cursor = after
            .as_ref()
            .map(|after| format!("&after={after}"))
            .unwrap_or_default();
        let (status, page) = call(
            server,
            user,
            "GET",
            &format!("{path}&limit={limit}{cursor}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{path}: {page}");
        let page_items = page[field].as_array().unwrap().clone();
        assert!(page_items.len() as i64 <= limit, "{page}");
        items.extend(page_items);
        after = match &page["next_after"] {
            Value::Null => return items,
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        };
    }
    panic!("{path}: paging does not end");
}

/// A moment between two actions, so that their times differ.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[tokio::test]
async fn likes_are_idempotent_listed_newest_first_and_only_where_the_viewer_may_see_them() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let alice = register(&server, "alice").await;
        let bob = register(&server, "bob").await;
        let carol = register(&server, "carol").await;
        let public = upload(&server, &alice, "Public", "public").await;
        let unlisted = upload(&server, &alice, "Unlisted", "unlisted").await;
        let private = upload(&server, &alice, "Private", "private").await;

        no_content(&server, &bob, "PUT", &format!("/v1/tracks/{public}/like")).await;
        tick().await;
        no_content(&server, &bob, "PUT", &format!("/v1/tracks/{unlisted}/like")).await;
        no_content(&server, &bob, "PUT", &format!("/v1/tracks/{public}/like")).await;
        for track in [private, 999_999] {
            let (status, body) = call(
                &server,
                &bob,
                "PUT",
                &format!("/v1/tracks/{track}/like"),
                None,
            )
            .await;
            assert_error(
                status,
                &body,
                404,
                &format!("{backend:?}: like of track {track}"),
            );
        }
        no_content(
            &server,
            &alice,
            "PUT",
            &format!("/v1/tracks/{private}/like"),
        )
        .await;

        let likes = |viewer: &User, user: &User| {
            let path = format!("/v1/users/{}/likes", user.id);
            let server = &server;
            let viewer = viewer.clone();
            async move {
                let (status, page) = call(server, &viewer, "GET", &path, None).await;
                assert_eq!(status, 200, "{page}");
                ids(&page, "likes", track_id_of)
            }
        };
        assert_eq!(
            likes(&bob, &bob).await,
            [unlisted, public],
            "{backend:?}: newest first, the liker sees the unlisted track"
        );
        assert_eq!(
            likes(&carol, &bob).await,
            [public],
            "others do not see unlisted tracks in lists"
        );
        assert_eq!(
            likes(&alice, &bob).await,
            [unlisted, public],
            "the track's owner does"
        );
        assert_eq!(
            likes(&alice, &alice).await,
            [private],
            "owners see their private tracks"
        );
        assert_eq!(
            likes(&bob, &alice).await,
            Vec::<i64>::new(),
            "nobody else does"
        );
        let (_, page) = call(
            &server,
            &bob,
            "GET",
            &format!("/v1/users/{}/likes", bob.id),
            None,
        )
        .await;
        assert_eq!(page["likes"][0]["track"]["title"], "Unlisted");
        assert!(page["likes"][0]["liked_at_ms"].as_i64().unwrap() > 0);

        let paged = all_pages(
            &server,
            &bob,
            &format!("/v1/users/{}/likes?", bob.id),
            "likes",
            1,
        )
        .await;
        assert_eq!(
            paged.iter().map(track_id_of).collect::<Vec<_>>(),
            [unlisted, public],
            "pages of one"
        );

        let (status, stats) = call(
            &server,
            &carol,
            "GET",
            &format!("/v1/tracks/{public}/stats"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{stats}");
        assert_eq!(
            stats,
            json!({"play_count": 0, "like_count": 1, "repost_count": 0, "comment_count": 0})
        );
        let (status, body) = call(
            &server,
            &carol,
            "GET",
            &format!("/v1/tracks/{private}/stats"),
            None,
        )
        .await;
        assert_error(
            status,
            &body,
            404,
            "stats of a private track of someone else",
        );

        no_content(
            &server,
            &bob,
            "DELETE",
            &format!("/v1/tracks/{public}/like"),
        )
        .await;
        no_content(
            &server,
            &bob,
            "DELETE",
            &format!("/v1/tracks/{public}/like"),
        )
        .await;
        assert_eq!(
            likes(&bob, &bob).await,
            [unlisted],
            "unliked, twice is fine"
        );
        let (status, body) = call(&server, &bob, "GET", "/v1/users/999999/likes", None).await;
        assert_error(status, &body, 404, "likes of an unknown user");
        let (status, body) = call(
            &server,
            &bob,
            "GET",
            &format!("/v1/users/{}/likes?limit=0", bob.id),
            None,
        )
        .await;
        assert_error(status, &body, 422, "limit 0");

        // Deleting a liked track (the tracks API) takes its likes along.
        no_content(&server, &alice, "DELETE", &format!("/v1/tracks/{unlisted}")).await;
        assert_eq!(likes(&bob, &bob).await, Vec::<i64>::new(), "{backend:?}");
    }
}

#[tokio::test]
async fn follows_refuse_oneself_and_list_followers_and_following_newest_first() {
    for backend in BACKENDS {
        let server = start(backend, &[("VEZA_SOCIAL_FOLLOWING_PER_USER_MAX", "2")]).await;
        let alice = register(&server, "alice").await;
        let bob = register(&server, "bob").await;
        let carol = register(&server, "carol").await;
        let dave = register(&server, "dave").await;

        no_content(
            &server,
            &bob,
            "PUT",
            &format!("/v1/users/{}/follow", alice.id),
        )
        .await;
        tick().await;
        no_content(
            &server,
            &carol,
            "PUT",
            &format!("/v1/users/{}/follow", alice.id),
        )
        .await;
        no_content(
            &server,
            &carol,
            "PUT",
            &format!("/v1/users/{}/follow", alice.id),
        )
        .await;
        no_content(
            &server,
            &bob,
            "PUT",
            &format!("/v1/users/{}/follow", carol.id),
        )
        .await;
        let (status, body) = call(
            &server,
            &bob,
            "PUT",
            &format!("/v1/users/{}/follow", bob.id),
            None,
        )
        .await;
        assert_error(
            status,
            &body,
            422,
            &format!("{backend:?}: following oneself"),
        );
        let (status, body) = call(&server, &bob, "PUT", "/v1/users/999999/follow", None).await;
        assert_error(status, &body, 404, "following an unknown user");
        let (status, body) = call(
            &server,
            &bob,
            "PUT",
            &format!("/v1/users/{}/follow", dave.id),
            None,
        )
        .await;
        assert_error(status, &body, 409, "past social.following_per_user_max");
        assert_eq!(body["error"], "too_many_follows");
        no_content(
            &server,
            &bob,
            "PUT",
            &format!("/v1/users/{}/follow", alice.id),
        )
        .await;

        let list = |path: String| {
            let server = &server;
            let dave = dave.clone();
            async move {
                let (status, page) = call(server, &dave, "GET", &path, None).await;
                assert_eq!(status, 200, "{page}");
                ids(&page, "users", user_id_of)
            }
        };
        assert_eq!(
            list(format!("/v1/users/{}/followers", alice.id)).await,
            [carol.id, bob.id],
            "{backend:?}"
        );
        assert_eq!(
            list(format!("/v1/users/{}/following", bob.id)).await,
            [carol.id, alice.id]
        );
        assert_eq!(
            list(format!("/v1/users/{}/followers", dave.id)).await,
            Vec::<i64>::new()
        );
        let (_, page) = call(
            &server,
            &dave,
            "GET",
            &format!("/v1/users/{}/followers", alice.id),
            None,
        )
        .await;
        assert_eq!(page["users"][0]["username"], "carol");
        let paged = all_pages(
            &server,
            &dave,
            &format!("/v1/users/{}/followers?", alice.id),
            "users",
            1,
        )
        .await;
        assert_eq!(
            paged.iter().map(user_id_of).collect::<Vec<_>>(),
            [carol.id, bob.id]
        );

        no_content(
            &server,
            &bob,
            "DELETE",
            &format!("/v1/users/{}/follow", alice.id),
        )
        .await;
        no_content(
            &server,
            &bob,
            "DELETE",
            &format!("/v1/users/{}/follow", alice.id),
        )
        .await;
        assert_eq!(
            list(format!("/v1/users/{}/followers", alice.id)).await,
            [carol.id]
        );
        no_content(
            &server,
            &bob,
            "PUT",
            &format!("/v1/users/{}/follow", dave.id),
        )
        .await;
        let (status, body) = call(&server, &bob, "GET", "/v1/users/999999/following", None).await;
        assert_error(status, &body, 404, "following of an unknown user");
    }
}

#[tokio::test]
async fn comments_sit_within_the_track_list_in_both_orders_and_are_deleted_by_author_or_owner() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let alice = register(&server, "alice").await;
        let bob = register(&server, "bob").await;
        let carol = register(&server, "carol").await;
        let track = upload(&server, &alice, "Tone", "public").await;
        let private = upload(&server, &alice, "Secret", "private").await;
        let (_, seen) = call(&server, &alice, "GET", &format!("/v1/tracks/{track}"), None).await;
        let duration_ms = seen["duration_ms"]
            .as_i64()
            .expect("a ready track has a duration");
        assert!((900..=1100).contains(&duration_ms), "{seen}");

        let path = format!("/v1/tracks/{track}/comments");
        let mut posted = Vec::new();
        for (user, body, timestamp_ms) in [
            (&bob, " at the start of the swell ", 500),
            (&carol, "first!", 0),
            (&bob, "the end", duration_ms),
        ] {
            let (status, comment) = call(
                &server,
                user,
                "POST",
                &path,
                Some(json!({"body": body, "timestamp_ms": timestamp_ms})),
            )
            .await;
            assert_eq!(status, 201, "{backend:?}: {comment}");
            assert_eq!(comment["user_id"], user.id);
            assert_eq!(comment["username"], user.name.as_str());
            assert_eq!(comment["timestamp_ms"], timestamp_ms);
            posted.push(comment["id"].as_i64().unwrap());
            tick().await;
        }
        let (status, comment) = call(&server, &bob, "GET", &format!("{path}?limit=1"), None).await;
        assert_eq!(status, 200, "{comment}");
        assert_eq!(comment["comments"][0]["body"], "first!");

        for (body, reason) in [
            (
                json!({"body": "late", "timestamp_ms": duration_ms + 1}),
                "past the end",
            ),
            (
                json!({"body": "early", "timestamp_ms": -1}),
                "before the start",
            ),
            (json!({"body": "  ", "timestamp_ms": 0}), "empty body"),
            (
                json!({"body": "x".repeat(1001), "timestamp_ms": 0}),
                "body over 1000 characters",
            ),
            (json!({"body": "no time"}), "no timestamp"),
        ] {
            let (status, answer) = call(&server, &bob, "POST", &path, Some(body)).await;
            assert_error(status, &answer, 422, reason);
        }
        let longest = "y".repeat(1000);
        let (status, answer) = call(
            &server,
            &carol,
            "POST",
            &path,
            Some(json!({"body": longest, "timestamp_ms": 1})),
        )
        .await;
        assert_eq!(status, 201, "1000 characters are allowed: {answer}");
        let longest_id = answer["id"].as_i64().unwrap();
        let (status, answer) = call(
            &server,
            &bob,
            "POST",
            &format!("/v1/tracks/{private}/comments"),
            Some(json!({"body": "hi", "timestamp_ms": 0})),
        )
        .await;
        assert_error(
            status,
            &answer,
            404,
            "comment on a private track of someone else",
        );
        let (status, answer) = call(
            &server,
            &bob,
            "GET",
            &format!("/v1/tracks/{private}/comments"),
            None,
        )
        .await;
        assert_error(
            status,
            &answer,
            404,
            "comments of a private track of someone else",
        );

        let comment_id = |item: &Value| item["id"].as_i64().unwrap();
        let by_time = all_pages(
            &server,
            &bob,
            &format!("{path}?order=timestamp"),
            "comments",
            2,
        )
        .await;
        assert_eq!(
            by_time.iter().map(comment_id).collect::<Vec<_>>(),
            [posted[1], longest_id, posted[0], posted[2]],
            "{backend:?}: by moment in the track"
        );
        let newest = all_pages(
            &server,
            &bob,
            &format!("{path}?order=newest"),
            "comments",
            3,
        )
        .await;
        assert_eq!(
            newest.iter().map(comment_id).collect::<Vec<_>>(),
            [longest_id, posted[2], posted[1], posted[0]],
            "newest first"
        );
        let (status, answer) =
            call(&server, &bob, "GET", &format!("{path}?after=bogus"), None).await;
        assert_error(status, &answer, 422, "a cursor this server did not write");

        let (status, answer) = call(
            &server,
            &bob,
            "DELETE",
            &format!("{path}/{}", posted[1]),
            None,
        )
        .await;
        assert_error(
            status,
            &answer,
            403,
            "deleting someone else's comment on someone else's track",
        );
        no_content(&server, &alice, "DELETE", &format!("{path}/{}", posted[1])).await;
        no_content(&server, &bob, "DELETE", &format!("{path}/{}", posted[0])).await;
        let (status, answer) = call(
            &server,
            &bob,
            "DELETE",
            &format!("{path}/{}", posted[0]),
            None,
        )
        .await;
        assert_error(status, &answer, 404, "a deleted comment");
        let (_, stats) = call(
            &server,
            &bob,
            "GET",
            &format!("/v1/tracks/{track}/stats"),
            None,
        )
        .await;
        assert_eq!(stats["comment_count"], 2, "{stats}");
    }
}

#[tokio::test]
async fn the_feed_holds_public_uploads_and_reposts_of_followed_people_newest_first_once_each() {
    for backend in BACKENDS {
        let server = start(backend, &[]).await;
        let alice = register(&server, "alice").await;
        let bob = register(&server, "bob").await;
        let carol = register(&server, "carol").await;
        let dave = register(&server, "dave").await;
        let erin = register(&server, "erin").await;
        // bob follows alice and erin; carol follows erin only.
        for (follower, followee) in [(&bob, &alice), (&bob, &erin), (&carol, &erin)] {
            no_content(
                &server,
                follower,
                "PUT",
                &format!("/v1/users/{}/follow", followee.id),
            )
            .await;
        }
        let alice_first = upload(&server, &alice, "A1", "public").await;
        tick().await;
        let alice_unlisted = upload(&server, &alice, "A2", "unlisted").await;
        let alice_private = upload(&server, &alice, "A3", "private").await;
        let alice_second = upload(&server, &alice, "A4", "public").await;
        let dave_track = upload(&server, &dave, "D1", "public").await;
        tick().await;

        no_content(
            &server,
            &erin,
            "PUT",
            &format!("/v1/tracks/{dave_track}/repost"),
        )
        .await;
        tick().await;
        no_content(
            &server,
            &erin,
            "PUT",
            &format!("/v1/tracks/{alice_first}/repost"),
        )
        .await;
        no_content(
            &server,
            &erin,
            "PUT",
            &format!("/v1/tracks/{alice_first}/repost"),
        )
        .await;
        let (status, body) = call(
            &server,
            &erin,
            "PUT",
            &format!("/v1/tracks/{alice_unlisted}/repost"),
            None,
        )
        .await;
        assert_error(
            status,
            &body,
            422,
            &format!("{backend:?}: reposting an unlisted track"),
        );
        let (status, body) = call(
            &server,
            &erin,
            "PUT",
            &format!("/v1/tracks/{alice_private}/repost"),
            None,
        )
        .await;
        assert_error(
            status,
            &body,
            404,
            "reposting a private track of someone else",
        );
        let (status, body) = call(
            &server,
            &alice,
            "PUT",
            &format!("/v1/tracks/{alice_second}/repost"),
            None,
        )
        .await;
        assert_error(status, &body, 422, "reposting one's own track");

        let feed = |viewer: &User| {
            let server = &server;
            let viewer = viewer.clone();
            async move {
                let (status, page) = call(server, &viewer, "GET", "/v1/feed", None).await;
                assert_eq!(status, 200, "{page}");
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|item| {
                        (
                            item["type"].as_str().unwrap().to_string(),
                            item["by_user_id"].as_i64().unwrap(),
                            item["track"]["id"].as_i64().unwrap(),
                        )
                    })
                    .collect::<Vec<_>>()
            }
        };
        let repost = |by: &User, track: i64| ("repost".to_string(), by.id, track);
        let upload_by = |by: &User, track: i64| ("upload".to_string(), by.id, track);
        assert_eq!(
            feed(&bob).await,
            [
                repost(&erin, alice_first),
                repost(&erin, dave_track),
                upload_by(&alice, alice_second)
            ],
            "{backend:?}: A1 once, as its newest event; no unlisted or private track"
        );
        assert_eq!(
            feed(&carol).await,
            [repost(&erin, alice_first), repost(&erin, dave_track)]
        );
        assert_eq!(feed(&dave).await, Vec::new(), "dave follows nobody");
        let paged = all_pages(&server, &bob, "/v1/feed?", "items", 1).await;
        assert_eq!(
            paged.iter().map(track_id_of).collect::<Vec<_>>(),
            [alice_first, dave_track, alice_second],
            "pages of one give the same items, none twice"
        );
        let (_, page) = call(&server, &bob, "GET", "/v1/feed", None).await;
        let first = &page["items"][0];
        assert_eq!(first["track"]["title"], "A1");
        assert_eq!(first["track"]["owner_user_id"], alice.id);
        assert!(
            first["track"]["duration_ms"].as_i64().unwrap() > 0,
            "{first}"
        );
        assert!(first["at_ms"].as_i64().unwrap() >= page["items"][1]["at_ms"].as_i64().unwrap());
        let (status, body) = call(&server, &bob, "GET", "/v1/feed?after=12", None).await;
        assert_error(status, &body, 422, "a cursor this server did not write");

        let (_, stats) = call(
            &server,
            &bob,
            "GET",
            &format!("/v1/tracks/{alice_first}/stats"),
            None,
        )
        .await;
        assert_eq!(stats["repost_count"], 1, "{stats}");

        // Taking the repost back brings A1 back to its upload, for bob only.
        no_content(
            &server,
            &erin,
            "DELETE",
            &format!("/v1/tracks/{alice_first}/repost"),
        )
        .await;
        no_content(
            &server,
            &erin,
            "DELETE",
            &format!("/v1/tracks/{alice_first}/repost"),
        )
        .await;
        assert_eq!(
            feed(&bob).await,
            [
                repost(&erin, dave_track),
                upload_by(&alice, alice_second),
                upload_by(&alice, alice_first)
            ]
        );
        assert_eq!(feed(&carol).await, [repost(&erin, dave_track)]);
        // A deleted track leaves every feed.
        no_content(
            &server,
            &dave,
            "DELETE",
            &format!("/v1/tracks/{dave_track}"),
        )
        .await;
        assert_eq!(feed(&carol).await, Vec::new());
    }
}

#[tokio::test]
async fn playlists_keep_their_order_through_inserts_removals_and_reorders_and_hide_tracks_per_viewer(
) {
    for backend in BACKENDS {
        let server = start(backend, &[("VEZA_SOCIAL_PLAYLIST_TRACKS_MAX", "5")]).await;
        let alice = register(&server, "alice").await;
        let bob = register(&server, "bob").await;
        let carol = register(&server, "carol").await;
        let one = upload(&server, &alice, "One", "public").await;
        let two = upload(&server, &alice, "Two", "public").await;
        let three = upload(&server, &alice, "Three", "public").await;
        let secret = upload(&server, &alice, "Secret", "private").await;
        let hidden = upload(&server, &carol, "Carol unlisted", "unlisted").await;
        let extra = upload(&server, &carol, "Carol public", "public").await;

        let (status, playlist) = call(
            &server,
            &alice,
            "POST",
            "/v1/playlists",
            Some(json!({"title": " Mix ", "visibility": "public"})),
        )
        .await;
        assert_eq!(status, 201, "{backend:?}: {playlist}");
        assert_eq!(
            (playlist["title"].as_str(), playlist["description"].as_str()),
            (Some("Mix"), Some(""))
        );
        assert_eq!(playlist["tracks"], json!([]));
        let id = playlist["id"].as_i64().unwrap();
        let tracks_path = format!("/v1/playlists/{id}/tracks");
        let add = |user: &User, body: Value| {
            let server = &server;
            let user = user.clone();
            let path = tracks_path.clone();
            async move { call(server, &user, "POST", &path, Some(body)).await }
        };
        let order = |viewer: &User| {
            let server = &server;
            let viewer = viewer.clone();
            async move {
                let (status, playlist) =
                    call(server, &viewer, "GET", &format!("/v1/playlists/{id}"), None).await;
                assert_eq!(status, 200, "{playlist}");
                playlist["tracks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|entry| (entry["position"].as_i64().unwrap(), track_id_of(entry)))
                    .collect::<Vec<_>>()
            }
        };

        for (body, expected) in [
            (json!({"track_id": one}), vec![one]),
            (json!({"track_id": two}), vec![one, two]),
            (
                json!({"track_id": three, "position": 0}),
                vec![three, one, two],
            ),
            (
                json!({"track_id": secret, "position": 3}),
                vec![three, one, two, secret],
            ),
            (
                json!({"track_id": hidden, "position": 1}),
                vec![three, hidden, one, two, secret],
            ),
        ] {
            let (status, playlist) = add(&alice, body.clone()).await;
            assert_eq!(status, 200, "{backend:?}: add {body}: {playlist}");
            assert_eq!(
                ids(&playlist, "tracks", track_id_of),
                expected,
                "after adding {body}"
            );
        }
        let (status, body) = add(&alice, json!({"track_id": extra})).await;
        assert_error(status, &body, 409, "past social.playlist_tracks_max");
        assert_eq!(body["error"], "playlist_full");
        let (status, body) = add(&alice, json!({"track_id": one})).await;
        assert_error(status, &body, 409, "a track is in a playlist once");
        assert_eq!(body["error"], "track_already_in_playlist");

        let all = vec![(0, three), (1, hidden), (2, one), (3, two), (4, secret)];
        assert_eq!(order(&alice).await, all, "the owner sees every track");
        assert_eq!(
            order(&bob).await,
            [(0, three), (2, one), (3, two)],
            "others see neither the private track nor someone else's unlisted one, and positions stay"
        );
        assert_eq!(
            order(&carol).await,
            [(0, three), (1, hidden), (2, one), (3, two)],
            "carol owns the unlisted track"
        );

        let order_path = format!("/v1/playlists/{id}/order");
        let (status, playlist) = call(
            &server,
            &alice,
            "PUT",
            &order_path,
            Some(json!({"track_ids": [secret, two, one, hidden, three]})),
        )
        .await;
        assert_eq!(status, 200, "{playlist}");
        assert_eq!(
            ids(&playlist, "tracks", track_id_of),
            [secret, two, one, hidden, three]
        );
        for track_ids in [
            json!([secret, two, one, hidden]),
            json!([secret, two, one, hidden, three, extra]),
            json!([secret, two, one, hidden, hidden]),
            json!([secret, two, one, hidden, extra]),
        ] {
            let (status, body) = call(
                &server,
                &alice,
                "PUT",
                &order_path,
                Some(json!({"track_ids": track_ids})),
            )
            .await;
            assert_error(status, &body, 422, &format!("reorder with {track_ids}"));
        }

        no_content(&server, &alice, "DELETE", &format!("{tracks_path}/1")).await;
        assert_eq!(
            order(&alice).await,
            [(0, secret), (1, one), (2, hidden), (3, three)]
        );
        let (status, body) =
            call(&server, &alice, "DELETE", &format!("{tracks_path}/4"), None).await;
        assert_error(status, &body, 404, "no track at that position");
        let (status, body) = add(&alice, json!({"track_id": two, "position": 5})).await;
        assert_error(status, &body, 422, "a position past the end");
        let (status, body) = add(&alice, json!({"track_id": 999_999})).await;
        assert_error(status, &body, 404, "an unknown track");

        let (status, body) = add(&bob, json!({"track_id": extra})).await;
        assert_error(status, &body, 403, "changing someone else's playlist");
        let (status, body) = call(
            &server,
            &bob,
            "DELETE",
            &format!("/v1/playlists/{id}"),
            None,
        )
        .await;
        assert_error(status, &body, 403, "deleting someone else's playlist");
        let (status, body) = call(
            &server,
            &alice,
            "PATCH",
            &format!("/v1/playlists/{id}"),
            Some(json!({"title": "  "})),
        )
        .await;
        assert_error(status, &body, 422, "an empty title");
        let (status, body) = call(
            &server,
            &alice,
            "PATCH",
            &format!("/v1/playlists/{id}"),
            Some(json!({"description": "for the night", "visibility": "private"})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["title"].as_str(), body["visibility"].as_str()),
            (Some("Mix"), Some("private"))
        );
        let (status, body) = call(&server, &bob, "GET", &format!("/v1/playlists/{id}"), None).await;
        assert_error(status, &body, 404, "a private playlist of someone else");
        let (status, body) = add(&bob, json!({"track_id": extra})).await;
        assert_error(
            status,
            &body,
            404,
            "changing a private playlist of someone else",
        );

        // A private track of someone else cannot be added; unlisted ones can.
        let (status, bobs) = call(
            &server,
            &bob,
            "POST",
            "/v1/playlists",
            Some(json!({"title": "Bob's", "visibility": "unlisted"})),
        )
        .await;
        assert_eq!(status, 201, "{bobs}");
        let bobs_tracks = format!("/v1/playlists/{}/tracks", bobs["id"]);
        let (status, body) = call(
            &server,
            &bob,
            "POST",
            &bobs_tracks,
            Some(json!({"track_id": secret})),
        )
        .await;
        assert_error(status, &body, 404, "adding a private track of someone else");
        let (status, body) = call(
            &server,
            &bob,
            "POST",
            &bobs_tracks,
            Some(json!({"track_id": hidden})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            ids(&body, "tracks", track_id_of),
            [hidden],
            "bob sees it in his own list"
        );
        let (status, body) = call(
            &server,
            &alice,
            "POST",
            "/v1/playlists",
            Some(json!({"title": "x", "visibility": "secret"})),
        )
        .await;
        assert_error(status, &body, 422, "an unknown visibility");

        // Deleting a track closes its gap; deleting the playlist leaves the tracks.
        no_content(&server, &alice, "DELETE", &format!("/v1/tracks/{one}")).await;
        assert_eq!(
            order(&alice).await,
            [(0, secret), (1, hidden), (2, three)],
            "{backend:?}"
        );
        no_content(&server, &alice, "DELETE", &format!("{tracks_path}/0")).await;
        assert_eq!(order(&alice).await, [(0, hidden), (1, three)]);
        no_content(&server, &alice, "DELETE", &format!("/v1/playlists/{id}")).await;
        let (status, body) =
            call(&server, &alice, "GET", &format!("/v1/playlists/{id}"), None).await;
        assert_error(status, &body, 404, "a deleted playlist");
        let (status, _) = call(&server, &alice, "GET", &format!("/v1/tracks/{three}"), None).await;
        assert_eq!(status, 200, "the tracks stay");
    }
}
