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
import numpy as np

from ..jit import composite, inline, jobs, vector_floats
from .activations import IDENTITY, act_row
from .engine import (ALIAS, COLS, NARROW, PANEL, acc_narrow, add_column_sums, block_jobs, block_index,
                     block_origin, block_product, copy_rows, even_bound, n_blocks, n_panels, own_flags,
                     own_panels, own_panels_of, own_panels_T, own_rows_T, packing_product, own_transposed_of, rows_apart,
                     scratch, transpose_rows_into)


SWAP_WORK = 1 << 22   # multiply-adds from which a forward with few rows may run transposed
APART_N = 256         # rows of x from which the transposed forward copies an aliasing W apart
NARROW_X = 1 << 17    # numbers of x up to which a forward narrower than a panel runs transposed
LANES = vector_floats()   # float32 lanes of the ISA's vectors


@composite
def dense_forward(y, x, W, b):
    """y[n, o] = b[o] + Σ_i x[n, i] W[o, i].

    y : (N, O) output, x : (N, I), W : (O, I), b : (O,).
    On Wᵀ (I, O) in panels; a job per block of y (:func:`bptt.kernels.engine.block_product`),
    each thread packing the panels its jobs read (:func:`bptt.kernels.engine.own_panels`).

    With fewer rows than the packing of W costs (N·(I + O) < O·I: a mini-batch through a wide
    layer), it runs transposed instead, yᵀ = W·xᵀ: W read in place as the left operand, xᵀ
    packed, and each job's block of yᵀ transposed into y. Each output is the same fma chain over i from b[o] (a
    product a·b is b·a exactly), so the same bits, for a quarter of the packing at the MLP's
    128 × 784 → 512. Where W's rows alias in L1 (I a multiple of 1024 float32,
    :func:`bptt.kernels.engine.rows_alias`) and x has ``APART_N`` rows or more, W is first copied
    apart (:func:`bptt.kernels.engine.rows_apart`): 800 × 1024 → 4096 on two threads, 36.0 → 33.4
    ms; with fewer rows the copy costs more than it saves (32 × 1024 → 4096: 1.51 → 2.06 ms).

    A layer narrower than one panel (a classifier's few classes, a regression's one output; O not
    a whole number of vectors) runs transposed too while x is at most ``NARROW_X`` numbers: its O
    columns would take the narrow tail bodies (10 as 8 + 2), where yᵀ runs full vectors along the
    rows. The MLP's 512 → 10 at 128 rows (Intel Xeon, two threads): 44-47 → 27 µs; 1024 × 128 →
    10: 46 → 36; 2500 × 256 → 10 (x past the bound) 225-239 against 235-248.
    """
    _dense_forward(y, y, IDENTITY, x, W, b, None)


def _dense_forward(y, z, code, x, W, b, xc):
    """:func:`dense_forward` into y, and z = f(y) for activation ``code`` unless it is the
    identity (:func:`dense_forward_act`); x copied into xc unless it is None."""
    xc = np.empty((0, x.shape[1]), x.dtype) if xc is None else xc
    N, I = x.shape
    O = W.shape[0]
    narrow = O < PANEL and O % LANES != 0 and N * I <= NARROW_X
    if ((N * (I + O) < O * I and N * I * O >= SWAP_WORK or narrow) and W.strides[1] == W.itemsize
            and y.strides[1] == y.itemsize):
        yT = scratch("dense_yT", O * N, y.dtype).reshape((O, N))
        A = rows_apart(W, "dense_W") if N >= APART_N else W
        _forward_T_blocks(block_jobs(O, N), y, z, code, yT, A, b, x,
                          *own_panels_of(x, 0, N, "dense_xT", transposed=True), xc)
        return
    _forward_blocks(block_jobs(N, O), y, z, code, rows_apart(x, "dense_x"), b, W,
                    *own_panels_of(W, 0, O, "dense_WT", transposed=True), x, xc)


