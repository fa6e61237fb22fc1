#!/usr/bin/env bash
# Instruction counts (valgrind --tool=callgrind) of the data plane under a
# short, bounded echo load: the total instructions executed (Ir), Ir per
# echoed message, and the functions that execute the most. Counts do not
# depend on the machine's load or clock, so two builds can be compared on a
# noisy machine. See perf/README.md.
set -euo pipefail
SCRIPT_NAME=perf/callgrind.sh
# shellcheck source=perf/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# How long the data plane may take to answer /ready under valgrind (it runs
# about 50 times slower there).
readonly READY_TIMEOUT_SECONDS=60
# How long it may take to drain and exit after SIGTERM before it is killed
# (a killed process writes no final profile).
readonly STOP_TIMEOUT_SECONDS=10

usage() {
  cat <<'EOF'
usage: perf/callgrind.sh [--load python|bench] [--messages N] [--connections N]
                         [--payload-bytes N] [--driver epoll|io_uring] [--top N]
                         [--binary PATH] [--output-dir DIR]
       perf/callgrind.sh --check

Starts the data plane under valgrind --tool=callgrind with one shard,
drives it with a short bounded WebSocket echo load, and prints the total
instruction count (Ir), Ir per echoed message and the top functions by
their own Ir (callgrind_annotate).

  --load python      (default) perf/echo_load.py sends exactly --messages per
                     connection, one in flight at a time; counters are zeroed
                     once the server is ready and dumped when the load ends,
                     so start-up and shutdown are left out and repeated runs
                     of one build give the same counts within a fraction of a
                     percent
  --load bench       target/release/veza-bench ws-echo --server veza --smoke
                     runs with the data plane under callgrind: the whole
                     process is counted (start-up, warm-up, shutdown) and the
                     load is time-bounded, so only Ir per message compares
  --messages N       messages per connection (python load; default 2000)
  --connections N    connections (python load; default 1; more connections
                     make the batching, and so the counts, timing-dependent)
  --payload-bytes N  message size (default 64 for python, 1024 for bench)
  --driver D         epoll (default) or io_uring; valgrind does not treat a
                     waiting io_uring_enter as a blocking call, so under
                     io_uring the main thread (signals, watchdog) can starve
                     and shutdown can hang
  --top N            functions to list (default 25)
  --binary PATH      the data plane (default target/release/veza-dataplane,
                     built when missing)
  --output-dir DIR   where the callgrind.out files go (default
                     target/perf/callgrind-<time>)
  --check            only check the prerequisites; always exits 0
  --help             this text

Installs valgrind (apt, as root) and the Python package websockets when
missing. Open the profile with callgrind_annotate FILE or kcachegrind FILE.
EOF
}

load=python
messages=2000
connections=1
payload_bytes=""
driver=epoll
top=25
binary=""
output_dir=""
check_only=false
while [ $# -gt 0 ]; do
  case "$1" in
    --load) load=${2:?--load needs python or bench}; shift 2 ;;
    --messages) messages=${2:?--messages needs a number}; shift 2 ;;
    --connections) connections=${2:?--connections needs a number}; shift 2 ;;
    --payload-bytes) payload_bytes=${2:?--payload-bytes needs a number}; shift 2 ;;
    --driver) driver=${2:?--driver needs epoll or io_uring}; shift 2 ;;
    --top) top=${2:?--top needs a number}; shift 2 ;;
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --output-dir) output_dir=${2:?--output-dir needs a path}; shift 2 ;;
    --check) check_only=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) say "unknown argument $1"; usage >&2; exit 2 ;;
  esac
done
case "$load" in python | bench) ;; *) die "--load must be python or bench" ;; esac
case "$driver" in epoll | io_uring) ;; *) die "--driver must be epoll or io_uring" ;; esac
for number in "$messages" "$connections" "$top"; do
  [[ "$number" =~ ^[1-9][0-9]*$ ]] || die "--messages, --connections and --top must be positive whole numbers"
done

