//! Mutes, kicks and bans with their expiry, and the audit log that records
//! them. Every test runs on SQLite and PostgreSQL.

mod rooms_support;
mod support;

use std::time::Duration;

use rooms_support::{add_member, assert_error, call, create_room, open_database, register, start};
use serde_json::json;
use support::BACKENDS;
use veza_controlplane::db::now_ms;
use veza_controlplane::rooms::permissions::rights;

#[tokio::test]
async fn a_mute_stops_posting_until_it_ends_or_is_lifted() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let moderator = register(&server, "moderator").await;
        let member = register(&server, "member").await;
        let outsider = register(&server, "outsider").await;
        let room_id = create_room(&server, &owner, "Quiet please", true).await;
        add_member(&server, room_id, &owner, &moderator, "moderator").await;
        add_member(&server, room_id, &owner, &member, "member").await;
        let db = open_database(&server).await;

        let (status, mute) = call(
            &server,
            &moderator,
            "POST",
            &format!("/v1/rooms/{room_id}/mutes"),
            Some(json!({"user_id": member.id, "duration_seconds": 1, "reason": "spam"})),
        )
        .await;
        assert_eq!(status, 201, "{backend:?} {mute}");
        let until_ms = mute["until_ms"].as_i64().unwrap();
        assert!(
            until_ms > now_ms() && until_ms <= now_ms() + 1_500,
            "{mute}"
        );
        let muted = rights(&db, room_id, member.id).await.unwrap();
        assert_eq!(muted.muted_until_ms, Some(until_ms));
        assert!(
            muted.can_read && muted.can_post && !muted.may_post_at(now_ms()),
            "muted members read but do not post"
        );
        let (_, page) = call(
            &server,
            &member,
            "GET",
            &format!("/v1/rooms/{room_id}/members"),
            None,
        )
        .await;
        let listed = page["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["user_id"] == member.id)
            .unwrap()
            .clone();
        assert_eq!(listed["muted_until_ms"].as_i64(), Some(until_ms));

        tokio::time::sleep(Duration::from_millis(
            (until_ms - now_ms()).max(0) as u64 + 50,
        ))
        .await;
        let after = rights(&db, room_id, member.id).await.unwrap();
        assert!(
            after.muted_until_ms.is_none() && after.may_post_at(now_ms()),
            "the mute ended by itself"
        );
        let (status, body) = call(
            &server,
            &moderator,
            "DELETE",
            &format!("/v1/rooms/{room_id}/mutes/{}", member.id),
            None,
        )
        .await;
        assert_error(status, &body, 404, "an ended mute cannot be lifted");

        let (status, mute) = call(
            &server,
            &moderator,
            "POST",
            &format!("/v1/rooms/{room_id}/mutes"),
            Some(json!({"user_id": member.id})),
        )
        .await;
        assert_eq!(
            (status, mute["until_ms"].is_null()),
            (201, true),
            "without a duration: until lifted"
        );
        assert_eq!(
            rights(&db, room_id, member.id)
                .await
                .unwrap()
                .muted_until_ms,
            Some(i64::MAX)
        );
        let (status, _) = call(
            &server,
            &moderator,
            "DELETE",
            &format!("/v1/rooms/{room_id}/mutes/{}", member.id),
            None,
        )
        .await;
        assert_eq!(status, 204);
        assert!(rights(&db, room_id, member.id)
            .await
            .unwrap()
            .muted_until_ms
            .is_none());

        let (status, body) = call(
            &server,
            &moderator,
            "POST",
            &format!("/v1/rooms/{room_id}/mutes"),
            Some(json!({"user_id": outsider.id})),
        )
        .await;
        assert_error(status, &body, 422, "only members are muted");
        let (status, body) = call(
            &server,
            &outsider,
            "POST",
            &format!("/v1/rooms/{room_id}/mutes"),
            Some(json!({"user_id": member.id})),
        )
        .await;
        assert_error(status, &body, 403, "non-members moderate nothing");
        for bad in [
            json!({"user_id": member.id, "duration_seconds": 0}),
            json!({"user_id": member.id, "duration_seconds": -5}),
            json!({"user_id": member.id, "reason": "r".repeat(513)}),
            json!({"user_id": member.id, "until": 5}),
        ] {
            let (status, body) = call(
                &server,
                &moderator,
                "POST",
                &format!("/v1/rooms/{room_id}/mutes"),
                Some(bad.clone()),
            )
            .await;
            assert_error(status, &body, 422, &format!("{bad}"));
        }
        assert!(
            rights(&db, room_id, member.id)
                .await
                .unwrap()
                .muted_until_ms
                .is_none(),
            "refused mutes changed nothing"
        );
    }
}

