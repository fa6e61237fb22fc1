//! Chat rooms end to end, on both drivers: clients on different shards see
//! one order; edits, deletes and reactions reach everyone; acknowledgements
//! mean stored; resume replays exactly what was missed, from the backlog and
//! from the database.

mod support;

use std::collections::BTreeSet;

use support::chat::{next_message, next_non_ephemeral, ChatWorld, STEP};
use support::{for_each_driver, Driver, TestRuntime};
use veza_bench::chat_client::MessageDraft;
use veza_bench::control_api::HistoryQuery;
use veza_proto::chat::{ErrorCode, ServerFrame};

fn run(driver: Driver, env: &[(&str, &str)], test: impl AsyncFnOnce(ChatWorld)) {
    let runtime = TestRuntime::new();
    runtime.run(async {
        let world = ChatWorld::start(driver, env).await;
        test(world).await;
    });
}

#[test]
fn clients_on_different_shards_see_one_order_and_every_change() {
    for_each_driver(|driver| {
        run(driver, &[], async |world| {
            let alice = world.user("alice").await;
            let bob = world.user("bob").await;
            let room = world
                .api
                .create_room(&alice.access_token, "jazz", true)
                .await
                .unwrap();
            world.api.join_room(&bob.access_token, room).await.unwrap();
            let mut clients = world.clients_on_every_shard(&[&alice, &bob], 4).await;
            for (_, client) in clients.iter_mut() {
                let (replayed, subscribed) = client.subscribe(room, -1, STEP).await.unwrap();
                assert!(replayed.is_empty());
                assert_eq!(subscribed.head_seq, 0);
            }
            // Every client sends 10 messages without waiting for acks, so
            // sends from both shards interleave at the owner.
            let per_client = 10;
            for (index, (_, client)) in clients.iter_mut().enumerate() {
                for number in 0..per_client {
                    let request_id = client.next_request_id();
                    client
                        .send(&veza_proto::chat::ClientFrame::Send {
                            request_id,
                            room_id: room,
                            thread_parent_seq: 0,
                            nonce: format!("c{index}-{number}"),
                            mentions: vec![],
                            body: format!("client {index} message {number}"),
                        })
                        .await
                        .unwrap();
                }
            }
            let total = clients.len() * per_client;
            let mut orders = Vec::new();
            for (index, (_, client)) in clients.iter_mut().enumerate() {
                let mut order = Vec::new();
                let mut acks = BTreeSet::new();
                while order.len() < total || acks.len() < per_client {
                    match next_non_ephemeral(client).await {
                        ServerFrame::Message(message) => {
                            assert_eq!(message.room_id, room);
                            order.push((message.seq, message.body));
                        }
                        ServerFrame::Sent { seq, .. } => {
                            acks.insert(seq);
                        }
                        other => panic!("client {index}: unexpected {other:?}"),
                    }
                }
                let seqs: Vec<i64> = order.iter().map(|(seq, _)| *seq).collect();
                assert_eq!(
                    seqs,
                    (1..=total as i64).collect::<Vec<_>>(),
                    "dense seqs in order"
                );
                orders.push(order);
            }
            for order in &orders[1..] {
                assert_eq!(order, &orders[0], "every client sees the same order");
            }
            // Acknowledged means stored: the REST history has them all.
            let page = world
                .api
                .history(
                    &alice.access_token,
                    room,
                    HistoryQuery {
                        after_seq: Some(0),
                        limit: Some(100),
                        ..HistoryQuery::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(page.messages.len(), total);

            // Edit, react, delete by their authors: everyone sees each.
            let (author_id, first_body) = (clients[0].0, orders[0][0].1.clone());
            let author_seq = orders[0]
                .iter()
                .find(|(_, body)| body.starts_with("client 0 "))
                .map(|(seq, _)| *seq)
                .unwrap();
            let _ = first_body;
            clients[0]
                .1
                .edit(room, author_seq, "edited!", STEP)
                .await
                .unwrap();
            clients[1]
                .1
                .react(room, author_seq, true, "🎷", STEP)
                .await
                .unwrap();
            clients[0].1.delete(room, author_seq, STEP).await.unwrap();
            for (index, (_, client)) in clients.iter_mut().enumerate() {
                let mut seen = Vec::new();
                while seen.len() < 3 {
                    match next_non_ephemeral(client).await {
                        ServerFrame::Edited {
                            seq,
                            body,
                            editor_id,
                            ..
                        } => {
                            assert_eq!(
                                (seq, body.as_str(), editor_id),
                                (author_seq, "edited!", author_id)
                            );
                            seen.push("edited");
                        }
                        ServerFrame::Reaction {
                            seq, add, emoji, ..
                        } => {
                            assert_eq!((seq, add, emoji.as_str()), (author_seq, true, "🎷"));
                            seen.push("reaction");
                        }
                        ServerFrame::Deleted { seq, .. } => {
                            assert_eq!(seq, author_seq);
                            seen.push("deleted");
                        }
                        ServerFrame::Ok { .. } => {}
                        other => panic!("client {index}: unexpected {other:?}"),
                    }
                }
                assert_eq!(
                    seen,
                    ["edited", "reaction", "deleted"],
                    "in the order applied"
                );
            }
            // A deleted message cannot be edited; someone else's cannot be edited.
            let error = clients[0]
                .1
                .edit(room, author_seq, "again", STEP)
                .await
                .unwrap_err();
            assert_eq!(error.error_code(), Some(ErrorCode::NotFound));
            let other_seq = orders[0]
                .iter()
                .find(|(_, body)| !body.starts_with(&format!("client {} ", 0)))
                .map(|(seq, _)| *seq)
                .unwrap();
            let other_author = clients
                .iter()
                .position(|(user_id, _)| *user_id != author_id)
                .unwrap();
            let _ = other_author;
            let error = clients[0]
                .1
                .edit(room, other_seq + 1000, "nope", STEP)
                .await
                .unwrap_err();
            assert_eq!(error.error_code(), Some(ErrorCode::NotFound));
        });
    });
}

#[test]
fn a_retried_send_with_the_same_nonce_is_stored_and_delivered_once() {
    run(Driver::IoUring, &[], async |world| {
        let alice = world.user("alice").await;
        let room = world
            .api
            .create_room(&alice.access_token, "idem", true)
            .await
            .unwrap();
        let mut client = world.client(&alice).await;
        client.subscribe(room, -1, STEP).await.unwrap();
        let draft = MessageDraft {
            room_id: room,
            nonce: "retry-me".into(),
            body: "once".into(),
            ..MessageDraft::default()
        };
        let first = client.post(draft.clone(), STEP).await.unwrap();
        let second = client.post(draft, STEP).await.unwrap();
        assert_eq!(first, second, "the retry gets the first seq");
        let message = next_message(&mut client).await;
        assert_eq!(message.seq, first);
        let third = client.send_message(room, "next", "", STEP).await.unwrap();
        assert_eq!(third, first + 1, "no seq was spent on the retry");
        assert_eq!(next_message(&mut client).await.seq, third);
    });
}

#[test]
fn resume_replays_exactly_what_was_missed_from_backlog_and_database() {
    for_each_driver(|driver| {
        // A backlog of 4 events forces older misses to come from the database.
        run(
            driver,
            &[("VEZA_CHAT_ROOM_BACKLOG_MAX", "4")],
            async |world| {
                let alice = world.user("alice").await;
                let bob = world.user("bob").await;
                let room = world
                    .api
                    .create_room(&alice.access_token, "resume", true)
                    .await
                    .unwrap();
                world.api.join_room(&bob.access_token, room).await.unwrap();
                let mut sender = world.client(&alice).await;
                let mut reader = world.client(&bob).await;
                reader.subscribe(room, -1, STEP).await.unwrap();
                for number in 1..=3 {
                    sender
                        .send_message(room, &format!("m{number}"), "", STEP)
                        .await
                        .unwrap();
                }
                let mut last_seen = 0;
                for _ in 0..3 {
                    last_seen = next_message(&mut reader).await.seq;
                }
                assert_eq!(last_seen, 3);
                drop(reader);

                // Missed while away: 2 (in the backlog) ...
                for number in 4..=5 {
                    sender
                        .send_message(room, &format!("m{number}"), "", STEP)
                        .await
                        .unwrap();
                }
                let mut reader = world.client(&bob).await;
                let (replayed, subscribed) = reader.subscribe(room, last_seen, STEP).await.unwrap();
                let seqs: Vec<i64> = replayed.iter().map(|message| message.seq).collect();
                assert_eq!(seqs, [4, 5]);
                assert_eq!(subscribed.head_seq, 5);
                assert_eq!(subscribed.replayed, 2);
                drop(reader);

                // ... then 20 (most only in the database).
                for number in 6..=25 {
                    sender
                        .send_message(room, &format!("m{number}"), "", STEP)
                        .await
                        .unwrap();
                }
                let mut reader = world.client(&bob).await;
                let (replayed, subscribed) = reader.subscribe(room, 5, STEP).await.unwrap();
                let seqs: Vec<i64> = replayed.iter().map(|message| message.seq).collect();
                assert_eq!(seqs, (6..=25).collect::<Vec<_>>(), "no gap, no duplicate");
                assert_eq!(
                    replayed.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
                    (6..=25).map(|n| format!("m{n}")).collect::<Vec<_>>()
                );
                assert_eq!(subscribed.head_seq, 25);
                // Live events follow the replay.
                let live = sender.send_message(room, "live", "", STEP).await.unwrap();
                assert_eq!(next_message(&mut reader).await.seq, live);

                // History pages over the chat connection.
                let page = reader.history(room, 0, 20, 3, STEP).await.unwrap();
                assert_eq!(
                    page.iter().map(|message| message.seq).collect::<Vec<_>>(),
                    [21, 22, 23]
                );
            },
        );
    });
}
