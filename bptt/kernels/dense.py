"""Dense (fully connected) layer: y = x·Wᵀ + b, as ``torch.nn.Linear``, and the blocked product
every kernel shares.

Shapes: x (N, I), W (O, I), b (O,), y (N, O). N is any number of rows (B, or B·T).

Blocking. Every matrix product in bptt is written as C[n, c] += Σ_k A[n, k] · Bm[k, c], with Bm
first copied into *panels* of ``PANEL`` = 128 columns (:func:`pack_panel`, or
:func:`pack_panel_T` for a Bm = Wᵀ), each panel one contiguous (K, 128) block, and computed by
:func:`acc_panels` on one tile of at most ``ROWS`` rows × ``COLS`` columns, panel by panel with
:func:`acc_tile`: k in blocks of ``KC`` (so that the panel's block of rows stays in cache while
the tile's rows reuse it), and inside a block, register-blocked micro-kernels
(:mod:`bptt.kernels.micro`) of 4 rows × 64 columns, then 32, 16, 8, 4, 2 and 1 columns for the
last columns, and the same for single rows, except that a single row takes its columns 128 at a
time (``micro_1x64x2``: two 64-wide blocks in one k loop, 8 vector chains in flight instead of
4) and 65 to 127 of them in one call of two overlapping blocks. Every path computes each output
the same way,

    s = C[n, c];  for k in increasing order: s = fma(A[n, k], Bm[k, c], s);  C[n, c] = s

one fused multiply-add chain in a fixed order (:func:`acc_scalar` is the plain version), so the
result is the same bits for any tiling, any thread count and any build, vectorised or not.
"""
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ..jit import external, fma, helper, inline, kernel, max_threads, prange
from . import micro

ROWS = 32    # rows of C per tile
COLS = 256   # columns of C per tile (a panel of Bm, KC × COLS, is reused by the tile's rows)
KC = 256     # k per block inside a tile
CHUNKS = max_threads()   # parallel chunks of a recurrent sweep's batch: one per core (a constant
                         # in the compiled kernels: only speed depends on it, never the bits)


@helper
def acc_scalar(C, A, Bm, n0, n1, c0, c1, boff, k0, k1):
    """C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] · Bm[k, boff + c], one element at a time: the plain
    form of :func:`acc_panels` (the tests compare the tiles with it bitwise; under
    ``NUMBA_DISABLE_JIT=1`` it stands in for the micro-kernels)."""
    for n in range(n0, n1):
        for c in range(c0, c1):
            s = C[n, c]
            for k in range(k0, k1):
                s = fma(A[n, k], Bm[k, boff + c], s)
            C[n, c] = s


def _element_ptr(context, builder, ty, val, i, j):
    """(pointer to element [i, j], strides in bytes) of the 2-D array ``val`` of Numba type ``ty``,
    in generated code (no bounds or negative-index checks)."""
    ary = context.make_array(ty)(context, builder, val)
    shape = cgutils.unpack_tuple(builder, ary.shape, 2)
    strides = cgutils.unpack_tuple(builder, ary.strides, 2)
    ptr = cgutils.get_item_pointer2(context, builder, ary.data, shape, strides, ty.layout, [i, j],
                                    wraparound=False)
    return ptr, strides


