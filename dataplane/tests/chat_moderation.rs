//! Who may do what in a room, and moderation as a connected user sees it:
//! per-role permissions on the chat connection, mutes, kicks and bans made
//! over REST taking effect on live connections while the room carries on,
//! direct messages, mentions, typing and presence, threads and read markers.
//! Real control plane, real two-shard data plane, the Rust client library.

mod support;

use std::time::Duration;

use support::chat::{
    event_room_id, frames_within, next_message, next_non_ephemeral, wait_for, ChatWorld, STEP,
};
use support::{for_each_driver, Driver, TestRuntime};
use veza_bench::chat_client::{ChatClient, ChatClientError, MessageDraft};
use veza_bench::control_api::{RoomRole, Session};
use veza_proto::chat::{ErrorCode, MessageEvent, PresenceStatus, RemovedReason, ServerFrame};

/// How long a REST moderation change may take to reach a live connection.
const TAKES_EFFECT_WITHIN: Duration = Duration::from_secs(5);

/// How long a test listens to be sure that something does not arrive.
const QUIET_WINDOW: Duration = Duration::from_millis(1_000);

/// Pause between attempts while a change travels to the data plane.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Frames read at most while waiting for a pair of events.
const FRAMES_PER_WAIT_MAX: usize = 100;

fn run(driver: Driver, env: &[(&str, &str)], test: impl AsyncFnOnce(ChatWorld)) {
    let runtime = TestRuntime::new();
    runtime.run(async {
        let world = ChatWorld::start(driver, env).await;
        test(world).await;
    });
}

/// Fails unless `result` is an `Error` reply with `code`; returns its
/// `retry_after_ms`.
fn expect_error<T: std::fmt::Debug>(
    result: Result<T, ChatClientError>,
    code: ErrorCode,
    what: &str,
) -> u32 {
    match result {
        Err(ChatClientError::Server {
            code: got,
            retry_after_ms,
            message,
        }) => {
            assert_eq!(got, code, "{what}: {message}");
            retry_after_ms
        }
        other => panic!("{what}: expected Error {}, got {other:?}", code.name()),
    }
}

/// The `Message` event with `body`, passing over other frames.
async fn message_with_body(client: &mut ChatClient, body: &str) -> MessageEvent {
    wait_for(
        client,
        STEP,
        &format!("the message {body:?}"),
        |frame| match frame {
            ServerFrame::Message(message) if message.body == body => Some(message.clone()),
            _ => None,
        },
    )
    .await
}

/// The `Removed` event of `room_id`, passing over other frames.
async fn removal_from(client: &mut ChatClient, room_id: i64) -> RemovedReason {
    wait_for(
        client,
        TAKES_EFFECT_WITHIN,
        "a Removed event",
        |frame| match frame {
            ServerFrame::Removed {
                room_id: removed_from,
                reason,
            } if *removed_from == room_id => Some(*reason),
            _ => None,
        },
    )
    .await
}

/// The next `Presence` event about `user_id`, passing over other frames.
async fn presence_of(client: &mut ChatClient, user_id: i64, room_id: i64) -> PresenceStatus {
    wait_for(
        client,
        STEP,
        &format!("presence of user {user_id}"),
        |frame| match frame {
            ServerFrame::Presence {
                room_id: for_room,
                user_id: about,
                status,
            } if *about == user_id => {
                assert_eq!(*for_room, room_id, "delivered for the subscribed room");
                Some(*status)
            }
            _ => None,
        },
    )
    .await
}

