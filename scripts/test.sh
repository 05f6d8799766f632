#!/usr/bin/env bash
# Runs every test of the project: unit tests, and integration tests that start
# the real server and gateway on ephemeral loopback ports.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --all-targets "$@"
