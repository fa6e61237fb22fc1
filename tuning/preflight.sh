#!/usr/bin/env bash
# Checks this machine against the data plane's configuration, as the service
# would run: `veza-dataplane --preflight` (io_uring, RLIMIT_NOFILE and
# RLIMIT_MEMLOCK against the configured limits, somaxconn, CPUs, transparent
# huge pages) with the configuration file, resource limits, CPU affinity and
# environment of the systemd unit, then the host facts a person wants next to
# them. Every line is pass / warn / fail, with the fix under each warn/fail.
# Changes nothing. Exit 0 unless a check fails.
set -euo pipefail
SCRIPT_NAME=tuning/preflight.sh
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT

# Kernel versions that matter to the data plane: io_uring (5.1) with the
# operations monoio uses (5.6), and io_uring memory charged to the memory
# cgroup instead of RLIMIT_MEMLOCK (5.12).
readonly KERNEL_IO_URING_MIN=5.6
readonly KERNEL_MEMCG_ACCOUNTING_MIN=5.12

usage() {
  cat <<'EOF'
usage: tuning/preflight.sh [--config PATH] [--binary PATH] [--unit PATH]
                           [--shell-limits] [--no-build]

Runs `veza-dataplane --preflight` the way the service would run it, then
prints host facts (kernel, kernel.io_uring_disabled, seccomp, limits,
somaxconn, CPUs and affinity, isolated CPUs, THP, CPU frequency governor,
irqbalance), each as pass / warn / fail with the fix. Changes nothing.

  --config PATH    the data plane configuration (default: the --config of the
                   unit's ExecStart when that file exists, else
                   /etc/veza/veza-dataplane.toml, else deploy/veza-dataplane.toml)
  --binary PATH    the data plane binary (default: $VEZA_DATAPLANE_BIN, the
                   unit's ExecStart binary, target/release/veza-dataplane,
                   veza-dataplane on PATH; else it is built)
  --unit PATH      the systemd unit whose LimitNOFILE, LimitMEMLOCK,
                   CPUAffinity and Environment apply (default: the installed
                   /etc/systemd/system/veza-dataplane.service, else
                   deploy/systemd/veza-dataplane.service)
  --shell-limits   check with this shell's limits and affinity instead of the unit's
  --no-build       fail instead of building a missing binary
  --help           this text

Exit status: 0 when nothing fails (warnings included), 1 when a check
fails, 2 for a usage error or a configuration the data plane refuses.
EOF
}

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
  say "$*"
  exit 2
}

config=""
binary=${VEZA_DATAPLANE_BIN:-}
unit=""
use_unit_limits=true
build_allowed=true
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config=${2:?--config needs a path}; shift 2 ;;
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --unit) unit=${2:?--unit needs a path}; shift 2 ;;
    --shell-limits) use_unit_limits=false; shift ;;
    --no-build) build_allowed=false; shift ;;
    -h | --help) usage; exit 0 ;;
    *) say "unknown argument $1"; usage >&2; exit 2 ;;
  esac
done

pass_count=0
warn_count=0
fail_count=0
# verdict pass|warn|fail NAME FINDING [FIX]: one line in the binary's format.
verdict() {
  printf '%s %-22s %s\n' "$1" "$2" "$3"
  if [ -n "${4:-}" ]; then
    printf '      %-22s fix: %s\n' "" "$4"
  fi
  case "$1" in
    pass) pass_count=$((pass_count + 1)) ;;
    warn) warn_count=$((warn_count + 1)) ;;
    fail) fail_count=$((fail_count + 1)) ;;
  esac
}

# --- the unit: limits, affinity, environment and ExecStart ------------------

# read_unit FILE: prints "KIND<tab>VALUE" lines for the [Service] settings
# that change how the data plane runs. Python's shlex splits Environment= and
# ExecStart= the way systemd does for the simple quoting units use.
read_unit() {
  python3 - "$1" <<'EOF'
import shlex, sys
section = None
for raw in open(sys.argv[1], encoding="utf-8"):
    line = raw.strip()
    if not line or line[0] in "#;":
        continue
    if line.startswith("["):
        section = line
        continue
    if section != "[Service]" or "=" not in line:
        continue
    key, value = (part.strip() for part in line.split("=", 1))
    if key == "LimitNOFILE" and value:
        print("nofile\t" + value)
    elif key == "LimitMEMLOCK" and value:
        print("memlock\t" + value)
    elif key == "CPUAffinity" and value:
        print("cpus\t" + ",".join(value.split()))
    elif key == "Environment":
        for assignment in shlex.split(value):
            print("environment\t" + assignment)
    elif key == "ExecStart" and value:
        words = shlex.split(value.lstrip("@-:+!"))
        print("exec\t" + words[0])
        if "--config" in words[:-1]:
            print("config\t" + words[words.index("--config") + 1])
EOF
}

