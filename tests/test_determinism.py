"""Bit-for-bit determinism across thread counts *and* across processes (fresh compile vs. code
loaded from Numba's on-disk cache), which is what the fastmath choice in bptt.jit guarantees."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.jit   # Numba's builds and its on-disk cache

SCRIPT = textwrap.dedent("""
    import hashlib, json
    import numpy as np
    from bptt import jit, MLP
    from bptt.layers.recurrent import RNN, LSTM, GRU

    def run():
        h = hashlib.sha256()
        rng = np.random.default_rng(0)
        for trial in range(6):
            B, T, I, H = (int(v) for v in rng.integers(1, 23, 4))
            for dtype in (np.float32,):   # float64 runs the same loops, and doubled this test (6 min of CI)
                x = rng.standard_normal((B, T, I)).astype(dtype)
                mlp = MLP([I, H, 7], "gelu", dtype=dtype, seed=trial)
                y = mlp.forward(x.reshape(B * T, I))
                h.update(mlp.backward(np.cos(y)).tobytes())
                for g in mlp.grads.values():
                    h.update(g.tobytes())
                for cls in (RNN, LSTM, GRU):
                    layer = cls(I, H, num_layers=2, bidirectional=True, dtype=dtype, seed=trial)
                    out, _ = layer.forward(x)
                    h.update(out.tobytes())
                    h.update(layer.backward(np.sin(out)).tobytes())
                    for g in layer.grads.values():
                        h.update(g.tobytes())
        return h.hexdigest()

    res = {}
    for n in (1, 2):
        jit.set_threads(n)
        res[str(n)] = run()
    print(json.dumps(res))
""")


def test_bitwise_equal_across_threads_and_cache_states(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"), NUMBA_NUM_THREADS="2")
    env.pop("BPTT_THREADS", None)
    runs = []
    for _ in ("fresh compile", "loaded from cache"):
        p = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    assert any((tmp_path / "numba-cache").rglob("*.nbi")), "the second run did not use a disk cache"
    hashes = {h for r in runs for h in r.values()}
    assert len(hashes) == 1, runs
