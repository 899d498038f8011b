"""Dense (fully connected) layer: y = x·Wᵀ + b, as ``torch.nn.Linear``, and the blocked product
every kernel shares.

Shapes: x (N, I), W (O, I), b (O,), y (N, O). N is any number of rows (B, or B·T).

Blocking. Every matrix product in bptt is written as C[n, c] += Σ_k A[n, k] · Bm[k, c] with Bm
row-contiguous in c, and computed by :func:`acc_tile` on one tile of at most ``ROWS`` rows ×
``COLS`` columns: k in blocks of ``KC`` (so that the panel Bm[k-block, tile columns] stays in L2
while the tile's rows reuse it), and inside a block, register-blocked micro-kernels
(:mod:`bptt.kernels.micro`) of 4 rows × 64 columns, then 4 × 16, then single rows, then single
elements for what is left. Every path computes each output the same way,

    s = C[n, c];  for k in increasing order: s = fma(A[n, k], Bm[k, c], s);  C[n, c] = s

one fused multiply-add chain in a fixed order (:func:`acc_scalar` is the plain version), so the
result is the same bits for any tiling, any thread count and any build, vectorised or not.
"""
import numpy as np

from ..jit import fma, inline, kernel, prange
from .micro import micro_1x16, micro_1x64, micro_4x16, micro_4x64

ROWS = 32    # rows of C per tile
COLS = 256   # columns of C per tile (a panel of Bm, KC × COLS, is reused by the tile's rows)
KC = 256     # k per block inside a tile
CHUNK = 16   # at most this many batch rows per parallel chunk of a recurrent sweep


@inline
def acc_scalar(C, A, Bm, n0, n1, c0, c1, boff, k0, k1):
    """C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] · Bm[k, boff + c], one element at a time (the tails)."""
    for n in range(n0, n1):
        for c in range(c0, c1):
            s = C[n, c]
            for k in range(k0, k1):
                s = fma(A[n, k], Bm[k, boff + c], s)
            C[n, c] = s


@inline
def acc_tile(C, A, Bm, n0, n1, c0, c1, boff, k0, k1):
    """C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] · Bm[k, boff + c]   for n0 ≤ n < n1, c0 ≤ c < c1.

    C and Bm must have contiguous rows (their rows are sliced); A may be any view (read by
    element). Micro-kernels of 4×64, 4×16, 1×64 and 1×16 cover the tile, :func:`acc_scalar` the
    rest; every output is one fma chain over k in increasing order, in k-blocks of ``KC``.
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
                while c + 16 <= c1:
                    micro_4x16(C, A, Bm, n, c, boff, kb, ke)
                    c += 16
                acc_scalar(C, A, Bm, n, n + 4, c, c1, boff, kb, ke)
                n += 4
            else:
                c = c0
                while c + 64 <= c1:
                    micro_1x64(C, A, Bm, n, c, boff, kb, ke)
                    c += 64
                while c + 16 <= c1:
                    micro_1x16(C, A, Bm, n, c, boff, kb, ke)
                    c += 16
                acc_scalar(C, A, Bm, n, n + 1, c, c1, boff, kb, ke)
                n += 1


@inline
def add_column_sums(db, g):
    """db[u] += Σ_n g[n, u] for the bias gradients: each sum in float64 from 0, over n in order.

    db : (U,) accumulated.  g : (N, U) with contiguous rows. Serial: g is read row by row and the
    U independent sums advance together (vectorised), which is memory-bound and fast; a column
    at a time would stride through g.
    """
    N, U = g.shape
    s = np.zeros(U, np.float64)
    for n in range(N):
        gn = g[n]
        for u in range(U):
            s[u] += gn[u]
    for u in range(U):
        db[u] += s[u]


@inline
def row_chunk(B):
    """Rows per chunk when a recurrent sweep splits its B independent sequences into parallel
    chunks: the fewest chunks of at most CHUNK rows, of even size. Results never depend on it
    (every row's sums run in a fixed order whatever the chunking)."""
    nch = (B + CHUNK - 1) // CHUNK
    return (B + nch - 1) // nch


@inline
def n_tiles(N, M):
    """Number of ROWS × COLS tiles covering an (N, M) output, and the tiles per row block."""
    per_row = (M + COLS - 1) // COLS
    return ((N + ROWS - 1) // ROWS) * per_row, per_row


@kernel
def dense_forward(y, x, W, b):
    """y[n, o] = b[o] + Σ_i x[n, i] W[o, i].

    y : (N, O) output, x : (N, I), W : (O, I), b : (O,).
    Blocked with :func:`acc_tile` on Wᵀ (I, O), transposed once per call; parallel over tiles.
    """
    N, I = x.shape
    O = W.shape[0]
    WT = np.ascontiguousarray(W.T)
    nt, per_row = n_tiles(N, O)
    for tile in prange(nt):
        n0 = (tile // per_row) * ROWS
        c0 = (tile % per_row) * COLS
        n1 = min(N, n0 + ROWS)
        c1 = min(O, c0 + COLS)
        for n in range(n0, n1):
            for o in range(c0, c1):
                y[n, o] = b[o]
        acc_tile(y, x, WT, n0, n1, c0, c1, 0, 0, I)


@kernel
def dense_backward_input(dx, dy, W):
    """dx[n, i] += Σ_o dy[n, o] W[o, i]   (∂L/∂x = dy·W).

    dx : (N, I) accumulated, dy : (N, O), W : (O, I). Blocked with :func:`acc_tile`; parallel
    over tiles of dx.
    """
    N, O = dy.shape
    I = W.shape[1]
    nt, per_row = n_tiles(N, I)
    for tile in prange(nt):
        n0 = (tile // per_row) * ROWS
        c0 = (tile % per_row) * COLS
        acc_tile(dx, dy, W, n0, min(N, n0 + ROWS), c0, min(I, c0 + COLS), 0, 0, O)


@kernel
def dense_backward_params(dW, db, dy, x):
    """dW[o, i] += Σ_n dy[n, o] x[n, i],  db[o] += Σ_n dy[n, o]   (∂L/∂W = dyᵀ·x).

    dW : (O, I) accumulated, db : (O,) accumulated, dy : (N, O), x : (N, I).
    Blocked with :func:`acc_tile` (A = dyᵀ); parallel over tiles of dW, so each dW entry has one
    writer and a fixed summation order.
    """
    N, O = dy.shape
    I = x.shape[1]
    dyT = dy.T
    add_column_sums(db, dy)
    nt, per_row = n_tiles(O, I)
    for tile in prange(nt):
        n0 = (tile // per_row) * ROWS
        c0 = (tile % per_row) * COLS
        acc_tile(dW, dyT, x, n0, min(O, n0 + ROWS), c0, min(I, c0 + COLS), 0, 0, N)
