#!/usr/bin/env bash
# perf record -g on a running data plane for N seconds, then an SVG flame
# graph drawn by the inferno crate (inferno-collapse-perf and
# inferno-flamegraph). See perf/README.md for how to read it.
set -euo pipefail
SCRIPT_NAME=perf/flamegraph.sh
# shellcheck source=perf/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# inferno is installed here (not into ~/.cargo) when it is not on PATH.
readonly TOOLS_ROOT="$VEZA_REPO_ROOT/target/tools"
# Samples per second per CPU: 99 rather than 100 so that sampling does not
# run in lockstep with the shards' 10 ms heartbeat.
readonly SAMPLE_HZ_DEFAULT=99

usage() {
  cat <<'EOF'
usage: perf/flamegraph.sh [--pid PID] [--seconds N] [--output FILE.svg]
                          [--call-graph dwarf|fp] [--frequency HZ] [--per-thread]
                          [--load] [--port PORT] [--load-connections N]
       perf/flamegraph.sh --check

Samples the call stacks of a running veza-dataplane (found by name, or
--pid PID) for N seconds (default 10) with perf record, then draws an SVG
flame graph with inferno (target/perf/flamegraph-<time>.svg by default).

  --pid PID              the data plane's PID (default: the only veza-dataplane)
  --seconds N            how long to sample (default 10)
  --output FILE.svg      where to write the flame graph
  --call-graph MODE      dwarf (default: works on release builds, which omit
                         frame pointers) or fp (cheaper; build with
                         RUSTFLAGS="-C force-frame-pointers=yes")
  --frequency HZ         samples per second (default 99)
  --per-thread           one tower per thread (veza-shard-N side by side)
  --load                 drive a WebSocket echo load (perf/echo_load.py) meanwhile
  --port PORT            the data plane's port for --load (default 8080)
  --load-connections N   connections of that load (default 4)
  --check                only check the prerequisites; always exits 0
  --help                 this text

Installs linux-perf (apt, as root) and inferno (cargo install inferno
--locked --root target/tools) when missing. Without hardware counters (most
VMs) it samples the cpu-clock software event instead of cycles and says so.
EOF
}

pid=""
seconds=10
output=""
call_graph=dwarf
frequency=$SAMPLE_HZ_DEFAULT
per_thread=false
with_load=false
port=8080
load_connections=4
check_only=false
while [ $# -gt 0 ]; do
  case "$1" in
    --pid) pid=${2:?--pid needs a PID}; shift 2 ;;
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --output) output=${2:?--output needs a path}; shift 2 ;;
    --call-graph) call_graph=${2:?--call-graph needs dwarf or fp}; shift 2 ;;
    --frequency) frequency=${2:?--frequency needs a number}; shift 2 ;;
    --per-thread) per_thread=true; shift ;;
    --load) with_load=true; shift ;;
    --port) port=${2:?--port needs a port}; shift 2 ;;
    --load-connections) load_connections=${2:?--load-connections needs a number}; shift 2 ;;
    --check) check_only=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) say "unknown argument $1"; usage >&2; exit 2 ;;
  esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive whole number"
case "$call_graph" in
  dwarf) call_graph_option=dwarf,16384 ;;
  fp) call_graph_option=fp ;;
  *) die "--call-graph must be dwarf or fp" ;;
esac

# inferno_bin NAME: the inferno tool's path, or nothing.
inferno_bin() {
  if command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
  elif [ -x "$TOOLS_ROOT/bin/$1" ]; then
    echo "$TOOLS_ROOT/bin/$1"
  fi
}

install_inferno() {
  [ -n "$(inferno_bin inferno-flamegraph)" ] && [ -n "$(inferno_bin inferno-collapse-perf)" ] && return 0
  command -v cargo >/dev/null 2>&1 || die "inferno is missing and cargo is not installed (https://rustup.rs)"
  say "installing inferno into $TOOLS_ROOT (cargo install inferno --locked; a minute or two)"
  cargo install inferno --locked --root "$TOOLS_ROOT" >&2
}

describe_inferno() {
  if [ -n "$(inferno_bin inferno-flamegraph)" ]; then
    echo "  inferno: $(inferno_bin inferno-flamegraph)"
  elif command -v cargo >/dev/null 2>&1; then
    echo "  inferno: missing; the first run installs it (cargo install inferno --locked --root target/tools)"
  else
    echo "  inferno: missing, and cargo too: install the Rust toolchain (https://rustup.rs)"
  fi
}

if $check_only; then
  report_perf_check describe_inferno
  exit 0
fi

require_command perf linux-perf
require_command pgrep procps
perf_works || die "perf may not open events here (seccomp, or kernel.perf_event_paranoid); run as root or: sysctl -w kernel.perf_event_paranoid=1"
install_inferno
pid=$(find_dataplane_pid "$pid")

event=cycles
if ! perf_event_supported cycles; then
  event=cpu-clock
  say "the cycles hardware counter is not supported on this machine (no PMU exposed: a VM or container); sampling the cpu-clock software event instead"
fi

if [ -z "$output" ]; then
  mkdir -p "$VEZA_REPO_ROOT/target/perf"
  output="$VEZA_REPO_ROOT/target/perf/flamegraph-$(date +%Y%m%d-%H%M%S).svg"
fi
work_dir=$(mktemp -d /tmp/veza-flamegraph.XXXXXX)
load_pid=""
cleanup() {
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null
  rm -rf "$work_dir"
}
trap cleanup EXIT

if $with_load; then
  install_python_websockets
  python3 "$VEZA_REPO_ROOT/perf/echo_load.py" --url "ws://127.0.0.1:$port/v1/echo" \
    --connections "$load_connections" --seconds "$((seconds + 1))" >"$work_dir/load.json" &
  load_pid=$!
  sleep 0.5
fi

say "sampling PID $pid ($event, $frequency Hz, call graph $call_graph) for $seconds s"
perf record -e "$event" -F "$frequency" --call-graph "$call_graph_option" -p "$pid" \
  -o "$work_dir/perf.data" -- sleep "$seconds" 2>"$work_dir/record.log" ||
  die "perf record failed: $(cat "$work_dir/record.log")"
if [ -n "$load_pid" ]; then
  wait "$load_pid" || say "the echo load reported errors"
  load_pid=""
  say "load: $(cat "$work_dir/load.json")"
fi

collapse_options=()
$per_thread && collapse_options+=(--tid)
perf script -i "$work_dir/perf.data" 2>/dev/null |
  "$(inferno_bin inferno-collapse-perf)" "${collapse_options[@]}" >"$work_dir/stacks.folded"
[ -s "$work_dir/stacks.folded" ] || die "no samples: was the data plane idle or gone? (try --load)"
# perf record ends with "[ perf record: Captured and wrote ... (N samples) ]".
samples=$(grep -o '([0-9]* samples)' "$work_dir/record.log" | tr -dc '0-9')
# inferno weighs each stack by the sample's period: nanoseconds of CPU time
# for cpu-clock, cycles for cycles.
count_name=cycles
[ "$event" = cpu-clock ] && count_name=ns
"$(inferno_bin inferno-flamegraph)" \
  --title "veza-dataplane PID $pid, $seconds s, $event at $frequency Hz" \
  --subtitle "${samples:-?} samples; width = share of on-CPU time; the top edge of a tower is where the time is spent" \
  --countname "$count_name" \
  <"$work_dir/stacks.folded" >"$output"
echo "flame graph: $output (${samples:-?} samples)"
