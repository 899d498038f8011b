"""Layer 3: bptt against PyTorch, one training step at a time (``bptt bench``, issue #5).

A *step* of a recurrent layer is what training does per chunk: zero the gradients, forward over
T steps, then full BPTT backward from an upstream gradient on the output, giving dx, ∂L/∂h0 and
every weight gradient. bptt and ``torch.nn.RNN/LSTM/GRU`` run it on the same float32 weights
and inputs, with the same number of threads.

For every cell × shape:

1. **check**: one step of each, in this process; ``out``, ``dx``, ``dh0`` (``dc0``) and every
   weight gradient are compared by relative error max|a − b| / max|b|. Above :data:`TOLERANCE`
   the row fails.
2. **time**: each framework in its own worker process (see below), on the same arrays: warm-up
   steps, then timed steps until at least ``repeat`` of them and ``min_time`` seconds, in
   :data:`ROUNDS` slices that alternate between the frameworks (bptt, torch, torch, bptt, ...;
   :func:`slices`): a virtual machine drifts between fast and slow periods, and timing one
   framework after the other could put each in a different one. The median is reported, with
   the min and the quartiles in the JSON.
3. **memory**: in bptt's worker, one step of a fresh layer under :mod:`tracemalloc` (which sees
   numpy's allocations): parameters + gradients + the step's peak allocations (workspaces,
   outputs, dx).

Why worker processes: Numba's OpenMP pool and torch's use two separate copies of libgomp, and
each spins while waiting for work. In one process on a small machine the two pools steal the
cores from each other, which slowed a 1 ms torch step to 800 ms on the 2-core machine this was
written on. Each worker loads only its own framework (bptt's never imports torch), so each is
timed as a user would run it. ``in_process=True`` (``--in-process``) times both in this process
anyway, for diagnosis.

FLOPs per step count the matrix products only, forward plus twice that for backward
(dx-side and dW-side):

    flops = 3 · 2 · T · B · G · H · (I + H)

GFLOP/s = flops / median seconds / 1e9, for both. The percentage of peak divides bptt's figure by
the machine's float32 FMA peak on the threads in use, measured by :mod:`bptt.kernels.peak` on all
threads and on one (or given); the one-thread figure also shows whether other processes were
holding cores. Targets (:data:`TARGETS`) are reported per row, never asserted.

torch is imported only inside functions: ``import bptt.benchmark`` works without it, and
:func:`require_torch` turns its absence into one line.
"""
from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field

import numpy as np

from . import jit
from .layers import MLP, softmax_cross_entropy
from .layers.recurrent import GRU, LSTM, RNN
from .model import LanguageModel, LMConfig

# (B, T, I, H): a teaching example, a char-RNN, the fastrnns benchmark and DeepBench's RNN training.
SHAPES = {
    "teach": (1, 25, 65, 100),
    "char": (50, 50, 65, 128),
    "fastrnns": (64, 100, 512, 512),
    "deepbench": (32, 25, 1024, 1024),
}
QUICK_SHAPES = ("teach", "char")
CELLS = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
TOLERANCE = 1e-3  # float32 relative error allowed between bptt and torch

# Each target: a description and the shape names it applies to (None = every row).
TARGETS = {
    "ratio_ge_1": ("torch / bptt >= 1 (bptt at least as fast as torch)", None),
    "ratio_ge_10": ("torch / bptt >= 10", ("teach",)),
    "gflops_ge_150": ("bptt >= 150 GFLOP/s", ("fastrnns", "deepbench")),
}

# The extras: a character language model and a dense MLP, each against the same model in torch.
CHAR_LM = {"V": 65, "E": 64, "H": 256, "B": 50, "T": 50}
MLP_SPEC = {"sizes": [784, 512, 512, 10], "B": 128}

