#!/usr/bin/env bash
# Installs what Veza needs on a fresh Debian machine, idempotently.
# As root it installs; otherwise it prints the exact commands and stops.
set -euo pipefail

apt_packages=(pkg-config ca-certificates curl util-linux procps postgresql nats-server
  libopus-dev ffmpeg opus-tools oggz-tools icecast2 nginx-light)
# Module name, then the pip requirement that provides it.
python_packages=("websockets websockets==17.4" "schemathesis schemathesis==4.32.5")

missing_apt=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing_apt+=("$package")
done
missing_python=()
for entry in "${python_packages[@]}"; do
  module=${entry%% *}
  requirement=${entry#* }
  python3 -c "import ${module}" 2>/dev/null || missing_python+=("$requirement")
done

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing: install the Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi

if [ ${#missing_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing system packages; run as root:" >&2
    echo "  apt-get update && apt-get install -y ${missing_apt[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_apt[@]}" >/dev/null
fi

if [ ${#missing_python[@]} -gt 0 ]; then
  echo "setup: installing Python packages ${missing_python[*]}"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${missing_python[@]}" \
    || python3 -m pip install --quiet --disable-pip-version-check "${missing_python[@]}"
fi
