"""The product engine: every matrix product in bptt, C[n, c] += Σ_k A[n, k] · Bm[k, c].

Layers of the engine, each on the one below:

1. micro-kernels (:mod:`bptt.kernels.micro_avx512`, ``micro_avx2``, ``micro_generic``, written by
   :mod:`bptt.kernels.microgen`, called through :mod:`bptt.kernels.microcall`): a block of R rows
   × W columns of C held in registers for a whole range of k. The family is the one for the
   ISA :mod:`bptt.jit` chose (``bptt.jit.ISA``); each family's ``tile`` covers any block of C
   with its kernels.
2. panels: Bm copied once per call into *panels* of ``PANEL`` columns (the family's: 32 for
   avx512, 24 for avx2 and generic), each panel one contiguous (K, PANEL) block
   (:func:`packed`, or :func:`packed_T` for Bm = Wᵀ).
3. tiles: :func:`acc_panels` runs a tile of at most ``ROWS`` rows × ``COLS`` columns panel by
   panel, k in blocks of ``KC`` (so that the panel's block of rows stays in cache while the
   tile's rows reuse it); :func:`n_blocks` and :func:`block_origin` number the jobs of a large
   product (run as a job set, :func:`bptt.jit.jobs`) and :func:`block_product` runs one, and
   :func:`sweep_chunks` and :func:`chunk_rows` split a recurrent sweep's batch across threads.

Every path computes each output the same way,

    s = C[n, c];  for k in increasing order: s = fma(A[n, k], Bm[k, c], s);  C[n, c] = s

one fused multiply-add chain in a fixed order (:func:`acc_scalar` is the plain version), so the
result is the same bits for any tiling, any thread count, any build and any ISA family. A product
that sets C instead of adding to it (a backward pass's dx or dW after ``zero_grad``) passes
``fresh``: the chains start from s = 0 in registers, and C is only written. The same bits as
clearing C first, without the clearing pass or the loads of the cleared block.
"""
import functools
import importlib
import itertools
import threading

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from .. import jit
from ..jit import L2_BYTES, L3_BYTES, cache_bytes, helper, inline, jobs, max_threads, prange
from .microcall import acc_scalar, copy_caller, counted_loop, element_ptr, ensure, panel_block, tile_caller

micro = importlib.import_module(f"{__package__}.micro_{jit.ISA}")   # the ISA's family
jit.on_first_use(lambda dtype: ensure(jit.ISA, dtype))

PANEL = micro.PANEL   # columns per panel: a whole number of the family's widest blocks
TB = 16 if PANEL % 16 == 0 else 8   # transpose blocks of TB × TB when packing Wᵀ (TB divides PANEL)
NARROW = micro.NARROW  # a weight gradient's last I mod NARROW columns run transposed (acc_narrow)
ROWS = 48             # rows of C per tile: whole blocks of every family (12, 8 or 4 rows)
COLS = 256 // PANEL * PANEL   # columns of C per tile, whole panels (256 for avx512, 240 for avx2):
                              # a tile's block of A (ROWS × KC) is reused by every panel from L2
# k per block inside a tile. A job's block of C is read and written once per k-block (its tiles
# pass in turn, k-blocks outermost: block_product), and each micro-kernel call loads and stores
# its block of C; where C's rows are a multiple of 4 KB apart (a gate workspace at 4H = 1024·n, dW
# at I = 1024) the avx512 blocks' 24 lines of C fall into one set of L1. k-blocks of 512 halve
# all that: on a Zen 4, paired, the LSTM and GRU `deepbench` steps 4-5 % faster on either x86
# family (9 % once with avx2), RNN `fastrnns` 3-4 %, the MLP 2-3 % (docs/performance.md,
# twenty-third session). The KC × COLS block of B (512 KB) then needs an L2 of 1 MB or more (a
# Zen 3's is 512 KB: 256 there); the generic family, not measured, keeps 256.
KC = 512 if jit.ISA != "generic" and L2_BYTES >= 1 << 20 else 256
CHUNKS = max_threads()   # the cores: a large product's jobs are a multiple of it (n_blocks; a
                         # constant in the compiled kernels, and in their cache names:
                         # jit._sources_hash; only speed depends on it, never the bits)


__all__ = ["aligned_empty", "aliased", "unaliased_copy", "apart", "scratch", "scratch_panels", "release_scratch", "acc_scalar", "acc_tile", "acc_panels", "acc_narrow", "packed", "packed_T", "panels", "panels_T",
           "new_panels", "pack_all_into", "pack_T_into", "sweep_chunks", "block_jobs", "transposed_copy", "apart_rows", "transpose_copy_into", "packed_all", "panels_all", "LAST_PANELS", "LAST_PANELS_T", "pack_panel",
           "pack_panel_T", "transpose_rows_into", "empty_panels", "n_panels", "chunk_rows",
           "n_blocks", "block_index", "block_origin", "packing_product", "COPY", "even_bound", "even_columns", "k_blocks", "k_block", "block_product", "JOBS",
           "add_column_sums", "own_flags", "own_panels_of", "own_panels", "own_panels_T",
           "own_transposed_of", "own_rows_T", "own_copies", "OWN_BYTES", "OWN_TOTAL", "PANEL", "ROWS", "COLS", "KC", "CHUNKS", "NARROW", "TB",
           "L2_BYTES", "L3_BYTES", "cache_bytes"]   # the last three re-exported from bptt.jit


