# shellcheck shell=bash
# Shared by tuning/apply.sh and tuning/revert.sh (sourced, not run): reading
# and writing kernel settings and the backup (state) file.
#
# A setting is "sysctl NAME" (a file under /proc/sys, dots for slashes) or
# "sysfs PATH" (a file under /sys that shows its choices as
# "always [madvise] never"). Both are read and written as files below ROOT
# ("/" on a real machine; tests point it at a directory of plain files).
#
# The state file holds one setting per line, as it was before the first
# `tuning/apply.sh --apply`:
#   sysctl net.core.somaxconn = 4096
#   sysfs kernel/mm/transparent_hugepage/enabled = always
# The caller sets SCRIPT_NAME before sourcing.

# shellcheck disable=SC2034 # used by the scripts that source this file
readonly DEFAULT_STATE_FILE=/var/lib/veza/tuning-backup.conf

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
  say "$*"
  exit 2
}

# setting_path ROOT KIND NAME: the file behind a setting.
setting_path() {
  case "$2" in
    sysctl) printf '%s/proc/sys/%s\n' "${1%/}" "${3//.//}" ;;
    sysfs) printf '%s/sys/%s\n' "${1%/}" "$3" ;;
    *) die "unknown setting kind $2" ;;
  esac
}

# read_setting ROOT KIND NAME: the current value with whitespace runs made
# single spaces ("4096\t131072" reads "4096 131072"); for sysfs choices, the
# bracketed one. Prints nothing and fails when the setting does not exist.
read_setting() {
  local path value
  path=$(setting_path "$1" "$2" "$3")
  [ -r "$path" ] || return 1
  value=$(tr -s ' \t\n' '   ' <"$path" | sed -e 's/^ //' -e 's/ $//')
  if [ "$2" = sysfs ] && [[ "$value" == *"["*"]"* ]]; then
    value=$(printf '%s\n' "$value" | sed -n 's/.*\[\(.*\)\].*/\1/p')
  fi
  printf '%s\n' "$value"
}

# write_setting ROOT KIND NAME VALUE: writes and reads back; fails (with the
# reason on stderr) when the kernel refuses or keeps another value.
write_setting() {
  local path after
  path=$(setting_path "$1" "$2" "$3")
  if ! printf '%s\n' "$4" 2>/dev/null >"$path"; then
    say "cannot write $path (read-only /proc/sys in a container, or not root)"
    return 1
  fi
  after=$(read_setting "$1" "$2" "$3") || return 1
  if [ "$after" != "$4" ]; then
    say "$3: wrote '$4' but the kernel keeps '$after'"
    return 1
  fi
}

# state_has STATE_FILE KIND NAME: the state file already holds this setting.
state_has() {
  [ -f "$1" ] && grep -q "^$2 $3 = " "$1"
}

# read_state STATE_FILE: prints "KIND<tab>NAME<tab>VALUE" per saved setting.
read_state() {
  awk '
    /^[[:space:]]*(#|$)/ { next }
    {
      kind = $1; name = $2
      value = $0; sub(/^[^=]*= ?/, "", value)
      printf "%s\t%s\t%s\n", kind, name, value
    }
  ' "$1"
}
