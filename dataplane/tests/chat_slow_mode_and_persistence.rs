//! Chat bounds enforced where a room is sequenced: slow mode (members wait
//! between messages, moderators do not) and the owner shard's bounded
//! persistence queue (while the control plane cannot commit, sends past the
//! bound are refused with `Unavailable`, and no acknowledgement is ever sent
//! for a message that is not stored).

mod support;

use std::time::Duration;

use support::chat::{next_message, send_unacknowledged, ChatWorld, STEP};
use support::{for_each_driver, TestRuntime};
use veza_bench::chat_client::ChatClientError;
use veza_proto::chat::{ErrorCode, ServerFrame};

#[test]
fn slow_mode_makes_members_wait_and_lets_moderators_post() {
    for_each_driver(|driver| {
        TestRuntime::new().run(async {
            let world = ChatWorld::start(driver, &[]).await;
            let alice = world.user("alice").await;
            let bob = world.user("bob").await;
            let room = world
                .api
                .create_room(&alice.access_token, "slow", true)
                .await
                .unwrap();
            world
                .api
                .set_slow_mode(&alice.access_token, room, 1)
                .await
                .unwrap();
            world.api.join_room(&bob.access_token, room).await.unwrap();
            let mut member = world.client(&bob).await;
            let mut owner = world.client(&alice).await;

            member.send_message(room, "one", "", STEP).await.unwrap();
            let retry_after_ms = match member.send_message(room, "two", "", STEP).await {
                Err(ChatClientError::Server {
                    code: ErrorCode::SlowMode,
                    retry_after_ms,
                    ..
                }) => retry_after_ms,
                other => panic!("expected SlowMode, got {other:?}"),
            };
            assert!(
                (1..=1000).contains(&retry_after_ms),
                "within the 1 s interval: {retry_after_ms}"
            );
            // The owner moderates the room: no interval for her.
            for body in ["owner a", "owner b"] {
                owner.send_message(room, body, "", STEP).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(u64::from(retry_after_ms) + 50)).await;
            member.send_message(room, "three", "", STEP).await.unwrap();

            let bodies: Vec<String> = world
                .stored_messages(&alice.access_token, room)
                .await
                .into_iter()
                .map(|(_, body)| body)
                .collect();
            assert_eq!(bodies, ["one", "owner a", "owner b", "three"]);
        });
    });
}

#[test]
fn a_full_persistence_queue_refuses_sends_and_acknowledges_only_what_is_stored() {
    for_each_driver(|driver| {
        TestRuntime::new().run(async {
            let env = [("VEZA_CHAT_PERSIST_QUEUE_MAX", "4")];
            let world = ChatWorld::start(driver, &env).await;
            let alice = world.user("alice").await;
            let room = world
                .api
                .create_room(&alice.access_token, "queue", true)
                .await
                .unwrap();
            let mut watcher = world.client(&alice).await;
            watcher.subscribe(room, -1, STEP).await.unwrap();
            let mut sender = world.client(&alice).await;

            // Nothing commits while the control plane is stopped.
            world.control.signal(libc::SIGSTOP);
            let mut requests = Vec::new();
            for number in 1..=6 {
                requests.push(send_unacknowledged(&mut sender, room, &format!("m{number}")).await);
            }
            let mut refused = Vec::new();
            while refused.len() < 2 {
                match sender.next_frame(STEP).await {
                    Ok(ServerFrame::Error {
                        request_id, code, ..
                    }) => {
                        assert_eq!(code, ErrorCode::Unavailable);
                        refused.push(request_id);
                    }
                    Ok(ServerFrame::Sent { .. }) => {
                        world.control.signal(libc::SIGCONT);
                        panic!("an acknowledgement before the commit");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        world.control.signal(libc::SIGCONT);
                        panic!("{error}");
                    }
                }
            }
            assert_eq!(
                refused,
                requests[4..].to_vec(),
                "the 5th and 6th are refused"
            );
            // Fan-out did not wait: the watcher saw the four queued ones.
            let mut seen = Vec::new();
            for _ in 0..4 {
                seen.push(next_message(&mut watcher).await.body);
            }
            assert_eq!(seen, ["m1", "m2", "m3", "m4"]);
            let queued = tokio::task::block_in_place(|| world.server.metrics())
                .sum("veza_limit_hits_total", &[("limit", "chat_persist_queue")]);
            assert_eq!(queued, 2.0, "each refusal is counted");

            world.control.signal(libc::SIGCONT);
            let mut acknowledged = Vec::new();
            while acknowledged.len() < 4 {
                match sender.next_frame(Duration::from_secs(30)).await.unwrap() {
                    ServerFrame::Sent {
                        request_id, seq, ..
                    } => {
                        assert!(
                            !refused.contains(&request_id),
                            "a refused send was acknowledged"
                        );
                        acknowledged.push(seq);
                    }
                    ServerFrame::Error { request_id, .. } => {
                        panic!("request {request_id} refused after the control plane came back")
                    }
                    _ => {}
                }
            }
            assert_eq!(acknowledged, [1, 2, 3, 4]);
            // The queue drained: sending works again.
            let seq = sender.send_message(room, "m7", "m7", STEP).await.unwrap();
            assert_eq!(seq, 5);
            let stored = world.stored_messages(&alice.access_token, room).await;
            let expected: Vec<(i64, String)> =
                [(1, "m1"), (2, "m2"), (3, "m3"), (4, "m4"), (5, "m7")]
                    .into_iter()
                    .map(|(seq, body)| (seq, body.to_string()))
                    .collect();
            assert_eq!(stored, expected);
        });
    });
}
