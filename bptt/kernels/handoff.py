"""How long two threads take to hand a cache line back and forth: ``bptt bench`` reports it.

Two jobs on two threads take turns on one flag: job 0 waits for an even count and writes the
next odd one, job 1 waits for an odd count and writes the next even one, ``n`` times each. Each
turn moves the flag's cache line from one core to the other and back, so

    round trip = seconds / n

On a virtual machine it is not a constant. On the 2-core Zen 4 this project is measured on it
read 60 ns in most minutes and 310-340 ns in others (2026-12-04), and in those minutes every
kernel whose threads hand data to each other (the small-batch pipelines, the passes between an
MLP's products) ran slower, while each core alone did not (a guess at the cause: the host
running the two virtual CPUs on different core complexes, with no L3 in common). The bench
measures it with every row, so that such a spell can be seen in a run's numbers rather than
guessed.

The two jobs must run at once: :func:`round_trip_ns` returns None when they would run one after
the other (one thread), and each wait gives up after ``SPINS`` turns of its loop, so that a job
left alone cannot spin for ever (the result is then None too).
"""
import time

import numpy as np

from .. import jit
from ..jit import atomic_load, atomic_store, jobs, spin_pause
from .engine import aligned_empty

SPINS = 1 << 26   # turns of one wait before a job gives up (seconds on any CPU)
LINE = 16         # int64s between the flag and the give-up marker: a cache line each


@jobs
def _ping_pong(j, njobs, flags, n):
    """Job j of :func:`round_trips`: n turns on flags[0]; flags[LINE] set if a wait gave up."""
    for s in range(n):
        want = 2 * s + j
        spins = 0
        while atomic_load(flags, 0) != want:
            if atomic_load(flags, LINE) != 0:
                return
            spins += 1
            if spins >= SPINS:
                atomic_store(flags, LINE, 1)
                return
            spin_pause()
        atomic_store(flags, 0, want + 1)


def round_trips(n: int) -> float | None:
    """Seconds for ``n`` round trips of a cache line between two threads, or None if the jobs
    cannot run side by side (fewer than two threads) or a wait gave up."""
    if n < 1 or jit.running_threads() < 2:
        return None
    flags = aligned_empty((2 * LINE,), np.int64)   # the flag alone on its cache line
    flags.fill(0)
    t0 = time.perf_counter()
    _ping_pong(2, flags, np.int64(n))
    seconds = time.perf_counter() - t0
    if flags[LINE] != 0:
        return None
    return seconds


def round_trip_ns(n: int = 2000, tries: int = 3) -> float | None:
    """The quickest of ``tries`` measurements, in nanoseconds per round trip (a launch of the
    two jobs, a few microseconds, is spread over the ``n`` turns), or None (see
    :func:`round_trips`)."""
    round_trips(16)   # compiles or loads the job set, and wakes the other thread
    best = None
    for _ in range(tries):
        s = round_trips(n)
        if s is None:
            return None
        best = s if best is None else min(best, s)
    return best / n * 1e9
