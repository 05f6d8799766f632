#!/usr/bin/env bash
# Browser end-to-end tests of the web client: installs what they need if it is
# missing (scripts/browser-deps.sh: Chromium, the e2e/ npm packages), builds
# the binary and runs `node --test` in e2e/. Exits non-zero if anything fails.
# Usage: scripts/e2e.sh            (env: WSGATE_BIN, CHROMIUM_BIN, E2E_VERBOSE=1)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/browser-deps.sh

if [ -z "${WSGATE_BIN:-}" ]; then
  cargo build --locked
  export WSGATE_BIN="$PWD/target/debug/wsgate"
fi

cd e2e
node --test --test-reporter=spec
