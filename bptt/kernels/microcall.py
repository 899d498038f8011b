"""How kernels call the generated micro-kernels: each body, and the family's ``tile`` that
dispatches blocks to them, is compiled once per dtype, as a C function registered under a
symbol, and called by that name from generated code.

Numba links a callee's code into every caller and optimises it again there, which for the large
unrolled micro-kernels cost about 3 s per kernel, per dtype and per build. A C function compiled
once (:func:`bptt.jit.external`) and called by symbol is compiled, or loaded from the cache,
once. The symbols must exist before any kernel that calls it is compiled or loaded from the
cache: :func:`ensure` compiles a family's bodies for a dtype, and :mod:`bptt.jit` calls it (by
the hook :mod:`bptt.kernels.engine` registers) before a kernel first runs on arrays of that dtype,
so a float32 program never compiles the float64 bodies.

Kernels reach all of it through one call, :func:`tile_caller` (``engine.acc_tile``).

The family's main block (avx512 12 × 32, avx2 4 × 24: :func:`panel_block`) is the exception: in the
vector form its code is written into the tile itself rather than called, since a call cost about
85 cycles against a 1536-cycle body at k = 128 (a weight gradient over a mini-batch of 128: 5-11 %
of the product on one core, docs/performance.md, thirty-second session). Its pointers pass through
:func:`opaque` first, so that its k-loop compiles as tightly there as in the body alone.

Two more entries for whole products: :func:`copy_caller`, the family's main block packing its
panel of B as it reads it (``engine.packing_product``), and :func:`panels_caller`, a single row
across several panels.

``acc_scalar`` is the plain form every body computes; under ``NUMBA_DISABLE_JIT=1``
``acc_tile`` runs it instead.

What is compiled. The family files (``micro_<isa>.py``) hold each body as readable scalar code:
one variable per output, 96 fma chains for a 4 × 24 block, which LLVM's SLP vectoriser packs into
vector registers. That packing is slow to compile (1.6-1.9 s for each large body, 6.5 s for the
avx2 family). By default the compiled body is instead :func:`vector_body`'s: the same loop
written directly in LLVM vector IR, one ``<W x float>`` accumulator per row, ``llvm.fma`` on
vectors, which is the same fma per lane in the same order, so the same bits (tests compare both
forms and :func:`acc_scalar`), compiled in about a tenth of the time. ``BPTT_MICRO=scalar``
compiles the readable bodies instead.
"""
import importlib

import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ..jit import MICRO, external, fma, helper, inline, renamed, vector_floats
from .microgen import FAMILIES


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


def block_pointer(context, builder, ty, val, i, j):
    """(pointer to element [i, j], row stride, column stride) of the 2-D array ``val`` of Numba
    type ``ty``, the strides in elements, as the bodies take them (generated code)."""
    ptr, strides = element_ptr(context, builder, ty, val, i, j)
    size = context.get_constant(types.int64, context.get_abi_sizeof(context.get_data_type(ty.dtype)))
    return ptr, builder.sdiv(strides[0], size), builder.sdiv(strides[1], size)


def symbol(isa, R, W, dtype, pair=False) -> str:
    return f"bptt_micro_{isa}_{R}x{W}{'x2' if pair else ''}_{dtype}"


def panels_symbol(isa, W, NP, dtype) -> str:
    return f"bptt_micro_{isa}_1x{W}x{NP}p_{dtype}"


