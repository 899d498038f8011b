#!/usr/bin/env bash
# The sweep's fault handling, end to end on a local Ray:
#
#   bench/sweep_faults.sh [OUT]        (default OUT: runs/sweep-faults)
#
# 1. A sweep of 4 trials; once trial t001 has validated, its `bptt train` process is killed
#    (SIGKILL). t001 must be marked failed with its last log line, the 3 others done.
# 2. `--resume` reruns t001 only, from its checkpoint; its final weights must equal bit for bit
#    those of the same `bptt train --threads 1` run alone.
# 3. A second sweep gets a Ctrl-C (SIGINT to its whole process group, as a terminal sends it) once
#    one trial is done; `--resume` must complete it without rerunning the finished trial.
set -euo pipefail
OUT=${1:-runs/sweep-faults}
PY=${PYTHON:-python}
FIXED=(--hidden 32 --embed-dim 16 --seq-len 32 --batch-size 8 --steps 300 --val-every 50 --val-tokens 5000)
rm -rf "$OUT" && mkdir -p "$OUT"

echo "== 1. kill one trial's process"
"$PY" -m bptt sweep --grid lr=1e-3,2e-3,5e-3,1e-2 --out "$OUT/kill" -- "${FIXED[@]}" > "$OUT/kill.log" 2>&1 &
sweep=$!
pid=""
for i in $(seq 1 300); do
  pid=$(pgrep -f -- "--out $(realpath -m "$OUT/kill")/trials/t001" | head -1 || true)
  if ! kill -0 "$sweep" 2>/dev/null; then tail -5 "$OUT/kill.log"; exit 1; fi
  if [ -n "$pid" ] && grep -q "val loss" "$OUT/kill/trials/t001/log.txt" 2>/dev/null; then break; fi
  sleep 1
done
echo "killing t001's process $pid"
kill -9 "$pid"
wait "$sweep" || true
tail -8 "$OUT/kill.log"
"$PY" - "$OUT/kill/results.csv" <<'EOF'
import csv, sys
rows = {r["trial"]: r for r in csv.DictReader(open(sys.argv[1]))}
assert rows["t001"]["status"] == "failed" and "SIGKILL" in rows["t001"]["error"], rows["t001"]
assert all(rows[t]["status"] == "done" and rows[t]["steps"] == "300" for t in ("t000", "t002", "t003"))
print("OK: t001 failed (" + rows["t001"]["error"][:60] + "...), the others done")
EOF

echo "== 2. resume the killed trial; compare with the same train run alone"
"$PY" -m bptt sweep --resume --out "$OUT/kill" | tail -3
"$PY" -m bptt --threads 1 train "${FIXED[@]}" --lr 2e-3 --out "$OUT/alone" > /dev/null
"$PY" - "$OUT" <<'EOF'
import sys
import numpy as np
from bptt.checkpoint import load_checkpoint
out = sys.argv[1]
a = load_checkpoint(f"{out}/alone/checkpoint.bptt")["model"]
b = load_checkpoint(f"{out}/kill/trials/t001/checkpoint.bptt")["model"]
assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a), "weights differ"
print(f"OK: the resumed trial's {len(a)} weight arrays equal those of the run alone, bit for bit")
EOF

echo "== 3. Ctrl-C, then --resume"
setsid "$PY" -m bptt sweep --grid lr=1e-3,2e-3,5e-3,1e-2 --out "$OUT/ctrlc" -- "${FIXED[@]}" \
  > "$OUT/ctrlc.log" 2>&1 &
sweep=$!
for i in $(seq 1 300); do grep -q " done at" "$OUT/ctrlc.log" && break; sleep 1; done
kill -INT -- "-$sweep"
rc=0; wait "$sweep" || rc=$?
tail -9 "$OUT/ctrlc.log"
echo "exit status after Ctrl-C: $rc"
finished=$("$PY" -c "import json,sys; print(' '.join(t['id'] for t in json.load(open(sys.argv[1]))['trials'] if t['status'] == 'done'))" "$OUT/ctrlc/sweep.json")
echo "finished before the resume: $finished"
declare -A stamp
for t in $finished; do stamp[$t]=$(stat -c %y "$OUT/ctrlc/trials/$t/checkpoint.bptt"); done
"$PY" -m bptt sweep --resume --out "$OUT/ctrlc" | tail -8
for t in $finished; do
  now=$(stat -c %y "$OUT/ctrlc/trials/$t/checkpoint.bptt")
  [ "$now" = "${stamp[$t]}" ] || { echo "FAIL: $t was rerun"; exit 1; }
done
"$PY" - "$OUT/ctrlc/results.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert all(r["status"] == "done" and r["steps"] == "300" for r in rows), rows
print("OK: the resumed sweep completed; the finished trials were not rerun")
EOF
