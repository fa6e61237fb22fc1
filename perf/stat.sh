#!/usr/bin/env bash
# perf stat of a running data plane, one row per shard thread: CPU use,
# cycles, instructions, IPC, context switches, CPU migrations, page faults
# and syscalls, as rates per second of wall time. See perf/README.md for how
# to read them.
set -euo pipefail
SCRIPT_NAME=perf/stat.sh
# shellcheck source=perf/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
usage: perf/stat.sh [--pid PID] [--seconds N] [--load] [--port PORT] [--load-connections N]
       perf/stat.sh --check

Counts, for N seconds (default 10), each thread of a running veza-dataplane
(found by name, or --pid PID): CPU utilisation, cycles, instructions, IPC,
context switches/s, CPU migrations/s, page faults/s and syscalls/s. Shard
threads are named veza-shard-N; the main thread (watchdog, signals) is shown
apart.

  --pid PID              the data plane's PID (default: the only veza-dataplane)
  --seconds N            how long to count (default 10)
  --load                 drive a WebSocket echo load (perf/echo_load.py) meanwhile
  --port PORT            the data plane's port for --load (default 8080)
  --load-connections N   connections of that load (default 4)
  --check                only check the prerequisites and which counters this
                         machine supports; always exits 0
  --help                 this text

Installs linux-perf when missing (as root; otherwise prints the command).
Without hardware counters (most VMs), cycles, instructions and IPC print as
"not supported" and the software events are still counted.
EOF
}

pid=""
seconds=10
with_load=false
port=8080
load_connections=4
check_only=false
while [ $# -gt 0 ]; do
  case "$1" in
    --pid) pid=${2:?--pid needs a PID}; shift 2 ;;
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --load) with_load=true; shift ;;
    --port) port=${2:?--port needs a port}; shift 2 ;;
    --load-connections) load_connections=${2:?--load-connections needs a number}; shift 2 ;;
    --check) check_only=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) say "unknown argument $1"; usage >&2; exit 2 ;;
  esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive whole number"

if $check_only; then
  report_perf_check
  exit 0
fi

require_command perf linux-perf
require_command pgrep procps
perf_works || die "perf may not open events here (seccomp, or kernel.perf_event_paranoid); run as root or: sysctl -w kernel.perf_event_paranoid=1"
pid=$(find_dataplane_pid "$pid")
[ -n "$(shard_threads "$pid")" ] || die "PID $pid has no veza-shard-N threads: is it the data plane?"

events=(task-clock context-switches cpu-migrations page-faults)
hardware=false
if hardware_counters_supported; then
  hardware=true
  events+=(cycles instructions)
else
  say "hardware counters (cycles, instructions) are not supported on this machine (no PMU exposed: a VM or container); counting software events only"
fi
syscalls=false
if syscall_tracepoint_supported; then
  syscalls=true
  events+=(raw_syscalls:sys_enter)
else
  say "the raw_syscalls:sys_enter tracepoint is not supported here (needs tracefs and root); syscalls/s are not reported"
fi

work_dir=$(mktemp -d /tmp/veza-perf-stat.XXXXXX)
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

echo "perf stat of PID $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline")) for $seconds s"
echo "shard threads: $(shard_threads "$pid" | awk '{printf "%s%s(tid %s)", sep, $2, $1; sep=", "}')"
# --per-thread with -p reports every thread of the process over the same
# window; `sleep` only sets the length of that window.
perf stat -x, --per-thread -p "$pid" -e "$(
  IFS=,
  echo "${events[*]}"
)" -o "$work_dir/stat.csv" -- sleep "$seconds"

if [ -n "$load_pid" ]; then
  wait "$load_pid" || say "the echo load reported errors"
  load_pid=""
  echo "load: $(cat "$work_dir/load.json")"
fi

awk -F, -v seconds="$seconds" -v hardware="$hardware" -v syscalls="$syscalls" -v prefix="$SHARD_THREAD_PREFIX" '
  function rate(value) { return value == "" ? "-" : sprintf("%.0f", value / seconds) }
  function shard_number(name) { return substr(name, length(prefix) + 1) + 0 }
  /^#/ || NF < 4 { next }
  {
    thread = $1; sub(/-[0-9]+$/, "", thread)
    if (!(thread in seen)) { seen[thread] = 1; order[++n] = thread }
    value = ($2 ~ /^[0-9.]+$/) ? $2 : ""
    counts[thread, $4] = value
    if (value != "") totals[$4] += value
  }
  END {
    printf "%-22s %8s %14s %14s %6s %12s %12s %12s %12s\n", "thread", "cpu_%", "cycles/s", "instructions/s", "IPC", "ctx_sw/s", "migrations/s", "faults/s", "syscalls/s"
    # Shards first, in shard order, then the other threads, then the total.
    shard_count = 0
    for (i = 1; i <= n; i++) if (index(order[i], prefix) == 1) shards[++shard_count] = order[i]
    for (i = 2; i <= shard_count; i++)
      for (j = i; j > 1 && shard_number(shards[j]) < shard_number(shards[j - 1]); j--) {
        swap = shards[j]; shards[j] = shards[j - 1]; shards[j - 1] = swap
      }
    for (i = 1; i <= shard_count; i++) row(shards[i], shards[i])
    for (i = 1; i <= n; i++) if (index(order[i], prefix) != 1) row(order[i], "main: " order[i])
    for (event in totals) counts["(total)", event] = totals[event]
    row("(total)", "process total")
    if (hardware != "true") print "cycles, instructions, IPC: not supported on this machine (no hardware counters)"
    if (syscalls != "true") print "syscalls/s: not supported on this machine (no raw_syscalls tracepoint)"
  }
  function row(key, label,    cycles, instructions, ipc) {
    cycles = counts[key, "cycles"]; instructions = counts[key, "instructions"]
    ipc = (cycles != "" && cycles > 0 && instructions != "") ? sprintf("%.2f", instructions / cycles) : "-"
    printf "%-22s %8.1f %14s %14s %6s %12s %12s %12s %12s\n", label,
      counts[key, "task-clock"] / (seconds * 10),
      hardware == "true" ? rate(cycles) : "n/s", hardware == "true" ? rate(instructions) : "n/s",
      hardware == "true" ? ipc : "n/s",
      rate(counts[key, "context-switches"]), rate(counts[key, "cpu-migrations"]),
      rate(counts[key, "page-faults"]),
      syscalls == "true" ? rate(counts[key, "raw_syscalls:sys_enter"]) : "n/s"
  }
' "$work_dir/stat.csv"
