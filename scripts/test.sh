#!/usr/bin/env bash
# Sets up and runs the whole test suite: formatting, lints, unit, property,
# integration (data plane tests on io_uring and on epoll; control plane tests
# on SQLite and on a throw-away PostgreSQL) and benchmark smoke tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# No release build here: every test starts the binaries of its own (debug)
# profile, and `scripts/start.sh` builds the release ones. Building both
# would add about 7 minutes on 2 cores.

postgres_dir=$(mktemp -d /tmp/veza-postgres.XXXXXX)
trap 'bash scripts/postgres-test-server.sh stop "$postgres_dir"; rm -rf "$postgres_dir"' EXIT
VEZA_TEST_POSTGRES_URL=$(bash scripts/postgres-test-server.sh start "$postgres_dir")
export VEZA_TEST_POSTGRES_URL

# `cargo test --workspace` builds every workspace binary before any test
# runs, so the tests that start another package's binary use it as built
# instead of building it again with one package's features.
export VEZA_TEST_BINARIES_BUILT=1
cargo test --locked --workspace
