//! A second, independent client implementation (Python's `websockets`) runs
//! the conformance checks of `tests/python/ws_conformance.py` against the
//! server on each driver. The package is installed by the project's setup
//! script (`scripts/setup.sh`); when it is missing this test fails and says so, because a
//! silently skipped check reads as a pass.

mod support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{for_each_driver, TestServer};

/// How long the whole Python script may run against one server.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// The limits the server is started with and the script is told about.
const FRAME_BYTES_MAX: &str = "1048576";
const MESSAGE_BYTES_MAX: &str = "4194304";

fn script_path() -> PathBuf {
    let workspace_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    workspace_root.join("tests/python/ws_conformance.py")
}

fn assert_websockets_importable() {
    let probe = Command::new("python3")
        .args(["-c", "import websockets.sync.client"])
        .output()
        .unwrap_or_else(|error| {
            panic!("python3 is needed for this test and could not run: {error}")
        });
    assert!(
        probe.status.success(),
        "the Python package `websockets` (version 11 or later) is not importable: run the setup \
         script, `bash scripts/setup.sh`, which installs it.\npython3 said: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

/// Runs the script against `url`, killing it if it outlives
/// [`SCRIPT_TIMEOUT`]. Returns its exit code (None if killed) and output.
fn run_script(url: &str) -> (Option<i32>, String) {
    let mut child = Command::new("python3")
        .arg(script_path())
        .arg(url)
        .args([
            "--frame-bytes-max",
            FRAME_BYTES_MAX,
            "--message-bytes-max",
            MESSAGE_BYTES_MAX,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    // The script prints a line per check, far below a pipe's capacity, so
    // reading after it exits cannot dead-lock.
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

#[test]
fn python_websockets_client_passes_every_conformance_check() {
    assert_websockets_importable();
    for_each_driver(|driver| {
        let server = TestServer::start(
            driver,
            &[
                ("VEZA_LIMITS_WEBSOCKET_FRAME_BYTES_MAX", FRAME_BYTES_MAX),
                ("VEZA_LIMITS_WEBSOCKET_MESSAGE_BYTES_MAX", MESSAGE_BYTES_MAX),
            ],
        );
        let (code, output) = run_script(&server.ws_url("/v1/echo"));
        println!("{output}");
        assert_eq!(
            code,
            Some(0),
            "ws_conformance.py failed (None = killed after {SCRIPT_TIMEOUT:?}):\n{output}"
        );
    });
}
