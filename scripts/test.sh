#!/usr/bin/env bash
# Runs every test of the project:
#  1. Rust unit and integration tests (the real server and gateway on
#     ephemeral loopback ports, real WebSocket and gRPC clients);
#  2. unit tests of the web client's pure modules (`node --test web/test/`,
#     no browser, no packages);
#  3. the integration tests whose server stores in the database again, on
#     PostgreSQL (WSGATE_TEST_STORE=postgres: a schema per test at
#     $WSGATE_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432/test;
#     the storage unit tests and tests/postgres.rs use it in step 1 already);
#     tests/cluster.rs (step 1) also runs nats-server processes of its own
#     ($WSGATE_TEST_NATS_SERVER, default /usr/sbin/nats-server) and, for the
#     PostgreSQL restart, a PostgreSQL cluster of its own (initdb, pg_ctl);
#     it fails saying so if either program is missing;
#  4. browser end-to-end tests of the web client in headless Chromium
#     (scripts/e2e.sh installs Chromium and the npm packages if missing,
#     with scripts/browser-deps.sh).
# Usage: scripts/test.sh [extra cargo test args]
#        scripts/test.sh -h|--help   prints this and exits
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  case "$arg" in
    # Only before `--`: after it, arguments belong to the test binaries.
    --) break ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  esac
done
cargo test --locked --workspace --all-targets "$@"
node --test web/test/
WSGATE_TEST_STORE=postgres cargo test --locked \
  --test chat --test history --test grpc --test presence --test identity \
  --test bad_input --test gateway_auth --test websocket_close \
  --test directory --test edits --test renames "$@"
scripts/e2e.sh