check() {
  echo "$SCRIPT_NAME --check"
  local ready=true
  if command -v valgrind >/dev/null 2>&1 && command -v callgrind_annotate >/dev/null 2>&1; then
    echo "  valgrind: $(command -v valgrind) ($(valgrind --version))"
  elif is_root; then
    echo "  valgrind: missing; the first run installs it (apt-get install valgrind)"
  else
    echo "  valgrind: missing; run as root: apt-get update && apt-get install -y valgrind"
    ready=false
  fi
  if [ -x "$VEZA_REPO_ROOT/target/release/veza-dataplane" ]; then
    echo "  data plane: target/release/veza-dataplane"
  elif command -v cargo >/dev/null 2>&1; then
    echo "  data plane: not built; the first run builds it (cargo build --release -p veza-dataplane)"
  else
    echo "  data plane: not built and cargo is missing"
    ready=false
  fi
  if python_has_websockets; then
    echo "  load (python): perf/echo_load.py with websockets"
  else
    echo "  load (python): the Python package websockets is missing; the first run installs it with pip"
  fi
  if [ -x "$VEZA_REPO_ROOT/target/release/veza-bench" ]; then
    echo "  load (bench): target/release/veza-bench"
  else
    echo "  load (bench): target/release/veza-bench not built (cargo build --release -p veza-bench)"
  fi
  # Callgrind counts instructions by instrumenting the program, so unlike
  # perf it needs no hardware counter.
  echo "  hardware counters: not needed (callgrind counts instructions in software)"
  if $ready; then
    echo "check: ready"
  else
    echo "check: not ready yet: see the lines above"
  fi
}

if $check_only; then
  check
  exit 0
fi

install_apt_packages valgrind perl || exit 1
[ -n "$binary" ] || binary=$(release_binary veza-dataplane veza-dataplane)
[ -x "$binary" ] || die "$binary is not an executable"
[ -n "$output_dir" ] || output_dir="$VEZA_REPO_ROOT/target/perf/callgrind-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$output_dir"
output_dir=$(cd "$output_dir" && pwd)

# The environment the data plane runs with under callgrind: one shard, quiet
# logs, and a heartbeat slow enough that no timer fires during the load (a
# 10 ms heartbeat would add a number of wake-ups that depends on how long
# the run took, which is what instruction counts must not depend on).
server_environment=(
  VEZA_SERVER_SHARDS=1
  VEZA_SERVER_LISTEN_ADDRESS=127.0.0.1
  VEZA_SERVER_LOG_LEVEL=warn
  VEZA_SERVER_SHUTDOWN_DRAIN_MS_MAX=2000
  VEZA_STALL_CHECK_INTERVAL_MS=600000
  VEZA_STALL_BUDGET_MS=600000
)
[ "$driver" = epoll ] && server_environment+=(MONOIO_FORCE_LEGACY_DRIVER=1)
valgrind_options=(--tool=callgrind "--callgrind-out-file=$output_dir/callgrind.out.%p")

# total_ir FILE: the profile's total instruction count.
total_ir() {
  awk '/^(summary|totals):/ { print $2; exit }' "$1"
}

# mark_calls_in_progress FILE: a profile dumped after `callgrind_control
# --zero` records the calls that were already running (the thread's entry
# frames) with a call count of 0, and callgrind_annotate (3.19) then books
# their whole inclusive cost as the caller's own, so `clone` would show 99 %
# of the program. Counting those calls once fixes that; no cost changes.
mark_calls_in_progress() {
  sed -i 's/^calls=0 /calls=1 /' "$1"
}

# print_top FILE: the top functions by their own (exclusive) Ir, with the
# long registry and toolchain path prefixes cut.
print_top() {
  echo "top $top functions by own Ir (callgrind_annotate --inclusive=no):"
  callgrind_annotate --inclusive=no --threshold=100 --auto=no "$1" 2>/dev/null |
    awk '/^ *[0-9,]+ +\([ 0-9.]+%\) +[^ ]/ && !/PROGRAM TOTALS/' |
    sed -e 's#/root/\.cargo/registry/src/[^/]*/#cargo:#' -e 's#/rustc/[0-9a-f]*/#rustc:#' \
      -e "s#$VEZA_REPO_ROOT/##" |
    awk -v top="$top" 'NR <= top' # awk reads to the end: no SIGPIPE under pipefail
}

