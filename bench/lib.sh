# Shell helpers shared by bench/run.sh and bench/connections-100k.sh
# (sourced, not run).

# Waits until FILE has a line matching PATTERN (the process at PID must stay
# alive) and prints the first address (host:port) found on that line.
await_address() {
  local file=$1 pattern=$2 pid=$3 address
  for _ in $(seq 1 600); do
    # The line may be caught half written (an unbuffered stderr writes the
    # text and the address separately): only a line with its address counts.
    address=$(grep -m1 -a "$pattern" "$file" 2>/dev/null \
      | grep -oE '([0-9]{1,3}\.){3}[0-9]{1,3}:[0-9]+' | head -1 || true)
    if [[ -n $address ]]; then
      echo "$address"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "process died; its log:" >&2; cat "$file" >&2; return 1; }
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file" >&2
  return 1
}

# The gateway's edge limits, raised out of the way: a benchmark opens up to
# 100,000 connections from one address and sends thousands of frames a
# second on one connection, which the defaults (10,000 connections, 256 per
# address, 20 frames/s with bursts of 100) are there to refuse.
WSGATE_BENCH_LIMITS=(--max-connections 1000000 --max-connections-per-ip 1000000
  --max-frames-per-second 1000000 --frame-burst 1000000)

# Prints the comment block at the top of SCRIPT (its usage), without the "#".
print_help() { sed -n '2,/^[^#]/{/^#/p}' "$1" | sed 's/^# \{0,1\}//'; }
