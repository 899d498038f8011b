"""Dense (fully connected) layer: y = x·Wᵀ + b, as ``torch.nn.Linear``, and the blocked product
every kernel shares.

Shapes: x (N, I), W (O, I), b (O,), y (N, O). N is any number of rows (B, or B·T).

Blocking. Every matrix product in bptt is written as C[n, c] += Σ_k A[n, k] · Bm[k, c] with Bm
row-contiguous in c, and computed by :func:`acc_tile` one tile of ``ROWS`` rows × ``COLS``
columns at a time: for each k in order, for each row (two rows at a time), the contiguous slice
C[n, c0:c1] gets A[n, k] · Bm[k, c0:c1]. The innermost loop runs over *independent* outputs, so LLVM vectorises
it (broadcast a scalar, multiply a vector, add into a vector of C) without re-associating any
sum: every output still sums over k in increasing order, so the result is the same for any
tiling and any thread count. The tile of C stays in L1 and the panel Bm[:, c0:c1] in L2 while
the rows of the tile reuse it.
"""
import numpy as np

from ..jit import inline, kernel, prange

ROWS = 32    # rows of C per tile
COLS = 256   # columns of C per tile (a panel of Bm, K × COLS, is reused by the tile's rows)
CHUNK = 16   # at most this many batch rows per parallel chunk of a recurrent sweep


@inline
def acc_tile(C, A, Bm, n0, n1, c0, c1, boff, k0, k1):
    """C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] · Bm[k, boff + c]   for n0 ≤ n < n1, c0 ≤ c < c1.

    C and Bm must be C-contiguous (their rows are sliced); A may be any view (read by element).
    Two rows at a time share each loaded vector of Bm (with more, LLVM's runtime alias checks
    between the rows exceed its limit and the loop stays scalar); the sum over k runs in
    increasing order for every output.
    """
    m = c1 - c0
    n = n0
    while n + 2 <= n1:
        C0 = C[n, c0:c1]
        C1 = C[n + 1, c0:c1]
        for k in range(k0, k1):
            b = Bm[k, boff + c0:boff + c1]
            a0 = A[n, k]
            a1 = A[n + 1, k]
            for c in range(m):   # independent outputs: vectorised
                bc = b[c]
                C0[c] += a0 * bc
                C1[c] += a1 * bc
        n += 2
    if n < n1:                   # an odd last row
        Cn = C[n, c0:c1]
        for k in range(k0, k1):
            b = Bm[k, boff + c0:boff + c1]
            a = A[n, k]
            for c in range(m):
                Cn[c] += a * b[c]


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
    for o in prange(O):
        s = 0.0
        for n in range(N):
            s += dy[n, o]
        db[o] += s
    nt, per_row = n_tiles(O, I)
    for tile in prange(nt):
        n0 = (tile // per_row) * ROWS
        c0 = (tile % per_row) * COLS
        acc_tile(dW, dyT, x, n0, min(O, n0 + ROWS), c0, min(I, c0 + COLS), 0, 0, N)
