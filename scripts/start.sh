#!/usr/bin/env bash
# Sets up, builds in release mode and starts Veza with its embedded defaults:
# the data plane on :8080 (HTTP and WebSocket). Ctrl-C stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p veza-dataplane
exec ./target/release/veza-dataplane "$@"
