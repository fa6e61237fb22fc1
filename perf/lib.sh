# shellcheck shell=bash
# Shared by perf/stat.sh, perf/flamegraph.sh and perf/callgrind.sh (sourced,
# not run). Finding the data plane and its shard threads, installing what a
# script needs, and telling which perf events this machine supports.
#
# The caller sets SCRIPT_NAME before sourcing.

VEZA_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly VEZA_REPO_ROOT

# The data plane's process name (the kernel keeps 15 bytes of it).
readonly DATAPLANE_PROCESS_NAME=veza-dataplane
# Shard threads are named veza-shard-N by dataplane/src/server.rs.
readonly SHARD_THREAD_PREFIX=veza-shard-

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
  say "$*"
  exit 1
}
is_root() { [ "$(id -u)" -eq 0 ]; }

apt_package_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# install_apt_packages PACKAGE...: installs the missing ones as root; as
# another user prints the exact command and returns 1.
install_apt_packages() {
  local missing=() package
  for package in "$@"; do
    apt_package_installed "$package" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! is_root; then
    say "missing Debian packages; run as root: apt-get update && apt-get install -y ${missing[*]}"
    return 1
  fi
  say "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# require_command COMMAND PACKAGE: installs PACKAGE when COMMAND is missing.
require_command() {
  command -v "$1" >/dev/null 2>&1 && return 0
  install_apt_packages "$2" || exit 1
  command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}

# find_dataplane_pid [PID]: prints the data plane's PID: PID when given
# (checked to exist), else the only process named veza-dataplane.
find_dataplane_pid() {
  local pid=${1:-}
  if [ -n "$pid" ]; then
    [ -d "/proc/$pid" ] || die "no process with PID $pid"
    printf '%s\n' "$pid"
    return
  fi
  local pids
  pids=$(pgrep -x "$DATAPLANE_PROCESS_NAME" || true)
  if [ -z "$pids" ]; then
    die "no running $DATAPLANE_PROCESS_NAME; start one (bash scripts/start.sh) or pass --pid PID"
  fi
  if [ "$(printf '%s\n' "$pids" | wc -l)" -gt 1 ]; then
    die "several $DATAPLANE_PROCESS_NAME processes ($(printf '%s' "$pids" | tr '\n' ' ')); choose one with --pid PID"
  fi
  printf '%s\n' "$pids"
}

# shard_threads PID: prints "TID NAME" for each veza-shard-N thread of PID,
# in shard order.
shard_threads() {
  local pid=$1 task name
  for task in /proc/"$pid"/task/*; do
    name=$(cat "$task/comm" 2>/dev/null) || continue
    case "$name" in
      "$SHARD_THREAD_PREFIX"*) printf '%s %s\n' "${task##*/}" "$name" ;;
    esac
  done | sort -k2,2V
}

# perf_works: perf exists and may open at least a software event here
# (a container's seccomp profile or kernel.perf_event_paranoid can forbid it).
perf_works() {
  command -v perf >/dev/null 2>&1 && perf stat -x, -e task-clock true >/dev/null 2>&1
}

# perf_event_supported EVENT: the event counts here (not "<not supported>").
# Virtual machines without a virtual PMU have no hardware counters.
perf_event_supported() {
  local output
  output=$(perf stat -x, -e "$1" true 2>&1) || return 1
  printf '%s\n' "$output" | grep -q ",$1," || return 1
  ! printf '%s\n' "$output" | grep -q -e '<not supported>' -e '<not counted>'
}

hardware_counters_supported() {
  perf_event_supported instructions && perf_event_supported cycles
}

# Syscalls are counted with the raw_syscalls:sys_enter tracepoint, which
# needs tracefs (mounted by the kernel at /sys/kernel/tracing) and root or
# kernel.perf_event_paranoid <= -1.
syscall_tracepoint_supported() {
  perf_event_supported raw_syscalls:sys_enter
}

# describe_perf_support: one line per capability, for --check.
describe_perf_support() {
  if hardware_counters_supported; then
    echo "  hardware counters (cycles, instructions): supported"
  else
    echo "  hardware counters (cycles, instructions): NOT SUPPORTED here (no PMU exposed: a VM or container); software events only"
  fi
  if syscall_tracepoint_supported; then
    echo "  syscall tracepoint (raw_syscalls:sys_enter): supported"
  else
    echo "  syscall tracepoint (raw_syscalls:sys_enter): NOT SUPPORTED here (needs tracefs and root); syscalls per second are not reported"
  fi
  local paranoid
  paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo unknown)
  if ! is_root && [ "$paranoid" != unknown ] && [ "$paranoid" -gt 1 ]; then
    echo "  kernel.perf_event_paranoid = $paranoid: other users' processes cannot be profiled; run as root or: sysctl -w kernel.perf_event_paranoid=1"
  fi
}

# release_binary NAME PACKAGE: prints target/release/NAME, building PACKAGE
# first when it is missing.
release_binary() {
  local binary="$VEZA_REPO_ROOT/target/release/$1"
  if [ ! -x "$binary" ]; then
    command -v cargo >/dev/null 2>&1 || die "$binary is missing and cargo is not installed"
    say "building $1 (release)"
    (cd "$VEZA_REPO_ROOT" && cargo build --release --locked -p "$2" >&2)
  fi
  printf '%s\n' "$binary"
}

# python_has_websockets: the echo load driver's one dependency.
python_has_websockets() {
  python3 -c 'import websockets' >/dev/null 2>&1
}

install_python_websockets() {
  python_has_websockets && return 0
  say "installing the Python package websockets"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore websockets >&2 ||
    python3 -m pip install --quiet --disable-pip-version-check websockets >&2 ||
    die "cannot install websockets; run: python3 -m pip install websockets"
}

# free_port: a free TCP port on the loopback interface.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_ready PORT SECONDS: polls GET /ready until it answers 200.
wait_ready() {
  local port=$1 deadline=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if python3 - "$port" <<'EOF' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ready", timeout=1) as response:
    sys.exit(0 if response.status == 200 else 1)
EOF
      return 0
    fi
    sleep 0.2
  done
  return 1
}

# report_perf_check [MORE]: the --check report shared by stat.sh and
# flamegraph.sh. Prints what is there and what is missing (MORE, a function,
# adds the caller's own lines), ends with one "check:" line, and returns 0 in
# every case: a machine without hardware counters can still run the script
# with software events, and a missing package is installed by the first real
# run (as root).
# shellcheck disable=SC2120 # MORE is optional
report_perf_check() {
  echo "$SCRIPT_NAME --check"
  [ -n "${1:-}" ] && "$1"
  if ! command -v perf >/dev/null 2>&1; then
    if is_root; then
      echo "  perf: missing; the first run installs it (apt-get install linux-perf)"
    else
      echo "  perf: missing; run as root: apt-get update && apt-get install -y linux-perf"
    fi
    echo "check: not ready yet: perf is not installed (counter support is known once it is)"
    return 0
  fi
  echo "  perf: $(command -v perf) ($(perf --version 2>/dev/null))"
  if ! perf_works; then
    echo "  perf_event_open: refused (a seccomp profile, or kernel.perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null))"
    echo "check: unsupported here: perf may not open events on this machine"
    return 0
  fi
  describe_perf_support
  if hardware_counters_supported; then
    echo "check: ready"
  else
    echo "check: ready (software events only: hardware counters are unsupported here)"
  fi
}