if [ -z "$unit" ]; then
  for candidate in /etc/systemd/system/veza-dataplane.service "$REPO_ROOT/deploy/systemd/veza-dataplane.service"; do
    if [ -f "$candidate" ]; then
      unit=$candidate
      break
    fi
  done
fi
unit_nofile=""
unit_memlock=""
unit_cpus=""
unit_exec=""
unit_config=""
unit_environment=()
if [ -n "$unit" ]; then
  [ -f "$unit" ] || die "no unit file at $unit"
  while IFS=$'\t' read -r kind value; do
    case "$kind" in
      nofile) unit_nofile=$value ;;
      memlock) unit_memlock=$value ;;
      cpus) unit_cpus=$value ;;
      exec) unit_exec=$value ;;
      config) unit_config=$value ;;
      environment) unit_environment+=("$value") ;;
    esac
  done <<<"$(read_unit "$unit")"
fi

# --- the binary and the configuration ---------------------------------------

if [ -z "$binary" ]; then
  for candidate in "$unit_exec" "$REPO_ROOT/target/release/veza-dataplane" "$(command -v veza-dataplane || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      binary=$candidate
      break
    fi
  done
fi
if [ -z "$binary" ]; then
  $build_allowed || die "no veza-dataplane binary found (pass --binary PATH, or build it: cargo build --release -p veza-dataplane)"
  command -v cargo >/dev/null 2>&1 || die "no veza-dataplane binary and no cargo to build one"
  say "building veza-dataplane (release)"
  (cd "$REPO_ROOT" && cargo build --release --locked -p veza-dataplane >&2)
  binary="$REPO_ROOT/target/release/veza-dataplane"
fi
[ -x "$binary" ] || die "$binary is not an executable"

if [ -z "$config" ]; then
  for candidate in "$unit_config" /etc/veza/veza-dataplane.toml "$REPO_ROOT/deploy/veza-dataplane.toml"; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then
      config=$candidate
      break
    fi
  done
fi
[ -f "$config" ] || die "no configuration file at '$config'"

# The effective configuration, for the host checks below.
effective_config=$(env "${unit_environment[@]}" "$binary" --config "$config" --print-config) ||
  die "the data plane refuses $config (see the message above)"
config_value() {
  printf '%s\n' "$effective_config" | awk -v key="$1" -F' = ' '$1 == key { gsub(/"/, "", $2); print $2; exit }'
}
accept_backlog=$(config_value accept_backlog)
connections_per_shard_max=$(config_value connections_per_shard_max)

# --- veza-dataplane --preflight, as the service runs ------------------------

