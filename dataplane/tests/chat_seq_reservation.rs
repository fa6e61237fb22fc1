//! A room's seqs are reserved in the control plane before the owner shard
//! assigns them (`ReserveSeqs`): a data plane killed while messages were
//! shown to clients but not yet stored never hands their seqs to new
//! messages after the restart (clients de-duplicate by seq and would drop
//! them), a clean stop gives the unused seqs back so that seqs go on without
//! a gap, and a room whose reservation is used up while the control plane
//! is away refuses sends with `Unavailable` rather than guessing.

mod support;

use std::time::Duration;

use support::chat::{next_message, send_unacknowledged, ChatWorld, STEP};
use support::control_plane::data_plane_options;
use support::{for_each_driver, Driver, TestRuntime};
use veza_bench::chat_client::ChatClientError;
use veza_proto::chat::{ErrorCode, ServerFrame};

/// Starts a new data plane against the world's control plane (the old one
/// is gone).
fn restart_data_plane(world: &mut ChatWorld, driver: Driver, env: &[(&str, &str)]) {
    let options = data_plane_options(driver, &world.control).envs(env);
    world.server = tokio::task::block_in_place(|| options.start());
}

#[test]
fn seqs_shown_before_a_data_plane_crash_are_never_given_to_new_messages() {
    for_each_driver(|driver| {
        TestRuntime::new().run(async {
            let mut world = ChatWorld::start(driver, &[]).await;
            let alice = world.user("alice").await;
            let room = world
                .api
                .create_room(&alice.access_token, "crash", true)
                .await
                .unwrap();
            let mut watcher = world.client(&alice).await;
            watcher.subscribe(room, -1, STEP).await.unwrap();
            let mut sender = world.client(&alice).await;

            // With the control plane stopped nothing commits, but fan-out
            // does not wait: the watcher sees seqs 1 to 5.
            world.control.signal(libc::SIGSTOP);
            for number in 1..=5 {
                send_unacknowledged(&mut sender, room, &format!("lost {number}")).await;
            }
            let mut seen = Vec::new();
            for _ in 1..=5 {
                seen.push(next_message(&mut watcher).await.seq);
            }
            assert_eq!(seen, vec![1, 2, 3, 4, 5]);

            // The data plane dies before the commit; the messages are lost
            // (never acknowledged), but their seqs were shown.
            world.server.signal(libc::SIGKILL);
            world
                .server
                .wait_for_exit(Duration::from_secs(10))
                .expect("the killed data plane exits");
            world.control.signal(libc::SIGCONT);
            restart_data_plane(&mut world, driver, &[]);

            let mut watcher = world.client(&alice).await;
            let (replayed, subscription) = watcher.subscribe(room, 5, STEP).await.unwrap();
            assert!(
                replayed.is_empty(),
                "nothing stored to replay: {replayed:?}"
            );
            assert!(
                subscription.head_seq >= 5,
                "the head is past every shown seq: {subscription:?}"
            );
            let mut sender = world.client(&alice).await;
            let seq = sender
                .send_message(room, "after the crash", "after", STEP)
                .await
                .unwrap();
            let block = 1024;
            assert!(
                seq > 5 && seq <= 5 + 2 * block,
                "a new message gets a seq no client saw before, within two blocks: {seq}"
            );
            let delivered = next_message(&mut watcher).await;
            assert_eq!(
                (delivered.seq, delivered.body.as_str()),
                (seq, "after the crash"),
                "a client that saw 1-5 gets the new message"
            );
            assert_eq!(
                world.stored_messages(&alice.access_token, room).await,
                vec![(seq, "after the crash".to_string())]
            );
        });
    });
}

