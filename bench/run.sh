#!/usr/bin/env bash
# Runs the benchmarks: builds everything, starts each system on loopback,
# runs the load generator's scenarios against it, stops it, and writes the
# medians to BENCHMARKS.md (between its "results" markers) and every run to
# bench/results.json.
#
# Usage: bench/run.sh [--smoke] [--runs N] [--only NAME[,NAME...]]
#   --smoke   a few seconds per scenario, tiny sizes, debug binaries: checks
#             the harness works (CI runs this); its figures mean nothing and
#             are not written to BENCHMARKS.md, only to $BENCH_OUT (default
#             target/bench-smoke).
#   --runs N  runs of each scenario (default 3; medians are reported)
#   --only    run only these benchmarks (names as in the table: pingpong,
#             saturation, latency_1k, rooms_100x100, connections, ingest,
#             ingest_postgres, history, cross_server; and client, the web client in headless
#             Chromium: bench/client.mjs); a partial run writes its table to $BENCH_OUT only
#             and leaves BENCHMARKS.md alone
#
# ingest_postgres stores into PostgreSQL at $WSGATE_BENCH_POSTGRES (default
# postgres://postgres@127.0.0.1:5432/test), a schema of its own per run,
# dropped after; the script starts the local cluster if it is down, and
# fails saying so if it cannot.
#
# Several servers (PostgreSQL + the NATS bus at $WSGATE_BENCH_NATS, default
# nats://127.0.0.1:4222, which must be up; a subject prefix of its own per
# run): saturation and rooms_100x100 also run on "wsgate_cluster", three
# `wsgate server`s on one fresh schema behind two `wsgate proxy`s over all
# three, the clients of each room spread over both gateways; cross_server is
# latency_1k's load on "wsgate_cross", two servers each behind its own
# gateway, publishers on the first: delivery_latency_other_url is the
# latency of deliveries that cross servers, delivery_latency_same_url of
# those that do not. All on this machine: the figures are the cost of the
# bus and the database, not a scaling claim.
#
# Exit status 1 when any run failed (wsgate-bench exited non-zero: a setup
# failure, or a run that measured nothing), after the report is written:
# failed runs are left out of the medians and listed under the table and,
# with their reasons, at the end of the output.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib.sh

MODE=full
RUNS=3
ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) MODE=smoke; RUNS=1 ;;
    --runs) RUNS="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    -h|--help) print_help "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '\n== %s\n' "$*" >&2; }

# ---------------------------------------------------------------- settings
if [[ $MODE == full ]]; then
  WARMUP=2; DURATION=10
  CONNECTIONS=19000
  HISTORY_FILL=10000000; HISTORY_REQUESTS=20000
  INGEST_DURATION=10
else
  WARMUP=1; DURATION=2
  CONNECTIONS=300
  HISTORY_FILL=2000; HISTORY_REQUESTS=200
  INGEST_DURATION=2
fi
OUT=${BENCH_OUT:-$ROOT/target/bench-$MODE}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-bench.XXXXXX")
RESULTS=$OUT/runs.jsonl
: > "$RESULTS"

