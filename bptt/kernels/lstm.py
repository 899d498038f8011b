"""LSTM cell over a whole sequence, gate order i, f, g, o as in torch.

Shapes: T time steps, B batch, H hidden units, G = 4 gates, D directions (1 or 2).
Layout, direction (``reverse``) and output columns (``off``) are as in :mod:`bptt.kernels.rnn`.

    [a_i, a_f, a_g, a_o] = (W_ih·x_t + b_ih) + W_hh·h_prev + b_hh          (each a block of H)
    i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
    c_t = f ⊙ c_prev + i ⊙ g
    h_t = o ⊙ tanh(c_t)

Weight gradients and dx are one pass each after the sweep, from the stored da (T, B, 4H), with the
kernels every cell shares (:mod:`bptt.kernels.rnn`): ``input_backward_params``,
``recurrent_backward_params`` and ``input_backward``. Products are blocked and parallel as
described there. For a small batch (a layer below ``bptt.jit.SERIAL_WORK``) the layer calls
:func:`lstm_forward_pipelined` and :func:`lstm_backward_pipelined` instead: the same steps, with
the projection running ahead of the forward sweep and the passes beside the backward one, on a
second thread (:mod:`bptt.kernels.rnn`, "small batches"). When W_ih and W_hh fit in a core's L2
together, the layer calls :func:`lstm_forward_fused` and :func:`lstm_backward_fused`: the input
projection and dx step by step inside the sweeps. When W_hh does not fit in a core's L2 (and the
batch is small, or W_hh is past a share of the L3), the sweeps split the hidden units between the
threads instead of the sequences (:func:`lstm_forward_wide`, below). Every variant computes the
same sums in the same order: the same bits.
Reference twins: :mod:`bptt.reference.lstm` (same names and signatures, plain NumPy).
"""

import numpy as np

from ..jit import (atomic_add, atomic_load, atomic_store, composite, get_threads, inline, jobs, side_by_side,
                   spin_pause)
from .activations import sigmoid, tanh
from .engine import (add_bias_rows, add_rows, chunk_rows, copy_rows, LAST_PANELS, LAST_PANELS_T, pack_all_into,
                     L2_BYTES, L3_BYTES, PANEL, n_panels, pack_panel, pack_panel_T, panels, panels_T, scratch,
                     pack_T_into, row_chunks, scratch_panels, step_product, sweep_chunks)
from .dense import fill_rows
from .rnn import (PIPE_STEPS, pipe_after_sweep, pipe_buffers, pipe_chunks, pipe_follow_sweep, pipe_wait,
                  pipe_forward_buffers, pipe_project)


@composite
def lstm_forward(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse):
    """Forward over the sequence, keeping every gate and cell state for backward.

    y : (T, B, D·H) output; writes y[t, :, off:off+H] = h_t.
    gates : (T, B, 4H) in: the input projection W_ih·x_t + b_ih; out: the gate activations
            [i, f, g, o] of every step.
    c : (T, B, H) out: cell states c_t.   tc : (T, B, H) out: tanh(c_t).
    h0, c0 : (B, H) initial state.  W_hh : (4H, H).  b_hh : (4H,).
    off : int column offset of this direction in y.  reverse : bool.

    With a W_hh that does not fit in a core's L2 and a small batch, or past a share of the L3
    (:func:`wide`), the jobs split the hidden units between the threads instead of the sequences
    (:func:`lstm_forward_wide`); otherwise each job takes a chunk of the sequences. The same sums
    either way (the same bits).
    """
    if wide(W_hh, gates.shape[1]):
        lstm_forward_wide(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse)
        return
    _lstm_forward_rows(sweep_chunks(gates.shape[1]), y, gates, c, tc, h0, c0, b_hh, off, reverse, W_hh)


@jobs(last=LAST_PANELS_T)
def _lstm_forward_rows(ch, nch, y, gates, c, tc, h0, c0, b_hh, off, reverse, P):
    """Chunk ch of :func:`lstm_forward`'s sequences, every step; P: W_hhᵀ (H, 4H) in panels."""
    T, B = gates.shape[0], gates.shape[1]
    nch, rc = row_chunks(B)
    r0, r1 = chunk_rows(ch, nch, rc, B)
    for s in range(T):
        lstm_forward_step(s, y, gates, c, tc, h0, c0, b_hh, off, reverse, P, r0, r1)


