"""Elman RNN cell over a whole sequence, and the weight-gradient passes every cell shares.

Shapes: T time steps, B batch, H hidden units, D directions (1 or 2), G gates (1 here).
Layout is time-major: a sequence is (T, B, ·), so one time step is a contiguous (B, ·) block.

    q_t = (W_ih·x_t + b_ih) + W_hh·h_{t-1} + b_hh        h_t = f(q_t)

The caller computes the input projection W_ih·x_t + b_ih for *every* t in one pass before the
recurrence (:func:`input_forward`), so the time loop touches only W_hh. Backward keeps dq_t for
every step, so that dW_ih, dW_hh, the biases and dx are each one big pass over all N = T·B rows
after the sweep (:func:`input_backward_params`, :func:`recurrent_backward_params`,
:func:`input_backward`). These four are shared by every cell.

Every product is blocked with :func:`bptt.kernels.engine.acc_panels` (see :mod:`bptt.kernels.engine`)
on its right-hand matrix copied once per call into panels (``PANEL`` columns): the recurrent product of
a step, h_prev·W_hhᵀ, reads W_hhᵀ (H, G·H) in panels, and backward's da·W_hh reads W_hh in panels;
both vectorise across output units.

Direction. Every recurrent kernel takes ``reverse``: False runs t = 0, 1, ..., T-1; True runs
t = T-1, ..., 0 (the backward half of a bidirectional layer). Arrays are always indexed by the true
time t, so the reverse direction needs no reversed copy of x. "Previous" means previous in
processing order: h_{t-1} forward, h_{t+1} in reverse; the first processed step reads h0.

Output columns. The hidden states go straight into the layer's output y (T, B, D·H): this
direction owns the columns ``off:off+H`` (0 forward, H reverse), so a bidirectional layer's
output is assembled without a copy and the next layer reads it as its input.

Parallelism. The cell kernels are composites (:func:`bptt.jit.composite`): W_hh is packed into
panels, then a job set (:func:`bptt.jit.jobs`) runs one job per chunk of batch rows, one chunk
per thread (:func:`bptt.kernels.engine.sweep_chunks`), with the time loop inside: sequences are independent, so
a whole forward or backward sweep is one parallel region (not one per step), each row's state is
written by one thread, and a chunk's rows share each panel of W_hh they load. From ``SPLIT_B``
sequences on, the weight gradients after the sweep split the batch into the same two halves
(below), each sum in two parts, one per half, added at the end: a split fixed by B, never by the
thread count. Otherwise no sum is split, and every output sums in the
same order for any chunking, so all builds give the same bits.
Reference twins: :mod:`bptt.reference.rnn` (same names and signatures, plain NumPy).
"""

import numpy as np

from ..jit import (atomic_add, atomic_load, atomic_store, composite, get_threads, inline, jobs, kernel,
                   max_threads, prange, side_by_side, spin_pause, yield_cpu)
from .activations import STATE_ACTIVATIONS, STATE_CODES, state_act_row, state_dact_row
from .dense import (dense_backward_input, dense_backward_params, dense_forward, dense_input_grad,
                    dense_weight_grads, fill_rows)
from .engine import (COLS, KC, L2_BYTES, L3_BYTES, NARROW, PANEL, ROWS, acc_narrow, acc_tile,
                     apart_rows, apart_stride, add_bias_rows, add_column_sums, add_rows, even_bound, even_columns,
                     chunk_end, chunk_rows_c,
                     block_product, chunk_rows, copy_rows, rows_apart, step_product, n_panels,
                     pack_panel, pack_panel_T, pack_T_into, panels, panels_T, scratch, scratch_panels,
                     sweep_chunks, transpose_into, transpose_rows_into, TB,
                     LAST_PANELS, LAST_PANELS_T)


@composite
def rnn_forward(y, q, h0, W_hh, b_hh, off, reverse, code):
    """Forward over the sequence: q_t += W_hh·h_prev + b_hh, h_t = f(q_t).

    y : (T, B, D·H) output; writes y[t, :, off:off+H] = h_t.
    q : (T, B, H) in: the input projection W_ih·x_t + b_ih; out: the pre-activation q_t (kept
        for backward).
    h0 : (B, H) initial state.  W_hh : (H, H).  b_hh : (H,).
    off : int column offset of this direction in y.  reverse : bool.  code : activation code,
    one of ``STATE_CODES`` (identity, ReLU, tanh: the RNN's).
    """
    _check_state_code(code)
    if wide(W_hh, q.shape[1]):   # a large W_hh: the hidden units split between the threads
        rnn_forward_wide(y, q, h0, W_hh, b_hh, off, reverse, code)
        return
    # sequences are independent: a job per chunk of rows, the time loop inside
    _rnn_forward_rows(sweep_chunks(q.shape[1]), y, q, h0, b_hh, off, reverse, code, W_hh)


def _check_state_code(code):
    if code not in STATE_CODES:
        names = ", ".join(f"{c} ({a})" for c, a in zip(STATE_CODES, STATE_ACTIVATIONS))
        raise ValueError(f"the RNN's activation code must be one of {names}; got {code}")


@jobs(last=LAST_PANELS_T)
def _rnn_forward_rows(ch, nch, y, q, h0, b_hh, off, reverse, code, P):
    """Chunk ch of :func:`rnn_forward`'s sequences, every step; P: W_hhᵀ (H, H) in panels."""
    T, B, H = q.shape
    r0, r1 = chunk_rows(ch, nch, B)
    for s in range(T):
        t = T - 1 - s if reverse else s
        # h_prev: h0 at the first processed step, else the previous step's columns of y
        hp = h0 if s == 0 else y[t + 1 if reverse else t - 1, :, off:off + H]
        qt = q[t]
        add_bias_rows(qt, b_hh, r0, r1)         # q_t += b_hh
        step_product(qt, hp, P, r0, r1, H, H)   # q_t += h_prev·W_hhᵀ
        for b in range(r0, r1):
            state_act_row(y[t, b, off:off + H], qt[b], code)


@inline
def rnn_state_grads(dq, dh, dy, q, y, t, off, code, r0, r1, j0, j1):
    """dq_t = (dy_t + dh) ⊙ f'(q_t) for rows r0:r1 and units j0:j1, then dh ← 0 there (the product
    dq_t·W_hh is added after), with dh the gradient carried from the later step."""
    for b in range(r0, r1):       # row views, so that the loop vectorises
        dyb = dy[t, b, off + j0:off + j1]
        dhb = dh[b, j0:j1]
        for o in range(j1 - j0):
            dhb[o] += dyb[o]
        state_dact_row(dq[t, b, j0:j1], dhb, q[t, b, j0:j1], y[t, b, off + j0:off + j1], code)
        for o in range(j1 - j0):
            dhb[o] = 0.0


@composite
def rnn_backward(dq, dh0, dh, dy, dh_n, q, y, W_hh, off, reverse, code):
    """Backward sweep through time (BPTT), from the last processed step to the first.

    At each step, with dh the gradient carried from the later step (dh_n at the start):
        dh_t   = dy_t + dh                      (h_t feeds the output and the next step)
        dq_t   = dh_t ⊙ f'(q_t)
        dh     = dq_t·W_hh                      (∂L/∂h_prev, carried to the earlier step)
    and at the end dh0 += dh.

    dq : (T, B, H) written: ∂L/∂q_t for every step.
    dh0 : (B, H) accumulated: ∂L/∂h0.
    dh : (B, H) workspace (the carried gradient).
    dy : (T, B, D·H) ∂L/∂y; this direction reads columns off:off+H.
    dh_n : (B, H) ∂L/∂h_n, the gradient on the final state.
    q : (T, B, H) pre-activations from forward.  y : (T, B, D·H) outputs from forward.
    W_hh : (H, H).  off, reverse, code : as in :func:`rnn_forward`.
    """
    _check_state_code(code)
    if wide(W_hh, q.shape[1]):
        rnn_backward_wide(dq, dh0, dh, dy, dh_n, q, y, W_hh, off, reverse, code)
        return
    _rnn_backward_rows(sweep_chunks(q.shape[1]), dq, dh0, dh, dy, dh_n, q, y, off, reverse, code,
                       W_hh)


@jobs(last=LAST_PANELS)
def _rnn_backward_rows(ch, nch, dq, dh0, dh, dy, dh_n, q, y, off, reverse, code, P):
    """Chunk ch of :func:`rnn_backward`'s sequences, every step; P: W_hh (G·H, H) in panels."""
    T, B, H = q.shape
    r0, r1 = chunk_rows(ch, nch, B)
    copy_rows(dh, dh_n, r0, r1)   # the carried gradient starts from ∂L/∂h_n
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if reverse else s
        rnn_state_grads(dq, dh, dy, q, y, t, off, code, r0, r1, 0, H)
        step_product(dh, dq[t], P, r0, r1, H, H)    # dh = dq_t·W_hh, carried to the earlier step
    add_rows(dh0, dh, r0, r1)   # what reaches the first step is ∂L/∂h0


# From SPLIT_B sequences on, the weight gradients after a sweep split the batch in two halves (each
# half of a smaller batch would be too few rows to share a block of the weights). The split depends on
# B only, never on the thread count: the weight-gradient sums are split the same way
# (:func:`split_weight_grads`), so the bits depend on it. Below it the passes are the dense
# layer's kernels over all T·B rows. The choice is made in Python, so a process compiles only the
# path its batch sizes take.
SPLIT_B = 32