#[tokio::test]
async fn a_kicked_member_may_rejoin_a_public_room_but_not_a_private_one() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let member = register(&server, "member").await;
        let public_id = create_room(&server, &owner, "Lobby", true).await;
        let private_id = create_room(&server, &owner, "Studio", false).await;
        add_member(&server, public_id, &owner, &member, "member").await;
        add_member(&server, private_id, &owner, &member, "member").await;
        for room_id in [public_id, private_id] {
            let (status, body) = call(
                &server,
                &owner,
                "POST",
                &format!("/v1/rooms/{room_id}/kicks"),
                Some(json!({"user_id": member.id, "reason": "cool off"})),
            )
            .await;
            assert_eq!(status, 204, "{backend:?} {body}");
            let (status, body) = call(
                &server,
                &owner,
                "POST",
                &format!("/v1/rooms/{room_id}/kicks"),
                Some(json!({"user_id": member.id})),
            )
            .await;
            assert_error(status, &body, 422, "kicking a non-member");
        }
        let (status, _) = call(
            &server,
            &member,
            "POST",
            &format!("/v1/rooms/{public_id}/join"),
            None,
        )
        .await;
        assert_eq!(status, 200, "back in the public room");
        let (status, body) = call(
            &server,
            &member,
            "POST",
            &format!("/v1/rooms/{private_id}/join"),
            None,
        )
        .await;
        assert_error(status, &body, 404, "a private room needs a new invitation");
    }
}

#[tokio::test]
async fn a_ban_blocks_reading_joining_and_invitations_until_it_ends() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let admin = register(&server, "admin").await;
        let member = register(&server, "member").await;
        let stranger = register(&server, "stranger").await;
        let room_id = create_room(&server, &owner, "Strict", true).await;
        add_member(&server, room_id, &owner, &admin, "admin").await;
        add_member(&server, room_id, &owner, &member, "member").await;
        let db = open_database(&server).await;

        let (status, ban) = call(
            &server,
            &admin,
            "POST",
            &format!("/v1/rooms/{room_id}/bans"),
            Some(json!({"user_id": member.id, "duration_seconds": 1})),
        )
        .await;
        assert_eq!(status, 201, "{backend:?} {ban}");
        let banned = rights(&db, room_id, member.id).await.unwrap();
        assert!(
            banned.banned && !banned.can_read && !banned.can_post && banned.role.is_none(),
            "{banned:?}"
        );
        for (method, path) in [
            ("POST", format!("/v1/rooms/{room_id}/join")),
            ("GET", format!("/v1/rooms/{room_id}")),
            ("GET", format!("/v1/rooms/{room_id}/messages")),
        ] {
            let (status, body) = call(&server, &member, method, &path, None).await;
            assert_error(status, &body, 403, &format!("banned: {method} {path}"));
        }
        let (status, body) = call(
            &server,
            &owner,
            "POST",
            &format!("/v1/rooms/{room_id}/invites"),
            Some(json!({"user_id": member.id})),
        )
        .await;
        assert_error(status, &body, 409, "the banned cannot be invited");

        tokio::time::sleep(Duration::from_millis(
            (ban["until_ms"].as_i64().unwrap() - now_ms()).max(0) as u64 + 50,
        ))
        .await;
        let (status, _) = call(
            &server,
            &member,
            "POST",
            &format!("/v1/rooms/{room_id}/join"),
            None,
        )
        .await;
        assert_eq!(status, 200, "the ban ended");

        let (status, ban) = call(
            &server,
            &admin,
            "POST",
            &format!("/v1/rooms/{room_id}/bans"),
            Some(json!({"user_id": stranger.id, "reason": "known troll"})),
        )
        .await;
        assert_eq!(
            (status, ban["until_ms"].is_null()),
            (201, true),
            "a non-member is banned for ever"
        );
        let (status, body) = call(
            &server,
            &stranger,
            "POST",
            &format!("/v1/rooms/{room_id}/join"),
            None,
        )
        .await;
        assert_error(status, &body, 403, "banned for ever");
        let (status, body) = call(
            &server,
            &member,
            "DELETE",
            &format!("/v1/rooms/{room_id}/bans/{}", stranger.id),
            None,
        )
        .await;
        assert_error(status, &body, 403, "members do not unban");
        let (status, _) = call(
            &server,
            &admin,
            "DELETE",
            &format!("/v1/rooms/{room_id}/bans/{}", stranger.id),
            None,
        )
        .await;
        assert_eq!(status, 204);
        let (status, body) = call(
            &server,
            &admin,
            "DELETE",
            &format!("/v1/rooms/{room_id}/bans/{}", stranger.id),
            None,
        )
        .await;
        assert_error(status, &body, 404, "not banned any more");
        let (status, _) = call(
            &server,
            &stranger,
            "POST",
            &format!("/v1/rooms/{room_id}/join"),
            None,
        )
        .await;
        assert_eq!(status, 200);
        let (status, body) = call(
            &server,
            &admin,
            "POST",
            &format!("/v1/rooms/{room_id}/bans"),
            Some(json!({"user_id": 555_555})),
        )
        .await;
        assert_error(status, &body, 422, "banning nobody");
    }
}

