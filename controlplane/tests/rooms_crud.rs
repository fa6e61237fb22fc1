//! Rooms over REST: create, list, get, update, delete; direct messages;
//! join, invite, leave; bad input. Every test runs on SQLite and PostgreSQL.

mod rooms_support;
mod support;

use rooms_support::{assert_error, call, create_room, register, start};
use serde_json::{json, Value};
use support::BACKENDS;

fn ids(page: &Value, key: &str) -> Vec<i64> {
    page[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {page}"))
        .iter()
        .map(|item| item["id"].as_i64().or(item["user_id"].as_i64()).unwrap())
        .collect()
}

#[tokio::test]
async fn rooms_are_created_listed_read_updated_and_deleted() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let other = register(&server, "other").await;
        let (status, room) = call(
            &server,
            &owner,
            "POST",
            "/v1/rooms",
            Some(json!({"name": "  Synth lovers ", "topic": "modular", "is_public": true, "slow_mode_seconds": 5})),
        )
        .await;
        assert_eq!(status, 201, "{backend:?} {room}");
        assert_eq!(room["name"], "Synth lovers", "names are trimmed");
        assert_eq!(room["kind"], "room");
        assert_eq!(room["owner_id"], owner.id);
        assert_eq!(room["my_role"], "owner");
        assert_eq!(room["member_count"], 1);
        assert_eq!(room["slow_mode_seconds"], 5);
        let public_id = room["id"].as_i64().unwrap();
        let private_id = create_room(&server, &owner, "Backstage", false).await;
        let second_public_id = create_room(&server, &other, "Drums", true).await;

        let (status, page) = call(&server, &other, "GET", "/v1/rooms?scope=public", None).await;
        assert_eq!(status, 200);
        assert_eq!(
            ids(&page, "rooms"),
            [public_id, second_public_id],
            "private rooms are not listed"
        );
        let (_, page) = call(&server, &owner, "GET", "/v1/rooms?scope=mine", None).await;
        assert_eq!(ids(&page, "rooms"), [public_id, private_id]);
        let (_, first) = call(&server, &other, "GET", "/v1/rooms?limit=1", None).await;
        assert_eq!(ids(&first, "rooms"), [public_id]);
        let next = first["next_after"].as_i64().unwrap();
        let (_, second) = call(
            &server,
            &other,
            "GET",
            &format!("/v1/rooms?limit=1&after={next}"),
            None,
        )
        .await;
        assert_eq!(ids(&second, "rooms"), [second_public_id]);
        assert_eq!(second["next_after"], Value::Null);

        let (status, seen) = call(
            &server,
            &other,
            "GET",
            &format!("/v1/rooms/{public_id}"),
            None,
        )
        .await;
        assert_eq!(
            (status, seen["my_role"].clone()),
            (200, Value::Null),
            "{seen}"
        );
        let (status, body) = call(
            &server,
            &other,
            "GET",
            &format!("/v1/rooms/{private_id}"),
            None,
        )
        .await;
        assert_error(
            status,
            &body,
            404,
            "a private room does not exist for outsiders",
        );

        let (status, changed) = call(
            &server,
            &owner,
            "PATCH",
            &format!("/v1/rooms/{public_id}"),
            Some(
                json!({"name": "Synths", "topic": "", "slow_mode_seconds": 0, "is_public": false}),
            ),
        )
        .await;
        assert_eq!(status, 200, "{changed}");
        assert_eq!(
            (
                changed["name"].as_str(),
                changed["topic"].as_str(),
                changed["slow_mode_seconds"].as_i64(),
                changed["is_public"].as_bool()
            ),
            (Some("Synths"), Some(""), Some(0), Some(false))
        );
        let (status, body) = call(
            &server,
            &other,
            "GET",
            &format!("/v1/rooms/{public_id}"),
            None,
        )
        .await;
        assert_error(status, &body, 404, "now private");

        let (status, body) = call(
            &server,
            &other,
            "DELETE",
            &format!("/v1/rooms/{second_public_id}"),
            None,
        )
        .await;
        assert_eq!(status, 204, "{body}");
        let (status, body) = call(
            &server,
            &other,
            "GET",
            &format!("/v1/rooms/{second_public_id}"),
            None,
        )
        .await;
        assert_error(status, &body, 404, "deleted");
        let (status, body) = call(
            &server,
            &other,
            "DELETE",
            &format!("/v1/rooms/{second_public_id}"),
            None,
        )
        .await;
        assert_error(status, &body, 404, "deleted twice");
    }
}

