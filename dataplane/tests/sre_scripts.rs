//! The SRE scripts in their harmless modes, as an operator runs them:
//! `tuning/preflight.sh` (checks only), `tuning/apply.sh` and
//! `tuning/revert.sh` (dry run by default; `--apply` only against a
//! simulated kernel tree), `perf/*.sh --check`, and `deploy/lint.sh`
//! (systemd-analyze on the units, the YAML/JSON/Dockerfile checks,
//! shellcheck). Each must exit 0 on this machine and change nothing on it.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest a script may run; deploy/lint.sh installs systemd and
/// shellcheck on a fresh machine, which takes most of it.
const SCRIPT_TIME_LIMIT: Duration = Duration::from_secs(300);

/// The sysctl keys of tuning/apply.sh's profile, with the values a simulated
/// kernel starts from (typical defaults; `fs.file-max` as on recent kernels).
const SIMULATED_SYSCTLS: [(&str, &str); 13] = [
    ("net.core.somaxconn", "4096"),
    ("net.ipv4.tcp_max_syn_backlog", "2048"),
    ("net.core.netdev_max_backlog", "1000"),
    ("net.ipv4.ip_local_port_range", "32768\t60999"),
    ("net.ipv4.tcp_fin_timeout", "60"),
    ("net.ipv4.tcp_tw_reuse", "2"),
    ("fs.file-max", "9223372036854775807"),
    ("fs.nr_open", "1048576"),
    ("net.core.rmem_max", "212992"),
    ("net.core.wmem_max", "212992"),
    ("net.ipv4.tcp_rmem", "4096\t131072\t6291456"),
    ("net.ipv4.tcp_wmem", "4096\t16384\t4194304"),
    ("vm.swappiness", "60"),
];

const TRANSPARENT_HUGEPAGES: &str = "sys/kernel/mm/transparent_hugepage/enabled";

struct ScriptRun {
    success: bool,
    stdout: String,
    stderr: String,
}

impl ScriptRun {
    fn assert_success(&self, what: &str) {
        assert!(
            self.success,
            "{what} failed\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the data plane crate lives in the workspace")
        .to_path_buf()
}

/// Runs `bash SCRIPT ARGS` from the repository root, killing it past
/// SCRIPT_TIME_LIMIT.
fn run_script(script: &str, args: &[&str]) -> ScriptRun {
    let mut child = Command::new("bash")
        .arg(script)
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {script}: {error}"));
    let mut stdout_pipe = child.stdout.take().expect("piped stdout");
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    // Reading on threads keeps a chatty script from filling a pipe and
    // stalling while we wait for it.
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout_pipe.read_to_string(&mut text);
        text
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break status;
        }
        if started.elapsed() > SCRIPT_TIME_LIMIT {
            let _ = child.kill();
            panic!("{script} {args:?} ran longer than {SCRIPT_TIME_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ScriptRun {
        success: status.success(),
        stdout: stdout_reader.join().expect("stdout reader"),
        stderr: stderr_reader.join().expect("stderr reader"),
    }
}

fn read_sysctl(name: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(path)
        .ok()
        .map(|value| value.trim().to_string())
}

/// A directory laid out like `/proc/sys` and `/sys` for `--root`, holding
/// the profile's settings as plain files.
fn simulated_kernel() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temporary directory");
    for (name, value) in SIMULATED_SYSCTLS {
        let path = root.path().join("proc/sys").join(name.replace('.', "/"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{value}\n")).unwrap();
    }
    let hugepages = root.path().join(TRANSPARENT_HUGEPAGES);
    std::fs::create_dir_all(hugepages.parent().unwrap()).unwrap();
    std::fs::write(hugepages, "always\n").unwrap();
    root
}

/// Every setting of a simulated kernel, whitespace runs made single spaces.
fn simulated_values(root: &Path) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = SIMULATED_SYSCTLS
        .iter()
        .map(|(name, _)| {
            let path = root.join("proc/sys").join(name.replace('.', "/"));
            (name.to_string(), std::fs::read_to_string(path).unwrap())
        })
        .collect();
    values.insert(
        TRANSPARENT_HUGEPAGES.into(),
        std::fs::read_to_string(root.join(TRANSPARENT_HUGEPAGES)).unwrap(),
    );
    values
        .into_iter()
        .map(|(name, value)| {
            let words: Vec<&str> = value.split_whitespace().collect();
            (name, words.join(" "))
        })
        .collect()
}

fn line_starting_with_verdict_for<'a>(output: &'a str, check: &str) -> Option<&'a str> {
    output.lines().find(|line| {
        let mut words = line.split_whitespace();
        matches!(words.next(), Some("pass" | "warn")) && words.next() == Some(check)
    })
}