def _transpose_block_intrinsic():
    """block(out, W, o0, i0): out[i0 + i, o0 + o] = W[o0 + o, i0 + i] for 0 ≤ i, o < 16.

    Both arrays must have unit stride along their rows (the caller checks). The 16 rows of W's
    block are loaded as 16-element vectors and transposed in registers by four rounds of
    two-vector shuffles (round r interleaves vectors k and k + 8): one ``vpermt2ps`` per vector per
    round with AVX-512, about 4× fewer instructions than copying element by element, whose
    strided stores run at one element per cycle. A copy: the bits are W's.
    """
    N = 16

    @intrinsic
    def block(typingctx, out, W, o0, i0):
        if not (isinstance(out, types.Array) and isinstance(W, types.Array) and out.ndim == W.ndim == 2
                and out.dtype == W.dtype and isinstance(W.dtype, types.Float)):
            return None
        sig = types.void(out, W, o0, i0)

        def codegen(context, builder, signature, args):
            tys = signature.args
            i64 = lambda v, ty: context.cast(builder, v, ty, types.int64)  # noqa: E731
            o0_, i0_ = i64(args[2], tys[2]), i64(args[3], tys[3])
            elt = context.get_data_type(W.dtype)
            vty = ir.VectorType(elt, N)
            align = context.get_abi_sizeof(elt)

            def row_ptr(ty, val, i, j):
                ptr, _ = _element_ptr(context, builder, ty, val, i, j)
                return builder.bitcast(ptr, vty.as_pointer())

            cst = lambda v: context.get_constant(types.int64, v)  # noqa: E731
            v = [builder.load(row_ptr(tys[1], args[1], builder.add(o0_, cst(r)), i0_), align=align)
                 for r in range(N)]
            i32 = ir.IntType(32)
            lo = ir.Constant(ir.VectorType(i32, N), [j // 2 + (j % 2) * N for j in range(N)])
            hi = ir.Constant(ir.VectorType(i32, N), [N // 2 + j // 2 + (j % 2) * N for j in range(N)])
            for _ in range(4):   # log2(16) rounds
                new = []
                for k in range(N // 2):
                    new.append(builder.shuffle_vector(v[k], v[k + N // 2], lo))
                    new.append(builder.shuffle_vector(v[k], v[k + N // 2], hi))
                v = new
            for r in range(N):
                builder.store(v[r], row_ptr(tys[0], args[0], builder.add(i0_, cst(r)), o0_), align=align)
            return context.get_dummy_value()
        return sig, codegen
    return block


if numba.config.DISABLE_JIT:   # plain Python
    def transpose_block(out, W, o0, i0):
        out[i0:i0 + 16, o0:o0 + 16] = W[o0:o0 + 16, i0:i0 + 16].T
else:
    transpose_block = _transpose_block_intrinsic()


# -- the micro-kernels, compiled once per dtype and called by name ------------------------------

def _symbol(R, W, dtype, pair=False) -> str:
    return f"bptt_micro_{R}x{W}{'x2' if pair else ''}_{dtype}"


def _compile_micro():
    for pair, sizes in ((False, micro.SIZES), (True, micro.PAIRS)):
        for R, W in sizes:
            fn = getattr(micro, f"micro_{R}x{W}{'x2' if pair else ''}")
            for dt in (types.float32, types.float64):
                p = types.CPointer(dt)
                args = [p, types.int64, p, types.int64, types.int64, p, types.int64, types.int64,
                        types.int64] + [types.int64] * pair
                external(fn, types.void(*args), _symbol(R, W, dt, pair))


def _micro_codegen(R, W, pair, dtype):
    """Code that calls the compiled micro-kernel: pointers to the blocks' first elements and the
    arrays' strides in elements (then ``d`` for a pair)."""
    name = _symbol(R, W, dtype, pair)

    def codegen(context, builder, signature, args):
        tys = signature.args
        i64 = lambda v, ty: context.cast(builder, v, ty, types.int64)  # noqa: E731
        ints = [i64(v, ty) for v, ty in zip(args[3:], tys[3:])]
        n0_, c0_, boff_, k0_, k1_ = ints[:5]
        zero = context.get_constant(types.int64, 0)
        size = context.get_constant(types.int64, context.get_abi_sizeof(context.get_data_type(dtype)))

        def block(ty, val, i, j):
            ptr, strides = _element_ptr(context, builder, ty, val, i, j)
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


def _micro_caller(R, W):
    """call(C, A, Bm, n0, c0, boff, k0, k1): C[n0:n0+R, c0:c0+W] += A[n0:n0+R, k0:k1] ·
    Bm[k0:k1, boff+c0:boff+c0+W], by calling the compiled ``micro_RxW`` for the arrays' dtype
    with pointers to the blocks' first elements and the arrays' strides."""
    @intrinsic
    def call(typingctx, C, A, Bm, n0, c0, boff, k0, k1):
        if not _typed(C, A, Bm):
            return None
        return types.void(C, A, Bm, n0, c0, boff, k0, k1), _micro_codegen(R, W, False, C.dtype)
    return call


def _pair_caller(R, W):
    """call(C, A, Bm, n0, c0, boff, k0, k1, d): as :func:`_micro_caller`'s, for the R × W blocks
    at columns c0 and c0 + d (0 ≤ d ≤ W) at once, with ``micro_RxWx2``."""
    @intrinsic
    def call(typingctx, C, A, Bm, n0, c0, boff, k0, k1, d):
        if not _typed(C, A, Bm):
            return None
        return types.void(C, A, Bm, n0, c0, boff, k0, k1, d), _micro_codegen(R, W, True, C.dtype)
    return call


if numba.config.DISABLE_JIT:   # plain Python: every block element by element
    def _micro_caller(R, W):  # noqa: F811
        def call(C, A, Bm, n0, c0, boff, k0, k1):
            acc_scalar(C, A, Bm, n0, n0 + R, c0, c0 + W, boff, k0, k1)
        return call

    def _pair_caller(R, W):  # noqa: F811
        def call(C, A, Bm, n0, c0, boff, k0, k1, d):
            acc_scalar(C, A, Bm, n0, n0 + R, c0, c0 + d + W, boff, k0, k1)
        return call
else:
    _compile_micro()

micro_4x64 = _micro_caller(4, 64)
micro_4x32 = _micro_caller(4, 32)
micro_4x16 = _micro_caller(4, 16)
micro_4x8 = _micro_caller(4, 8)
micro_4x4 = _micro_caller(4, 4)
micro_4x2 = _micro_caller(4, 2)
micro_4x1 = _micro_caller(4, 1)
micro_1x64 = _micro_caller(1, 64)
micro_1x32 = _micro_caller(1, 32)
micro_1x16 = _micro_caller(1, 16)
micro_1x8 = _micro_caller(1, 8)
micro_1x4 = _micro_caller(1, 4)
micro_1x2 = _micro_caller(1, 2)
micro_1x1 = _micro_caller(1, 1)
micro_1x64x2 = _pair_caller(1, 64)


# -- packed panels ------------------------------------------------------------------------------
#
# A micro-kernel reads its 64 columns of Bm once per k: from a row-major Bm that is one cache line
# group per row, a whole row (often pages) apart, so the hardware fetches (and translates) a new
# page at every k. Copying Bm once per call into *panels* of PANEL columns, each panel a contiguous
# (K, PANEL) block, makes those reads short strides through one block: about 20% faster on large products
# (measured 176 → 215 GFLOP/s for 768×1024 · 1024×4096 on 2 threads). The copy is O(K·M), against
# O(N·K·M) for the product. Packing moves numbers only, so the bits of every result are unchanged.

PANEL = 128   # columns per panel: two of the micro-kernels' widest block (a single row runs
              # both at once, micro_1x64x2)


@inline
def n_panels(M):
    """Panels of ``PANEL`` columns covering M columns (the last one may be partly used)."""
    return (M + PANEL - 1) // PANEL


@inline
def empty_panels(M, K, like):
    """An uninitialised (n_panels(M), K, PANEL) array of ``like``'s dtype, starting on a 64-byte
    boundary. Each panel row is then whole cache lines, so a micro-kernel's vector loads of B never
    straddle two lines; Numba's own np.empty is sometimes only 32-byte aligned, and the split loads
    made a whole LSTM step (B = 50, H = 128) about 30% slower in the processes where it was."""
    n = n_panels(M) * K * PANEL
    buf = np.empty(n + 64 // like.itemsize, like.dtype)
    off = (64 - buf.ctypes.data % 64) % 64 // buf.itemsize
    return buf[off:off + n].reshape((n_panels(M), K, PANEL))


@inline
def pack_panel_T(P, W, p):
    """P[p, k, w] = W[p·PANEL + w, k]: panel p of Wᵀ, for W (O, I) and P (n_panels(O), I, PANEL).

    Whole 16 × 16 blocks are transposed in registers (:func:`transpose_block`) when W has
    contiguous rows; the edges, and other layouts, element by element (W read along its rows).
    Columns of the last panel past O are left as they are (never read)."""
    O, I = W.shape
    o0 = p * PANEL
    wn = min(PANEL, O - o0)
    Pp = P[p]
    Wp = W[o0:o0 + wn]
    k_full = 0
    w_full = 0
    if W.strides[1] == W.itemsize:
        k_full = I // 16 * 16
        w_full = wn // 16 * 16
        for w0 in range(0, w_full, 16):
            for k0 in range(0, k_full, 16):
                transpose_block(Pp, Wp, w0, k0)
    for w in range(wn):                   # the edges: k past k_full, and w past w_full
        Wr = Wp[w]
        for k in range(0 if w >= w_full else k_full, I):
            Pp[k, w] = Wr[k]


@inline
def pack_panel(P, Bm, p, boff, M, k0, k1, r0):
    """P[p, r0 + k - k0, w] = Bm[k, boff + p·PANEL + w] for k0 ≤ k < k1 (w < PANEL,
    p·PANEL + w < M): rows of panel p of the M columns of Bm (K, ·) from column boff, for
    P (n_panels(M), ·, PANEL); :func:`packed` runs it in parallel jobs."""
    c0 = boff + p * PANEL
    wn = min(PANEL, M - p * PANEL)
    Pp = P[p]
    for k in range(k0, k1):
        src = Bm[k, c0:c0 + wn]
        dst = Pp[r0 + k - k0]
        for w in range(wn):
            dst[w] = src[w]


PACK_ROWS = 256   # rows of one panel per parallel packing job


@inline
def packed(Bm, boff, M):
    """Columns boff ... boff+M-1 of Bm (K, ·) in panels: a new (n_panels(M), K, PANEL) array.

    Packed in parallel jobs of one panel × ``PACK_ROWS`` rows (one panel may be most of the
    matrix). Called from a kernel, its ``prange`` joins the kernel's own parallel code:
    :func:`bptt.jit.inline` inlines at Numba's IR level, before loops are parallelised."""
    K = Bm.shape[0]
    P = empty_panels(M, K, Bm)
    nb = (K + PACK_ROWS - 1) // PACK_ROWS
    for j in prange(n_panels(M) * nb):
        k0 = j % nb * PACK_ROWS
        pack_panel(P, Bm, j // nb, boff, M, k0, min(K, k0 + PACK_ROWS), k0)
    return P


@inline
def packed_T(W):
    """Wᵀ (I, O) in panels, for W (O, I): a new (n_panels(O), I, PANEL) array, a panel per
    parallel job (as :func:`packed`)."""
    P = empty_panels(W.shape[0], W.shape[1], W)
    for p in prange(n_panels(W.shape[0])):
        pack_panel_T(P, W, p)
    return P


@helper
def acc_tile(C, A, Bm, n0, n1, c0, c1, boff, k0, k1):
    """C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] · Bm[k, boff + c]   for n0 ≤ n < n1, c0 ≤ c < c1.

    C and Bm must have contiguous rows (their rows are sliced); A may be any view (read by
    element). Micro-kernels of 4 rows × 64 columns cover the tile, then 32, 16, 8, 4, 2 and 1
    columns the rest; a single row runs pairs of 64-wide blocks (overlapping for 65 to 127 columns
    left), then the same tails. Every output is one fma chain over k in increasing order, in
    k-blocks of ``KC``.
    """
    for kb in range(k0, k1, KC):
        ke = min(k1, kb + KC)
        n = n0
        while n < n1:
            if n + 4 <= n1:
                c = c0
                while c + 64 <= c1:
                    micro_4x64(C, A, Bm, n, c, boff, kb, ke)
                    c += 64
                if c + 32 <= c1:
                    micro_4x32(C, A, Bm, n, c, boff, kb, ke)
                    c += 32
                if c + 16 <= c1:
                    micro_4x16(C, A, Bm, n, c, boff, kb, ke)
                    c += 16
                if c + 8 <= c1:
                    micro_4x8(C, A, Bm, n, c, boff, kb, ke)
                    c += 8
                if c + 4 <= c1:
                    micro_4x4(C, A, Bm, n, c, boff, kb, ke)
                    c += 4
                if c + 2 <= c1:
                    micro_4x2(C, A, Bm, n, c, boff, kb, ke)
                    c += 2
                if c < c1:
                    micro_4x1(C, A, Bm, n, c, boff, kb, ke)
                n += 4
            else:
                c = c0
                while c + 128 <= c1:          # pairs: 8 vector chains in flight instead of 4
                    micro_1x64x2(C, A, Bm, n, c, boff, kb, ke, 64)
                    c += 128
                if c + 64 < c1:               # 65 to 127 columns left: one overlapping pair
                    micro_1x64x2(C, A, Bm, n, c, boff, kb, ke, c1 - c - 64)
                    c = c1
                if c + 64 <= c1:
                    micro_1x64(C, A, Bm, n, c, boff, kb, ke)
                    c += 64
                if c + 32 <= c1:
                    micro_1x32(C, A, Bm, n, c, boff, kb, ke)
                    c += 32
                if c + 16 <= c1:
                    micro_1x16(C, A, Bm, n, c, boff, kb, ke)
                    c += 16
                if c + 8 <= c1:
                    micro_1x8(C, A, Bm, n, c, boff, kb, ke)
                    c += 8
                if c + 4 <= c1:
                    micro_1x4(C, A, Bm, n, c, boff, kb, ke)
                    c += 4
                if c + 2 <= c1:
                    micro_1x2(C, A, Bm, n, c, boff, kb, ke)
                    c += 2
                if c < c1:
                    micro_1x1(C, A, Bm, n, c, boff, kb, ke)
                n += 1


@helper
def acc_panels(C, A, P, n0, n1, c0, c1, k0, k1):
    """:func:`acc_tile` with Bm given as packed panels, Bm[k, c] = P[c // PANEL, k, c % PANEL]
    (see above), panel by panel; c0 must be a multiple of ``PANEL``. Each panel's k-blocks run in
    increasing order, so every output is the same fma chain as in :func:`acc_tile`."""
    for p in range(c0 // PANEL, (c1 + PANEL - 1) // PANEL):
        acc_tile(C, A, P[p], n0, n1, p * PANEL, min(c1, (p + 1) * PANEL), -p * PANEL, k0, k1)


@helper
def acc_narrow(C, AT, Bw, c0, r0, r1):
    """C[r, c0 + c] += Σ_k AT[k, r] · Bw[k, c]   for r0 ≤ r < r1 and the few (< 16) columns c of
    Bw (K, W): :func:`acc_tile`'s sums with A = ATᵀ, computed transposed.

    A weight gradient's last I mod 16 columns would take 4-row micro-kernels 8, 4, 2 or 1 wide,
    only 4 short latency-bound chains per call. Transposed, Cᵀ[c, r] += Σ_k Bw[k, c] · AT[k, r]
    runs its vector chains along r instead, reading AT's contiguous rows. Each output is the same
    fma chain over k in order (a·b = b·a exactly), so the bits are acc_tile's.
    AT : (K, ·) with contiguous rows.  Bw : (K, W), any view.  C : contiguous rows.
    """
    W = Bw.shape[1]
    R = r1 - r0
    CT = np.empty((W, R), C.dtype)
    for c in range(W):
        CTc = CT[c]
        for r in range(R):
            CTc[r] = C[r0 + r, c0 + c]
    acc_tile(CT, Bw.T, AT, 0, W, 0, R, r0, 0, AT.shape[0])
    for r in range(R):
        Cr = C[r0 + r]
        for c in range(W):
            Cr[c0 + c] = CT[c, r]


@inline
def add_column_sums(db, g, u0, u1):
    """db[u] += Σ_n g[n, u] for u0 ≤ u < u1, for the bias gradients: each sum in float64 from 0,
    over n in order.

    db : (U,) accumulated.  g : (N, U) with contiguous rows. g is read row by row and the
    independent sums advance together (vectorised); a column at a time would stride through g.
    Kernels run blocks of columns in a ``prange`` (independent outputs).
    """
    N = g.shape[0]
    s = np.zeros(u1 - u0, np.float64)
    for n in range(N):
        gn = g[n, u0:u1]
        for u in range(u1 - u0):
            s[u] += gn[u]
    dbu = db[u0:u1]
    for u in range(u1 - u0):
        dbu[u] += s[u]


@inline
def row_chunks(B):
    """(chunks, rows per chunk) when a recurrent sweep splits its B independent sequences into
    parallel chunks: one chunk per core (at most), of equal size (the last one taking what is left),
    so each thread streams W_hh through its cache once per step for all its rows. Equal chunks
    rather than whole blocks of 4 rows: rows past a multiple of 4 run the 1-row micro-kernels at
    about half speed, so B = 50 as 25 + 25 (6 blocks and 1 row each) beats 24 + 26 (2 rows in one
    chunk) by 8% per step. Results never depend on it: every row's sums run in the same order in
    any chunk."""
    rc = (B + CHUNKS - 1) // CHUNKS
    return (B + rc - 1) // rc, rc


@inline
def n_tiles(N, M):
    """Number of ROWS × COLS tiles covering an (N, M) output."""
    return ((N + ROWS - 1) // ROWS) * ((M + COLS - 1) // COLS)


@inline
def tile_origin(tile, N, M):
    """(n0, c0), the first row and column of tile number ``tile`` of an (N, M) output C += A·B.

    The order decides what stays in cache between consecutive tiles of a thread's share (the
    ``prange`` hands each thread a contiguous range of tile numbers). If B (K, M) is the larger
    operand (M > N), tiles run down a column block first, so the block of B's panels they share
    stays in L2 while every row block of A passes (at N = 800, M = 4096, K = 1024 B is read once
    instead of once per row block); otherwise along a row block, sharing A's rows. Only the
    speed depends on it: every output is the same fma chain in any order."""
    nr = (N + ROWS - 1) // ROWS
    nc = (M + COLS - 1) // COLS
    if M > N:
        return (tile % nr) * ROWS, (tile // nr) * COLS
    return (tile // nc) * ROWS, (tile % nc) * COLS


@kernel
def dense_forward(y, x, W, b):
    """y[n, o] = b[o] + Σ_i x[n, i] W[o, i].

    y : (N, O) output, x : (N, I), W : (O, I), b : (O,).
    Blocked with :func:`acc_panels` on Wᵀ (I, O), packed into panels once per call; parallel over
    tiles.
    """
    N, I = x.shape
    O = W.shape[0]
    P = packed_T(W)
    for tile in prange(n_tiles(N, O)):
        n0, c0 = tile_origin(tile, N, O)
        n1 = min(N, n0 + ROWS)
        c1 = min(O, c0 + COLS)
        fill_rows(y, b, n0, n1, c0, c1)
        acc_panels(y, x, P, n0, n1, c0, c1, 0, I)


@inline
def fill_rows(C, b, n0, n1, c0, c1):
    """C[n, c] = b[c] for n0 ≤ n < n1, c0 ≤ c < c1: a tile's bias, before its products."""
    bt = b[c0:c1]
    for n in range(n0, n1):          # row views: 2-D indexing in the loop would not vectorise
        Cn = C[n, c0:c1]
        for o in range(c1 - c0):
            Cn[o] = bt[o]


@kernel
def dense_backward_input(dx, dy, W):
    """dx[n, i] += Σ_o dy[n, o] W[o, i]   (∂L/∂x = dy·W).

    dx : (N, I) accumulated, dy : (N, O), W : (O, I). Blocked with :func:`acc_panels` on W in
    panels; parallel over tiles of dx.
    """
    N, O = dy.shape
    I = W.shape[1]
    P = packed(W, 0, I)
    for tile in prange(n_tiles(N, I)):
        n0, c0 = tile_origin(tile, N, I)
        acc_panels(dx, dy, P, n0, min(N, n0 + ROWS), c0, min(I, c0 + COLS), 0, O)


@inline
def weight_grads(dW, db, dy, P, I):
    """dW[o, i] += Σ_n dy[n, o] X[n, i],  db[o] += Σ_n dy[n, o], for X (N, I) given in panels P
    (:func:`packed`): the dense layer's weight gradients, and a recurrent layer's below
    ``bptt.kernels.rnn.SPLIT_B`` sequences. dW : (O, I), db : (O,), dy : (N, O).

    Parallel over tiles of dW (:func:`acc_panels` with A = dyᵀ; the last I mod 16 columns with
    :func:`acc_narrow`) and over blocks of db, so each entry has one writer and sums over n in
    order. Inline: its ``prange`` loops join the calling kernel's parallel code."""
    N, O = dy.shape
    I16 = I - I % 16
    for blk in prange((O + COLS - 1) // COLS):
        add_column_sums(db, dy, blk * COLS, min(O, blk * COLS + COLS))
    for tile in prange(n_tiles(O, I16)):
        n0, c0 = tile_origin(tile, O, I16)
        acc_panels(dW, dy.T, P, n0, min(O, n0 + ROWS), c0, min(I16, c0 + COLS), 0, N)
    if I16 < I:
        tail = P[I16 // PANEL][:, I16 % PANEL:I16 % PANEL + I - I16]
        for tile in prange((O + COLS - 1) // COLS):
            acc_narrow(dW, dy, tail, I16, tile * COLS, min(O, tile * COLS + COLS))


@kernel
def dense_backward_params(dW, db, dy, x):
    """dW[o, i] += Σ_n dy[n, o] x[n, i],  db[o] += Σ_n dy[n, o]   (∂L/∂W = dyᵀ·x).

    dW : (O, I) accumulated, db : (O,) accumulated, dy : (N, O), x : (N, I).
    x is packed into panels, then :func:`weight_grads`.
    """
    weight_grads(dW, db, dy, packed(x, 0, x.shape[1]), x.shape[1])