@inline
def batch_half(B, nh, h):
    """(b0, b1): rows b0 ≤ b < b1 of part h of the nh parts of a batch (1, or 2 from ``SPLIT_B`` on); the
    first half takes the odd row. On two threads the halves are the sweeps' chunks
    (:func:`bptt.kernels.engine.sweep_chunks`)."""
    if nh == 1:
        return 0, B
    Bh = (B + 1) // 2
    return (0, Bh) if h == 0 else (Bh, B)


# Which core touches which rows. A sweep runs each half of the batch on its own core, and the
# weight gradients after it give each core the same half, every step: a core then writes only
# rows it wrote or read itself. When the two cores share no cache level (this project's virtual
# machine spends stretches so), writing a row the other core has read costs a round trip per
# cache line, which slowed the LSTM's backward sweep by more than half (docs/performance.md,
# "Design measurements"). The input projection and dx (:func:`step_products`) no longer follow
# the halves: they take the T·B rows as one matrix, in whole tiles, where a half of 32 or 16
# sequences ran step by step as blocks of 12 + 12 + 4 + 4 or 12 + 4 rows. Paired on an Intel
# Xeon (avx512), the large rows' steps took 0.95-0.99 of their time and GRU and RNN `char`
# 0.95-0.96 (docs/performance.md, thirty-fifth session).


ROW_PARTS = 2                  # step_products' parts of the rows (the jobs: ROW_PARTS × column blocks)


@jobs
def step_products(j, njobs, C, A, P, M, K, b, start):
    """Job j of C[n, c] (= b[c] first if ``start`` is 1; from 0 if it is 2: the first k-block's
    micro-kernels start their sums at 0 without reading C, the same bits as clearing C first; as
    it is if 0) += Σ_k A[n, k] · Bm[k, c] over the T·B rows of a layer's steps, C (T·B, M), A
    (T·B, K), with Bm (K, M) given in panels P, from ``SPLIT_B`` sequences on (below it
    :func:`input_forward` and :func:`input_backward` run the dense kernels). The same fma chains
    as the dense kernels (so the same bits). Run as ``step_products(column_jobs(M), C, ...)``.

    Jobs of one of ``ROW_PARTS`` parts of the rows (whole tiles of ``ROWS``) × one column block
    (ceil(M / COLS) blocks of whole panels, spread evenly: :func:`bptt.kernels.engine.even_columns`),
    part 0's first: a parallel run hands a thread a contiguous range of jobs, so on two cores each
    thread gets one part. Inside, the rows pass in :func:`bptt.kernels.engine.block_product`'s
    own chunks (``chunk_rows_c``: a block of C in half a core's L2), each chunk's bias written
    just before its product, so that the chunk is still in L2 when the product reads it and stays
    there from one k-block to the next (at `fastrnns`, 3.2 MB of C per job: the input projection
    and dx 12 % faster on Zen 4, with a 1 MB L2). Every output's k-blocks still run in increasing
    order: the same fma chains, whatever the chunks. One compiled kernel serves the projection
    and dx."""
    N = C.shape[0]
    ncb = njobs // ROW_PARTS
    h = j // ncb
    n0, n1 = even_bound(h, ROW_PARTS, N, ROWS), even_bound(h + 1, ROW_PARTS, N, ROWS)
    c0, c1 = even_columns(j % ncb, ncb, M)
    rc = chunk_rows_c(COLS * C.itemsize)   # block_product's chunk: each call below runs as one
    r0 = n0
    while r0 < n1:
        r1 = chunk_end(r0, n1, rc)
        if start == 1:
            fill_rows(C, b, r0, r1, c0, c1)
        block_product(C, A, P, r0, r1, c0, c1, 0, K, 1 if start == 2 else 0)
        r0 = r1


def column_jobs(M):
    """Jobs of :func:`step_products` for M output columns: ``ROW_PARTS`` × ceil(M / COLS) blocks."""
    return ROW_PARTS * ((M + COLS - 1) // COLS)


def time_rows(a):
    """(T, B, F) as (T·B, F): the view the dense kernels take. The layers' workspaces are
    C-contiguous, so this never copies (a copy would lose what a kernel writes into it)."""
    if not a.flags.c_contiguous:
        raise ValueError(f"expected a C-contiguous (T, B, F) array, got strides {a.strides}")
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2])


@composite
def input_forward(g, x, W, b):
    """The input projection of every step, before the sweep:  g[t, n, o] = b[o] + Σ_i x[t, n, i] W[o, i].

    g : (T, B, G·H) output.  x : (T, B, I) the layer's input.  W : (G·H, I).  b : (G·H,).
    Below ``SPLIT_B`` sequences, ``dense_forward`` over all T·B rows; from it on the same sums by
    :func:`step_products`, the same bits. Only the path a batch size takes is compiled.
    """
    if x.shape[1] < SPLIT_B:
        dense_forward(time_rows(g), time_rows(x), W, b)
    else:
        step_products(column_jobs(W.shape[0]), time_rows(g), rows_apart(time_rows(x), "proj_x"),
                      panels_T(W, "proj_W_T"), W.shape[0], W.shape[1], b, 1)


@composite
def input_backward(dx, dg, W, clear=False):
    """dx[t, n, i] += Σ_u dg[t, n, u] W[u, i]   (∂L/∂x_t = dg_t·W_ih for every step at once).

    dx : (T, B, I) accumulated (both directions of a layer add into it); with ``clear`` set
    instead (the sums from 0, dx not read: the same bits as zeros first, without a pass over dx).
    dg : (T, B, G·H) gate pre-activation gradients.  W : (G·H, I).
    Below ``SPLIT_B`` sequences, ``dense_backward_input`` (``dense_input_grad``) over all T·B
    rows; from it on the same sums by :func:`step_products` (the kernel of the input projection:
    one compilation for both), the same bits.
    """
    if dg.shape[1] < SPLIT_B:
        (dense_input_grad if clear else dense_backward_input)(time_rows(dx), time_rows(dg), W)
    else:
        step_products(column_jobs(W.shape[1]), time_rows(dx), rows_apart(time_rows(dg), "proj_dg"),
                      panels(W, 0, W.shape[1], "proj_W"), W.shape[1], W.shape[0], W[0], 2 if clear else 0)


@inline
def part_row(B, T, nh, t, b):
    """The row of X (and of a part's panels of dg) that holds step t, sequence b, for
    :func:`split_weight_grads`: part by part (half 0's rows, then half 1's), each in (t, b)
    order, so that a part's rows are one contiguous k range."""
    if nh == 1:
        return t * B + b
    Bh = (B + 1) // 2
    if b < Bh:
        return t * Bh + b
    return T * Bh + t * (B - Bh) + b - Bh


WG_ROWS = COLS   # rows of dW per weight-gradient job


def wg_transposed(N, K):
    """Whether a split weight-gradient pass over N = T·B rows, into products with K columns of X
    in all (I, H or I + H), runs transposed (:func:`split_weight_grads`): when the activations
    outweigh the weights, N ≥ 3K. The transposed way saves a transposed copy of dg (N·G·H
    numbers) and costs three of dW's blocks (3·G·H·K): at the LSTM's `char` shape (N = 2500,
    K = 193) the pass took 2.34 ms against 2.59, at `fastrnns` (6400, 1024) 111 against 119, at
    `deepbench` (800, 2048) 66 against 58.5 (two threads; docs/performance.md). The same bits
    either way."""
    return N >= 3 * K


def split_weight_grads(dW, db, dg, P, I, transposed, clear=False):
    """dW[u, i] += Σ_t Σ_b dg[t, b, u] X[t, b, i],  db[u] += Σ_t Σ_b dg[t, b, u]: every
    weight-gradient pass of a recurrent layer, X given by :func:`pack_inputs` or
    :func:`pack_states` (rows in :func:`part_row` order): in panels P, or, ``transposed``
    (:func:`wg_transposed`), as P = Xᵀ (I, T·B).

    From ``SPLIT_B`` sequences on (below it, :func:`input_backward_params` and
    :func:`recurrent_backward_params` run the dense layer's kernel over all T·B rows), each sum is
    split in two, one part per batch half, so that a core reads only its own half of dg (see above):

        dW ← (dW + S₀) + S₁        S_h = Σ_t Σ_{b in half h} dg[t, b, u] X[t, b, i]

    S₀ is one fma chain from dW's value, over t and then b in order; S₁ the same chain from 0, in
    a buffer, added at the end. The bias sums run in float64 from 0, half by half, and are added
    together. The split depends on B only, so the bits do not depend on the thread count. With
    ``clear`` dW and db are set, not added to: S₀'s chains start from 0 (block_product's
    ``fresh``: dW is not read), and db = the bias sums. The same bits as clearing them first.

    Jobs of one half × one block of ``WG_ROWS`` rows of dW; each first copies its half's rows of
    dg (its block of columns), summing the bias as it goes. Then, by rows, one
    :func:`bptt.kernels.engine.block_product` over the half's contiguous k range with A = Gᵀ from
    a transposed copy of that block (and :func:`acc_narrow` for the last I mod NARROW columns);
    transposed, the copy is into panels and the block is computed as dWᵀ = Xᵀ · G (A = Xᵀ, B =
    the panels), in a buffer that starts from the block of dW (part 0) or from 0 (part 1) and is
    transposed back. Each entry is the same fma chain either way (a product a·b is b·a exactly).
    Then a job per block of rows adds the parts. dg : (T, B, U). dW : (U, I).  db : (U,). The
    copies of dg, the transposed blocks and S₁ live in scratch buffers
    (:func:`bptt.kernels.engine.scratch`), kept from call to call.

    The jobs are :func:`split_weight_grads_pair`'s with an empty second product (0 columns),
    so that one job set serves every cell: a cold first step compiles one body, not two.
    """
    U = dg.shape[2]
    S1 = scratch("split_S1", U * I, dW.dtype).reshape(U, I)   # part 1's sums
    none = dW[:, :0]
    nub, sums = _split_parts(dW, S1, P, I, none, S1[:, :0], P, 0, dg, transposed, False, clear)
    _add_parts_pair(nub, dW, db, S1, none, np.empty_like(db), S1[:, :0], sums, WG_ROWS, clear)


