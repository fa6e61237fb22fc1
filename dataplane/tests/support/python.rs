//! Running the Python clients of `tests/python/` (second, independent
//! implementations written with the `websockets` package). The package is
//! installed by `scripts/setup.sh`; when it is missing a test fails and says
//! so, because a silently skipped check reads as a pass.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A script's path, given relative to the workspace root.
pub fn script_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Fails the test unless `python3 -c "import <module>"` works.
pub fn assert_importable(module: &str) {
    let probe = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .unwrap_or_else(|error| {
            panic!("python3 is needed for this test and could not run: {error}")
        });
    assert!(
        probe.status.success(),
        "the Python module `{module}` is not importable: run the setup script, \
         `bash scripts/setup.sh`, which installs the `websockets` package.\npython3 said: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

/// Runs `script` with `args`, killing it if it outlives `timeout`. Returns
/// its exit code (None if killed) and its stdout then stderr.
pub fn run_script(script: &PathBuf, args: &[String], timeout: Duration) -> (Option<i32>, String) {
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    // The scripts print a few lines, far below a pipe's capacity, so
    // reading after the exit cannot dead-lock.
    let deadline = Instant::now() + timeout;
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
    for pipe in [
        child
            .stdout
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read>),
        child
            .stderr
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut pipe = pipe;
        pipe.read_to_string(&mut output).expect("read output");
    }
    (status.and_then(|status| status.code()), output)
}