@inline
def lstm_forward_step(s, y, gates, c, tc, h0, c0, b_hh, off, reverse, P, r0, r1):
    """Step s (in processing order) of :func:`lstm_forward`'s sweep, rows r0:r1 (P: W_hhᵀ (H, 4H)
    in panels)."""
    T, B, G4 = gates.shape
    H = G4 // 4
    t = T - 1 - s if reverse else s
    tp = t + 1 if reverse else t - 1
    hp = h0 if s == 0 else y[tp, :, off:off + H]   # h_prev
    cp = c0 if s == 0 else c[tp]                    # c_prev
    a = gates[t]
    add_bias_rows(a, b_hh, r0, r1)          # a = (W_ih·x_t + b_ih) + b_hh
    step_product(a, hp, P, r0, r1, G4, H)   #   + h_prev·W_hhᵀ, all 4H units
    lstm_cells(y, gates, c, tc, cp, t, off, r0, r1, 0, H)


@inline
def lstm_cells(y, gates, c, tc, cp, t, off, r0, r1, u0, u1):
    """The gates and the cell of step t for rows r0:r1 and units u0:u1, from the pre-activations in
    gates[t] (overwritten by the gates i, f, g, o): c_t = f ⊙ c_prev + i ⊙ g, tanh(c_t), and
    h_t = o ⊙ tanh(c_t) into y's columns off + u0 : off + u1. cp: c_prev (B, H).

    One simple loop per quantity, so that each vectorises, each from 0 over a view: an index like
    2H + o, of unknown sign to the compiler, keeps the negative-index check in the loop, which
    then stays scalar (docs/performance.md)."""
    H = gates.shape[2] // 4
    n = u1 - u0
    for b in range(r0, r1):
        ab = gates[t, b]
        ai = ab[u0:u1]
        af = ab[H + u0:H + u1]
        ag = ab[2 * H + u0:2 * H + u1]
        ao = ab[3 * H + u0:3 * H + u1]
        for o in range(n):
            ai[o] = sigmoid(ai[o])
        for o in range(n):
            af[o] = sigmoid(af[o])
        for o in range(n):
            ag[o] = tanh(ag[o])
        for o in range(n):
            ao[o] = sigmoid(ao[o])
        cpb = cp[b, u0:u1]
        cb = c[t, b, u0:u1]
        tcb = tc[t, b, u0:u1]
        yb = y[t, b, off + u0:off + u1]
        for o in range(n):                      # c_t = f ⊙ c_prev + i ⊙ g
            cb[o] = af[o] * cpb[o] + ai[o] * ag[o]
        for o in range(n):
            tcb[o] = tanh(cb[o])
        for o in range(n):                      # h_t = o ⊙ tanh(c_t)
            yb[o] = ao[o] * tcb[o]


@inline
def lstm_gate_grads(da, dh, dc, dy, gates, tc, cp, t, off, r0, r1, u0, u1):
    """da_t of step t for rows r0:r1 and units u0:u1 (the formulas of :func:`lstm_backward`) from
    the carried dh, dc; then dc ⊙= f there, and dh ← 0 there (the product adds da_t·W_hh into it).
    cp: c_prev (B, H). Row views from 0, so that the loops vectorise."""
    H = gates.shape[2] // 4
    n = u1 - u0
    one = gates.dtype.type(1.0)   # in the arrays' dtype (a 1.0 would make it float64)
    for b in range(r0, r1):
        gb = gates[t, b]
        dab = da[t, b]
        gi, gf, gg, go = gb[u0:u1], gb[H + u0:H + u1], gb[2 * H + u0:2 * H + u1], gb[3 * H + u0:3 * H + u1]
        dai, daf = dab[u0:u1], dab[H + u0:H + u1]
        dag, dao = dab[2 * H + u0:2 * H + u1], dab[3 * H + u0:3 * H + u1]
        tcb = tc[t, b, u0:u1]
        dyb = dy[t, b, off + u0:off + u1]
        cpb = cp[b, u0:u1]
        dhb = dh[b, u0:u1]
        dcb = dc[b, u0:u1]
        for o in range(n):
            ig = gi[o]
            fg = gf[o]
            ggo = gg[o]
            og = go[o]
            th = tcb[o]
            dht = dyb[o] + dhb[o]
            dct = dcb[o] + dht * og * (one - th * th)
            dai[o] = dct * ggo * ig * (one - ig)
            daf[o] = dct * cpb[o] * fg * (one - fg)
            dag[o] = dct * ig * (one - ggo * ggo)
            dao[o] = dht * th * og * (one - og)
            dcb[o] = dct * fg
            dhb[o] = 0.0



