"""The machine a benchmark runs on: CPU, versions, the vector ISA of each framework, and the
float32 FMA peak that bptt's GFLOP/s are divided by.

ISA
    bptt compiles for one ISA per process (:data:`bptt.jit.ISA`: ``avx512``, ``avx2`` or
    ``generic``), the host's widest unless ``BPTT_ISA`` says otherwise. ``bptt bench --isa X``
    runs bptt's worker with ``BPTT_ISA=X`` and restricts torch's worker to the same vectors
    (:data:`TORCH_ISA_ENV`): ATen's kernels (``ATEN_CPU_CAPABILITY``), oneDNN's, which run
    torch's fused LSTM (``DNNL_MAX_CPU_ISA``), and MKL's, which run its other matrix products
    (``MKL_ENABLE_INSTRUCTIONS``; MKL heeds it on Intel CPUs only). An ISA the host cannot run
    is refused (:func:`check_isa`).

peak
    :func:`measure_peak` runs :func:`bptt.kernels.peak.fma_chains`, one block of CHAINS
    independent vector FMA chains per thread, in registers, for the ISA in use:

        peak GFLOP/s = 2 · WIDTH · CHAINS · threads · reps / seconds / 1e9

    (WIDTH float32 lanes per vector, 2 FLOP per lane and FMA). It is measured on all threads
    and on one; the one-thread figure also shows whether other processes were holding cores.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time

import numpy as np

from .. import jit

# settings that change how the thread pools or the vector code behave: reported, and passed on
# to the workers as they are (except those the benchmark sets itself)
ENV_VARS = ("BPTT_THREADS", "BPTT_ISA", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS",
            "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "OMP_PROC_BIND",
            "ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")

# What restricts torch to each of bptt's ISAs: ATen's CPU capability, oneDNN's and MKL's highest ISA.
TORCH_ISA_ENV = {
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "DNNL_MAX_CPU_ISA": "AVX512_CORE",
               "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "generic": {"ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "SSE41",
                "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}
UNTIMED_ISAS = ("generic",)  # for correctness: run, but no speed target applies


def check_isa(isa) -> str | None:
    """``isa`` if this host can run it (None stays None); ValueError in one line otherwise."""
    if isa is None:
        return None
    isa = str(isa).strip().lower()
    if isa not in jit.ISAS:
        raise ValueError(f"--isa must be one of {', '.join(jit.ISAS)}, got {isa!r}")
    host = jit.host_isa()
    if jit.ISAS.index(isa) < jit.ISAS.index(host):
        runnable = ", ".join(jit.ISAS[jit.ISAS.index(host):])
        raise ValueError(f"--isa {isa}: this CPU cannot run it (its widest is {host}); use {runnable}")
    return isa


def torch_isa_env(isa) -> dict:
    """The environment that restricts torch to ``isa`` (empty for None: torch picks its own)."""
    return dict(TORCH_ISA_ENV[isa]) if isa else {}


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
    from .. import __version__
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count()
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(), "llvm_cpu": llvm_cpu, "simd": simd, "host_isa": jit.host_isa(),
        "cores": cores, "threads": threads, "bptt_build": "serial" if threads == 1 else "parallel",
        "python": platform.python_version(), "bptt": __version__, "numpy": np.__version__,
        "numba": numba.__version__,
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "load_avg_1min": load_avg(),
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


def load_avg():
    """The 1-minute load average: other work on the machine distorts every timing."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover - not on Unix
        return None


def measure_peak(seconds: float = 0.5) -> float:
    """The float32 FMA peak in GFLOP/s on the current bptt thread count, for the ISA in use.

    :func:`bptt.kernels.peak.fma_chains` on one block per thread: first about ``seconds / 2`` of
    untimed runs, so that every core is awake and clocked up (idle virtual CPUs are slow to
    start), then the best of 3 runs of about ``seconds / 6`` each."""
    from ..kernels import peak
    P = jit.get_threads()
    out = peak.new_blocks(P)
    a, b = np.float32(0.999), np.float32(0.001)  # a fixed point at 1: values stay normal
    peak.fma_chains(out, a, b, np.int64(1))   # compiles or loads the build, outside the calibration
    reps = 10_000
    start = time.perf_counter()
    while True:  # warm up and calibrate: grow reps until one run takes about seconds / 6
        t0 = time.perf_counter()
        peak.fma_chains(out, a, b, np.int64(reps))
        dt = time.perf_counter() - t0
        if dt < seconds / 6 and reps < 10 ** 10:
            reps *= 2
        elif time.perf_counter() - start >= seconds / 2:
            break
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        peak.fma_chains(out, a, b, np.int64(reps))
        best = max(best, peak.gflops(P, reps, time.perf_counter() - t0))
    return best


def handoff_ns():
    """Nanoseconds for a cache line's round trip between two of bptt's threads
    (:func:`bptt.kernels.handoff.round_trip_ns`), or None on one thread: in a virtual machine's
    spells where it is several times its usual value, every kernel whose threads hand data to
    each other slows down."""
    from ..kernels.handoff import round_trip_ns
    v = round_trip_ns()
    return None if v is None else round(v, 1)


def peaks() -> dict:
    """The FMA peak on the bptt thread count and on one thread, with the ISA they were measured
    for: if the first is well below threads × the second, other processes hold some cores."""
    import numba
    from ..kernels import peak
    threads = jit.get_threads()
    reply = {"peak": measure_peak(), "isa": jit.ISA, "isa_source": jit.ISA_SOURCE,
             "vector_floats": peak.WIDTH, "chains": peak.CHAINS}
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
