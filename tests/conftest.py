import numpy as np
import pytest

from bptt import jit


def pytest_collection_modifyitems(config, items):
    """Under BPTT_KERNELS=reference, tests marked ``jit`` (speed, Numba builds, ISA families,
    the compiled float32 bits) are skipped: they are about the compiled kernels."""
    if jit.get_kernels() != "reference":
        return
    skip = pytest.mark.skip(reason="BPTT_KERNELS=reference: needs the compiled kernels")
    for item in items:
        if "jit" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def threads():
    """Run a block at a chosen thread count and restore the previous count afterwards."""
    before = jit.get_threads()
    yield jit.set_threads
    jit.set_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def rel_err(a, b):
    """max |a - b| / max |b|: the relative error used in every parity test."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))
