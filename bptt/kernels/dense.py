"""Dense (fully connected) layer: y = x·Wᵀ + b, as ``torch.nn.Linear``.

Shapes: x (N, I), W (O, I), b (O,), y (N, O). N is any number of rows (B, or B·T).

    forward:   y[n, o] = b[o] + Σ_i x[n, i] W[o, i]
    backward:  dx[n, i] += Σ_o dy[n, o] W[o, i]      dW[o, i] += Σ_n dy[n, o] x[n, i]
               db[o] += Σ_n dy[n, o]

Each product runs on the product engine (:mod:`bptt.kernels.engine`): its right-hand matrix in
panels, tiles of the output as parallel jobs, every output one fma chain in a fixed order, so the
bits do not depend on the thread count or the ISA.
Reference twins: :mod:`bptt.reference.dense` (same names and signatures, plain NumPy).
"""
from ..jit import composite, inline, jobs
from .engine import (COLS, NARROW, PANEL, LAST_PANELS, LAST_PANELS_T, acc_narrow, add_column_sums, block_jobs,
                     block_index, block_origin, block_product, n_blocks, packed, panels_all, panels_T, rows_apart,
                     scratch, transpose_rows_into, transposed, transposed_copy)


SWAP_WORK = 1 << 22   # multiply-adds from which a forward with few rows may run transposed
APART_N = 256         # rows of x from which the transposed forward copies an aliasing W apart


@composite
def dense_forward(y, x, W, b):
    """y[n, o] = b[o] + Σ_i x[n, i] W[o, i].

    y : (N, O) output, x : (N, I), W : (O, I), b : (O,).
    On Wᵀ (I, O), packed into panels once per call; a job per block of y
    (:func:`bptt.kernels.engine.block_product`).

    With fewer rows than the packing of W costs (N·(I + O) < O·I: a mini-batch through a wide
    layer), it runs transposed instead, yᵀ = W·xᵀ: W read in place as the left operand, xᵀ
    packed, and each job's block of yᵀ transposed into y. Each output is the same fma chain over i from b[o] (a
    product a·b is b·a exactly), so the same bits, for a quarter of the packing at the MLP's
    128 × 784 → 512. Where W's rows alias in L1 (I a multiple of 1024 float32,
    :func:`bptt.kernels.engine.rows_alias`) and x has ``APART_N`` rows or more, W is first copied
    apart (:func:`bptt.kernels.engine.rows_apart`): 800 × 1024 → 4096 on two threads, 36.0 → 33.4
    ms; with fewer rows the copy costs more than it saves (32 × 1024 → 4096: 1.51 → 2.06 ms).
    """
    N, I = x.shape
    O = W.shape[0]
    if (N * (I + O) < O * I and N * I * O >= SWAP_WORK and W.strides[1] == W.itemsize
            and y.strides[1] == y.itemsize):
        yT = scratch("dense_yT", O * N, y.dtype).reshape((O, N))
        A = rows_apart(W, "dense_W") if N >= APART_N else W
        _forward_T_blocks(block_jobs(O, N), y, yT, A, b, panels_T(x, "dense_xT"))
        return
    _forward_blocks(block_jobs(N, O), y, rows_apart(x, "dense_x"), b, W)


@jobs
def _forward_T_blocks(job, njobs, y, yT, W, b, P):
    """Block ``job`` of :func:`dense_forward`'s yᵀ (O, N) = W·xᵀ + b, P: xᵀ in panels, then
    transposed into y while it is in this core's cache (a pass of its own read blocks the other
    core had written: the MLP's 128 × 784 → 512 forward 2-4 % faster on two threads,
    docs/performance.md)."""
    O, I = W.shape
    N = yT.shape[1]
    n0, n1, c0, c1 = block_origin(job, O, N)
    for o in range(n0, n1):   # each sum starts from its bias
        row = yT[o, c0:c1]
        for c in range(c1 - c0):
            row[c] = b[o]
    block_product(yT, W, P, n0, n1, c0, c1, 0, I)
    transpose_rows_into(y[c0:c1, n0:n1], yT[n0:n1, c0:c1])


@jobs(last=LAST_PANELS_T)
def _forward_blocks(job, njobs, y, x, b, P):
    """Block ``job`` of :func:`dense_forward`'s y; P: Wᵀ in panels."""
    N, I = x.shape
    O = y.shape[1]
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


@composite
def dense_backward_input(dx, dy, W):
    """dx[n, i] += Σ_o dy[n, o] W[o, i]   (∂L/∂x = dy·W).

    dx : (N, I) accumulated, dy : (N, O), W : (O, I). On W in panels; a job per block of
    dx (:func:`bptt.kernels.engine.block_product`).
    """
    _backward_input_blocks(block_jobs(dy.shape[0], W.shape[1]), dx, rows_apart(dy, "dense_dy"), W)


