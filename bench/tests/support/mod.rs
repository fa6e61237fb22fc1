//! What the benchmark smoke tests share: where the `veza-bench` binary and
//! the other packages' binaries are.

use std::path::{Path, PathBuf};
use std::process::Command;

/// This package's `veza-bench`, built by cargo for this test.
pub fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_veza-bench"))
}

/// `target/<profile>/<package>` beside this test's binaries (a test cannot
/// name another package's binary through `CARGO_BIN_EXE_*`).
///
/// `cargo test --workspace` has already built every workspace binary with
/// this profile before any test runs; `scripts/test.sh` says so with
/// `VEZA_TEST_BINARIES_BUILT=1`, and the binary is used as it is. Without
/// it (`cargo test -p veza-bench`), the binary is brought up to date first
/// with `cargo build -p <package>`, so that a stale one cannot fail for the
/// wrong reason. (That build resolves features for one package, not the
/// workspace, so it compiles a second copy of some dependencies: slower and
/// larger, which CI cannot afford.)
pub fn sibling_bin(package: &str) -> PathBuf {
    let profile_dir = bench_bin()
        .parent()
        .expect("binaries live in a directory")
        .to_path_buf();
    let binary = profile_dir.join(package);
    if std::env::var_os("VEZA_TEST_BINARIES_BUILT").is_none() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("bench is in the workspace");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(workspace)
            .args(["build", "-p", package, "--bin", package]);
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p {package} failed");
    }
    assert!(
        binary.is_file(),
        "{} is missing (VEZA_TEST_BINARIES_BUILT is set only by `cargo test --workspace` runs)",
        binary.display()
    );
    binary
}