def panels_caller(isa, W, NP):
    """row(C, A, P, n, p, k0, k1, fresh): C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] · P[c // W, k, c % W]
    for the NP·W columns of panels p, ..., p+NP-1 (panels W wide), by family ``isa``'s compiled
    ``body_1xWxNPp`` (``fresh``: the sums from 0, C only written). C needs unit stride along its
    rows, P is (panels, K, W) contiguous."""
    if numba.config.DISABLE_JIT:
        def row(C, A, P, n, p, k0, k1, fresh):
            if fresh:
                C[n, p * W:(p + NP) * W] = 0
            for j in range(NP):
                acc_scalar(C, A, P[p + j], n, n + 1, (p + j) * W, (p + j + 1) * W, -(p + j) * W, k0, k1)
        return row

    @intrinsic
    def row(typingctx, C, A, P, n, p, k0, k1, fresh):
        if not (isinstance(P, types.Array) and P.ndim == 3 and P.dtype == C.dtype
                and _typed(C, A, C)):
            return None
        sig = types.void(C, A, P, n, p, k0, k1, fresh)
        name = panels_symbol(isa, W, NP, C.dtype)

        def codegen(context, builder, signature, args):
            tys = signature.args
            i64 = lambda v, ty: context.cast(builder, v, ty, types.int64)  # noqa: E731
            n_, p_, k0_, k1_, fresh_ = [i64(v, ty) for v, ty in zip(args[3:], tys[3:])]
            zero = context.get_constant(types.int64, 0)
            size = context.get_constant(types.int64, context.get_abi_sizeof(context.get_data_type(C.dtype)))
            pC, sc = element_ptr(context, builder, tys[0], args[0], n_, builder.mul(p_, context.get_constant(types.int64, W)))
            pA, sa = element_ptr(context, builder, tys[1], args[1], n_, zero)
            parr = context.make_array(tys[2])(context, builder, args[2])
            shape = cgutils.unpack_tuple(builder, parr.shape, 3)
            strides = cgutils.unpack_tuple(builder, parr.strides, 3)
            pB = cgutils.get_item_pointer2(context, builder, parr.data, shape, strides, tys[2].layout,
                                           [p_, zero, zero], wraparound=False)
            div = lambda v: builder.sdiv(v, size)  # noqa: E731
            i64t = ir.IntType(64)
            fnty = ir.FunctionType(ir.VoidType(), [pC.type, i64t, pA.type, i64t, i64t, pB.type] + [i64t] * 5)
            fn = cgutils.get_or_insert_function(builder.module, fnty, name)
            builder.call(fn, [pC, div(sc[0]), pA, div(sa[0]), div(sa[1]), pB, div(strides[1]), k0_, k1_,
                              fresh_, div(strides[0])])
            return context.get_dummy_value()
        return sig, codegen
    return row


def tile_symbol(isa, dtype) -> str:
    return f"bptt_tile_{isa}_{dtype}"


# -- the bodies as vector IR ---------------------------------------------------------------------

FORM = MICRO   # bptt.jit.MICRO: "vector" (default) or "scalar" (BPTT_MICRO)
COPY_AHEAD = 8   # rows of B ahead that a copying body asks for (engine.packing_product)


def vector_body(R, W, blocks=1, pair=False, lanes=8, prefetch=True, stream=False, copy=False):
    """The intrinsic of :func:`vector_generator`'s body, with the arguments its options take."""
    generate = vector_generator(R, W, blocks, pair, lanes, prefetch, stream, copy)
    if stream:
        def body(typingctx, pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, pP, step):
            return generate(typingctx, pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, pP, step)
    elif copy:
        def body(typingctx, pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, pS):
            return generate(typingctx, pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, pS)
    elif pair or blocks > 1:
        def body(typingctx, pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, d):
            return generate(typingctx, pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, d)
    else:
        def body(typingctx, pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh):
            return generate(typingctx, pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh)
    return intrinsic(body)