# -- the passes beside the sweep, step by step ---------------------------------------------------
#
# When W_ih and W_hh fit in a core's L2 together (FUSE_BYTES), the input projection of a step is
# computed inside the sweep, just before its recurrent product, by the thread that owns the rows
# (and dx_t = da_t·W_ih just after the backward step's product): the (T, B, 4H) gates and da are
# then not written by one pass and read again by another, and the small products run with the
# sweep's chunks instead of a parallel region of their own. Each output is the same fma chain as
# in input_forward / input_backward (b_ih, then x_t·W_ihᵀ over i in order; dx from its value
# over u in order), so the bits are the same.

FUSE_BYTES = L2_BYTES // 2   # Zen 4 (1 MB L2): the LSTM `char` step (395 KB of weights) 4-5 % faster;
                             # the char-LM's LSTM (1.3 MB) gained nothing


def fused(W_ih, W_hh):
    """Whether a sweep over W_hh takes its input projection and dx with it (see above)."""
    return W_ih.nbytes + W_hh.nbytes <= FUSE_BYTES


@composite
def lstm_forward_fused(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse, x, W_ih, b_ih):
    """``input_forward`` (gates = W_ih·x_t + b_ih) and then :func:`lstm_forward`, step by step in
    one sweep: the arguments of :func:`lstm_forward`, then x (T, B, I) the layer's input, W_ih
    (4H, I) and b_ih (4H,); ``gates`` is written only (its input values are not read)."""
    _lstm_forward_rows_fused(sweep_chunks(gates.shape[1]), y, gates, c, tc, h0, c0, b_hh, off, reverse, x, b_ih,
                             panels_T(W_ih), W_hh)


@jobs(last=LAST_PANELS_T)
def _lstm_forward_rows_fused(ch, nch, y, gates, c, tc, h0, c0, b_hh, off, reverse, x, b_ih, P_ih, P):
    """Chunk ch of :func:`lstm_forward_fused`'s sequences, every step; P_ih: W_ihᵀ (I, 4H) and
    P: W_hhᵀ (H, 4H) in panels."""
    T, B, G4 = gates.shape
    nch, rc = row_chunks(B)
    r0, r1 = chunk_rows(ch, nch, rc, B)
    for s in range(T):
        t = T - 1 - s if reverse else s
        a = gates[t]
        fill_rows(a, b_ih, r0, r1, 0, G4)
        step_product(a, x[t], P_ih, r0, r1, G4, x.shape[2])
        lstm_forward_step(s, y, gates, c, tc, h0, c0, b_hh, off, reverse, P, r0, r1)


@composite
def lstm_backward_fused(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse, dx, W_ih):
    """:func:`lstm_backward` and then ``input_backward`` (dx_t += da_t·W_ih), step by step in one
    sweep: the arguments of :func:`lstm_backward`, then dx (T, B, I) accumulated and W_ih (4H, I)."""
    _lstm_backward_rows_fused(sweep_chunks(gates.shape[1]), da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc,
                              c0, off, reverse, dx, panels(W_ih, 0, W_ih.shape[1]), W_hh)


@jobs(last=LAST_PANELS)
def _lstm_backward_rows_fused(ch, nch, da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, off, reverse, dx,
                              P_ih, P):
    """Chunk ch of :func:`lstm_backward_fused`'s sequences, every step; P_ih: W_ih (4H, I) and
    P: W_hh (4H, H) in panels."""
    T, B, G4 = gates.shape
    nch, rc = row_chunks(B)
    r0, r1 = chunk_rows(ch, nch, rc, B)
    copy_rows(dh, dh_n, r0, r1)
    copy_rows(dc, dc_n, r0, r1)
    for s in range(T - 1, -1, -1):
        lstm_backward_step(s, da, dh, dc, dy, gates, c, tc, c0, off, reverse, P, r0, r1)
        t = T - 1 - s if reverse else s
        step_product(dx[t], da[t], P_ih, r0, r1, dx.shape[2], G4)
    add_rows(dh0, dh, r0, r1)
    add_rows(dc0, dc, r0, r1)