ENV_VARS = ("BPTT_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS",
            "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "OMP_PROC_BIND")
NOISY = 1.5  # a timing whose upper quartile exceeds its lower one by this factor is flagged
FRAMEWORKS = ("bptt", "torch")
ROUNDS = 4    # each framework's timing of a row is cut into this many alternating slices
SLICE_WARM = 0.02  # seconds of untimed steps at the start of a slice, for steps shorter than this

TORCH_MISSING = "bptt bench needs torch: pip install 'bptt[bench]'"


class BenchError(RuntimeError):
    """A benchmark cannot run (torch missing, a worker died); the message is for the user."""


def require_torch():
    """The torch module, or BenchError with the one-line install hint."""
    try:
        import torch
    except ImportError:
        raise BenchError(TORCH_MISSING) from None
    return torch


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------

def parse_shape(text: str) -> tuple:
    """'B,T,I,H' -> (B, T, I, H) of positive ints; ValueError otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"--shape must be four positive integers B,T,I,H (e.g. 8,20,32,64), got {text!r}")
    return dims


def parse_list(text, allowed, what: str) -> tuple:
    """'a,b' -> ('a', 'b'), each in ``allowed``, duplicates dropped; None -> all; 'none' -> ()."""
    if text is None:
        return tuple(allowed)
    items = [s.strip().lower() for s in str(text).split(",") if s.strip()]
    if items == ["none"]:
        return ()
    bad = [s for s in items if s not in allowed]
    if bad:
        raise ValueError(f"{what} must be a comma-separated list of {', '.join(allowed)}; got {bad[0]!r}")
    return tuple(dict.fromkeys(items))


@dataclass
class BenchConfig:
    """Everything one benchmark run depends on."""
    cells: tuple = CELLS
    shapes: list = field(default_factory=lambda: list(SHAPES.items()))  # [(name, (B, T, I, H))]
    threads: int | None = None       # None: the current bptt thread count
    repeat: int = 3                  # at least this many timed steps per framework
    warmup: int = 1                  # untimed steps per framework (and at least 0.2 s of them)
    min_time: float = 1.0            # time each framework for at least this long per row
    peak: float | None = None        # GFLOP/s; None: measure
    extras: bool = True              # char-LM, MLP and compile-time reports
    in_process: bool = False         # time both frameworks in this process (for diagnosis)
    seed: int = 0

    def command(self) -> str:
        """The `bptt bench` command line that reproduces this configuration."""
        named = [n for n, _ in self.shapes if n in SHAPES]
        custom = [s for n, s in self.shapes if n not in SHAPES]
        args = ["bptt", "bench", "--cells", ",".join(self.cells),
                "--shapes", ",".join(named) if named else "none"]
        for s in custom:
            args += ["--shape", ",".join(map(str, s))]
        args += ["--threads", str(self.threads), "--repeat", str(self.repeat),
                 "--warmup", str(self.warmup), "--min-time", f"{self.min_time:g}"]
        if self.peak is not None:
            args += ["--peak", f"{self.peak:g}"]
        if not self.extras:
            args.append("--no-extras")
        if self.in_process:
            args.append("--in-process")
        if self.seed:
            args += ["--seed", str(self.seed)]
        return " ".join(args)


def step_flops(cell: str, B: int, T: int, I: int, H: int) -> int:
    """3·2·T·B·G·H·(I+H): the gate matmuls forward, and twice that backward (dx and dW)."""
    return 3 * 2 * T * B * GATES[cell] * H * (I + H)


# ---------------------------------------------------------------------------------------------
# machine
# ---------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    """CPU, cores, threads and library versions, for the header and the JSON."""
    import numba
    try:
        import llvmlite.binding as ll
        llvm_cpu = ll.get_host_cpu_name()
        feats = ll.get_host_cpu_features()
        simd = next((f for f in ("avx512f", "avx2", "avx") if feats.get(f, False)), "sse")
    except Exception:  # pragma: no cover - llvmlite always ships with numba
        llvm_cpu, simd = "unknown", "unknown"
    from . import __version__
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count()
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(), "llvm_cpu": llvm_cpu, "simd": simd, "cores": cores,
        "threads": threads, "bptt_build": "serial" if threads == 1 else "parallel",
        "python": platform.python_version(), "bptt": __version__, "numpy": np.__version__,
        "numba": numba.__version__,
        # settings that change how the thread pools behave, passed on to the workers as they are
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "load_avg_1min": _load(),
        "git": _git_commit(),
    }


def _git_commit():
    """The checkout's commit (with '+dirty' if it has changes), or None outside a git checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _load():
    """The 1-minute load average: other work on the machine distorts every timing."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover - not on Unix
        return None


def measure_peak(seconds: float = 0.5) -> float:
    """The float32 FMA peak in GFLOP/s on the current bptt thread count.

    :func:`bptt.kernels.peak.fma_chains` on one block per thread: first about ``seconds / 2`` of
    untimed runs, so that every core is awake and clocked up (idle virtual CPUs are slow to
    start), then the best of 3 runs of about ``seconds / 6`` each."""
    from .kernels.peak import LANES, fma_chains
    P = jit.get_threads()
    out = np.ones((P, LANES), np.float32)
    a, b = np.float32(0.999), np.float32(0.001)  # a fixed point at 1: values stay normal
    reps = 10_000
    start = time.perf_counter()
    while True:  # warm up and calibrate: grow reps until one run takes about seconds / 6
        t0 = time.perf_counter()
        fma_chains(out, a, b, reps)
        dt = time.perf_counter() - t0
        if dt < seconds / 6 and reps < 10 ** 10:
            reps *= 2
        elif time.perf_counter() - start >= seconds / 2:
            break
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        fma_chains(out, a, b, reps)
        dt = time.perf_counter() - t0
        best = max(best, 2.0 * LANES * P * reps / dt / 1e9)
    return best


# ---------------------------------------------------------------------------------------------
# the problems: the same step built in either framework from the same arrays
# ---------------------------------------------------------------------------------------------
# A job is (kind, spec): kind "cell" with spec {cell, B, T, I, H}, "char_lm" with CHAR_LM, "mlp"
# with MLP_SPEC. make_data draws every array the step needs (weights under "p.<name>", torch's
# parameter names); build_bptt / build_torch turn them into
#     step()     zero_grad, forward, loss or upstream gradient, backward
#     results()  {name: array} after a step: outputs, input and weight gradients, compared by name

RECURRENT = {"rnn": RNN, "gru": GRU, "lstm": LSTM}


def make_data(kind: str, spec: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    f32 = np.float32
    if kind == "cell":
        B, T, I, H = (spec[k] for k in "BTIH")
        layer = RECURRENT[spec["cell"]](I, H, dtype=f32, rng=rng)  # torch's initialisation
        data = {f"p.{k}": v for k, v in layer.params.items()}
        data["x"] = rng.standard_normal((B, T, I)).astype(f32)
        data["h0"] = (0.5 * rng.standard_normal((1, B, H))).astype(f32)
        data["c0"] = (0.5 * rng.standard_normal((1, B, H))).astype(f32)
        data["dout"] = rng.standard_normal((B, T, H)).astype(f32)
        return data
    if kind == "char_lm":
        model = _bptt_char_lm(spec, seed)
        data = {f"p.{k}": v for k, v in model.params.items()}
        data["x"] = rng.integers(0, spec["V"], (spec["B"], spec["T"]))
        data["y"] = rng.integers(0, spec["V"], (spec["B"], spec["T"]))
        return data
    if kind == "mlp":
        mlp = MLP(spec["sizes"], "relu", dtype=f32, rng=rng)
        data = {f"p.{k}": v for k, v in mlp.params.items()}
        data["x"] = rng.standard_normal((spec["B"], spec["sizes"][0])).astype(f32)
        data["y"] = rng.integers(0, spec["sizes"][-1], spec["B"])
        return data
    raise ValueError(f"unknown job kind {kind!r}")


def _params(data) -> dict:
    return {k[2:]: v for k, v in data.items() if k.startswith("p.")}


def _bptt_char_lm(spec, seed=0):
    return LanguageModel(LMConfig(vocab_size=spec["V"], cell="lstm", hidden=spec["H"],
                                  embed_dim=spec["E"], dtype="float32", seed=seed))


def build_bptt(kind: str, spec: dict, data: dict):
    """(step, results) for bptt."""
    box = {}
    if kind == "cell":
        B, T, I, H = (spec[k] for k in "BTIH")
        layer = RECURRENT[spec["cell"]](I, H, dtype=np.float32, seed=0)
        layer.load_state(_params(data))
        lstm = spec["cell"] == "lstm"
        x, dout = data["x"], data["dout"]
        state = (data["h0"], data["c0"]) if lstm else data["h0"]

        def step():
            layer.zero_grad()
            box["out"], _ = layer.forward(x, state)
            box["dx"] = layer.backward(dout)

        def results():
            r = {"out": box["out"], "dx": box["dx"], "dh0": layer.dh0}
            if lstm:
                r["dc0"] = layer.dc0
            return {**r, **layer.grads}
        return step, results

    if kind == "char_lm":
        model = _bptt_char_lm(spec)
        model.load_state(_params(data))
        x, y = data["x"], data["y"]

        def step():
            model.zero_grad()
            box["loss"], _ = model.loss_and_grad(x, y)

        return step, lambda: {"loss": np.array([box["loss"]]), **model.grads}

    if kind == "mlp":
        mlp = MLP(spec["sizes"], "relu", dtype=np.float32, seed=0)
        mlp.load_state(_params(data))
        x, y = data["x"], data["y"]

        def step():
            mlp.zero_grad()
            box["loss"], dlogits = softmax_cross_entropy(mlp.forward(x), y)
            mlp.backward(dlogits, input_grad=False)   # as torch: x does not require a gradient

        return step, lambda: {"loss": np.array([box["loss"]]), **mlp.grads}
    raise ValueError(f"unknown job kind {kind!r}")


def build_torch(kind: str, spec: dict, data: dict):
    """(step, results) for the same computation in torch, with parameter names matching bptt's."""
    torch = require_torch()
    nn, F = torch.nn, torch.nn.functional
    T_ = lambda a: torch.from_numpy(np.array(a))  # noqa: E731 - a private copy of the array
    box = {}

    def load(module):
        params = _params(data)
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(T_(params[name]))
        return module

    if kind == "cell":
        Module = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[spec["cell"]]
        m = load(Module(spec["I"], spec["H"], batch_first=True))
        lstm = spec["cell"] == "lstm"
        x, h0, c0 = (T_(data[k]).requires_grad_() for k in ("x", "h0", "c0"))
        dout = T_(data["dout"])
        state = (h0, c0) if lstm else h0

        def step():
            m.zero_grad()
            for t in (x, h0, c0):
                t.grad = None
            box["out"], _ = m(x, state)
            box["out"].backward(dout)

        def results():
            r = {"out": box["out"].detach().numpy(), "dx": x.grad.numpy(), "dh0": h0.grad.numpy()}
            if lstm:
                r["dc0"] = c0.grad.numpy()
            return {**r, **{n: p.grad.numpy() for n, p in m.named_parameters()}}
        return step, results

    if kind in ("char_lm", "mlp"):
        if kind == "char_lm":
            class Net(nn.Module):  # names as bptt's LanguageModel: embedding.*, rnn.*, head.*
                def __init__(self):
                    super().__init__()
                    self.embedding = nn.Embedding(spec["V"], spec["E"])
                    self.rnn = nn.LSTM(spec["E"], spec["H"], batch_first=True)
                    self.head = nn.Linear(spec["H"], spec["V"])

                def forward(self, ids):
                    return self.head(self.rnn(self.embedding(ids))[0])
        else:
            class Net(nn.Module):  # names as bptt's MLP: layers.{k}.weight / .bias
                def __init__(self):
                    super().__init__()
                    s = spec["sizes"]
                    self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(s[:-1], s[1:]))

                def forward(self, v):
                    for k, lin in enumerate(self.layers):
                        v = lin(v) if k == len(self.layers) - 1 else F.relu(lin(v))
                    return v
        m = load(Net())
        x, y = T_(data["x"]), T_(data["y"]).reshape(-1)

        def step():
            m.zero_grad()
            logits = m(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y)
            loss.backward()
            box["loss"] = loss.item()

        return step, lambda: {"loss": np.array([box["loss"]]),
                              **{n: p.grad.numpy() for n, p in m.named_parameters()}}
    raise ValueError(f"unknown job kind {kind!r}")


