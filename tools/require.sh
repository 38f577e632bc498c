#!/usr/bin/env bash
# Make sure commands exist: `tools/require.sh COMMAND:DEBIAN_PACKAGE ...`. Missing ones are installed with
# apt-get when running as root (as on CI and the project's machines); otherwise one line says what to install.
# Exits 2 if something is still missing afterwards (e.g. installed but not on PATH).
set -euo pipefail
find_missing() {
  missing=()
  local spec cmd pkg
  for spec in "$@"; do
    cmd="${spec%%:*}"
    pkg="${spec#*:}"
    if [[ "$cmd" == /* ]]; then [ -e "$cmd" ] || missing+=("$pkg"); else command -v "$cmd" >/dev/null || missing+=("$pkg"); fi
  done
}
find_missing "$@"
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "require: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || true
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  find_missing "$@"
  [ ${#missing[@]} -eq 0 ] && exit 0
  echo "require: still missing after installing: ${missing[*]} (is PATH complete?)" >&2
  exit 2
else
  echo "require: missing packages: ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
  exit 2
fi
