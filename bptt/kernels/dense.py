"""Dense (fully connected) layer: y = x·Wᵀ + b, as ``torch.nn.Linear``.

Shapes: x (N, I), W (O, I), b (O,), y (N, O). N is any number of rows (B, or B·T).

    forward:   y[n, o] = b[o] + Σ_i x[n, i] W[o, i]
    backward:  dx[n, i] += Σ_o dy[n, o] W[o, i]      dW[o, i] += Σ_n dy[n, o] x[n, i]
               db[o] += Σ_n dy[n, o]

Each product runs on the product engine (:mod:`bptt.kernels.engine`): its right-hand matrix in
panels, tiles of the output in a ``prange``, every output one fma chain in a fixed order, so the
bits do not depend on the thread count or the ISA.
Reference twins: :mod:`bptt.reference.dense` (same names and signatures, plain NumPy).
"""
from ..jit import inline, kernel, prange
from .engine import (COLS, NARROW, PANEL, acc_narrow, add_column_sums, block_origin, block_product,
                     n_blocks, packed, packed_T, transposed)


@kernel
def dense_forward(y, x, W, b):
    """y[n, o] = b[o] + Σ_i x[n, i] W[o, i].

    y : (N, O) output, x : (N, I), W : (O, I), b : (O,).
    On Wᵀ (I, O), packed into panels once per call; parallel over blocks of y
    (:func:`bptt.kernels.engine.block_product`).
    """
    N, I = x.shape
    O = W.shape[0]
    P = packed_T(W)
    ng, ncb = n_blocks(N, O)
    for job in prange(ng * ncb):
        n0, n1, c0, c1 = block_origin(job, N, O)
        fill_rows(y, b, n0, n1, c0, c1)
        block_product(y, x, P, n0, n1, c0, c1, 0, I)


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

    dx : (N, I) accumulated, dy : (N, O), W : (O, I). On W in panels; parallel over blocks of
    dx (:func:`bptt.kernels.engine.block_product`).
    """
    N, O = dy.shape
    I = W.shape[1]
    P = packed(W, 0, I)
    ng, ncb = n_blocks(N, I)
    for job in prange(ng * ncb):
        n0, n1, c0, c1 = block_origin(job, N, I)
        block_product(dx, dy, P, n0, n1, c0, c1, 0, O)


@inline
def weight_grads(dW, db, dy, P, I):
    """dW[o, i] += Σ_n dy[n, o] X[n, i],  db[o] += Σ_n dy[n, o], for X (N, I) given in panels P
    (:func:`packed`): the dense layer's weight gradients, and a recurrent layer's below
    ``bptt.kernels.rnn.SPLIT_B`` sequences. dW : (O, I), db : (O,), dy : (N, O).

    Parallel over blocks of dW (:func:`bptt.kernels.engine.block_product` with A = dyᵀ, from a
    transposed copy; the last I mod NARROW columns with
    :func:`acc_narrow`) and over blocks of db, so each entry has one writer and sums over n in
    order. Inline: its ``prange`` loops join the calling kernel's parallel code."""
    N, O = dy.shape
    I16 = I - I % NARROW   # whole NARROW-column groups; the rest lies in one panel
    for blk in prange((O + COLS - 1) // COLS):
        add_column_sums(db, dy, blk * COLS, min(O, blk * COLS + COLS))
    dyT = transposed(dy)   # A = dyᵀ read along its rows (see engine.transposed)
    ng, ncb = n_blocks(O, I16)
    for job in prange(ng * ncb):
        n0, n1, c0, c1 = block_origin(job, O, I16)
        block_product(dW, dyT, P, n0, n1, c0, c1, 0, N)
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