@composite
def dense_forward_act(y, z, x, W, b, code):
    """y[n, o] = b[o] + Σ_i x[n, i] W[o, i] and z = f(y) for activation ``code``
    (:mod:`bptt.kernels.activations`): :func:`dense_forward` with each job applying f to its own
    block while it is in cache. As a pass of its own (``activation_forward``), f read blocks the
    other core had written: on a Zen 4 VM, the MLP's two hidden ReLUs 21 µs in quiet minutes and
    41-51 in slow ones (docs/performance.md, twenty-fifth session). The same bits.

    y : (N, O) output (pre-activation), z : (N, O) output, x : (N, I), W : (O, I), b : (O,).
    """
    _dense_forward(y, z, code, x, W, b, None)


@composite
def dense_forward_kept(y, z, xc, x, W, b, code):
    """:func:`dense_forward_act` (with ``code`` the identity, z the same array as y:
    :func:`dense_forward`) that also copies x into xc, each job its share of the rows after it
    has read x (:func:`copy_share`): the copy a layer keeps for its backward when the caller may
    change x, made by both threads from their caches instead of by one thread before the
    forward (:class:`bptt.layers.Dense`). The MLP's step (a 128 × 784 input) took 0.991-0.999 of
    its time, paired in one process on two threads (Intel Xeon, docs/performance.md,
    thirty-first session).

    y, z : (N, O) outputs, xc : (N, I) output, x : (N, I), W : (O, I), b : (O,).
    """
    _dense_forward(y, z, code, x, W, b, xc)


