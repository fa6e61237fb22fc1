#!/usr/bin/env bash
# Restores the kernel settings that `tuning/apply.sh --apply` replaced, from
# its state file. Dry run by default: prints each saved setting, its current
# value and the value it would restore. `--apply` (as root) restores them and
# then removes the state file, so that a later apply saves afresh.
set -euo pipefail
SCRIPT_NAME=tuning/revert.sh
# shellcheck source=tuning/kernel_settings.sh
source "$(dirname "${BASH_SOURCE[0]}")/kernel_settings.sh"

usage() {
  cat <<EOF
usage: tuning/revert.sh [--apply] [--state FILE] [--root DIR]

Without --apply: prints what would be restored and changes nothing.

  --apply        restore the saved values (as root), then remove the state file
  --state FILE   the state file tuning/apply.sh wrote (default $DEFAULT_STATE_FILE)
  --root DIR     read and write DIR/proc/sys and DIR/sys instead of /proc/sys
                 and /sys (for tests)
  --help         this text
EOF
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
    -h | --help) usage; exit 0 ;;
    *) say "unknown argument $1"; usage >&2; exit 2 ;;
  esac
done

if [ ! -f "$state_file" ]; then
  echo "nothing to revert: no state file at $state_file (tuning/apply.sh --apply writes it)"
  exit 0
fi

if $apply && [ ! -w "$(setting_path "$root" sysctl net.core.somaxconn)" ]; then
  die "--apply needs root (and a writable /proc/sys: not a container's)"
fi

echo "$($apply && echo restoring || echo "dry run (nothing changes; --apply to restore)"): values saved in $state_file"
printf '%-40s %-22s %-22s %s\n' setting current saved action
failures=0
while IFS=$'\t' read -r kind name saved; do
  if ! current=$(read_setting "$root" "$kind" "$name"); then
    printf '%-40s %-22s %-22s %s\n' "$name" "-" "$saved" "skipped: not on this kernel"
    continue
  fi
  if [ "$current" = "$saved" ]; then
    action="ok"
  elif ! $apply; then
    action="would restore"
  elif write_setting "$root" "$kind" "$name" "$saved"; then
    action="restored"
  else
    action="FAILED"
    failures=$((failures + 1))
  fi
  printf '%-40s %-22s %-22s %s\n' "$name" "$current" "$saved" "$action"
done < <(read_state "$state_file")

[ "$failures" -eq 0 ] || die "$failures setting(s) could not be restored; the state file stays at $state_file"
if $apply; then
  rm -f "$state_file"
  echo "restored; removed $state_file"
fi
