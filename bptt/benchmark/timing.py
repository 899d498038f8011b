"""Warm-up, timed steps, the alternating slices, their summary, and bptt's memory in a step.

Standard library only: :func:`bptt.benchmark.workers.plain_torch_times` loads this file by its
path in a process that must not import bptt (no ``from .. import`` here).
"""
import gc
import statistics
import time
import tracemalloc

ROUNDS = 4    # each framework's timing of a row is cut into this many alternating slices
SLICE_WARM = 0.02  # seconds of untimed steps at the start of a slice, for steps shorter than this
NOISY = 1.5  # a timing whose upper quartile exceeds its lower one by this factor is flagged


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


def slices(repeat: int, min_time: float) -> list:
    """How a framework's timing of one row is cut into ``ROUNDS`` slices: (repeat, min_time) each.

    The two frameworks' slices alternate (bptt, torch, torch, bptt, ...), so that a machine that
    drifts between fast and slow periods (virtual machines do) slows both alike, and the ratio of
    the medians compares the two under the same conditions. The slices' repeats add up to
    ``repeat`` exactly; their times to ``min_time``."""
    n = max(1, min(ROUNDS, repeat if min_time <= 0 else ROUNDS))
    return [(repeat // n + (i < repeat % n), min_time / n) for i in range(n)]


def summary(times) -> dict:
    """Median, min, quartiles (ms) and count of a list of step times in seconds."""
    ms = sorted(1e3 * t for t in times)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "q1_ms": q[0], "q3_ms": q[2],
            "n": len(ms)}


def is_noisy(s: dict) -> bool:
    """Whether a :func:`summary`'s upper quartile exceeds its lower one by more than ``NOISY``×."""
    return s["q3_ms"] > NOISY * s["q1_ms"]


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
