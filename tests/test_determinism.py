"""Bit-for-bit determinism across processes: the parallel builds compiled fresh and the same builds
loaded from Numba's on-disk cache give the same bits (what the fastmath choice in bptt.jit
guarantees, cf. numba#10617), and a job set's launchers loaded from the cache find their bodies.
The serial and parallel builds' bits at one and two threads are compared in process, per layer
(tests/test_recurrent.py, test_dense.py, test_kernels_vs_reference.py): here one cold compile of
the parallel builds is the cost, the largest in the suite, so it is paid once."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from bptt import jit

pytestmark = pytest.mark.jit   # Numba's builds and its on-disk cache

SCRIPT = textwrap.dedent("""
    import hashlib, json
    import numpy as np
    from bptt import jit, MLP
    import bptt.layers.recurrent as rec
    from bptt.layers.recurrent import RNN, LSTM, GRU
    from bptt.kernels import lstm

    rec.SERIAL_WORK = 0   # the parallel builds run even for these small layers
    h = hashlib.sha256()
    rng = np.random.default_rng(0)
    # random small shapes, and 40 sequences: the sweeps' batch-half path (SPLIT_B)
    shapes = [tuple(int(v) for v in rng.integers(1, 23, 4)) for _ in range(5)] + [(40, 4, 5, 24)]
    for trial, (B, T, I, H) in enumerate(shapes):
        x = rng.standard_normal((B, T, I)).astype(np.float32)
        mlp = MLP([I, H, 7], "gelu", dtype=np.float32, seed=trial)
        y = mlp.forward(x.reshape(B * T, I))
        h.update(mlp.backward(np.cos(y)).tobytes())
        for g in mlp.grads.values():
            h.update(g.tobytes())
        for cls in (RNN, LSTM, GRU):
            layer = cls(I, H, num_layers=2, bidirectional=True, dtype=np.float32, seed=trial)
            out, _ = layer.forward(x)
            h.update(out.tobytes())
            h.update(layer.backward(np.sin(out)).tobytes())
            for g in layer.grads.values():
                h.update(g.tobytes())
    st = lstm._lstm_forward_rows_fused.parallel_build.stats   # a job set's parallel launcher
    print(json.dumps({"bits": h.hexdigest(), "pool": jit.pool_started(), "threads": jit.get_threads(),
                      "launcher_hits": sum(st.cache_hits.values()),
                      "launcher_misses": sum(st.cache_misses.values())}))
""")


@pytest.mark.skipif(not jit.CACHE or jit.max_threads() < 2, reason="needs the cache and two threads")
def test_parallel_builds_loaded_from_the_cache_give_the_bits_of_a_fresh_compile(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"), BPTT_CACHE="1", BPTT_THREADS="2")
    runs = []
    for _ in ("fresh compile", "loaded from cache"):
        p = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert cold["pool"] and cold["threads"] == 2, cold   # the parallel builds ran
    assert cold["launcher_misses"] >= 1 and cold["launcher_hits"] == 0, cold
    assert warm["launcher_hits"] >= 1 and warm["launcher_misses"] == 0, warm
    assert any((tmp_path / "numba-cache").rglob("*.nbi")), "the second run did not use a disk cache"
    assert cold["bits"] == warm["bits"], runs


COUNTS = textwrap.dedent("""
    import json
    from bptt.kernels import engine
    print(json.dumps({"chunks": engine.CHUNKS, "sweep_chunks": engine.sweep_chunks(40),
                      "block_jobs": engine.block_jobs(1500, 700)}))
