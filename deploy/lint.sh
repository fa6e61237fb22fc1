#!/usr/bin/env bash
# Lints what of deploy/ can be checked without systemd, Docker or Kubernetes
# running, and the SRE scripts:
#   1. systemd-analyze verify of both units (on copies whose ExecStart points
#      at a stub, so that only a missing binary could be excused, and that
#      is not needed) must print nothing; systemd-analyze security --offline
#      must rate each unit's exposure at most EXPOSURE_MAX;
#   2. deploy/lint_deploy.py: compose and k8s YAML, seccomp JSON, Dockerfile,
#      the units' syscall filters, and VEZA_* names against fresh binaries;
#   3. shellcheck of perf/, tuning/ and deploy/ scripts.
# As root, installs what is missing (systemd, shellcheck from Debian; PyYAML
# with pip); as another user, skips that part and says so.
# Exit 0 when every check that ran passed.
set -euo pipefail
SCRIPT_NAME=deploy/lint.sh
DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$DEPLOY_DIR")
readonly DEPLOY_DIR REPO_ROOT
# systemd-analyze security's exposure scale is 0.0-10.0 and --threshold takes
# tenths: 20 = "at most 2.0", well inside its "OK" band.
readonly EXPOSURE_MAX=20

usage() {
  cat <<'EOF'
usage: deploy/lint.sh [--dataplane-bin PATH] [--controlplane-bin PATH] [--no-install]

  --dataplane-bin PATH     a veza-dataplane built from the current sources, to
                           check every VEZA_* name the deploy files set
                           (default: target/{debug,release}/veza-dataplane when
                           newer than every source file)
  --controlplane-bin PATH  the same for veza-controlplane
  --no-install             never install; skip what needs a missing tool
  --help                   this text
EOF
}

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }

dataplane_bin=""
controlplane_bin=""
install_allowed=true
while [ $# -gt 0 ]; do
  case "$1" in
    --dataplane-bin) dataplane_bin=${2:?--dataplane-bin needs a path}; shift 2 ;;
    --controlplane-bin) controlplane_bin=${2:?--controlplane-bin needs a path}; shift 2 ;;
    --no-install) install_allowed=false; shift ;;
    -h | --help) usage; exit 0 ;;
    *) say "unknown argument $1"; usage >&2; exit 2 ;;
  esac
done

failures=0
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}

# ensure_apt COMMAND PACKAGE: COMMAND is there, or is installed (as root).
ensure_apt() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if ! $install_allowed || [ "$(id -u)" -ne 0 ]; then
    echo "skip $1 is missing (as root: apt-get install -y $2)"
    return 1
  fi
  say "installing $2"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1
  command -v "$1" >/dev/null 2>&1
}

ensure_pyyaml() {
  python3 -c 'import yaml' 2>/dev/null && return 0
  if ! $install_allowed; then
    echo "skip PyYAML is missing (python3 -m pip install pyyaml)"
    return 1
  fi
  say "installing PyYAML"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore pyyaml >&2 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check pyyaml >&2 2>/dev/null ||
    { [ "$(id -u)" -eq 0 ] && ensure_apt_package python3-yaml; } || true
  python3 -c 'import yaml' 2>/dev/null
}

ensure_apt_package() {
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null 2>&1
}

# fresh_binary NAME: target/{debug,release}/NAME when it is newer than every
# source it is built from (a stale one would not know keys added since).
fresh_binary() {
  local profile binary
  for profile in debug release; do
    binary="$REPO_ROOT/target/$profile/$1"
    [ -x "$binary" ] || continue
    if [ -z "$(find "$REPO_ROOT/proto" "$REPO_ROOT/codec" "$REPO_ROOT/${1#veza-}" "$REPO_ROOT/Cargo.lock" \
      -newer "$binary" -type f -print -quit 2>/dev/null)" ]; then
      echo "$binary"
      return
    fi
  done
}

work_dir=$(mktemp -d /tmp/veza-lint.XXXXXX)
trap 'rm -rf "$work_dir"' EXIT

lint_units() {
  ensure_apt systemd-analyze systemd || return 0
  local unit name
  # Copies whose ExecStart points at stubs: systemd-analyze verify checks
  # that the command exists, and the binaries are installed only on a real
  # host. Nothing else is changed, so every other complaint counts.
  mkdir -p "$work_dir/units" "$work_dir/bin"
  for name in veza-dataplane veza-controlplane; do
    ln -s /bin/true "$work_dir/bin/$name"
    sed "s#/usr/local/bin/$name #$work_dir/bin/$name #" "$DEPLOY_DIR/systemd/$name.service" \
      >"$work_dir/units/$name.service"
    grep -q "^ExecStart=$work_dir/bin/$name " "$work_dir/units/$name.service" ||
      fail "$name.service: ExecStart is not /usr/local/bin/$name (update deploy/lint.sh with it)"
  done
  # verify exits 0 on unknown keys and bad values (it only warns), so any
  # output at all is a failure.
  if ! output=$(cd "$work_dir/units" && systemd-analyze verify --man=no veza-dataplane.service veza-controlplane.service 2>&1) ||
    [ -n "$output" ]; then
    fail "systemd-analyze verify: $output"
  else
    echo "ok   systemd-analyze verify: both units, no warning"
  fi
  for unit in veza-dataplane veza-controlplane; do
    if output=$(systemd-analyze security --offline=yes --threshold="$EXPOSURE_MAX" "$work_dir/units/$unit.service" 2>&1); then
      echo "ok   $unit.service: $(printf '%s\n' "$output" | grep -o 'Overall exposure level.*' | sed 's/ [^ ]*$//')"
    else
      fail "$unit.service: exposure above $((EXPOSURE_MAX / 10)).$((EXPOSURE_MAX % 10)): $(printf '%s\n' "$output" | tail -n 1)"
    fi
  done
  systemd-analyze syscall-filter >"$work_dir/syscall-groups.txt"
}

lint_files() {
  ensure_pyyaml || return 0
  local arguments=(--deploy-dir "$DEPLOY_DIR")
  [ -s "$work_dir/syscall-groups.txt" ] && arguments+=(--syscall-groups "$work_dir/syscall-groups.txt")
  [ -n "$dataplane_bin" ] || dataplane_bin=$(fresh_binary veza-dataplane)
  [ -n "$controlplane_bin" ] || controlplane_bin=$(fresh_binary veza-controlplane)
  [ -n "$dataplane_bin" ] && arguments+=(--dataplane-bin "$dataplane_bin")
  [ -n "$controlplane_bin" ] && arguments+=(--controlplane-bin "$controlplane_bin")
  python3 "$DEPLOY_DIR/lint_deploy.py" "${arguments[@]}" || failures=$((failures + 1))
}

lint_scripts() {
  ensure_apt shellcheck shellcheck || return 0
  if (cd "$REPO_ROOT" && shellcheck -x perf/*.sh tuning/*.sh deploy/*.sh); then
    echo "ok   shellcheck: perf/*.sh tuning/*.sh deploy/*.sh"
  else
    fail "shellcheck (above)"
  fi
}

lint_units
lint_files
lint_scripts
if [ "$failures" -gt 0 ]; then
  echo "deploy/lint.sh: $failures part(s) failed"
  exit 1
fi
echo "deploy/lint.sh: every check that ran passed"