def _transpose_block_intrinsic(N):
    """block(out, W, o0, i0): out[i0 + i, o0 + o] = W[o0 + o, i0 + i] for 0 ≤ i, o < N (16 or 8).

    Both arrays must have unit stride along their rows (the caller checks). The N rows of W's
    block are loaded as N-element vectors and transposed in registers by log2(N) rounds of
    two-vector shuffles (a round interleaves vectors k and k + N/2): one ``vpermt2ps`` per vector
    per round with AVX-512, about 4× fewer instructions than copying element by element, whose
    strided stores run at one element per cycle. A copy: the bits are W's.
    """
    rounds = N.bit_length() - 1

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
                ptr, _ = element_ptr(context, builder, ty, val, i, j)
                return builder.bitcast(ptr, vty.as_pointer())

            cst = lambda v: context.get_constant(types.int64, v)  # noqa: E731
            v = [builder.load(row_ptr(tys[1], args[1], builder.add(o0_, cst(r)), i0_), align=align)
                 for r in range(N)]
            i32 = ir.IntType(32)
            lo = ir.Constant(ir.VectorType(i32, N), [j // 2 + (j % 2) * N for j in range(N)])
            hi = ir.Constant(ir.VectorType(i32, N), [N // 2 + j // 2 + (j % 2) * N for j in range(N)])
            for _ in range(rounds):
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
        out[i0:i0 + TB, o0:o0 + TB] = W[o0:o0 + TB, i0:i0 + TB].T
else:
    transpose_block = _transpose_block_intrinsic(TB)


# -- packed panels ------------------------------------------------------------------------------
#
# A micro-kernel reads its 64 columns of Bm once per k: from a row-major Bm that is one cache line
# group per row, a whole row (often pages) apart, so the hardware fetches (and translates) a new
# page at every k. Copying Bm once per call into *panels* of PANEL columns, each panel a contiguous
# (K, PANEL) block, makes those reads short strides through one block, and large products faster
# (docs/performance.md, "Design measurements"). The copy is O(K·M), against
# O(N·K·M) for the product. Packing moves numbers only, so the bits of every result are unchanged.

@inline
def n_panels(M):
    """Panels of ``PANEL`` columns covering M columns (the last one may be partly used)."""
    return (M + PANEL - 1) // PANEL


@inline
def empty_panels(M, K, like):
    """An uninitialised (n_panels(M), K, PANEL) array of ``like``'s dtype, starting on a 64-byte
    boundary. Each panel row is then whole cache lines, so a micro-kernel's vector loads of B never
    straddle two lines; Numba's own np.empty is sometimes only 32-byte aligned, and the split loads
    slowed a whole LSTM step in the processes where it was (docs/performance.md)."""
    return aligned_vector(n_panels(M) * K * PANEL, like).reshape((n_panels(M), K, PANEL))


@inline
def aligned_vector(n, like):
    """An uninitialised 1-D array of n elements of ``like``'s dtype starting on a 64-byte boundary
    (for compiled callers; :func:`aligned_empty` is the Python one)."""
    buf = np.empty(n + 64 // like.itemsize, like.dtype)
    off = (64 - buf.ctypes.data % 64) % 64 // buf.itemsize
    return buf[off:off + n]


@inline
def transpose_rows_into(out, W):
    """out[i, o] = W[o, i] for W (R, C) and out (C, R): with R, C ≥ TB and both of unit stride
    along their rows, TB × TB blocks transposed in registers (:func:`transpose_block`), the edges
    too: the last block of rows starts at R - TB (and of columns at C - TB), overlapping the one
    before it, whose outputs it writes again with the same values (element by element, the
    edges were strided stores one number at a time). Smaller or other layouts element by
    element (W read along its rows). A copy: the bits are W's."""
    R, C = W.shape
    if W.strides[1] == W.itemsize and out.strides[1] == out.itemsize and R >= TB and C >= TB:
        for o0 in range(0, R, TB):
            ob = min(o0, R - TB)
            for i0 in range(0, C, TB):
                transpose_block(out, W, ob, min(i0, C - TB))
        return
    for o in range(R):
        Wo = W[o]
        for i in range(C):
            out[i, o] = Wo[i]


@inline
def pack_panel_T(P, W, p):
    """P[p, k, w] = W[p·PANEL + w, k]: panel p of Wᵀ, for W (O, I) and P (n_panels(O), I, PANEL)
    (:func:`transpose_rows_into`). Columns of the last panel past O are left as they are (never
    read)."""
    o0 = p * PANEL
    wn = min(PANEL, W.shape[0] - o0)
    transpose_rows_into(P[p][:, :wn], W[o0:o0 + wn])


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
def pack_all_into(P, Bm):
    """P = Bm (K, M) in panels, every panel on this thread: :func:`packed_all` into a given
    (n_panels(M), K, PANEL) array, for a job that packs its own operand."""
    K, M = Bm.shape
    for p in range(n_panels(M)):
        pack_panel(P, Bm, p, 0, M, 0, K, 0)


@inline
def pack_T_into(P, W):
    """P = Wᵀ (I, O) in panels, for W (O, I), every panel on this thread: :func:`packed_T` into a
    given (n_panels(O), I, PANEL) array."""
    for p in range(n_panels(W.shape[0])):
        pack_panel_T(P, W, p)


@inline
def packed_T(W):
    """Wᵀ (I, O) in panels, for W (O, I): a new (n_panels(O), I, PANEL) array, a panel per
    parallel job (as :func:`packed`)."""
    P = empty_panels(W.shape[0], W.shape[1], W)
    for p in prange(n_panels(W.shape[0])):
        pack_panel_T(P, W, p)
    return P


# The same packings for kernels written in Python (:func:`bptt.jit.composite`): the panels are
# allocated here and each panel (or block of a panel's rows) is one job of a job set, so the
# packing code is compiled once per dtype and layout instead of inside every kernel that packs.

def new_panels(M, K, dtype):
    """:func:`empty_panels` for Python callers: an uninitialised (n_panels(M), K, PANEL) array of
    ``dtype`` starting on a 64-byte boundary (:func:`aligned_empty`). Allocated in Python: a
    compiled allocator saved about 2 µs a call but cost 0.6 s of every cold start, and the callers
    are the passes of large batches, whose calls take milliseconds."""
    return aligned_empty(((M + PANEL - 1) // PANEL, K, PANEL), dtype)


@jobs
def _pack_T_panel(p, npan, P, W):
    """Job p of :func:`panels_T`: panel p of Wᵀ."""
    pack_panel_T(P, W, p)


@jobs
def _pack_rows(j, njobs, P, Bm, boff, M):
    """Job j of :func:`panels`: ``PACK_ROWS`` rows of one panel (as :func:`packed`'s jobs)."""
    K = Bm.shape[0]
    nb = (K + PACK_ROWS - 1) // PACK_ROWS
    k0 = j % nb * PACK_ROWS
    pack_panel(P, Bm, j // nb, boff, M, k0, min(K, k0 + PACK_ROWS), k0)


def _panels_for(M, K, dtype, scratch_name):
    """(n_panels(M), K, PANEL) panels: new, or a scratch buffer (:func:`scratch_panels`)."""
    if scratch_name is None:
        return new_panels(M, K, dtype)
    return scratch_panels(scratch_name, M, K, dtype)


def panels_T(W, scratch_name=None):
    """:func:`packed_T` for composite kernels: Wᵀ (I, O) in panels, for W (O, I). With a
    ``scratch_name``, in that scratch buffer (:func:`scratch`: valid until the next call that
    names it), for a kernel that packs on every call: a fresh array of megabytes came back as
    fresh pages, 1,237 page faults in a char-LM step (docs/performance.md)."""
    P = _panels_for(W.shape[0], W.shape[1], W.dtype, scratch_name)
    _pack_T_panel(P.shape[0], P, W)
    return P


def panels(Bm, boff, M, scratch_name=None):
    """:func:`packed` for composite kernels: columns boff ... boff+M-1 of Bm (K, ·) in panels
    (``scratch_name``: as :func:`panels_T`)."""
    K = Bm.shape[0]
    P = _panels_for(M, K, Bm.dtype, scratch_name)
    _pack_rows(P.shape[0] * ((K + PACK_ROWS - 1) // PACK_ROWS), P, Bm, boff, M)
    return P


@inline
def packed_all(Bm):
    """All columns of Bm (K, M) in panels: :func:`packed` (Bm, 0, M)."""
    return packed(Bm, 0, Bm.shape[1])


def panels_all(Bm, scratch_name=None):
    """:func:`packed_all` for composite kernels (the packing a job set of its own;
    ``scratch_name``: as :func:`panels_T`)."""
    return panels(Bm, 0, Bm.shape[1], scratch_name)


def last_panels_T(W):
    """:func:`panels_T` into the scratch buffer of job sets' ``last`` matrices: a job set
    prepares its last argument just before its jobs and holds it only while they run."""
    return panels_T(W, "last_panels_T")


def last_panels_all(Bm):
    """:func:`panels_all` into a scratch buffer, as :func:`last_panels_T`."""
    return panels_all(Bm, "last_panels")


# A job set's ``last`` preparation (bptt.jit.JobSet): its last argument, a matrix, used in panels.
LAST_PANELS_T = (packed_T, last_panels_T)     # Wᵀ (I, O) in panels, for W (O, I)
LAST_PANELS = (packed_all, last_panels_all)   # W (O, I) in panels


# -- operands packed by the thread that reads them ----------------------------------------------
#
# Packed by a job set of its own, an operand's panels are written half by each core, and every
# job of the product that reads them all then fetches the other core's half from that core's
# cache. On a Zen 4 VM those transfers cost little in quiet minutes and much in slow ones (a
# cache line's round trip between the two cores 60 against 330 ns, bptt.kernels.handoff): the
# MLP's 128 × 784 → 512 forward took 513 µs quiet and 596 slow, 495 and 506 with each thread
# packing its own copy (docs/performance.md, twenty-fifth session). So a product's jobs (a job
# set with slots, bptt.jit.jobs) pack the panels they read into their slot's copy, each panel
# once per call (a flag per slot and panel holds the number of the call that packed it). Copies
# are made only of operands of at most ``OWN_BYTES``, and only while one per thread comes to at
# most ``OWN_TOTAL`` (a many-core machine); a larger one is packed once, as before.

OWN_BYTES = 2 * L2_BYTES
OWN_TOTAL = 64 << 20
_own_call = itertools.count(1)   # a number per call: flags from earlier calls never match it


def own_flags(name: str, n: int) -> np.ndarray:
    """(CHUNKS, ≥ n) int64 flags for the operand copies named ``name``, each slot's row on cache
    lines of its own; zero when first made (no call's number), kept from call to call."""
    pool = getattr(_scratch, "flags", None)
    if pool is None:
        pool = _scratch.flags = {}
    f = pool.get(name)
    if f is None or f.shape[1] < n:
        f = aligned_empty((CHUNKS, (n + 7) // 8 * 8), np.int64)
        f[:] = 0
        pool[name] = f
    return f


def own_copies(nbytes: int) -> bool:
    """Whether an operand of ``nbytes`` gets a copy per slot (see above)."""
    return nbytes <= OWN_BYTES and CHUNKS * nbytes <= OWN_TOTAL


def own_panels_of(Bm, boff, M, name, transposed=False):
    """(Pp, flags, call) for jobs that read columns boff ... boff+M-1 of Bm (K, ·) in panels (with
    ``transposed``, Wᵀ for W = Bm (O, I): :func:`panels_T`), through :func:`own_panels`: Pp holds
    one (n_panels(M), K, PANEL) copy per slot, each packed as its jobs need it, or, for an
    operand too large for copies (:func:`own_copies`), a single copy packed here (in parallel
    jobs) for all of them, and call 0."""
    K = Bm.shape[1] if transposed else Bm.shape[0]
    npan = (M + PANEL - 1) // PANEL
    size = npan * K * PANEL
    flags = own_flags(name, npan)
    if not own_copies(size * Bm.itemsize):
        P = scratch(name, size, Bm.dtype).reshape((1, npan, K, PANEL))
        if transposed:
            _pack_T_panel(npan, P[0], Bm)
        else:
            _pack_rows(npan * ((K + PACK_ROWS - 1) // PACK_ROWS), P[0], Bm, boff, M)
        return P, flags, 0
    return scratch(name, CHUNKS * size, Bm.dtype).reshape((CHUNKS, npan, K, PANEL)), flags, next(_own_call)


@inline
def own_panels(Pp, flags, call, slot, Bm, boff, M, p0, p1):
    """The panels of Bm's columns boff ... boff+M-1 (:func:`own_panels_of`) for a job of slot
    ``slot`` that reads panels p0 ... p1-1: this slot's copy, with any of those panels not yet
    packed in this call packed now (or, with call 0, the single copy packed before the jobs). A copy: the
    bits are Bm's whichever thread packs."""
    if call == 0:
        return Pp[0]
    P = Pp[slot]
    f = flags[slot]
    for p in range(p0, p1):
        if f[p] != call:
            pack_panel(P, Bm, p, boff, M, 0, Bm.shape[0], 0)
            f[p] = call
    return P


def own_transposed_of(X, name):
    """(XTp, flags, call) for jobs that read Xᵀ (M, N) as A, for X (N, M) with contiguous rows,
    through :func:`own_rows_T`: one (M, apart_rows(N)) copy per slot (:func:`transposed_copy`'s
    layout), each filled as its jobs need rows of it, or, too large for copies
    (:func:`own_copies`), a single copy transposed here for all of them, and call 0."""
    N, M = X.shape
    ld = apart_rows(N, X.itemsize)
    flags = own_flags(name, M)
    if not own_copies(M * ld * X.itemsize):
        XT = scratch(name, M * ld, X.dtype).reshape((1, M, ld))
        transpose_copy_into(XT[0], X)
        return XT, flags, 0
    return scratch(name, CHUNKS * M * ld, X.dtype).reshape((CHUNKS, M, ld)), flags, next(_own_call)


@inline
def own_rows_T(XTp, flags, call, slot, X, m0, m1):
    """Rows m0 ... m1-1 of Xᵀ (:func:`own_transposed_of`) for a job of slot ``slot``: this
    slot's copy, with those rows transposed now unless this call already has (a flag per row;
    a job's rows are the same whole block every time), or, with call 0, the single copy. The
    first N columns of each row hold it. A copy: the bits are X's."""
    if call == 0:
        return XTp[0]
    XT = XTp[slot]
    f = flags[slot]
    if f[m0] != call:
        N = X.shape[0]
        transpose_rows_into(XT[m0:m1, :N], X[:, m0:m1])
        for m in range(m0, m1):
            f[m] = call
    return XT


@inline
def own_panels_T(Pp, flags, call, slot, W, p0, p1):
    """:func:`own_panels` for Wᵀ in panels, W (O, I) (``own_panels_of(..., transposed=True)``)."""
    if call == 0:
        return Pp[0]
    P = Pp[slot]
    f = flags[slot]
    for p in range(p0, p1):
        if f[p] != call:
            pack_panel_T(P, W, p)
            f[p] = call
    return P


@functools.lru_cache(maxsize=1024)
def block_jobs(N, M, by_columns=False):
    """The number of jobs of an (N, M) product, from Python: :func:`n_blocks`'s count (remembered
    per shape: the compiled call cost 2 µs, eight times an MLP step)."""
    if M == 0:
        return 0
    ng, ncb = n_blocks(N, M, by_columns)
    return ng * ncb


def sweep_chunks(B):
    """The number of chunks (jobs) a recurrent sweep of B independent sequences runs in, when
    called now: one per thread it will run on (:func:`bptt.jit.running_threads`; at most B), of
    equal size but the last (:func:`chunk_rows`), so each thread streams W_hh through its cache
    once per step for all its rows. One thread runs one chunk: two chunks in order streamed the
    LSTM `deepbench` W_hh (16 MB) twice a step, and its step took 447 ms on one thread against
    416 with one chunk (docs/performance.md, twenty-third session). Equal chunks rather than
    whole blocks of 4 rows: rows past a multiple of 4 run the 1-row micro-kernels at about half
    speed, so B = 50 as 25 + 25 (6 blocks and 1 row each) beats 24 + 26 (2 rows in one chunk) by
    8% per step. Results never depend on it: every row's sums run in the same order in any
    chunk. The count is ceil(B / rc) for rc = ceil(B / threads), so that the jobs' rows of
    ceil(B / count) are again rc: on two threads the chunks are the batch halves of the passes
    around the sweep (``bptt.kernels.rnn.batch_half``)."""
    n = min(B, jit.running_threads())
    if n <= 1:
        return 1
    rc = (B + n - 1) // n
    return (B + rc - 1) // rc


@inline
def transpose_strip(XT, X, j):
    """XT[m, :] = X[:, m] for the TB columns m of strip j of X (N, M): whole TB × TB blocks
    transposed in registers when X has rows of unit stride, the rest element by element."""
    N, M = X.shape
    nf = N // TB * TB
    m0 = j * TB
    if m0 + TB <= M and X.strides[1] == X.itemsize:   # transpose_block needs rows of unit stride
        for n0 in range(0, nf, TB):
            transpose_block(XT, X, n0, m0)
        for m in range(m0, m0 + TB):
            XTm = XT[m]
            for n in range(nf, N):
                XTm[n] = X[n, m]
    else:
        for m in range(m0, M):
            XTm = XT[m]
            for n in range(N):
                XTm[n] = X[n, m]


@jobs
def _transpose_strip(j, njobs, XT, X):
    """Strip j of :func:`transposed_copy` (TB columns of X)."""
    transpose_strip(XT, X, j)


def transpose_copy_into(XT, X):
    """XT[:, :N] = Xᵀ for X (N, M) and XT (M, ≥ N), both with contiguous rows: :func:`transposed_copy`
    into a given array."""
    _transpose_strip((X.shape[1] + TB - 1) // TB, XT, X)


def transposed_copy(X, scratch_name=None):
    """Xᵀ in the first N columns of a new contiguous (M, apart_rows(N)) array (or of a scratch
    buffer: ``scratch_name``, as :func:`panels_T`), for X (N, M) with contiguous rows; a job per
    strip of TB columns of X, each whole TB × TB block transposed in registers. The rows are apart
    as the micro-kernels need them (:func:`apart_rows`): a product reads Xᵀ as A.

    A product whose left operand is a transpose (a weight gradient's dyᵀ) would otherwise read
    A[n, k] = X[k, n] one row of X per k: at M = 4096 float32 those rows are 16 KB apart, all in
    the same L1 set and a handful of L2 sets (docs/performance.md). A copy: the bits are X's."""
    N, M = X.shape
    ld = apart_rows(N, X.itemsize)
    XT = np.empty((M, ld), X.dtype) if scratch_name is None else scratch(scratch_name, M * ld, X.dtype).reshape((M, ld))
    transpose_copy_into(XT, X)
    return XT


@inline
def transpose_into(XT, X):
    """XT = Xᵀ for X (N, M) with contiguous rows and XT (M, N) contiguous, strip by strip on this
    thread: :func:`transposed_copy` into a given array, for a job that reuses a scratch buffer."""
    for j in range((X.shape[1] + TB - 1) // TB):
        transpose_strip(XT, X, j)


# -- scratch buffers ----------------------------------------------------------------------------
#
# A kernel's large temporaries (a weight gradient's copy of dg, its transpose, a part's sums) are
# taken from buffers kept from call to call instead of being allocated each call. Freed and
# allocated again, a buffer of a few MB came back as fresh pages whenever the C allocator had
# returned it to the system: the LSTM `char` step (B = 50, H = 128, two threads) then took 2,400
# page faults and 14.7-16.5 ms instead of 10.5 (docs/performance.md). Whether it did depended on
# what the process had allocated before, so the same step ran at either speed.

def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array starting on a 64-byte (cache line) boundary.

    NumPy's large arrays often start 16 or 32 bytes into a line, so that every 64-byte vector
    load or store of a row straddles two lines; the products read and write their rows of C (the
    gate workspaces) that way. A copy of nothing: only the speed depends on it."""
    dt = np.dtype(dtype)
    n = 1
    for d in shape:     # not np.prod: 3-5 µs a call on a tuple
        n *= int(d)
    buf = np.empty(n + 64 // dt.itemsize, dt)
    off = (-buf.ctypes.data) % 64 // dt.itemsize
    return buf[off:off + n].reshape(shape)


_scratch = threading.local()   # each Python thread its own buffers: kernels may run from several


def scratch(name: str, n: int, dtype) -> np.ndarray:
    """A 1-D array of ``n`` elements of ``dtype``, starting on a 64-byte boundary, that the next
    call with the same ``name`` (on this Python thread) gets again: its contents are garbage, and
    it is valid only until then. A composite kernel uses it for one call, never returns it."""
    dtype = np.dtype(dtype)
    pool = getattr(_scratch, "pool", None)
    if pool is None:
        pool = _scratch.pool = {}
    buf = pool.get((name, dtype))
    if buf is None or buf.size < n:
        buf = pool[(name, dtype)] = aligned_empty((n,), dtype)
    return buf[:n]


def scratch_panels(name: str, M: int, K: int, dtype) -> np.ndarray:
    """:func:`new_panels` (M, K) from a scratch buffer (see :func:`scratch`): for a matrix a kernel
    packs on every call (a freshly allocated 200 KB came back as fresh pages on some calls)."""
    npan = (M + PANEL - 1) // PANEL
    return scratch(name, npan * K * PANEL, dtype).reshape((npan, K, PANEL))


def release_scratch() -> None:
    """Free this Python thread's scratch buffers (they are allocated again when next needed)."""
    _scratch.pool = {}


acc_tile = tile_caller(jit.ISA)
acc_tile.__doc__ = """acc_tile(C, A, Bm, n0, n1, c0, c1, boff, k0, k1, KC, fresh):
C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] · Bm[k, boff + c]   for n0 ≤ n < n1, c0 ≤ c < c1, by the ISA
family's ``tile`` (its micro-kernels), k in blocks of ``KC``; with ``fresh`` non-zero each sum
starts from 0 and C is only written. C and Bm must have contiguous rows; A may be any view."""


def _panels_signature(dt):
    """(C, A, P, n0, n1, c0, c1, k0, k1, fresh) of the panel products, any layouts."""
    a2, i8 = types.Array(dt, 2, "A"), types.int64
    return (a2, a2, types.Array(dt, 3, "A"), i8, i8, i8, i8, i8, i8, i8)


@jit.typed_helper(_panels_signature)
def _acc_panels_by_panel(C, A, P, n0, n1, c0, c1, k0, k1, fresh):
    """:func:`acc_tile` with Bm given as packed panels, Bm[k, c] = P[c // PANEL, k, c % PANEL]
    (see above), panel by panel; c0 must be a multiple of ``PANEL``. Each panel's k-blocks run in
    increasing order, so every output is the same fma chain as in :func:`acc_tile`."""
    for p in range(c0 // PANEL, (c1 + PANEL - 1) // PANEL):
        acc_tile(C, A, P[p], n0, n1, p * PANEL, min(c1, (p + 1) * PANEL), -p * PANEL, k0, k1, KC, fresh)


def _acc_panels_rows_apart(C, A, P, n0, n1, c0, c1, k0, k1, fresh):
    """As :func:`_acc_panels_by_panel`, for families whose panel is one block wide: the rows in
    whole blocks of ``micro.R`` panel by panel (up to ``micro.X`` rows left below them joining
    the last block: a chunk of 25 rows runs 12 + 13; or, with ``micro.SPLIT``, blocks of R2 taking
    the rest, :func:`split_rows`: 25 rows as 4 × 4 + 3 × 3), and each row left over (a single sequence,
    or the last of a chunk) ``micro.ROW_PANELS`` panels at a time in one k loop, for enough vector
    chains in flight (:mod:`bptt.kernels.microgen`), right after the blocks of those panels,
    while their slivers are still in cache (the 25th row of a 25-row chunk, K = 65: 0.45-1.26 →
    0.22-0.89 µs, one core; docs/performance.md). The two or three whole panels left at the end
    run in one k loop as well (each alone has 2 or 3 chains, latency-bound: the LSTM `teach`
    backward product, 1 × 400 · 400 × 100 with avx512's 3 panels and 4 columns, 2.17 → 1.93 µs a
    step; docs/performance.md, twenty-first session); a partial last panel runs alone. The same
    fma chains, so the same bits."""
    nR = n0 + (n1 - n0 - split_rows(n1 - n0)) // micro.R * micro.R
    if nR > n0 and n1 - nR <= micro.X:   # the tile's last block of R takes these rows (13 or 14)
        nR = n1
    while micro.R2 and n1 - nR >= micro.R2:   # the tile runs these rows as blocks of R2 (all of
                                              # split_rows', so that none is left to the loop below)
        nR += micro.R2
    p0 = c0 // PANEL
    p1 = (c1 + PANEL - 1) // PANEL
    NP = micro.ROW_PANELS
    p = p0
    while (p + NP) * PANEL <= c1:   # a group of panels: the blocks, then the rows left over
        if nR > n0:
            _acc_panels_by_panel(C, A, P, n0, nR, p * PANEL, (p + NP) * PANEL, k0, k1, fresh)
        for n in range(nR, n1):
            micro.row_panels(C, A, P, n, p, k0, k1, fresh)
        p += NP
    if p < p1:
        if nR > n0:
            _acc_panels_by_panel(C, A, P, n0, nR, p * PANEL, c1, k0, k1, fresh)
        m = (c1 - p * PANEL) // PANEL   # whole panels left, fewer than NP: one k loop if two or more
        for n in range(nR, n1):
            q0 = p
            if m >= 2:
                _row_panels(C, A, P, n, p, m, k0, k1, fresh)
                q0 = p + m
            for q in range(q0, p1):
                acc_tile(C, A, P[q], n, n + 1, q * PANEL, min(c1, (q + 1) * PANEL), -q * PANEL, k0, k1, KC, fresh)


@inline
def _row_panels(C, A, P, n, p, m, k0, k1, fresh):
    """C[n, p·PANEL:(p+m)·PANEL] += A[n, k0:k1] · whole panels p ... p+m-1, m = 2 or 3 (every
    family with row panels takes 4 at once: :func:`bptt.kernels.microgen.row_panels`)."""
    if m == 3:
        micro.row_panels_3(C, A, P, n, p, k0, k1, fresh)
    else:
        micro.row_panels_2(C, A, P, n, p, k0, k1, fresh)


# compiled only for a family that has row panels (it calls micro.row_panels)
acc_panels = (jit.typed_helper(_panels_signature)(_acc_panels_rows_apart) if micro.ROW_PANELS > 1
              else _acc_panels_by_panel)
"""acc_panels(C, A, P, n0, n1, c0, c1, k0, k1, fresh): C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] · Bm[k, c]
for n0 ≤ n < n1, c0 ≤ c < c1, with Bm given as packed panels, Bm[k, c] = P[c // PANEL, k, c % PANEL];
c0 must be a multiple of ``PANEL``. Every output is the same fma chain as in :func:`acc_tile`;
with ``fresh`` non-zero each starts from 0 and C is only written (C[n, c] = the sum)."""


# Rows of A whose addresses are a multiple of 4 KB apart (a row of 1024 float32: the inputs at
# I = 1024, h_prev at H = 1024, the gates at H = 256 or 1024) fall into one set of an 8-way L1.
# The avx512 family's blocks read 12 rows at once, and they evicted each other: one Zen 4 core's
# step product (32 rows of h_prev, K = 1024, 2048 columns) ran at 78 GFLOP/s against 99 with
# K = 1040. A sweep step's rows are therefore copied apart first (step_product, apart): once a
# step, the copy serves all the step's columns. The large products copy the whole of such an A
# once, in one parallel pass before their jobs (rows_apart); per tile (in acc_panels) each copy
# served only 8 panels, read A as short strided runs, and cost the fastrnns dx pass more than it
# saved (docs/performance.md, seventeenth and eighteenth sessions).

ALIAS = 4096     # bytes: rows a multiple of this apart fall into one set of L1
ALIAS_ROWS = 4   # rows a block may read at once from one set (the avx2 and generic blocks: 4)


@inline
def aliased(A, n0, n1):
    """Whether rows n0:n1 of A (unit stride along them) are a multiple of ``ALIAS`` bytes apart
    while the family's blocks read more than ``ALIAS_ROWS`` rows at once (see above)."""
    return (micro.R > ALIAS_ROWS and n1 - n0 > ALIAS_ROWS and A.strides[1] == A.itemsize
            and A.strides[0] % ALIAS == 0)


@inline
def apart_stride(K, itemsize):
    """The row length, in numbers, of a copy of rows of K numbers whose rows start an odd number
    of whole cache lines apart (:func:`unaliased_copy`, :func:`rows_apart`)."""
    e = 64 // itemsize
    ld = (K + e - 1) // e * e
    if ld // e % 2 == 0:
        ld += e
    return ld


@inline
def apart_rows(n, itemsize):
    """The row length, in numbers, to give a buffer of rows of n numbers that the micro-kernels
    will read as A: n, or, where rows of n would be a multiple of ``ALIAS`` bytes apart while the
    family's blocks read more than ``ALIAS_ROWS`` rows at once, :func:`apart_stride` (n). For the
    operands the passes lay out themselves (a weight gradient's transposed copy of dy or of dg):
    at n = 1024, 2048 or 3072 float32 their rows evicted each other from L1, and a dense layer's
    weight gradient ran 7-12 % slower than at n + 16 (docs/performance.md, twenty-third session)."""
    if micro.R > ALIAS_ROWS and n > ALIAS_ROWS and n * itemsize % ALIAS == 0:
        return apart_stride(n, itemsize)
    return n


@inline
def unaliased_copy(A, n0, n1, k0, k1):
    """A[n0:n1, k0:k1] copied into a fresh array whose rows start 64·(odd) bytes apart modulo
    ``ALIAS`` (whole cache lines, each row in other sets of L1 than the last 63), starting on a
    64-byte boundary. A copy: the bits are A's."""
    K = k1 - k0
    ld = apart_stride(K, A.itemsize)
    A2 = aligned_vector((n1 - n0) * ld, A).reshape((n1 - n0, ld))
    for r in range(n1 - n0):
        src = A[n0 + r, k0:k1]
        dst = A2[r]
        for k in range(K):
            dst[k] = src[k]
    return A2[:, :K]


def rows_alias(A) -> bool:
    """Whether the rows of A (its last two axes, unit stride along the last) are a multiple of
    ``ALIAS`` bytes apart while the family's blocks read more than ``ALIAS_ROWS`` rows at once:
    :func:`aliased`, asked in Python."""
    return (micro.R > ALIAS_ROWS and A.shape[-2] > ALIAS_ROWS and A.strides[-1] == A.itemsize
            and A.strides[-2] % ALIAS == 0)


COPY_ROWS = 64   # rows per parallel job of rows_apart's copy


def rows_apart(A, name):
    """A as it is, or, if its rows alias in L1 (:func:`rows_alias`), a copy in scratch buffer
    ``name`` (:func:`scratch`) whose rows start an odd number of cache lines apart: a view of A's
    shape, rows of K' ≥ K numbers. For the large products, whose jobs read each row of A once per
    block of columns: copied once, in one parallel pass, rather than per tile (which read A as
    short strided runs and cost more than it saved, docs/performance.md). At `deepbench` (two
    threads, Zen 4) the LSTM's input projection (A = x, rows of 1024) took 36 ms against 40-50,
    dx (A = the gate gradients, rows of 4096) 39 against 50, and at `fastrnns` dx (rows of 2048,
    8 KB apart) 74-78 against 92-97. A copy: the same bits."""
    if not (rows_alias(A) and A.flags.c_contiguous):
        return A
    K = A.shape[-1]
    N = A.size // K
    ld = apart_stride(K, A.itemsize)
    out = scratch(name, N * ld, A.dtype).reshape((N, ld))[:, :K]
    _copy_rows_apart((N + COPY_ROWS - 1) // COPY_ROWS, out, A.reshape((N, K)))
    return out.reshape(A.shape)


@jobs
def _copy_rows_apart(j, njobs, dst, src):
    """Rows j·COPY_ROWS ... of :func:`rows_apart`'s copy."""
    copy_rows(dst, src, j * COPY_ROWS, min(src.shape[0], j * COPY_ROWS + COPY_ROWS))


@inline
def apart(a, B, K):
    """The rows 0:B, columns 0:K of ``a`` as they are, or copied apart if they alias in L1
    (:func:`aliased`, :func:`unaliased_copy`): for a sweep step whose several products read the
    same rows (the LSTM's four gates, the GRU's three), so that they are copied once, not per
    product. The same values."""
    if aliased(a, 0, B):
        return unaliased_copy(a, 0, B, 0, K)
    return a


@helper
def acc_narrow(C, AT, Bw, c0, r0, r1):
    """C[r, c0 + c] += Σ_k AT[k, r] · Bw[k, c]   for r0 ≤ r < r1 and the few (< NARROW) columns c of
    Bw (K, W): :func:`acc_tile`'s sums with A = ATᵀ, computed transposed.

    A weight gradient's last I mod NARROW columns (16 for avx512, 8 for avx2) would take 4-row micro-kernels 8, 4, 2 or 1 wide,
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
    acc_tile(CT, Bw.T, AT, 0, W, 0, R, r0, 0, AT.shape[0], KC, 0)
    for r in range(R):
        Cr = C[r0 + r]
        for c in range(W):
            Cr[c0 + c] = CT[c, r]


SUM_LANES = 8     # float64 sums per vector of column_sums
SUM_GROUP = 4     # vectors of sums one pass over the rows carries (32 columns)
SUM_ROWS = 128    # rows of g per pass: every column group runs over them (from L2) before the next


def _column_sums_intrinsic(nv):
    """sums(s, g, u, r0, r1): s[u + c] += g[r0, u + c] + ... + g[r1 - 1, u + c] for
    0 ≤ c < nv·SUM_LANES, s float64, one float64 add per row in increasing order, the running
    sums held in nv vectors of SUM_LANES float64 through the rows (LLVM vector IR: ``fpext`` of
    each row's piece, ``fadd``), loaded from s first and stored back after. g needs unit stride
    along its rows. Written in IR because Numba's loop over a NumPy accumulator did not vectorise
    (scalar ``vaddsd``: the bias sums of a 128 × 512 gradient took 14.7 µs on one core of the
    Intel Xeon, 3.5 % of the MLP's step, docs/performance.md, thirtieth session)."""

    @intrinsic
    def sums(typingctx, s, g, u, r0, r1):
        if not (isinstance(s, types.Array) and isinstance(g, types.Array) and s.ndim == 1 and g.ndim == 2
                and isinstance(g.dtype, types.Float) and s.dtype == types.float64):
            return None
        sig = types.void(s, g, u, r0, r1)

        def codegen(context, builder, signature, args):
            tys = signature.args
            i64 = ir.IntType(64)
            cst = lambda v: ir.Constant(i64, v)  # noqa: E731
            u_, r0_, r1_ = [context.cast(builder, args[i], tys[i], types.int64) for i in (2, 3, 4)]
            f64 = ir.DoubleType()
            gel = context.get_data_type(g.dtype)
            vg, v64 = ir.VectorType(gel, SUM_LANES), ir.VectorType(f64, SUM_LANES)
            gbase, gstrides = element_ptr(context, builder, tys[1], args[1], cst(0), u_)   # g[0, u]
            ld = builder.sdiv(gstrides[0], cst(context.get_abi_sizeof(gel)))
            sarr = context.make_array(tys[0])(context, builder, args[0])
            sptr = [builder.bitcast(builder.gep(sarr.data, [builder.add(u_, cst(j * SUM_LANES))]), v64.as_pointer())
                    for j in range(nv)]
            start = [builder.load(p, align=8) for p in sptr]

            def step(n, acc):   # one row: its 8·nv numbers added to the sums
                row = builder.gep(gbase, [builder.mul(n, ld)])
                new = []
                for j, a in enumerate(acc):
                    v = builder.load(builder.bitcast(builder.gep(row, [cst(j * SUM_LANES)]), vg.as_pointer()),
                                     align=context.get_abi_sizeof(gel))
                    new.append(builder.fadd(a, v if gel == f64 else builder.fpext(v, v64)))
                return new

            acc = counted_loop(builder, r0_, r1_, start, step, "sums")
            for a, p in zip(acc, sptr):
                builder.store(a, p, align=8)
            return context.get_dummy_value()
        return sig, codegen
    return sums


def _column_sums_python(nv):
    """:func:`_column_sums_intrinsic`'s ``sums`` in Python (under NUMBA_DISABLE_JIT=1)."""
    def sums(s, g, u, r0, r1):
        for c in range(u, u + nv * SUM_LANES):
            for n in range(r0, r1):
                s[c] += float(g[n, c])
    return sums


_column_sums = _column_sums_python if numba.config.DISABLE_JIT else _column_sums_intrinsic
_sums_group = _column_sums(SUM_GROUP)
_sums_one = _column_sums(1)


@inline
def add_column_sums(db, g, u0, u1):
    """db[u] += Σ_n g[n, u] for u0 ≤ u < u1, for the bias gradients: each sum in float64 from 0,
    over n in order, then added to db's element in float64 and rounded to its type.

    db : (U,) accumulated.  g : (N, U) with contiguous rows. The rows go by ``SUM_ROWS`` at a
    time, and over those rows the sums of ``SUM_GROUP`` vectors of columns advance together in
    registers (:func:`_column_sums_intrinsic`), then the next vectors' (the last columns, fewer
    than ``SUM_LANES``, in a plain loop); a column at a time would stride through g, and each
    group over all the rows read a wide g (the LSTM's 2500 × 1024 gate gradients) from memory
    once per group. Kernels run blocks of columns as parallel jobs (independent outputs).
    """
    N = g.shape[0]
    s = np.zeros(u1 - u0, np.float64)
    vec = g.strides[1] == g.itemsize
    gu = g[:, u0:u1]
    for r0 in range(0, N, SUM_ROWS):
        r1 = min(N, r0 + SUM_ROWS)
        c = 0
        if vec:
            while c + SUM_GROUP * SUM_LANES <= u1 - u0:
                _sums_group(s, gu, c, r0, r1)
                c += SUM_GROUP * SUM_LANES
            while c + SUM_LANES <= u1 - u0:
                _sums_one(s, gu, c, r0, r1)
                c += SUM_LANES
        for n in range(r0, r1):   # the last columns
            gn = g[n, u0:u1]
            for t in range(c, u1 - u0):
                s[t] += gn[t]
    dbu = db[u0:u1]
    for u in range(u1 - u0):
        dbu[u] += s[u]


JOBS = 16   # parallel jobs a large product is cut into, at least (a multiple of the cores)


@inline
def n_blocks(N, M, by_columns=False):
    """(row groups, column blocks) of the jobs of an (N, M) product: ceil(M / COLS) column
    blocks, and as many groups of rows as make at least ``JOBS`` jobs and, where there are rows
    enough, a multiple of the cores (``CHUNKS``): a parallel loop deals each thread an equal
    range of jobs, and 21 jobs on two cores are 11 against 10. With too few rows for that (the
    char-LM head's weight gradient, 65 rows: 3 groups, 2 jobs on one core and 1 on the other),
    more column blocks, up to one per panel.

    ``by_columns`` (a weight gradient, whose Bm is the layer's input over all the rows: K is the
    batch): where the rows leave one job a core and Bm is the wider operand (M > N), the jobs
    take column blocks instead, so that each core packs only its share of Bm rather than all of
    it (and reads all of A, N rows, instead of its half). The char-LM head's weight gradient (65
    × 256 over 2500 rows, two threads, paired): 474-483 → 387-390 µs. Not for the products over
    a layer's weights (a forward, dx): there K is small and Bm too, and small forwards (64 × 128
    → 128, 80 × 64 → 200) took 1.17-1.29× as long by columns."""
    ncb = (M + COLS - 1) // COLS
    nt = (N + ROWS - 1) // ROWS
    ng = min(nt, max(1, (JOBS + ncb - 1) // ncb))
    while ng < nt and ng * ncb % CHUNKS != 0:   # a whole number of jobs per core
        ng += 1
    while ng * ncb % CHUNKS != 0 and ncb < n_panels(M):
        ncb += 1
    if by_columns and ncb == 1 and ng == CHUNKS and M > N and n_panels(M) >= CHUNKS:
        return 1, CHUNKS   # one job a core: by columns, each packing its share of Bm
    return ng, ncb


@inline
def block_index(job, N, M, by_columns=False):
    """(g, cb): the row group and column block of job number ``job`` of an (N, M) product
    (:func:`n_blocks`). A thread runs a contiguous range of jobs, so the order decides which
    operand its jobs share: with C[n, c] += Σ_k A[n, k] · Bm[k, c], A (N, K) is the larger
    operand when N ≥ M, and then the column blocks of one row group follow each other (a
    thread's jobs share that group's rows of A); with M > N, the row groups of one column block
    do (its jobs share that block of Bm, which each thread then reads only its part of). The
    other order read all of a 512 × 784 Bm once per row group on each thread: the MLP's dy·W at
    128 rows, 2 threads, 531 → 404 µs (docs/performance.md). Only the speed depends on it."""
    ng, ncb = n_blocks(N, M, by_columns)
    if M > N:
        return job % ng, job // ng
    return job // ncb, job % ncb


@inline
def block_origin(job, N, M, by_columns=False):
    """(n0, n1, c0, c1) of job number ``job`` of an (N, M) product (:func:`n_blocks`, in
    :func:`block_index`'s order). The rows are spread evenly over the groups (in whole blocks of
    the micro-kernels' rows) and the columns over the blocks (:func:`even_columns`), so that the
    jobs are of one size to within a block and any thread count's equal ranges of jobs are
    equal work: in whole tiles, 800 rows in 4 groups were 192, 192, 192 and 224, and two
    threads' shares 384 and 416."""
    ng, ncb = n_blocks(N, M, by_columns)
    g, cb = block_index(job, N, M, by_columns)
    c0, c1 = even_columns(cb, ncb, M)
    return even_bound(g, ng, N, micro.R), even_bound(g + 1, ng, N, micro.R), c0, c1


@inline
def even_bound(q, n, N, m):
    """Where part q of n parts of N items starts (N for q = n): q·N/n rounded up to a multiple
    of m, so that the parts are whole groups of m (but the last) and differ by at most m."""
    if q >= n:
        return N
    return min(N, (q * N // n + m - 1) // m * m)


@inline
def even_columns(i, n, M):
    """(c0, c1): block i of n blocks of M columns, each of whole panels (the last may end
    inside one), their panel counts differing by at most one. With n = ceil(M / COLS) none is
    wider than ``COLS``; in blocks of exactly ``COLS`` the last could be a sliver (4096 = 17 ·
    240 + 16), and a thread count's equal ranges of blocks unequal work."""
    npan = (M + PANEL - 1) // PANEL
    return i * npan // n * PANEL, min(M, (i + 1) * npan // n * PANEL)


@inline
def k_blocks(K):
    """How many k-blocks a product over K terms runs in: equal blocks of at most ``KC``
    (:func:`k_block`)."""
    return max(1, (K + KC - 1) // KC)


@inline
def k_block(q, nkb, k0, k1):
    """(kb, ke): block q of the ``nkb = k_blocks(k1 - k0)`` equal k-blocks of k0 ... k1-1."""
    return k0 + even_bound(q, nkb, k1 - k0, 1), k0 + even_bound(q + 1, nkb, k1 - k0, 1)


@inline
def split_rows(m):
    """The rows of a block of m rows that run as blocks of R2 = R - 1 (``micro.SPLIT``: the avx2 and
    generic families' 3 × W blocks under their 4 × W ones), so that none is left to the single-row
    bodies: 0, 3, 6 or 9 as m mod 4 is 0, 3, 2 or 1, or 0 where m is too small for that (1, 2, 5).
    The rest, m - split_rows(m), is a whole number of blocks of R. A row left over below whole
    blocks of 4 ran at about half their speed per row even with four panels at a time (a one-core
    avx2 step product, K = 256, N = 1024, on a Zen 4: 24 rows 119.6 µs, 25 rows 131.3). The generated
    ``tile`` computes the same count; the same fma chains, so the same bits."""
    if not micro.SPLIT:
        return 0
    s = (micro.R - m % micro.R) % micro.R * micro.R2
    return s if s <= m else 0


@inline
def tile_end(r0, n1):
    """The end of the tile of rows that starts at r0, in a range that ends at n1: ``ROWS`` rows
    on, or n1 when at most ``micro.X`` rows would be left after it, which the tile's last block
    then takes (a 13 or 14-row block, :mod:`bptt.kernels.microgen`) instead of a tile of its own
    that would run them one row at a time. In a family with ``micro.SPLIT``, a tile that would
    leave 1, 2 or 5 rows (which :func:`split_rows` cannot cover) ends 8 rows earlier."""
    e = min(n1, r0 + ROWS)
    if n1 - e <= micro.X:
        return n1
    m = n1 - e
    if micro.SPLIT and m % micro.R != 0 and split_rows(m) == 0:
        return e - 2 * micro.R   # 1, 2 or 5 rows would be left: 9, 10 or 13, which split_rows covers
    return e


@inline
def acc_tiles(C, A, P, n0, n1, c0, c1, k0, k1, fresh):
    """:func:`acc_panels` over rows n0:n1 in tiles of at most ``ROWS`` rows (:func:`tile_end`),
    one after the other: the same sums, each tile's block of A reused by every panel from L2."""
    r0 = n0
    while r0 < n1:
        r1 = tile_end(r0, n1)
        acc_panels(C, A, P, r0, r1, c0, c1, k0, k1, fresh)
        r0 = r1


@inline
def block_product(C, A, P, n0, n1, c0, c1, k0, k1, fresh):
    """C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] · Bm[k, c] over a block of C, Bm in panels P (``fresh``
    non-zero: C[n, c] = the sum, each from 0, the first k-block's micro-kernels starting their sums
    at 0 instead of loading C: the same bits as clearing the block first), with the
    k-blocks outermost: for each KC × COLS block of Bm (240 KB to 512 KB, in L2), every tile of
    ``ROWS`` rows passes (their KC columns of A in L2, each panel's sliver in L1), as BLIS orders
    its loops. Tile by tile with the whole k range inside, the column block of Bm (K × COLS, 1 MB
    at K = 1024) was streamed from L3 once per tile (docs/performance.md). Every output's
    k-blocks still run in increasing order, so each is the same fma chain. The k range is cut
    into equal blocks of at most ``KC``: 784 as 4 × 196 rather than 3 × 256 + 16 (KC = 256), whose last
    block loaded and stored every sum of C for 16 products each (1-4 % faster on one core, A/B
    in one process, docs/performance.md).

    With more than one k-block, the rows pass in chunks whose block of C (at most ``COLS``
    columns) fits in ``CHUNK_C_BYTES``, each chunk through every k-block before the next: the
    chunk's block of C then stays in L2 from one k-block to the next, instead of going to memory
    and back once per k-block (an LSTM's dx at `deepbench`, K = 4H = 4096: eight k-blocks over
    1.6 MB of C a core). The KC × COLS block of Bm is read again for each chunk, from L2 or L3."""
    nkb = k_blocks(k1 - k0)
    rc = n1 - n0 if nkb == 1 else chunk_rows_c(COLS * C.itemsize)
    for cb in range(c0, c1, COLS):
        ce = min(c1, cb + COLS)
        r0 = n0
        while r0 < n1:
            r1 = chunk_end(r0, n1, rc)
            for q in range(nkb):
                kb, ke = k_block(q, nkb, k0, k1)
                acc_tiles(C, A, P, r0, r1, cb, ce, kb, ke, fresh if q == 0 else 0)
            r0 = r1


@jit.typed_helper(_panels_signature)
def called_block_product(C, A, P, n0, n1, c0, c1, k0, k1, fresh):
    """:func:`block_product`, compiled once per dtype and called instead of inlined: the form
    :func:`packing_product` takes at its three places, so that a dense job with two packing
    products (``dense._backward_blocks``) holds no six copies of it. Numba inlines a helper by
    typing and lowering its code again at every place: that job's own compile took 10.4 s, 5.6 s
    with this, and a char-LM's cold first step 37.0-38.1 s, 35.6-36.1 s with this (Zen 4,
    docs/performance.md, thirty-seventh session). The same sums: the same bits."""
    block_product(C, A, P, n0, n1, c0, c1, k0, k1, fresh)


CHUNK_C_BYTES = L2_BYTES // 2   # a block_product's chunk of C when it runs more than one k-block


@inline
def chunk_rows_c(row_bytes):
    """Rows of a :func:`block_product` chunk with rows of ``row_bytes`` of C: whole tiles of
    ``ROWS`` rows (at least one) whose block fits in ``CHUNK_C_BYTES``."""
    return max(1, CHUNK_C_BYTES // (row_bytes * ROWS)) * ROWS


@inline
def chunk_end(r0, n1, rc):
    """The end of the chunk of ``rc`` rows that starts at r0, in a range that ends at n1: n1
    where at most ``micro.X`` rows would be left after it (they join it, as in :func:`tile_end`)."""
    return n1 if n1 - r0 <= rc + micro.X else r0 + rc


# The family's block that packs its panel of B as it reads it (microcall.copy_caller): its main
# block, where that is one panel wide (avx512 12 × 32, avx2 4 × 24; the generic family has none).
COPY = panel_block(jit.ISA) is not None
acc_copy = copy_caller(jit.ISA, *panel_block(jit.ISA)) if COPY else None


@inline
def _packing_first(Pp, flags, call, slot, C, A, Bm, boff, M, n0, n1, c0, c1, k0, k1, fresh):
    """:func:`packing_product` where the family has no copying block: :func:`own_panels`, then
    :func:`block_product`."""
    P = own_panels(Pp, flags, call, slot, Bm, boff, M, c0 // PANEL, n_panels(c1))
    called_block_product(C, A, P, n0, n1, c0, c1, k0, k1, fresh)


@inline
def _packing_product(Pp, flags, call, slot, C, A, Bm, boff, M, n0, n1, c0, c1, k0, k1, fresh):
    """:func:`own_panels` (the panels of Bm's M columns from boff that C's columns c0 ... c1-1
    read) then :func:`block_product` (C[n, c] += Σ_k A[n, k] · Bm[k, boff + c] over rows
    n0 ... n1-1, k0 ... k1-1; ``fresh``: from 0), with each panel this slot has not yet packed
    in this call packed by the block of the job's first ``micro.R`` rows that reads it: that
    block reads the panel's columns of Bm where they lie, stores them into the panel as it goes
    and asks for Bm's rows a few ahead (:func:`bptt.kernels.microcall.copy_caller`), so the
    packing's loads from L3 overlap the block's fmas instead of running before them; the other
    rows then run on the panels as before. Packing first cost a tenth of a small product's time
    on one core: the MLP's dx, 128 × 512 · 512 × 512 (Intel Xeon, docs/performance.md, thirty-second
    session), packed W (1 MB) in 85-95 µs against 390-420 for the product.

    The same sums in the same order (each block's k-blocks in increasing k, from C or 0), and a
    copy that stores Bm's bits: the same bits as packing first. Where it does not apply (panels
    packed once for all, ``call`` 0; a family without such a block; a job of fewer than ``R``
    rows, or whose rows past the first block would be a remainder of 1 to ``R - 1``; k not the
    whole of Bm's rows; Bm's rows not contiguous; a panel C's columns cover only in part) it
    is :func:`own_panels` then :func:`block_product`."""
    p0 = c0 // PANEL
    p1 = n_panels(c1)
    R = micro.R
    rest = n1 - n0 - R
    if (call == 0 or rest < 0 or 0 < rest < R or k0 != 0 or k1 != Bm.shape[0]
            or Bm.strides[1] != Bm.itemsize or C.strides[1] != C.itemsize):
        _packing_first(Pp, flags, call, slot, C, A, Bm, boff, M, n0, n1, c0, c1, k0, k1, fresh)
        return
    P = Pp[slot]
    f = flags[slot]
    nkb = k_blocks(k1 - k0)
    for p in range(p0, p1):
        pc0 = max(c0, p * PANEL)
        pc1 = min(c1, p * PANEL + PANEL)
        if f[p] != call and pc0 == p * PANEL and pc1 == p * PANEL + PANEL and pc1 <= M:
            for q in range(nkb):   # the first R rows, packing the panel as they read it
                kb, ke = k_block(q, nkb, k0, k1)
                acc_copy(C, A, Bm, P[p], n0, pc0, boff, kb, ke, fresh if q == 0 else 0)
            f[p] = call
        else:   # packed already, or packed here first
            own_panels(Pp, flags, call, slot, Bm, boff, M, p, p + 1)
            called_block_product(C, A, P, n0, n0 + R, pc0, pc1, k0, k1, fresh)
    if rest > 0:
        called_block_product(C, A, P, n0 + R, n1, c0, c1, k0, k1, fresh)


packing_product = _packing_product if COPY else _packing_first


# --- the pieces every recurrent sweep shares (rnn.py, lstm.py, gru.py) -------------------------

@inline
def chunk_rows(ch, nch, B):
    """Rows r0:r1 of chunk ``ch`` of the ``nch`` chunks (a sweep's jobs, :func:`sweep_chunks`) of B
    sequences: ceil(B / nch) rows each, the last chunk the rest. The jobs take the count they
    are run with, so the rows they cut always match the jobs Python launched."""
    rc = (B + nch - 1) // nch
    r0 = ch * rc
    return r0, (B if ch == nch - 1 else r0 + rc)


def _step_signature(dt):
    """(out, a, P, r0, r1, N, K) of :func:`step_product`, any layouts."""
    a2, i8 = types.Array(dt, 2, "A"), types.int64
    return (a2, a2, types.Array(dt, 3, "A"), i8, i8, i8, i8)


@jit.typed_helper(_step_signature)
def step_product(out, a, P, r0, r1, N, K):
    """out[r0:r1, 0:N] += a[r0:r1, 0:K] · M, with M (K, N) in panels P: the recurrent product of one
    time step for one chunk of rows (h_prev·W_hhᵀ forward, da·W_hh backward), in tiles of ``ROWS``
    rows × ``COLS`` columns. Every output is one fma chain over k in increasing order.

    Fewer rows than a block of ``micro.R`` (a single sequence: the `teach` shape) take all N
    columns in one call: a family with row panels then runs ``ROW_PANELS`` panels at a time
    across the whole row, where tiles of ``COLS`` columns left 2 of every 10 panels to the
    one-panel body (3 fma chains against 12): the LSTM `teach` forward product, 2.54 → 2.28 µs
    a step (docs/performance.md, twelfth session). With whole blocks, a row left over keeps to the
    tiles, while each tile's panels are in L2. Rows of ``a`` that alias in L1
    (:func:`aliased`) are copied apart once for the whole call, not per tile. Compiled once per
    dtype and called (:func:`bptt.jit.typed_helper`): inlined, its copy made every sweep kernel
    larger, and a cold first step 7 s longer."""
    if aliased(a, r0, r1):
        _step_product(out[r0:r1], unaliased_copy(a, r0, r1, 0, K), P, 0, r1 - r0, N, K)
    else:
        _step_product(out, a, P, r0, r1, N, K)


@inline
def _step_product(out, a, P, r0, r1, N, K):
    """:func:`step_product` on rows of ``a`` as they are."""
    if r1 - r0 < micro.R:
        acc_panels(out, a, P, r0, r1, 0, N, 0, K, 0)
    else:
        for c0 in range(0, N, COLS):
            acc_tiles(out, a, P, r0, r1, c0, min(N, c0 + COLS), 0, K, 0)


@inline
def add_bias_rows(out, bias, r0, r1):
    """out[b, :] += bias for r0 ≤ b < r1 (row views, so that the loop vectorises)."""
    for b in range(r0, r1):
        ob = out[b]
        for u in range(bias.shape[0]):
            ob[u] += bias[u]


@inline
def copy_bias_rows(out, bias, r0, r1):
    """out[b, :] = bias for r0 ≤ b < r1 (row views, so that the loop vectorises)."""
    for b in range(r0, r1):
        ob = out[b]
        for u in range(bias.shape[0]):
            ob[u] = bias[u]


@inline
def copy_rows(dst, src, r0, r1):
    """dst[b, :] = src[b, :] for r0 ≤ b < r1: a chunk's carried gradients start from dh_n."""
    for b in range(r0, r1):   # a loop, not dst[b, :] = src[b, :]: the slice assignment brings
        db = dst[b]              # Numba's shape-mismatch error message, whose string formatting
        sb = src[b]              # took 3-8 s to compile (docs/performance.md)
        for o in range(db.shape[0]):
            db[o] = sb[o]


@inline
def add_rows(dst, src, r0, r1):
    """dst[b, :] += src[b, :] for r0 ≤ b < r1: a chunk's carried gradients end in dh0."""
    for b in range(r0, r1):
        db = dst[b]
        sb = src[b]
        for o in range(db.shape[0]):
            db[o] += sb[o]
