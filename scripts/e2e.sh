#!/usr/bin/env bash
# Browser end-to-end tests of the web client: installs what they need if it is
# missing (Chromium from Debian, the e2e/ npm packages), builds the binary and
# runs `node --test` in e2e/. Exits non-zero if anything fails.
# Usage: scripts/e2e.sh            (env: WSGATE_BIN, CHROMIUM_BIN, E2E_VERBOSE=1)
set -euo pipefail
cd "$(dirname "$0")/.."

chromium_bin="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$chromium_bin" ]; then
  echo "e2e: installing chromium" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
fi

command -v node >/dev/null || { echo "e2e: node (>= 20) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "e2e: npm is required" >&2; exit 1; }

(cd e2e && npm ci --no-audit --no-fund)

if [ -z "${WSGATE_BIN:-}" ]; then
  cargo build --locked
  export WSGATE_BIN="$PWD/target/debug/wsgate"
fi

cd e2e
node --test --test-reporter=spec