@jobs(last=LAST_PANELS)
def _backward_input_blocks(job, njobs, dx, dy, P):
    """Block ``job`` of :func:`dense_backward_input`'s dx; P: W in panels."""
    N, O = dy.shape
    I = dx.shape[1]
    n0, n1, c0, c1 = block_origin(job, N, I)
    block_product(dx, dy, P, n0, n1, c0, c1, 0, O)


@inline
def weight_grad_operands(ops):
    """(dyᵀ, x in panels) for ops = (dy, x): what every job of :func:`dense_backward_params`
    reads, prepared once (in the serial launcher; :func:`weight_grad_operands_copy` for the
    parallel run). dyᵀ is in the first N columns of its rows, which are
    :func:`bptt.kernels.engine.apart_rows` long (a batch of 1024 rows: 1040)."""
    dy, x = ops
    return transposed(dy), packed(x, 0, x.shape[1])


def weight_grad_operands_copy(ops):
    """:func:`weight_grad_operands` for composite kernels (each a job set of its own)."""
    dy, x = ops
    return transposed_copy(dy, "wg_dyT"), panels_all(x, "wg_x")


def weight_grad_jobs(O, I):
    """Jobs of :func:`_weight_grads`: the blocks of dW's first I16 columns (those of the first
    column block with their rows' bias sums; with no such column, the bias sums by blocks of
    ``COLS`` outputs), then the last I mod NARROW columns by blocks of outputs."""
    nsum = (O + COLS - 1) // COLS
    I16 = I - I % NARROW
    return (block_jobs(O, I16) if I16 > 0 else nsum) + (nsum if I16 < I else 0)


@jobs(last=(weight_grad_operands, weight_grad_operands_copy))
def _weight_grads(j, njobs, dW, db, dy, ops):
    """Job j of the dense layer's weight gradients (and a recurrent layer's below
    ``bptt.kernels.rnn.SPLIT_B`` sequences), for X (N, I) given in panels P and A = dyᵀ:

        dW[o, i] += Σ_n dy[n, o] X[n, i],   db[o] += Σ_n dy[n, o]

    ops = (dyᵀ, P) (:func:`weight_grad_operands`). dW : (O, I), db : (O,), dy : (N, O). Jobs in
    two ranges (:func:`weight_grad_jobs`), which write disjoint outputs: blocks of dW's first
    I16 columns (:func:`bptt.kernels.engine.block_product` with A = dyᵀ, read along its rows),
    the first column block's jobs also summing db for their rows of dW
    (:func:`bptt.kernels.engine.add_column_sums`), and the last I mod NARROW columns, by blocks
    of rows of dW (:func:`acc_narrow`); with I < NARROW the first range is blocks of db alone.
    Each entry has one writer and sums over n in order. (The bias sums were jobs of their own,
    first: on two threads the first thread's share then held two fewer blocks of dW than the
    other's, at the MLP's 512 × 512 layer 8 against 10.)"""
    dyTa, P = ops
    N, O = dy.shape
    dyT = dyTa[:, :N]   # rows apart_rows(N) long
    I = dW.shape[1]
    I16 = I - I % NARROW   # whole NARROW-column groups; the rest lies in one panel
    nfirst = (O + COLS - 1) // COLS
    if I16 > 0:
        ng, ncb = n_blocks(O, I16)
        nfirst = ng * ncb
    if j < nfirst:
        if I16 == 0:
            add_column_sums(db, dy, j * COLS, min(O, j * COLS + COLS))
            return
        n0, n1, c0, c1 = block_origin(j, O, I16)
        g, cb = block_index(j, O, I16)
        if cb == g % ncb:   # each row group's bias sums in one of its jobs, spread over the blocks
            add_column_sums(db, dy, n0, n1)
        block_product(dW, dyT, P, n0, n1, c0, c1, 0, N)
    else:
        t = j - nfirst
        tail = P[I16 // PANEL][:, I16 % PANEL:I16 % PANEL + I - I16]
        acc_narrow(dW, dy, tail, I16, t * COLS, min(O, t * COLS + COLS))


@composite
def dense_backward_params(dW, db, dy, x):
    """dW[o, i] += Σ_n dy[n, o] x[n, i],  db[o] += Σ_n dy[n, o]   (∂L/∂W = dyᵀ·x).

    dW : (O, I) accumulated, db : (O,) accumulated, dy : (N, O), x : (N, I).
    x is packed into panels and dy transposed, then the jobs of :func:`_weight_grads`.
    """
    _weight_grads(weight_grad_jobs(dW.shape[0], dW.shape[1]), dW, db, dy, (dy, x))
