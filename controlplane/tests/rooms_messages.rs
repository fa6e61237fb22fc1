//! The message store: batches persisted from the test process the way the
//! control protocol does, read back through the library and over REST
//! (history pages, search, read markers). Every test runs on SQLite and
//! PostgreSQL.

mod rooms_support;
mod support;

use rooms_support::{
    add_member, assert_error, call, create_room, open_database, register, start, User,
};
use serde_json::{json, Value};
use support::{TestControlPlane, BACKENDS};
use veza_controlplane::db::Database;
use veza_controlplane::rooms::messages::{
    history, last_seq, persist_batch, seq_for_nonce, MessageChange, NewMessage,
};

fn message(room_id: i64, seq: i64, author: &User, body: &str) -> MessageChange {
    MessageChange::New(NewMessage {
        room_id,
        seq,
        author_id: author.id,
        client_nonce: format!("nonce-{seq}"),
        body: body.to_string(),
        thread_parent_seq: None,
        mentions: Vec::new(),
        created_at_ms: 1_700_000_000_000 + seq,
    })
}

async fn seed(db: &Database, room_id: i64, author: &User, count: i64) {
    let batch: Vec<MessageChange> = (1..=count)
        .map(|seq| message(room_id, seq, author, &format!("message number {seq}")))
        .collect();
    persist_batch(db, &batch).await.unwrap();
}

fn seqs(page: &Value) -> Vec<i64> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {page}"))
        .iter()
        .map(|message| message["seq"].as_i64().unwrap())
        .collect()
}

async fn page(
    server: &TestControlPlane,
    user: &User,
    room_id: i64,
    query: &str,
) -> (Vec<i64>, bool) {
    let (status, body) = call(
        server,
        user,
        "GET",
        &format!("/v1/rooms/{room_id}/messages{query}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{query}: {body}");
    (seqs(&body), body["has_more"].as_bool().unwrap())
}

#[tokio::test]
async fn history_pages_go_before_and_after_within_the_limit() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let room_id = create_room(&server, &owner, "Archive", true).await;
        let db = open_database(&server).await;
        seed(&db, room_id, &owner, 25).await;
        assert_eq!(last_seq(&db, room_id).await.unwrap(), 25);

        let range = |low: i64, high: i64| (low..=high).collect::<Vec<i64>>();
        let checks: [(&str, Vec<i64>, bool); 8] = [
            ("", range(1, 25), false),
            ("?limit=10", range(16, 25), true),
            ("?before=16&limit=10", range(6, 15), true),
            ("?before=6&limit=10", range(1, 5), false),
            ("?after=20", range(21, 25), false),
            ("?after=5&limit=3", range(6, 8), true),
            ("?after=5&before=10", range(6, 9), false),
            ("?after=25", vec![], false),
        ];
        for (query, expected, has_more) in checks {
            assert_eq!(
                page(&server, &owner, room_id, query).await,
                (expected, has_more),
                "{backend:?} {query}"
            );
        }
        let library: Vec<i64> = history(&db, room_id, Some(10), None, 3)
            .await
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(library, [7, 8, 9]);
        let stranger = register(&server, "stranger").await;
        assert_eq!(
            page(&server, &stranger, room_id, "?limit=2").await.0,
            [24, 25],
            "anyone reads a public room"
        );

        let (status, _) = call(
            &server,
            &owner,
            "PUT",
            "/v1/admin/settings",
            Some(json!({"settings": {"history_page_max": 4}})),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            page(&server, &owner, room_id, "?limit=50").await,
            (range(22, 25), true),
            "limits are capped by history_page_max"
        );
        for (query, expected) in [
            ("?limit=0", 422),
            ("?limit=-1", 422),
            ("?limit=ten", 400),
            ("?before=x", 400),
        ] {
            let (status, body) = call(
                &server,
                &owner,
                "GET",
                &format!("/v1/rooms/{room_id}/messages{query}"),
                None,
            )
            .await;
            assert_error(status, &body, expected, query);
        }
    }
}

#[tokio::test]
async fn private_history_is_for_members_only() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let member = register(&server, "member").await;
        let stranger = register(&server, "stranger").await;
        let room_id = create_room(&server, &owner, "Secret", false).await;
        add_member(&server, room_id, &owner, &member, "member").await;
        seed(&open_database(&server).await, room_id, &owner, 3).await;
        assert_eq!(page(&server, &member, room_id, "").await.0, [1, 2, 3]);
        for path in ["messages", "messages/search?q=message"] {
            let (status, body) = call(
                &server,
                &stranger,
                "GET",
                &format!("/v1/rooms/{room_id}/{path}"),
                None,
            )
            .await;
            assert_error(status, &body, 404, &format!("{backend:?} {path}"));
        }
    }
}

