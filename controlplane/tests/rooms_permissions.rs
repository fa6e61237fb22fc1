//! The permission table over HTTP: every role tries every moderation and
//! role action on every role, and every room-wide action; the answers must
//! match PERMISSIONS.md. Also the rights the data plane looks up.

mod rooms_support;
mod support;

use rooms_support::{add_member, call, open_database, register, start, User};
use serde_json::json;
use support::{TestControlPlane, BACKENDS};
use veza_controlplane::rooms::permissions::{rights, Role};

/// One user per seat: an actor and a distinct target of each role.
struct Cast {
    owner: User,
    admin: User,
    admin_target: User,
    moderator: User,
    moderator_target: User,
    member: User,
    member_target: User,
}

impl Cast {
    async fn register(server: &TestControlPlane) -> Cast {
        Cast {
            owner: register(server, "owner").await,
            admin: register(server, "admin").await,
            admin_target: register(server, "admin2").await,
            moderator: register(server, "moderator").await,
            moderator_target: register(server, "moderator2").await,
            member: register(server, "member").await,
            member_target: register(server, "member2").await,
        }
    }

    fn actor(&self, role: &str) -> &User {
        match role {
            "owner" => &self.owner,
            "admin" => &self.admin,
            "moderator" => &self.moderator,
            _ => &self.member,
        }
    }

    fn target(&self, role: &str) -> &User {
        match role {
            "owner" => &self.owner,
            "admin" => &self.admin_target,
            "moderator" => &self.moderator_target,
            _ => &self.member_target,
        }
    }

    /// A private room with everyone seated.
    async fn room(&self, server: &TestControlPlane) -> i64 {
        let room_id = rooms_support::create_room(server, &self.owner, "Seats", false).await;
        for (user, role) in [
            (&self.admin, "admin"),
            (&self.admin_target, "admin"),
            (&self.moderator, "moderator"),
            (&self.moderator_target, "moderator"),
            (&self.member, "member"),
            (&self.member_target, "member"),
        ] {
            add_member(server, room_id, &self.owner, user, role).await;
        }
        room_id
    }
}

const ROLES: [&str; 4] = ["member", "moderator", "admin", "owner"];

/// Sends `action` by `actor` on `target` in `room_id`; returns the status.
async fn act(
    server: &TestControlPlane,
    room_id: i64,
    actor: &User,
    action: &str,
    target: &User,
) -> u16 {
    let (method, path, body) = match action {
        "mute" => (
            "POST",
            format!("/v1/rooms/{room_id}/mutes"),
            json!({"user_id": target.id, "duration_seconds": 60}),
        ),
        "kick" => (
            "POST",
            format!("/v1/rooms/{room_id}/kicks"),
            json!({"user_id": target.id}),
        ),
        "ban" => (
            "POST",
            format!("/v1/rooms/{room_id}/bans"),
            json!({"user_id": target.id}),
        ),
        role => (
            "PUT",
            format!("/v1/rooms/{room_id}/members/{}/role", target.id),
            json!({"role": role.trim_start_matches("make_")}),
        ),
    };
    let (status, body) = call(server, actor, method, &path, Some(body)).await;
    if status >= 400 {
        TestControlPlane::assert_error_shape(&body);
    }
    status
}