#[test]
fn preflight_runs_the_data_plane_checks_and_reports_io_uring_nofile_and_somaxconn() {
    let run = run_script(
        "tuning/preflight.sh",
        &[
            "--binary",
            env!("CARGO_BIN_EXE_veza-dataplane"),
            "--no-build",
        ],
    );
    run.assert_success("tuning/preflight.sh");
    for check in ["io_uring", "nofile", "somaxconn", "memlock", "cpus"] {
        assert!(
            line_starting_with_verdict_for(&run.stdout, check).is_some(),
            "no pass/warn line for {check}:\n{}",
            run.stdout
        );
    }
    for host_fact in [
        "kernel",
        "io_uring_disabled",
        "seccomp",
        "net.core.somaxconn",
        "cpu-affinity",
        "transparent_hugepages",
    ] {
        assert!(
            line_starting_with_verdict_for(&run.stdout, host_fact).is_some(),
            "no pass/warn line for the host fact {host_fact}:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("summary:") && run.stdout.contains(" 0 fail"),
        "{}",
        run.stdout
    );
}

#[test]
fn apply_by_default_is_a_dry_run_that_prints_every_key_and_changes_nothing() {
    let state_dir = tempfile::tempdir().unwrap();
    let state_file = state_dir.path().join("tuning-backup.conf");
    let somaxconn_before = read_sysctl("net.core.somaxconn");
    let run = run_script(
        "tuning/apply.sh",
        &["--state", state_file.to_str().unwrap()],
    );
    run.assert_success("tuning/apply.sh (dry run)");
    assert_eq!(read_sysctl("net.core.somaxconn"), somaxconn_before);
    assert!(
        !state_file.exists(),
        "a dry run must not write the state file"
    );
    assert!(run.stdout.contains("dry run"), "{}", run.stdout);
    for (name, _) in SIMULATED_SYSCTLS {
        assert!(run.stdout.contains(name), "{name} missing:\n{}", run.stdout);
    }
}

#[test]
fn revert_without_a_state_file_is_a_harmless_dry_run() {
    let state_dir = tempfile::tempdir().unwrap();
    let state_file = state_dir.path().join("tuning-backup.conf");
    let run = run_script(
        "tuning/revert.sh",
        &["--state", state_file.to_str().unwrap()],
    );
    run.assert_success("tuning/revert.sh (dry run)");
    assert!(run.stdout.contains("nothing to revert"), "{}", run.stdout);
}

#[test]
fn apply_then_revert_restores_exactly_the_previous_values_of_a_simulated_kernel() {
    let kernel = simulated_kernel();
    let root = kernel.path().to_str().unwrap();
    let state_file = kernel.path().join("tuning-backup.conf");
    let state = state_file.to_str().unwrap();
    let before = simulated_values(kernel.path());

    run_script(
        "tuning/apply.sh",
        &["--apply", "--root", root, "--state", state],
    )
    .assert_success("tuning/apply.sh --apply");
    let applied = simulated_values(kernel.path());
    assert_eq!(applied["net.core.somaxconn"], "65535");
    assert_eq!(applied["net.ipv4.tcp_wmem"], "4096 65536 16777216");
    assert_eq!(applied[TRANSPARENT_HUGEPAGES], "madvise");
    // A minimum never lowers a larger value.
    assert_eq!(applied["fs.file-max"], "9223372036854775807");
    assert_eq!(applied["net.ipv4.tcp_rmem"], "4096 131072 16777216");

    // Applying twice keeps the values saved the first time.
    run_script(
        "tuning/apply.sh",
        &["--apply", "--root", root, "--state", state],
    )
    .assert_success("tuning/apply.sh --apply, again");

    let dry_revert = run_script("tuning/revert.sh", &["--root", root, "--state", state]);
    dry_revert.assert_success("tuning/revert.sh (dry run)");
    assert!(
        dry_revert.stdout.contains("would restore"),
        "{}",
        dry_revert.stdout
    );
    assert_eq!(simulated_values(kernel.path()), applied);

    run_script(
        "tuning/revert.sh",
        &["--apply", "--root", root, "--state", state],
    )
    .assert_success("tuning/revert.sh --apply");
    assert_eq!(simulated_values(kernel.path()), before);
    assert!(
        !state_file.exists(),
        "a completed revert removes the state file"
    );
}

#[test]
fn perf_scripts_check_mode_exits_0_and_says_whether_they_can_run_here() {
    for script in ["perf/stat.sh", "perf/flamegraph.sh", "perf/callgrind.sh"] {
        let run = run_script(script, &["--check"]);
        run.assert_success(&format!("{script} --check"));
        assert!(
            run.stdout.lines().any(|line| line.starts_with("check: ")),
            "{script} --check must end with a verdict line:\n{}",
            run.stdout
        );
    }
}

#[test]
fn every_script_explains_itself_with_help() {
    for script in [
        "perf/stat.sh",
        "perf/flamegraph.sh",
        "perf/callgrind.sh",
        "tuning/preflight.sh",
        "tuning/apply.sh",
        "tuning/revert.sh",
        "deploy/lint.sh",
    ] {
        let run = run_script(script, &["--help"]);
        run.assert_success(&format!("{script} --help"));
        assert!(
            run.stdout.starts_with("usage: "),
            "{script}:\n{}",
            run.stdout
        );
    }
}

#[test]
fn deploy_files_pass_the_lint() {
    let run = run_script(
        "deploy/lint.sh",
        &["--dataplane-bin", env!("CARGO_BIN_EXE_veza-dataplane")],
    );
    run.assert_success("deploy/lint.sh");
    assert!(
        !run.stdout.lines().any(|line| line.starts_with("FAIL")),
        "{}",
        run.stdout
    );
}
