"""The child processes of a benchmark: one timing worker per framework, a plain torch process,
and the fresh processes that measure compile times.

Why worker processes: Numba's OpenMP pool and torch's use two separate copies of libgomp, and
each spins while waiting for work. In one process on a small machine the two pools steal the
cores from each other, which slowed a 1 ms torch step to 800 ms on the 2-core machine this was
written on. Each worker loads only its own framework's kernels, so each is timed as a user
would run it; ``in_process=True`` (``--in-process``) times both in the parent anyway, for
diagnosis.

- The **bptt worker** gets ``BPTT_THREADS`` and, with ``--isa``, ``BPTT_ISA``.
- The **torch worker** gets no ``BPTT_*`` setting (with ``BPTT_THREADS``, an older bptt started
  Numba's pool when imported, and torch's RNN step took 10× longer beside it), ``OMP_NUM_THREADS``
  and ``torch.set_num_threads``, and with ``--isa`` the settings that restrict torch to that ISA
  (:data:`bptt.benchmark.machine.TORCH_ISA_ENV`).
- The **plain torch process** (:func:`plain_torch_times`) imports numpy and torch only, never
  bptt: what a user's own torch script gets. The torch worker's time for the same step must be
  within 1.3× of it, or the row is flagged.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from .machine import handoff_ns, peaks, torch_isa_env, TORCH_ISA_ENV
from .problems import BenchError, build_bptt, build_torch, bptt_memory, require_torch
from .timing import SLICE_WARM, slices, timed_steps, warm_up

FRAMEWORKS = ("bptt", "torch")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))     # the folder that holds the bptt package
TORCH_ENV_DROP = ("BPTT_THREADS", "BPTT_ISA")     # the torch worker never runs a bptt kernel


def child_env(drop=(), **extra) -> dict:
    """This environment for a child process, without the variables in ``drop``, with ``extra``
    (values made strings), and with this bptt importable even when not installed."""
    path = os.environ.get("PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = ROOT + (os.pathsep + path if path else "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def worker_env(framework: str, threads: int, isa=None) -> dict:
    """The environment of ``framework``'s worker: see the module docstring."""
    if framework == "bptt":
        return child_env(BPTT_THREADS=threads, **({"BPTT_ISA": isa} if isa else {}))
    return child_env(drop=TORCH_ENV_DROP, OMP_NUM_THREADS=threads, **torch_isa_env(isa))