run_prefix=(env "${unit_environment[@]}")
limits_note="this shell's limits and CPU affinity"
if $use_unit_limits && [ -n "$unit" ]; then
  # prlimit sets the limits the unit's Limit*= lines give the service;
  # raising a hard limit needs root, so elsewhere this shell's limits apply.
  prlimit_args=()
  [ -n "$unit_nofile" ] && prlimit_args+=("--nofile=${unit_nofile/infinity/unlimited}")
  [ -n "$unit_memlock" ] && prlimit_args+=("--memlock=${unit_memlock/infinity/unlimited}")
  if [ ${#prlimit_args[@]} -eq 0 ] || prlimit "${prlimit_args[@]}" true 2>/dev/null; then
    [ ${#prlimit_args[@]} -gt 0 ] && run_prefix+=(prlimit "${prlimit_args[@]}")
    limits_note="the limits of $unit${unit_nofile:+ (LimitNOFILE=$unit_nofile}${unit_memlock:+, LimitMEMLOCK=$unit_memlock}${unit_nofile:+)}"
  else
    limits_note="this shell's limits: prlimit may not set the unit's (LimitNOFILE=$unit_nofile, LimitMEMLOCK=$unit_memlock) here (raising a hard limit needs root with CAP_SYS_RESOURCE)"
  fi
  if [ -n "$unit_cpus" ]; then
    if taskset -c "$unit_cpus" true 2>/dev/null; then
      run_prefix+=(taskset -c "$unit_cpus")
      limits_note="$limits_note, CPUAffinity=$unit_cpus"
    else
      limits_note="$limits_note; CPUAffinity=$unit_cpus is not possible here"
    fi
  fi
fi

echo "== veza-dataplane --preflight"
echo "binary: $binary"
echo "config: $config"
echo "limits: $limits_note"
set +e
preflight_output=$("${run_prefix[@]}" "$binary" --config "$config" --preflight 2>&1)
preflight_status=$?
set -e
printf '%s\n' "$preflight_output"
case "$preflight_status" in
  0) ;;
  1) ;; # a failed check, already printed
  *) die "veza-dataplane --preflight exited with $preflight_status" ;;
esac
pass_count=$((pass_count + $(printf '%s\n' "$preflight_output" | grep -c '^pass ' || true)))
warn_count=$((warn_count + $(printf '%s\n' "$preflight_output" | grep -c '^warn ' || true)))
fail_count=$((fail_count + $(printf '%s\n' "$preflight_output" | grep -c '^fail ' || true)))

# --- host facts --------------------------------------------------------------

read_file() { cat "$1" 2>/dev/null || true; }
# version_at_least A B: version A >= version B.
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

check_kernel() {
  local release version
  release=$(uname -r)
  version=${release%%-*}
  if version_at_least "$version" "$KERNEL_MEMCG_ACCOUNTING_MIN"; then
    verdict pass kernel "Linux $release (io_uring rings charged to the memory cgroup, not RLIMIT_MEMLOCK)"
  elif version_at_least "$version" "$KERNEL_IO_URING_MIN"; then
    verdict warn kernel "Linux $release: io_uring rings count against RLIMIT_MEMLOCK before $KERNEL_MEMCG_ACCOUNTING_MIN" \
      "LimitMEMLOCK=infinity in the unit, or a kernel >= $KERNEL_MEMCG_ACCOUNTING_MIN"
  else
    verdict warn kernel "Linux $release: too old for the io_uring operations monoio needs; shards use epoll" \
      "a kernel >= $KERNEL_MEMCG_ACCOUNTING_MIN (Debian 12 ships 6.1)"
  fi
}

check_io_uring_disabled() {
  local value
  value=$(read_file /proc/sys/kernel/io_uring_disabled)
  case "$value" in
    "") verdict pass io_uring_disabled "kernel.io_uring_disabled absent (kernels before 6.6 have no such switch)" ;;
    0) verdict pass io_uring_disabled "kernel.io_uring_disabled = 0 (io_uring allowed)" ;;
    1) verdict warn io_uring_disabled "kernel.io_uring_disabled = 1: only members of kernel.io_uring_group ($(read_file /proc/sys/kernel/io_uring_group)) may create rings" \
      "add the service user to that group, or: sysctl -w kernel.io_uring_disabled=0" ;;
    *) verdict warn io_uring_disabled "kernel.io_uring_disabled = $value: io_uring is off; shards use epoll" \
      "sysctl -w kernel.io_uring_disabled=0 (and in /etc/sysctl.d/ to keep it)" ;;
  esac
}

check_seccomp() {
  local mode
  mode=$(awk '/^Seccomp:/ { print $2 }' /proc/self/status)
  case "$mode" in
    0 | "") verdict pass seccomp "this shell runs without a seccomp filter" ;;
    *) verdict warn seccomp "this shell runs under a seccomp filter (mode $mode: a container?); Docker's default profile blocks io_uring, so the data plane would use epoll" \
      "run the container with --security-opt seccomp=deploy/seccomp-io-uring.json" ;;
  esac
}

check_file_limits() {
  local nr_open file_max needed shards
  nr_open=$(read_file /proc/sys/fs/nr_open)
  file_max=$(read_file /proc/sys/fs/file-max)
  shards=$(config_value shards)
  [ "$shards" = 0 ] && shards=$(nproc)
  needed=$((shards * (connections_per_shard_max + 16)))
  if [ -n "$unit_nofile" ] && [ "$unit_nofile" != infinity ] && [ -n "$nr_open" ] && [ "${unit_nofile%%:*}" -gt "$nr_open" ]; then
    verdict fail fs.nr_open "LimitNOFILE=$unit_nofile exceeds fs.nr_open = $nr_open: the service would not start" \
      "sysctl -w fs.nr_open=${unit_nofile%%:*} (tuning/apply.sh), or lower LimitNOFILE"
  else
    verdict pass fs.nr_open "fs.nr_open = $nr_open (ceiling of RLIMIT_NOFILE)"
  fi
  if [ -n "$file_max" ] && [ "$file_max" -lt "$needed" ]; then
    verdict warn fs.file-max "fs.file-max = $file_max < $needed descriptors the data plane may open" \
      "sysctl -w fs.file-max=2097152 (tuning/apply.sh)"
  else
    verdict pass fs.file-max "fs.file-max = $file_max (system-wide descriptors)"
  fi
  verdict pass shell-limits "this shell: RLIMIT_NOFILE $(ulimit -Sn) soft / $(ulimit -Hn) hard, RLIMIT_MEMLOCK $(ulimit -Sl) KiB soft"
}

