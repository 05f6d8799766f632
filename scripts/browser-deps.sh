#!/usr/bin/env bash
# Installs what the web client's browser tests (scripts/e2e.sh) and its
# benchmark (bench/run.sh's "client") need, if it is missing: Chromium from
# Debian ($CHROMIUM_BIN, default /usr/bin/chromium) and the e2e/ npm
# packages. Exits non-zero, saying what is missing, if it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium_bin="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$chromium_bin" ]; then
  echo "browser-deps: installing chromium" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
fi

command -v node >/dev/null || { echo "browser-deps: node (>= 20) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "browser-deps: npm is required" >&2; exit 1; }

(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