def vector_generator(R, W, blocks=1, pair=False, lanes=8, prefetch=True, stream=False, copy=False):
    """``generate(typingctx, pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh[, ...])`` → (signature,
    codegen), or None for other argument types: an intrinsic ``body(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh[, d])``: the micro-kernel
    body ``body_RxW`` of the family files, in LLVM vector IR.

        C[r, c] = fma(A[r, k], B[k, c], C[r, c])      for k = k0, ..., k1-1 in order

    With ``fresh`` non-zero the sums start from 0 instead of from C, which is then only written
    (a product that sets C rather than adds to it: the same bits as clearing C first, without
    the pass that clears it or the loads of the cleared block).

    for the ``blocks`` R × W blocks of C: block j at columns j·W of C and pB + j·d (row panels,
    ``body_1xWxNPp``), or, with ``pair``, two blocks at columns 0 and d of both C and B
    (``body_RxWx2``). Pointers and strides in elements as the family files' bodies take them.
    Each row of a block is held through the k loop in vectors of the ISA's width (``lanes``
    float32 lanes; half as many float64), lane w of the row being the fma chain of output (r, w),
    the scalar body's ``s<r>_<w>``: one wide ``<W x T>`` vector is split by LLVM element by
    element when W is not a power of two, which ran 8× slower.

    With ``stream`` the body takes two more arguments, ``pP`` and ``step``, and at step k of its
    loop asks for the cache line at element ((k - k0)·step) / 16 past pP: a family's ``tile``
    points them at this block's share of the next sliver of B, so that a product whose panels
    stream from memory (a sweep's W_hh, at every step) has the next sliver on its way while the
    current one is used: one core's 32-row step product over 16.7 MB of panels ran 53.7 →
    76 GFLOP/s (docs/performance.md, eleventh session), where prefetching whole slivers at once,
    between the calls, had lost.

    With ``copy`` the body takes one more argument, ``pS``: B is read where it lies (row stride
    ``ldb``, a row of a matrix not yet packed), each of its rows k is also stored at pS[k·W + w]
    (the rows of a panel, :func:`bptt.kernels.engine.packing_product`), and at step k the body
    asks for the cache lines of B's row k + ``COPY_AHEAD``: the block packs its panel of B as
    it uses it, with the loads of the packing in the shadow of its fmas instead of in a pass of
    their own (:func:`copy_caller`).

    With ``prefetch`` (blocks of two rows or more), the body first asks for the cache lines of
    the next block down, rows R ... 2R-1 of the same columns, which is the block a family's
    ``tile`` runs next: its sums start from C, and a block of C that had to come from L3 or
    memory stalled every fma chain at the start of the k loop. One core's product of 800 ×
    1024 by 1024 × 960 (K in blocks of 256) ran 6-20 % faster with it, A/B in one process
    (docs/performance.md, eleventh session). A prefetch never changes a result."""
    nb = 2 if pair else blocks

    def generate(typingctx, pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, *d):
        if not (isinstance(pC, types.CPointer) and pC == pA == pB and pC.dtype in (types.float32, types.float64)):
            return None
        sig = types.void(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, *d)

        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            tys = signature.args
            ints = [context.cast(builder, args[i], tys[i], types.int64) for i in (1, 3, 4, 6, 7, 8, 9)]
            ldc_, sa0_, sa1_, ldb_, k0_, k1_, fresh_ = ints
            d_ = context.cast(builder, args[10], tys[10], types.int64) if nb > 1 else None
            pc, pa, pb = args[0], args[2], args[5]
            elt = pc.type.pointee
            f32 = pC.dtype == types.float32
            vw = min(W, lanes if f32 else lanes // 2)
            pieces = [(w0, min(vw, W - w0)) for w0 in range(0, W, vw)]   # (first column, width)
            align = context.get_abi_sizeof(elt)
            cst = lambda v: ir.Constant(i64, v)  # noqa: E731

            def fma_for(n):
                vty = ir.VectorType(elt, n)
                name = f"llvm.fma.v{n}{'f32' if f32 else 'f64'}"
                return builder.module.globals.get(name) or ir.Function(builder.module, ir.FunctionType(vty, [vty] * 3), name)

            def vector_at(p, off, n):
                return builder.bitcast(builder.gep(p, [off]), ir.VectorType(elt, n).as_pointer())

            def splat(a, n):
                vty = ir.VectorType(elt, n)
                undef = ir.Constant(vty, ir.Undefined)
                v = builder.insert_element(undef, a, ir.Constant(ir.IntType(32), 0))
                return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))

            b_off = [cst(0)] + [builder.mul(cst(j), d_) for j in range(1, nb)]
            c_col = b_off if pair else [cst(j * W) for j in range(nb)]
            c_off = [[builder.add(builder.mul(cst(r), ldc_), c_col[j]) for j in range(nb)] for r in range(R)]
            a_off = [builder.mul(cst(r), sa0_) for r in range(R)]
            slots = [(r, j, w0, n) for r in range(R) for j in range(nb) for w0, n in pieces]
            from_c = builder.append_basic_block("micro_load_c")
            begin = builder.append_basic_block("micro_begin")
            zero_entry = builder.block
            builder.cbranch(builder.icmp_signed("!=", fresh_, cst(0)), begin, from_c)
            builder.position_at_end(from_c)   # the sums start from C (fresh: from 0, C not read)
            loaded = [builder.load(vector_at(pc, builder.add(c_off[r][j], cst(w0)), n), align=align)
                      for r, j, w0, n in slots]
            builder.branch(begin)
            builder.position_at_end(begin)
            start = []
            for (r, j, w0, n), v in zip(slots, loaded):
                phi = builder.phi(ir.VectorType(elt, n))
                phi.add_incoming(ir.Constant(ir.VectorType(elt, n), [0.0] * n), zero_entry)
                phi.add_incoming(v, from_c)
                start.append(phi)
            if prefetch and R > 1:   # C's next block down (the tile's order), while this one runs
                line = 64 // align   # elements per cache line
                for r in range(R, 2 * R):
                    for j in range(nb):
                        for w in sorted(set(range(0, W, line)) | {W - 1}):
                            off = builder.add(builder.mul(cst(r), ldc_), builder.add(c_col[j], cst(w)))
                            _prefetch(builder, pc, off, write=True)

            def step(k, acc):   # one k: the fma of every slot
                ka = builder.mul(k, sa1_)
                kb = builder.mul(k, ldb_)
                b = {(j, w0): builder.load(vector_at(pb, builder.add(kb, builder.add(b_off[j], cst(w0))), n),
                                           align=align)
                     for j in range(nb) for w0, n in pieces}
                a = [builder.load(builder.gep(pa, [builder.add(a_off[r], ka)])) for r in range(R)]
                av = {(r, n): splat(a[r], n) for r in range(R) for n in {n for _, n in pieces}}
                new = [builder.call(fma_for(n), [av[r, n], b[j, w0], phi]) for (r, j, w0, n), phi in zip(slots, acc)]
                if copy:   # B's row k into the panel; B's row COPY_AHEAD rows on asked for
                    ps = args[10]
                    ks = builder.mul(k, cst(W))
                    for w0, n in pieces:
                        builder.store(b[0, w0], vector_at(ps, builder.add(ks, cst(w0)), n), align=align)
                    ahead = builder.mul(builder.add(k, cst(COPY_AHEAD)), ldb_)
                    for w in sorted(set(range(0, W, 64 // align)) | {W - 1}):
                        _prefetch(builder, pb, builder.add(ahead, cst(w)), write=False)
                if stream:   # one line of the next sliver's share per step (most steps: the same line)
                    pfp = args[10]
                    pstep = context.cast(builder, args[11], tys[11], types.int64)
                    off = builder.ashr(builder.mul(builder.sub(k, k0_), pstep), cst(4))
                    _prefetch(builder, pfp, off, write=False)
                return new

            acc = counted_loop(builder, k0_, k1_, start, step, "micro")
            for (r, j, w0, n), phi in zip(slots, acc):
                builder.store(phi, vector_at(pc, builder.add(c_off[r][j], cst(w0)), n), align=align)
            return context.get_dummy_value()
        return sig, codegen

    return generate


def counted_loop(builder, lo, hi, start, step, name):
    """Generated code for ``for i in range(lo, hi): carried = step(i, carried)``, the loop's
    values carried in registers (phi nodes) from ``start``; returns them as they leave the loop,
    with the builder after it. ``step(i, values)`` emits one iteration and returns the new values
    (of the same types). lo and hi are i64 values."""
    i64 = ir.IntType(64)
    entry = builder.block
    head = builder.append_basic_block(f"{name}_loop")
    body = builder.append_basic_block(f"{name}_step")
    done = builder.append_basic_block(f"{name}_done")
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(i64)
    carried = [builder.phi(v.type) for v in start]
    i.add_incoming(lo, entry)
    for phi, v in zip(carried, start):
        phi.add_incoming(v, entry)
    builder.cbranch(builder.icmp_signed("<", i, hi), body, done)
    builder.position_at_end(body)
    new = step(i, carried)
    i_next = builder.add(i, ir.Constant(i64, 1))
    tail = builder.block   # the iteration's last block (step may add blocks of its own)
    builder.branch(head)
    i.add_incoming(i_next, tail)
    for phi, v in zip(carried, new):
        phi.add_incoming(v, tail)
    builder.position_at_end(done)
    return carried


def _prefetch(builder, p, off, write):
    """Ask for the cache line of element p[off] (into L1: LLVM's prefetch intrinsic, locality 3),
    for writing or for reading."""
    i32 = ir.IntType(32)
    i8p = ir.IntType(8).as_pointer()
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                        "llvm.prefetch.p0i8")
    builder.call(fn, [builder.bitcast(builder.gep(p, [off]), i8p), ir.Constant(i32, int(write)), ir.Constant(i32, 3),
                      ir.Constant(i32, 1)])


_vector = None   # in each vector body's own globals (_vector_function)


def _vector_body(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh):
    _vector(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh)


def _vector_body_d(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, d):
    _vector(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, d)


def _vector_body_s(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, pP, step):
    _vector(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, pP, step)


def _vector_body_c(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, pS):
    _vector(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, pS)


def _vector_function(isa, R, W, blocks=1, pair=False, stream=False, copy=False):
    """A Python function for :func:`bptt.jit.external` whose body is :func:`vector_body`'s, under
    a qualname of its own (its own cache file)."""
    template = (_vector_body_s if stream else _vector_body_c if copy else _vector_body_d if (pair or blocks > 1)
                else _vector_body)
    suffix = f"_{isa}_{R}x{W}" + ("x2" if pair else f"x{blocks}p" if blocks > 1 else "s" if stream
                                  else "c" if copy else "")
    return renamed(template, suffix, _vector=vector_body(R, W, blocks, pair, lanes=vector_floats(isa), stream=stream,
                                                         copy=copy))


def body_function(fam, R, W, blocks=1, pair=False, form=None, stream=False, copy=False):
    """The function compiled as family ``fam``'s body R × W (pair, or ``blocks`` row panels):
    the family file's readable scalar body, or the same body in vector IR (``form``, by default
    ``BPTT_MICRO``'s). ``stream``: the vector body that prefetches as it goes (the scalar form
    has none: ``_stream_scalar_template``, the same sums). ``copy``: the body that packs its
    panel of B as it reads it (the scalar form: ``_copy_scalar_template``, the copy then the
    plain body, the same sums)."""
    if copy:
        if (form or FORM) == "scalar":
            return renamed(_copy_scalar_template, f"_{fam.ISA}_{R}x{W}c", _body=inline(getattr(fam, f"body_{R}x{W}")),
                           _W=W)
        return _vector_function(fam.ISA, R, W, copy=True)
    if stream:
        if (form or FORM) == "scalar":
            return renamed(_stream_scalar_template, f"_{fam.ISA}_{R}x{W}s", _body=inline(getattr(fam, f"body_{R}x{W}")))
        return _vector_function(fam.ISA, R, W, stream=True)
    if (form or FORM) == "scalar":
        suffix = "x2" if pair else f"x{blocks}p" if blocks > 1 else ""
        return getattr(fam, f"body_{R}x{W}{suffix}")
    return _vector_function(fam.ISA, R, W, blocks, pair)


_body = None   # in each scalar streaming body's own globals (body_function)


def _stream_scalar_template(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, pP, step):
    """The streaming body in the readable form: the plain body, without the prefetches (which
    never change a result)."""
    _body(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh)


_W = 0   # in each scalar copying body's own globals (body_function): the panel's width


def _copy_scalar_template(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, pS):
    """The copying body in the readable form: rows k0 ... k1-1 of B stored at pS[k·W + w], then
    the plain body on B where it lies (no prefetches: they never change a result)."""
    for k in range(k0, k1):
        for w in range(_W):
            pS[k * _W + w] = pB[k * ldb + w]
    _body(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh)


def copy_symbol(isa, R, W, dtype) -> str:
    return f"bptt_micro_{isa}_{R}x{W}c_{dtype}"


def stream_symbol(isa, R, W, dtype) -> str:
    return f"bptt_micro_{isa}_{R}x{W}s_{dtype}"


_compiled = set()   # (isa, dtype name) whose bodies and tile are registered


def _dtype(dtype):
    return types.float32 if str(dtype) == "float32" else types.float64


def ensure(isa: str, dtype) -> None:
    """Compile (or load from the cache) family ``isa``'s bodies and its ``tile`` for ``dtype``
    (float32 or float64), once per process, and register their symbols: the bodies first, since
    the tile calls them by name."""
    dt = _dtype(dtype)
    if (isa, str(dt)) in _compiled or numba.config.DISABLE_JIT:
        return
    fam = importlib.import_module(f"{__package__}.micro_{isa}")
    p = types.CPointer(dt)
    i = types.int64
    for pair, sizes in ((False, fam.SIZES), (True, fam.PAIRS)):
        for R, W in sizes:
            if inlined_block(isa, R, W, pair):   # written into the tile, never called
                continue
            external(body_function(fam, R, W, pair=pair), types.void(p, i, p, i, i, p, i, i, i, i, *([i] * pair)),
                     symbol(isa, R, W, dt, pair))
    if getattr(fam, "STREAM", None):   # the main block's streaming body (the tile calls it by name)
        R, W = fam.STREAM
        external(body_function(fam, R, W, stream=True), types.void(p, i, p, i, i, p, i, i, i, i, p, i),
                 stream_symbol(isa, R, W, dt))
    if panel_block(isa):   # the main block packing its panel as it goes (engine.packing_product)
        R, W = panel_block(isa)
        external(body_function(fam, R, W, copy=True), types.void(p, i, p, i, i, p, i, i, i, i, p),
                 copy_symbol(isa, R, W, dt))
    for NP in range(2, fam.ROW_PANELS + 1):   # a row's groups of 2 ... ROW_PANELS panels
        external(body_function(fam, 1, fam.PANEL, blocks=NP), types.void(p, i, p, i, i, p, i, i, i, i, i),
                 panels_symbol(isa, fam.PANEL, NP, dt))
    external(fam.tile, types.void(p, i, p, i, i, p, i, i, i, i, i, i, i), tile_symbol(isa, dt))
    _compiled.add((isa, str(dt)))


def panel_block(isa):
    """(R, W) of family ``isa``'s main block where it is one panel wide (avx512 12 × 32, avx2
    4 × 24), else None (the generic family's 4 × 12 under panels of 24). It is the block that
    packs its panel as it reads it (:func:`copy_caller`), and in the vector form it is written
    into the tile instead of called (:func:`caller`)."""
    f = FAMILIES[isa]
    return (f.R, f.W) if f.W == f.panel else None


def inlined_block(isa, R, W, pair=False) -> bool:
    """Whether the tile writes the code of family ``isa``'s ``body_RxW`` (a pair's with ``pair``)
    into itself instead of calling it (:func:`caller`): the main block one panel wide
    (:func:`panel_block`), in the vector form. Its C function is then never called, and
    :func:`ensure` does not compile it."""
    return FORM == "vector" and not pair and (R, W) == panel_block(isa)


def opaque(builder, value):
    """``value`` through an empty inline-assembly statement: the same value, which LLVM can no
    longer trace back to its parts. The tile passes its main block's pointers through it, so
    that each block computes its rows' addresses afresh, as the body compiled alone does.

    Without it LLVM hoisted the 12 rows' pointers of A (and of C) out of the k-loop and carried
    each one across the tile's loop over row blocks. With 12 pointers live, the avx512 block's
    k-loop ran out of general registers: it reloaded a pointer from the stack before each
    broadcast, spilled three accumulators, and rotated nine more through register moves at
    every step. On a Zen 4 that cost 7-12 % of an LSTM step (docs/performance.md, thirty-sixth
    session). The sums are untouched: the same IR, with opaque addresses."""
    return builder.asm(ir.FunctionType(value.type, [value.type]), "", "=r,0", [value], False)


def caller(isa, R, W, pair=False, stream=False):
    """call(pC, oC, ldc, pA, oA, sa0, sa1, pB, oB, ldb, k0, k1, fresh[, d]): family ``isa``'s
    compiled ``body_RxW`` (``body_RxWx2`` for a pair) on the block whose first elements are
    pC[oC], pA[oA] and pB[oB], for the pointers' dtype (``fresh``: its sums from 0, C only
    written); used inside the generated ``tile``. With ``stream``, call(..., k0, k1, fresh, oP,
    step): the streaming body ``body_RxWs``, prefetching from pB[oP] on at ``step`` / 16
    elements per step of k (:func:`vector_body`)."""
    if numba.config.DISABLE_JIT:
        return None   # the tile is never run under NUMBA_DISABLE_JIT (acc_tile runs acc_scalar)
    inlined = (vector_generator(R, W, lanes=vector_floats(isa)) if inlined_block(isa, R, W, pair) and not stream
               else None)

    def typer(typingctx, pC, oC, ldc, pA, oA, sa0, sa1, pB, oB, ldb, k0, k1, fresh, *d):
        if not (isinstance(pC, types.CPointer) and pC == pA == pB and pC.dtype in (types.float32, types.float64)):
            return None
        if len(d) != (2 if stream else int(pair)):
            return None
        sig = types.void(pC, oC, ldc, pA, oA, sa0, sa1, pB, oB, ldb, k0, k1, fresh, *d)
        name = stream_symbol(isa, R, W, pC.dtype) if stream else symbol(isa, R, W, pC.dtype, pair)

        def codegen(context, builder, signature, args):
            tys = signature.args
            i64 = lambda v, ty: context.cast(builder, v, ty, types.int64)  # noqa: E731
            a = [i64(v, ty) if not isinstance(ty, types.CPointer) else v for v, ty in zip(args, tys)]
            pc = builder.gep(a[0], [a[1]])
            pa = builder.gep(a[3], [a[4]])
            pb = builder.gep(a[7], [a[8]])
            if inlined:   # the body's code here, not a call (the family's main block, in the tile)
                it = types.int64
                pc, pa, pb = (opaque(builder, p) for p in (pc, pa, pb))
                bsig, bgen = inlined(typingctx, pC, it, pC, it, it, pC, it, it, it, it)
                bgen(context, builder, bsig, [pc, a[2], pa, a[5], a[6], pb, a[9], a[10], a[11], a[12]])
                return context.get_dummy_value()
            i64t = ir.IntType(64)
            last = [builder.gep(a[7], [a[13]]), a[14]] if stream else a[13:]   # (pP, step) or [d]
            rest = [a[2]], [a[5], a[6]], [a[9], a[10], a[11], a[12]] + last
            fnty = ir.FunctionType(ir.VoidType(), [pc.type, i64t, pa.type, i64t, i64t, pb.type]
                                   + [v.type for v in rest[2]])
            fn = cgutils.get_or_insert_function(builder.module, fnty, name)
            builder.call(fn, [pc, *rest[0], pa, *rest[1], pb, *rest[2]])
            return context.get_dummy_value()
        return sig, codegen

    if stream:
        def call(typingctx, pC, oC, ldc, pA, oA, sa0, sa1, pB, oB, ldb, k0, k1, fresh, oP, step):
            return typer(typingctx, pC, oC, ldc, pA, oA, sa0, sa1, pB, oB, ldb, k0, k1, fresh, oP, step)
    elif pair:
        def call(typingctx, pC, oC, ldc, pA, oA, sa0, sa1, pB, oB, ldb, k0, k1, fresh, d):
            return typer(typingctx, pC, oC, ldc, pA, oA, sa0, sa1, pB, oB, ldb, k0, k1, fresh, d)
    else:
        def call(typingctx, pC, oC, ldc, pA, oA, sa0, sa1, pB, oB, ldb, k0, k1, fresh):
            return typer(typingctx, pC, oC, ldc, pA, oA, sa0, sa1, pB, oB, ldb, k0, k1, fresh)
    return intrinsic(call)


def copy_caller(isa, R, W):
    """acc(C, A, Bm, S, n0, c0, boff, k0, k1, fresh): C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] ·
    Bm[k, boff + c] for the R × W block n0 ≤ n < n0 + R, c0 ≤ c < c0 + W (``fresh``: from 0,
    C only written), reading Bm where it lies, and S[k, w] = Bm[k, boff + c0 + w] for
    k0 ≤ k < k1, w < W: family ``isa``'s compiled copying body (:func:`vector_body`'s ``copy``)
    for the arrays' dtype. S is a panel (K, W), C and Bm need unit stride along their rows."""
    if numba.config.DISABLE_JIT:
        def acc(C, A, Bm, S, n0, c0, boff, k0, k1, fresh):
            S[k0:k1, :W] = Bm[k0:k1, boff + c0:boff + c0 + W]
            if fresh:
                C[n0:n0 + R, c0:c0 + W] = 0
            acc_scalar(C, A, Bm, n0, n0 + R, c0, c0 + W, boff, k0, k1)
        return acc

    @intrinsic
    def acc(typingctx, C, A, Bm, S, n0, c0, boff, k0, k1, fresh):
        if not (_typed(C, A, Bm) and _typed(C, S, C)):
            return None
        sig = types.void(C, A, Bm, S, n0, c0, boff, k0, k1, fresh)
        name = copy_symbol(isa, R, W, C.dtype)

        def codegen(context, builder, signature, args):
            tys = signature.args
            i64 = lambda v, ty: context.cast(builder, v, ty, types.int64)  # noqa: E731
            n0_, c0_, boff_, k0_, k1_, fresh_ = [i64(v, ty) for v, ty in zip(args[4:], tys[4:])]
            zero = context.get_constant(types.int64, 0)
            pC, ldc, _ = block_pointer(context, builder, tys[0], args[0], n0_, c0_)
            pA, sa0, sa1 = block_pointer(context, builder, tys[1], args[1], n0_, zero)
            pB, ldb, _ = block_pointer(context, builder, tys[2], args[2], zero, builder.add(boff_, c0_))
            pS, _ = element_ptr(context, builder, tys[3], args[3], zero, zero)
            i64t = ir.IntType(64)
            fnty = ir.FunctionType(ir.VoidType(), [pC.type, i64t, pA.type, i64t, i64t, pB.type] + [i64t] * 4 + [pS.type])
            fn = cgutils.get_or_insert_function(builder.module, fnty, name)
            builder.call(fn, [pC, ldc, pA, sa0, sa1, pB, ldb, k0_, k1_, fresh_, pS])
            return context.get_dummy_value()
        return sig, codegen
    return acc


def _typed(C, A, Bm):
    return (all(isinstance(a, types.Array) and a.ndim == 2 and a.dtype == C.dtype for a in (C, A, Bm))
            and C.dtype in (types.float32, types.float64))


def tile_caller(isa):
    """acc(C, A, Bm, n0, n1, c0, c1, boff, k0, k1, KC, fresh): C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] ·
    Bm[k, boff + c] for n0 ≤ n < n1, c0 ≤ c < c1 (``fresh``: C[n, c] = the sum, each from 0, C
    only written), by calling family ``isa``'s compiled ``tile`` for the arrays' dtype with
    pointers to C[n0, c0], A[n0, 0] and Bm[0, boff + c0] and the arrays' strides in elements. C
    and Bm need unit stride along their rows; A any strides.

    One C function per dtype serves every kernel and every layout of the arrays: a Numba helper
    would be compiled again for each combination of layouts (about 0.9 s each) and optimised
    again inside each kernel."""
    if numba.config.DISABLE_JIT:
        def acc(C, A, Bm, n0, n1, c0, c1, boff, k0, k1, KC, fresh):
            if fresh:
                C[n0:n1, c0:c1] = 0
            acc_scalar(C, A, Bm, n0, n1, c0, c1, boff, k0, k1)
        return acc

    @intrinsic
    def acc(typingctx, C, A, Bm, n0, n1, c0, c1, boff, k0, k1, KC, fresh):
        if not _typed(C, A, Bm):
            return None
        sig = types.void(C, A, Bm, n0, n1, c0, c1, boff, k0, k1, KC, fresh)
        name = tile_symbol(isa, C.dtype)

        def codegen(context, builder, signature, args):
            tys = signature.args
            i64 = lambda v, ty: context.cast(builder, v, ty, types.int64)  # noqa: E731
            n0_, n1_, c0_, c1_, boff_, k0_, k1_, kc_, fresh_ = [i64(v, ty) for v, ty in zip(args[3:], tys[3:])]
            zero = context.get_constant(types.int64, 0)
            pC, ldc, _ = block_pointer(context, builder, tys[0], args[0], n0_, c0_)
            pA, sa0, sa1 = block_pointer(context, builder, tys[1], args[1], n0_, zero)
            pB, ldb, _ = block_pointer(context, builder, tys[2], args[2], zero, builder.add(boff_, c0_))
            i64t = ir.IntType(64)
            fnty = ir.FunctionType(ir.VoidType(), [pC.type, i64t, pA.type, i64t, i64t, pB.type] + [i64t] * 7)
            fn = cgutils.get_or_insert_function(builder.module, fnty, name)
            builder.call(fn, [pC, ldc, pA, sa0, sa1, pB, ldb, builder.sub(n1_, n0_), builder.sub(c1_, c0_),
                              k0_, k1_, kc_, fresh_])
            return context.get_dummy_value()
        return sig, codegen
    return acc