def gate_panels(T, B, U, dtype):
    """(Gs, per_job): the scratch buffer into which the transposed :func:`split_weight_grads`
    copies dg, part by part and block of ``WG_ROWS`` columns by block (job j = h·nub + ub holds
    Gs[j·per_job:], (n_panels(w), T·(b1 - b0), PANEL), rows in :func:`part_row` order). A sweep
    that fills it itself (:func:`rows_into_gate_panels`) gets it here, before the pass does."""
    nub = (U + WG_ROWS - 1) // WG_ROWS
    w = min(U, WG_ROWS)
    Nh = T * ((B + 1) // 2)     # the larger half's rows
    per_job = Nh * ((w + PANEL - 1) // PANEL * PANEL)
    return scratch("split_Gp", 2 * nub * per_job, dtype), per_job   # on a cache line, as every scratch


def _split_parts(dW_ih, S1x, P_x, I, dW_hh, S1h, P_h, H, dg, transposed, filled=False, clear=False):
    """The parts' jobs of :func:`split_weight_grads_pair` (one way or the other); returns the
    jobs per part and the bias sums. ``filled``: the sweep has already put dg into
    :func:`gate_panels` (transposed only). ``clear``: part 0 from 0 (dW set, not added to)."""
    T, B, U = dg.shape
    nub = (U + WG_ROWS - 1) // WG_ROWS
    w = min(U, WG_ROWS)
    Nh = T * ((B + 1) // 2)     # the larger half's rows
    sums = np.zeros((2, U), np.float64)
    if transposed:
        Gs, per_job = gate_panels(T, B, U, dg.dtype)
        per_c = max(I, H) * w
        Cs = scratch("split_C", 2 * nub * per_c, dg.dtype)
        _split_parts_pair_T(2 * nub, dW_ih, S1x, P_x, I, dW_hh, S1h, P_h, H, sums, dg, Gs, Cs, per_job, per_c,
                            filled, clear)
    else:
        if filled:
            raise ValueError("dg comes in panels only for the transposed weight-gradient pass")
        per_job = apart_stride(Nh, dg.itemsize) * w   # room for either half's Gᵀ, rows apart (split_copy)
        G = scratch("split_G", 2 * nub * per_job, dg.dtype)
        GT = scratch("split_GT", 2 * nub * per_job, dg.dtype)
        _split_parts_pair(2 * nub, dW_ih, S1x, P_x, I, dW_hh, S1h, P_h, H, sums, dg, G, GT, per_job, clear)
    return nub, sums


@inline
def split_block(j, njobs, dg):
    """(u0, u1, h, b0, b1, kb, Nh) of job j of :func:`split_weight_grads`: rows u0:u1 of dW, part
    h (rows b0:b1 of the batch), kb the part's first row of X, Nh its rows."""
    T, B, U = dg.shape
    nub = njobs // 2
    h = j // nub
    u0 = j % nub * WG_ROWS
    u1 = min(U, u0 + WG_ROWS)
    b0, b1 = batch_half(B, 2, h)
    return u0, u1, h, b0, b1, part_row(B, T, 2, 0, b0), T * (b1 - b0)


@inline
def split_copy(j, njobs, sums, dg, Gs, GTs, per_job):
    """The first half of a job of :func:`split_weight_grads`: copies part h's rows of dg (its
    block u0:u1 of columns) into G, summing the bias as it goes, and transposes G into GT.
    Returns (G, GT, u0, u1, h, kb, Nh)."""
    T = dg.shape[0]
    u0, u1, h, b0, b1, kb, Nh = split_block(j, njobs, dg)
    w = u1 - u0
    ld = apart_rows(Nh, dg.itemsize)   # Gᵀ's rows apart in L1: it is the products' A
    G = Gs[j * per_job:j * per_job + Nh * w].reshape((Nh, w))     # the half's rows of dg, this
    GT = GTs[j * per_job:j * per_job + ld * w].reshape((w, ld))[:, :Nh]   # block of columns, and Gᵀ
    s = sums[h, u0:u1]
    for t in range(T):
        for b in range(b0, b1):
            src = dg[t, b, u0:u1]
            dst = G[t * (b1 - b0) + b - b0]
            for u in range(w):
                dst[u] = src[u]
                s[u] += src[u]
    transpose_into(GT, G)
    return G, GT, u0, u1, h, kb, Nh


@inline
def split_product(dW, S1, P, I, G, GT, u0, u1, h, kb, Nh, clear):
    """The second half of a job of :func:`split_weight_grads`: rows u0:u1 of dW (part 0; from 0
    with ``clear``) or of S1 (part 1, from 0) += Gᵀ · X over the part's rows kb:kb+Nh of X's
    panels P. From 0: the products' sums start at 0 (block_product's ``fresh``)."""
    I16 = I - I % NARROW
    C = dW[u0:u1] if h == 0 else S1[u0:u1]
    fresh = h == 1 or clear
    if fresh:
        for u in range(u1 - u0):   # the narrow columns (acc_narrow adds to them)
            C[u, I16:] = 0.0
    Ph = P[:, kb:kb + Nh]
    block_product(C, GT, Ph, 0, u1 - u0, 0, I16, 0, Nh, fresh)   # A = Gᵀ read along rows
    if I16 < I:
        acc_narrow(C, G, Ph[I16 // PANEL][:, I16 % PANEL:I16 % PANEL + I - I16], I16, 0, u1 - u0)


@inline
def put_panel_row(Gp, n, src):
    """Row n of the panels Gp (npan, ·, PANEL) = src (at most npan·PANEL numbers): panel p takes
    src[p·PANEL:(p + 1)·PANEL]."""
    w = src.shape[0]
    for p in range(Gp.shape[0]):
        dst = Gp[p, n]
        sp = src[p * PANEL:min(w, p * PANEL + PANEL)]
        for q in range(sp.shape[0]):
            dst[q] = sp[q]


@inline
def job_panels(j, njobs, dg, Gs, per_job):
    """(Gp, u0, u1, h, kb, Nh): job j's block of :func:`gate_panels` as (npan, Nh, PANEL), and
    its :func:`split_block`."""
    u0, u1, h, b0, b1, kb, Nh = split_block(j, njobs, dg)
    npan = n_panels(u1 - u0)
    return Gs[j * per_job:j * per_job + npan * Nh * PANEL].reshape((npan, Nh, PANEL)), u0, u1, h, kb, Nh


@inline
def split_copy_panels(j, njobs, sums, dg, Gs, per_job):
    """The first half of a job of the transposed :func:`split_weight_grads`: copies part h's rows
    of dg (its block u0:u1 of columns) into panels Gp (row t·(b1 - b0) + b - b0), summing the
    bias as it goes. Returns (Gp, u0, u1, h, kb, Nh)."""
    T = dg.shape[0]
    Gp, u0, u1, h, kb, Nh = job_panels(j, njobs, dg, Gs, per_job)
    b0, b1 = batch_half(dg.shape[1], 2, h)
    w = u1 - u0
    s = sums[h, u0:u1]
    for t in range(T):
        for b in range(b0, b1):
            src = dg[t, b, u0:u1]
            for u in range(w):
                s[u] += src[u]
            put_panel_row(Gp, t * (b1 - b0) + b - b0, src)
    return Gp, u0, u1, h, kb, Nh


@inline
def split_filled_panels(j, njobs, sums, dg, Gs, per_job):
    """:func:`split_copy_panels` when a sweep has filled the panels (:func:`rows_into_gate_panels`):
    only the bias sums, read from the panels in the same order (rows t·(b1 - b0) + b - b0, i.e. t
    then b), so the same bits."""
    Gp, u0, u1, h, kb, Nh = job_panels(j, njobs, dg, Gs, per_job)
    w = u1 - u0
    for p in range(Gp.shape[0]):
        sp = sums[h, u0 + p * PANEL:u0 + min(w, p * PANEL + PANEL)]
        for n in range(Nh):
            g = Gp[p, n]
            for q in range(sp.shape[0]):
                sp[q] += g[q]
    return Gp, u0, u1, h, kb, Nh


@inline
def rows_into_gate_panels(Gs, per_job, dat, dg, t, r0, r1):
    """dg[t, b, :] = dat[b, :U] for r0 ≤ b < r1, put where :func:`split_copy_panels` would copy
    them in :func:`gate_panels` (dg (T, B, U) gives the shapes only; it is not read or written):
    each job's block of columns into its panels (:func:`job_panels`), where a part's rows of step
    t are one run. For a sweep that writes dg there itself, while the rows are in cache."""
    B, U = dg.shape[1], dg.shape[2]
    njobs = 2 * ((U + WG_ROWS - 1) // WG_ROWS)
    for j in range(njobs):
        Gp, u0, u1, h, kb, Nh = job_panels(j, njobs, dg, Gs, per_job)
        b0, b1 = batch_half(B, 2, h)
        n0 = t * (b1 - b0) - b0      # row n0 + b of the part's panels holds sequence b
        for p in range(Gp.shape[0]):
            c0 = u0 + p * PANEL
            wq = min(u1, c0 + PANEL) - c0
            for b in range(max(r0, b0), min(r1, b1)):
                dst = Gp[p, n0 + b]
                src = dat[b, c0:c0 + wq]
                for q in range(wq):
                    dst[q] = src[q]


@inline
def split_product_T(dW, S1, XT, K, Gp, Cj, u0, u1, h, kb, Nh, clear):
    """The second half of a job of the transposed :func:`split_weight_grads`: rows u0:u1 of dW
    (part 0; from 0 with ``clear``) or of S1 (part 1, from 0: block_product's ``fresh``) +=
    (Xᵀ · G)ᵀ over the part's columns kb:kb+Nh of XT = Xᵀ, G given in panels Gp, computed in the
    (K, u1 - u0) buffer Cj."""
    w = u1 - u0
    C = Cj[:K * w].reshape((K, w))
    D = dW[u0:u1] if h == 0 else S1[u0:u1]
    fresh = h == 1 or clear
    if not fresh:
        transpose_into(C, D)        # part 0's chains start from dW's value
    block_product(C, XT[:, kb:kb + Nh], Gp, 0, K, 0, w, 0, Nh, fresh)   # A = Xᵀ
    transpose_into(D, C)


@inline
def add_part_row(dW, S1, u):
    """dW[u, :] += S1[u, :]: part 1's sums of row u added to part 0's."""
    dWu = dW[u]
    S1u = S1[u]
    for i in range(dWu.shape[0]):
        dWu[i] += S1u[i]


def split_weight_grads_pair(dW_ih, db_ih, P_x, I, dW_hh, db_hh, P_h, H, dg, transposed, filled=False, clear=False):
    """:func:`split_weight_grads` for dW_ih (X = the inputs, P_x) and dW_hh (X = the states the
    steps read, P_h) of a cell whose recurrent gradient is dg itself (the RNN's and the LSTM's):
    one copy of dg per job serves both products, and one bias sum both biases. Every entry is the
    same sum, in the same order, as in two calls of :func:`split_weight_grads` (the same bits); a
    copy of dg (5 MB at the char-LM's shape) is saved. ``filled``, ``clear``: as in :func:`_split_parts`."""
    U = dg.shape[2]
    S1x = scratch("split_S1", U * I, dW_ih.dtype).reshape(U, I)
    S1h = scratch("split_S1h", U * H, dW_hh.dtype).reshape(U, H)
    nub, sums = _split_parts(dW_ih, S1x, P_x, I, dW_hh, S1h, P_h, H, dg, transposed, filled, clear)
    _add_parts_pair(nub, dW_ih, db_ih, S1x, dW_hh, db_hh, S1h, sums, WG_ROWS, clear)


@inline
def split_operands(which, dW_ih, S1x, P_x, I, dW_hh, S1h, P_h, H):
    """(dW, S1, X, K) of product ``which`` of a job of :func:`split_weight_grads_pair`: 0 the
    input side, 1 the recurrent side."""
    if which == 0:
        return dW_ih, S1x, P_x, I
    return dW_hh, S1h, P_h, H


@jobs
def _split_parts_pair(j, njobs, dW_ih, S1x, P_x, I, dW_hh, S1h, P_h, H, sums, dg, Gs, GTs, per_job, clear):
    """Job j of :func:`split_weight_grads_pair`: one copy and transpose of dg, two products."""
    G, GT, u0, u1, h, kb, Nh = split_copy(j, njobs, sums, dg, Gs, GTs, per_job)
    for which in range(2):   # one call site in a loop: the product is compiled once, not twice
        dW, S1, P, K = split_operands(which, dW_ih, S1x, P_x, I, dW_hh, S1h, P_h, H)
        if K > 0:
            split_product(dW, S1, P, K, G, GT, u0, u1, h, kb, Nh, clear)


@jobs
def _split_parts_pair_T(j, njobs, dW_ih, S1x, XT_x, I, dW_hh, S1h, XT_h, H, sums, dg, Gs, Cs, per_job, per_c,
                        filled, clear):
    """Job j of the transposed :func:`split_weight_grads_pair`: one copy of dg into panels (or,
    ``filled``, panels the sweep filled: only the bias sums), two products."""
    if filled:
        Gp, u0, u1, h, kb, Nh = split_filled_panels(j, njobs, sums, dg, Gs, per_job)
    else:
        Gp, u0, u1, h, kb, Nh = split_copy_panels(j, njobs, sums, dg, Gs, per_job)
    Cj = Cs[j * per_c:(j + 1) * per_c]
    for which in range(2):   # one call site in a loop: the product is compiled once, not twice
        dW, S1, XT, K = split_operands(which, dW_ih, S1x, XT_x, I, dW_hh, S1h, XT_h, H)
        if K > 0:
            split_product_T(dW, S1, XT, K, Gp, Cj, u0, u1, h, kb, Nh, clear)


@jobs
def _add_parts_pair(j, njobs, dW_ih, db_ih, S1x, dW_hh, db_hh, S1h, sums, ub, clear):
    """Job j of :func:`split_weight_grads_pair`: rows j·ub ... of both dW += their S1, both
    biases += both bias sums (= with ``clear``: 0 + s is s)."""
    U = S1x.shape[0]
    for u in range(j * ub, min(U, j * ub + ub)):
        s = sums[0, u] + sums[1, u]
        if clear:
            db_ih[u] = s
            db_hh[u] = s
        else:
            db_ih[u] += s
            db_hh[u] += s
        add_part_row(dW_ih, S1x, u)
        add_part_row(dW_hh, S1h, u)


@composite
def input_backward_params(dW_ih, db_ih, dg, x, clear=False):
    """Input-side weight gradients in one pass over all steps, for every cell:

        dW_ih[u, i] += Σ_t Σ_b dg[t, b, u] · x[t, b, i]      db_ih[u] += Σ_t Σ_b dg[t, b, u]

    dW_ih : (G·H, I) accumulated.  db_ih : (G·H,) accumulated.
    dg : (T, B, G·H) gate pre-activation gradients.  x : (T, B, I) the layer's input.
    Below ``SPLIT_B`` sequences, ``dense_backward_params`` over all T·B rows; from it on, x is
    packed into panels (rows in :func:`part_row` order, by the cores that own them), then
    :func:`split_weight_grads`. Only the path a batch size takes is compiled. ``clear``: the
    gradients set, not added to (the same bits as clearing them first).
    """
    if x.shape[1] < SPLIT_B:
        (dense_weight_grads if clear else dense_backward_params)(dW_ih, db_ih, time_rows(dg), time_rows(x))
    else:
        _input_backward_params_halves(dW_ih, db_ih, dg, x, clear)


def _input_backward_params_halves(dW_ih, db_ih, dg, x, clear):
    """:func:`input_backward_params` from ``SPLIT_B`` sequences on."""
    T, B, I = x.shape
    tr = wg_transposed(T * B, I)
    P = pack_inputs(x, tr)
    split_weight_grads(dW_ih, db_ih, dg, P, I, tr, clear)


@composite
def recurrent_backward_params(dW_hh, db_hh, dgh, y, h0, off, reverse, clear=False):
    """Recurrent weight gradients in one pass over all steps, for every cell:

        dW_hh[u, j] += Σ_t Σ_b dgh[t, b, u] · h_prev_t[b, j]      db_hh[u] += Σ_t Σ_b dgh[t, b, u]

    where h_prev_t is the state the step at time t read (h0 for the first processed step).

    dW_hh : (G·H, H) accumulated.  db_hh : (G·H,) accumulated.
    dgh : (T, B, G·H) ∂L/∂(W_hh·h_prev + b_hh) for every step (the gate pre-activation gradients;
          for the GRU's n gate the r ⊙ factor is already applied).
    y : (T, B, D·H) the layer output holding this direction's states in columns off:off+H.
    h0 : (B, H).  off, reverse : as in :func:`rnn_forward`.

    The sum is a product of dgᵀ and the states the steps read: every entry sums over (t, b) in
    increasing t (the h0 step first forward, last in reverse). Below ``SPLIT_B`` sequences the
    states are gathered into one (T·B, H) array (:func:`previous_states`) for
    ``dense_backward_params``; from it on they are packed in panels (row :func:`part_row` (t, b)
    holds h_prev_t[b]) and the sums split by batch half (:func:`split_weight_grads`).
    ``clear``: the gradients set, not added to (the same bits as clearing them first).
    """
    T, B = dgh.shape[0], dgh.shape[1]
    if B < SPLIT_B:
        X = np.empty((T * B, h0.shape[1]), h0.dtype)
        previous_states(X, y, h0, off, reverse)
        (dense_weight_grads if clear else dense_backward_params)(dW_hh, db_hh, time_rows(dgh), X)
    else:
        _recurrent_backward_params_halves(dW_hh, db_hh, dgh, y, h0, off, reverse, clear)


@kernel
def previous_states(X, y, h0, off, reverse):
    """X[t·B + b, :] = h_prev_t[b]: the state the step at time t read (h0 for the first processed
    step, else the previous step's columns off:off+H of y). X : (T·B, H)."""
    for t in prange(y.shape[0]):
        previous_step(X, y, h0, off, reverse, t)


@inline
def previous_step(X, y, h0, off, reverse, t):
    """The rows of step t of :func:`previous_states`."""
    T, B = y.shape[0], y.shape[1]
    H = h0.shape[1]
    for b in range(B):
        src = h0[b] if t == (T - 1 if reverse else 0) else y[t + 1 if reverse else t - 1, b, off:off + H]
        copy_row(X[t * B + b], src)


def _recurrent_backward_params_halves(dW_hh, db_hh, dgh, y, h0, off, reverse, clear):
    """:func:`recurrent_backward_params` from ``SPLIT_B`` sequences on."""
    T, B = dgh.shape[0], dgh.shape[1]
    H = h0.shape[1]
    tr = wg_transposed(T * B, H)
    P = pack_states(y, h0, off, reverse, tr)
    split_weight_grads(dW_hh, db_hh, dgh, P, H, tr, clear)


def gates_in_panels(T, B, I, H):
    """Whether :func:`weight_grads_shared` over T steps of B sequences (inputs of I, states of H)
    reads dg from :func:`gate_panels` (the split, transposed pass), so that a sweep may write dg
    there itself instead of into dg (``filled``)."""
    return B >= SPLIT_B and wg_transposed(T * B, I + H)


@composite
def weight_grads_shared(dW_ih, db_ih, dW_hh, db_hh, dg, x, y, h0, off, reverse, filled=False, clear=False):
    """Both weight-gradient passes of a cell whose recurrent gradient is dg itself (the RNN's dq,
    the LSTM's da; not the GRU's):

        dW_ih[u, i] += Σ_t Σ_b dg[t, b, u] · x[t, b, i]          db_ih[u] += Σ_t Σ_b dg[t, b, u]
        dW_hh[u, j] += Σ_t Σ_b dg[t, b, u] · h_prev_t[b, j]      db_hh[u] += Σ_t Σ_b dg[t, b, u]

    exactly :func:`input_backward_params` then :func:`recurrent_backward_params` (the same sums in
    the same order, so the same bits; arguments as there). From ``SPLIT_B`` sequences on, both run
    in one :func:`split_weight_grads_pair`: each job copies its block of dg once for both
    products. ``filled`` (only where :func:`gates_in_panels`): the sweep wrote dg into
    :func:`gate_panels` instead (dg itself is not read, only its shape). ``clear``: the four
    gradients set, not added to (the same bits as clearing them first)."""
    if filled and not gates_in_panels(x.shape[0], x.shape[1], x.shape[2], h0.shape[1]):
        raise ValueError("dg comes in panels only where gates_in_panels holds")
    if dg.shape[1] < SPLIT_B:
        input_backward_params(dW_ih, db_ih, dg, x, clear)
        recurrent_backward_params(dW_hh, db_hh, dg, y, h0, off, reverse, clear)
        return
    T, B, I = x.shape
    H = h0.shape[1]
    tr = wg_transposed(T * B, I + H)
    P_x = pack_inputs(x, tr)
    P_h = pack_states(y, h0, off, reverse, tr)
    split_weight_grads_pair(dW_ih, db_ih, P_x, I, dW_hh, db_hh, P_h, H, dg, tr, filled, clear)


@jobs
def _pack_steps(j, njobs, P, X, h0, off, prev, reverse, form):
    """Job j of :func:`_packed_steps`, into P in ``form`` (``PANELS``, ``BY_STEPS`` or
    ``BY_UNITS``, see there): X[t] itself (``prev`` False: the inputs, with h0 any (B, I) array,
    say X[0]), or the state step t read (``prev``: the previous step's rows of X, h0 for the
    first processed step), rows in :func:`part_row` order. One job set for all the forms and
    both operands, so that it is compiled once."""
    T, B = X.shape[0], X.shape[1]
    H = h0.shape[1]
    if form == BY_UNITS:   # rows u0 ... of P, every step of one half
        nq = njobs // 2
        half = j // nq
        b0, b1 = batch_half(B, 2, half)
        v0, v1 = unit_blocks(j - half * nq, H)
        for t in range(T):
            src, c0 = step_source(X, h0, off, prev, reverse, t)
            r = part_row(B, T, 2, t, b0)
            for v in range(v0, v1):
                u0 = min(v * TB, H - TB)
                transpose_rows_into(P[0, u0:u0 + TB, r:r + b1 - b0], src[b0:b1, c0 + u0:c0 + u0 + TB])
        return
    t = j % T   # one half of step t, every unit
    b0, b1 = batch_half(B, 2, j // T)
    src, c0 = step_source(X, h0, off, prev, reverse, t)
    r = part_row(B, T, 2, t, b0)
    if form == BY_STEPS:
        transpose_rows_into(P[0, :, r:r + b1 - b0], src[b0:b1, c0:c0 + H])
        return
    for p in range(n_panels(H)):
        pack_panel(P, src, p, c0, H, b0, b1, r)


@inline
def step_source(X, h0, off, prev, reverse, t):
    """(src, c0): the array whose rows hold step t's inputs (``prev`` False: X[t]) or the state
    step t read (``prev``: h0 for the first processed step, else the previous step's X), and
    the column the numbers start at (``off`` in X, 0 in h0)."""
    T = X.shape[0]
    if prev and t == (T - 1 if reverse else 0):   # the step that read h0
        return h0, 0
    if prev:
        return X[t + 1 if reverse else t - 1], off
    return X[t], off


PANELS, BY_STEPS, BY_UNITS = 0, 1, 2   # the forms of _pack_steps
PACK_UNITS = 64   # rows of P (units) per BY_UNITS job
LINE = 64         # bytes in a cache line


@inline
def unit_blocks(q, H):
    """(v0, v1): the TB-row blocks of P that BY_UNITS job q (of each half) transposes, block v
    being rows min(v·TB, H - TB) ... (the last may overlap the one before it and write the
    same values again); H ≥ TB."""
    per = PACK_UNITS // TB
    return q * per, min((q + 1) * per, (H + TB - 1) // TB)


def _packed_steps(name, X, h0, off, prev, reverse, transposed):
    """:func:`_pack_steps` into scratch buffer ``name`` (packed on every call): panels
    (n_panels(H), T·B, PANEL), or (1, H, ≥ T·B) when ``transposed`` (rows of
    :func:`bptt.kernels.engine.apart_rows` (T·B), so that they do not alias in L1 as A); returns
    the panels, or the (H, ≥ T·B) array, its first T·B columns the states.

    Transposed, in one of two forms, the same copy. ``BY_STEPS``, a job per step and half: its
    rows (a half of the batch) into a run of every one of P's H rows. Where those runs are not
    whole cache lines (a half of 25 sequences, 100 bytes, at the char-LM's shape), each line
    was written in parts by two jobs, and with the states in memory rather than in cache (as
    after a backward sweep) the copy ran at a third of a plain copy's speed: 1.4-1.6 ms for the
    char-LM's 2.5 MB, against 0.45 (Intel Xeon, two threads). So there it runs ``BY_UNITS``: a
    job per ``PACK_UNITS`` rows of P and half, every step in turn, so that one job writes each
    line, in order (0.67-0.91 ms). Where the runs are whole lines (halves of 32 sequences at
    ``fastrnns``, 16 at ``deepbench``, float32) ``BY_STEPS`` was the quicker, by 5-15 %."""
    T, B = X.shape[0], X.shape[1]
    H = h0.shape[1]
    if not transposed:
        P = scratch_panels(name, H, T * B, X.dtype)
        _pack_steps(2 * T, P, X, h0, off, prev, reverse, PANELS)
        return P
    ld = apart_rows(T * B, X.itemsize)   # 3-D: one job-set signature; the products' A
    P = scratch(name + "_T", H * ld, X.dtype).reshape((1, H, ld))
    if transposed_form(T, B, H, X.itemsize) == BY_STEPS:
        _pack_steps(2 * T, P, X, h0, off, prev, reverse, BY_STEPS)
    else:
        _pack_steps(2 * ((H + PACK_UNITS - 1) // PACK_UNITS), P, X, h0, off, prev, reverse, BY_UNITS)
    return P[0]


def transposed_form(T, B, H, itemsize):
    """The form of :func:`_packed_steps`'s transposed copy of T steps of B rows of H numbers:
    ``BY_STEPS`` where each half's run in every row of P is whole cache lines (or H < TB),
    else ``BY_UNITS``."""
    ld = apart_rows(T * B, itemsize)
    Bh = batch_half(B, 2, 0)[1]
    if H < TB or all(n * itemsize % LINE == 0 for n in (ld, Bh, B - Bh)):
        return BY_STEPS
    return BY_UNITS


def pack_inputs(x, transposed):
    """x (T, B, I) in panels, rows in :func:`part_row` order (or, ``transposed``, as an
    (I, T·B) array, columns in that order), each core its own half's rows."""
    return _packed_steps("wg_P_x", x, x[0], 0, False, False, transposed)


def pack_states(y, h0, off, reverse, transposed):
    """The states the steps read (h0 for the first processed step, else the previous step's
    columns off:off+H of y), as :func:`pack_inputs`."""
    return _packed_steps("wg_P_h", y, h0, off, True, reverse, transposed)


@composite
def swap_01(dst, src, to_time_major):
    """dst[i, j, :] = src[j, i, :]: (B, T, F) to (T, B, F) (``to_time_major``) and back, for the
    layers' copies between the batch-first arrays users pass and the time-major workspaces.
    A job per sequence: in parallel, contiguous ranges of the batch, so that on two cores each
    thread copies the half of the batch it runs in the sweep (see above); a copy, so the bits are
    src's (numpy's strided copy of a transposed view ran on one core).

    dst : (D0, D1, F).  src : (D1, D0, F).
    """
    _swap_sequence(dst.shape[1] if to_time_major else dst.shape[0], dst, src, to_time_major)


@jobs
def _swap_sequence(bb, nb, dst, src, to_time_major):
    """Sequence bb of :func:`swap_01`."""
    D0, D1 = dst.shape[0], dst.shape[1]
    if to_time_major:
        for i in range(D0):
            copy_row(dst[i, bb], src[bb, i])
    else:
        for j in range(D1):
            copy_row(dst[bb, j], src[j, bb])


@inline
def copy_row(d, s):
    """d[:] = s[:], a loop that vectorises."""
    for f in range(d.shape[0]):
        d[f] = s[f]


# -- small batches: the passes after the backward sweep, run beside it -------------------------------
#
# With a few sequences (a layer whose work is below ``bptt.jit.SERIAL_WORK``) a sweep has no rows to
# share between cores, and each pass after it is too small to share well on its own (a parallel
# region costs microseconds). There the backward sweep and those passes run as one pipeline of two
# jobs (``bptt.jit.jobs(concurrent=True)``):
#
# - job 0 runs the sweep, publishing after each step how many steps it has done (flags[0]);
# - job 1 follows it ``PIPE_STEPS`` steps at a time, taking each chunk's dx (dx_t needs only dg_t),
#   and, the steps being cut into ``PIPE_PARTS`` parts, each part's share of dW_ih and dW_hh as
#   soon as the sweep has done that part's steps, but the last (:func:`pipe_passes`);
# - when the sweep is over, job 0 takes the dx of the chunks job 1 has not reached (from the last
#   chunk back), and then both jobs share the last part's share of dW_ih and dW_hh, by blocks of
#   ``PIPE_ROWS`` rows, and the bias sums.
#
# Every piece is claimed (``atomic_add``) by whichever job gets to it first, and a job waits only
# for progress the other job is making (the sweep, or a piece it has claimed), so neither waits
# for ever. Run in order (one thread), job 0 does everything and job 1 finds it done.
#
# The bits. Each dx row sums over the gates in order and each bias in float64 over all T·B rows
# in increasing (t, b), as on the other paths. Each weight-gradient entry is one fma chain over the
# rows of part 0 (the steps the backward sweep processes first: the last steps forward, the first
# in reverse), then part 1, and so on, each part in increasing (t, b): in reverse the same order as
# the other paths, forward not (the test checks both against the classic kernels run in this
# order). It depends on T, B and the direction only: the same bits whoever runs what, and when.
PIPE_STEPS = 4   # backward steps per chunk of dx that job 1 takes at a time
PIPE_ROWS = 64   # rows of dW_ih and dW_hh per piece of the last part
PIPE_PARTS = 2   # parts of the weight-gradient sums: 1 to 4 measured, 2 fastest (docs/performance.md)


@inline
def pipe_step_rows(T, B, q0, q1, reverse):
    """Rows r0:r1 of the (T·B, ·) views that hold steps q0:q1 of a backward sweep, in its
    processing order: the last steps first, forward; the first in reverse (a forward sweep's
    order is the backward order of the other direction: pass ``not reverse``)."""
    if reverse:
        return q0 * B, q1 * B
    return (T - q1) * B, (T - q0) * B


@inline
def pipe_rows(T, B, c, reverse):
    """Rows r0:r1 of chunk c of a backward sweep's steps (steps c·PIPE_STEPS ... in its order)."""
    return pipe_step_rows(T, B, c * PIPE_STEPS, min(T, c * PIPE_STEPS + PIPE_STEPS), reverse)


@inline
def pipe_part_steps(T, p):
    """Steps q0:q1 (in the backward sweep's order) of part p of the weight-gradient sums."""
    return p * T // PIPE_PARTS, (p + 1) * T // PIPE_PARTS


@inline
def pipe_part_rows(T, B, p, reverse):
    """Rows k0:k1 of the (T·B, ·) views of part p of the weight-gradient sums."""
    q0, q1 = pipe_part_steps(T, p)
    return pipe_step_rows(T, B, q0, q1, reverse)


@inline
def pipe_chunks(T):
    """The number of chunks of ``PIPE_STEPS`` steps in a sweep of T steps."""
    return (T + PIPE_STEPS - 1) // PIPE_STEPS


PIPE_SPINS = 4096   # spins of a wait before it starts yielding its core (0.1 ms at Zen 4's 25 ns a pause)


@inline
def pipe_wait(flags, i, n):
    """Wait until flags[i] >= n (another job's progress, published with ``atomic_store``): spin,
    then, past ``PIPE_SPINS`` spins, yield the core at each turn (with more threads than cores the
    job waited for may be waiting for one)."""
    spins = 0
    while atomic_load(flags, i) < n:
        if spins < PIPE_SPINS:
            spin_pause()
            spins += 1
        else:
            yield_cpu()


@inline
def pipe_weight_rows(dW_ih, dW_hh, dg, dgh, x, Xh, u0, u1, k0, k1):
    """Rows u0:u1 of dW_ih += dgᵀ·x and dW_hh += dghᵀ·Xh over the rows k0:k1 of the (T·B, ·) views."""
    T, B, U = dg.shape
    acc_tile(dW_ih, dg.reshape((T * B, U)).T, x.reshape((T * B, x.shape[2])), u0, u1, 0, x.shape[2], 0, k0, k1,
             KC, 0)
    acc_tile(dW_hh, dgh.reshape((T * B, U)).T, Xh, u0, u1, 0, Xh.shape[1], 0, k0, k1, KC, 0)


PIPE_DX, PIPE_PART, PIPE_LAST = 0, 1, 2   # the kinds of piece of a backward pipeline's passes


@inline
def pipe_passes(j, flags, dx, dg, dgh, W_ih, x, y, h0, off, reverse, dW_ih, db_ih, dW_hh, db_hh, Xh, clear):
    """The passes of a backward pipeline's job j, in pieces, each claimed (``atomic_add``) by
    whichever job gets to it first:

    - job 0, once its sweep is over (and has published every step): the dx of every chunk job 1
      has not claimed (the last chunk first), then the parts job 1 has not taken;
    - job 1, following the sweep: each chunk's dx as the sweep publishes its steps in flags[0],
      each part but the last as soon as the sweep has done that part's steps, then the parts left;
    - then both: the last part's pieces from a shared counter.

    The pieces. The dx of chunk c (flags[1 + c]): dx rows += dg·W_ih (as :func:`input_backward`).
    Part p < PIPE_PARTS - 1 (claimed: flags[P + 2p], done: flags[P + 2p + 1], P = 1 + chunks):
    every row of dW_ih and dW_hh over the part's steps; a job that finds it claimed waits until it
    is done, so parts run in order, and part 0's claimer first gathers the states the steps read
    into Xh. The last part, from the counter flags[-1]: piece 0 the bias sums (db_ih += Σ dg,
    db_hh += Σ dgh, each in float64 from 0 over the rows in order:
    :func:`bptt.kernels.engine.add_column_sums`), piece i rows PIPE_ROWS·(i-1) ... of dW_ih and
    dW_hh over the last part's steps.

    dg : (T, B, U) the gate gradients; dgh : (T, B, U) those of the recurrent product (dg itself
    but for the GRU). x : (T, B, I). y, h0, off, reverse : as in :func:`recurrent_backward_params`.
    Xh : (T·B, H) scratch for the states the steps read.
    clear : the weight gradients are set, not added to: each piece that first writes rows of dW_ih
    and dW_hh (part 0's, or with one part the last part's pieces) clears them just before, and
    the bias piece clears db_ih and db_hh (the same bits as zeros then the sums).

    One loop picks the next piece and one call site runs each kind of work: every call site of an
    inlined helper is compiled again (with the two jobs' orders written out as loops, the LSTM's
    backward pipeline took 21 s to compile instead of 9 s)."""
    T, B, U = dg.shape
    nc = pipe_chunks(T)
    P = 1 + nc
    pieces = 1 + (U + PIPE_ROWS - 1) // PIPE_ROWS
    c = nc - 1 if j == 0 else 0              # the next chunk of dx
    p = 0                                    # the next part to take
    while True:
        kind = PIPE_LAST
        need = 0                             # steps the sweep must have published first
        chunk = c
        if j == 0:
            if c >= 0:
                kind = PIPE_DX
                c -= 1
            elif p < PIPE_PARTS - 1:
                kind = PIPE_PART
        elif c < nc:
            end = min(T, (c + 1) * PIPE_STEPS)
            if p < PIPE_PARTS - 1 and end > pipe_part_steps(T, p)[1]:
                kind = PIPE_PART
                need = pipe_part_steps(T, p)[1]
            else:
                kind = PIPE_DX
                need = end
                c += 1
        elif p < PIPE_PARTS - 1:
            kind = PIPE_PART
        if need > 0:
            pipe_wait(flags, 0, need)
        u0, u1, k0, k1 = 0, U, 0, 0          # the rows and the (T·B) range of a weight piece
        if kind == PIPE_DX:
            if atomic_add(flags, 1 + chunk, 1) == 0:
                r0, r1 = pipe_rows(T, B, chunk, reverse)
                acc_tile(dx.reshape((T * B, dx.shape[2])), dg.reshape((T * B, U)), W_ih, r0, r1, 0,
                         dx.shape[2], 0, 0, U, KC, 0)
            continue
        if kind == PIPE_PART:
            mine = atomic_add(flags, P + 2 * p, 1) == 0
            if not mine:
                pipe_wait(flags, P + 2 * p + 1, 1)
            elif p == 0:
                for t in range(T):
                    previous_step(Xh, y, h0, off, reverse, t)
                if clear:   # part 0 writes every row first
                    dW_ih[:, :] = 0
                    dW_hh[:, :] = 0
            k0, k1 = pipe_part_rows(T, B, p, reverse)
            p += 1
            if not mine:
                continue
        else:
            i = atomic_add(flags, flags.shape[0] - 1, 1)
            if i >= pieces:
                break
            if i == 0:
                if clear:
                    db_ih[:] = 0
                    db_hh[:] = 0
                add_column_sums(db_ih, dg.reshape((T * B, U)), 0, U)
                add_column_sums(db_hh, dgh.reshape((T * B, U)), 0, U)
                continue
            k0, k1 = pipe_part_rows(T, B, PIPE_PARTS - 1, reverse)
            u0 = (i - 1) * PIPE_ROWS
            u1 = min(U, u0 + PIPE_ROWS)
            if clear and PIPE_PARTS == 1:   # no part 0: these rows' first writer
                dW_ih[u0:u1, :] = 0
                dW_hh[u0:u1, :] = 0
        if k1 > k0:
            pipe_weight_rows(dW_ih, dW_hh, dg, dgh, x, Xh, u0, u1, k0, k1)
        if kind == PIPE_PART:
            atomic_store(flags, P + 2 * (p - 1) + 1, 1)


# The forward pipeline: job 0 runs the sweep, job 1 the input projection ahead of it, a chunk of
# ``PIPE_STEPS`` steps at a time, in the sweep's order. Each piece (the packing of W_ihᵀ, tried by
# both jobs at their start, and each chunk's projection) is claimed by whichever job gets to it
# first, and a job that needs a piece the other has claimed waits for it to be published: it is
# being computed, so the wait ends. Run in order, job 0 claims and computes every piece itself.
# Each projected row is computed as in :func:`input_forward` (bias, then the sum over the inputs
# in order), so the bits are the same.
# flags: [0] W_ihᵀ claimed, [1] W_ihᵀ packed, [2 + c] chunk c claimed, [2 + n + c] chunk c done,
# [-1] the cell's own last piece claimed (the LSTM's: W_hh packed for the backward).

@inline
def pipe_project(flags, g, x, W_ih, b_ih, Q, ch, reverse, wait):
    """Chunk ch of the forward pipeline's projection, g[t] = b_ih + x[t]·W_ihᵀ for its steps, if
    this job claims it first; else, if ``wait``, wait until the other job has done it.
    Q : W_ihᵀ in panels (packed by whichever job claimed it first: :func:`pipe_pack`)."""
    T, B, U = g.shape
    nc = pipe_chunks(T)
    if atomic_add(flags, 2 + ch, 1) == 0:
        pipe_wait(flags, 1, 1)                     # W_ihᵀ packed
        q0 = ch * PIPE_STEPS
        q1 = min(T, q0 + PIPE_STEPS)
        r0, r1 = pipe_step_rows(T, B, q0, q1, not reverse)   # the forward sweep's order
        g2 = g.reshape((T * B, U))
        fill_rows(g2, b_ih, r0, r1, 0, U)          # as dense_forward's blocks
        block_product(g2, x.reshape((T * B, x.shape[2])), Q, r0, r1, 0, U, 0, x.shape[2], 0)
        atomic_store(flags, 2 + nc + ch, 1)
    elif wait:
        pipe_wait(flags, 2 + nc + ch, 1)


@inline
def pipe_pack(flags, j, P, W_hh, Q, W_ih):
    """A forward pipeline's packings, before its projections: job 0 packs W_hhᵀ into P for its
    sweep, and W_ihᵀ is packed into Q by whichever job claims it first (flags[0]; flags[1] once
    packed). Both from one call site, as every inlined call site is compiled again."""
    for task in range(2):
        if task == 0:
            if j != 0:
                continue
            dst, src = P, W_hh
        elif atomic_add(flags, 0, 1) == 0:
            dst, src = Q, W_ih
        else:
            continue
        pack_T_into(dst, src)
        if task == 1:
            atomic_store(flags, 1, 1)


def pipe_forward_buffers(T, W_ih):
    """(flags, Q) for a forward pipeline: the claims and hand-offs (zeros), and the panels for
    W_ihᵀ."""
    nc = (T + PIPE_STEPS - 1) // PIPE_STEPS
    return np.zeros(2 + 2 * nc + 1, np.int64), scratch_panels("pipe_W_ihT", W_ih.shape[0], W_ih.shape[1], W_ih.dtype)


def pipe_buffers(T, B, H, dtype):
    """(flags, Xh) for a backward pipeline: the hand-offs and claims (zeros: the sweep's progress,
    each chunk's dx, each part but the last claimed and done, the last part's counter), and the
    states the steps read (a scratch buffer, (T·B, H))."""
    flags = np.zeros(1 + (T + PIPE_STEPS - 1) // PIPE_STEPS + 2 * (PIPE_PARTS - 1) + 1, np.int64)
    Xh = scratch("pipe_Xh", T * B * H, dtype).reshape((T * B, H))
    return flags, Xh


# -- large W_hh: the sweeps split by hidden units (the LSTM's, the GRU's and the RNN's) -----------
#
# Split by sequences, each job's product of a step reads all of W_hh for its rows. When W_hh does
# not fit in a core's L2 (past WIDE_BYTES, half of it: H ≥ 256 for the LSTM in float32 with a 1 MB
# L2), every core then streams all of it from L3 or memory at every step: 32 MB a step on two cores
# at the LSTM's `deepbench` (H = 1024), where the forward sweep ran at 42 GFLOP/s on one thread and
# 114-124 on two (Zen 4, memory-bound). Split by hidden units instead, one part per thread: job p
# owns units j0:j1 (whole multiples of 16 but the last, :func:`wide_units`), the columns of those
# units in every gate forward and the columns j0:j1 of dh backward, and reads only its part of
# W_hh, for all rows. A step's product needs the whole previous state (forward) or the whole gate
# gradient of the step (backward), so the jobs meet at every step (backward twice: after the gate
# gradients, and after the products).
#
# Each step is cut into pieces, one per part (backward: the gate gradients of a part, then its
# product), and a piece is *claimed* (atomic_add on its counter) by whichever job gets to it: its
# own part first, then each other one once it has been left unclaimed for WIDE_STEAL spins. A
# piece only waits for pieces of the previous stage, each claimed by a job that is running it,
# so no schedule deadlocks; run in order, job 0 does every piece. Every output is summed exactly
# as in the split by sequences (each a single fma chain over k, from the same value), so the bits
# do not depend on the split, the number of parts or on who ran what.

WIDE_BYTES = L2_BYTES // 2    # W_hh past this (not in a core's L2 beside the rest): split by units
# For small batches; past WIDE_ALWAYS (not in the sweeping cores' share of the L3): for every batch.
# That share is a quarter of the L3, but at most L3_PER_CORE a core: a virtual machine is shown
# the whole L3 of its socket, which other tenants' cores share (300 MB to a 2-core VM on an Intel
# Xeon, Emerald Rapids), while a core's own share is 4 MB on AMD's Zen 2-5 and 1.9-5 MB on recent
# Xeons. On two cores the bound is 8 MB, as the Zen 4's L3 // 4 (docs/performance.md, "Design
# measurements": what was measured on both machines).
L3_PER_CORE = 4 << 20


def wide_always(l3_bytes, cores):
    """WIDE_ALWAYS for an L3 of ``l3_bytes`` and ``cores`` sweeping cores (see above)."""
    return min(l3_bytes // 4, L3_PER_CORE * cores)


WIDE_ALWAYS = wide_always(L3_BYTES, max_threads())
WIDE_B = 8               # "small": fewer sequences than this
WIDE_STEAL = 1 << 15     # spins before a job takes another part's piece (a stalled thread, or in order)

# Measured with the LSTM (Zen 4: L2 1 MB, L3 32 MB; 2 threads, forward / backward sweep, ms, split
# by sequences → by units):
# B = 1, H = 256: 0.73 / 0.69 → 0.49 / 0.39;  B = 1, H = 512: 3.35 / 3.30 → 2.31 / 2.22;
# B = 4, H = 512: 6.61 / 6.56 → 4.47 / 4.20;  B = 32, H = 1024 (`deepbench`): 74 / 79 → 54 / 48;
# but B = 50, H = 256: 8.3-9.3 → 10.3-11.4;  B = 64, H = 512: 79 / 78 → 93 / 81;
# B = 16, H = 768: 12.4 / 12.1 → 13.4 / 12.6. With many rows each core's pass over W_hh serves
# enough of them, and meeting at every step costs more than it saves.


def wide(W_hh, B):
    """Whether the sweeps of B sequences over this W_hh split by hidden units (see above), which
    needs the threads running side by side (the jobs meet at every step)."""
    n = W_hh.nbytes
    return n > WIDE_BYTES and (B < WIDE_B or n > WIDE_ALWAYS) and side_by_side()


@inline
def wide_bound(H, q, NP):
    """The first unit of part q of NP (H for q = NP): q·H/NP rounded up to 16 (whole cache lines
    of float32 in each part's columns)."""
    return even_bound(q, NP, H, 16)


@inline
def wide_units(H, p, NP):
    """(j0, j1): the hidden units of part p of NP."""
    return wide_bound(H, p, NP), wide_bound(H, p + 1, NP)


@inline
def wide_claim(flags, i, other):
    """Claim piece i (flags[2i] counts claims, flags[2i + 1] is set when it is done): True if this
    job got it. Another part's piece (``other``) only once it has stayed unclaimed for
    ``WIDE_STEAL`` spins."""
    if other:
        n = 0
        while atomic_load(flags, 2 * i) == 0 and n < WIDE_STEAL:
            spin_pause()
            n += 1
    return atomic_add(flags, 2 * i, 1) == 0


@inline
def wide_done(flags, i):
    atomic_store(flags, 2 * i + 1, 1)


@inline
def wide_wait(flags, i):
    pipe_wait(flags, 2 * i + 1, 1)


@inline
def wide_step(flags, j, k, s, NP):
    """Forward, step s: the part that job j tries k-th (part j first, then the others in turn),
    claimed and ready (every piece of step s - 1 done), or -1 if another job has it. Piece
    (s, p) is number s·NP + p."""
    p = (j + k) % NP
    if not wide_claim(flags, NP * s + p, k > 0):
        return -1
    if s > 0:
        for q in range(NP):
            wide_wait(flags, NP * (s - 1) + q)
    return p


@inline
def wide_step_done(flags, s, p, NP):
    """Forward: piece (s, p) done (see :func:`wide_step`)."""
    wide_done(flags, NP * s + p)


@inline
def wide_grads(flags, j, k, s, T, NP):
    """Backward, step s (processed from T-1 down): as :func:`wide_step`, for the gate gradients of
    a part (piece 2·NP·(T-1-s) + p), ready once the same part's product of the later step is done."""
    p = (j + k) % NP
    i = 2 * NP * (T - 1 - s)
    if not wide_claim(flags, i + p, k > 0):
        return -1
    if s < T - 1:
        wide_wait(flags, i - NP + p)
    return p


@inline
def wide_grads_done(flags, s, T, p, NP):
    """Backward: part p's gate gradients of step s done (see :func:`wide_grads`)."""
    wide_done(flags, 2 * NP * (T - 1 - s) + p)


@inline
def wide_products(flags, j, s, T, NP, dh, dgt, P, K):
    """Backward, step s, after the gate gradients: dh[:, j0:j1] += dgt·M[:, j0:j1] for each part
    this job claims (piece 2·NP·(T-1-s) + NP + p, ready once every part's gate gradients are
    done), M (K, H) given by each part's columns in panels P[p] (dgt: the step's (B, K) gradient
    of the products' outputs)."""
    i = 2 * NP * (T - 1 - s)
    H = dh.shape[1]
    for k in range(NP):
        p = (j + k) % NP
        if wide_claim(flags, i + NP + p, k > 0):
            for q in range(NP):
                wide_wait(flags, i + q)
            j0, j1 = wide_units(H, p, NP)
            step_product(dh[:, j0:j1], dgt, P[p], 0, dh.shape[0], j1 - j0, K)
            wide_done(flags, i + NP + p)


@jobs
def _pack_wide_T(job, njobs, P, W_hh):
    """Job (part p, gate g, panel q) of :func:`wide_packed_T`: P[p, g] holds
    W_hh[g·H + j0 : g·H + j1]ᵀ (H, j1 - j0) in panels, the weights of part p's units in gate g."""
    NP, G, npp = P.shape[0], P.shape[1], P.shape[2]
    H = W_hh.shape[1]
    p = job // (G * npp)
    g = job // npp % G
    q = job % npp
    j0, j1 = wide_units(H, p, NP)
    if q < n_panels(j1 - j0):
        pack_panel_T(P[p, g], W_hh[g * H + j0:g * H + j1], q)


@jobs
def _pack_wide(job, njobs, P, W_hh):
    """Job (part p, panel q) of :func:`wide_packed`: P[p] holds columns j0:j1 of W_hh (G·H, H)
    in panels."""
    NP, npp = P.shape[0], P.shape[1]
    p = job // npp
    q = job % npp
    j0, j1 = wide_units(W_hh.shape[1], p, NP)
    if q < n_panels(j1 - j0):
        pack_panel(P[p], W_hh, q, j0, j1 - j0, 0, W_hh.shape[0], 0)


def wide_parts(parts):
    """The number of parts (and jobs) of a split by units: one per thread unless given."""
    return max(1, get_threads()) if parts is None else parts


def wide_packed_T(W_hh, T, parts):
    """(NP, P, flags) for a forward sweep of T steps split by units: NP parts (one per thread
    unless ``parts``), P (NP, G, panels, H, PANEL), P[p, g] gate g's weights of part p's units,
    transposed, in panels (W_hh (G·H, H)), in a scratch buffer, and the pieces' flags (two per
    piece, NP pieces a step: :func:`wide_step`)."""
    G, H = W_hh.shape[0] // W_hh.shape[1], W_hh.shape[1]
    NP = wide_parts(parts)
    npp = n_panels(H // NP + 16)
    P = scratch("wide_P", NP * G * npp * H * PANEL, W_hh.dtype).reshape((NP, G, npp, H, PANEL))
    _pack_wide_T(NP * G * npp, P, W_hh)
    return NP, P, np.zeros(2 * NP * T, np.int64)


def wide_packed(W_hh, T, parts):
    """(NP, P, flags) for a backward sweep of T steps split by units: P (NP, panels, G·H, PANEL),
    P[p] columns j0:j1 of W_hh (G·H, H) in panels, in a scratch buffer, and the pieces' flags
    (two per piece, 2·NP pieces a step: :func:`wide_grads`, :func:`wide_products`)."""
    NP = wide_parts(parts)
    npp = n_panels(W_hh.shape[1] // NP + 16)
    P = scratch("wide_P", NP * npp * W_hh.shape[0] * PANEL, W_hh.dtype).reshape((NP, npp, W_hh.shape[0], PANEL))
    _pack_wide(NP * npp, P, W_hh)
    return NP, P, np.zeros(4 * NP * T, np.int64)


def rnn_forward_wide(y, q, h0, W_hh, b_hh, off, reverse, code, parts=None):
    """:func:`rnn_forward` split by hidden units (above): each part's rows of W_hh packed
    transposed, then one job per part (per thread), meeting at every step."""
    NP, P, flags = wide_packed_T(W_hh, q.shape[0], parts)
    _rnn_forward_wide(NP, y, q, h0, b_hh, off, reverse, code, P, flags)


@jobs
def _rnn_forward_wide(j, njobs, y, q, h0, b_hh, off, reverse, code, P, flags):
    """Job j of :func:`rnn_forward_wide`: every step, the parts it claims (:func:`wide_step`)."""
    T, B, H = q.shape
    NP = njobs
    for s in range(T):
        for k in range(NP):
            p = wide_step(flags, j, k, s, NP)
            if p >= 0:
                j0, j1 = wide_units(H, p, NP)
                t = T - 1 - s if reverse else s
                hp = h0 if s == 0 else y[t + 1 if reverse else t - 1, :, off:off + H]
                qt = q[t, :, j0:j1]
                add_bias_rows(qt, b_hh[j0:j1], 0, B)          # q_t += b_hh
                step_product(qt, hp, P[p, 0], 0, B, j1 - j0, H)   # q_t += h_prev·W_hhᵀ, these units
                for b in range(B):
                    state_act_row(y[t, b, off + j0:off + j1], qt[b], code)
                wide_step_done(flags, s, p, NP)


def rnn_backward_wide(dq, dh0, dh, dy, dh_n, q, y, W_hh, off, reverse, code, parts=None):
    """:func:`rnn_backward` split by hidden units (above): each part's columns of W_hh packed, then
    one job per part (per thread), meeting twice a step (after dq, and after the products)."""
    NP, P, flags = wide_packed(W_hh, q.shape[0], parts)
    np.copyto(dh, dh_n)
    _rnn_backward_wide(NP, dq, dh, dy, q, y, off, reverse, code, P, flags)
    dh0 += dh


@jobs
def _rnn_backward_wide(j, njobs, dq, dh, dy, q, y, off, reverse, code, P, flags):
    """Job j of :func:`rnn_backward_wide`: at each step (from the last processed), dq of the units
    of the parts it claims (:func:`wide_grads`), then their products (:func:`wide_products`)."""
    T, B, H = q.shape
    NP = njobs
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if reverse else s
        for k in range(NP):
            p = wide_grads(flags, j, k, s, T, NP)
            if p >= 0:
                j0, j1 = wide_units(H, p, NP)
                rnn_state_grads(dq, dh, dy, q, y, t, off, code, 0, B, j0, j1)
                wide_grads_done(flags, s, T, p, NP)
        wide_products(flags, j, s, T, NP, dh, dq[t], P, H)   # dh = dq_t·W_hh
