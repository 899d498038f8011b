"""The FMA peak kernel computes what it claims (its speed is measured by `bptt bench`, never here)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from bptt import jit
from bptt.benchmark import machine
from bptt.kernels import peak

pytestmark = pytest.mark.jit   # the compiled FMA peak kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference(x0, a, b, reps):
    """reps times fma(x, a, b) in float32: the product of two float32 is exact in float64."""
    x = np.float64(x0)
    for _ in range(reps):
        x = np.float64(np.float32(x * np.float64(a) + np.float64(b)))
    return np.float32(x)


def test_blocks_fit_the_isa():
    assert peak.WIDTH == jit.vector_floats()
    assert peak.CHAINS == (24 if jit.ISA == "avx512" else 12)
    assert peak.LANES == peak.WIDTH * peak.CHAINS
    assert peak.new_blocks(3).shape == (3, peak.LANES) and peak.new_blocks(3).dtype == np.float32
    assert peak.gflops(2, 10 ** 9, 1.0) == pytest.approx(2 * peak.LANES * 2)


@pytest.mark.parametrize("threads", [1, 2])
def test_every_lane_of_every_block_is_a_chain_of_fmas(threads):
    before = jit.get_threads()
    try:
        jit.set_threads(min(threads, jit.max_threads()))
        P = jit.get_threads()
        out = np.linspace(0.25, 1.75, P * peak.LANES, dtype=np.float32).reshape(P, peak.LANES)
        start = out.copy()
        a, b = np.float32(0.999), np.float32(0.001)
        peak.fma_chains(out, a, b, np.int64(7))
        want = np.array([reference(x, a, b, 7) for x in start.ravel()]).reshape(start.shape)
        np.testing.assert_allclose(out, want, rtol=2e-7)
        peak.fma_chains(out, a, b, np.int64(0))   # no reps: nothing changes
        np.testing.assert_allclose(out, want, rtol=2e-7)
    finally:
        jit.set_threads(before)


def test_peak_is_reported_with_its_isa():
    before = jit.get_threads()
    try:
        jit.set_threads(1)
        got = machine.peaks()
    finally:
        jit.set_threads(before)
    assert got["isa"] == jit.ISA and got["vector_floats"] == peak.WIDTH and got["chains"] == peak.CHAINS
    assert got["peak"] > 0 and got["peak_1_thread"] == got["peak"]


def test_runs_as_plain_python_without_the_jit():
    code = ("import numpy as np; from bptt.kernels import peak; o = peak.new_blocks(2); "
            "peak.fma_chains(o, np.float32(0.5), np.float32(0.25), np.int64(3)); print(o.min(), o.max())")
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, NUMBA_DISABLE_JIT="1"), cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0.5625", "0.5625"]   # 1 -> 0.75 -> 0.625 -> 0.5625