#[tokio::test]
async fn direct_message_rooms_are_one_per_pair_from_either_side() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let alice = register(&server, "alice").await;
        let bob = register(&server, "bob").await;
        let carol = register(&server, "carol").await;
        let (status, first) = call(
            &server,
            &alice,
            "POST",
            "/v1/dms",
            Some(json!({"user_id": bob.id})),
        )
        .await;
        assert_eq!(status, 201, "{backend:?} {first}");
        assert_eq!(
            (first["kind"].as_str(), first["is_public"].as_bool()),
            (Some("dm"), Some(false))
        );
        assert_eq!(
            (first["owner_id"].clone(), first["member_count"].as_i64()),
            (Value::Null, Some(2))
        );
        let room_id = first["id"].as_i64().unwrap();
        let (status, again) = call(
            &server,
            &alice,
            "POST",
            "/v1/dms",
            Some(json!({"user_id": bob.id})),
        )
        .await;
        assert_eq!((status, again["id"].as_i64()), (200, Some(room_id)));
        let (status, reverse) = call(
            &server,
            &bob,
            "POST",
            "/v1/dms",
            Some(json!({"user_id": alice.id})),
        )
        .await;
        assert_eq!((status, reverse["id"].as_i64()), (200, Some(room_id)));
        let (status, other) = call(
            &server,
            &carol,
            "POST",
            "/v1/dms",
            Some(json!({"user_id": bob.id})),
        )
        .await;
        assert_eq!(status, 201);
        assert_ne!(other["id"].as_i64(), Some(room_id));

        let (_, mine) = call(&server, &bob, "GET", "/v1/rooms?scope=mine", None).await;
        assert_eq!(mine["rooms"].as_array().unwrap().len(), 2);
        let (status, body) = call(
            &server,
            &carol,
            "GET",
            &format!("/v1/rooms/{room_id}"),
            None,
        )
        .await;
        assert_error(status, &body, 404, "outsiders do not see a DM");
        let (status, body) = call(
            &server,
            &carol,
            "POST",
            &format!("/v1/rooms/{room_id}/join"),
            None,
        )
        .await;
        assert_error(status, &body, 404, "nobody joins a DM");
        let (status, body) = call(
            &server,
            &alice,
            "PATCH",
            &format!("/v1/rooms/{room_id}"),
            Some(json!({"name": "x"})),
        )
        .await;
        assert_error(status, &body, 403, "DMs have no settings");
        let (status, body) = call(
            &server,
            &alice,
            "POST",
            &format!("/v1/rooms/{room_id}/invites"),
            Some(json!({"user_id": carol.id})),
        )
        .await;
        assert_error(status, &body, 403, "DMs take no invitations");
        let (status, body) = call(
            &server,
            &alice,
            "PUT",
            &format!("/v1/rooms/{room_id}/members/{}/role", bob.id),
            Some(json!({"role": "admin"})),
        )
        .await;
        assert_error(status, &body, 403, "DMs have no roles");
        let (status, body) = call(
            &server,
            &alice,
            "POST",
            &format!("/v1/rooms/{room_id}/leave"),
            None,
        )
        .await;
        assert_error(status, &body, 409, "DMs cannot be left");
        let (status, body) = call(
            &server,
            &alice,
            "DELETE",
            &format!("/v1/rooms/{room_id}"),
            None,
        )
        .await;
        assert_error(status, &body, 403, "DMs cannot be deleted");

        let (status, body) = call(
            &server,
            &alice,
            "POST",
            "/v1/dms",
            Some(json!({"user_id": alice.id})),
        )
        .await;
        assert_error(status, &body, 422, "a DM with oneself");
        let (status, body) = call(
            &server,
            &alice,
            "POST",
            "/v1/dms",
            Some(json!({"user_id": 987_654})),
        )
        .await;
        assert_error(status, &body, 422, "a DM with nobody");
    }
}

