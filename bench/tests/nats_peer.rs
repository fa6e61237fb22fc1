//! The chat benchmarks' peer end to end: a real nats-server (Debian's
//! package, installed by `scripts/setup.sh`) started from the generated
//! configuration, and the benchmark's NATS-over-WebSocket client publishing
//! to and receiving from it.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;
use veza_bench::chat_servers::nats::{NatsServer, DEFAULT_NATS_BIN};
use veza_bench::nats_client::{room_subject, NatsClient, ServerOp};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_of_a_room_receive_what_is_published_to_it_and_nothing_else() {
    let server = tokio::task::spawn_blocking(|| {
        NatsServer::start(Path::new(DEFAULT_NATS_BIN), &[], 1000)
            .expect("nats-server starts (scripts/setup.sh installs it)")
    })
    .await
    .unwrap();
    let url = server.websocket_url();
    let source: IpAddr = "127.0.0.2".parse().unwrap();

    let mut subscribers = Vec::new();
    for room_idx in [0, 0, 1] {
        let mut client = NatsClient::connect(&url, Some(source)).await.unwrap();
        client.subscribe(&room_subject(room_idx), 1).await.unwrap();
        client.ping(WAIT).await.unwrap();
        subscribers.push(client.split().1);
    }
    let mut publisher = NatsClient::connect(&url, None).await.unwrap();
    publisher.ping(WAIT).await.unwrap();
    let (mut sender, _receiver) = publisher.split();
    sender
        .publish(&room_subject(0), b"to room zero")
        .await
        .unwrap();
    sender
        .publish(&room_subject(1), b"to room one")
        .await
        .unwrap();

    let deadline = Instant::now() + WAIT;
    for (subscriber, expected) in subscribers
        .iter_mut()
        .zip(["room zero", "room zero", "room one"])
    {
        match subscriber.next_op(deadline).await.unwrap() {
            ServerOp::Msg { payload, sid, .. } => {
                assert_eq!(sid, 1);
                assert_eq!(payload, format!("to {expected}").as_bytes());
            }
            other => panic!("a message expected, got {other:?}"),
        }
    }
    let quiet = Instant::now() + Duration::from_millis(300);
    for subscriber in &mut subscribers {
        assert!(
            subscriber.next_op(quiet).await.is_err(),
            "one message each, no more"
        );
    }
    tokio::task::spawn_blocking(move || server.stop().unwrap())
        .await
        .unwrap();
}
