//! A second, independent client implementation (Python's `websockets`) runs
//! the conformance checks of `tests/python/ws_conformance.py` against the
//! server on each driver. The package is installed by the project's setup
//! script (`scripts/setup.sh`); when it is missing this test fails and says so, because a
//! silently skipped check reads as a pass.

mod support;

use std::time::Duration;

use support::python::{assert_importable, run_script, script_path};
use support::{for_each_driver, TestServer};

/// How long the whole Python script may run against one server.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// The limits the server is started with and the script is told about.
const FRAME_BYTES_MAX: &str = "1048576";
const MESSAGE_BYTES_MAX: &str = "4194304";

#[test]
fn python_websockets_client_passes_every_conformance_check() {
    assert_importable("websockets.sync.client");
    for_each_driver(|driver| {
        let server = TestServer::start(
            driver,
            &[
                ("VEZA_LIMITS_WEBSOCKET_FRAME_BYTES_MAX", FRAME_BYTES_MAX),
                ("VEZA_LIMITS_WEBSOCKET_MESSAGE_BYTES_MAX", MESSAGE_BYTES_MAX),
            ],
        );
        let args = [
            server.ws_url("/v1/echo"),
            "--frame-bytes-max".to_owned(),
            FRAME_BYTES_MAX.to_owned(),
            "--message-bytes-max".to_owned(),
            MESSAGE_BYTES_MAX.to_owned(),
        ];
        let (code, output) = run_script(
            &script_path("tests/python/ws_conformance.py"),
            &args,
            SCRIPT_TIMEOUT,
        );
        println!("{output}");
        assert_eq!(
            code,
            Some(0),
            "ws_conformance.py failed (None = killed after {SCRIPT_TIMEOUT:?}):\n{output}"
        );
    });
}