#[tokio::test]
async fn members_join_public_rooms_and_are_invited_to_private_ones() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let dana = register(&server, "dana").await;
        let eve = register(&server, "eve").await;
        let public_id = create_room(&server, &owner, "Open mic", true).await;
        let private_id = create_room(&server, &owner, "Inner circle", false).await;

        let (status, member) = call(
            &server,
            &dana,
            "POST",
            &format!("/v1/rooms/{public_id}/join"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{backend:?} {member}");
        assert_eq!(
            (member["user_id"].as_i64(), member["role"].as_str()),
            (Some(dana.id), Some("member"))
        );
        assert_eq!(member["username"], "dana");
        let (status, _) = call(
            &server,
            &dana,
            "POST",
            &format!("/v1/rooms/{public_id}/join"),
            None,
        )
        .await;
        assert_eq!(status, 200, "joining twice is fine");
        let (status, body) = call(
            &server,
            &dana,
            "POST",
            &format!("/v1/rooms/{private_id}/join"),
            None,
        )
        .await;
        assert_error(status, &body, 404, "private rooms need an invitation");

        let (status, body) = call(
            &server,
            &dana,
            "POST",
            &format!("/v1/rooms/{public_id}/invites"),
            Some(json!({"user_id": eve.id})),
        )
        .await;
        assert_error(status, &body, 403, "members do not invite");
        let (status, invited) = call(
            &server,
            &owner,
            "POST",
            &format!("/v1/rooms/{private_id}/invites"),
            Some(json!({"user_id": dana.id})),
        )
        .await;
        assert_eq!(
            (status, invited["role"].as_str()),
            (201, Some("member")),
            "{invited}"
        );
        let (status, _) = call(
            &server,
            &owner,
            "POST",
            &format!("/v1/rooms/{private_id}/invites"),
            Some(json!({"user_id": dana.id})),
        )
        .await;
        assert_eq!(status, 200, "already a member");
        let (status, body) = call(
            &server,
            &owner,
            "POST",
            &format!("/v1/rooms/{private_id}/invites"),
            Some(json!({"user_id": 424_242})),
        )
        .await;
        assert_error(status, &body, 422, "inviting nobody");
        let (status, room) = call(
            &server,
            &dana,
            "GET",
            &format!("/v1/rooms/{private_id}"),
            None,
        )
        .await;
        assert_eq!((status, room["my_role"].as_str()), (200, Some("member")));

        let (status, page) = call(
            &server,
            &eve,
            "GET",
            &format!("/v1/rooms/{public_id}/members"),
            None,
        )
        .await;
        assert_eq!(status, 200, "anyone lists a public room's members");
        assert_eq!(ids(&page, "members"), [owner.id, dana.id]);
        let (_, page) = call(
            &server,
            &dana,
            "GET",
            &format!("/v1/rooms/{public_id}/members?limit=1"),
            None,
        )
        .await;
        assert_eq!(
            (ids(&page, "members"), page["next_after"].as_i64()),
            (vec![owner.id], Some(owner.id))
        );
        let (status, body) = call(
            &server,
            &eve,
            "GET",
            &format!("/v1/rooms/{private_id}/members"),
            None,
        )
        .await;
        assert_error(status, &body, 404, "outsiders do not list a private room");

        let (status, _) = call(
            &server,
            &dana,
            "POST",
            &format!("/v1/rooms/{private_id}/leave"),
            None,
        )
        .await;
        assert_eq!(status, 204);
        let (status, body) = call(
            &server,
            &dana,
            "GET",
            &format!("/v1/rooms/{private_id}"),
            None,
        )
        .await;
        assert_error(status, &body, 404, "gone after leaving");
        let (status, body) = call(
            &server,
            &dana,
            "POST",
            &format!("/v1/rooms/{private_id}/leave"),
            None,
        )
        .await;
        assert_error(status, &body, 404, "leaving twice");
        let (status, body) = call(
            &server,
            &owner,
            "POST",
            &format!("/v1/rooms/{private_id}/leave"),
            None,
        )
        .await;
        assert_error(status, &body, 409, "the owner transfers ownership first");

        let (status, member) = call(
            &server,
            &owner,
            "PUT",
            &format!("/v1/rooms/{public_id}/members/{}/role", dana.id),
            Some(json!({"role": "owner"})),
        )
        .await;
        assert_eq!(
            (status, member["role"].as_str()),
            (200, Some("owner")),
            "{member}"
        );
        let (_, room) = call(
            &server,
            &owner,
            "GET",
            &format!("/v1/rooms/{public_id}"),
            None,
        )
        .await;
        assert_eq!(
            (room["owner_id"].as_i64(), room["my_role"].as_str()),
            (Some(dana.id), Some("admin"))
        );
        let (status, _) = call(
            &server,
            &owner,
            "POST",
            &format!("/v1/rooms/{public_id}/leave"),
            None,
        )
        .await;
        assert_eq!(status, 204, "the former owner may leave");
    }
}

