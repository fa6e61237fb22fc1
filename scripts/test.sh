#!/usr/bin/env bash
# Sets up and runs the whole test suite: formatting, lints, unit, property,
# integration (every server test on io_uring and on epoll) and benchmark
# smoke tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo build --locked --release -p veza-dataplane -p veza-bench
cargo test --locked --workspace
