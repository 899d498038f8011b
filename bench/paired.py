"""bptt against itself under two settings, timed in turns: one process per setting, each timing its
steps only while the other waits, so that a machine's slow and quick spells fall on both alike.

    python bench/paired.py --a BPTT_ISA=avx512 --b BPTT_ISA=avx2 lstm:32,25,1024,1024 char_lm mlp
    python bench/paired.py --a BPTT_THREADS=1 --b BPTT_THREADS=2 --rounds 6 gru:50,50,65,128

Each setting is a set of environment variables (``--a``, ``--b``: ``NAME=VALUE`` words; what
bptt reads at import, such as ``BPTT_ISA`` and ``BPTT_THREADS``, has to be set this way). Each
workload is one of the benchmark's steps (:mod:`bptt.benchmark.problems`): ``rnn``, ``gru`` or
``lstm`` with ``:B,T,I,H`` (a training step of the layer), ``char_lm`` or ``mlp``, or
``dense:N,I,O`` (one dense forward product, y = x·Wᵀ + b), ``dense_wg:N,I,O`` (one dense weight
gradient, dW += dyᵀ·x and db, over N rows), ``dense_wg_set:N,I,O`` (the same setting dW and db:
``dense_weight_grads``) or ``dense_dx:N,I,O`` (dx = dy·W, set: ``dense_input_grad``). The two
processes build every workload first, then take turns: in each of ``--rounds`` rounds each process times every workload for
``--seconds`` in all (the order of the two alternates from round to round) and reports its median
step per workload. The report gives each setting's median of the rounds' medians and the median
of the rounds' B / A ratios (the two runs of a round are seconds apart, so their ratio is the
figure that noise moves least).

Why: on a virtual machine the same step can take 50 % longer from one minute or process to the
next (docs/performance.md, nineteenth session); two settings timed one after the other then
compare two moments, not two settings. The waiting process sleeps on a pipe, and the pause
between turns (``PAUSE``) lets its OpenMP threads stop spinning before the other times anything.
"""
import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time

PAUSE = 0.05   # seconds between turns: libgomp's threads spin a moment after a parallel region


KINDS = {"rnn": 4, "gru": 4, "lstm": 4, "char_lm": 0, "mlp": 0, "dense": 3, "dense_wg": 3, "dense_wg_set": 3,
         "dense_dx": 3}   # kind: sizes it takes


def parse(workload: str):
    """(kind, sizes) of a workload, or SystemExit with what is accepted."""
    kind, _, dims = workload.partition(":")
    try:
        sizes = tuple(int(v) for v in dims.split(",")) if dims else ()
    except ValueError:
        sizes = None
    if kind not in KINDS or sizes is None or len(sizes) != KINDS[kind] or any(v < 1 for v in sizes):
        raise SystemExit(f"unknown workload {workload!r}: rnn|gru|lstm:B,T,I,H, char_lm, mlp, or "
                         f"dense|dense_wg|dense_wg_set|dense_dx:N,I,O")
    return kind, sizes