#[tokio::test]
async fn every_role_may_act_only_on_lower_roles_as_the_table_says() {
    // Rows: actor member, moderator, admin, owner. Columns: target member,
    // moderator, admin, owner. `y` succeeds, `-` is 403.
    let table: [(&str, [&str; 4]); 6] = [
        ("mute", ["- - - -", "y - - -", "y y - -", "y y y -"]),
        ("kick", ["- - - -", "y - - -", "y y - -", "y y y -"]),
        ("ban", ["- - - -", "- - - -", "y y - -", "y y y -"]),
        ("make_member", ["- - - -", "- - - -", "y y - -", "y y y -"]),
        (
            "make_moderator",
            ["- - - -", "- - - -", "y y - -", "y y y -"],
        ),
        ("make_admin", ["- - - -", "- - - -", "- - - -", "y y y -"]),
    ];
    for backend in BACKENDS {
        let server = start(backend).await;
        let cast = Cast::register(&server).await;
        for (action, rows) in table {
            for (actor_role, row) in ROLES.into_iter().zip(rows) {
                // A fresh room per row: successful actions change the seats.
                let room_id = cast.room(&server).await;
                for (target_role, cell) in ROLES.into_iter().zip(row.split_whitespace()) {
                    let status = act(
                        &server,
                        room_id,
                        cast.actor(actor_role),
                        action,
                        cast.target(target_role),
                    )
                    .await;
                    let expected = if cell == "y" {
                        [200, 201, 204]
                    } else {
                        [403; 3]
                    };
                    assert!(
                        expected.contains(&status),
                        "{backend:?}: {actor_role} {action} on {target_role} answered {status}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn room_wide_actions_follow_the_table_for_every_role() {
    // (action, [member, moderator, admin, owner]) with the expected status.
    for backend in BACKENDS {
        let server = start(backend).await;
        let cast = Cast::register(&server).await;
        let outsider = register(&server, "outsider").await;
        let room_id = cast.room(&server).await;
        for (role, expected) in ROLES.into_iter().zip([403, 200, 200, 200]) {
            let actor = cast.actor(role);
            let (status, _) = call(
                &server,
                actor,
                "POST",
                &format!("/v1/rooms/{room_id}/invites"),
                Some(json!({"user_id": outsider.id})),
            )
            .await;
            assert!(
                status == expected || (expected == 200 && status == 201),
                "{backend:?}: {role} invites: {status}"
            );
        }
        for (role, expected) in ROLES.into_iter().zip([403, 403, 200, 200]) {
            let (status, _) = call(
                &server,
                cast.actor(role),
                "PATCH",
                &format!("/v1/rooms/{room_id}"),
                Some(json!({"topic": role})),
            )
            .await;
            assert_eq!(status, expected, "{backend:?}: {role} changes settings");
            let (status, _) = call(
                &server,
                cast.actor(role),
                "GET",
                &format!("/v1/rooms/{room_id}/audit-log"),
                None,
            )
            .await;
            assert_eq!(status, expected, "{backend:?}: {role} reads the audit log");
        }
        for (role, expected) in ROLES.into_iter().zip([403, 403, 403, 204]) {
            let (status, _) = call(
                &server,
                cast.actor(role),
                "DELETE",
                &format!("/v1/rooms/{room_id}"),
                None,
            )
            .await;
            assert_eq!(status, expected, "{backend:?}: {role} deletes the room");
        }
    }
}

#[tokio::test]
async fn only_the_owner_transfers_ownership_and_stays_an_admin() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let cast = Cast::register(&server).await;
        let room_id = cast.room(&server).await;
        for role in ["member", "moderator", "admin"] {
            let status = act(
                &server,
                room_id,
                cast.actor(role),
                "make_owner",
                cast.target("member"),
            )
            .await;
            assert_eq!(status, 403, "{backend:?}: {role} transfers ownership");
        }
        let status = act(&server, room_id, &cast.owner, "make_owner", &cast.admin).await;
        assert_eq!(status, 200);
        let (_, room) = call(
            &server,
            &cast.owner,
            "GET",
            &format!("/v1/rooms/{room_id}"),
            None,
        )
        .await;
        assert_eq!(
            (room["owner_id"].as_i64(), room["my_role"].as_str()),
            (Some(cast.admin.id), Some("admin"))
        );
        // The old owner, now an equal of the other admins, cannot touch them.
        let status = act(&server, room_id, &cast.owner, "kick", &cast.admin_target).await;
        assert_eq!(status, 403);
        let status = act(&server, room_id, &cast.admin, "kick", &cast.owner).await;
        assert_eq!(status, 204, "the new owner outranks the old one");
    }
}

#[tokio::test]
async fn rights_tell_the_data_plane_what_each_role_may_do() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let cast = Cast::register(&server).await;
        let outsider = register(&server, "outsider").await;
        let room_id = cast.room(&server).await;
        let (status, _) = call(
            &server,
            &cast.owner,
            "PATCH",
            &format!("/v1/rooms/{room_id}"),
            Some(json!({"slow_mode_seconds": 30})),
        )
        .await;
        assert_eq!(status, 200);
        let db = open_database(&server).await;
        for (user, role) in [
            (&cast.member, Role::Member),
            (&cast.moderator, Role::Moderator),
            (&cast.admin, Role::Admin),
            (&cast.owner, Role::Owner),
        ] {
            let rights = rights(&db, room_id, user.id).await.unwrap();
            assert!(rights.room_exists && rights.can_read && rights.can_post && !rights.banned);
            assert_eq!(rights.role, Some(role));
            let moderates = role >= Role::Moderator;
            assert_eq!(
                (rights.can_moderate, rights.can_delete_others),
                (moderates, moderates),
                "{role:?}"
            );
            assert_eq!(
                rights.slow_mode_seconds,
                if moderates { 0 } else { 30 },
                "{role:?}: moderators skip slow mode"
            );
        }
        let stranger = rights(&db, room_id, outsider.id).await.unwrap();
        assert!(
            stranger.room_exists
                && !stranger.can_read
                && !stranger.can_post
                && stranger.role.is_none()
        );
        let missing = rights(&db, 987_654, cast.owner.id).await.unwrap();
        assert!(!missing.room_exists && !missing.can_read);
        let (status, _) = call(
            &server,
            &cast.owner,
            "PATCH",
            &format!("/v1/rooms/{room_id}"),
            Some(json!({"is_public": true})),
        )
        .await;
        assert_eq!(status, 200);
        let reader = rights(&db, room_id, outsider.id).await.unwrap();
        assert!(
            reader.can_read && !reader.can_post,
            "anyone reads a public room; members post"
        );
    }
}