#[tokio::test]
async fn a_full_room_refuses_new_members() {
    let server = support::TestControlPlane::start(
        support::Backend::Sqlite,
        &[
            rooms_support::FAST_HASHING[0],
            rooms_support::FAST_HASHING[1],
            ("VEZA_CHAT_ROOM_MEMBERS_MAX", "2"),
            ("VEZA_CHAT_ROOMS_OWNED_PER_USER_MAX", "1"),
        ],
    )
    .await;
    let owner = register(&server, "owner").await;
    let first = register(&server, "first").await;
    let second = register(&server, "second").await;
    let room_id = create_room(&server, &owner, "Tiny", true).await;
    let (status, _) = call(
        &server,
        &first,
        "POST",
        &format!("/v1/rooms/{room_id}/join"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(
        &server,
        &second,
        "POST",
        &format!("/v1/rooms/{room_id}/join"),
        None,
    )
    .await;
    assert_error(status, &body, 409, "room_members_max");
    let (status, body) = call(
        &server,
        &owner,
        "POST",
        "/v1/rooms",
        Some(json!({"name": "Another", "is_public": true})),
    )
    .await;
    assert_error(status, &body, 409, "rooms_owned_per_user_max");
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx_and_changes_nothing() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let room_id = create_room(&server, &owner, "Stable", true).await;
        let raw = |method: reqwest::Method, path: &str| {
            server
                .http
                .request(method, server.url(path))
                .bearer_auth(&owner.token)
        };
        let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
            (
                raw(reqwest::Method::POST, "/v1/rooms")
                    .header("content-type", "application/json")
                    .body("{\"name\": "),
                400,
                "malformed JSON",
            ),
            (
                raw(reqwest::Method::POST, "/v1/rooms")
                    .body("{\"name\": \"x\", \"is_public\": true}"),
                415,
                "no JSON content type",
            ),
            (
                raw(reqwest::Method::POST, "/v1/rooms")
                    .json(&json!({"name": "x", "is_public": "yes"})),
                422,
                "wrong type",
            ),
            (
                raw(reqwest::Method::POST, "/v1/rooms")
                    .json(&json!({"name": "x", "is_public": true, "owner_id": 1})),
                422,
                "unknown field",
            ),
            (
                raw(reqwest::Method::POST, "/v1/rooms").json(&json!({"is_public": true})),
                422,
                "missing field",
            ),
            (
                raw(reqwest::Method::POST, "/v1/rooms")
                    .json(&json!({"name": "   ", "is_public": true})),
                422,
                "blank name",
            ),
            (
                raw(reqwest::Method::POST, "/v1/rooms")
                    .json(&json!({"name": "n".repeat(101), "is_public": true})),
                422,
                "long name",
            ),
            (
                raw(reqwest::Method::POST, "/v1/rooms")
                    .json(&json!({"name": "bell\u{7}", "is_public": true})),
                422,
                "control character",
            ),
            (
                raw(reqwest::Method::POST, "/v1/rooms")
                    .json(&json!({"name": "x", "is_public": true, "slow_mode_seconds": -1})),
                422,
                "negative slow mode",
            ),
            (
                raw(reqwest::Method::POST, "/v1/rooms")
                    .json(&json!({"name": "x", "is_public": true, "slow_mode_seconds": 999_999})),
                422,
                "slow mode too long",
            ),
            (
                raw(reqwest::Method::PATCH, &format!("/v1/rooms/{room_id}"))
                    .json(&json!({"name": "x'); DROP TABLE rooms; --", "colour": "red"})),
                422,
                "unknown field in a patch",
            ),
            (
                raw(reqwest::Method::PATCH, &format!("/v1/rooms/{room_id}"))
                    .json(&json!([null, null, null, null])),
                422,
                "a struct written as an array",
            ),
            (
                raw(reqwest::Method::POST, "/v1/rooms").json(&json!(["x", null, true, null])),
                422,
                "a new room written as an array",
            ),
            (
                raw(reqwest::Method::GET, "/v1/rooms/abc"),
                400,
                "non-integer id",
            ),
            (
                raw(reqwest::Method::GET, "/v1/rooms/99999999999999999999999"),
                400,
                "id beyond i64",
            ),
            (
                raw(reqwest::Method::GET, "/v1/rooms/-5"),
                404,
                "negative id",
            ),
            (
                raw(reqwest::Method::GET, "/v1/rooms?scope=everything"),
                400,
                "unknown scope",
            ),
            (
                raw(reqwest::Method::GET, "/v1/rooms?limit=many"),
                400,
                "non-integer limit",
            ),
            (
                raw(reqwest::Method::GET, "/v1/rooms?limit=0"),
                422,
                "zero limit",
            ),
            (
                raw(
                    reqwest::Method::GET,
                    &format!("/v1/rooms/{room_id}/messages/search?q=a%00b"),
                ),
                422,
                "NUL in a search",
            ),
            (
                raw(
                    reqwest::Method::PUT,
                    &format!("/v1/rooms/{room_id}/members/me/role"),
                )
                .json(&json!({"role": "admin"})),
                400,
                "non-integer user id",
            ),
            (
                raw(
                    reqwest::Method::PUT,
                    &format!("/v1/rooms/{room_id}/members/{}/role", owner.id),
                )
                .json(&json!({"role": "emperor"})),
                422,
                "unknown role",
            ),
            (server.http.get(server.url("/v1/rooms")), 401, "no token"),
            (
                server
                    .http
                    .get(server.url("/v1/rooms"))
                    .bearer_auth("not-a-token"),
                401,
                "garbage token",
            ),
        ];
        for (request, expected, context) in cases {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value =
                serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
            assert_error(status, &body, expected, &format!("{backend:?} {context}"));
        }
        let (_, page) = call(&server, &owner, "GET", "/v1/rooms?scope=mine", None).await;
        assert_eq!(ids(&page, "rooms"), [room_id], "nothing was created");
        let (_, room) = call(
            &server,
            &owner,
            "GET",
            &format!("/v1/rooms/{room_id}"),
            None,
        )
        .await;
        assert_eq!(room["name"], "Stable", "nothing was changed");
    }
}