def build(workload: str):
    """(name, step) of one workload, built and run twice (compiled, caches warm)."""
    import numpy as np

    from bptt.benchmark.problems import CHAR_LM, MLP_SPEC, build_bptt, make_data
    kind, sizes = parse(workload)
    if kind in ("rnn", "gru", "lstm"):
        B, T, I, H = sizes
        spec = {"cell": kind, "B": B, "T": T, "I": I, "H": H}
        step, _ = build_bptt("cell", spec, make_data("cell", spec, 0))
    elif kind in ("char_lm", "mlp"):
        spec = dict(CHAR_LM if kind == "char_lm" else MLP_SPEC)
        step, _ = build_bptt(kind, spec, make_data(kind, spec, 0))
    elif kind == "dense":
        from bptt.kernels.dense import dense_forward
        N, I, O = sizes
        rng = np.random.default_rng(0)
        x, W = rng.standard_normal((N, I)).astype(np.float32), rng.standard_normal((O, I)).astype(np.float32)
        b, y = np.zeros(O, np.float32), np.empty((N, O), np.float32)

        def step():
            dense_forward(y, x, W, b)
    elif kind in ("dense_wg", "dense_wg_set"):
        from bptt.kernels.dense import dense_backward_params, dense_weight_grads
        N, I, O = sizes
        rng = np.random.default_rng(0)
        x, dy = rng.standard_normal((N, I)).astype(np.float32), rng.standard_normal((N, O)).astype(np.float32)
        dW, db = np.zeros((O, I), np.float32), np.zeros(O, np.float32)
        wg = dense_backward_params if kind == "dense_wg" else dense_weight_grads

        def step():
            wg(dW, db, dy, x)
    elif kind == "dense_dx":
        from bptt.kernels.dense import dense_input_grad
        N, I, O = sizes
        rng = np.random.default_rng(0)
        dy, W = rng.standard_normal((N, O)).astype(np.float32), rng.standard_normal((O, I)).astype(np.float32)
        dx = np.empty((N, I), np.float32)

        def step():
            dense_input_grad(dx, dy, W)
    step()
    step()
    return workload, step


def child(workloads) -> None:
    """Build the workloads, print their names, then for each line ``go SECONDS`` on stdin time
    each for its share of the seconds and print the median step of each in ms."""
    steps = [build(w) for w in workloads]
    print(" ".join(name for name, _ in steps), flush=True)
    for line in sys.stdin:
        share = float(line.split()[1]) / len(steps)
        medians = []
        for _, step in steps:
            times = []
            start = time.perf_counter()
            while not times or time.perf_counter() - start < share:
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            medians.append(1e3 * statistics.median(times))
        print(" ".join(f"{m:.6f}" for m in medians), flush=True)


def start(setting: str, workloads):
    env = dict(os.environ)
    for word in shlex.split(setting):
        name, sep, value = word.partition("=")
        if not sep:
            raise SystemExit(f"a setting is NAME=VALUE words, got {word!r}")
        env[name] = value
    proc = subprocess.Popen([sys.executable, __file__, "--child", *workloads], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1)
    header = proc.stdout.readline()
    if not header:
        raise SystemExit(f"the process for setting {setting or '(as is)'!r} failed before it was ready")
    return proc


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workloads", nargs="+", help="rnn|gru|lstm:B,T,I,H, char_lm, mlp, or dense|dense_wg|dense_wg_set|dense_dx:N,I,O")
    ap.add_argument("--a", default="", help="setting A: NAME=VALUE words (default: the environment as it is)")
    ap.add_argument("--b", default="", help="setting B: NAME=VALUE words")
    ap.add_argument("--rounds", type=int, default=8, help="turns each setting takes (default 8)")
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds of each turn (default 1)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.workloads)
        return
    for w in args.workloads:
        parse(w)
    if args.rounds < 1 or args.seconds <= 0:
        raise SystemExit("--rounds must be at least 1 and --seconds above 0")
    procs = [start(s, args.workloads) for s in (args.a, args.b)]
    rounds = [[], []]
    for r in range(args.rounds):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):
            time.sleep(PAUSE)
            procs[k].stdin.write(f"go {args.seconds}\n")
            procs[k].stdin.flush()
            rounds[k].append([float(v) for v in procs[k].stdout.readline().split()])
    for p in procs:
        p.stdin.close()
        p.wait()
    print(f"A: {args.a or '(as is)'}   B: {args.b or '(as is)'}   {args.rounds} rounds of {args.seconds} s")
    print(f"{'workload':24s} {'A ms':>10s} {'B ms':>10s} {'B / A':>7s}  rounds' B / A")
    for j, name in enumerate(args.workloads):
        a = [row[j] for row in rounds[0]]
        b = [row[j] for row in rounds[1]]
        ratios = sorted(y / x for x, y in zip(a, b))
        print(f"{name:24s} {statistics.median(a):10.3f} {statistics.median(b):10.3f} "
              f"{statistics.median(ratios):7.3f}  {ratios[0]:.3f}-{ratios[-1]:.3f}")


if __name__ == "__main__":
    main()