@jobs(slots=True)
def _forward_T_blocks(job, njobs, slot, y, z, code, yT, W, b, x, Pp, flags, call, xc):
    """Block ``job`` of :func:`dense_forward`'s yᵀ (O, N) = W·xᵀ + b, on xᵀ in panels
    (:func:`bptt.kernels.engine.own_panels_T`), then transposed into y while it is in this core's
    cache (a pass of its own read blocks the other core had written: the MLP's 128 × 784 → 512
    forward 2-4 % faster on two threads, docs/performance.md), and z = f(y) on the block; x
    copied into xc by shares (:func:`copy_share`), after this thread's panels of xᵀ have read it."""
    O, I = W.shape
    N = yT.shape[1]
    n0, n1, c0, c1 = block_origin(job, O, N)
    P = own_panels_T(Pp, flags, call, slot, x, c0 // PANEL, n_panels(c1))
    copy_share(xc, x, job, njobs)
    for o in range(n0, n1):   # each sum starts from its bias
        row = yT[o, c0:c1]
        for c in range(c1 - c0):
            row[c] = b[o]
    block_product(yT, W, P, n0, n1, c0, c1, 0, I, 0)
    transpose_rows_into(y[c0:c1, n0:n1], yT[n0:n1, c0:c1])
    act_block(z, y, code, c0, c1, n0, n1)


@jobs(slots=True)
def _forward_blocks(job, njobs, slot, y, z, code, x, b, W, Pp, flags, call, x0, xc):
    """Block ``job`` of :func:`dense_forward`'s y, on Wᵀ in panels (:func:`own_panels_T`), and
    z = f(y) on the block; x0 (x as given, before any copy apart) copied into xc by shares
    (:func:`copy_share`)."""
    N, I = x.shape
    O = y.shape[1]
    n0, n1, c0, c1 = block_origin(job, N, O)
    P = own_panels_T(Pp, flags, call, slot, W, c0 // PANEL, n_panels(c1))
    fill_rows(y, b, n0, n1, c0, c1)
    block_product(y, x, P, n0, n1, c0, c1, 0, I, 0)
    act_block(z, y, code, n0, n1, c0, c1)
    copy_share(xc, x0, job, njobs)


@inline
def copy_share(xc, x, job, njobs):
    """xc[r] = x[r] for job's share of the rows, part ``job`` of ``njobs``
    (:func:`bptt.kernels.engine.even_bound`); nothing if xc has no rows. A copy: x's bits,
    whichever thread runs the job."""
    N = xc.shape[0]
    copy_rows(xc, x, even_bound(job, njobs, N, 1), even_bound(job + 1, njobs, N, 1))


@inline
def act_block(z, y, code, n0, n1, c0, c1):
    """z[n, c] = f(y[n, c]) over a block, f the activation ``code``; nothing for the identity."""
    if code != IDENTITY:
        for n in range(n0, n1):
            act_row(z[n, c0:c1], y[n, c0:c1], code)


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
    dx (:func:`bptt.kernels.engine.block_product`), each thread packing the panels its jobs read
    (:func:`bptt.kernels.engine.own_panels`), in the block of a job's first rows that reads them
    (:func:`bptt.kernels.engine.packing_product`).
    """
    _input_grad(dx, dy, W, False)


@composite
def dense_input_grad(dx, dy, W):
    """dx[n, i] = Σ_o dy[n, o] W[o, i]: :func:`dense_backward_input` into a dx it sets rather
    than adds to, each job clearing its own block first. The same bits as zeros then the sum,
    without a pass of one thread over all of dx first: in the MLP's step on a Zen 4 VM, in a
    slow spell, np.zeros for its 128 × 512 dx took 125-160 µs and the product after it
    370-410; cleared by the jobs, the product took 475-515 (docs/performance.md, twenty-fifth
    session).

    dx : (N, I) output, dy : (N, O), W : (O, I).
    """
    _input_grad(dx, dy, W, True)


def _input_grad(dx, dy, W, clear):
    """The jobs of :func:`dense_backward_input` (``clear``: :func:`dense_input_grad`)."""
    _backward_input_blocks(block_jobs(dy.shape[0], W.shape[1]), dx, clear, *_dx_operands(dy, W))


def _dx_operands(dy, W):
    """(dy, W, Pp, flags, call): the operands of dx's jobs (:func:`input_grad_block`), dy with
    its rows apart if they alias (:func:`bptt.kernels.engine.rows_apart`) and W in panels per
    slot (:func:`bptt.kernels.engine.own_panels_of`)."""
    return (rows_apart(dy, "dense_dy"), W, *own_panels_of(W, 0, W.shape[1], "dense_W"))


@jobs(slots=True)
def _backward_input_blocks(job, njobs, slot, dx, clear, dy, W, Pp, flags, call):
    """Block ``job`` of :func:`dense_backward_input`'s dx (:func:`input_grad_block`)."""
    input_grad_block(job, slot, dx, dy, W, clear, Pp, flags, call)


@inline
def input_grad_block(job, slot, dx, dy, W, clear, Pp, flags, call):
    """Block ``job`` of :func:`dense_backward_input`'s dx (its sums from 0 with ``clear``:
    :func:`dense_input_grad`), on W in panels (:func:`packing_product`: this thread's, packed
    by the first block of rows that reads them)."""
    N, O = dy.shape
    I = dx.shape[1]
    n0, n1, c0, c1 = block_origin(job, N, I)
    packing_product(Pp, flags, call, slot, dx, dy, W, 0, I, n0, n1, c0, c1, 0, O, clear)   # clear: from 0


@inline
def zero_block(C, n0, n1, c0, c1):
    """C[n, c] = 0 for n0 ≤ n < n1, c0 ≤ c < c1 (row views, so that the loop vectorises)."""
    for n in range(n0, n1):
        Cn = C[n, c0:c1]
        for c in range(c1 - c0):
            Cn[c] = 0


def weight_grad_jobs(O, I):
    """Jobs of :func:`_weight_grads`: the blocks of dW's first I16 columns (those of the first
    column block with their rows' bias sums; with no such column, the bias sums by blocks of
    ``COLS`` outputs), then the last I mod NARROW columns by blocks of outputs."""
    nsum = (O + COLS - 1) // COLS
    I16 = I - I % NARROW
    return (block_jobs(O, I16, True) if I16 > 0 else nsum) + (nsum if I16 < I else 0)


@jobs(slots=True)
def _weight_grads(j, njobs, slot, dW, db, dy, x, clear, inplace, Pp, pflags, pcall, Tp, tflags, tcall):
    """Job j of the dense layer's weight gradients (:func:`weight_grad_block`)."""
    weight_grad_block(j, slot, dW, db, dy, x, clear, inplace, Pp, pflags, pcall, Tp, tflags, tcall)


@inline
def weight_grad_block(j, slot, dW, db, dy, x, clear, inplace, Pp, pflags, pcall, Tp, tflags, tcall):
    """Job j of the dense layer's weight gradients (and a recurrent layer's below
    ``bptt.kernels.rnn.SPLIT_B`` sequences), on x (N, I) in panels (Pp, pflags, pcall:
    :func:`bptt.kernels.engine.own_panels`, packed by the block of a job's first rows that reads
    them: :func:`bptt.kernels.engine.packing_product`) and A = dyᵀ (Tp, tflags, tcall:
    :func:`bptt.kernels.engine.own_rows_T`; with ``inplace``, dy itself read as dyᵀ:
    :func:`wg_in_place`), each thread packing the parts its jobs read:

        dW[o, i] += Σ_n dy[n, o] x[n, i],   db[o] += Σ_n dy[n, o]

    dW : (O, I), db : (O,), dy : (N, O). Jobs in
    two ranges (:func:`weight_grad_jobs`), which write disjoint outputs: blocks of dW's first
    I16 columns (:func:`bptt.kernels.engine.block_product` with A = dyᵀ, read along its rows),
    the first column block's jobs also summing db for their rows of dW
    (:func:`bptt.kernels.engine.add_column_sums`), and the last I mod NARROW columns, by blocks
    of rows of dW (:func:`acc_narrow`); with I < NARROW the first range is blocks of db alone.
    Each entry has one writer and sums over n in order; with ``clear`` (:func:`dense_weight_grads`)
    each sum starts from 0: the blocks' micro-kernels start from 0 without reading dW
    (``block_product``'s ``fresh``), and a job clears its bias sums and narrow columns first. (The bias sums were jobs of their own,
    first: on two threads the first thread's share then held two fewer blocks of dW than the
    other's, at the MLP's 512 × 512 layer 8 against 10.)"""
    N, O = dy.shape
    I = dW.shape[1]
    n0, n1, c0, c1, bias = weight_grad_job(j, O, I)
    I16 = I - I % NARROW
    if clear:   # set, not added to (dense_weight_grads): this job's outputs from 0
        zero_job_outputs(dW, db, n0, n1, c0, c0 if c0 < I16 else c1, bias)   # the blocks: fresh sums
    if bias:
        add_column_sums(db, dy, n0, n1)
    if c1 == c0:
        return
    if c0 < I16:
        if inplace:   # A = dyᵀ read in place (wg_in_place)
            dyT = dy.T
        else:
            dyT = own_rows_T(Tp, tflags, tcall, slot, dy, n0, n1)[:, :N]   # rows apart_rows(N) long
        packing_product(Pp, pflags, pcall, slot, dW, dyT, x, 0, I, n0, n1, c0, c1, 0, N, clear)
    else:
        P = own_panels(Pp, pflags, pcall, slot, x, 0, I, I16 // PANEL, I16 // PANEL + 1)
        tail = P[I16 // PANEL][:, I16 % PANEL:I16 % PANEL + I - I16]
        acc_narrow(dW, dy, tail, I16, n0, n1)


@inline
def weight_grad_job(j, O, I):
    """(n0, n1, c0, c1, bias) of job j of :func:`_weight_grads`: it writes dW[n0:n1, c0:c1]
    (nothing with c0 = c1), and db[n0:n1] if ``bias``. The first range's jobs are the blocks of
    dW's first I16 = I - I mod NARROW columns (:func:`bptt.kernels.engine.block_origin`), each
    row group's bias sums in one of its jobs, spread over the column blocks (with I16 = 0, blocks
    of ``COLS`` bias sums alone); then the last I - I16 columns by blocks of ``COLS`` rows."""
    I16 = I - I % NARROW   # whole NARROW-column groups; the rest lies in one panel
    nfirst = (O + COLS - 1) // COLS
    if I16 > 0:
        ng, ncb = n_blocks(O, I16, True)
        nfirst = ng * ncb
    if j < nfirst:
        if I16 == 0:
            return j * COLS, min(O, j * COLS + COLS), 0, 0, True
        n0, n1, c0, c1 = block_origin(j, O, I16, True)
        g, cb = block_index(j, O, I16, True)
        return n0, n1, c0, c1, cb == g % ncb
    t = j - nfirst
    return t * COLS, min(O, t * COLS + COLS), I16, I, False


@composite
def dense_zero_grads(dW, db):
    """dW = 0, db = 0, block by block as :func:`dense_backward_params` adds to them (its jobs,
    :func:`weight_grad_jobs`, in the same order): each thread clears the blocks it then
    accumulates into, instead of one thread clearing them all (the MLP's zero_grad, 2.6 MB on a
    Zen 4 VM: 50-59 µs against 61 for NumPy's fill in quiet minutes, 120-139 against 116-129 in
    slow ones, docs/performance.md, twenty-fifth session).

    dW : (O, I), db : (O,), both set to zero.
    """
    _zero_grad_blocks(weight_grad_jobs(dW.shape[0], dW.shape[1]), dW, db)


@jobs
def _zero_grad_blocks(j, njobs, dW, db):
    """Job j of :func:`dense_zero_grads`: the outputs job j of :func:`_weight_grads` writes
    (:func:`weight_grad_job`)."""
    n0, n1, c0, c1, bias = weight_grad_job(j, dW.shape[0], dW.shape[1])
    zero_job_outputs(dW, db, n0, n1, c0, c1, bias)


@inline
def zero_job_outputs(dW, db, n0, n1, c0, c1, bias):
    """dW[n0:n1, c0:c1] = 0, and db[n0:n1] = 0 if ``bias``: the outputs of one job of
    :func:`_weight_grads` (:func:`weight_grad_job`)."""
    if bias:
        for r in range(n0, n1):
            db[r] = 0
    zero_block(dW, n0, n1, c0, c1)


@composite
def dense_backward_params(dW, db, dy, x):
    """dW[o, i] += Σ_n dy[n, o] x[n, i],  db[o] += Σ_n dy[n, o]   (∂L/∂W = dyᵀ·x).

    dW : (O, I) accumulated, db : (O,) accumulated, dy : (N, O), x : (N, I).
    The jobs of :func:`_weight_grads`, on x in panels and dy transposed.
    """
    _dense_weight_grads(dW, db, dy, x, False)


@composite
def dense_weight_grads(dW, db, dy, x):
    """dW[o, i] = Σ_n dy[n, o] x[n, i],  db[o] = Σ_n dy[n, o]: :func:`dense_backward_params` into
    gradients it sets rather than adds to, each job clearing its own block of dW (and its rows of
    db) just before it sums into them. The same bits as :func:`dense_zero_grads` then
    :func:`dense_backward_params` (each sum starts from 0 either way), without the clearing pass
    over all of dW before: a backward that sets the gradients, as torch's after
    ``zero_grad(set_to_none=True)``.

    dW : (O, I) output, db : (O,) output, dy : (N, O), x : (N, I).
    """
    _dense_weight_grads(dW, db, dy, x, True)


def _dense_weight_grads(dW, db, dy, x, clear):
    """The jobs of :func:`dense_backward_params` (``clear``: :func:`dense_weight_grads`)."""
    O, I = dW.shape
    _weight_grads(weight_grad_jobs(O, I), dW, db, dy, x, clear, *_wg_operands(dy, x))


def _wg_operands(dy, x):
    """(inplace, Pp, pflags, pcall, Tp, tflags, tcall): the operands of the weight gradient's
    jobs (:func:`weight_grad_block`) besides dy and x: whether A = dyᵀ is read in place
    (:func:`wg_in_place`), x in panels per slot (:func:`bptt.kernels.engine.own_panels_of`), and
    dyᵀ's copies per slot (:func:`bptt.kernels.engine.own_transposed_of`), or, read in place,
    an empty stand-in of the same types that no job reads."""
    inplace = wg_in_place(dy)
    if inplace:
        dyT = np.empty((1, 0, 0), dy.dtype), own_flags("wg_dyT", 0), 0
    else:
        dyT = own_transposed_of(dy, "wg_dyT")
    return (inplace, *own_panels_of(x, 0, x.shape[1], "wg_x"), *dyT)


WG_IN_PLACE_N = 256   # rows of dy up to which the weight gradient reads dyᵀ in place


def wg_in_place(dy) -> bool:
    """Whether :func:`_weight_grads` reads A = dyᵀ in place rather than from a copy transposed by
    each thread (:func:`bptt.kernels.engine.own_rows_T`): with at most ``WG_IN_PLACE_N`` rows
    (a mini-batch; k runs over them) and rows not a multiple of 4 KB apart. A block's A[r, k] =
    dy[k, o + r] is then a short run along one row of dy per k, the whole block a few KB of
    lines; with rows 4 KB apart they would all fall into one set of L1. Measured on the Intel
    Xeon (paired in one process, the same bits): the MLP's 128 × 512 → 512 weight gradient
    0.93-0.96 of the time, 64 × 256 → 256 0.72-0.74, 128 × 512 → 10 0.39-0.41; 128 × 768 → 768
    1.00-1.05; and past the bounds, 1024 rows 1.08, rows of 1024 or 2048 float32 1.01-1.18
    (docs/performance.md, thirtieth session)."""
    return (dy.shape[0] <= WG_IN_PLACE_N and dy.strides[1] == dy.itemsize
            and dy.strides[0] % ALIAS != 0)


@composite
def dense_backward(dW, db, dx, dy, x, W, clear):
    """dW[o, i] = Σ_n dy[n, o] x[n, i], db[o] = Σ_n dy[n, o] (added to them instead unless
    ``clear``) and dx[n, i] = Σ_o dy[n, o] W[o, i]: :func:`dense_weight_grads` (or
    :func:`dense_backward_params`) and :func:`dense_input_grad` in one call, their jobs in one
    parallel run, the same bits.

    dW : (O, I), db : (O,), dx : (N, I) output, dy : (N, O), x : (N, I), W : (O, I).

    The two products are independent, so the threads need not finish one before starting the
    other. The weight gradient's jobs come first and dx's after them, each set padded to the same
    count m with jobs that do nothing, so that each half of the threads starts on one product
    (each thread runs its own range of jobs first, :func:`bptt.jit._run_jobs`): on two threads
    one packs x (and, past a mini-batch, transposes dy) for dW, the other packs W for dx, where
    one after the other each thread packed its share of both; and a thread that is done takes
    the other's jobs left over instead of waiting for it between the products. The MLP's
    512 × 512 layer at 128 rows (Intel Xeon, two threads, one process, in turns with the two
    calls): 0.90-0.97 of their time (docs/performance.md, thirtieth session)."""
    O, I = dW.shape
    nwg = weight_grad_jobs(O, I)
    ndx = block_jobs(dy.shape[0], I)
    if nwg < 2 or ndx < 2:   # one of them runs in order anyway: one call each, as before (a run
        _dense_weight_grads(dW, db, dy, x, clear)   # of jobs in parallel costs more than such
        _input_grad(dx, dy, W, True)                # small work: an 8-8-8-2 MLP's step, 120 → 170 µs)
        return
    m = max(nwg, ndx)
    _backward_blocks(2 * m, m, nwg, ndx, dW, db, dy, x, clear, *_wg_operands(dy, x), dx, *_dx_operands(dy, W))


@jobs(slots=True)
def _backward_blocks(j, njobs, slot, m, nwg, ndx, dW, db, dy, x, clear, inplace, Pp, pflags, pcall, Tp,
                     tflags, tcall, dx, dya, W, Wp, wflags, wcall):
    """Job j of :func:`dense_backward`: jobs 0 ... nwg-1 are the weight gradient's
    (:func:`weight_grad_block`), m ... m+ndx-1 dx's (:func:`input_grad_block`, on dya, dy with
    its rows apart), the rest nothing."""
    if j < nwg:
        weight_grad_block(j, slot, dW, db, dy, x, clear, inplace, Pp, pflags, pcall, Tp, tflags, tcall)
    elif m <= j < m + ndx:
        input_grad_block(j - m, slot, dx, dya, W, 1, Wp, wflags, wcall)
