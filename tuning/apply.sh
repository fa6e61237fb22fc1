#!/usr/bin/env bash
# A kernel profile for many connections and low latency. Dry run by default:
# prints each setting, its current value and the value it would set.
# `--apply` (as root) sets them, first saving the values it replaces into a
# state file that `tuning/revert.sh --apply` restores exactly.
set -euo pipefail
SCRIPT_NAME=tuning/apply.sh
# shellcheck source=tuning/kernel_settings.sh
source "$(dirname "${BASH_SOURCE[0]}")/kernel_settings.sh"

# KIND|NAME|TARGET|RULE|WHY. RULE "at-least" raises a setting to TARGET and
# never lowers one that is already higher (a bigger machine may have tuned
# it further), field by field for the "min default max" triples; "exact"
# sets TARGET.
readonly PROFILE=(
  "sysctl|net.core.somaxconn|65535|at-least|caps every listen backlog; server.accept_backlog is 4096 per shard"
  "sysctl|net.ipv4.tcp_max_syn_backlog|65535|at-least|half-open connections queued while thousands of clients reconnect at once"
  "sysctl|net.core.netdev_max_backlog|16384|at-least|packets queued per CPU between the NIC and the TCP stack during bursts"
  "sysctl|net.ipv4.ip_local_port_range|10000 65535|exact|ephemeral ports for outgoing connections (load generators, PostgreSQL, NATS); starts above 8080/8081"
  "sysctl|net.ipv4.tcp_fin_timeout|15|exact|seconds an orphaned connection waits in FIN-WAIT-2 holding its memory"
  "sysctl|net.ipv4.tcp_tw_reuse|1|exact|reuse TIME-WAIT ports for new outgoing connections"
  "sysctl|fs.file-max|2097152|at-least|descriptors for the whole system: every connection is one"
  "sysctl|fs.nr_open|2097152|at-least|the ceiling of RLIMIT_NOFILE, so LimitNOFILE=1048576 and more can be set"
  "sysctl|net.core.rmem_max|16777216|at-least|largest receive buffer a socket may ask for (audio uploads, big WebSocket messages)"
  "sysctl|net.core.wmem_max|16777216|at-least|largest send buffer a socket may ask for (audio downloads)"
  "sysctl|net.ipv4.tcp_rmem|4096 131072 16777216|at-least|TCP receive buffer min/default/max: small per idle connection, growing when needed"
  "sysctl|net.ipv4.tcp_wmem|4096 65536 16777216|at-least|TCP send buffer min/default/max"
  "sysctl|vm.swappiness|10|exact|keep shard memory in RAM rather than swap it out"
  "sysfs|kernel/mm/transparent_hugepage/enabled|madvise|exact|huge pages only where asked for: compaction for 'always' can stall a shard"
)

usage() {
  cat <<EOF
usage: tuning/apply.sh [--apply] [--state FILE] [--root DIR]
       tuning/apply.sh --print-sysctl-conf

Without --apply: prints every setting of the profile, its current value and
the value it would set, and changes nothing.

  --apply              set them (as root). The values replaced are saved first
                       into the state file; tuning/revert.sh --apply restores
                       them. Applying again keeps the first saved values.
  --state FILE         the state file (default $DEFAULT_STATE_FILE)
  --root DIR           read and write DIR/proc/sys and DIR/sys instead of
                       /proc/sys and /sys (for tests)
  --print-sysctl-conf  print the sysctl part as a sysctl.d file, to keep it
                       across reboots: tuning/apply.sh --print-sysctl-conf
                       > /etc/sysctl.d/90-veza.conf (revert.sh does not
                       remove that file)
  --help               this text

The profile (minimums never lower a higher value):
EOF
  local entry kind name target rule why
  for entry in "${PROFILE[@]}"; do
    IFS='|' read -r kind name target rule why <<<"$entry"
    printf '  %-40s %-22s %s\n' "$name" "$([ "$rule" = at-least ] && echo ">= $target" || echo "$target")" "$why"
  done
}

