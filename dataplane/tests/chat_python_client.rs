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

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::chat::ChatWorld;
use support::{for_each_driver, Driver, TestRuntime};

/// How long the whole Python script may run against one world. The script
/// bounds itself to 25 s; this is the backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(45);

fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/chat_client.py")
}

fn assert_websockets_importable() {
    let probe = Command::new("python3")
        .args(["-c", "import websockets.asyncio.client"])
        .output()
        .unwrap_or_else(|error| {
            panic!("python3 is needed for this test and could not run: {error}")
        });
    assert!(
        probe.status.success(),
        "the Python package `websockets` (version 13 or later, for its asyncio client) is not \
         importable: run the setup script, `bash scripts/setup.sh`, which installs it.\npython3 \
         said: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

/// Runs the script with `args`, killing it if it outlives
/// [`SCRIPT_TIMEOUT`]. Returns its exit code (None if killed) and output.
fn run_script(args: &[String]) -> (Option<i32>, String) {
    let mut child = Command::new("python3")
        .arg(script_path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    // The script prints one JSON line and at most a traceback, far below a
    // pipe's capacity, so reading after it exits cannot dead-lock.
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll python3") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .expect("read stdout");
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .expect("read stderr");
    (status.and_then(|status| status.code()), output)
}

fn run(driver: Driver, test: impl AsyncFnOnce(ChatWorld)) {
    let runtime = TestRuntime::new();
    runtime.run(async {
        let world = ChatWorld::start(driver, &[]).await;
        test(world).await;
    });
}

#[test]
fn python_client_written_from_the_protocol_document_passes_its_scenario() {
    assert_websockets_importable();
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
            let (code, output) = tokio::task::spawn_blocking(move || run_script(&args))
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