#[tokio::test]
async fn a_retried_batch_changes_nothing() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let room_id = create_room(&server, &owner, "Retries", true).await;
        let db = open_database(&server).await;
        let batch = vec![
            message(room_id, 1, &owner, "first"),
            message(room_id, 2, &owner, "second"),
            MessageChange::Edit {
                room_id,
                seq: 1,
                editor_id: owner.id,
                body: "first, edited".into(),
                edited_at_ms: 1_700_000_000_100,
            },
            MessageChange::ReactionAdd {
                room_id,
                seq: 2,
                user_id: owner.id,
                emoji: "🎹".into(),
            },
            MessageChange::ReadMarker {
                room_id,
                user_id: owner.id,
                seq: 2,
            },
        ];
        persist_batch(&db, &batch).await.unwrap();
        let once = history(&db, room_id, None, None, 50).await.unwrap();
        persist_batch(&db, &batch).await.unwrap();
        persist_batch(&db, &batch[..2]).await.unwrap();
        assert_eq!(
            history(&db, room_id, None, None, 50).await.unwrap(),
            once,
            "{backend:?}"
        );
        assert_eq!(once[0].body, "first, edited");
        assert_eq!(once[1].reactions, [("🎹".to_string(), 1)]);

        // The same nonce under a new seq (a send retried after the data plane
        // lost track of it) is not stored twice; its original seq is found.
        let MessageChange::New(mut again) = message(room_id, 3, &owner, "first") else {
            unreachable!()
        };
        again.client_nonce = "nonce-1".into();
        persist_batch(&db, &[MessageChange::New(again)])
            .await
            .unwrap();
        assert_eq!(last_seq(&db, room_id).await.unwrap(), 2);
        assert_eq!(
            seq_for_nonce(&db, room_id, owner.id, "nonce-1")
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(
            seq_for_nonce(&db, room_id, owner.id, "nonce-9")
                .await
                .unwrap(),
            None
        );

        // Changes naming missing rooms, users or messages are skipped, not
        // failed: the rest of the batch is stored.
        let mixed = vec![
            MessageChange::New(NewMessage {
                room_id: 987_654,
                ..match message(room_id, 1, &owner, "lost") {
                    MessageChange::New(m) => m,
                    _ => unreachable!(),
                }
            }),
            MessageChange::New(NewMessage {
                author_id: 987_654,
                ..match message(room_id, 4, &owner, "ghost") {
                    MessageChange::New(m) => m,
                    _ => unreachable!(),
                }
            }),
            MessageChange::Edit {
                room_id,
                seq: 99,
                editor_id: owner.id,
                body: "nothing".into(),
                edited_at_ms: 1,
            },
            MessageChange::ReactionAdd {
                room_id,
                seq: 99,
                user_id: owner.id,
                emoji: "x".into(),
            },
            message(room_id, 3, &owner, "third"),
        ];
        persist_batch(&db, &mixed).await.unwrap();
        let seqs: Vec<i64> = history(&db, room_id, None, None, 50)
            .await
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
    }
}

