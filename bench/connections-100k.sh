#!/usr/bin/env bash
# 100,000 idle WebSocket connections on one machine: one chat server, several
# gateway processes in front of it (here a process may hold at most 20,000
# open files, so one gateway cannot), and one load generator per gateway.
# Every connection joins a room (100 members each). While all of them are
# open it reads the resident memory of the server and every gateway, then
# prints a summary and writes it, with each load generator's JSON, to
# $BENCH_OUT/connections-100k.json (default target/bench-full).
#
# Usage: bench/connections-100k.sh [--total N] [--proxies P] [--hold SECS]
#   --total N    connections in all (default 100000)
#   --proxies P  gateway processes, and load generators (default 6)
#   --hold SECS  how long each load generator keeps its connections open
#                once all joined (default 20; the memory is read meanwhile)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib.sh

TOTAL=100000
PROXIES=6
HOLD=20
while [[ $# -gt 0 ]]; do
  case "$1" in
    --total) TOTAL="$2"; shift ;;
    --proxies) PROXIES="$2"; shift ;;
    --hold) HOLD="$2"; shift ;;
    -h|--help) print_help "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PER_PROXY=$(( (TOTAL + PROXIES - 1) / PROXIES ))
TOTAL=$(( PER_PROXY * PROXIES ))
if (( PER_PROXY > 19000 )); then
  echo "$PER_PROXY connections per gateway: over the 20,000 open files a process may hold; use more --proxies" >&2
  exit 2
fi

OUT=${BENCH_OUT:-$ROOT/target/bench-full}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-100k.XXXXXX")
PIDS=()
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if (( status == 0 )); then rm -rf "$WORK"; else echo "logs kept in $WORK" >&2; fi
}
trap cleanup EXIT

cargo build --release --locked -p wsgate -p wsgate-bench >&2
BIN=$ROOT/target/release
ulimit -n "$(ulimit -Hn)"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

RUST_LOG=${SERVER_LOG:-info} "$BIN/wsgate" server --grpc-listen 127.0.0.1:0 --db "$WORK/chat.db" 2>"$WORK/server.log" &
SERVER=$!; PIDS+=("$SERVER")
GRPC=$(await_address "$WORK/server.log" 'gRPC chat server listening' "$SERVER")

PROXY_PIDS=(); URLS=()
for p in $(seq 1 "$PROXIES"); do
  RUST_LOG=${PROXY_LOG:-info} "$BIN/wsgate" proxy --listen 127.0.0.1:0 --upstream "http://$GRPC" "${WSGATE_BENCH_LIMITS[@]}" 2>"$WORK/proxy$p.log" &
  pid=$!; PIDS+=("$pid"); PROXY_PIDS+=("$pid")
  URLS+=("ws://$(await_address "$WORK/proxy$p.log" 'WebSocket gateway listening' "$pid")/")
done
BEFORE=()
for pid in "$SERVER" "${PROXY_PIDS[@]}"; do BEFORE+=("$(rss_kib "$pid")"); done

echo "== $TOTAL connections: $PROXIES gateways x $PER_PROXY, one server" >&2
GEN_PIDS=()
for p in $(seq 1 "$PROXIES"); do
  "$BIN/wsgate-bench" connections --url "${URLS[$((p - 1))]}" -n "$PER_PROXY" \
    --source-ips 16 --concurrency 128 --hold "$HOLD" \
    >"$WORK/gen$p.json" 2>"$WORK/gen$p.log" &
  GEN_PIDS+=("$!")
done

# Every load generator has joined all its connections and is holding them.
for p in $(seq 1 "$PROXIES"); do
  until grep -q 'holding' "$WORK/gen$p.log"; do
    if ! kill -0 "${GEN_PIDS[$((p - 1))]}" 2>/dev/null; then
      echo "load generator $p ended before holding its connections:" >&2
      cat "$WORK/gen$p.log" >&2
      exit 1
    fi
    sleep 0.2
  done
done
AFTER=()
for pid in "$SERVER" "${PROXY_PIDS[@]}"; do AFTER+=("$(rss_kib "$pid")"); done
# Still holding: no load generator had finished when the memory was read.
for pid in "${GEN_PIDS[@]}"; do
  kill -0 "$pid" 2>/dev/null || { echo "a load generator ended before the memory was read; raise --hold" >&2; exit 1; }
done
STATUS=0
for pid in "${GEN_PIDS[@]}"; do wait "$pid" || STATUS=1; done

python3 - "$OUT/connections-100k.json" "$TOTAL" "$PROXIES" "${BEFORE[*]}" "${AFTER[*]}" "$WORK"/gen*.json <<'EOF'
import json, sys
out, total, proxies, before, after, *gens = sys.argv[1:]
before = [int(x) for x in before.split()]
after = [int(x) for x in after.split()]
runs = [json.loads(open(g).read().strip().splitlines()[-1]) for g in gens]
joined = sum(r["joined"] for r in runs)
failures = sum(r["failures"] for r in runs)
names = ["server"] + [f"gateway {i + 1}" for i in range(int(proxies))]
memory = [{"name": n, "before_kib": b, "after_kib": a, "delta_kib": a - b}
          for n, b, a in zip(names, before, after)]
delta = sum(m["delta_kib"] for m in memory)
summary = {
    "scenario": "connections-100k",
    "ok": joined == int(total) and failures == 0,
    "connections": int(total),
    "joined": joined,
    "failures": failures,
    "handshakes_per_sec": round(sum(r["handshakes_per_sec"] for r in runs), 1),
    "memory": memory,
    "memory_total_kib": delta,
    "per_connection_kib": round(delta / joined, 2) if joined else None,
    "load_generators": runs,
}
json.dump(summary, open(out, "w"), indent=1)
print(f"{joined}/{total} joined, {failures} failures, "
      f"{summary['handshakes_per_sec']} handshakes/s (all generators together)")
for m in memory:
    print(f"  {m['name']:<10} rss {m['before_kib']} -> {m['after_kib']} KiB (+{m['delta_kib']})")
print(f"  total      +{delta} KiB: {summary['per_connection_kib']} KiB per connection")
print(f"written to {out}")
sys.exit(0 if summary["ok"] else 1)
EOF
exit $STATUS
