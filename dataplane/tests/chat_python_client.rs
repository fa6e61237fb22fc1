//! A chat client written in Python from `proto/PROTOCOL.md` alone
//! (`tests/python/chat_client.py`: the standard library's `struct` for the
//! frames, the `websockets` package for the WebSocket layer) runs its
//! scenario against a real control plane and data plane on each driver:
//! auth, subscribe, send with nonces and a mention, resume after a
//! reconnect, error frames, a text message closing with 1003, and history.
//! It proves the document is enough to write a client. The package is
//! installed by the project's setup script (`scripts/setup.sh`); when it is
//! missing this test fails and says so, because a silently skipped check
//! reads as a pass.

mod support;

use std::time::Duration;

use support::chat::ChatWorld;
use support::python::{assert_importable, run_script, script_path};
use support::{for_each_driver, Driver, TestRuntime};

/// How long the whole Python script may run against one world. The script
/// bounds itself to 25 s; this is the backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(45);

fn run(driver: Driver, test: impl AsyncFnOnce(ChatWorld)) {
    let runtime = TestRuntime::new();
    runtime.run(async {
        let world = ChatWorld::start(driver, &[]).await;
        test(world).await;
    });
}

#[test]
fn python_client_written_from_the_protocol_document_passes_its_scenario() {
    assert_importable("websockets.asyncio.client");
    for_each_driver(|driver| {
        run(driver, async |world| {
            let ana = world.user("ana").await;
            let bob = world.user("bob").await;
            let room = world
                .api
                .create_room(&ana.access_token, "python", true)
                .await
                .unwrap();
            world.api.join_room(&bob.access_token, room).await.unwrap();
            let args = vec![
                "--url".to_owned(),
                world.url(),
                "--token-a".to_owned(),
                ana.access_token.clone(),
                "--token-b".to_owned(),
                bob.access_token.clone(),
                "--room".to_owned(),
                room.to_string(),
                "--user-id-a".to_owned(),
                ana.user_id.to_string(),
                "--user-id-b".to_owned(),
                bob.user_id.to_string(),
            ];
            let (code, output) = tokio::task::spawn_blocking(move || {
                run_script(
                    &script_path("dataplane/tests/python/chat_client.py"),
                    &args,
                    SCRIPT_TIMEOUT,
                )
            })
            .await
            .expect("the script runner does not panic");
            println!("{output}");
            assert_eq!(
                code,
                Some(0),
                "chat_client.py failed on the {} driver (None = killed after \
                 {SCRIPT_TIMEOUT:?}):\n{output}",
                driver.metric_label()
            );
        });
    });
}