/// Posts to `room_id` until the server refuses (a moderation change made
/// over REST reaches the room owner a moment after REST answered); returns
/// the refusal and the seqs posted before it.
async fn post_until_refused(
    client: &mut ChatClient,
    room_id: i64,
    label: &str,
) -> (ChatClientError, Vec<i64>) {
    let deadline = tokio::time::Instant::now() + TAKES_EFFECT_WITHIN;
    let mut posted = Vec::new();
    for attempt in 0.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{label}: every post was accepted for {TAKES_EFFECT_WITHIN:?}"
        );
        let draft = MessageDraft {
            room_id,
            nonce: format!("{label}-{attempt}"),
            body: format!("{label} attempt {attempt}"),
            ..MessageDraft::default()
        };
        match client.post(draft, STEP).await {
            Ok(seq) => posted.push(seq),
            Err(error) => return (error, posted),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    unreachable!("the loop ends by the deadline")
}

/// Posts `body` until it is accepted, tolerating only `while_refused_with`
/// meanwhile; its seq.
async fn post_once_allowed(
    client: &mut ChatClient,
    room_id: i64,
    body: &str,
    while_refused_with: ErrorCode,
) -> i64 {
    let deadline = tokio::time::Instant::now() + TAKES_EFFECT_WITHIN;
    // Bounded by the deadline.
    loop {
        match client.send_message(room_id, body, body, STEP).await {
            Ok(seq) => return seq,
            Err(error) if error.error_code() == Some(while_refused_with) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{body:?} still refused after {TAKES_EFFECT_WITHIN:?}: {error}"
                );
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => panic!("{body:?}: {error}"),
        }
    }
}

/// Subscribes, retrying only while refused with `Forbidden` (a membership
/// change made over REST travels to the data plane meanwhile).
async fn subscribe_once_allowed(client: &mut ChatClient, room_id: i64) {
    let deadline = tokio::time::Instant::now() + TAKES_EFFECT_WITHIN;
    // Bounded by the deadline.
    loop {
        match client.subscribe(room_id, -1, STEP).await {
            Ok(_) => return,
            Err(error) if error.error_code() == Some(ErrorCode::Forbidden) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still forbidden after {TAKES_EFFECT_WITHIN:?}"
                );
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => panic!("subscribe to room {room_id} again: {error}"),
        }
    }
}

/// Connected clients of `sessions`, each subscribed to `room_id`.
async fn subscribed_clients(
    world: &ChatWorld,
    sessions: &[&Session],
    room_id: i64,
) -> Vec<ChatClient> {
    let mut clients = Vec::new();
    for session in sessions {
        let mut client = world.client(session).await;
        client.subscribe(room_id, -1, STEP).await.unwrap();
        clients.push(client);
    }
    clients
}

/// Fails if any of `frames` is an event of `room_id`.
fn assert_nothing_of_room(frames: &[ServerFrame], room_id: i64, who: &str) {
    let leaked: Vec<&ServerFrame> = frames
        .iter()
        .filter(|frame| event_room_id(frame) == Some(room_id))
        .collect();
    assert!(
        leaked.is_empty(),
        "{who} still received events of room {room_id}: {leaked:?}"
    );
}