apply=false
state_file=$DEFAULT_STATE_FILE
root=/
while [ $# -gt 0 ]; do
  case "$1" in
    --apply) apply=true; shift ;;
    --dry-run) apply=false; shift ;;
    --state) state_file=${2:?--state needs a path}; shift 2 ;;
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --print-sysctl-conf)
      echo "# Veza: many connections, low latency (tuning/apply.sh)."
      for entry in "${PROFILE[@]}"; do
        IFS='|' read -r kind name target _ why <<<"$entry"
        [ "$kind" = sysctl ] && printf '# %s\n%s = %s\n' "$why" "$name" "$target"
      done
      exit 0
      ;;
    -h | --help) usage; exit 0 ;;
    *) say "unknown argument $1"; usage >&2; exit 2 ;;
  esac
done

# wanted_value CURRENT TARGET RULE: the value the profile wants here.
wanted_value() {
  local current_fields target_fields wanted_fields=() index
  read -r -a current_fields <<<"$1"
  read -r -a target_fields <<<"$2"
  if [ "$3" != at-least ] || [ ${#current_fields[@]} -ne ${#target_fields[@]} ]; then
    printf '%s\n' "$2"
    return
  fi
  for index in "${!target_fields[@]}"; do
    if [[ "${current_fields[index]}" =~ ^[0-9]+$ ]] && [ "${current_fields[index]}" -gt "${target_fields[index]}" ]; then
      wanted_fields+=("${current_fields[index]}")
    else
      wanted_fields+=("${target_fields[index]}")
    fi
  done
  printf '%s\n' "${wanted_fields[*]}"
}

if $apply; then
  [ -w "$(setting_path "$root" sysctl net.core.somaxconn)" ] ||
    die "--apply needs root (and a writable /proc/sys: not a container's)"
  mkdir -p "$(dirname "$state_file")"
  if [ ! -f "$state_file" ]; then
    printf '# Values before tuning/apply.sh --apply (%s); tuning/revert.sh --apply restores them.\n' \
      "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$state_file"
  else
    say "state file $state_file exists: keeping the values it saved first"
  fi
fi

echo "$($apply && echo applying || echo "dry run (nothing changes; --apply to set)"): kernel profile for many connections and low latency"
printf '%-40s %-22s %-22s %s\n' setting current profile action
failures=0
for entry in "${PROFILE[@]}"; do
  IFS='|' read -r kind name target rule _ <<<"$entry"
  if ! current=$(read_setting "$root" "$kind" "$name"); then
    printf '%-40s %-22s %-22s %s\n' "$name" "-" "$target" "skipped: not on this kernel"
    continue
  fi
  wanted=$(wanted_value "$current" "$target" "$rule")
  if [ "$current" = "$wanted" ]; then
    action="ok"
  elif ! $apply; then
    action="would set"
  else
    # Save before the first change, so the state file always holds what
    # the machine had before Veza's profile.
    state_has "$state_file" "$kind" "$name" || printf '%s %s = %s\n' "$kind" "$name" "$current" >>"$state_file"
    if write_setting "$root" "$kind" "$name" "$wanted"; then
      action="set"
    else
      action="FAILED"
      failures=$((failures + 1))
    fi
  fi
  printf '%-40s %-22s %-22s %s\n' "$name" "$current" "$wanted" "$action"
done

if $apply; then
  state_option=""
  [ "$state_file" = "$DEFAULT_STATE_FILE" ] || state_option=" --state $state_file"
  echo "previous values saved in $state_file; undo with: tuning/revert.sh --apply$state_option"
  echo "these settings last until reboot; to keep them: tuning/apply.sh --print-sysctl-conf > /etc/sysctl.d/90-veza.conf"
fi
[ "$failures" -eq 0 ] || die "$failures setting(s) could not be applied"