""")


@pytest.mark.skipif(not jit.CACHE, reason="needs the cache")
def test_a_cache_filled_with_other_core_counts_gives_this_count_s_jobs(tmp_path):
    """The kernels hold the cores Numba may use (engine.CHUNKS) as a constant, and Python counts
    the jobs with compiled helpers (engine.sweep_chunks, block_jobs). A cache filled by a process
    with NUMBA_NUM_THREADS=2 and read by one with 1, 3 (or the reverse) handed the second the first one's
    counts, so that Python launched jobs for one count and the bodies cut the rows for the other:
    rows left out, or rows past the batch written (a corrupted heap). Each count must get its own
    (jit._sources_hash names the cache files by it)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"), BPTT_CACHE="1")
    env.pop("BPTT_THREADS", None)
    got = {}
    for n in (2, 1, 3, 2):
        p = subprocess.run([sys.executable, "-c", COUNTS], env=dict(env, NUMBA_NUM_THREADS=str(n)),
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        got[n] = json.loads(p.stdout.strip().splitlines()[-1])
    for n, r in got.items():
        assert r["chunks"] == n, got
        assert r["sweep_chunks"] == min(n, 40), got   # one chunk of rows per core
        assert r["block_jobs"] % n == 0, got          # a whole number of jobs per core


def _save_entries(args):
    """One process's saves into a shared Numba cache index: key (worker, i) -> its own payload."""
    from numba.core import caching
    path, worker, n = args
    index = caching.IndexDataCacheFile(path, "race", "stamp")
    for i in range(n):
        index.save((worker, i), ("payload", worker, i))


def test_processes_filling_one_numba_cache_keep_every_entry(tmp_path):
    """Numba picks a cache entry's file name from the index it read: two processes saving at once
    both took ``1.nbc``, and the index then named one signature beside the other's machine code
    (a float32 product that called float64 symbols: an LLVM abort). bptt.jit locks each save and
    load; four processes saving 25 entries each at once must find every entry as it was saved
    (without the lock about three quarters were wrong or missing)."""
    import multiprocessing

    from numba.core import caching
    pytest.importorskip("fcntl")   # the lock's module (not on Windows)
    assert getattr(caching.IndexDataCacheFile, "_bptt_locked", False)
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs fork: the saves must start together, in processes that imported bptt.jit")
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_save_entries, [(str(tmp_path), w, 25) for w in range(4)])
    index = caching.IndexDataCacheFile(str(tmp_path), "race", "stamp")
    wrong = [(w, i) for w in range(4) for i in range(25) if index.load((w, i)) != ("payload", w, i)]
    assert not wrong, f"{len(wrong)} of 100 entries wrong or missing"


INLINED = textwrap.dedent("""
    import numpy as np
    from bptt import jit
    from bptt.kernels import dense
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 70)).astype(np.float32)
    W = rng.standard_normal((300, 70)).astype(np.float32)
    dense.dense_forward(np.empty((37, 300), np.float32), x, W, np.zeros(300, np.float32))
    (sig, cres), = dense._forward_blocks.body.overloads.items()
    print(jit.FAST_INLINE_COPY)
    print(cres.library.get_llvm_str())
""")


@pytest.mark.skipif(not jit.FAST_INLINE_COPY, reason="this Numba's inliner is not the one bptt.jit speeds up")
def test_the_faster_inliner_compiles_the_llvm_ir_of_numbas_own():
    """bptt.jit replaces the block-by-block deep copy in Numba's IR inliner by one copy
    (_fast_inline_copy: the copies took half of a cold compile). A dense forward job, whose body
    inlines the panel packing, the block product and its loops over tiles, compiled fresh in two processes,
    with that inliner and with Numba's own (BPTT_NUMBA_INLINER=numba): the same LLVM IR, line
    for line, apart from the order of reference-count operations."""
    got = {}
    for inliner in ("bptt", "numba"):
        env = dict(os.environ, BPTT_CACHE="0", BPTT_THREADS="1", BPTT_NUMBA_INLINER=inliner)
        p = subprocess.run([sys.executable, "-c", INLINED], env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        fast, llvm = p.stdout.split("\n", 1)
        assert fast == str(inliner == "bptt"), (inliner, fast)   # the switch took effect
        got[inliner] = llvm.splitlines()
    mine, numbas = got["bptt"], got["numba"]
    assert len(mine) > 1000 and any("fma" in line for line in mine)   # the body, its helpers inlined
    assert sorted(mine) == sorted(numbas)
    assert [s for s in mine if "NRT_" not in s] == [s for s in numbas if "NRT_" not in s]