check_backlogs() {
  local somaxconn syn_backlog
  somaxconn=$(read_file /proc/sys/net/core/somaxconn)
  syn_backlog=$(read_file /proc/sys/net/ipv4/tcp_max_syn_backlog)
  if [ -n "$somaxconn" ] && [ "$somaxconn" -lt "$accept_backlog" ]; then
    verdict warn net.core.somaxconn "net.core.somaxconn = $somaxconn caps server.accept_backlog = $accept_backlog" \
      "sysctl -w net.core.somaxconn=65535 (tuning/apply.sh)"
  else
    verdict pass net.core.somaxconn "net.core.somaxconn = $somaxconn >= server.accept_backlog = $accept_backlog"
  fi
  if [ -n "$syn_backlog" ] && [ "$syn_backlog" -lt "$accept_backlog" ]; then
    verdict warn tcp_max_syn_backlog "net.ipv4.tcp_max_syn_backlog = $syn_backlog: a connect storm overflows half-open queues (SYN cookies)" \
      "sysctl -w net.ipv4.tcp_max_syn_backlog=65535 (tuning/apply.sh)"
  else
    verdict pass tcp_max_syn_backlog "net.ipv4.tcp_max_syn_backlog = $syn_backlog"
  fi
}

check_cpus() {
  local online allowed isolated nohz
  online=$(read_file /sys/devices/system/cpu/online)
  allowed=$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status)
  verdict pass cpu-affinity "$(nproc --all) CPUs ($online online); this shell's affinity mask: $allowed (nproc $(nproc))${unit_cpus:+; CPUAffinity= of the unit: $unit_cpus}"
  isolated=$(read_file /sys/devices/system/cpu/isolated)
  nohz=$(read_file /sys/devices/system/cpu/nohz_full)
  if [ -n "$isolated" ] && [ -z "$unit_cpus" ]; then
    verdict warn isolated-cpus "CPUs $isolated are isolated (isolcpus) but the unit sets no CPUAffinity: the scheduler never places shards there" \
      "CPUAffinity=$isolated in the unit (see tuning/README.md)"
  else
    verdict pass isolated-cpus "isolcpus: ${isolated:-none}; nohz_full: ${nohz:-none}"
  fi
}

check_transparent_hugepages() {
  local enabled defrag
  enabled=$(read_file /sys/kernel/mm/transparent_hugepage/enabled | sed -n 's/.*\[\(.*\)\].*/\1/p')
  defrag=$(read_file /sys/kernel/mm/transparent_hugepage/defrag | sed -n 's/.*\[\(.*\)\].*/\1/p')
  case "$enabled" in
    "") verdict pass transparent_hugepages "not available on this kernel" ;;
    always) verdict warn transparent_hugepages "enabled = always (defrag = $defrag): compaction and khugepaged can stall a shard" \
      "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (tuning/apply.sh)" ;;
    *) verdict pass transparent_hugepages "enabled = $enabled, defrag = $defrag" ;;
  esac
}

check_cpu_governor() {
  local governors
  governors=$( (cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor 2>/dev/null || true) | sort | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep=", " }')
  case "$governors" in
    "") verdict pass cpu-governor "no cpufreq control exposed (a VM, or fixed frequency)" ;;
    *powersave* | *schedutil* | *ondemand* | *conservative*)
      verdict warn cpu-governor "scaling governors: $governors: frequency ramps add latency to a shard that wakes up" \
        "cpupower frequency-set -g performance (package linux-cpupower)" ;;
    *) verdict pass cpu-governor "scaling governors: $governors" ;;
  esac
}

check_irqbalance() {
  if pgrep -x irqbalance >/dev/null 2>&1; then
    verdict pass irqbalance "irqbalance runs: it may move NIC interrupts onto shard CPUs; see tuning/README.md to keep them apart"
  else
    verdict pass irqbalance "irqbalance is not running (interrupts stay where the kernel or you put them)"
  fi
}

echo
echo "== host"
check_kernel
check_io_uring_disabled
check_seccomp
check_file_limits
check_backlogs
check_cpus
check_transparent_hugepages
check_cpu_governor
check_irqbalance

echo
echo "summary: $pass_count pass, $warn_count warn, $fail_count fail"
[ "$fail_count" -eq 0 ]
