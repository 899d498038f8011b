"""The machine's float32 FMA peak, measured: the yardstick ``bptt bench`` divides GFLOP/s by.

Each of P blocks (one per thread) holds ``LANES`` float32 accumulators that fit in registers, and
repeats ``acc = acc·a + b`` on all of them ``reps`` times. Each lane is a dependent chain, but the
lanes are independent, so the core can keep both FMA pipes busy: an FMA has a latency of about 4
cycles and 2 issue per cycle, so at least 8 vector chains must be in flight. ``LANES`` is 12
vectors of the widest float32 SIMD the host has (8 lanes for AVX2, 16 for AVX-512), which fills
the pipes without spilling registers (12 ymm + ``a`` and ``b`` fit in AVX2's 16). With fastmath's
``contract`` each update compiles to one ``vfmadd`` per vector: 2 FLOP per lane per rep.

    peak GFLOP/s = 2 · LANES · P · reps / seconds / 1e9

On a core with 2 FMA pipes of 8 float32 lanes (AMD Zen 2/3, Intel client cores) that is
32 FLOP/cycle, e.g. about 100 GFLOP/s per core at 3 GHz.
"""
from ..jit import kernel, prange


def _simd_floats() -> int:
    """float32 lanes of the widest vector register the host CPU has (what LLVM targets)."""
    try:
        import llvmlite.binding as ll
        features = ll.get_host_cpu_features()
    except Exception:  # pragma: no cover - llvmlite always ships with numba
        return 8
    if features.get("avx512f", False):
        return 16
    if features.get("avx", False):
        return 8
    return 4


# A module-level constant is frozen into the compiled kernel, so the loops below have a known trip
# count: LLVM unrolls them fully and keeps every accumulator in a register.
LANES = 12 * _simd_floats()


@kernel
def fma_chains(out, a, b, reps):
    """out[p, k] ← reps times out[p, k]·a + b, each block p in registers.

    out : (P, LANES) float32, read as the start values and written with the results.
    a, b : float32 scalars (choose |a| < 1 so the values stay finite and normal).
    reps : int, the length of every dependent chain.
    """
    P = out.shape[0]
    for p in prange(P):
        acc = out[p, :LANES].copy()  # a private block: the only memory the loop below touches
        for r in range(reps):
            for k in range(LANES):
                acc[k] = acc[k] * a + b
        for k in range(LANES):
            out[p, k] = acc[k]