#[test]
fn each_role_may_do_in_a_room_only_what_its_permissions_allow() {
    run(Driver::IoUring, &[], async |world| {
        let owner = world.user("olive").await;
        let member = world.user("bruno").await;
        let moderator = world.user("mira").await;
        let outsider = world.user("otto").await;
        let room = world
            .private_room(&owner, "staff", &[&member, &moderator])
            .await;
        world
            .api
            .set_role(
                &owner.access_token,
                room,
                moderator.user_id,
                RoomRole::Moderator,
            )
            .await
            .unwrap();

        // A non-member may neither read nor post in a private room; a room
        // that does not exist is not found.
        let mut outsider_client = world.client(&outsider).await;
        expect_error(
            outsider_client.subscribe(room, -1, STEP).await,
            ErrorCode::Forbidden,
            "a non-member subscribes to a private room",
        );
        expect_error(
            outsider_client
                .send_message(room, "let me in", "", STEP)
                .await,
            ErrorCode::Forbidden,
            "a non-member posts in a private room",
        );
        let unknown_room = room + 1_000;
        expect_error(
            outsider_client.subscribe(unknown_room, -1, STEP).await,
            ErrorCode::NotFound,
            "subscribe to a room that does not exist",
        );
        expect_error(
            outsider_client
                .send_message(unknown_room, "anyone?", "", STEP)
                .await,
            ErrorCode::NotFound,
            "post to a room that does not exist",
        );

        let mut clients = subscribed_clients(&world, &[&owner, &member, &moderator], room).await;
        let owner_seq = clients[0]
            .send_message(room, "the owner's words", "", STEP)
            .await
            .unwrap();
        let member_seq = clients[1]
            .send_message(room, "the member's words", "", STEP)
            .await
            .unwrap();
        for client in clients.iter_mut() {
            assert_eq!(next_message(client).await.seq, owner_seq);
            assert_eq!(next_message(client).await.seq, member_seq);
        }

        // A member deletes only their own messages.
        expect_error(
            clients[1].delete(room, owner_seq, STEP).await,
            ErrorCode::Forbidden,
            "a member deletes the owner's message",
        );
        // Nobody edits someone else's text, whatever their role.
        expect_error(
            clients[1]
                .edit(room, owner_seq, "rewritten by the member", STEP)
                .await,
            ErrorCode::Forbidden,
            "a member edits the owner's message",
        );
        expect_error(
            clients[2]
                .edit(room, member_seq, "rewritten by the moderator", STEP)
                .await,
            ErrorCode::Forbidden,
            "a moderator edits a member's message",
        );
        expect_error(
            clients[0]
                .edit(room, member_seq, "rewritten by the owner", STEP)
                .await,
            ErrorCode::Forbidden,
            "the owner edits a member's message",
        );

        // The author edits; a moderator deletes a member's message. Every
        // subscriber sees exactly these two changes, in order: the refused
        // commands changed nothing.
        clients[1]
            .edit(room, member_seq, "the member's words, corrected", STEP)
            .await
            .unwrap();
        clients[2].delete(room, member_seq, STEP).await.unwrap();
        for (index, client) in clients.iter_mut().enumerate() {
            match next_non_ephemeral(client).await {
                ServerFrame::Edited {
                    room_id,
                    seq,
                    editor_id,
                    body,
                    ..
                } => {
                    assert_eq!(
                        (room_id, seq, editor_id, body.as_str()),
                        (
                            room,
                            member_seq,
                            member.user_id,
                            "the member's words, corrected"
                        ),
                        "client {index}"
                    );
                }
                other => panic!("client {index}: expected Edited, got {other:?}"),
            }
            match next_non_ephemeral(client).await {
                ServerFrame::Deleted {
                    room_id,
                    seq,
                    deleter_id,
                    ..
                } => {
                    assert_eq!(
                        (room_id, seq, deleter_id),
                        (room, member_seq, moderator.user_id),
                        "client {index}"
                    );
                }
                other => panic!("client {index}: expected Deleted, got {other:?}"),
            }
        }

        // History agrees: the owner's message untouched, the member's a tombstone.
        let page = clients[0].history(room, 0, -1, 10, STEP).await.unwrap();
        let summary: Vec<(i64, &str, bool)> = page
            .iter()
            .map(|message| {
                (
                    message.seq,
                    message.body.as_str(),
                    message.deleted_at_ms != 0,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (owner_seq, "the owner's words", false),
                (member_seq, "", true)
            ]
        );
    });
}

/// PERMISSIONS.md: "delete others' messages" is allowed to moderators and
/// above "only on a target of strictly lower role".
#[test]
fn a_moderator_cannot_delete_messages_of_an_equal_or_higher_role() {
    run(Driver::IoUring, &[], async |world| {
        let owner = world.user("olive").await;
        let moderator = world.user("mira").await;
        let other_moderator = world.user("mose").await;
        let admin = world.user("adele").await;
        let room = world
            .private_room(&owner, "ranks", &[&moderator, &other_moderator, &admin])
            .await;
        for (user, role) in [
            (&moderator, RoomRole::Moderator),
            (&other_moderator, RoomRole::Moderator),
            (&admin, RoomRole::Admin),
        ] {
            world
                .api
                .set_role(&owner.access_token, room, user.user_id, role)
                .await
                .unwrap();
        }
        let mut owner_client = world.client(&owner).await;
        let mut moderator_client = world.client(&moderator).await;
        let mut other_moderator_client = world.client(&other_moderator).await;
        let mut admin_client = world.client(&admin).await;
        let owner_seq = owner_client
            .send_message(room, "from the owner", "", STEP)
            .await
            .unwrap();
        let moderator_seq = other_moderator_client
            .send_message(room, "from a moderator", "", STEP)
            .await
            .unwrap();

        expect_error(
            moderator_client.delete(room, owner_seq, STEP).await,
            ErrorCode::Forbidden,
            "a moderator deletes the owner's message",
        );
        expect_error(
            moderator_client.delete(room, moderator_seq, STEP).await,
            ErrorCode::Forbidden,
            "a moderator deletes another moderator's message",
        );
        // The positive space: an admin outranks a moderator.
        admin_client
            .delete(room, moderator_seq, STEP)
            .await
            .unwrap();
        let page = owner_client.history(room, 0, -1, 10, STEP).await.unwrap();
        let deleted: Vec<(i64, bool)> = page
            .iter()
            .map(|message| (message.seq, message.deleted_at_ms != 0))
            .collect();
        assert_eq!(deleted, [(owner_seq, false), (moderator_seq, true)]);
    });
}

/// A refused `Subscribe` had no effect (PROTOCOL.md, Error codes), so the
/// same connection may subscribe again once allowed.
#[test]
fn a_refused_subscribe_can_be_retried_on_the_same_connection() {
    run(Driver::IoUring, &[], async |world| {
        let owner = world.user("olive").await;
        let guest = world.user("gina").await;
        let room = world.private_room(&owner, "later", &[]).await;
        let mut guest_client = world.client(&guest).await;

        let unknown_room = room + 1_000;
        for attempt in 1..=2 {
            expect_error(
                guest_client.subscribe(unknown_room, -1, STEP).await,
                ErrorCode::NotFound,
                &format!("subscribe to a room that does not exist, attempt {attempt}"),
            );
        }
        expect_error(
            guest_client.subscribe(room, -1, STEP).await,
            ErrorCode::Forbidden,
            "subscribe before the invitation",
        );
        world
            .api
            .invite(&owner.access_token, room, guest.user_id)
            .await
            .unwrap();
        subscribe_once_allowed(&mut guest_client, room).await;
        let mut owner_client = world.client(&owner).await;
        owner_client
            .send_message(room, "welcome, gina", "", STEP)
            .await
            .unwrap();
        assert_eq!(
            message_with_body(&mut guest_client, "welcome, gina")
                .await
                .author_id,
            owner.user_id
        );
    });
}

#[test]
fn mutes_kicks_and_bans_take_effect_on_connected_users_while_the_room_carries_on() {
    for_each_driver(|driver| {
        run(driver, &[], async |world| {
            let owner = world.user("olive").await;
            let muted = world.user("mute_then_ban").await;
            let kicked = world.user("kicked").await;
            let bystander = world.user("bystander").await;
            let room = world
                .private_room(&owner, "moderated", &[&muted, &kicked, &bystander])
                .await;
            let mut clients =
                subscribed_clients(&world, &[&owner, &muted, &kicked, &bystander], room).await;
            let [owner_client, muted_client, kicked_client, bystander_client] = &mut clients[..]
            else {
                unreachable!("four sessions");
            };

            // A timed mute: the muted user's next send is refused with a
            // hint within the mute's length; everyone else carries on, and
            // the muted user still reads.
            world
                .api
                .mute(&owner.access_token, room, muted.user_id, Some(60))
                .await
                .unwrap();
            let (refusal, _posted_before) = post_until_refused(muted_client, room, "muted").await;
            let retry_after_ms = expect_error::<()>(Err(refusal), ErrorCode::Muted, "muted send");
            assert!(
                retry_after_ms > 0 && retry_after_ms <= 60_000,
                "retry_after_ms {retry_after_ms} should be within the 60 s mute"
            );
            bystander_client
                .send_message(room, "the bystander carries on", "", STEP)
                .await
                .unwrap();
            for client in [&mut *owner_client, &mut *muted_client, &mut *kicked_client] {
                message_with_body(client, "the bystander carries on").await;
            }

            // Unmuted: sending works again, and everyone sees it.
            world
                .api
                .unmute(&owner.access_token, room, muted.user_id)
                .await
                .unwrap();
            let unmuted_seq =
                post_once_allowed(muted_client, room, "unmuted again", ErrorCode::Muted).await;
            for client in [
                &mut *owner_client,
                &mut *kicked_client,
                &mut *bystander_client,
            ] {
                assert_eq!(
                    message_with_body(client, "unmuted again").await.seq,
                    unmuted_seq
                );
            }

            // A kick ends the kicked connection's subscription at once, and
            // nothing more of the room reaches it.
            world
                .api
                .kick(&owner.access_token, room, kicked.user_id)
                .await
                .unwrap();
            assert_eq!(
                removal_from(kicked_client, room).await,
                RemovedReason::Kicked
            );
            owner_client
                .send_message(room, "after the kick", "", STEP)
                .await
                .unwrap();
            for client in [&mut *muted_client, &mut *bystander_client] {
                message_with_body(client, "after the kick").await;
            }
            let heard = frames_within(kicked_client, QUIET_WINDOW).await;
            assert_nothing_of_room(&heard, room, "the kicked user");
            expect_error(
                kicked_client.subscribe(room, -1, STEP).await,
                ErrorCode::Forbidden,
                "the kicked user subscribes to the private room again",
            );

            // A ban: Removed with reason Banned, then neither reading nor posting.
            world
                .api
                .ban(&owner.access_token, room, muted.user_id, None)
                .await
                .unwrap();
            assert_eq!(
                removal_from(muted_client, room).await,
                RemovedReason::Banned
            );
            owner_client
                .send_message(room, "after the ban", "", STEP)
                .await
                .unwrap();
            message_with_body(bystander_client, "after the ban").await;
            let heard = frames_within(muted_client, QUIET_WINDOW).await;
            assert_nothing_of_room(&heard, room, "the banned user");
            expect_error(
                muted_client.subscribe(room, -1, STEP).await,
                ErrorCode::Forbidden,
                "the banned user subscribes again",
            );
            expect_error(
                muted_client
                    .send_message(room, "let me back", "", STEP)
                    .await,
                ErrorCode::Forbidden,
                "the banned user posts",
            );

            // The room carried on throughout.
            let last_seq = bystander_client
                .send_message(room, "still here", "", STEP)
                .await
                .unwrap();
            assert_eq!(
                message_with_body(owner_client, "still here").await.seq,
                last_seq
            );
        });
    });
}

/// PROTOCOL.md, Error codes: `muted` carries retry_after_ms "until
/// unmuted; 0 = no end set".
#[test]
fn a_mute_without_an_end_is_refused_with_no_retry_hint() {
    run(Driver::IoUring, &[], async |world| {
        let owner = world.user("olive").await;
        let muted = world.user("quiet").await;
        let room = world.private_room(&owner, "hush", &[&muted]).await;
        let mut muted_client = world.client(&muted).await;
        world
            .api
            .mute(&owner.access_token, room, muted.user_id, None)
            .await
            .unwrap();
        let (refusal, _posted_before) = post_until_refused(&mut muted_client, room, "hush").await;
        let retry_after_ms = expect_error::<()>(Err(refusal), ErrorCode::Muted, "muted send");
        assert_eq!(retry_after_ms, 0, "no end set");
    });
}

/// PROTOCOL.md, `Removed`: reason Kicked is "no longer a member, or may no
/// longer read the room" — so a kick from a public room ends the
/// subscription too.
#[test]
fn a_member_kicked_from_a_public_room_loses_the_subscription() {
    run(Driver::IoUring, &[], async |world| {
        let owner = world.user("olive").await;
        let kicked = world.user("kicked").await;
        let room = world
            .api
            .create_room(&owner.access_token, "town square", true)
            .await
            .unwrap();
        world
            .api
            .join_room(&kicked.access_token, room)
            .await
            .unwrap();
        let mut kicked_client = world.client(&kicked).await;
        kicked_client.subscribe(room, -1, STEP).await.unwrap();
        world
            .api
            .kick(&owner.access_token, room, kicked.user_id)
            .await
            .unwrap();
        assert_eq!(
            removal_from(&mut kicked_client, room).await,
            RemovedReason::Kicked
        );
    });
}

#[test]
fn a_direct_message_room_is_for_its_two_members_only() {
    run(Driver::IoUring, &[], async |world| {
        let ana = world.user("ana").await;
        let ben = world.user("ben").await;
        let third = world.user("third").await;
        let dm = world
            .api
            .open_dm(&ana.access_token, ben.user_id)
            .await
            .unwrap();
        assert_eq!(
            world
                .api
                .open_dm(&ben.access_token, ana.user_id)
                .await
                .unwrap(),
            dm,
            "one DM room per pair, whoever opens it"
        );
        let mut clients = subscribed_clients(&world, &[&ana, &ben], dm).await;

        let to_ben = clients[0]
            .send_message(dm, "hi ben", "", STEP)
            .await
            .unwrap();
        let to_ana = clients[1]
            .send_message(dm, "hi ana", "", STEP)
            .await
            .unwrap();
        for client in clients.iter_mut() {
            let first = next_message(client).await;
            let second = next_message(client).await;
            assert_eq!(
                (first.seq, first.author_id, first.body.as_str()),
                (to_ben, ana.user_id, "hi ben")
            );
            assert_eq!(
                (second.seq, second.author_id, second.body.as_str()),
                (to_ana, ben.user_id, "hi ana")
            );
        }

        let mut third_client = world.client(&third).await;
        expect_error(
            third_client.subscribe(dm, -1, STEP).await,
            ErrorCode::Forbidden,
            "a third user subscribes to the DM",
        );
        expect_error(
            third_client.send_message(dm, "hello both", "", STEP).await,
            ErrorCode::Forbidden,
            "a third user posts in the DM",
        );
        expect_error(
            third_client.history(dm, 0, -1, 10, STEP).await,
            ErrorCode::Forbidden,
            "a third user reads the DM's history",
        );
        let heard = frames_within(&mut clients[0], Duration::from_millis(300)).await;
        assert!(
            !heard
                .iter()
                .any(|frame| matches!(frame, ServerFrame::Message(_))),
            "the refused post reached a member: {heard:?}"
        );
    });
}

#[test]
fn a_mention_reaches_every_connection_of_a_reader_and_no_one_else() {
    run(Driver::IoUring, &[], async |world| {
        let author = world.user("bea").await;
        let mentioned = world.user("cal").await;
        let stranger = world.user("dan").await;
        let room = world.private_room(&author, "mentions", &[&mentioned]).await;
        let mut author_client = world.client(&author).await;
        author_client.subscribe(room, -1, STEP).await.unwrap();
        let mut mentioned_elsewhere = world.client(&mentioned).await;
        let mut mentioned_reading = world.client(&mentioned).await;
        mentioned_reading.subscribe(room, -1, STEP).await.unwrap();
        let mut stranger_client = world.client(&stranger).await;

        let body = "@cal @dan have a look";
        let seq = author_client
            .post(
                MessageDraft {
                    room_id: room,
                    nonce: "mention-1".into(),
                    mentions: vec![mentioned.user_id, stranger.user_id],
                    body: body.into(),
                    ..MessageDraft::default()
                },
                STEP,
            )
            .await
            .unwrap();

        // Not subscribed: the Mention alone. Subscribed: Message and Mention.
        let pick_mention = |frame: &ServerFrame| match frame {
            ServerFrame::Mention {
                room_id,
                seq,
                author_id,
                body,
                ..
            } => Some((*room_id, *seq, *author_id, body.clone())),
            _ => None,
        };
        let expected = (room, seq, author.user_id, body.to_string());
        assert_eq!(
            wait_for(&mut mentioned_elsewhere, STEP, "a Mention", pick_mention).await,
            expected
        );
        let (mut message, mut mention) = (None, None);
        for _ in 0..FRAMES_PER_WAIT_MAX {
            if message.is_some() && mention.is_some() {
                break;
            }
            match mentioned_reading.next_frame(STEP).await.expect("a frame") {
                ServerFrame::Message(event) => message = Some(event),
                frame => mention = mention.or_else(|| pick_mention(&frame)),
            }
        }
        assert_eq!(
            mention.expect("a Mention on the subscribed connection"),
            expected
        );
        let message = message.expect("a Message on the subscribed connection");
        assert_eq!((message.seq, message.body.as_str()), (seq, body));
        let mut mentions = message.mentions.clone();
        mentions.sort_unstable();
        let mut expected_mentions = vec![mentioned.user_id, stranger.user_id];
        expected_mentions.sort_unstable();
        assert_eq!(
            mentions, expected_mentions,
            "the Message lists the mentions"
        );

        // Someone who may not read the private room hears nothing of it.
        let heard = frames_within(&mut stranger_client, QUIET_WINDOW).await;
        assert!(heard.is_empty(), "the stranger received {heard:?}");
    });
}

#[test]
fn typing_and_presence_reach_the_room_and_presence_aggregates_connections() {
    run(Driver::IoUring, &[], async |world| {
        let watcher = world.user("ada").await;
        let typist = world.user("bob").await;
        let room = world.private_room(&watcher, "presence", &[&typist]).await;
        let mut watcher_client = world.client(&watcher).await;
        watcher_client.subscribe(room, -1, STEP).await.unwrap();
        let mut typist_client = world.client(&typist).await;
        typist_client.subscribe(room, -1, STEP).await.unwrap();

        typist_client.typing(room, STEP).await.unwrap();
        let typing = wait_for(
            &mut watcher_client,
            STEP,
            "a Typing event",
            |frame| match frame {
                ServerFrame::Typing { room_id, user_id } if *user_id == typist.user_id => {
                    Some(*room_id)
                }
                _ => None,
            },
        )
        .await;
        assert_eq!(typing, room);

        // Do Not Disturb, then gone.
        typist_client
            .set_presence(PresenceStatus::DoNotDisturb, STEP)
            .await
            .unwrap();
        let mut status = presence_of(&mut watcher_client, typist.user_id, room).await;
        if status == PresenceStatus::Online {
            // Announced when the typist subscribed; the change comes next.
            status = presence_of(&mut watcher_client, typist.user_id, room).await;
        }
        assert_eq!(status, PresenceStatus::DoNotDisturb);
        typist_client.close(1000, STEP).await.unwrap();
        assert_eq!(
            presence_of(&mut watcher_client, typist.user_id, room).await,
            PresenceStatus::Offline
        );

        // Two connections: one Idle while the other is Online stays Online
        // (no event); when the Online one closes, the user is Idle.
        let mut staying_online = world.client(&typist).await;
        staying_online.subscribe(room, -1, STEP).await.unwrap();
        assert_eq!(
            presence_of(&mut watcher_client, typist.user_id, room).await,
            PresenceStatus::Online
        );
        let mut going_idle = world.client(&typist).await;
        going_idle.subscribe(room, -1, STEP).await.unwrap();
        going_idle
            .set_presence(PresenceStatus::Idle, STEP)
            .await
            .unwrap();
        let heard = frames_within(&mut watcher_client, QUIET_WINDOW).await;
        let presence_changes: Vec<&ServerFrame> = heard
            .iter()
            .filter(|frame| matches!(frame, ServerFrame::Presence { .. }))
            .collect();
        assert!(
            presence_changes.is_empty(),
            "the aggregate stayed Online, yet: {presence_changes:?}"
        );
        staying_online.close(1000, STEP).await.unwrap();
        assert_eq!(
            presence_of(&mut watcher_client, typist.user_id, room).await,
            PresenceStatus::Idle
        );
        drop(going_idle);
    });
}

#[test]
fn thread_replies_carry_their_parent_and_read_markers_are_stored() {
    run(Driver::IoUring, &[], async |world| {
        let owner = world.user("tia").await;
        let reader = world.user("uma").await;
        let room = world.private_room(&owner, "threads", &[&reader]).await;
        let mut clients = subscribed_clients(&world, &[&owner, &reader], room).await;

        let root = clients[0]
            .send_message(room, "thread root", "", STEP)
            .await
            .unwrap();
        let reply = clients[1]
            .post(
                MessageDraft {
                    room_id: room,
                    thread_parent_seq: root,
                    nonce: "reply-1".into(),
                    body: "a reply".into(),
                    ..MessageDraft::default()
                },
                STEP,
            )
            .await
            .unwrap();
        for client in clients.iter_mut() {
            assert_eq!(next_message(client).await.thread_parent_seq, 0);
            let delivered = next_message(client).await;
            assert_eq!(
                (
                    delivered.seq,
                    delivered.thread_parent_seq,
                    delivered.body.as_str()
                ),
                (reply, root, "a reply")
            );
        }

        // A parent beyond the room's newest message is refused and not delivered.
        expect_error(
            clients[1]
                .post(
                    MessageDraft {
                        room_id: room,
                        thread_parent_seq: reply + 10,
                        nonce: "reply-2".into(),
                        body: "a reply to nothing".into(),
                        ..MessageDraft::default()
                    },
                    STEP,
                )
                .await,
            ErrorCode::Invalid,
            "a thread parent beyond the head",
        );
        let next = clients[1]
            .send_message(room, "after the refusal", "", STEP)
            .await
            .unwrap();
        let delivered = next_message(&mut clients[0]).await;
        assert_eq!(
            (delivered.seq, delivered.body.as_str()),
            (next, "after the refusal")
        );
        let page = clients[0].history(room, 0, -1, 10, STEP).await.unwrap();
        let threads: Vec<(i64, i64)> = page
            .iter()
            .map(|message| (message.seq, message.thread_parent_seq))
            .collect();
        assert_eq!(threads, [(root, 0), (reply, root), (next, 0)]);

        // A read marker is stored once Ok arrives; REST shows it.
        clients[1].read_marker(room, reply, STEP).await.unwrap();
        let (status, marker) = world.read_marker(&reader, room).await;
        assert_eq!(status, 200, "{marker}");
        assert_eq!(marker["room_id"], room);
        assert_eq!(marker["seq"], reply, "{marker}");
        assert_eq!(marker["last_seq"], next, "{marker}");
        let (status, marker) = world.read_marker(&owner, room).await;
        assert_eq!((status, marker["seq"].as_i64()), (200, Some(0)), "{marker}");
        for seq in [0, next + 1] {
            expect_error(
                clients[1].read_marker(room, seq, STEP).await,
                ErrorCode::NotFound,
                &format!("a read marker at seq {seq}"),
            );
        }
        let (_, marker) = world.read_marker(&reader, room).await;
        assert_eq!(marker["seq"], reply, "refused markers changed nothing");
    });
}
