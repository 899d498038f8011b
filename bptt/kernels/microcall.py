"""How kernels call the generated micro-kernels: each body is compiled once per dtype, as a C
function registered under a symbol, and called by that name from generated code.

Numba links a callee's code into every caller and optimises it again there, which for the large
unrolled micro-kernels cost about 3 s per kernel, per dtype and per build. A C function compiled
once (:func:`bptt.jit.external`) and called by symbol is compiled, or loaded from the cache,
once. The symbol must exist before any kernel that calls it is compiled or loaded from the
cache: :func:`ensure` compiles a family's bodies for a dtype, and :mod:`bptt.jit` calls it (by
the hook :mod:`bptt.kernels.engine` registers) before a kernel first runs on arrays of that dtype,
so a float32 program never compiles the float64 bodies.

``acc_scalar`` is the plain form every body computes; under ``NUMBA_DISABLE_JIT=1`` the callers
run it instead of the bodies.
"""
import importlib

import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ..jit import external, fma, helper


@helper
def acc_scalar(C, A, Bm, n0, n1, c0, c1, boff, k0, k1):
    """C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] · Bm[k, boff + c], one element at a time: the plain
    form of every micro-kernel (the tests compare the tiles with it bitwise; under
    ``NUMBA_DISABLE_JIT=1`` it stands in for the micro-kernels)."""
    for n in range(n0, n1):
        for c in range(c0, c1):
            s = C[n, c]
            for k in range(k0, k1):
                s = fma(A[n, k], Bm[k, boff + c], s)
            C[n, c] = s


def element_ptr(context, builder, ty, val, i, j):
    """(pointer to element [i, j], strides in bytes) of the 2-D array ``val`` of Numba type ``ty``,
    in generated code (no bounds or negative-index checks)."""
    ary = context.make_array(ty)(context, builder, val)
    shape = cgutils.unpack_tuple(builder, ary.shape, 2)
    strides = cgutils.unpack_tuple(builder, ary.strides, 2)
    ptr = cgutils.get_item_pointer2(context, builder, ary.data, shape, strides, ty.layout, [i, j],
                                    wraparound=False)
    return ptr, strides


def symbol(isa, R, W, dtype, pair=False) -> str:
    return f"bptt_micro_{isa}_{R}x{W}{'x2' if pair else ''}_{dtype}"


_compiled = set()   # (isa, dtype name) whose bodies are registered


def ensure(isa: str, dtype) -> None:
    """Compile (or load from the cache) family ``isa``'s bodies for ``dtype`` (float32 or
    float64), once per process, and register their symbols."""
    dt = types.float32 if str(dtype) == "float32" else types.float64
    if (isa, str(dt)) in _compiled or numba.config.DISABLE_JIT:
        return
    fam = importlib.import_module(f"{__package__}.micro_{isa}")
    p = types.CPointer(dt)
    for pair, sizes in ((False, fam.SIZES), (True, fam.PAIRS)):
        for R, W in sizes:
            fn = getattr(fam, f"body_{R}x{W}{'x2' if pair else ''}")
            args = [p, types.int64, p, types.int64, types.int64, p, types.int64, types.int64,
                    types.int64] + [types.int64] * pair
            external(fn, types.void(*args), symbol(isa, R, W, dt, pair))
    _compiled.add((isa, str(dt)))


def _codegen(isa, R, W, pair, dtype):
    """Code that calls the compiled body: pointers to the blocks' first elements and the arrays'
    strides in elements (then ``d`` for a pair)."""
    name = symbol(isa, R, W, dtype, pair)

    def codegen(context, builder, signature, args):
        tys = signature.args
        i64 = lambda v, ty: context.cast(builder, v, ty, types.int64)  # noqa: E731
        ints = [i64(v, ty) for v, ty in zip(args[3:], tys[3:])]
        n0_, c0_, boff_, k0_, k1_ = ints[:5]
        zero = context.get_constant(types.int64, 0)
        size = context.get_constant(types.int64, context.get_abi_sizeof(context.get_data_type(dtype)))

        def block(ty, val, i, j):
            ptr, strides = element_ptr(context, builder, ty, val, i, j)
            return ptr, builder.sdiv(strides[0], size), builder.sdiv(strides[1], size)

        pC, ldc, _ = block(tys[0], args[0], n0_, c0_)
        pA, sa0, sa1 = block(tys[1], args[1], n0_, zero)
        pB, ldb, _ = block(tys[2], args[2], zero, builder.add(boff_, c0_))
        i64t = ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [pC.type, i64t, pA.type, i64t, i64t, pB.type, i64t, i64t,
                                               i64t] + [i64t] * pair)
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        builder.call(fn, [pC, ldc, pA, sa0, sa1, pB, ldb, k0_, k1_] + ints[5:])
        return context.get_dummy_value()
    return codegen


def _typed(C, A, Bm):
    return (all(isinstance(a, types.Array) and a.ndim == 2 and a.dtype == C.dtype for a in (C, A, Bm))
            and C.dtype in (types.float32, types.float64))


def caller(isa, R, W):
    """call(C, A, Bm, n0, c0, boff, k0, k1): C[n0:n0+R, c0:c0+W] += A[n0:n0+R, k0:k1] ·
    Bm[k0:k1, boff+c0:boff+c0+W], by calling family ``isa``'s compiled ``body_RxW`` for the
    arrays' dtype with pointers to the blocks' first elements and the arrays' strides."""
    if numba.config.DISABLE_JIT:
        def call(C, A, Bm, n0, c0, boff, k0, k1):
            acc_scalar(C, A, Bm, n0, n0 + R, c0, c0 + W, boff, k0, k1)
        return call

    @intrinsic
    def call(typingctx, C, A, Bm, n0, c0, boff, k0, k1):
        if not _typed(C, A, Bm):
            return None
        return types.void(C, A, Bm, n0, c0, boff, k0, k1), _codegen(isa, R, W, False, C.dtype)
    return call


def pair_caller(isa, R, W):
    """call(C, A, Bm, n0, c0, boff, k0, k1, d): as :func:`caller`'s, for the R × W blocks at
    columns c0 and c0 + d (0 ≤ d ≤ W) at once, with ``body_RxWx2``."""
    if numba.config.DISABLE_JIT:
        def call(C, A, Bm, n0, c0, boff, k0, k1, d):
            acc_scalar(C, A, Bm, n0, n0 + R, c0, c0 + d + W, boff, k0, k1)
        return call

    @intrinsic
    def call(typingctx, C, A, Bm, n0, c0, boff, k0, k1, d):
        if not _typed(C, A, Bm):
            return None
        return types.void(C, A, Bm, n0, c0, boff, k0, k1, d), _codegen(isa, R, W, True, C.dtype)
    return call
