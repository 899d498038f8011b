"""The generated micro-kernels: up to date with their generator, and equal to the plain loop."""
import os

import numpy as np
import pytest

from bptt.jit import kernel
from bptt.kernels import engine, microgen

pytestmark = pytest.mark.jit   # the compiled micro-kernels

HERE = os.path.dirname(os.path.abspath(__file__))


@kernel(parallel=False)
def block_product(C, A, P, fresh):
    """engine.block_product over all of C (its sums from 0 with ``fresh``)."""
    engine.block_product(C, A, P, 0, C.shape[0], 0, C.shape[1], 0, A.shape[1], fresh)


@kernel(parallel=False)
def scalar_product(C, A, Bm):
    """C += A·Bm by the plain fma chain of each output (engine.acc_scalar)."""
    engine.acc_scalar(C, A, Bm, 0, C.shape[0], 0, C.shape[1], 0, 0, A.shape[1])


@pytest.mark.parametrize("isa", sorted(microgen.FAMILIES))
def test_micro_files_are_what_the_generator_writes(isa):
    path = os.path.join(HERE, "..", "bptt", "kernels", f"micro_{isa}.py")
    with open(path, encoding="utf-8") as f:
        assert f.read() == microgen.source(isa), "run: python bptt/kernels/microgen.py"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,K,M,boff", [(1, 1, 1, 0), (4, 7, 64, 0), (9, 600, 150, 3), (37, 5, 333, 11),
                                       (1, 9, 100, 0), (2, 3, 65, 1), (1, 600, 400, 2), (1, 5, 129, 0),
                                       (23, 40, 70, 0), (13, 600, 70, 0), (25, 40, 100, 1), (50, 7, 64, 0),
                                       (14, 5, 33, 0), (10, 9, 40, 0), (16, 300, 32, 0), (44, 9, 136, 0),
                                       (1, 70, 64, 0), (1, 40, 48, 5), (1, 300, 76, 0), (1, 33, 232, 0)])
