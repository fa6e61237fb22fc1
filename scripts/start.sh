#!/usr/bin/env bash
# Sets up, builds in release mode and starts Veza with its embedded defaults:
#   - veza-controlplane: REST on 127.0.0.1:8081, embedded SQLite in var/,
#     control protocol on the Unix socket var/control.sock;
#   - veza-dataplane: HTTP and WebSocket on :8080, one shard per CPU,
#     connected to the control plane over that socket.
# Ctrl-C (or SIGTERM) stops both gracefully. Arguments go to veza-dataplane.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p veza-dataplane -p veza-controlplane

data_dir=${VEZA_SERVER_DATA_DIR:-var}
mkdir -p "$data_dir"
socket="$data_dir/control.sock"

VEZA_SERVER_DATA_DIR="$data_dir" ./target/release/veza-controlplane &
control_pid=$!
stop_all() {
  # The data plane first (it drains its connections), then the control plane
  # it was talking to.
  if [ -n "${data_pid:-}" ]; then
    kill -TERM "$data_pid" 2>/dev/null || true
    wait "$data_pid" 2>/dev/null || true
  fi
  kill -TERM "$control_pid" 2>/dev/null || true
  wait "$control_pid" 2>/dev/null || true
}
trap stop_all EXIT INT TERM

# The data plane reconnects with backoff anyway; waiting here only keeps the
# first log lines tidy.
for _ in $(seq 1 100); do
  [ -S "$socket" ] && break
  kill -0 "$control_pid" 2>/dev/null || { echo "start: veza-controlplane exited" >&2; exit 1; }
  sleep 0.1
done

VEZA_CONTROL_ADDRESS="unix:$(realpath "$socket")" VEZA_TRACKS_MEDIA_DIR="$(realpath "$data_dir")/media" ./target/release/veza-dataplane "$@" &
data_pid=$!
wait "$data_pid"
