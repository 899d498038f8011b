"""One core's GFLOP/s of single micro-kernels, compiled for this machine: the figures behind the
block shapes of bptt/kernels/microgen.py.

    python bench/micro_kernels.py                 # the host family's main block, and others for comparison
    python bench/micro_kernels.py 4x24:bcast:24 4x64:rows:128 6x16:bcast:16

Each spec is RxW:ORDER:PANEL: a body of R rows × W columns, ``vec`` the form bptt compiles
(``microcall.vector_body``: LLVM vector IR), or the readable scalar form generated in ORDER
(``rows`` or ``bcast``, see microgen; ``BPTT_MICRO=scalar``), which the SLP vectoriser packs
less well (on an Intel Xeon with AVX-512: 8 × 32 at 205 GFLOP/s as ``vec``, 108-116 scalar), run over a C of 32 rows and a B of K = 256 rows stored in panels
PANEL columns wide (the body reads a K × W sliver with row stride PANEL), one thread, repeated
for about 0.3 s, best of 5. Any body can be compiled on any x86 host (LLVM targets the host's
ISA): a 4 × 64 block on an AVX2 machine shows what a block written for AVX-512 costs there.
The FMA peak of one thread is printed alongside (bptt.kernels.peak).
"""
import sys
import time

import numba
import numpy as np
from numba.core import types

from bptt import jit
from bptt.kernels import microgen
from bptt.kernels.engine import aligned_empty


def _body(R, W, order):
    if order == "vec":   # the form bptt compiles: microcall.vector_body, LLVM vector IR
        from bptt.kernels import microcall
        p = types.CPointer(types.float32)
        i = types.int64
        return numba.cfunc(types.void(p, i, p, i, i, p, i, i, i, i), error_model="numpy")(
            microcall._vector_function(jit.ISA, R, W))
    ns = {"fma": jit.fma}
    exec(microgen.kernel_source(R, W, order), ns)   # noqa: S102 - our own generated source
    p = types.CPointer(types.float32)
    i = types.int64
    return numba.cfunc(types.void(p, i, p, i, i, p, i, i, i, i), error_model="numpy")(ns[f"body_{R}x{W}"])


def measure(R, W, order, panel, K=256, rows=32, seconds=0.3):
    """Best GFLOP/s of 5 runs of the body over every R × W block of a rows × panel C."""
    body = _body(R, W, order)
    # On 64-byte boundaries, as bptt's panels and workspaces (engine.empty_panels, aligned_empty):
    # NumPy's arrays start 16 or 32 bytes into a line at random, so B's rows could straddle two
    # lines, which bptt's panels never do; aligned, where they lie is not one of the variables.
    C = aligned_empty((rows, panel), np.float32)
    C[:] = 0
    A = aligned_empty((rows, K), np.float32)
    A[:] = np.random.default_rng(0).random((rows, K)) * 0.01
    B = aligned_empty((K, panel), np.float32)
    B[:] = np.random.default_rng(1).random((K, panel)) * 0.01
    drive = _driver(body.address, R, W)   # compiled: a Python loop of calls would time the calls
    drive(C, A, B, 1)
    flop = 2 * (rows // R * R) * (panel // W * W) * K
    reps = max(1, int(seconds * 50e9 / flop))
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        drive(C, A, B, reps)
        best = max(best, reps * flop / (time.perf_counter() - t0) / 1e9)
    return best


def _driver(addr, R, W):
    """A compiled loop calling the body at ``addr`` over every R × W block of C, ``reps`` times."""
    from llvmlite import ir
    from numba.extending import intrinsic
    from numba.core import cgutils

    @intrinsic
    def call_body(typingctx, C, A, B, n, c):
        def codegen(context, builder, signature, args):
            from bptt.kernels.microcall import element_ptr
            tys = signature.args
            i64 = lambda v, ty: context.cast(builder, v, ty, types.int64)  # noqa: E731
            n_, c_ = i64(args[3], tys[3]), i64(args[4], tys[4])
            zero = context.get_constant(types.int64, 0)
            four = context.get_constant(types.int64, 4)
            pC, sC = element_ptr(context, builder, tys[0], args[0], n_, c_)
            pA, sA = element_ptr(context, builder, tys[1], args[1], n_, zero)
            pB, sB = element_ptr(context, builder, tys[2], args[2], zero, c_)
            i64t = ir.IntType(64)
            fnty = ir.FunctionType(ir.VoidType(), [pC.type, i64t, pA.type, i64t, i64t, pB.type, i64t, i64t, i64t, i64t])
            fptr = builder.inttoptr(ir.Constant(i64t, addr), fnty.as_pointer())
            k1 = context.get_constant(types.int64, 0)
            K = cgutils.unpack_tuple(builder, context.make_array(tys[1])(context, builder, args[1]).shape, 2)[1]
            builder.call(fptr, [pC, builder.sdiv(sC[0], four), pA, builder.sdiv(sA[0], four),
                                builder.sdiv(sA[1], four), pB, builder.sdiv(sB[0], four), k1, K, zero])   # fresh = 0
            return context.get_dummy_value()
        return types.void(C, A, B, n, c), codegen

    @numba.njit
    def drive(C, A, B, reps):
        for _ in range(reps):
            for c in range(0, C.shape[1] - W + 1, W):
                for n in range(0, C.shape[0] - R + 1, R):
                    call_body(C, A, B, n, c)
    return drive


def parse(spec: str):
    """(R, W, order, panel) of a spec RxW:ORDER:PANEL, or SystemExit with what is accepted."""
    try:
        rw, order, panel = spec.split(":")
        R, W = map(int, rw.split("x"))
        panel = int(panel)
    except ValueError:
        raise SystemExit(f"not a spec: {spec!r}; each is RxW:ORDER:PANEL, ORDER vec, rows or bcast "
                         f"(python bench/micro_kernels.py 4x24:vec:24 12x32:vec:32)") from None
    if order not in ("vec", "rows", "bcast") or min(R, W, panel) < 1 or panel < W:
        raise SystemExit(f"not a spec: {spec!r}; ORDER is vec, rows or bcast, and PANEL at least W")
    return R, W, order, panel


def main(argv):
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return
    from bptt.benchmark.machine import measure_peak
    fam = microgen.FAMILIES[jit.ISA]
    specs = argv or [f"{fam.R}x{fam.W}:vec:{fam.panel}", f"{fam.R}x{fam.W}:{fam.order}:{fam.panel}",
                     "4x64:vec:128", "4x64:vec:64", "8x32:vec:32", "12x32:vec:32", "4x24:vec:24"]
    parsed = [parse(spec) for spec in specs]   # every spec checked before anything compiles
    jit.set_threads(1)
    print(f"ISA {jit.ISA} ({jit.isa_info()['cpu_name']}); FMA peak on 1 thread: {measure_peak():.1f} GFLOP/s")
    for R, W, order, panel in parsed:
        print(f"  {R}x{W} {order:5s} panels of {panel:>3d}: {measure(R, W, order, panel):6.1f} GFLOP/s")


if __name__ == "__main__":
    main(sys.argv[1:])