@composite
def lstm_forward_pipelined(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse, x, W_ih, b_ih, P_hh):
    """``input_forward`` (gates = W_ih·x_t + b_ih for every step) and then :func:`lstm_forward`,
    for a small batch: the projection runs ahead of the sweep on a second thread, chunk by chunk
    (:mod:`bptt.kernels.rnn`, "small batches"; in order on one), and that thread then packs W_hh
    for the backward. The arguments of :func:`lstm_forward`, then x (T, B, I) the layer's input,
    W_ih (4H, I), b_ih (4H,) and P_hh: out, W_hh (4H, H) in panels (``new_panels(H, 4H)``), for
    :func:`lstm_backward_pipelined`."""
    flags, Q = pipe_forward_buffers(gates.shape[0], W_ih)
    P = scratch_panels("pipe_W_hhT", W_hh.shape[0], W_hh.shape[1], W_hh.dtype)
    _lstm_forward_pipe(2, y, gates, c, tc, h0, c0, b_hh, off, reverse, W_hh, P, x, W_ih, b_ih, Q, flags, P_hh)


@jobs(concurrent=True)
def _lstm_forward_pipe(j, njobs, y, gates, c, tc, h0, c0, b_hh, off, reverse, W_hh, P, x, W_ih, b_ih, Q, flags,
                       P_hh):
    """Job j of :func:`lstm_forward_pipelined`: 0 the sweep, 1 the projection ahead of it
    (:func:`bptt.kernels.rnn.pipe_project`), then the packing of W_hh for the backward (flags[-1]:
    whichever job gets to it)."""
    T, B = gates.shape[0], gates.shape[1]
    if j == 0:
        pack_T_into(P, W_hh)
        for s in range(T):
            if s % PIPE_STEPS == 0:
                pipe_project(flags, gates, x, W_ih, b_ih, Q, s // PIPE_STEPS, reverse, True)
            lstm_forward_step(s, y, gates, c, tc, h0, c0, b_hh, off, reverse, P, 0, B)
    else:
        for ch in range(pipe_chunks(T)):
            pipe_project(flags, gates, x, W_ih, b_ih, Q, ch, reverse, False)
    if atomic_add(flags, flags.shape[0] - 1, 1) == 0:
        pack_all_into(P_hh, W_hh)


@composite
def lstm_backward(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse):
    """Backward sweep through time (BPTT), from the last processed step to the first.

    With dh, dc the gradients carried from the later step (dh_n, dc_n at the start):
        dh_t  = dy_t + dh
        dc_t  = dc + dh_t ⊙ o ⊙ (1 - tanh²c_t)
        da_i  = dc_t ⊙ g ⊙ i(1 - i)          da_f = dc_t ⊙ c_prev ⊙ f(1 - f)
        da_g  = dc_t ⊙ i ⊙ (1 - g²)           da_o = dh_t ⊙ tanh(c_t) ⊙ o(1 - o)
        dc    = dc_t ⊙ f                      dh   = da·W_hh        (carried to the earlier step)
    and at the end dh0 += dh, dc0 += dc.

    da : (T, B, 4H) written: ∂L/∂a_t, the gate pre-activation gradients of every step.
    dh0, dc0 : (B, H) accumulated.   dh, dc : (B, H) workspaces (the carried gradients).
    dy : (T, B, D·H) ∂L/∂y; this direction reads columns off:off+H.
    dh_n, dc_n : (B, H) gradients on the final state.
    gates, c, tc : from :func:`lstm_forward`.  c0 : (B, H).  W_hh : (4H, H).
    off, reverse : as in :func:`lstm_forward`.
    Split by hidden units as :func:`lstm_forward` (:func:`lstm_backward_wide`).
    """
    if wide(W_hh, gates.shape[1]):
        lstm_backward_wide(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse)
        return
    _lstm_backward_rows(sweep_chunks(gates.shape[1]), da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0,
                        off, reverse, W_hh)


@jobs(last=LAST_PANELS)
def _lstm_backward_rows(ch, nch, da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, off, reverse, P):
    """Chunk ch of :func:`lstm_backward`'s sequences, every step; P: W_hh (4H, H) in panels."""
    T, B = gates.shape[0], gates.shape[1]
    nch, rc = row_chunks(B)
    r0, r1 = chunk_rows(ch, nch, rc, B)
    copy_rows(dh, dh_n, r0, r1)   # the carried gradients start from the final state's
    copy_rows(dc, dc_n, r0, r1)
    for s in range(T - 1, -1, -1):
        lstm_backward_step(s, da, dh, dc, dy, gates, c, tc, c0, off, reverse, P, r0, r1)
    add_rows(dh0, dh, r0, r1)   # what reaches the first step is ∂L/∂h0, ∂L/∂c0
    add_rows(dc0, dc, r0, r1)


@inline
def lstm_backward_step(s, da, dh, dc, dy, gates, c, tc, c0, off, reverse, P, r0, r1):
    """Step s (in processing order) of :func:`lstm_backward`'s sweep, rows r0:r1: da_t from the
    carried dh, dc, then dc ⊙= f and dh = da_t·W_hh (P: W_hh (4H, H) in panels)."""
    T, B, G4 = gates.shape
    H = G4 // 4
    t = T - 1 - s if reverse else s
    cp = c0 if s == 0 else c[t + 1 if reverse else t - 1]   # c_prev
    lstm_gate_grads(da, dh, dc, dy, gates, tc, cp, t, off, r0, r1, 0, H)
    step_product(dh, da[t], P, r0, r1, H, G4)   # dh = da_t·W_hh, carried to the earlier step


@composite
def lstm_backward_pipelined(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse,
                            x, y, h0, W_ih, dW_ih, db_ih, dW_hh, db_hh, dx, P_hh, packed):
    """:func:`lstm_backward`, then every pass after it (``input_backward_params``,
    ``recurrent_backward_params``, ``input_backward``), for a small batch: the sweep and the passes
    run side by side on two threads (:mod:`bptt.kernels.rnn`, "small batches"; in order on one).

    The arguments of :func:`lstm_backward`, then x (T, B, I) the layer's input, y (T, B, D·H) its
    output, h0 (B, H), W_ih (4H, I), the gradients dW_ih, db_ih, dW_hh, db_hh (accumulated) and
    dx (T, B, I) (accumulated), P_hh: W_hh in panels (``new_panels(H, 4H)``), packed here unless
    ``packed`` (by :func:`lstm_forward_pipelined`, from the same W_hh)."""
    T, B, G4 = gates.shape
    flags, Xh = pipe_buffers(T, B, G4 // 4, gates.dtype)
    _lstm_backward_pipe(2, da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, off, reverse, W_hh, P_hh,
                        x, y, h0, W_ih, dW_ih, db_ih, dW_hh, db_hh, dx, flags, Xh, packed)


@jobs(concurrent=True)
def _lstm_backward_pipe(j, njobs, da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, off, reverse, W_hh, P,
                        x, y, h0, W_ih, dW_ih, db_ih, dW_hh, db_hh, dx, flags, Xh, packed):
    """Job j of :func:`lstm_backward_pipelined`: 0 the sweep (publishing each step in flags[0]),
    then :func:`bptt.kernels.rnn.pipe_after_sweep`; 1 :func:`bptt.kernels.rnn.pipe_follow_sweep`."""
    T, B = gates.shape[0], gates.shape[1]
    if j == 0:
        if not packed:
            pack_all_into(P, W_hh)
        copy_rows(dh, dh_n, 0, B)
        copy_rows(dc, dc_n, 0, B)
        for s in range(T - 1, -1, -1):
            lstm_backward_step(s, da, dh, dc, dy, gates, c, tc, c0, off, reverse, P, 0, B)
            atomic_store(flags, 0, T - s)
        add_rows(dh0, dh, 0, B)
        add_rows(dc0, dc, 0, B)
        pipe_after_sweep(flags, dx, da, da, W_ih, x, y, h0, off, reverse, dW_ih, db_ih, dW_hh, db_hh, Xh)
    else:
        pipe_follow_sweep(flags, dx, da, da, W_ih, x, y, h0, off, reverse, dW_ih, db_ih, dW_hh, db_hh, Xh)


# -- large W_hh: the sweeps split by hidden units ----------------------------------------------
#
# Split by sequences, each job's product of a step reads all of W_hh for its rows. When W_hh does
# not fit in a core's L2 (past WIDE_BYTES, half of it: H ≥ 256 in float32 with a 1 MB L2), every
# core then streams all of it from L3 or memory at every step: 32 MB a step on two cores at
# `deepbench` (H = 1024), where the forward sweep ran at 42 GFLOP/s on one thread and 114-124 on
# two (Zen 4, memory-bound). Split by hidden units instead, one part per thread: job p owns units
# j0:j1 (whole multiples of 16 but the last, :func:`wide_units`), the columns i, f, g, o of those
# units forward and the columns j0:j1 of dh backward, and reads only its part of W_hh, for all
# rows. A step's product needs the whole previous state (forward) or the whole da_t (backward), so
# the jobs meet at every step (backward twice: after the gate gradients, and after the products).
#
# Each step is cut into pieces, one per part (backward: the gate gradients of a part, then its
# product), and a piece is *claimed* (atomic_add on its counter) by whichever job gets to it: its
# own part first, then each other one once it has been left unclaimed for WIDE_STEAL spins. A
# piece only waits for pieces of the previous stage, each claimed by a job that is running it,
# so no schedule deadlocks; run in order, job 0 does every piece. Every output is summed exactly
# as in the split by sequences (each a single fma chain over k, from the same value), so the bits
# do not depend on the split, the number of parts or on who ran what.

WIDE_BYTES = L2_BYTES // 2    # W_hh past this (not in a core's L2 beside the rest): split by units
WIDE_ALWAYS = L3_BYTES // 4   # for small batches; past this (not in its share of the L3): for every batch
WIDE_B = 8               # "small": fewer sequences than this
WIDE_STEAL = 1 << 15     # spins before a job takes another part's piece (a stalled thread, or in order)

# Measured (Zen 4: L2 1 MB, L3 32 MB; 2 threads, forward / backward sweep, ms, split by sequences → by units):
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
    if q >= NP:
        return H
    return min(H, (q * H // NP + 15) // 16 * 16)


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


@jobs
def _pack_wide_T(job, njobs, P, W_hh):
    """Job (part p, gate g, panel q) of :func:`lstm_forward_wide`'s packing: P[p, g] holds
    W_hh[g·H + j0 : g·H + j1]ᵀ (H, j1 - j0) in panels, the weights of part p's units in gate g."""
    NP, npp = P.shape[0], P.shape[2]
    H = W_hh.shape[1]
    p = job // (4 * npp)
    g = job // npp % 4
    q = job % npp
    j0, j1 = wide_units(H, p, NP)
    if q < n_panels(j1 - j0):
        pack_panel_T(P[p, g], W_hh[g * H + j0:g * H + j1], q)


@jobs
def _pack_wide(job, njobs, P, W_hh):
    """Job (part p, panel q) of :func:`lstm_backward_wide`'s packing: P[p] holds columns j0:j1
    of W_hh (4H, H) in panels."""
    NP, npp = P.shape[0], P.shape[1]
    p = job // npp
    q = job % npp
    j0, j1 = wide_units(W_hh.shape[1], p, NP)
    if q < n_panels(j1 - j0):
        pack_panel(P[p], W_hh, q, j0, j1 - j0, 0, W_hh.shape[0], 0)


def wide_parts(parts):
    """The number of parts (and jobs) of a split by units: one per thread unless given."""
    return max(1, get_threads()) if parts is None else parts


def lstm_forward_wide(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse, parts=None):
    """:func:`lstm_forward` split by hidden units (see above): W_hh's rows of each part and gate
    packed transposed, then one job per part (per thread), meeting at every step."""
    T, B, G4 = gates.shape
    H = G4 // 4
    NP = wide_parts(parts)
    npp = n_panels(H // NP + 16)
    P = scratch("wide_P", NP * 4 * npp * H * PANEL, W_hh.dtype).reshape((NP, 4, npp, H, PANEL))
    _pack_wide_T(NP * 4 * npp, P, W_hh)
    flags = np.zeros(2 * NP * T, np.int64)
    _lstm_forward_wide(NP, y, gates, c, tc, h0, c0, b_hh, off, reverse, P, flags)


@jobs
def _lstm_forward_wide(j, njobs, y, gates, c, tc, h0, c0, b_hh, off, reverse, P, flags):
    """Job j of :func:`lstm_forward_wide`: piece (s, p) = step s for part p (number s·NP + p),
    part j first, then the others in turn; each after every piece of step s - 1."""
    T, H = gates.shape[0], gates.shape[2] // 4
    NP = njobs
    for s in range(T):
        for k in range(NP):
            p = (j + k) % NP
            if wide_claim(flags, NP * s + p, k > 0):
                if s > 0:
                    for q in range(NP):
                        wide_wait(flags, NP * (s - 1) + q)
                j0, j1 = wide_units(H, p, NP)
                lstm_forward_part(s, y, gates, c, tc, h0, c0, b_hh, off, reverse, P[p], j0, j1)
                wide_done(flags, NP * s + p)


@inline
def lstm_forward_part(s, y, gates, c, tc, h0, c0, b_hh, off, reverse, Pp, j0, j1):
    """Step s of :func:`lstm_forward` for the units j0:j1, every sequence (Pp[g]: gate g's
    weights of those units, transposed, in panels): :func:`lstm_forward_step`'s sums and gates on
    those columns."""
    T, B, G4 = gates.shape
    H = G4 // 4
    n = j1 - j0
    t = T - 1 - s if reverse else s
    tp = t + 1 if reverse else t - 1
    hp = h0 if s == 0 else y[tp, :, off:off + H]
    cp = c0 if s == 0 else c[tp]
    a = gates[t]
    for g in range(4):
        ag = a[:, g * H + j0:g * H + j1]
        add_bias_rows(ag, b_hh[g * H + j0:g * H + j1], 0, B)   # (W_ih·x_t + b_ih) + b_hh
        step_product(ag, hp, Pp[g], 0, B, n, H)                 #   + h_prev·W_hhᵀ, these units
    lstm_cells(y, gates, c, tc, cp, t, off, 0, B, j0, j1)


def lstm_backward_wide(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse, parts=None):
    """:func:`lstm_backward` split by hidden units (see above): W_hh's columns of each part packed,
    then one job per part (per thread), meeting twice a step (after the gate gradients, and after
    the products)."""
    T, B, G4 = gates.shape
    H = G4 // 4
    NP = wide_parts(parts)
    npp = n_panels(H // NP + 16)
    P = scratch("wide_P", NP * npp * G4 * PANEL, W_hh.dtype).reshape((NP, npp, G4, PANEL))
    _pack_wide(NP * npp, P, W_hh)
    np.copyto(dh, dh_n)
    np.copyto(dc, dc_n)
    flags = np.zeros(4 * NP * T, np.int64)
    _lstm_backward_wide(NP, da, dh, dc, dy, gates, c, tc, c0, off, reverse, P, flags)
    dh0 += dh
    dc0 += dc


@jobs
def _lstm_backward_wide(j, njobs, da, dh, dc, dy, gates, c, tc, c0, off, reverse, P, flags):
    """Job j of :func:`lstm_backward_wide`. Pieces of step s (in processing order, from T-1 down),
    numbered from i = 2·NP·(T-1-s): the gate gradients of part p (i + p; after the product of part
    p of the later step), then the product of part p (i + NP + p; after every part's gate
    gradients). Part j first, then the others in turn."""
    T, B, G4 = gates.shape
    H = G4 // 4
    NP = njobs
    for s in range(T - 1, -1, -1):
        i = 2 * NP * (T - 1 - s)
        for k in range(NP):
            p = (j + k) % NP
            if wide_claim(flags, i + p, k > 0):
                if s < T - 1:
                    wide_wait(flags, i - NP + p)
                j0, j1 = wide_units(H, p, NP)
                lstm_backward_part(s, da, dh, dc, dy, gates, c, tc, c0, off, reverse, j0, j1)
                wide_done(flags, i + p)
        for k in range(NP):
            p = (j + k) % NP
            if wide_claim(flags, i + NP + p, k > 0):
                for q in range(NP):
                    wide_wait(flags, i + q)
                j0, j1 = wide_units(H, p, NP)
                t = T - 1 - s if reverse else s
                step_product(dh[:, j0:j1], da[t], P[p], 0, B, j1 - j0, G4)
                wide_done(flags, i + NP + p)


@inline
def lstm_backward_part(s, da, dh, dc, dy, gates, c, tc, c0, off, reverse, j0, j1):
    """The gate gradients of step s of :func:`lstm_backward` for the units j0:j1, every sequence
    (:func:`lstm_backward_step`'s formulas on those columns; dh ← 0 there for the product)."""
    T, B = gates.shape[0], gates.shape[1]
    t = T - 1 - s if reverse else s
    cp = c0 if s == 0 else c[t + 1 if reverse else t - 1]
    lstm_gate_grads(da, dh, dc, dy, gates, tc, cp, t, off, 0, B, j0, j1)