#[tokio::test]
async fn an_oversize_body_gets_a_json_413_and_changes_nothing() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let body = json!({"name": "x".repeat(70_000), "is_public": true});
        let (status, answer) = call(&server, &owner, "POST", "/v1/rooms", Some(body)).await;
        assert_error(status, &answer, 413, &format!("{backend:?} oversize body"));
        let (_, page) = call(&server, &owner, "GET", "/v1/rooms?scope=mine", None).await;
        assert_eq!(page["rooms"], json!([]));
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_rooms_route() {
    let server = start(support::Backend::Sqlite).await;
    let (status, document) = server.request("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let routes = [
        ("/v1/rooms", "post"),
        ("/v1/rooms", "get"),
        ("/v1/rooms/{room_id}", "get"),
        ("/v1/rooms/{room_id}", "patch"),
        ("/v1/rooms/{room_id}", "delete"),
        ("/v1/dms", "post"),
        ("/v1/rooms/{room_id}/join", "post"),
        ("/v1/rooms/{room_id}/invites", "post"),
        ("/v1/rooms/{room_id}/leave", "post"),
        ("/v1/rooms/{room_id}/members", "get"),
        ("/v1/rooms/{room_id}/members/{user_id}/role", "put"),
        ("/v1/rooms/{room_id}/mutes", "post"),
        ("/v1/rooms/{room_id}/mutes/{user_id}", "delete"),
        ("/v1/rooms/{room_id}/kicks", "post"),
        ("/v1/rooms/{room_id}/bans", "post"),
        ("/v1/rooms/{room_id}/bans/{user_id}", "delete"),
        ("/v1/rooms/{room_id}/audit-log", "get"),
        ("/v1/rooms/{room_id}/messages", "get"),
        ("/v1/rooms/{room_id}/messages/search", "get"),
        ("/v1/rooms/{room_id}/read-marker", "get"),
        ("/v1/rooms/{room_id}/read-marker", "put"),
        ("/v1/admin/settings", "get"),
        ("/v1/admin/settings", "put"),
        ("/v1/admin/settings/history", "get"),
    ];
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            document["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
    for (path, method) in routes {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["security"].is_array(),
            "{method} {path} has no security"
        );
        for status in ["401", "403"] {
            let schema =
                &operation["responses"][status]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                schema, "#/components/schemas/ErrorResponse",
                "{method} {path} {status}"
            );
        }
    }
}
