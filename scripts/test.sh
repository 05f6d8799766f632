#!/usr/bin/env bash
# Runs every test of the project:
#  1. Rust unit and integration tests (the real server and gateway on
#     ephemeral loopback ports, real WebSocket and gRPC clients);
#  2. browser end-to-end tests of the web client in headless Chromium
#     (scripts/e2e.sh installs Chromium and the npm packages if missing).
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --workspace --all-targets "$@"
scripts/e2e.sh
