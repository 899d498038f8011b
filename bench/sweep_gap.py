"""An LSTM forward sweep on two threads, with and without rows between its two chunks, timed in
turns with the machine's cache-line round trip beside each reading (docs/performance.md,
twenty-sixth session).

    python bench/sweep_gap.py --seconds 120 0 16        # chunks side by side, and 16 rows apart
    python bench/sweep_gap.py --batch 48 0 16

Each gap runs in a process of its own (a worker: this file with ``--worker``); the driver asks
them in turn, so that a slow spell of the machine falls on all of them alike. The worker's sweep
is a copy of ``bptt.kernels.lstm._lstm_forward_rows_fused`` (bias, input product, recurrent
product and the cells, step by step over its chunk of sequences), except that the arrays it
writes (gates, c, tanh c, h) have ``2·gap`` extra rows and the second chunk's rows start ``2·gap``
rows after the first chunk's end. gap 0 is the layout the layers use. The numbers are not
checked against anything: this measures time only.
"""
import argparse
import os
import subprocess
import sys
import time

T, I, H = 50, 64, 256


def worker(B: int, gap: int) -> None:
    import numpy as np
    from bptt import jit
    from bptt.jit import jobs
    from bptt.kernels import engine, handoff
    from bptt.kernels.dense import fill_rows
    from bptt.kernels.engine import add_bias_rows, chunk_rows, step_product
    from bptt.kernels.lstm import lstm_cells

    jit.set_threads(2)
    rng = np.random.default_rng(0)
    G4, BA = 4 * H, B + 2 * gap
    W_ih = (rng.standard_normal((G4, I)) * 0.1).astype(np.float32)
    W_hh = (rng.standard_normal((G4, H)) * 0.1).astype(np.float32)
    jit._prepare([W_ih])
    P_ih, P = engine.packed_T(W_ih), engine.packed_T(W_hh)
    b = rng.standard_normal(G4).astype(np.float32)
    x = rng.standard_normal((T, BA, I)).astype(np.float32)
    gates = engine.aligned_empty((T, BA, G4), np.float32)
    y, c, tc = (engine.aligned_empty((T, BA, H), np.float32) for _ in range(3))
    h0 = np.zeros((BA, H), np.float32)
    c0 = np.zeros((BA, H), np.float32)

    @jobs
    def sweep(ch, nch, y, gates, c, tc, h0, c0, b, x, P_ih, P, B, gap):
        r0, r1 = chunk_rows(ch, nch, B)
        r0 += ch * 2 * gap
        r1 += ch * 2 * gap
        for t in range(x.shape[0]):
            a = gates[t]
            hp = h0 if t == 0 else y[t - 1]
            cp = c0 if t == 0 else c[t - 1]
            fill_rows(a, b, r0, r1, 0, a.shape[1])
            step_product(a, x[t], P_ih, r0, r1, a.shape[1], x.shape[2])
            add_bias_rows(a, b, r0, r1)
            step_product(a, hp, P, r0, r1, a.shape[1], hp.shape[1])
            lstm_cells(y, gates, c, tc, cp, t, 0, r0, r1, 0, y.shape[2])

    def run():
        sweep(2, y, gates, c, tc, h0, c0, b, x, P_ih, P, B, gap)

    run()
    print("ready", flush=True)
    for _ in sys.stdin:
        h = handoff.round_trip_ns()
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(8):
                run()
            best = min(best, (time.perf_counter() - t0) / 8)
        print(f"{h:.0f} {best * 1e3:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gaps", nargs="+", type=int, help="rows between the two chunks, one process each")
    ap.add_argument("--batch", type=int, default=50, help="sequences (two chunks of half each)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.batch, a.gaps[0])
        return
    procs = []
    for g in a.gaps:
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", "--batch", str(a.batch), str(g)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if p.stdout.readline().strip() != "ready":
            sys.exit(f"the worker for gap {g} did not start")
        procs.append(p)
    print(f"B = {a.batch}, T = {T}, I = {I}, H = {H}, two threads; ms per sweep (best of 3 × 8), "
          "and the round trip in ns before it")
    end = time.time() + a.seconds
    while time.time() < end:
        row = []
        for g, p in zip(a.gaps, procs):
            p.stdin.write("go\n")
            p.stdin.flush()
            h, ms = p.stdout.readline().split()
            row.append(f"gap {g:>2}: {ms:>6} ms (round trip {h:>4} ns)")
            time.sleep(0.05)
        print(time.strftime("%H:%M:%S"), " | ".join(row), flush=True)
    for p in procs:
        p.stdin.close()
        p.wait()


if __name__ == "__main__":
    main()
