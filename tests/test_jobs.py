"""Job sets (bptt.jit.jobs): bodies compiled once and called by symbol from a serial and a
parallel launcher. The risky part is the on-disk cache: a launcher loaded from it must find its
body's symbol registered, and give the bits a fresh compile gave (tested with the layers' parallel
builds in tests/test_determinism.py, one cold compile for both)."""
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from bptt import jit

pytestmark = pytest.mark.jit

_SAME_NAME = """
import numpy as np
from bptt import jit

@jit.jobs
def _same(j, njobs, out):
    out[j] = {value}
"""

_USE = """
import sys, numpy as np
sys.path.insert(0, {path!r})
import {module} as m
out = np.zeros(4)
m._same(4, out)
print(out[0])
"""


@pytest.mark.skipif(not jit.CACHE or jit.max_threads() < 2, reason="needs the cache and two threads")
def test_job_sets_of_one_name_in_two_modules_keep_their_own_launchers(tmp_path):
    # the launchers' cache files are named by module and name: with the name alone, the second
    # module loaded the first one's launcher, which called a body symbol nobody had registered
    for module, value in (("mod_a", 1.0), ("mod_b", 2.0)):
        (tmp_path / f"{module}.py").write_text(_SAME_NAME.format(value=value))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), BPTT_CACHE="1", BPTT_THREADS="2")
    for module, value in (("mod_a", 1.0), ("mod_b", 2.0), ("mod_a", 1.0)):
        r = subprocess.run([sys.executable, "-c", _USE.format(path=str(tmp_path), module=module)], env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert float(r.stdout.strip().splitlines()[-1]) == value


_KERNEL_BEFORE_ENGINE = """
import numpy as np
from bptt.optim import make_optimizer   # kernels.optim does not import the engine
p = {"w": np.ones((4, 3), np.float32)}
make_optimizer("adam", p, 0.1).step({"w": np.ones((4, 3), np.float32)})
import bptt.layers  # noqa: F401  (the engine, imported after a dtype was prepared)
print("ok")
"""


@pytest.mark.skipif(not jit.CACHE, reason="needs the cache: a warm one hides the fault")
def test_a_kernel_run_before_the_engine_is_imported_leaves_it_importable(tmp_path):
    """A kernel of a module that does not import the engine (an optimiser's update) prepares a
    dtype first; importing the engine after it used to run its first-use hooks at once, halfway
    through the module (on a cold cache: NameError on a helper defined further down, then an
    AssertionError from Numba). jit._prepare imports the engine before the first dtype."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), BPTT_CACHE="1")
    r = subprocess.run([sys.executable, "-c", _KERNEL_BEFORE_ENGINE], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "ok", r.stderr[-3000:]


def test_a_job_set_runs_every_job_once_in_both_builds(threads):
    seen = np.zeros(37, np.int64)

    @jit.jobs
    def mark(j, n, out):
        out[j] += j + 1

    threads(1)
    mark(37, seen)
    threads(2)
    mark(37, seen)
    with jit.serial_when(True):
        mark(37, seen)
    np.testing.assert_array_equal(seen, 3 * np.arange(1, 38))


@jit.jobs(slots=True)
def _record_slots(j, njobs, slot, out):
    out[j, 0] = slot
    out[j, 1] = numba.get_thread_id()


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
def test_a_job_set_with_slots_gives_each_thread_its_own(threads):
    # in a call, all the jobs one thread runs have one slot, and no other thread's jobs have it
    # (so a buffer per slot is never written by two threads at once); run in order, every job
    # is slot 0's
    out = np.full((20, 2), -1, np.int64)
    threads(1)
    _record_slots(20, out)
    assert (out[:, 0] == 0).all()
    threads(2)
    for _ in range(50):
        out[:] = -1
        _record_slots(20, out)
        assert (out >= 0).all() and set(out[:, 0]) <= {0, 1}
        pairs = set(map(tuple, out))
        assert len({s for s, _ in pairs}) == len(pairs) == len({t for _, t in pairs}), pairs


@jit.jobs
def _one_slow_job(j, njobs, done, seq):
    """Job 0 waits (up to 200 million spins, a few seconds) until every other job has finished;
    each job then records how many had finished before it."""
    if j == 0:
        spins = 0
        while jit.atomic_load(done, 0) < njobs - 1 and spins < 200_000_000:
            jit.spin_pause()
            spins += 1
    seq[j] = jit.atomic_add(done, 0, 1)


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
def test_a_thread_done_with_its_jobs_takes_the_others_unclaimed_ones(threads):
    # two threads, 8 jobs: jobs 0-3 are the first thread's range, and job 0 holds it up. A static
    # split left jobs 1-3 waiting behind job 0 (job 0 then gave up waiting and finished first of
    # its range); the other thread, done with 4-7, now takes 3, 2 and 1, and job 0 ends last
    threads(2)
    done = np.zeros(1, np.int64)
    seq = np.full(8, -1, np.int64)
    _one_slow_job(8, done, seq)
    assert sorted(seq) == list(range(8))   # every job ran once
    assert seq[0] == 7


@jit.jobs(concurrent=True)
def _two_jobs(j, njobs, out):
    out[j] += 1.0


def _fresh_pipeline(monkeypatch, side_by_side):
    """_two_jobs as a pipeline that has just compiled both ways and timed nothing yet."""
    for k, v in {"_side_by_side": side_by_side, "_calls": 0, "_interval": 32, "_probe_left": 0,
                 "_runs": {True: 3, False: 3}, "_seconds": {True: None, False: None}}.items():
        monkeypatch.setattr(_two_jobs, k, v)


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
def test_a_pipeline_runs_its_jobs_in_order_where_side_by_side_is_slower(threads, monkeypatch):
    # beside busy processes a pipeline's jobs can wait a time slice for each other: a pipeline
    # times its calls and runs its jobs one after the other when that was faster
    threads(2)
    out = np.zeros(2)
    real = _two_jobs.parallel_build
    ways = []

    def slow_side_by_side(*args):
        import time
        time.sleep(0.002)
        ways.append("side by side")
        real(*args)

    monkeypatch.setattr(_two_jobs, "parallel_build", slow_side_by_side)
    monkeypatch.setattr(_two_jobs, "_side_by_side", True)
    for _ in range(200):
        _two_jobs(2, out)
    assert _two_jobs._side_by_side is False
    assert 0 < len(ways) < 60            # tried again now and then, not on every call
    assert out[0] == out[1] == 200       # every job ran once per call, either way


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
def test_a_pipeline_in_order_goes_back_side_by_side_despite_a_slow_first_call(threads, monkeypatch):
    # run in order for a while, the thread pool sleeps, and the first call side by side pays for
    # waking it: a try of the other way is several calls, the first one not timed
    threads(2)
    out = np.zeros(2)
    real_ser = _two_jobs.serial_build
    last = []

    # the work itself in order, the times from sleeps alone: a real parallel launch can wait a
    # time slice on a busy machine (pytest -n), which is not what this test is about
    def side_by_side(*args):
        import time
        time.sleep(0.05 if last and last[-1] == "in order" else 0.001)   # waking the pool, or not
        last.append("side by side")
        real_ser(*args)

    def in_order(*args):
        import time
        time.sleep(0.01)              # slower than side by side, once awake
        last.append("in order")
        real_ser(*args)

    monkeypatch.setattr(_two_jobs, "parallel_build", side_by_side)
    monkeypatch.setattr(_two_jobs, "serial_build", in_order)
    _fresh_pipeline(monkeypatch, side_by_side=False)
    for _ in range(100):
        _two_jobs(2, out)
    assert _two_jobs._side_by_side is True
    assert last[-10:] == ["side by side"] * 10
    assert out[0] == out[1] == 100


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
def test_a_pipeline_side_by_side_stays_so_through_a_few_slow_calls(threads, monkeypatch):
    # a virtual machine slows a call now and then: a few such calls must not send a pipeline in
    # order when in order is slower (a running average of the calls once did)
    threads(2)
    out = np.zeros(2)
    real_ser = _two_jobs.serial_build
    calls = []

    def side_by_side(*args):
        import time
        calls.append("side by side")
        time.sleep(0.03 if len(calls) % 10 == 5 else 0.002)   # every tenth call slowed
        real_ser(*args)

    def in_order(*args):
        import time
        calls.append("in order")
        time.sleep(0.003)
        real_ser(*args)

    monkeypatch.setattr(_two_jobs, "parallel_build", side_by_side)
    monkeypatch.setattr(_two_jobs, "serial_build", in_order)
    _fresh_pipeline(monkeypatch, side_by_side=True)
    for _ in range(150):
        _two_jobs(2, out)
    assert _two_jobs._side_by_side is True
    assert "in order" in calls            # it did try the other way
    assert out[0] == out[1] == 150


def _pipeline_after(monkeypatch, side_s, order_s, side_by_side, n=100):
    """The ways _two_jobs ran in n calls, each way's time set by a sleep (the work itself in
    order), from a fresh pipeline that runs side by side or in order."""
    real_ser = _two_jobs.serial_build
    out, calls = np.zeros(2), []

    def way(name, seconds):
        def run(*args):
            import time
            calls.append(name)
            time.sleep(seconds)
            real_ser(*args)
        return run

    monkeypatch.setattr(_two_jobs, "parallel_build", way("side by side", side_s))
    monkeypatch.setattr(_two_jobs, "serial_build", way("in order", order_s))
    _fresh_pipeline(monkeypatch, side_by_side)
    for _ in range(n):
        _two_jobs(2, out)
    assert out[0] == out[1] == n      # every job ran once per call, either way
    return calls


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
def test_a_pipeline_goes_back_side_by_side_when_that_is_a_little_faster(threads, monkeypatch):
    # sent in order by a slow spell, a pipeline must come back once side by side is faster again,
    # even by less than the margin that sends it in order (the LSTM teach forward: 0.80-0.84)
    threads(2)
    calls = _pipeline_after(monkeypatch, 0.0087, 0.010, side_by_side=False)   # side by side at 0.87
    assert _two_jobs._side_by_side is True
    assert calls[-10:] == ["side by side"] * 10


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
def test_a_pipeline_side_by_side_stays_so_when_in_order_is_only_a_little_faster(threads, monkeypatch):
    # the other margin: in order must be clearly faster to be taken, so the two ways never alternate
    threads(2)
    calls = _pipeline_after(monkeypatch, 0.010, 0.0087, side_by_side=True)    # in order at 0.87
    assert _two_jobs._side_by_side is True
    assert "in order" in calls            # it did try the other way


def test_the_sweeps_split_by_units_past_the_cores_share_of_the_l3():
    """rnn.wide_always: past a quarter of the L3, but never past 4 MB a core, a large W_hh splits
    the sweeps by units for every batch. A 2-core VM on a Zen 4 (L3 32 MB) and on an Intel Xeon
    that reports its socket's 300 MB get the same 8 MB bound; a 16-core desktop with 64 MB, 16 MB;
    and a small L3 keeps its quarter."""
    from bptt.kernels import rnn
    MB = 1 << 20
    assert rnn.wide_always(32 * MB, 2) == 8 * MB
    assert rnn.wide_always(300 * MB, 2) == 8 * MB
    assert rnn.wide_always(64 * MB, 16) == 16 * MB
    assert rnn.wide_always(8 * MB, 4) == 2 * MB
    assert rnn.WIDE_ALWAYS == rnn.wide_always(jit.L3_BYTES, jit.max_threads())


def test_a_sweep_runs_one_chunk_per_thread_it_runs_on(monkeypatch):
    """engine.sweep_chunks: as many chunks as the threads the sweep's job set will run on
    (jit.running_threads: one on one thread, under a layer's serial_when, or in a composite's
    .serial), at most B; chunk_rows cuts the rows from the count the jobs were launched with,
    every row once, no chunk empty, and on two threads the chunks are the batch halves of the
    passes around the sweep (rnn.batch_half)."""
    from bptt.kernels import engine, rnn
    old = jit.get_threads()
    try:
        jit.set_threads(1)
        assert jit.running_threads() == 1 and engine.sweep_chunks(50) == 1
        if jit.max_threads() >= 2:
            jit.set_threads(2)
            assert jit.running_threads() == 2 and engine.sweep_chunks(50) == 2
            with jit.serial_when(True):
                assert jit.running_threads() == 1 and engine.sweep_chunks(50) == 1
    finally:
        jit.set_threads(old)
    for n in range(1, 9):
        monkeypatch.setattr(jit, "running_threads", lambda n=n: n)
        for B in range(1, 80):
            nch = engine.sweep_chunks(B)
            assert 1 <= nch <= min(n, B)
            rows = [engine.chunk_rows(ch, nch, B) for ch in range(nch)]
            assert rows[0][0] == 0 and rows[-1][1] == B and all(r0 < r1 for r0, r1 in rows), (n, B, rows)
            assert all(rows[i][1] == rows[i + 1][0] for i in range(nch - 1)), (n, B, rows)
            if n == 2 and B >= 2:
                assert rows == [rnn.batch_half(B, 2, 0), rnn.batch_half(B, 2, 1)], (B, rows)