#[tokio::test]
async fn edits_deletes_reactions_threads_and_mentions_show_in_history() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let fan = register(&server, "fan").await;
        let room_id = create_room(&server, &owner, "Changes", true).await;
        let db = open_database(&server).await;
        let reply = MessageChange::New(NewMessage {
            room_id,
            seq: 3,
            author_id: fan.id,
            client_nonce: String::new(),
            body: "@owner love it".into(),
            thread_parent_seq: Some(1),
            mentions: vec![owner.id],
            created_at_ms: 1_700_000_000_003,
        });
        let changes = vec![
            message(room_id, 1, &owner, "new track out"),
            message(room_id, 2, &owner, "typo hre"),
            reply,
            MessageChange::Edit {
                room_id,
                seq: 2,
                editor_id: owner.id,
                body: "typo here".into(),
                edited_at_ms: 1_700_000_001_000,
            },
            MessageChange::Edit {
                room_id,
                seq: 2,
                editor_id: fan.id,
                body: "hijacked".into(),
                edited_at_ms: 1_700_000_002_000,
            },
            MessageChange::Edit {
                room_id,
                seq: 2,
                editor_id: owner.id,
                body: "older edit".into(),
                edited_at_ms: 1_700_000_000_500,
            },
            MessageChange::ReactionAdd {
                room_id,
                seq: 1,
                user_id: fan.id,
                emoji: "🔥".into(),
            },
            MessageChange::ReactionAdd {
                room_id,
                seq: 1,
                user_id: owner.id,
                emoji: "🔥".into(),
            },
            MessageChange::ReactionAdd {
                room_id,
                seq: 1,
                user_id: fan.id,
                emoji: "🎧".into(),
            },
            MessageChange::ReactionAdd {
                room_id,
                seq: 1,
                user_id: fan.id,
                emoji: "x".repeat(65),
            },
            MessageChange::ReactionAdd {
                room_id,
                seq: 2,
                user_id: fan.id,
                emoji: "👍".into(),
            },
            MessageChange::ReactionRemove {
                room_id,
                seq: 1,
                user_id: owner.id,
                emoji: "🔥".into(),
            },
            MessageChange::Delete {
                room_id,
                seq: 2,
                deleter_id: owner.id,
                deleted_at_ms: 1_700_000_003_000,
            },
            MessageChange::ReactionAdd {
                room_id,
                seq: 2,
                user_id: owner.id,
                emoji: "👍".into(),
            },
        ];
        persist_batch(&db, &changes).await.unwrap();
        let (status, body) = call(
            &server,
            &fan,
            "GET",
            &format!("/v1/rooms/{room_id}/messages"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{backend:?} {body}");
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(
            messages[0]["reactions"],
            json!([{"emoji": "🔥", "count": 1}, {"emoji": "🎧", "count": 1}])
        );
        assert_eq!(messages[0]["edited_at_ms"], Value::Null);
        assert_eq!(
            (
                messages[1]["body"].as_str(),
                messages[1]["deleted_at_ms"].as_i64(),
                messages[1]["reactions"].clone()
            ),
            (Some(""), Some(1_700_000_003_000), json!([])),
            "a tombstone keeps its seq and nothing else"
        );
        assert_eq!(
            messages[1]["edited_at_ms"].as_i64(),
            Some(1_700_000_001_000),
            "the author's edit applied, the others did not"
        );
        assert_eq!(
            (
                messages[2]["thread_parent_seq"].as_i64(),
                messages[2]["mentions"].clone()
            ),
            (Some(1), json!([owner.id]))
        );
        assert_eq!(messages[2]["author_id"], fan.id);

        // U+0000 is valid UTF-8 but not storable in PostgreSQL text: it must
        // not fail the batch, on either database.
        persist_batch(&db, &[message(room_id, 4, &owner, "nul\u{0}byte")])
            .await
            .unwrap();
        let stored = history(&db, room_id, None, Some(3), 1).await.unwrap();
        assert_eq!(stored[0].body, "nul\u{FFFD}byte", "{backend:?}");
    }
}

#[tokio::test]
async fn search_finds_words_never_deleted_messages_and_ignores_syntax() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let room_id = create_room(&server, &owner, "Searchable", true).await;
        let other_room = create_room(&server, &owner, "Elsewhere", true).await;
        let db = open_database(&server).await;
        persist_batch(
            &db,
            &[
                message(room_id, 1, &owner, "The quick brown fox"),
                message(room_id, 2, &owner, "a lazy dog sleeps"),
                message(room_id, 3, &owner, "FOX hunting, really?"),
                message(room_id, 4, &owner, "secret fox plans"),
                message(room_id, 5, &owner, "Robert'); DROP TABLE messages; --"),
                message(other_room, 1, &owner, "another fox"),
                MessageChange::Delete {
                    room_id,
                    seq: 4,
                    deleter_id: owner.id,
                    deleted_at_ms: 1_700_000_009_000,
                },
            ],
        )
        .await
        .unwrap();
        let search = |query: &'static str| {
            let server = &server;
            let owner = &owner;
            async move {
                let (status, body) = call(
                    server,
                    owner,
                    "GET",
                    &format!("/v1/rooms/{room_id}/messages/search?q={query}"),
                    None,
                )
                .await;
                assert_eq!(status, 200, "{query}: {body}");
                seqs(&body)
            }
        };
        assert_eq!(
            search("fox").await,
            [3, 1],
            "{backend:?}: newest first, not the deleted one, not the other room"
        );
        assert_eq!(search("quick%20FOX").await, [1], "every word must match");
        assert_eq!(search("sleeps").await, [2]);
        assert_eq!(
            search("plans").await,
            Vec::<i64>::new(),
            "deleted messages never match"
        );
        assert_eq!(search("drop%20table").await, [5]);
        for hostile in [
            "%27%3B%20DROP%20TABLE%20messages%3B%20--",
            "%22%20OR%201%3D1",
            "fox%20OR%20dog",
            "NEAR(fox%20dog)",
            "*",
            "%25",
            "%5C",
            "fox%22",
        ] {
            let (status, body) = call(
                &server,
                &owner,
                "GET",
                &format!("/v1/rooms/{room_id}/messages/search?q={hostile}"),
                None,
            )
            .await;
            assert_eq!(status, 200, "{hostile}: {body}");
        }
        assert_eq!(search("fox").await, [3, 1], "nothing changed");
        let (status, body) = call(
            &server,
            &owner,
            "GET",
            &format!("/v1/rooms/{room_id}/messages/search?q={}", "a".repeat(300)),
            None,
        )
        .await;
        assert_error(status, &body, 422, "query too long");
        let (status, body) = call(
            &server,
            &owner,
            "GET",
            &format!("/v1/rooms/{room_id}/messages/search"),
            None,
        )
        .await;
        assert_error(status, &body, 400, "q missing");
        let (status, body) = call(
            &server,
            &owner,
            "GET",
            &format!("/v1/rooms/{room_id}/messages/search?q=fox&limit=1"),
            None,
        )
        .await;
        assert_eq!((status, seqs(&body)), (200, vec![3]));
    }
}