#[test]
fn a_clean_restart_gives_unused_seqs_back_and_seqs_go_on_without_a_gap() {
    for_each_driver(|driver| {
        TestRuntime::new().run(async {
            let mut world = ChatWorld::start(driver, &[]).await;
            let alice = world.user("alice").await;
            let room = world
                .api
                .create_room(&alice.access_token, "clean", true)
                .await
                .unwrap();
            let mut sender = world.client(&alice).await;
            for number in 1..=3 {
                let seq = sender
                    .send_message(
                        room,
                        &format!("before {number}"),
                        &format!("b{number}"),
                        STEP,
                    )
                    .await
                    .unwrap();
                assert_eq!(seq, number);
            }
            drop(sender);
            let status = tokio::task::block_in_place(|| world.server.stop());
            assert!(status.success(), "{status:?}");
            restart_data_plane(&mut world, driver, &[]);

            let mut sender = world.client(&alice).await;
            let seq = sender
                .send_message(room, "after", "after", STEP)
                .await
                .unwrap();
            assert_eq!(seq, 4, "the stop gave seqs 4 and up back");
        });
    });
}

#[test]
fn a_room_whose_reserved_seqs_run_out_while_the_control_plane_is_away_refuses_sends() {
    for_each_driver(|driver| {
        TestRuntime::new().run(async {
            let env = [("VEZA_CHAT_SEQ_RESERVE_BLOCK", "8")];
            let mut world = ChatWorld::start(driver, &env).await;
            let alice = world.user("alice").await;
            let room = world
                .api
                .create_room(&alice.access_token, "away", true)
                .await
                .unwrap();
            let mut sender = world.client(&alice).await;
            // Loads the room: seqs 1-8 are reserved.
            sender.subscribe(room, -1, STEP).await.unwrap();

            tokio::task::block_in_place(|| world.control.kill());
            let mut requests = Vec::new();
            for number in 1..=10 {
                requests.push(send_unacknowledged(&mut sender, room, &format!("m{number}")).await);
            }
            // Seqs 1-8 go out (their acknowledgements wait for the commit);
            // the 9th and 10th find no reserved seq and are refused.
            let mut delivered = Vec::new();
            let mut refused = Vec::new();
            while delivered.len() + refused.len() < 10 {
                match sender.next_frame(STEP).await.unwrap() {
                    ServerFrame::Message(event) => delivered.push(event.seq),
                    ServerFrame::Error {
                        request_id, code, ..
                    } => {
                        assert_eq!(code, ErrorCode::Unavailable);
                        refused.push(request_id);
                    }
                    ServerFrame::Sent { .. } => panic!("an acknowledgement while nothing commits"),
                    _ => {}
                }
            }
            assert_eq!(delivered, (1..=8).collect::<Vec<i64>>());
            assert_eq!(refused, requests[8..].to_vec());

            // Back: the eight are committed and acknowledged, and sends work.
            tokio::task::block_in_place(|| world.control.spawn());
            let mut acknowledged = Vec::new();
            while acknowledged.len() < 8 {
                match sender.next_frame(Duration::from_secs(30)).await {
                    Ok(ServerFrame::Sent { seq, .. }) => acknowledged.push(seq),
                    Ok(_) => {}
                    Err(ChatClientError::Timeout) => panic!("acknowledged only {acknowledged:?}"),
                    Err(error) => panic!("{error}"),
                }
            }
            acknowledged.sort_unstable();
            assert_eq!(acknowledged, (1..=8).collect::<Vec<i64>>());
            let seq = loop {
                // The shard reconnects with backoff; until then, Unavailable.
                match sender.send_message(room, "later", "later", STEP).await {
                    Ok(seq) => break seq,
                    Err(error) if error.error_code() == Some(ErrorCode::Unavailable) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(error) => panic!("{error}"),
                }
            };
            assert_eq!(seq, 9, "the refused sends took no seq");
            let stored: Vec<i64> = world
                .stored_messages(&alice.access_token, room)
                .await
                .into_iter()
                .map(|(seq, _)| seq)
                .collect();
            assert_eq!(stored, (1..=9).collect::<Vec<i64>>());
        });
    });
}
