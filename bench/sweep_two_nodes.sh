#!/usr/bin/env bash
# A Ray cluster of two "nodes" on this machine, and a sweep that runs on both.
#
#   bench/sweep_two_nodes.sh [OUT]       (default OUT: runs/sweep-two-nodes)
#
# Starts a head node (1 CPU) with `ray start --head --port PORT` and a second node (1 CPU) with
# `ray start --address 127.0.0.1:PORT`, each in the foreground (--block) so that this script
# stops exactly the processes it started (never `ray stop`, which stops every Ray on the machine).
# Then runs 4 trials with --address 127.0.0.1:PORT --cpus-per-trial 1 and checks from
# OUT/results.csv that every trial is done and that the trials ran on two different nodes.
set -euo pipefail
OUT=${1:-runs/sweep-two-nodes}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
PY=${PYTHON:-python}
RAY=${RAY:-$(dirname "$(command -v "$PY")")/ray}
TMP=$(mktemp -d /tmp/bptt2n-XXXX)   # short: Ray's unix sockets live under it
# This cluster's own token (Ray 2.60 authenticates by token), so that nothing reads or rewrites
# the user's ~/.ray/auth_token
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN=$("$PY" -c "import secrets; print(secrets.token_hex(32))")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

echo "head node on port $PORT, logs in $TMP"
"$RAY" start --head --port "$PORT" --num-cpus 1 --temp-dir "$TMP" --include-dashboard false \
  --disable-usage-stats --block > "$TMP/head.log" 2>&1 &
pids+=($!)
for i in $(seq 1 120); do   # wait until the head answers
  if "$RAY" status --address "127.0.0.1:$PORT" > /dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then cat "$TMP/head.log"; exit 1; fi
  sleep 1
done
"$RAY" start --address "127.0.0.1:$PORT" --num-cpus 1 --disable-usage-stats --block \
  > "$TMP/node2.log" 2>&1 &
pids+=($!)
for i in $(seq 1 120); do   # wait until the cluster has both nodes' CPUs
  if "$RAY" status --address "127.0.0.1:$PORT" 2>/dev/null | grep -q "/2.0 CPU"; then break; fi
  sleep 1
done
"$RAY" status --address "127.0.0.1:$PORT" | grep -E "node_|CPU" || true

rm -rf "$OUT"
start=$(date +%s)
"$PY" -m bptt sweep --address "127.0.0.1:$PORT" --cpus-per-trial 1 --grid lr=1e-3,2e-3,5e-3,1e-2 \
  --out "$OUT" -- --hidden 32 --embed-dim 16 --seq-len 32 --batch-size 8 --steps 100 --val-every 50 \
  --val-tokens 10000
echo "wall time: $(( $(date +%s) - start )) s"

"$PY" - "$OUT/results.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
nodes = {r["node"] for r in rows}
print(f"{len(rows)} trials on {len(nodes)} nodes: " + ", ".join(sorted(nodes)))
assert all(r["status"] == "done" for r in rows), "a trial did not finish"
assert len(nodes) == 2, "the trials did not run on both nodes"
print("OK: both nodes took trials")
EOF
