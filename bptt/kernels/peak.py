"""The machine's float32 FMA peak, measured: the yardstick ``bptt bench`` divides GFLOP/s by.

Each of P blocks (one per thread, one ``prange`` iteration each) holds ``CHAINS`` vectors of
``WIDTH`` float32 lanes in registers and updates every one ``reps`` times with a fused
multiply-add, ``acc ← fma(acc, a, b)``: one ``vfmadd`` instruction, 2 FLOP per lane. Each vector is
a dependent chain, but the chains are independent of each other, so the core can issue an FMA on
every pipe every cycle: with an FMA latency of L cycles and F pipes, at least L·F chains must be in
flight (4·2 = 8 on Zen 2-4 and Intel client cores). ``CHAINS`` is 12 for ``avx2`` and ``generic``
(12 accumulators + ``a`` and ``b`` fit the 16 ymm/xmm registers) and 24 for ``avx512`` (32 zmm).

    peak GFLOP/s = 2 · WIDTH · CHAINS · P · reps / seconds / 1e9

With 2 FMA pipes of 8 float32 lanes (AVX2) that is 32 FLOP per cycle and core, about 100 GFLOP/s
per core at 3 GHz.

Why an LLVM loop written out by hand (:func:`_fma_chains`) instead of a Numba loop over an
accumulator array: Numba keeps a local array in memory, so each rep stores every accumulator,
and with fastmath ``contract`` off (:mod:`bptt.jit`) ``acc·a + b`` is a multiply and an add. The
intrinsic emits exactly ``CHAINS`` ``llvm.fma.v{WIDTH}f32`` calls per iteration, their operands
loop-carried SSA values (phi nodes), which the register allocator keeps in registers. Under
``NUMBA_DISABLE_JIT=1`` a NumPy loop does the same arithmetic, slowly (for debugging only).
"""
import numba
import numpy as np

from .. import jit
from ..jit import kernel, prange

WIDTH = jit.vector_floats()                    # float32 lanes of one vector of the ISA in use
CHAINS = 24 if jit.ISA == "avx512" else 12     # independent FMA chains per thread
LANES = WIDTH * CHAINS                          # float32 accumulators per block


if numba.config.DISABLE_JIT:
    def _fma_chains(acc, a, b, reps):
        """acc ← reps times acc·a + b (plain NumPy: two roundings; for debugging only)."""
        v = acc[:LANES].copy()
        for _ in range(reps):
            v = v * a + b
        acc[:LANES] = v
else:
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def _fma_chains(typingctx, acc, a, b, reps):
        """acc[:LANES] ← ``reps`` times fma(acc, a, b), as CHAINS vectors held in registers.

        acc : (≥ LANES,) float32, contiguous; read once before the loop, written once after it.
        a, b : float32 scalars.  reps : int64 ≥ 1.
        """
        if not (isinstance(acc, types.Array) and acc.dtype == types.float32 and acc.ndim == 1
                and acc.layout == "C" and a == b == types.float32 and isinstance(reps, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            acc_v, a_v, b_v, reps_v = args
            vec = ir.VectorType(ir.FloatType(), WIDTH)
            i64 = ir.IntType(64)
            reps_v = context.cast(builder, reps_v, sig.args[3], types.int64)
            data = context.make_array(sig.args[0])(context, builder, acc_v).data
            base = builder.bitcast(data, vec.as_pointer())
            ptrs = [builder.gep(base, [ir.Constant(i64, j)]) for j in range(CHAINS)]
            start = [builder.load(p, align=4) for p in ptrs]

            def splat(x):
                v = builder.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
                return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH))
            av, bv = splat(a_v), splat(b_v)
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                                 f"llvm.fma.v{WIDTH}f32")
            entry = builder.block
            loop = builder.append_basic_block("fma_chains.loop")
            done = builder.append_basic_block("fma_chains.done")
            builder.branch(loop)
            builder.position_at_end(loop)
            i = builder.phi(i64)
            i.add_incoming(ir.Constant(i64, 0), entry)
            chains = []
            for s in start:
                c = builder.phi(vec)
                c.add_incoming(s, entry)
                chains.append(c)
            new = [builder.call(fma, [c, av, bv]) for c in chains]  # CHAINS independent FMAs
            i_next = builder.add(i, ir.Constant(i64, 1))
            i.add_incoming(i_next, loop)
            for c, n in zip(chains, new):
                c.add_incoming(n, loop)
            builder.cbranch(builder.icmp_signed("<", i_next, reps_v), loop, done)
            builder.position_at_end(done)
            for p, n in zip(ptrs, new):
                builder.store(n, p, align=4)
            return context.get_dummy_value()
        return types.void(acc, a, b, reps), codegen


@kernel
def fma_chains(out, a, b, reps):
    """out[p] ← reps times fma(out[p], a, b), each block p on its own thread, in registers.

    out : (P, LANES) float32, C-contiguous, read as the start values and written with the results.
    a, b : float32 scalars (choose |a| < 1 so the values stay finite and normal).
    reps : int64, the length of every dependent chain (nothing runs if it is below 1).
    """
    P = out.shape[0]
    for p in prange(P):
        if reps > 0:
            _fma_chains(out[p], a, b, reps)


def gflops(blocks: int, reps: int, seconds: float) -> float:
    """GFLOP/s of one :func:`fma_chains` call on ``blocks`` rows: 2·LANES FLOP per row and rep."""
    return 2.0 * LANES * blocks * reps / seconds / 1e9


def new_blocks(threads: int) -> np.ndarray:
    """The (threads, LANES) float32 start values for :func:`fma_chains`: 1, a fixed point of
    fma(x, 0.999, 0.001), so values stay normal however long the chains."""
    return np.ones((threads, LANES), np.float32)