class _Worker:
    """A child process that times jobs for one framework: JSON lines in and out.

    Started as ``python -m bptt.benchmark worker FRAMEWORK THREADS``; the bptt worker never
    imports torch, the torch worker never launches a Numba kernel."""

    def __init__(self, framework: str, threads: int, tmpdir: str, isa=None):
        self.framework = framework
        self.log_path = os.path.join(tmpdir, f"{framework}-worker.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "bptt.benchmark", "worker", framework, str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env=worker_env(framework, threads, isa), text=True, bufsize=1)

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


def worker_main(framework: str, threads: int) -> None:
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


class _Job:
    """One job, set up in a worker and then timed in slices (see :func:`~.timing.slices`).

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
            self.info["memory"] = bptt_memory(job["spec"], data)  # also a warm-up step, on a fresh layer
            warmups += 1
        warm = warm_up(self.step, max(job["warmup"] - warmups, 0), 0.2 if job["min_time"] > 0 else 0.0)
        self.step_s = statistics.median(warm) if warm else SLICE_WARM

    def time(self, repeat: int, min_time: float) -> list:
        """Step times of one slice. The other framework ran since the last slice, so steps shorter
        than ``SLICE_WARM`` seconds first run untimed for that long, to refill the caches."""
        warm_up(self.step, 0, SLICE_WARM if self.step_s < SLICE_WARM else 0.0)
        return timed_steps(self.step, repeat, min_time)


_jobs = {}  # framework -> the _Job set up in this process


def _answer(framework: str, request: dict) -> dict:
    """What a worker answers: the FMA peaks and bptt's ISA, torch's version, threads and ISA, or a
    job's set-up, one slice of its timing, or its end."""
    what = request["what"]
    if what == "peak":
        return peaks()
    if what == "handoff":
        return {"handoff_ns": handoff_ns()}
    if what == "info":
        torch = require_torch()
        return {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "torch_isa_env": {k: os.environ.get(k) for k in TORCH_ISA_ENV["avx2"]}}
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


class _Timers:
    """Where jobs are timed: two workers, or this process (``in_process``)."""

    def __init__(self, threads: int, in_process: bool, tmpdir: str, isa=None):
        self.in_process = in_process
        self.tmpdir = tmpdir
        self.workers = {}
        if not in_process:
            self.workers = {fw: _Worker(fw, threads, tmpdir, isa) for fw in FRAMEWORKS}

    def call(self, framework: str, request: dict) -> dict:
        if self.in_process:
            return _answer(framework, request)
        return self.workers[framework].call(request)

    def _job(self, kind, spec, data, cfg, memory=False) -> dict:
        job = {"kind": kind, "spec": spec, "repeat": cfg.repeat, "warmup": cfg.warmup,
               "min_time": cfg.min_time, "memory": memory}
        if self.in_process:
            job["data"] = data
        else:
            path = os.path.join(self.tmpdir, "data.npz")
            np.savez(path, **data)
            job["data"] = path
        return job

    def time_alone(self, framework, kind, spec, data, cfg) -> list:
        """One framework's step times for a job, its slices run back to back (the other framework
        idle): set up, timed as in :meth:`time`, done."""
        self.call(framework, {"what": "setup", "job": self._job(kind, spec, data, cfg)})
        times = []
        for r, m in slices(cfg.repeat, cfg.min_time):
            times += self.call(framework, {"what": "slice", "repeat": r, "min_time": m})["times"]
        self.call(framework, {"what": "done"})
        return times

    def time(self, kind, spec, data, cfg, memory=False) -> dict:
        job = self._job(kind, spec, data, cfg, memory)
        # one framework after the other, never both at once (they would share the cores), in
        # alternating slices: bptt, torch, torch, bptt, bptt, torch, ...
        out = {fw: dict(self.call(fw, {"what": "setup", "job": job}), times=[], slices=[]) for fw in FRAMEWORKS}
        order = list(FRAMEWORKS)
        for r, m in slices(cfg.repeat, cfg.min_time):
            for fw in order:
                times = self.call(fw, {"what": "slice", "repeat": r, "min_time": m})["times"]
                out[fw]["times"] += times
                out[fw]["slices"].append(times)
            order.reverse()
        for fw in FRAMEWORKS:
            self.call(fw, {"what": "done"})
        return out

    def close(self):
        for w in self.workers.values():
            w.close()


# -- torch alone, in a plain process ----------------------------------------------------------

# Loads torch_steps.py and timing.py by path (importing bptt.benchmark would import bptt), then
# times the step as a torch worker does, in one slice.
_PLAIN_SCRIPT = r"""
import importlib.util, json, os, sys
here, request = sys.argv[1], json.loads(sys.argv[2])

def load(name):
    spec = importlib.util.spec_from_file_location("_bptt_bench_" + name, os.path.join(here, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

steps, timing = load("torch_steps"), load("timing")
import numpy as np
import torch
torch.set_num_threads(request["threads"])
with np.load(request["data"]) as z:
    data = {k: z[k] for k in z.files}
step, _ = steps.build_torch(request["kind"], request["spec"], data)
step()
timing.warm_up(step, max(request["warmup"] - 1, 0), 0.2 if request["min_time"] > 0 else 0.0)
times = timing.timed_steps(step, request["repeat"], request["min_time"])
print(json.dumps({"times": times, "torch_threads": torch.get_num_threads(),
                  "imported": sorted(m for m in ("bptt", "numba") if m in sys.modules)}))
"""


def plain_env(threads: int, isa=None) -> dict:
    """The plain torch process's environment: the torch worker's, without bptt on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in TORCH_ENV_DROP}
    env.update(OMP_NUM_THREADS=str(threads), **torch_isa_env(isa))
    return env


def plain_torch_times(kind: str, spec: dict, data: dict, threads: int, *, isa=None, repeat: int = 3,
                      min_time: float = 1.0, warmup: int = 1, timeout: float = 600.0) -> dict:
    """torch's step times for a job, in a fresh process that imports numpy and torch only.

    The yardstick for the torch worker: the same step, threads and ISA settings, with nothing of
    bptt loaded. Returns {"times": [s, ...], "torch_threads", "imported"} (``imported`` lists
    which of bptt and numba the process had loaded: none)."""
    with tempfile.TemporaryDirectory(prefix="bptt-bench-plain-") as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(path, **data)
        request = {"kind": kind, "spec": spec, "data": path, "threads": threads, "repeat": repeat,
                   "min_time": min_time, "warmup": warmup}
        proc = subprocess.run([sys.executable, "-c", _PLAIN_SCRIPT, HERE, json.dumps(request)],
                              env=plain_env(threads, isa), capture_output=True, text=True,
                              timeout=timeout, cwd=tmp)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"the plain torch process failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- compile times ----------------------------------------------------------------------------

# Run in a fresh interpreter: the time to import bptt, then to run the first float32 training
# step (forward and backward) of every cell at the ``char`` shape, which is where the kernels a
# training run needs are compiled (cold cache) or loaded from the cache (warm). The shape matters:
# below ``bptt.jit.SERIAL_WORK`` a layer runs the serial builds, and below ``SPLIT_B`` sequences
# the whole-batch passes, so a tiny step would time other (and fewer) kernels than training runs.
_COMPILE_SCRIPT = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
import bptt
t1 = time.perf_counter()
B, T, I, H = 50, 50, 65, 128
x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
for Cell in (bptt.RNN, bptt.GRU, bptt.LSTM):
    layer = Cell(I, H, dtype=np.float32, seed=0)
    out, _ = layer.forward(x)
    layer.backward(np.ones_like(out))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_step_s": t2 - t1, "isa": bptt.jit.ISA}))
"""


def compile_env(threads: int, cache: str, isa=None) -> dict:
    """The compile-time process's environment: a private cache, ``threads``, and ``BPTT_ISA``
    (``isa``, or as inherited), so that it compiles for the ISA being benchmarked."""
    extra = {"NUMBA_CACHE_DIR": cache, "BPTT_CACHE": "1", "BPTT_THREADS": threads}
    if isa:
        extra["BPTT_ISA"] = isa
    return child_env(**extra)


def compile_times(threads: int, isa=None, timeout: float = 1800.0) -> dict:
    """Cold (empty cache: compilation) and warm (from the on-disk cache) first-step times.

    Both runs use a private temporary NUMBA_CACHE_DIR, so the user's cache is neither used nor
    touched. Each run is a fresh process; the times are measured inside it."""
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bptt-bench-cache-") as cache:
        env = compile_env(threads, cache, isa)
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
            "isa": runs["cold"]["isa"],
            "what": "first float32 training step of rnn, gru and lstm at the char shape (B=50, T=50, I=65, H=128) in a fresh process",
            "cold_s": runs["cold"]["first_step_s"], "warm_s": runs["warm"]["first_step_s"],
            "import_s": runs["warm"]["import_s"], "runs": runs}
