"""What one step of data-parallel BPTT would add: averaging the gradients among Ray actors.

    python bench/allreduce_cost.py [--workers 2] [--repeat 7] [--json FILE]

For each cell and shape of `bptt bench`, the parameter count of the recurrent layer
(G*H*(I+H) + 2*G*H) and its float32 gradient size, the measured time of one training step of that
layer (from bench/results.json, the latest run, 2 threads), and the measured time of an all-reduce
of a gradient of that size among ``--workers`` Ray actors on this machine, through Ray's object
store: each actor puts its gradient, gets every other actor's, and sums them in a fixed order
(worker 0 first), so that every worker ends with the same bits. Also printed: the time a ring
all-reduce would take on a 10 Gbit/s network, 2*(N-1)/N * bytes / bandwidth, for N = 2 and 8.
Used by docs/scale-out.md.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {"teach": (1, 25, 65, 100), "char": (50, 50, 65, 128), "fastrnns": (64, 100, 512, 512),
          "deepbench": (32, 25, 1024, 1024)}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def params(cell, I, H):
    G = GATES[cell]
    return G * H * (I + H) + 2 * G * H


def step_ms():
    """(cell, shape) -> bptt's median step ms in the latest run of bench/results.json."""
    runs = json.loads((ROOT / "bench" / "results.json").read_text())["runs"]
    run = max(runs, key=lambda r: r["machine"]["date"])
    return {(r["cell"], r["shape"]): r["bptt_ms"] for r in run["rows"]}, run["machine"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import ray
    temp = tempfile.mkdtemp(prefix="bptt-ar-", dir="/tmp")
    ray.init(num_cpus=a.workers, _temp_dir=temp, include_dashboard=False, log_to_driver=False,
             configure_logging=False, object_store_memory=512 * 2 ** 20)

    @ray.remote(num_cpus=1)
    class Worker:
        def __init__(self, rank):
            self.rank = rank
            self.peers = None
            self.grad = None

        def set_peers(self, peers):
            self.peers = peers

        def make(self, n):
            self.grad = np.random.default_rng(self.rank).standard_normal(n).astype(np.float32)
            return True

        def put(self):
            return ray.put(self.grad)

        def reduce(self, refs):
            # a fixed order (rank 0, 1, ...): the same sum, bit for bit, on every worker
            total = np.zeros_like(self.grad)
            for r in ray.get(list(refs)):
                total += r
            total /= len(refs)
            return float(total[0])

    workers = [Worker.remote(i) for i in range(a.workers)]
    times, machine = step_ms()
    rows = []
    sizes = sorted({params(c, s[2], s[3]) for c in GATES for s in SHAPES.values()})
    ar = {}
    for n in sizes:
        ray.get([w.make.remote(n) for w in workers])
        samples = []
        for rep in range(a.repeat + 1):
            t0 = time.perf_counter()
            refs = ray.get([w.put.remote() for w in workers])
            out = ray.get([w.reduce.remote(refs) for w in workers])
            dt = time.perf_counter() - t0
            assert len(set(out)) == 1   # every worker has the same average
            if rep:
                samples.append(dt)
        ar[n] = statistics.median(samples) * 1000
    ray.shutdown()
    for shape, (B, T, I, H) in SHAPES.items():
        for cell in GATES:
            n = params(cell, I, H)
            ms = times.get((cell, shape))
            ring = {N: 2 * (N - 1) / N * 4 * n / 1.25e9 * 1000 for N in (2, 8)}
            rows.append({"shape": shape, "cell": cell, "B": B, "T": T, "I": I, "H": H, "params": n,
                         "grad_mb": 4 * n / 1e6, "step_ms": ms, "allreduce_ms_local": ar[n],
                         "ring_10gbit_ms_2": ring[2], "ring_10gbit_ms_8": ring[8]})
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine.get('cpu')} "
          f"({machine.get('llvm_cpu')}), {os.cpu_count()} cores; all-reduce among {a.workers} Ray actors "
          f"on this machine, median of {a.repeat}; step times from bench/results.json ({machine.get('date')})")
    print(f"{'shape':10} {'cell':5} {'params':>10} {'grad MB':>8} {'step ms':>8} {'allred ms':>9} "
          f"{'ratio':>6} {'10G ring N=2':>12} {'N=8':>6}")
    for r in rows:
        ratio = r["allreduce_ms_local"] / r["step_ms"] if r["step_ms"] else float("nan")
        print(f"{r['shape']:10} {r['cell']:5} {r['params']:>10,} {r['grad_mb']:>8.2f} "
              f"{r['step_ms'] or float('nan'):>8.2f} {r['allreduce_ms_local']:>9.2f} {ratio:>6.2f} "
              f"{r['ring_10gbit_ms_2']:>12.2f} {r['ring_10gbit_ms_8']:>6.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine, "workers": a.workers, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