run_python_load() {
  install_python_websockets
  [ -n "$payload_bytes" ] || payload_bytes=64
  local port server_pid dump zeroed=true
  port=$(free_port)
  env "${server_environment[@]}" VEZA_SERVER_LISTEN_PORT="$port" \
    valgrind "${valgrind_options[@]}" "$binary" >"$output_dir/server.log" 2>&1 &
  server_pid=$!
  # shellcheck disable=SC2064 # the PID is known now and must be the one killed
  trap "kill -KILL $server_pid 2>/dev/null || true" EXIT
  say "data plane under callgrind: PID $server_pid, port $port, driver $driver"
  wait_ready "$port" "$READY_TIMEOUT_SECONDS" || die "the data plane did not become ready; see $output_dir/server.log"
  if ! callgrind_control --zero "$server_pid" >/dev/null 2>&1; then
    zeroed=false
    say "callgrind_control could not reach the process (ptrace refused?); counts will include start-up and shutdown"
  fi
  python3 "$VEZA_REPO_ROOT/perf/echo_load.py" --url "ws://127.0.0.1:$port/v1/echo" \
    --connections "$connections" --messages "$messages" --payload-bytes "$payload_bytes" \
    >"$output_dir/load.json" || die "the echo load failed: $(cat "$output_dir/load.json")"
  dump="$output_dir/callgrind.out.$server_pid"
  if $zeroed && callgrind_control --dump=load "$server_pid" >/dev/null 2>&1; then
    dump="$dump.1"
  fi
  kill -TERM "$server_pid"
  local deadline=$((SECONDS + STOP_TIMEOUT_SECONDS))
  while kill -0 "$server_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid"
    say "the data plane did not exit within $STOP_TIMEOUT_SECONDS s after SIGTERM and was killed"
  fi
  wait "$server_pid" 2>/dev/null || true
  trap - EXIT
  [ -s "$dump" ] || die "no profile was written ($dump); see $output_dir/server.log"
  local echoed ir
  echoed=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["messages"])' "$output_dir/load.json")
  ir=$(total_ir "$dump")
  echo "load: $connections connection(s) x $messages messages of $payload_bytes B, one in flight each; $echoed echoed"
  if $zeroed; then
    echo "counted: from /ready until the load ended (start-up and shutdown excluded)"
  else
    echo "counted: the whole process, start-up and shutdown included"
  fi
  report "$dump" "$ir" "$echoed"
}

run_bench_load() {
  local bench
  bench=$(release_binary veza-bench veza-bench)
  [ -n "$payload_bytes" ] || payload_bytes=1024
  # The bench starts the server itself: hand it a wrapper that starts the
  # data plane under callgrind (exec keeps the PID the bench signals).
  local wrapper="$output_dir/veza-dataplane-under-callgrind"
  {
    echo '#!/usr/bin/env bash'
    printf 'exec env'
    printf ' %q' "${server_environment[@]}" valgrind "${valgrind_options[@]}" "$binary"
    echo ' "$@"'
  } >"$wrapper"
  chmod +x "$wrapper"
  say "running veza-bench ws-echo --server veza --smoke with the data plane under callgrind"
  "$bench" ws-echo --server veza --veza-bin "$wrapper" --shards 1 --payload-sizes "$payload_bytes" \
    --smoke --json "$output_dir/bench.json" >"$output_dir/bench.txt" 2>&1 ||
    die "veza-bench failed: $(tail -n 20 "$output_dir/bench.txt")"
  local dump
  dump=$(find "$output_dir" -name 'callgrind.out.*' -size +0 -print -quit)
  [ -n "$dump" ] || die "no profile was written; see $output_dir/bench.txt"
  local echoed ir
  echoed=$(python3 -c 'import json, sys; print(sum(run["messages"] for run in json.load(open(sys.argv[1]))["runs"]))' "$output_dir/bench.json")
  ir=$(total_ir "$dump")
  echo "load: veza-bench ws-echo --smoke, payload $payload_bytes B; $echoed messages in the measured window"
  echo "counted: the whole process (start-up, warm-up, measured window, shutdown); the load is time-bounded,"
  echo "         so compare Ir per message between builds, not the total"
  report "$dump" "$ir" "$echoed"
}

# report FILE IR MESSAGES
report() {
  mark_calls_in_progress "$1"
  echo "total Ir: $2"
  if [ "$3" -gt 0 ]; then
    echo "Ir per echoed message: $(($2 / $3))"
  fi
  print_top "$1"
  echo "profile: $1 (callgrind_annotate --inclusive=yes $1, or kcachegrind)"
}

case "$load" in
  python) run_python_load ;;
  bench) run_bench_load ;;
esac