def test_acc_panels_paths_give_the_bits_of_the_scalar_fma_chain(dtype, N, K, M, boff):
    """Every micro-kernel, tail and k-block computes s = fma(a, b, s) over k in order: bitwise
    the result of the element-by-element loop, for strided A views too, with Bm packed from an
    offset of its columns (pack_panel) or from a transposed matrix (pack_panel_T). The cases
    (10, 9, 40), (16, 300, 32) and (44, 9, 136) run the avx2 family's tall tail blocks (6 × 16,
    12 × 8) with blocks of 4 and single rows after them; the last four, a single row's two or three whole panels left after
    its groups of four, in one k loop (body_1xWx2p, body_1xWx3p), with or without a partial
    panel after them. With ``fresh`` the same paths start every sum from 0 and only write C
    (here full of NaN before): the bits of the loop from C = 0."""

    @kernel(parallel=False)
    def tile(C, A, Bm, boff, fresh):
        M = C.shape[1]
        P = np.empty((engine.n_panels(M), Bm.shape[0], engine.PANEL), Bm.dtype)
        K, h = Bm.shape[0], Bm.shape[0] // 2
        for p in range(engine.n_panels(M)):        # in two blocks of rows
            engine.pack_panel(P, Bm, p, boff, M, 0, h, 0)
            engine.pack_panel(P, Bm, p, boff, M, h, K, h)
        engine.acc_panels(C, A, P, 0, C.shape[0], 0, M, 0, A.shape[1], fresh)

    @kernel(parallel=False)
    def tile_T(C, A, W):
        M = C.shape[1]
        P = np.empty((engine.n_panels(M), W.shape[1], engine.PANEL), W.dtype)
        for p in range(engine.n_panels(M)):
            engine.pack_panel_T(P, W, p)
        engine.acc_panels(C, A, P, 0, C.shape[0], 0, M, 0, A.shape[1], 0)

    @kernel(parallel=False)
    def scalar(C, A, Bm, boff):
        engine.acc_scalar(C, A, Bm, 0, C.shape[0], 0, C.shape[1], boff, 0, A.shape[1])

    rng = np.random.default_rng(N * 1000 + K)
    A = rng.standard_normal((K, N)).astype(dtype).T       # a strided (transposed) view
    Bm = rng.standard_normal((K, M + boff)).astype(dtype)
    C0 = rng.standard_normal((N, M)).astype(dtype)
    C1, C2 = C0.copy(), C0.copy()
    tile(C1, A, Bm, boff, 0)
    scalar(C2, A, Bm, boff)
    assert np.array_equal(C1, C2)
    C4, C5 = np.full_like(C0, np.nan), np.zeros_like(C0)
    tile(C4, A, Bm, boff, 1)
    scalar(C5, A, Bm, boff)
    assert np.array_equal(C4, C5)
    C3 = C0.copy()
    tile_T(C3, A, np.ascontiguousarray(Bm[:, boff:].T))
    assert np.array_equal(C3, C2)
    ref = C0.astype(np.float64) + A.astype(np.float64) @ Bm[:, boff:].astype(np.float64)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    assert np.max(np.abs(C1 - ref)) <= tol * max(1.0, np.max(np.abs(ref)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N", [3, 5, 6, 7, 9, 25, 26, 27, 49, 50, 53, 98])
def test_tiles_whose_last_block_takes_the_rows_left_give_the_same_bits(dtype, N):
    """A tile's last block of R rows takes up to X rows left below it (avx512: 25 rows as 12 +
    13, 50 as 48 + 14), and a range of rows whose last tile would hold only those rows ends its
    tile there instead (engine.tile_end); in the avx2 and generic families the last blocks of 4
    and the rows left below them run as blocks of 3 (engine.split_rows: 25 as 4 · 4 + 3 · 3, 26
    as 5 · 4 + 2 · 3), and a tile that would leave 1, 2 or 5 rows ends 8 rows early (49 rows as
    40 + 9). The step and block products still compute every output as the plain fma chain,
    bitwise, across k-blocks (K > KC) and column tails; with ``fresh``, from 0 in the first
    k-block and from the partial sums in C after it, as the loop from C = 0 (with K = 0: 0)."""
    rng = np.random.default_rng(N)
    for K, M in ((600, 70), (65, 1024)):   # 600: past a k-block of either KC (256 or 512)
        A = rng.standard_normal((N, K)).astype(dtype)
        Bm = rng.standard_normal((K, M)).astype(dtype)
        C0 = rng.standard_normal((N, M)).astype(dtype)
        want = C0.copy()
        scalar_product(want, A, Bm)
        P = engine.packed(Bm, 0, M)
        got = C0.copy()
        block_product(got, A, P, 0)
        assert np.array_equal(got, want)
        from_zero = np.zeros_like(C0)
        scalar_product(from_zero, A, Bm)
        got = np.full_like(C0, np.nan)
        block_product(got, A, P, 1)
        assert np.array_equal(got, from_zero)
        got = np.full_like(C0, np.nan)
        block_product(got, A[:, :0], P[:, :0], 1)   # no terms: zeros
        assert not got.any()
        got = C0.copy()
        engine.step_product(got, A, P, 0, N, M, K)
        assert np.array_equal(got, want)
    if engine.micro.X and 0 < N - engine.ROWS <= engine.micro.X:   # 49, 50 rows: one tile, not 48 + 1 or 2
        assert engine.tile_end(0, N) == N
    if engine.micro.SPLIT:
        m = (1, 2, 3, 4, 5, 6, 7, 9, 25, 26, 27)
        assert [engine.split_rows(v) for v in m] == [0, 0, 3, 0, 0, 6, 3, 9, 9, 6, 3]
        assert [engine.tile_end(0, engine.ROWS + v) for v in (1, 2, 3, 4, 5, 9)] == [40, 40, 48, 48, 40, 48]
    else:
        assert engine.tile_end(0, engine.ROWS + engine.micro.X + 1) == engine.ROWS


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_of_a_that_alias_in_l1_are_copied_apart_with_the_same_bits(dtype):
    """Rows of A 4096 bytes apart (1024 float32, 512 float64: H = 1024's states) are copied apart
    before a sweep step's product reads them (engine.aliased, engine.unaliased_copy: with the
    avx512 family's 12-row blocks; the 4-row blocks of the others read them as they are): the copy
    holds A's values on rows that no longer alias, and the step product is still each output's
    one fma chain, from a row past 0."""

    @kernel(parallel=False)
    def step(C, A, W, n0, n1):
        P = np.empty((engine.n_panels(W.shape[0]), W.shape[1], engine.PANEL), W.dtype)
        for p in range(engine.n_panels(W.shape[0])):
            engine.pack_panel_T(P, W, p)
        engine.step_product(C, A, P, n0, n1, C.shape[1], A.shape[1])

    @kernel(parallel=False)
    def copy(out, A, n0, n1, k0, k1):
        B = engine.unaliased_copy(A, n0, n1, k0, k1)
        out[:] = B
        return B.strides[0]

    @kernel(parallel=False)
    def scalar(C, A, Bm, n0, n1):
        engine.acc_scalar(C, A, Bm, n0, n1, 0, C.shape[1], 0, 0, A.shape[1])

    K = 4096 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(7)
    A = rng.standard_normal((30, K)).astype(dtype)
    W = rng.standard_normal((70, K)).astype(dtype)
    assert engine.aliased(A, 3, 29) == (engine.micro.R > engine.ALIAS_ROWS)
    assert not engine.aliased(A[:, :K - 16].copy(), 3, 29)
    out = np.zeros((26, 296), dtype)
    stride = copy(out, A, 3, 29, 5, 301)
    assert np.array_equal(out, A[3:29, 5:301]) and stride % engine.ALIAS != 0
    C0 = rng.standard_normal((30, 70)).astype(dtype)
    C1, R1 = C0.copy(), C0.copy()
    step(C1, A, W, 3, 29)
    scalar(R1, A, np.ascontiguousarray(W.T), 3, 29)
    assert np.array_equal(C1, R1)
    assert not np.array_equal(C1, C0) and np.array_equal(C1[:3], C0[:3]) and np.array_equal(C1[29:], C0[29:])


def test_a_product_of_several_k_blocks_in_chunks_of_rows_gives_the_scalar_fma_chains():
    """engine.block_product with more than one k-block runs the rows in chunks
    (engine.chunk_rows_c: CHUNK_C_BYTES of C each), every chunk through every k-block: two whole
    chunks and a partial one, or one chunk that the family's few last rows join (micro.X), over
    two k-blocks, a partial panel and two column blocks, from 0 and onto C; bitwise the plain
    fma chain of each output."""
    rc = engine.chunk_rows_c(engine.COLS * 4)
    assert rc % engine.ROWS == 0 and rc * engine.COLS * 4 <= max(engine.CHUNK_C_BYTES, engine.ROWS * engine.COLS * 4)
    K, M = engine.KC + 9, engine.COLS + engine.PANEL + 5
    rng = np.random.default_rng(5)
    Bm = rng.standard_normal((K, M)).astype(np.float32)
    P = engine.packed_all(Bm)
    for N in (2 * rc + engine.ROWS + 7, rc + engine.micro.X):
        A, C0 = rng.standard_normal((N, K)).astype(np.float32), rng.standard_normal((N, M)).astype(np.float32)
        for fresh in (0, 1):
            C, R = C0.copy(), (np.zeros_like(C0) if fresh else C0.copy())
            if fresh:
                C[:] = np.nan   # never read
            block_product(C, A, P, fresh)
            scalar_product(R, A, Bm)
            assert np.array_equal(C, R), (N, fresh)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_large_products_copy_aliased_rows_apart_with_the_same_bits(dtype):
    """engine.rows_apart: an array whose rows are 4096 bytes apart is copied, in one pass, onto
    rows that are not (with the avx512 family; the others read it as it is), holding the same
    values in A's shape; the dense products and the recurrent projection and dx that read it
    give the bits they give on the same numbers in rows that never aliased."""
    from bptt.kernels import dense, rnn

    K = 4096 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(11)

    def spaced(a):   # the same numbers, rows 4096 + 64 bytes apart: no copy made
        out = np.zeros(a.shape[:-1] + (a.shape[-1] + 64 // a.itemsize,), a.dtype)[..., :a.shape[-1]]
        out[...] = a
        return out

    x = rng.standard_normal((3, 40, K)).astype(dtype)
    copied = engine.rows_apart(x, "test_apart")
    assert np.array_equal(copied, x) and copied.shape == x.shape
    assert (copied is not x) == (engine.micro.R > engine.ALIAS_ROWS)
    assert not engine.rows_alias(copied) and engine.rows_apart(spaced(x), "test_apart").strides[1] % 4096 != 0
    W = rng.standard_normal((48, K)).astype(dtype)
    b = rng.standard_normal(48).astype(dtype)
    X = x.reshape(-1, K)
    y1, y2 = np.zeros((120, 48), dtype), np.zeros((120, 48), dtype)
    dense.dense_forward(y1, X, W, b)
    dense.dense_forward(y2, spaced(X), W, b)
    assert np.array_equal(y1, y2) and np.any(y1 != 0)
    dy = rng.standard_normal((120, K)).astype(dtype)
    Wt = rng.standard_normal((K, 40)).astype(dtype)
    d1, d2 = np.ones((120, 40), dtype), np.ones((120, 40), dtype)
    dense.dense_backward_input(d1, dy, Wt)
    dense.dense_backward_input(d2, spaced(dy), Wt)
    assert np.array_equal(d1, d2)
    assert x.shape[1] >= rnn.SPLIT_B   # the recurrent passes' own kernel (step_products)
    g = np.zeros((3, 40, 48), dtype)
    rnn.input_forward(g, x, W, b)
    assert np.array_equal(g.reshape(120, 48), y2)
    e = np.ones((3, 40, 40), dtype)
    rnn.input_backward(e, dy.reshape(3, 40, K), Wt)
    assert np.array_equal(e.reshape(120, 40), d2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("R,K,W,r0", [(5, 7, 1, 0), (40, 300, 4, 3), (300, 33, 15, 17)])
def test_acc_narrow_gives_the_bits_of_the_scalar_fma_chain(dtype, R, K, W, r0):
    """The transposed narrow-column product (weight gradients' last columns) is the same fma
    chains: C[r, c0 + c] += Σ_k AT[k, r] · Bw[k, c], bitwise the element-by-element loop."""

    @kernel(parallel=False)
    def narrow(C, AT, Bw, c0, r0, r1):
        engine.acc_narrow(C, AT, Bw, c0, r0, r1)

    @kernel(parallel=False)
    def scalar(C, A, Bm, c0, r0, r1):
        engine.acc_scalar(C, A, Bm, r0, r1, c0, C.shape[1], -c0, 0, A.shape[1])

    rng = np.random.default_rng(R * 7 + K)
    AT = rng.standard_normal((K, r0 + R + 2)).astype(dtype)
    B = rng.standard_normal((K, W + 3)).astype(dtype)
    Bw = B[:, 3:]                                          # a strided view of W columns
    c0 = 5
    C0 = rng.standard_normal((r0 + R + 2, c0 + W)).astype(dtype)
    C1, C2 = C0.copy(), C0.copy()
    narrow(C1, AT, Bw, c0, r0, r0 + R)
    scalar(C2, AT.T, np.ascontiguousarray(Bw), c0, r0, r0 + R)
    assert np.array_equal(C1, C2)
    assert np.array_equal(C1[:, :c0], C0[:, :c0]) and np.array_equal(C1[:r0], C0[:r0])


def _body_cases(fam):
    """(R, W, blocks, pair) of the host family's largest body, its smallest, and its pair or
    row-panel body."""
    cases = [(fam.SIZES[0][0], fam.SIZES[0][1], 1, False), (1, 1, 1, False)]
    cases += [(R, W, 1, True) for R, W in fam.PAIRS]
    if fam.ROW_PANELS > 1:
        cases.append((1, fam.PANEL, fam.ROW_PANELS, False))
    return cases


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_ir_bodies_give_the_bits_of_the_readable_bodies(dtype):
    """The compiled bodies are written in LLVM vector IR (microcall.vector_body); the family
    file's scalar bodies are their readable form. Both, compiled on their own, give the same bits
    on the same block, with strided A and an overlapping pair (d < W), adding to C and, with
    ``fresh``, from 0 into a C full of NaN (each output the sum from 0)."""
    import ctypes

    import numba
    from numba.core import types

    from bptt.kernels import microcall
    fam = engine.micro
    nt = types.float32 if dtype == np.float32 else types.float64
    p, i = types.CPointer(nt), types.int64
    ct = ctypes.POINTER(ctypes.c_float if dtype == np.float32 else ctypes.c_double)
    rng = np.random.default_rng(0)
    K, ldc, ldb = 37, 3 * fam.PANEL * max(2, fam.ROW_PANELS), 2 * fam.PANEL * max(2, fam.ROW_PANELS)
    A = rng.standard_normal((fam.R, 2 * K)).astype(dtype)      # A[r, k] = A[r, 2k]: sa1 = 2
    B = rng.standard_normal((K, ldb)).astype(dtype)
    C0 = rng.standard_normal((fam.R, ldc)).astype(dtype)      # the main block's rows
    for R, W, blocks, pair in _body_cases(fam):
        extra = (W // 2,) if pair else (fam.PANEL * K,) if blocks > 1 else ()
        Bx = rng.standard_normal((blocks * K, fam.PANEL)).astype(dtype) if blocks > 1 else B
        outs = []
        for form in ("scalar", "vector"):
            fn = microcall.body_function(fam, R, W, blocks, pair, form=form)
            sig = types.void(p, i, p, i, i, p, i, i, i, i, *([i] * len(extra)))
            c = numba.cfunc(sig, cache=False, error_model="numpy")(fn)
            for C in (C0.copy(), np.full_like(C0, np.nan), np.zeros_like(C0)):   # C, fresh, C = 0
                fresh = int(np.isnan(C[0, 0]))
                c.ctypes(C.ctypes.data_as(ct), ldc, A.ctypes.data_as(ct), 2 * K, 2, Bx.ctypes.data_as(ct),
                         Bx.shape[1], 2, K - 1, fresh, *extra)
                outs.append(C)
        assert not np.array_equal(outs[3], C0), (R, W, blocks, pair)
        assert np.array_equal(outs[0], outs[3]), (R, W, blocks, pair)
        assert np.array_equal(outs[1], outs[4], equal_nan=True), (R, W, blocks, pair)
        written = ~np.isnan(outs[4])       # the block's outputs: the sums from 0
        assert written.sum() == np.count_nonzero(outs[5]) > 0, (R, W, blocks, pair)
        assert np.array_equal(outs[4][written], outs[5][written]), (R, W, blocks, pair)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_streaming_body_gives_the_bits_of_the_plain_one(dtype):
    """The main block's streaming body (prefetching the next sliver of B as it goes) computes
    the same sums as the plain body, in both forms, wherever its prefetch points (here: past the
    end of B, which a prefetch may do)."""
    import ctypes

    import numba
    from numba.core import types

    from bptt.kernels import microcall
    fam = engine.micro
    if fam.STREAM is None:
        pytest.skip(f"the {fam.ISA} family has no streaming body")
    R, W = fam.STREAM
    nt = types.float32 if dtype == np.float32 else types.float64
    p, i = types.CPointer(nt), types.int64
    ct = ctypes.POINTER(ctypes.c_float if dtype == np.float32 else ctypes.c_double)
    rng = np.random.default_rng(1)
    K, ldc = 300, 2 * W
    A = rng.standard_normal((R, K)).astype(dtype)
    B = rng.standard_normal((K, W)).astype(dtype)
    C0 = rng.standard_normal((R, ldc)).astype(dtype)
    outs = []
    for form in ("scalar", "vector"):
        for stream in (False, True):
            fn = microcall.body_function(fam, R, W, form=form, stream=stream)
            extra = (p, i) if stream else ()
            c = numba.cfunc(types.void(p, i, p, i, i, p, i, i, i, i, *extra), cache=False, error_model="numpy")(fn)
            C = C0.copy()
            args = [C.ctypes.data_as(ct), ldc, A.ctypes.data_as(ct), K, 1, B.ctypes.data_as(ct), W, 3, K - 1, 0]
            if stream:
                args += [ctypes.cast(B.ctypes.data + B.nbytes, ct), 16 * 64]   # a line a step, past B
            c.ctypes(*args)
            outs.append(C)
    assert not np.array_equal(outs[0], C0)
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_copying_body_packs_its_panel_and_gives_the_bits_of_the_plain_one(dtype):
    """The main block's copying body (reading B where it lies, row stride ldb, and storing each
    row k0 ... k1-1 it reads into a panel: engine.packing_product) computes the bits of the
    plain body, in both forms, from C and from 0, and leaves in the panel B's rows k0 ... k1-1
    and nothing else."""
    import ctypes

    import numba
    from numba.core import types

    from bptt.kernels import microcall
    fam = engine.micro
    if not engine.COPY:
        pytest.skip(f"the {fam.ISA} family has no copying body")
    R, W = fam.R, fam.PANEL
    nt = types.float32 if dtype == np.float32 else types.float64
    p, i = types.CPointer(nt), types.int64
    ct = ctypes.POINTER(ctypes.c_float if dtype == np.float32 else ctypes.c_double)
    rng = np.random.default_rng(2)
    K, ldc, ldb, k0, k1 = 300, 2 * W, 3 * W + 5, 3, 299
    A = rng.standard_normal((R, K)).astype(dtype)
    B = rng.standard_normal((K, ldb)).astype(dtype)   # the block reads its first W columns
    C0 = rng.standard_normal((R, ldc)).astype(dtype)
    bodies = {}   # each compiled once (a scalar body takes seconds), run from C and from 0
    for form in ("scalar", "vector"):
        for copy in (False, True):
            fn = microcall.body_function(fam, R, W, form=form, copy=copy)
            extra = (p,) if copy else ()
            bodies[form, copy] = numba.cfunc(types.void(p, i, p, i, i, p, i, i, i, i, *extra), cache=False,
                                             error_model="numpy")(fn)
    for fresh in (0, 1):
        outs = []
        for form in ("scalar", "vector"):
            for copy in (False, True):
                c = bodies[form, copy]
                C = C0.copy()
                S = np.full((K, W), np.nan, dtype)
                args = [C.ctypes.data_as(ct), ldc, A.ctypes.data_as(ct), K, 1, B.ctypes.data_as(ct), ldb, k0, k1, fresh]
                if copy:
                    args.append(S.ctypes.data_as(ct))
                c.ctypes(*args)
                outs.append(C)
                if copy:
                    assert np.array_equal(S[k0:k1], B[k0:k1, :W]), (form, fresh)
                    assert np.isnan(S[:k0]).all() and np.isnan(S[k1:]).all(), (form, fresh)
        assert not np.array_equal(outs[0], C0)
        for out in outs[1:]:
            assert np.array_equal(out, outs[0]), fresh

