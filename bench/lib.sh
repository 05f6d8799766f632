# Shell helpers shared by bench/run.sh and bench/connections-100k.sh
# (sourced, not run).

# Waits until FILE has a line matching PATTERN (the process at PID must stay
# alive) and prints the first address (host:port) found on that line.
await_address() {
  local file=$1 pattern=$2 pid=$3 line
  for _ in $(seq 1 600); do
    line=$(grep -m1 -a "$pattern" "$file" 2>/dev/null || true)
    if [[ -n $line ]]; then
      grep -oE '([0-9]{1,3}\.){3}[0-9]{1,3}:[0-9]+' <<<"$line" | head -1
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "process died; its log:" >&2; cat "$file" >&2; return 1; }
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file" >&2
  return 1
}

# Prints the comment block at the top of SCRIPT (its usage), without the "#".
print_help() { sed -n '2,/^[^#]/{/^#/p}' "$1" | sed 's/^# \{0,1\}//'; }