def job_flops(kind: str, spec: dict) -> int:
    if kind == "cell":
        return step_flops(spec["cell"], *(spec[k] for k in "BTIH"))
    if kind == "char_lm":
        s = spec
        return step_flops("lstm", s["B"], s["T"], s["E"], s["H"]) + 3 * 2 * s["B"] * s["T"] * s["H"] * s["V"]
    if kind == "mlp":
        sz = spec["sizes"]
        return 3 * 2 * spec["B"] * sum(a * b for a, b in zip(sz[:-1], sz[1:]))
    raise ValueError(f"unknown job kind {kind!r}")


# ---------------------------------------------------------------------------------------------
# checking, timing, memory
# ---------------------------------------------------------------------------------------------

def rel_err(a, b) -> float:
    """max|a − b| / max|b| (NaN if either holds a NaN, inf if the shapes differ)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def check_job(kind: str, spec: dict, data: dict) -> dict:
    """One step of each framework in this process; every result compared by name."""
    bstep, bres = build_bptt(kind, spec, data)
    tstep, tres = build_torch(kind, spec, data)
    bstep()
    tstep()
    rb, rt = bres(), tres()
    errors = {name: rel_err(rb[name], rt[name]) if name in rb else float("inf") for name in rt}
    worst = max(errors, key=lambda k: float(np.nan_to_num(errors[k], nan=np.inf)))
    passed = all(e <= TOLERANCE for e in errors.values())  # False for NaN
    return {"passed": passed, "max_rel_err": errors[worst], "worst": worst, "tolerance": TOLERANCE,
            "errors": errors}


def warm_up(step, n: int, seconds: float) -> list:
    """Run ``step`` untimed at least ``n`` times and for at least ``seconds`` (idle cores, virtual
    ones especially, are slow to start; caches are cold after another process ran). Returns how
    long each call took."""
    times = []
    start = time.perf_counter()
    while len(times) < n or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def timed_steps(step, repeat: int, min_time: float) -> list:
    """Seconds of each timed call of ``step``: at least ``repeat`` calls and until ``min_time``
    seconds have passed. The garbage collector is off while timing."""
    times = []
    gc_was_on = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        while len(times) < repeat or time.perf_counter() - start < min_time:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    finally:
        if gc_was_on:
            gc.enable()
    return times


def memory_of(step, arrays) -> dict:
    """bptt's peak memory in a step: ``arrays`` (parameters and gradients, already allocated) plus
    the peak of what the step allocates, traced by tracemalloc (numpy reports to it).
    ``workspace_mb`` is what stays allocated after the step (the layer's workspaces)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        step()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    fixed = sum(a.nbytes for a in arrays) / 2 ** 20
    return {"peak_mb": fixed + peak / 2 ** 20, "params_grads_mb": fixed,
            "step_peak_mb": peak / 2 ** 20, "workspace_mb": current / 2 ** 20}


class _Job:
    """One job, set up in a worker and then timed in slices (see :func:`slices`).

    ``job`` holds kind, spec, the data (or the path of an .npz with it), warmup and whether to
    measure memory. Setting up builds the step and runs the warm-up: the first call also loads
    (or compiles) the kernels."""

    def __init__(self, framework: str, job: dict):
        data = job["data"]
        if isinstance(data, str):
            with np.load(data) as z:
                data = {k: z[k] for k in z.files}
        build = build_bptt if framework == "bptt" else build_torch
        self.step, _ = build(job["kind"], job["spec"], data)
        self.step()  # warm-up 1
        warmups = 1
        self.info = {}
        if job.get("memory") and framework == "bptt" and job["kind"] == "cell":
            self.info["memory"] = _bptt_memory(job["spec"], data)  # also a warm-up step, on a fresh layer
            warmups += 1
        warm = warm_up(self.step, max(job["warmup"] - warmups, 0), 0.2 if job["min_time"] > 0 else 0.0)
        self.step_s = statistics.median(warm) if warm else SLICE_WARM

    def time(self, repeat: int, min_time: float) -> list:
        """Step times of one slice. The other framework ran since the last slice, so steps shorter
        than ``SLICE_WARM`` seconds first run untimed for that long, to refill the caches."""
        warm_up(self.step, 0, SLICE_WARM if self.step_s < SLICE_WARM else 0.0)
        return timed_steps(self.step, repeat, min_time)


def slices(repeat: int, min_time: float) -> list:
    """How a framework's timing of one row is cut into ``ROUNDS`` slices: (repeat, min_time) each.

    The two frameworks' slices alternate (bptt, torch, torch, bptt, ...), so that a machine that
    drifts between fast and slow periods (virtual machines do) slows both alike, and the ratio of
    the medians compares the two under the same conditions. The slices' repeats add up to
    ``repeat`` exactly; their times to ``min_time``."""
    n = max(1, min(ROUNDS, repeat if min_time <= 0 else ROUNDS))
    return [(repeat // n + (i < repeat % n), min_time / n) for i in range(n)]


def _bptt_memory(spec, data) -> dict:
    """memory_of one step of a fresh layer, so that its workspaces are allocated in the step."""
    B, T, I, H = (spec[k] for k in "BTIH")
    layer = RECURRENT[spec["cell"]](I, H, dtype=np.float32, seed=0)
    layer.load_state(_params(data))
    state = (data["h0"], data["c0"]) if spec["cell"] == "lstm" else data["h0"]

    def step():
        layer.zero_grad()
        layer.forward(data["x"], state)
        layer.backward(data["dout"])

    return memory_of(step, list(layer.params.values()) + list(layer.grads.values()))


def _summary(times) -> dict:
    ms = sorted(1e3 * t for t in times)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "q1_ms": q[0], "q3_ms": q[2],
            "n": len(ms)}


# ---------------------------------------------------------------------------------------------
# worker processes
# ---------------------------------------------------------------------------------------------

def _child_env(**extra) -> dict:
    """This environment for a child process, with this bptt importable even when not installed."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=root + (os.pathsep + path if path else ""), **extra)


class _Worker:
    """A child process that times jobs for one framework: JSON lines in and out.

    Started as ``python -m bptt.benchmark worker FRAMEWORK THREADS``; the bptt worker never
    imports torch, the torch worker never launches a Numba kernel."""

    def __init__(self, framework: str, threads: int, tmpdir: str):
        self.framework = framework
        self.log_path = os.path.join(tmpdir, f"{framework}-worker.log")
        self.log = open(self.log_path, "w")
        env = _child_env(BPTT_THREADS=str(threads))
        if framework == "torch":
            env["OMP_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen([sys.executable, "-m", "bptt.benchmark", "worker", framework, str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env=env, text=True, bufsize=1)

    def call(self, request: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            self.log.flush()
            with open(self.log_path) as f:
                tail = [s for s in f.read().strip().splitlines() if s.strip()][-1:] or ["no output"]
            raise BenchError(f"the {self.framework} worker process died: {tail[0]}")
        reply = json.loads(line)
        if "error" in reply:
            raise BenchError(f"the {self.framework} worker failed: {reply['error']}")
        return reply

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.log.close()


def _worker_main(framework: str, threads: int) -> None:
    """The worker loop: read a JSON request per line, answer with one JSON line."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed (by C code too) goes to the log, not the protocol
    sys.stdout = sys.stderr
    if framework == "torch":
        require_torch().set_num_threads(threads)
    for line in sys.stdin:
        try:
            reply = _answer(framework, json.loads(line))
        except Exception as e:  # reported to the parent, which stops with the message
            reply = {"error": f"{type(e).__name__}: {e}"}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


_jobs = {}  # framework -> the _Job set up in this process


def _answer(framework: str, request: dict) -> dict:
    """What a worker answers: the FMA peaks, torch's version and threads, or a job's set-up, one
    slice of its timing, or its end."""
    what = request["what"]
    if what == "peak":
        return _peaks()
    if what == "info":
        torch = require_torch()
        return {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if what == "setup":
        _jobs.pop(framework, None)
        _jobs[framework] = _Job(framework, request["job"])
        return _jobs[framework].info
    if what == "slice":
        return {"times": _jobs[framework].time(request["repeat"], request["min_time"])}
    if what == "done":
        _jobs.pop(framework, None)
        return {}
    raise ValueError(f"unknown request {what!r}")


def _peaks() -> dict:
    """The FMA peak on the bptt thread count and on one thread: if the first is well below
    threads × the second, other processes hold some of the cores."""
    import numba
    threads = jit.get_threads()
    reply = {"peak": measure_peak()}
    try:
        reply["threading_layer"] = numba.threading_layer()
    except ValueError:  # only the serial build has run
        reply["threading_layer"] = None
    if threads > 1:
        jit.set_threads(1)
        try:
            reply["peak_1_thread"] = measure_peak(0.3)
        finally:
            jit.set_threads(threads)
    else:
        reply["peak_1_thread"] = reply["peak"]
    return reply


class _Timers:
    """Where jobs are timed: two workers, or this process (``in_process``)."""

    def __init__(self, threads: int, in_process: bool, tmpdir: str):
        self.in_process = in_process
        self.tmpdir = tmpdir
        self.workers = {}
        if not in_process:
            self.workers = {fw: _Worker(fw, threads, tmpdir) for fw in FRAMEWORKS}

    def call(self, framework: str, request: dict) -> dict:
        if self.in_process:
            return _answer(framework, request)
        return self.workers[framework].call(request)

    def time(self, kind, spec, data, cfg, memory=False) -> dict:
        job = {"kind": kind, "spec": spec, "repeat": cfg.repeat, "warmup": cfg.warmup,
               "min_time": cfg.min_time, "memory": memory}
        if self.in_process:
            job["data"] = data
        else:
            path = os.path.join(self.tmpdir, "data.npz")
            np.savez(path, **data)
            job["data"] = path
        # one framework after the other, never both at once (they would share the cores), in
        # alternating slices: bptt, torch, torch, bptt, bptt, torch, ...
        out = {fw: dict(self.call(fw, {"what": "setup", "job": job}), times=[]) for fw in FRAMEWORKS}
        order = list(FRAMEWORKS)
        for r, m in slices(cfg.repeat, cfg.min_time):
            for fw in order:
                out[fw]["times"] += self.call(fw, {"what": "slice", "repeat": r, "min_time": m})["times"]
            order.reverse()
        for fw in FRAMEWORKS:
            self.call(fw, {"what": "done"})
        return out

    def close(self):
        for w in self.workers.values():
            w.close()


# ---------------------------------------------------------------------------------------------
# rows and extras
# ---------------------------------------------------------------------------------------------

def _record(kind, spec, check, timed, peak) -> dict:
    bt, tt = _summary(timed["bptt"]["times"]), _summary(timed["torch"]["times"])
    flops = job_flops(kind, spec)
    bg = flops / bt["median_ms"] / 1e6
    tg = flops / tt["median_ms"] / 1e6
    noisy = any(t["q3_ms"] > NOISY * t["q1_ms"] for t in (bt, tt))
    return {"flops": flops, "bptt": bt, "torch": tt, "bptt_ms": bt["median_ms"], "torch_ms": tt["median_ms"],
            "ratio": tt["median_ms"] / bt["median_ms"], "noisy": noisy, "bptt_gflops": bg, "torch_gflops": tg,
            "bptt_pct_peak": 100.0 * bg / peak if peak else None,
            "torch_pct_peak": 100.0 * tg / peak if peak else None, "check": check}


def bench_cell(timers, cell: str, shape_name: str, shape, cfg: BenchConfig, peak: float) -> dict:
    """Check, time and measure one cell at one shape; returns the row's record."""
    B, T, I, H = shape
    spec = {"cell": cell, "B": B, "T": T, "I": I, "H": H}
    data = make_data("cell", spec, cfg.seed)
    check = check_job("cell", spec, data)
    timed = timers.time("cell", spec, data, cfg, memory=True)
    row = {"cell": cell, "shape": shape_name, "B": B, "T": T, "I": I, "H": H, "G": GATES[cell]}
    row.update(_record("cell", spec, check, timed, peak))
    row["memory"] = timed["bptt"].get("memory", {})
    row["targets"] = _targets(row)
    row["all_targets_met"] = all(row["targets"].values())
    return row


def _targets(row) -> dict:
    """Every target that applies to the row, met or not. A row that failed its check meets none."""
    values = {"ratio_ge_1": row["ratio"] >= 1.0, "ratio_ge_10": row["ratio"] >= 10.0,
              "gflops_ge_150": row["bptt_gflops"] >= 150.0}
    ok = row["check"]["passed"]
    return {k: bool(ok and values[k]) for k, (_, shapes) in TARGETS.items()
            if shapes is None or row["shape"] in shapes}


def bench_extra(timers, name: str, cfg: BenchConfig, peak: float) -> dict:
    """The char-LM step (Embedding → LSTM → Dense → cross-entropy) or the MLP step, vs torch."""
    spec = CHAR_LM if name == "char_lm" else MLP_SPEC
    data = make_data(name, spec, cfg.seed)
    check = check_job(name, spec, data)
    rec = {"name": name, "spec": spec}
    rec.update(_record(name, spec, check, timers.time(name, spec, data, cfg), peak))
    if name == "char_lm":
        rec["what"] = (f"Embedding({spec['V']},{spec['E']}) > LSTM({spec['H']}) > Dense({spec['H']},{spec['V']})"
                       f" > cross-entropy, B={spec['B']} T={spec['T']}")
        rec["bptt_tokens_per_s"] = spec["B"] * spec["T"] / (rec["bptt_ms"] / 1e3)
        rec["torch_tokens_per_s"] = spec["B"] * spec["T"] / (rec["torch_ms"] / 1e3)
    else:
        rec["what"] = f"MLP({spec['sizes']}, relu) > cross-entropy, B={spec['B']}"
    return rec


# Run in a fresh interpreter: the time to import bptt, then to run one tiny float32 step of every
# cell, which is where kernels are compiled (cold cache) or loaded from the cache (warm).
_COMPILE_SCRIPT = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
import bptt
t1 = time.perf_counter()
for Cell in (bptt.RNN, bptt.GRU, bptt.LSTM):
    layer = Cell(3, 4, dtype=np.float32, seed=0)
    out, _ = layer.forward(np.ones((2, 3, 3), np.float32))
    layer.backward(np.ones_like(out))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_step_s": t2 - t1}))
"""


def compile_times(threads: int, timeout: float = 1800.0) -> dict:
    """Cold (empty cache: compilation) and warm (from the on-disk cache) first-step times.

    Both runs use a private temporary NUMBA_CACHE_DIR, so the user's cache is neither used nor
    touched. Each run is a fresh process; the times are measured inside it."""
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bptt-bench-cache-") as cache:
        env = _child_env(NUMBA_CACHE_DIR=cache, BPTT_CACHE="1", BPTT_THREADS=str(threads))
        for kind in ("cold", "warm"):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True,
                                  text=True, timeout=timeout)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise BenchError(f"the compile-time process failed: {tail}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["process_s"] = wall
            runs[kind] = r
    return {"name": "compile", "threads": threads, "build": "serial" if threads == 1 else "parallel",
            "what": "first float32 step of rnn, gru and lstm in a fresh process",
            "cold_s": runs["cold"]["first_step_s"], "warm_s": runs["warm"]["first_step_s"],
            "import_s": runs["warm"]["import_s"], "runs": runs}


# ---------------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------------

def run(cfg: BenchConfig, on_event=None) -> dict:
    """Run the benchmark described by ``cfg``; returns the report (what ``--json`` writes).

    ``on_event(kind, payload)`` is called as results arrive: ``('header', report)`` once the
    machine and peak are known, ``('start', 'cell shape')`` before each row or extra,
    ``('row', row)`` and ``('extra', record)``.
    """
    torch = require_torch()
    emit = on_event or (lambda kind, payload: None)
    threads_before = (jit.get_threads(), torch.get_num_threads())
    threads = jit.set_threads(cfg.threads if cfg.threads is not None else jit.get_threads())
    cfg.threads = threads
    torch.set_num_threads(threads)
    tmpdir = tempfile.TemporaryDirectory(prefix="bptt-bench-")
    timers = None
    try:
        timers = _Timers(threads, cfg.in_process, tmpdir.name)
        info = machine_info(threads)
        info.update(timers.call("torch", {"what": "info"}))
        measured = timers.call("bptt", {"what": "peak"})
        info["numba_threading_layer"] = measured["threading_layer"]
        # 1.0 when every thread ran at the one-thread peak; well below, other work held cores
        info["core_scaling"] = round(measured["peak"] / (threads * measured["peak_1_thread"]), 4)
        info["timing"] = "in this process" if cfg.in_process else "one worker process per framework"
        # The machine's peak is threads × one thread's unless all threads together did better: on a
        # busy machine the all-threads run loses whole cores, the one-thread run is less affected.
        best = max(measured["peak"], threads * measured["peak_1_thread"])
        peak, source = (float(cfg.peak), "given") if cfg.peak is not None else (best, "measured")
        report = {
            "tool": "bptt bench", "command": cfg.command(), "machine": info,
            "settings": {"threads": threads, "repeat": cfg.repeat, "warmup": cfg.warmup,
                         "min_time_s": cfg.min_time, "seed": cfg.seed, "dtype": "float32",
                         "tolerance": TOLERANCE, "in_process": cfg.in_process},
            "peak_gflops": peak, "peak_source": source, "peak_threads_gflops": measured["peak"],
            "peak_1_thread_gflops": measured["peak_1_thread"],
            "flops_formula": "3*2*T*B*G*H*(I+H)",
            "targets_spec": {k: {"description": d, "shapes": list(s) if s else "all"}
                             for k, (d, s) in TARGETS.items()},
            "rows": [], "extras": {},
        }
        emit("header", report)
        for name, shape in cfg.shapes:
            for cell in cfg.cells:
                emit("start", f"{cell} {name}")
                row = bench_cell(timers, cell, name, shape, cfg, peak)
                row["load_avg_1min"] = _load()
                report["rows"].append(row)
                emit("row", row)
        if cfg.extras:
            for name in ("char_lm", "mlp", "compile"):
                emit("start", name)
                rec = compile_times(threads) if name == "compile" else bench_extra(timers, name, cfg, peak)
                report["extras"][name] = rec
                emit("extra", rec)
        checks = [r["check"]["passed"] for r in report["rows"]]
        checks += [e["check"]["passed"] for e in report["extras"].values() if "check" in e]
        report["machine"]["load_avg_1min_end"] = _load()
        report["all_correct"] = all(checks)
        report["all_targets_met"] = all(r["all_targets_met"] for r in report["rows"])
        return report
    finally:
        if timers is not None:
            timers.close()
        tmpdir.cleanup()
        jit.set_threads(threads_before[0])
        torch.set_num_threads(threads_before[1])


# ---------------------------------------------------------------------------------------------
# text output
# ---------------------------------------------------------------------------------------------

# (header, width, right-aligned); every row is printed as soon as it is measured.
_COLUMNS = [("cell", 4, False), ("shape (B,T,I,H)", 26, False), ("bptt ms", 9, True),
            ("torch ms", 9, True), ("torch/bptt ", 11, True), ("bptt GF/s", 9, True),
            ("torch GF/s", 10, True), ("%peak", 6, True), ("mem MB", 7, True), ("n", 5, True),
            ("check", 10, False), ("targets", 0, False)]


def _line(values) -> str:
    cells = [f"{v:>{w}}" if right else f"{v:<{w}}" for (_, w, right), v in zip(_COLUMNS, values)]
    return "  ".join(cells).rstrip()


def table_header() -> str:
    head = _line([c[0] for c in _COLUMNS])
    return head + "\n" + "-" * (len(head) + 12)


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 1000 else f"{v:.0f}"


_SHORT = {"ratio_ge_1": ">=1x", "ratio_ge_10": ">=10x", "gflops_ge_150": ">=150GF"}


def _check_text(check) -> str:
    return f"{'ok' if check['passed'] else 'FAIL'} {check['max_rel_err']:.0e}"


def format_row(row) -> str:
    shape = f"{row['shape']} ({row['B']},{row['T']},{row['I']},{row['H']})"
    missed = [_SHORT[k] for k, met in row["targets"].items() if not met]
    targets = "met" if not missed else "missed " + ",".join(missed)
    pct = "-" if row["bptt_pct_peak"] is None else f"{row['bptt_pct_peak']:.1f}"
    mem = row["memory"].get("peak_mb")
    ratio = f"{row['ratio']:.2f}" + ("*" if row["noisy"] else " ")
    return _line([row["cell"], shape, _ms(row["bptt_ms"]), _ms(row["torch_ms"]), ratio,
                  f"{row['bptt_gflops']:.1f}", f"{row['torch_gflops']:.1f}", pct,
                  "-" if mem is None else f"{mem:.1f}", str(min(row["bptt"]["n"], row["torch"]["n"])),
                  _check_text(row["check"]), targets])


def format_header(report) -> str:
    m = report["machine"]
    return "\n".join([
        f"bptt bench  {m['date']}",
        f"cpu: {m['cpu']} ({m['llvm_cpu']}, {m['simd']}), {m['cores']} cores; threads: {m['threads']} "
        f"(bptt {m['bptt_build']} build"
        + (f", numba threading layer {m['numba_threading_layer']}" if m["numba_threading_layer"] else "")
        + f"; torch {m['torch_threads']})",
        f"bptt {m['bptt']} (git {m['git']}), numpy {m['numpy']}, numba {m['numba']}, torch {m['torch']}, python {m['python']}; "
        f"load average {m['load_avg_1min']}"
        + (" (the machine is busy: timings will be distorted)" if (m["load_avg_1min"] or 0) > 0.5 * m["cores"] else ""),
        f"float32 FMA peak: {report['peak_gflops']:.1f} GFLOP/s ({report['peak_source']}"
        + (f"; measured {report['peak_threads_gflops']:.1f} on {m['threads']} threads, "
           f"{report['peak_1_thread_gflops']:.1f} on 1" if m["threads"] > 1 or report["peak_source"] == "given" else "")
        + "); FLOPs per step = 3*2*T*B*G*H*(I+H)"
        + (f"\nwarning: {m['threads']} threads reached only {m['core_scaling']:.2f} of {m['threads']}x the "
           f"one-thread peak: other processes hold cores, and timings on {m['threads']} threads will be "
           f"distorted" if m["core_scaling"] < 0.75 else ""),
        f"step = zero_grad + forward + full BPTT backward (dx, dh0, all weight gradients), float32; "
        f"median of n steps, timed {m['timing']}"
        + (f"; env {' '.join(f'{k}={v}' for k, v in m['env'].items())}" if m["env"] else ""),
        f"command: {report['command']}",
        "",
        table_header(),
    ])


def format_extra(rec) -> str:
    if rec["name"] == "compile":
        return (f"compile: {rec['what']} ({rec['build']} build): cold cache {rec['cold_s']:.2f} s, "
                f"warm cache {rec['warm_s']:.2f} s (import bptt {rec['import_s']:.2f} s)")
    text = (f"{rec['name']}: {rec['what']}: bptt {_ms(rec['bptt_ms'])} ms, torch {_ms(rec['torch_ms'])} ms, "
            f"torch/bptt {rec['ratio']:.2f}{'*' if rec['noisy'] else ''}, "
            f"{rec['bptt_gflops']:.1f} vs {rec['torch_gflops']:.1f} GFLOP/s")
    if "bptt_tokens_per_s" in rec:
        text += f", {rec['bptt_tokens_per_s'] / 1e3:.1f}k vs {rec['torch_tokens_per_s'] / 1e3:.1f}k tok/s"
    return text + f"; check {_check_text(rec['check'])}"


def format_summary(report) -> str:
    rows = report["rows"]
    met = sum(r["all_targets_met"] for r in rows)
    failed = [f"{r['cell']} {r['shape']} ({r['check']['worst']})" for r in rows if not r["check"]["passed"]]
    failed += [f"{e['name']} ({e['check']['worst']})" for e in report["extras"].values()
               if "check" in e and not e["check"]["passed"]]
    text = f"targets met on {met}/{len(rows)} rows; all_targets_met: {str(report['all_targets_met']).lower()}"
    if any(r["noisy"] for r in rows):
        text = (f"* noisy: the upper quartile of a timing is over {NOISY:g}x its lower quartile "
                f"(quartiles in the JSON)\n" + text)
    if failed:
        text += f"\nCORRECTNESS CHECK FAILED (relative error > {TOLERANCE:g}): {', '.join(failed)}"
    return text


def write_json(report, path) -> None:
    """Write the report as JSON (NaN and infinity become null, so strict parsers accept it)."""
    def clean(v):
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(clean(report), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "worker":
    _worker_main(sys.argv[2], int(sys.argv[3]))
