"""The ISA families give the same bits: every layer, cell and a char-LM training step computed
under ``BPTT_ISA=avx2`` and ``generic`` (and ``avx512`` where the CPU has it) equals the native
path's results bitwise (``tests/isa_probe.py``), and the ISA choice itself behaves."""
import os
import subprocess
import sys

import numpy as np
import pytest

from bptt import jit

pytestmark = pytest.mark.jit   # the ISA families of the compiled kernels

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _env(**extra):
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture(scope="module")
def native():
    sys.path.insert(0, HERE)
    try:
        import isa_probe
    finally:
        sys.path.remove(HERE)
    return isa_probe.compute()


OTHER = [isa for isa in jit.ISAS if isa != jit.ISA and jit.ISAS.index(isa) >= jit.ISAS.index(jit.host_isa())]


def _assert_probe_gives_native_bits(setting, isa, native, path):
    """Run the ISA probe with BPTT_ISA=setting (one thread: the serial builds only; the parallel
    ones give the same bits, tests/test_determinism.py) and compare every array with ``native``."""
    proc = subprocess.run([sys.executable, os.path.join(HERE, "isa_probe.py"), str(path)],
                          env=_env(BPTT_ISA=setting, BPTT_THREADS="1"), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    other = dict(np.load(path))
    assert str(other.pop("isa")) == isa
    mine = {k: v for k, v in native.items() if k != "isa"}
    assert sorted(other) == sorted(mine)
    differ = [k for k in mine if not np.array_equal(mine[k], other[k])]
    assert not differ, f"{setting} differs from {jit.ISA} in {differ[:5]}"


@pytest.mark.parametrize("isa", OTHER)
def test_every_isa_family_gives_the_native_bits(isa, native, tmp_path):
    _assert_probe_gives_native_bits(isa, isa, native, tmp_path / f"{isa}.npz")


WIDER = [isa for isa in jit.ISAS if jit.ISAS.index(isa) < jit.ISAS.index(jit.host_isa())]


@pytest.mark.parametrize("isa", WIDER)
def test_a_wider_family_on_this_cpu_gives_the_native_bits(isa, native, tmp_path):
    # BPTT_ISA=avx512@host: the avx512 family's kernels (blocks 8 x 32 and 4 x 32, panels of 32,
    # its loop orders) compiled for this CPU's own vectors, so that a machine without AVX-512 still checks
    # that family's code bit for bit (its instructions themselves are LLVM's)
    _assert_probe_gives_native_bits(f"{isa}@host", isa, native, tmp_path / f"{isa}_at_host.npz")


def test_a_family_at_host_is_refused_by_bench():
    pytest.importorskip("torch")   # bench needs torch before it looks at the ISA
    proc = subprocess.run([sys.executable, "-m", "bptt", "bench", "--quick"], env=_env(BPTT_ISA="avx512@host"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "@host" in proc.stderr.strip().splitlines()[-1]


def test_the_probe_compares_something(native):
    # a probe that computed nothing would make the comparison above vacuous
    assert len(native) > 60
    assert all(np.all(np.isfinite(v)) for k, v in native.items() if k != "isa")
    assert np.any(native["lstm_dweight_hh_l1_reverse_float32"] != 0)


def test_an_isa_the_cpu_lacks_is_one_clear_line():
    wider = [isa for isa in jit.ISAS if jit.ISAS.index(isa) < jit.ISAS.index(jit.host_isa())]
    bad = wider[0] if wider else "avx1024"
    # import bptt is lazy: the ISA is checked when the package's machinery is first used
    proc = subprocess.run([sys.executable, "-c", "import bptt; bptt.Dense"], env=_env(BPTT_ISA=bad),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "BPTT_ISA" in proc.stderr.strip().splitlines()[-1]


def test_host_isa_from_features():
    assert jit.host_isa({"avx512f": True, "avx512bw": True, "avx512dq": True, "avx512vl": True,
                         "avx2": True, "fma": True}) == "avx512"
    assert jit.host_isa({"avx512f": False, "avx2": True, "fma": True}) == "avx2"
    assert jit.host_isa({"avx2": True, "fma": False}) == "generic"
    assert jit.host_isa({"neon": True}) == "generic"
    feats = jit._target_features("avx2", {"avx512f": True, "avx2": True, "fma": True})
    assert "-avx512f" in feats and "+avx2" in feats and "+fma" in feats
    feats = jit._target_features("generic", {"avx512f": True, "avx2": True, "fma": True})
    assert "-avx2" in feats and "+prefer-128-bit" in feats
    feats = jit._target_features("avx512", {"avx512f": True, "avx2": True, "fma": True, "prefer-256-bit": True})
    assert "-prefer-256-bit" in feats.split(",") and "+avx512f" in feats.split(",")


@pytest.mark.skipif(jit.host_isa() != "avx512", reason="needs an AVX-512 host")
def test_elementwise_loops_use_512_bit_vectors_on_an_avx512_host():
    """LLVM prefers 256-bit vectors on Intel's server cores; bptt's target turns that off, so an
    elementwise loop (σ over the rows of an array) compiles to zmm operations. The host's own
    ISA (whatever BPTT_ISA this process runs under), and fresh compiles (BPTT_CACHE=0): Numba
    shows no assembly for code loaded from its cache."""
    code = ("import numpy as np, re, numba; from bptt.kernels import activations as A; "
            "q = np.linspace(-3, 3, 64 * 40, dtype=np.float32).reshape(64, 40); y = np.empty_like(q); "
            "A.activation_forward(y, q, A.SIGMOID); "
            "asm = '\\n'.join(A._activation_rows.body.inspect_asm(s) for s in A._activation_rows.body.signatures); "
            "print(len(re.findall(r'vdivps[^\\n]*%zmm', asm)), len(re.findall(r'vdivps[^\\n]*%ymm', asm)), "
            "'-prefer-256-bit' in (numba.config.CPU_FEATURES or '').split(','))")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(BPTT_CACHE="0", BPTT_THREADS="1", BPTT_ISA="native"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    zmm, ymm, off = proc.stdout.split()
    assert off == "True"
    assert int(zmm) > 0 and int(ymm) == 0, proc.stdout


def test_importing_bptt_starts_no_thread_pool():
    code = ("import bptt, bptt.jit as j; import numpy as np; "
            "assert not j.pool_started(), 'started at import'; "
            "bptt.Dense(3, 4, seed=0, dtype=np.float32).forward(np.ones((2, 3), np.float32)); "
            "print(j.get_threads())")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(BPTT_THREADS="2"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


_HOT_LOOP = r'''
import re
import bptt.jit as jit
from bptt.kernels import microcall
kept = {}
def external(fn, sig, symbol, _compile=microcall.external):
    kept[symbol] = _compile(fn, sig, symbol)
    return kept[symbol]
microcall.external = external
microcall.ensure(jit.ISA, "float32")
asm = kept[microcall.tile_symbol(jit.ISA, "float32")]._library.get_asm_str()
blocks = re.split(r"\n\.LBB\w+:", asm)
hot = max(blocks, key=lambda b: b.count("vfmadd"))
R, W = microcall.panel_block(jit.ISA)
print(hot.count("vfmadd"), R * W // jit.vector_floats(jit.ISA), len(re.findall(r"\(%rsp\)", hot)),
      len(re.findall(r"vmovap[sd]\s+%[xyz]mm\d+, %[xyz]mm\d+", hot)))
'''


@pytest.mark.parametrize("isa", [isa for isa in ("avx512", "avx2") if isa in jit.ISAS
                                 and jit.ISAS.index(isa) >= jit.ISAS.index(jit.host_isa())])
def test_the_tiles_main_block_keeps_its_sums_and_pointers_in_registers(isa):
    """The family's main block, written into the tile, compiles to a k-loop as tight as the body
    compiled alone: no stack access and no register-to-register moves among its fmas. (LLVM once
    carried the block's 12 row pointers across the tile's loop over row blocks, and the avx512
    loop then reloaded pointers from the stack, spilled sums and rotated them through moves:
    microcall.opaque.) A fresh compile (BPTT_CACHE=0): Numba shows no assembly for cached code."""
    proc = subprocess.run([sys.executable, "-c", _HOT_LOOP], env=_env(BPTT_CACHE="0", BPTT_ISA=isa),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fmas, per_k, stack, moves = (int(v) for v in proc.stdout.split())
    assert fmas >= per_k and fmas % per_k == 0, proc.stdout   # the block's whole k-step(s)
    assert stack == 0 and moves == 0, proc.stdout