#[tokio::test]
async fn every_moderation_action_and_role_change_is_in_the_audit_log() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let instance_admin = register(&server, "root").await;
        let owner = register(&server, "owner").await;
        let member = register(&server, "member").await;
        let outsider = register(&server, "outsider").await;
        let room_id = create_room(&server, &owner, "Logged", false).await;
        let steps = [
            (
                "POST",
                format!("/v1/rooms/{room_id}/invites"),
                json!({"user_id": member.id}),
            ),
            (
                "PUT",
                format!("/v1/rooms/{room_id}/members/{}/role", member.id),
                json!({"role": "moderator"}),
            ),
            (
                "PUT",
                format!("/v1/rooms/{room_id}/members/{}/role", member.id),
                json!({"role": "member"}),
            ),
            (
                "POST",
                format!("/v1/rooms/{room_id}/mutes"),
                json!({"user_id": member.id, "duration_seconds": 600, "reason": "flood"}),
            ),
            (
                "POST",
                format!("/v1/rooms/{room_id}/kicks"),
                json!({"user_id": member.id, "reason": "again"}),
            ),
            (
                "POST",
                format!("/v1/rooms/{room_id}/bans"),
                json!({"user_id": member.id, "reason": "enough"}),
            ),
        ];
        for (method, path, body) in steps {
            let (status, answer) = call(&server, &owner, method, &path, Some(body)).await;
            assert!(
                status < 300,
                "{backend:?} {method} {path}: {status} {answer}"
            );
        }
        for path in [
            format!("/v1/rooms/{room_id}/mutes/{}", member.id),
            format!("/v1/rooms/{room_id}/bans/{}", member.id),
        ] {
            let (status, _) = call(&server, &owner, "DELETE", &path, None).await;
            assert_eq!(status, 204, "{path}");
        }
        let (status, log) = call(
            &server,
            &owner,
            "GET",
            &format!("/v1/rooms/{room_id}/audit-log"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{log}");
        let entries = log["entries"].as_array().unwrap();
        let actions: Vec<&str> = entries
            .iter()
            .map(|entry| entry["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "unban",
                "unmute",
                "ban",
                "kick",
                "mute",
                "role_change",
                "role_change",
                "invite"
            ]
        );
        assert!(entries
            .iter()
            .all(|entry| entry["actor_id"] == owner.id && entry["target_user_id"] == member.id));
        assert_eq!(entries[2]["reason"], "enough");
        assert!(entries[2]["expires_at_ms"].is_null(), "a ban for ever");
        assert!(
            entries[4]["expires_at_ms"].as_i64().unwrap() > now_ms(),
            "a timed mute"
        );
        assert_eq!(
            entries[6]["detail"],
            json!({"from": "member", "to": "moderator"})
        );

        let (_, first) = call(
            &server,
            &owner,
            "GET",
            &format!("/v1/rooms/{room_id}/audit-log?limit=3"),
            None,
        )
        .await;
        assert_eq!(first["entries"].as_array().unwrap().len(), 3);
        let before = first["next_before"].as_i64().unwrap();
        let (_, rest) = call(
            &server,
            &owner,
            "GET",
            &format!("/v1/rooms/{room_id}/audit-log?before={before}&limit=100"),
            None,
        )
        .await;
        assert_eq!(rest["entries"].as_array().unwrap().len(), 5);
        assert!(rest["next_before"].is_null());

        let (status, _) = call(
            &server,
            &instance_admin,
            "GET",
            &format!("/v1/rooms/{room_id}/audit-log"),
            None,
        )
        .await;
        assert_eq!(status, 200, "instance admins read any audit log");
        let (status, body) = call(
            &server,
            &outsider,
            "GET",
            &format!("/v1/rooms/{room_id}/audit-log"),
            None,
        )
        .await;
        assert_error(status, &body, 404, "outsiders do not see a private room");
        let (status, body) = call(
            &server,
            &instance_admin,
            "GET",
            "/v1/rooms/987654/audit-log",
            None,
        )
        .await;
        assert_error(status, &body, 404, "no such room");
    }
}