PIDS=()
FAILED=()
SCHEMAS=()
PG_URL=${WSGATE_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
NATS_URL=${WSGATE_BENCH_NATS:-nats://127.0.0.1:4222}
stop_all() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
drop_schemas() {
  for schema in "${SCHEMAS[@]}"; do
    psql "$PG_URL" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  done
  SCHEMAS=()
}
cleanup() { stop_all; drop_schemas; rm -rf "$WORK"; }
trap cleanup EXIT

wanted() { [[ -z $ONLY || ",$ONLY," == *",$1,"* ]]; }

# ------------------------------------------------------------------- build
if [[ $MODE == full ]]; then
  log "build (release)"
  cargo build --release --locked -p wsgate -p wsgate-bench -p bare-broadcast
  BIN=$ROOT/target/release
else
  log "build (debug: the smoke run checks the harness, not speed)"
  cargo build --locked -p wsgate -p wsgate-bench -p bare-broadcast
  BIN=$ROOT/target/debug
fi
(cd bench/baselines/node && npm ci --no-audit --no-fund --loglevel=error) >&2
ulimit -n "$(ulimit -Hn)"


# start_SYSTEM sets WS_URL, GRPC_URL (empty if none) and MEM_PIDS
# (--pid NAME=PID arguments for the connections scenario).
start_wsgate() {
  local log=$WORK/wsgate.log db=${1:-$WORK/wsgate-$RANDOM.db}
  "$BIN/wsgate" --db "$db" --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 "${WSGATE_BENCH_LIMITS[@]}" 2>"$log" &
  local pid=$!; PIDS+=("$pid")
  WS_URL="ws://$(await_address "$log" 'WebSocket gateway listening' "$pid")/"
  GRPC_URL="http://$(await_address "$log" 'gRPC chat server listening' "$pid")"
  MEM_PIDS=(--pid "wsgate=$pid")
}

# PostgreSQL answers at $PG_URL, or is started; else the script stops.
ensure_postgres() {
  command -v psql >/dev/null || { echo "the PostgreSQL benchmarks need psql (apt-get install postgresql-client)" >&2; exit 1; }
  psql "$PG_URL" -qAtc 'SELECT 1' >/dev/null 2>&1 && return 0
  local version
  for version in $(ls /etc/postgresql 2>/dev/null); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  done
  for _ in $(seq 1 150); do
    psql "$PG_URL" -qAtc 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "the PostgreSQL benchmarks need PostgreSQL at $PG_URL (WSGATE_BENCH_POSTGRES), and it could not be started" >&2
  exit 1
}

# NATS answers at $NATS_URL (its INFO line); else the script stops. It is
# never started here: it is the machine's, shared.
ensure_nats() {
  local hostport=${NATS_URL#nats://} info=""
  hostport=${hostport##*@}
  info=$(timeout 5 bash -c "exec 3<>/dev/tcp/${hostport%:*}/${hostport##*:} && head -c 4 <&3" 2>/dev/null || true)
  [[ $info == INFO ]] && return 0
  echo "the several-server benchmarks need NATS at $NATS_URL (WSGATE_BENCH_NATS), and it does not answer" >&2
  exit 1
}

# Creates a fresh schema (dropped after the run) and sets PG_DB to the URL
# of the database with it as the search path.
new_pg_schema() {
  local schema=bench_$RANDOM$RANDOM sep='?'
  [[ $PG_URL == *\?* ]] && sep='&'
  psql "$PG_URL" -v ON_ERROR_STOP=1 -qc "CREATE SCHEMA $schema" >/dev/null
  SCHEMAS+=("$schema")
  PG_DB="$PG_URL${sep}options=-c%20search_path%3D$schema"
}

# wsgate on a fresh schema of the PostgreSQL database.
start_wsgate_pg() {
  new_pg_schema
  start_wsgate "$PG_DB"
}

# Starts N `wsgate server`s on one fresh schema and the bus, under a subject
# prefix of their own; sets SERVERS to their gRPC URLs and MEM_PIDS.
start_bus_servers() {
  local n=$1 prefix=bench$RANDOM$RANDOM i log pid
  new_pg_schema
  SERVERS=(); MEM_PIDS=()
  for i in $(seq 1 "$n"); do
    log=$WORK/server-$i.log
    "$BIN/wsgate" server --db "$PG_DB" --grpc-listen 127.0.0.1:0 \
      --bus "$NATS_URL" --bus-subject-prefix "$prefix" 2>"$log" &
    pid=$!; PIDS+=("$pid")
    SERVERS+=("http://$(await_address "$log" 'gRPC chat server listening' "$pid")")
    MEM_PIDS+=(--pid "server-$i=$pid")
  done
  GRPC_URL=${SERVERS[0]}
}

# Starts `wsgate proxy` NAME over the upstreams UPSTREAM[,UPSTREAM...] and
# adds its ws:// URL to WS_URL (comma-separated).
start_gateway() {
  local name=$1 upstreams=$2 log=$WORK/$1.log pid
  "$BIN/wsgate" proxy --listen 127.0.0.1:0 --upstream "$upstreams" "${WSGATE_BENCH_LIMITS[@]}" 2>"$log" &
  pid=$!; PIDS+=("$pid")
  WS_URL="${WS_URL:+$WS_URL,}ws://$(await_address "$log" 'WebSocket gateway listening' "$pid")/"
  MEM_PIDS+=(--pid "$name=$pid")
}

# Three servers on one schema and the bus, two gateways over all three.
start_wsgate_cluster() {
  start_bus_servers 3
  local all; all=$(IFS=,; echo "${SERVERS[*]}")
  WS_URL=""
  start_gateway gateway-1 "$all"
  start_gateway gateway-2 "$all"
}

# Two servers on one schema and the bus, each behind its own gateway: a
# client's gateway is its server.
start_wsgate_cross() {
  start_bus_servers 2
  WS_URL=""
  start_gateway gateway-1 "${SERVERS[0]}"
  start_gateway gateway-2 "${SERVERS[1]}"
}

start_node() {
  local slog=$WORK/node-server.log plog=$WORK/node-proxy.log
  (cd bench/baselines/node && exec node server.js 127.0.0.1:0) >"$slog" 2>&1 &
  local spid=$!; PIDS+=("$spid")
  local grpc; grpc=$(await_address "$slog" 'listening' "$spid")
  (cd bench/baselines/node && LISTEN_HOST=127.0.0.1 PORT=0 UPSTREAM=$grpc exec node proxy.js) >"$plog" 2>&1 &
  local ppid=$!; PIDS+=("$ppid")
  WS_URL="ws://$(await_address "$plog" 'listening' "$ppid")/"
  GRPC_URL="http://$grpc"
  MEM_PIDS=(--pid "node-server=$spid" --pid "node-proxy=$ppid")
}

start_bare() {
  local log=$WORK/bare.log
  "$BIN/bare-broadcast" --listen 127.0.0.1:0 >"$log" 2>&1 &
  local pid=$!; PIDS+=("$pid")
  WS_URL="ws://$(await_address "$log" 'listening' "$pid")/"
  GRPC_URL=""
  MEM_PIDS=(--pid "bare-broadcast=$pid")
}

# Runs one scenario against a freshly started system and appends
# {"bench", "system", "run", "command", "result"} to the results.
measure() {
  local bench=$1 system=$2 run=$3; shift 3
  log "$bench · $system · run $run/$RUNS"
  "start_$system"
  local args=("$@") a
  for i in "${!args[@]}"; do
    a=${args[$i]}; a=${a//@WS@/$WS_URL}; a=${a//@GRPC@/$GRPC_URL}; args[$i]=$a
  done
  [[ ${args[0]} == connections ]] && args+=("${MEM_PIDS[@]}")
  local out=$WORK/result.json status=0
  # A scenario bounds its own time; the timeout only guards the harness.
  timeout 900 "$BIN/wsgate-bench" "${args[@]}" >"$out" || status=$?
  stop_all
  drop_schemas
  local result; result=$(tail -1 "$out")
  if ! python3 -c 'import json,sys; json.loads(sys.argv[1])' "$result" 2>/dev/null; then
    result="{\"ok\":false,\"error\":\"no JSON output (exit status $status)\"}"
  fi
  # A failed run: a non-zero exit, or a report that is not "ok": true.
  local why
  why=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("" if r.get("ok") is True else r.get("error", "not ok"))' "$result")
  if [[ ($status != 0 || -n $why) && $MODE == smoke && -z ${RETRYING:-} ]]; then
    # The smoke run checks the harness, and a baseline on a busy machine
    # once refused every connection of one run (the Node proxy, seen once
    # in CI): one more try, said in the log, before it counts as failed.
    echo "retrying once: wsgate-bench $bench on $system, exit status $status: ${why:-?}" >&2
    RETRYING=1 measure "$bench" "$system" "$run" "$@"
    return
  fi
  if [[ $status != 0 || -n $why ]]; then
    FAILED+=("$bench · $system · run $run: exit status $status: ${why:-?}")
    echo "FAILED: wsgate-bench $bench on $system (run $run), exit status $status: ${why:-?}" >&2
  fi
  printf '{"bench":"%s","system":"%s","run":%d,"command":"wsgate-bench %s","result":%s}\n' \
    "$bench" "$system" "$run" "$*" "$result" >>"$RESULTS"
}

SATURATION=(fanout --url @WS@ --rooms 10 --clients 10 --publishers 10 --window 8 --size 100
  --warmup "$WARMUP" --duration "$DURATION")
LATENCY_1K=(fanout --url @WS@ --rooms 10 --clients 10 --publishers 1 --rate 1000 --size 100
  --warmup "$WARMUP" --duration "$DURATION")
if [[ $MODE == full ]]; then
  ROOMS_100X100=(fanout --url @WS@ --rooms 100 --clients 100 --publishers 1 --rate 2000 --size 100
    --warmup "$WARMUP" --duration "$DURATION")
else
  ROOMS_100X100=(fanout --url @WS@ --rooms 10 --clients 20 --publishers 1 --rate 200 --size 100
    --warmup "$WARMUP" --duration "$DURATION")
fi
if wanted saturation || wanted rooms_100x100 || wanted cross_server; then
  ensure_postgres
  ensure_nats
fi

SYSTEMS=(wsgate node bare)
for run in $(seq 1 "$RUNS"); do
  for system in "${SYSTEMS[@]}"; do
    wanted pingpong && measure pingpong "$system" "$run" \
      pingpong --url @WS@ --warmup "$WARMUP" --duration "$DURATION"
    wanted saturation && measure saturation "$system" "$run" "${SATURATION[@]}"
    wanted latency_1k && measure latency_1k "$system" "$run" "${LATENCY_1K[@]}"
    wanted rooms_100x100 && measure rooms_100x100 "$system" "$run" "${ROOMS_100X100[@]}"
    wanted connections && measure connections "$system" "$run" \
      connections --url @WS@ -n "$CONNECTIONS" --source-ips 8 --concurrency 256
  done
  # Straight gRPC: the Node server holds messages in memory, wsgate stores
  # them in SQLite; the bare broadcast has no gRPC side.
  for system in wsgate node; do
    wanted ingest && measure ingest "$system" "$run" \
      ingest --grpc @GRPC@ --senders 64 --window 16 --size 100 \
      --warmup "$WARMUP" --duration "$INGEST_DURATION"
  done
  # The same load, stored into PostgreSQL on this machine.
  if wanted ingest_postgres; then
    [[ $run == 1 ]] && ensure_postgres
    measure ingest_postgres wsgate_pg "$run" \
      ingest --grpc @GRPC@ --senders 64 --window 16 --size 100 \
      --warmup "$WARMUP" --duration "$INGEST_DURATION"
  fi
  # Several servers on PostgreSQL + NATS (see the top of this file).
  wanted saturation && measure saturation wsgate_cluster "$run" "${SATURATION[@]}"
  wanted rooms_100x100 && measure rooms_100x100 wsgate_cluster "$run" "${ROOMS_100X100[@]}"
  wanted cross_server && measure cross_server wsgate_cross "$run" "${LATENCY_1K[@]}"
done

# History reads a room that survives between runs (filling 10M messages
# takes minutes), so its database lives in the output folder.
start_wsgate_history() { start_wsgate "$OUT/history.db"; }
# Random pages of a 10M-message room fall on ~20,000 different pages of a
# ~2.8 GB file: measured cold, the figure is the disk's (p99 3-10 ms here),
# not the server's. So the file is read once before each run, to be in the
# page cache as a server's database is once its memory holds it.
warm_history_db() { if [[ -f $OUT/history.db ]]; then cat "$OUT/history.db" >/dev/null; fi; }
if wanted history; then
  for run in $(seq 1 "$RUNS"); do
    warm_history_db
    measure history wsgate_history "$run" \
      history --grpc @GRPC@ --room bench-history --fill "$HISTORY_FILL" \
      --requests "$HISTORY_REQUESTS" --limit 50 --concurrency 1
  done
fi

# The web client in headless Chromium (bench/client.mjs): its own figures,
# printed and kept in $OUT/client.json; BENCHMARKS.md's client section is
# written by hand from them. Needs Chromium and e2e/'s packages, which
# scripts/browser-deps.sh installs if missing.
if wanted client; then
  log "client (web client in headless Chromium)"
  client_args=()
  [[ $MODE == smoke ]] && client_args=(--smoke)
  if ! scripts/browser-deps.sh >&2; then
    FAILED+=("client: Chromium or e2e/'s npm packages could not be installed (scripts/browser-deps.sh, above)")
  elif ! WSGATE_BIN="$BIN/wsgate" node bench/client.mjs "${client_args[@]}" > "$OUT/client.json"; then
    FAILED+=("client: bench/client.mjs failed (its output is above)")
  else
    cat "$OUT/client.json" >&2
  fi
fi

log "report"
if [[ $MODE == full && -z $ONLY ]]; then
  python3 bench/report.py "$RESULTS" --mode "$MODE" --out "$OUT" --markdown BENCHMARKS.md
  cp "$OUT/results.json" bench/results.json
else
  python3 bench/report.py "$RESULTS" --mode "$MODE" --out "$OUT"
fi

if [[ ${#FAILED[@]} -gt 0 ]]; then
  printf '\n== FAILED: %d run(s) failed; their figures are not in the medians\n' "${#FAILED[@]}" >&2
  printf '  %s\n' "${FAILED[@]}" >&2
  exit 1
fi