#[tokio::test]
async fn read_markers_only_move_forward_and_belong_to_members() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let stranger = register(&server, "stranger").await;
        let room_id = create_room(&server, &owner, "Marks", true).await;
        seed(&open_database(&server).await, room_id, &owner, 9).await;
        let path = format!("/v1/rooms/{room_id}/read-marker");
        let (status, marker) = call(&server, &owner, "GET", &path, None).await;
        assert_eq!(
            (status, marker["seq"].as_i64(), marker["last_seq"].as_i64()),
            (200, Some(0), Some(9)),
            "{backend:?} {marker}"
        );
        let (_, marker) = call(&server, &owner, "PUT", &path, Some(json!({"seq": 5}))).await;
        assert_eq!(marker["seq"], 5);
        let (_, marker) = call(&server, &owner, "PUT", &path, Some(json!({"seq": 3}))).await;
        assert_eq!(marker["seq"], 5, "markers do not move back");
        for (body, expected) in [
            (json!({"seq": -1}), 422),
            (json!({"seq": "7"}), 422),
            (json!({"seq": 7, "room": 1}), 422),
        ] {
            let (status, answer) = call(&server, &owner, "PUT", &path, Some(body.clone())).await;
            assert_error(status, &answer, expected, &format!("{body}"));
        }
        let (status, body) = call(&server, &stranger, "PUT", &path, Some(json!({"seq": 1}))).await;
        assert_error(status, &body, 403, "only members keep read markers");
        let (_, marker) = call(&server, &owner, "GET", &path, None).await;
        assert_eq!(marker["seq"], 5, "refused requests changed nothing");
    }
}

#[tokio::test]
async fn a_large_batch_with_repeats_inside_it_stores_each_message_once() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let owner = register(&server, "owner").await;
        let room_id = create_room(&server, &owner, "Busy", true).await;
        let db = open_database(&server).await;
        // 300 messages span several multi-row inserts; an edit in the middle
        // must see the messages before it; a repeated nonce and a repeated
        // seq inside the same batch are stored once.
        let mut batch: Vec<MessageChange> = (1..=150)
            .map(|seq| message(room_id, seq, &owner, &format!("early {seq}")))
            .collect();
        batch.push(MessageChange::Edit {
            room_id,
            seq: 150,
            editor_id: owner.id,
            body: "edited in the same batch".into(),
            edited_at_ms: 1_800_000_000_000,
        });
        batch.extend((151..=300).map(|seq| message(room_id, seq, &owner, &format!("late {seq}"))));
        batch.push(message(room_id, 300, &owner, "same seq again"));
        let MessageChange::New(mut same_nonce) = message(room_id, 301, &owner, "same nonce") else {
            unreachable!()
        };
        same_nonce.client_nonce = "nonce-7".into();
        batch.push(MessageChange::New(same_nonce));
        persist_batch(&db, &batch).await.unwrap();
        assert_eq!(last_seq(&db, room_id).await.unwrap(), 300, "{backend:?}");
        let around = history(&db, room_id, Some(152), Some(148), 10)
            .await
            .unwrap();
        let bodies: Vec<&str> = around.iter().map(|message| message.body.as_str()).collect();
        assert_eq!(
            bodies,
            ["early 149", "edited in the same batch", "late 151"]
        );
        assert_eq!(
            history(&db, room_id, None, Some(299), 5).await.unwrap()[0].body,
            "late 300"
        );
    }
}
