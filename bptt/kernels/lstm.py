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

from ..jit import atomic_add, atomic_store, composite, inline, jobs
from .activations import sigmoid, tanh
from .engine import (add_bias_rows, apart, apart_stride, add_rows, chunk_rows, copy_rows, LAST_PANELS, LAST_PANELS_T,
                     pack_all_into, L2_BYTES, panels, panels_T, scratch, scratch_panels, step_product,
                     sweep_chunks)
from .dense import fill_rows
from .rnn import (PIPE_STEPS, batch_half, gate_panels, pipe_buffers, pipe_chunks, pipe_pack, pipe_passes,
                  pipe_forward_buffers, pipe_project, wide, wide_grads, wide_grads_done, wide_packed,
                  wide_packed_T, wide_products, wide_step, wide_step_done, wide_units, rows_into_gate_panels)


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
    r0, r1 = chunk_rows(ch, nch, B)
    for s in range(T):
        lstm_forward_step(s, y, gates, c, tc, h0, c0, b_hh, off, reverse, P, r0, r1, 0)


@inline
def lstm_forward_step(s, y, gates, c, tc, h0, c0, b_hh, off, reverse, P, r0, r1, o):
    """Step s (in processing order) of :func:`lstm_forward`'s sweep, rows r0:r1 (P: W_hhᵀ (H, 4H)
    in panels). Sequence b's rows of gates, c and tc are b + o (``o``: :func:`gap_segment`)."""
    T, G4 = gates.shape[0], gates.shape[2]
    H = G4 // 4
    t = T - 1 - s if reverse else s
    tp = t + 1 if reverse else t - 1
    hp = h0 if s == 0 else y[tp, :, off:off + H]   # h_prev
    cp = c0 if s == 0 else c[tp]                    # c_prev
    co = 0 if s == 0 else o                         # its rows' offset
    a = gates[t]
    add_bias_rows(a, b_hh, r0 + o, r1 + o)      # a = (W_ih·x_t + b_ih) + b_hh
    step_product(a[o:], hp, P, r0, r1, G4, H)   #   + h_prev·W_hhᵀ, all 4H units
    lstm_cells(y, gates, c, tc, cp, t, off, r0, r1, 0, H, o, co)


@inline
def lstm_cells(y, gates, c, tc, cp, t, off, r0, r1, u0, u1, rg, rc):
    """The gates and the cell of step t for rows r0:r1 and units u0:u1, from the pre-activations in
    gates[t] (overwritten by the gates i, f, g, o): c_t = f ⊙ c_prev + i ⊙ g, tanh(c_t), and
    h_t = o ⊙ tanh(c_t) into y's columns off + u0 : off + u1. cp: c_prev (B, H). Sequence b's
    rows of gates, c and tc are b + rg, of cp b + rc (:func:`gap_segment`); of y, b.

    One simple loop per quantity, so that each vectorises, each from 0 over a view: an index like
    2H + o, of unknown sign to the compiler, keeps the negative-index check in the loop, which
    then stays scalar (docs/performance.md)."""
    H = gates.shape[2] // 4
    n = u1 - u0
    for b in range(r0, r1):
        ab = gates[t, b + rg]
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
        cpb = cp[b + rc, u0:u1]
        cb = c[t, b + rg, u0:u1]
        tcb = tc[t, b + rg, u0:u1]
        yb = y[t, b, off + u0:off + u1]
        for o in range(n):                      # c_t = f ⊙ c_prev + i ⊙ g
            cb[o] = af[o] * cpb[o] + ai[o] * ag[o]
        for o in range(n):
            tcb[o] = tanh(cb[o])
        for o in range(n):                      # h_t = o ⊙ tanh(c_t)
            yb[o] = ao[o] * tcb[o]


@inline
def lstm_gate_grads(dat, dh, dc, dy, gates, tc, cp, t, off, r0, r1, u0, u1, rg, rc):
    """da_t of step t into dat (B, 4H) for rows r0:r1 and units u0:u1 (the formulas of
    :func:`lstm_backward`) from the carried dh, dc; then dc ⊙= f there, and dh ← 0 there (the
    product adds da_t·W_hh into it). cp: c_prev (B, H). Sequence b's rows of gates and tc are
    b + rg, of cp b + rc (:func:`gap_segment`); of dat, dh, dc and dy, b. Row views from 0, so
    that the loops vectorise."""
    H = gates.shape[2] // 4
    n = u1 - u0
    one = gates.dtype.type(1.0)   # in the arrays' dtype (a 1.0 would make it float64)
    for b in range(r0, r1):
        gb = gates[t, b + rg]
        dab = dat[b]
        gi, gf, gg, go = gb[u0:u1], gb[H + u0:H + u1], gb[2 * H + u0:2 * H + u1], gb[3 * H + u0:3 * H + u1]
        dai, daf = dab[u0:u1], dab[H + u0:H + u1]
        dag, dao = dab[2 * H + u0:2 * H + u1], dab[3 * H + u0:3 * H + u1]
        tcb = tc[t, b + rg, u0:u1]
        dyb = dy[t, b, off + u0:off + u1]
        cpb = cp[b + rc, u0:u1]
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
# When W_ih fits in half a core's L2 (FUSE_BYTES), the input projection of a step is computed
# inside the sweep, just before its recurrent product, by the thread that owns the rows (and
# dx_t = da_t·W_ih just after the backward step's product): the (T, B, 4H) gates and da are then
# not written by one pass and read again by another, and the small products run with the sweep's
# chunks instead of a parallel region of their own. What it costs is a pass over W_ih by every
# core at every step, cheap while W_ih stays in the core's L2; W_hh is streamed by the sweep
# either way. Each output is the same fma chain as in input_forward / input_backward (b_ih, then
# x_t·W_ihᵀ over i in order; dx from its value over u in order), so the bits are the same.
#
# Whole layer step, fused against not, A/B in one process (Zen 3, avx2, 2 threads, 512 KB L2):
# (B, T, I, H) = (50, 50, 65, 128), W_ih 133 KB: 23.3 -> 21.7 ms; (50, 50, 64, 256), 256 KB (the
# char-LM's, W_hh 1 MB): 62.7 -> 59.9; (16, 50, 65, 128): 6.71 -> 6.61; but W_ih past the L2:
# (50, 50, 128, 384), 768 KB: 127.5 -> 126.0; (32, 25, 256, 512), 2 MB: 79.2 -> 86.1;
# (64, 100, 512, 512), 4 MB: 791 -> 872. (Zen 4, 1 MB L2: `char` 4-5 % faster, the char-LM's
# LSTM unchanged.) Until then the rule was W_ih and W_hh together in half the L2.

FUSE_BYTES = L2_BYTES // 2


def fused(W_ih, W_hh, B):
    """Whether a sweep of B sequences over W_hh takes its input projection and dx with it (see
    above): W_ih in half a core's L2, and the sweep split by sequences (not by units,
    :func:`bptt.kernels.rnn.wide`, which has no fused form)."""
    return W_ih.nbytes <= FUSE_BYTES and not wide(W_hh, B)


@composite
def lstm_forward_fused(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse, x, W_ih, b_ih, gap=0):
    """``input_forward`` (gates = W_ih·x_t + b_ih) and then :func:`lstm_forward`, step by step in
    one sweep: the arguments of :func:`lstm_forward`, then x (T, B, I) the layer's input, W_ih
    (4H, I) and b_ih (4H,); ``gates`` is written only (its input values are not read).

    ``gap``: gates, c and tc hold ``gap`` unused rows after the first half of the batch
    (:func:`gap_rows`, :func:`gap_segment`), so that the two halves' rows, written at the same
    time by the two threads, lie apart in memory. B is then x.shape[1], gates.shape[1] is B + gap."""
    _lstm_forward_rows_fused(sweep_chunks(x.shape[1]), y, gates, c, tc, h0, c0, b_hh, off, reverse, x, b_ih,
                             gap, panels_T(W_ih, "fused_W_ih_T"), W_hh)


@jobs(last=LAST_PANELS_T)
def _lstm_forward_rows_fused(ch, nch, y, gates, c, tc, h0, c0, b_hh, off, reverse, x, b_ih, gap, P_ih, P):
    """Chunk ch of :func:`lstm_forward_fused`'s sequences, every step, in at most two segments
    (:func:`gap_segment`); P_ih: W_ihᵀ (I, 4H) and P: W_hhᵀ (H, 4H) in panels."""
    T, B, G4 = x.shape[0], x.shape[1], gates.shape[2]
    r0, r1 = chunk_rows(ch, nch, B)
    for s in range(T):
        t = T - 1 - s if reverse else s
        a = gates[t]
        for q in range(2):
            q0, q1, o = gap_segment(q, r0, r1, B, gap)
            if q1 > q0:
                fill_rows(a, b_ih, q0 + o, q1 + o, 0, G4)
                step_product(a[o:], x[t], P_ih, q0, q1, G4, x.shape[2])
                lstm_forward_step(s, y, gates, c, tc, h0, c0, b_hh, off, reverse, P, q0, q1, o)


# The two halves of the batch apart. The fused sweeps run each half of the batch on its own core,
# and at every step both cores write their rows of gates[t], c[t] and tc[t] at once; side by
# side, the rows where the halves meet are a cache line's hand-off away from each other. In the
# machine's slow spells (the hand-off 310-350 ns instead of 60-66) a copy of the forward sweep,
# B = 50, H = 256 on two threads, took 11.6-12.8 ms with the halves side by side and 10.1-11.6
# with 16 rows between them (10.0-10.2 and 9.7-9.9 in quiet minutes; bench/sweep_gap.py,
# docs/performance.md, twenty-sixth session). The rows of h (y) stay as they are: the passes
# around the sweep read y as one (T·B, H) matrix, and the gap in gates, c and tc alone did as well.

GAP_BYTES = 16 << 10   # of a row of c between the halves


def gap_rows(H, itemsize):
    """The rows between the two halves of the batch in gates, c and tc (:func:`lstm_forward_fused`):
    ``GAP_BYTES`` of c's rows (16 rows at H = 256 float32)."""
    return -(-GAP_BYTES // (H * itemsize))


@inline
def gap_segment(q, r0, r1, B, gap):
    """(q0, q1, o): segment q (0 or 1) of rows r0:r1 of a batch of B whose rows of gates, c and tc
    hold ``gap`` unused rows after the first half (:func:`bptt.kernels.rnn.batch_half`; the rows
    of the second half are b + gap there): the rows in the first half (o = 0), then those in the
    second (o = gap). Without a gap, one
    segment. On two threads each chunk is one half, so one segment; on one thread, two. Rows cut
    into segments are the same sums in the same order: the same bits."""
    if gap == 0:
        return (r0, r1, 0) if q == 0 else (r1, r1, 0)
    h = batch_half(B, 2, 0)[1]
    if q == 0:
        return r0, min(r1, h), 0
    return max(r0, h), r1, gap


@composite
def lstm_backward_fused(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse, dx, W_ih,
                        in_panels=False, gap=0):
    """:func:`lstm_backward` and then ``input_backward`` (dx_t += da_t·W_ih), step by step in one
    sweep: the arguments of :func:`lstm_backward`, then dx (T, B, I) accumulated and W_ih (4H, I).

    ``in_panels`` (where :func:`bptt.kernels.rnn.gates_in_panels` holds): each da_t is computed in
    a one-step buffer (rows an odd number of cache lines apart, so never copied apart for its
    products) and put straight into the weight-gradient pass's panels
    (:func:`bptt.kernels.rnn.gate_panels`), while it is in cache, for
    ``weight_grads_shared(..., filled=True)``; da itself is not written. That pass then neither
    reads nor copies da (10 MB of memory traffic at the char-LM's shape). The same numbers in the
    same places: the same bits. ``gap``: as in :func:`lstm_forward_fused` (B is dy.shape[1])."""
    T, B, G4 = gates.shape[0], dy.shape[1], gates.shape[2]
    if in_panels:
        Gs, per_job = gate_panels(T, B, G4, da.dtype)
        ld = apart_stride(G4, da.itemsize)
        dstep = scratch("fused_da_step", B * ld, da.dtype).reshape((B, ld))
    else:
        Gs, per_job, dstep = da[0, 0, :0], 0, da[0]
    _lstm_backward_rows_fused(sweep_chunks(B), da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc,
                              c0, off, reverse, dx, Gs, per_job, dstep, gap,
                              panels(W_ih, 0, W_ih.shape[1], "fused_W_ih"), W_hh)


@jobs(last=LAST_PANELS)
def _lstm_backward_rows_fused(ch, nch, da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, off, reverse, dx,
                              Gs, per_job, dstep, gap, P_ih, P):
    """Chunk ch of :func:`lstm_backward_fused`'s sequences, every step, in at most two segments
    (:func:`gap_segment`); P_ih: W_ih (4H, I) and P: W_hh (4H, H) in panels. per_job > 0: da_t in
    dstep (B, ≥ 4H), then into the panels Gs."""
    T, B, G4 = gates.shape[0], dy.shape[1], gates.shape[2]
    r0, r1 = chunk_rows(ch, nch, B)
    copy_rows(dh, dh_n, r0, r1)
    copy_rows(dc, dc_n, r0, r1)
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if reverse else s
        dat = dstep if per_job > 0 else da[t]
        for q in range(2):
            q0, q1, o = gap_segment(q, r0, r1, B, gap)
            if q1 > q0:
                lstm_backward_step(s, dat, dh, dc, dy, gates, c, tc, c0, off, reverse, P, q0, q1, o)
                step_product(dx[t], dat, P_ih, q0, q1, dx.shape[2], G4)
                if per_job > 0:
                    rows_into_gate_panels(Gs, per_job, dat, da, t, q0, q1)
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
    """Job j of :func:`lstm_forward_pipelined`: first the packings
    (:func:`bptt.kernels.rnn.pipe_pack`), then 0 the sweep, 1 the projection ahead of it
    (:func:`bptt.kernels.rnn.pipe_project`), then the packing of W_hh for the backward
    (flags[-1]: whichever job gets to it)."""
    T, B = gates.shape[0], gates.shape[1]
    pipe_pack(flags, j, P, W_hh, Q, W_ih)   # W_hhᵀ (job 0) and W_ihᵀ (whichever claims it)
    # job 0: every step, projecting (or waiting for) each chunk first; job 1: every chunk. One
    # call site of pipe_project: each is compiled again
    for i in range(T if j == 0 else pipe_chunks(T)):
        if j == 1 or i % PIPE_STEPS == 0:
            pipe_project(flags, gates, x, W_ih, b_ih, Q, i if j == 1 else i // PIPE_STEPS, reverse, j == 0)
        if j == 0:
            lstm_forward_step(i, y, gates, c, tc, h0, c0, b_hh, off, reverse, P, 0, B, 0)
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
    r0, r1 = chunk_rows(ch, nch, B)
    copy_rows(dh, dh_n, r0, r1)   # the carried gradients start from the final state's
    copy_rows(dc, dc_n, r0, r1)
    for s in range(T - 1, -1, -1):
        lstm_backward_step(s, da[T - 1 - s if reverse else s], dh, dc, dy, gates, c, tc, c0, off, reverse, P, r0, r1, 0)
    add_rows(dh0, dh, r0, r1)   # what reaches the first step is ∂L/∂h0, ∂L/∂c0
    add_rows(dc0, dc, r0, r1)


@inline
def lstm_backward_step(s, dat, dh, dc, dy, gates, c, tc, c0, off, reverse, P, r0, r1, o):
    """Step s (in processing order) of :func:`lstm_backward`'s sweep, rows r0:r1: da_t (into dat,
    (B, 4H)) from the carried dh, dc, then dc ⊙= f and dh = da_t·W_hh (P: W_hh (4H, H) in panels).
    Sequence b's rows of gates, c and tc are b + o (:func:`gap_segment`)."""
    T, G4 = gates.shape[0], gates.shape[2]
    H = G4 // 4
    t = T - 1 - s if reverse else s
    cp = c0 if s == 0 else c[t + 1 if reverse else t - 1]   # c_prev
    co = 0 if s == 0 else o
    lstm_gate_grads(dat, dh, dc, dy, gates, tc, cp, t, off, r0, r1, 0, H, o, co)
    step_product(dh, dat, P, r0, r1, H, G4)   # dh = da_t·W_hh, carried to the earlier step


@composite
def lstm_backward_pipelined(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse,
                            x, y, h0, W_ih, dW_ih, db_ih, dW_hh, db_hh, dx, P_hh, packed, clear=False):
    """:func:`lstm_backward`, then every pass after it (``input_backward_params``,
    ``recurrent_backward_params``, ``input_backward``), for a small batch: the sweep and the passes
    run side by side on two threads (:mod:`bptt.kernels.rnn`, "small batches"; in order on one).

    The arguments of :func:`lstm_backward`, then x (T, B, I) the layer's input, y (T, B, D·H) its
    output, h0 (B, H), W_ih (4H, I), the gradients dW_ih, db_ih, dW_hh, db_hh (accumulated) and
    dx (T, B, I) (accumulated), P_hh: W_hh in panels (``new_panels(H, 4H)``), packed here unless
    ``packed`` (by :func:`lstm_forward_pipelined`, from the same W_hh). With ``clear`` the four
    weight gradients are set rather than added to (each cleared by the piece that first writes
    it, :func:`bptt.kernels.rnn.pipe_passes`: the same bits as zeros then the sums)."""
    T, B, G4 = gates.shape
    flags, Xh = pipe_buffers(T, B, G4 // 4, gates.dtype)
    _lstm_backward_pipe(2, da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, off, reverse, W_hh, P_hh,
                        x, y, h0, W_ih, dW_ih, db_ih, dW_hh, db_hh, dx, flags, Xh, packed, clear)


@jobs(concurrent=True)
def _lstm_backward_pipe(j, njobs, da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, off, reverse, W_hh, P,
                        x, y, h0, W_ih, dW_ih, db_ih, dW_hh, db_hh, dx, flags, Xh, packed, clear):
    """Job j of :func:`lstm_backward_pipelined`: 0 the sweep (publishing each step in flags[0]),
    then its share of the passes; 1 its share of the passes, following the sweep
    (:func:`bptt.kernels.rnn.pipe_passes`)."""
    T, B = gates.shape[0], gates.shape[1]
    if j == 0:
        if not packed:
            pack_all_into(P, W_hh)
        copy_rows(dh, dh_n, 0, B)
        copy_rows(dc, dc_n, 0, B)
        for s in range(T - 1, -1, -1):
            lstm_backward_step(s, da[T - 1 - s if reverse else s], dh, dc, dy, gates, c, tc, c0, off, reverse, P, 0, B, 0)
            atomic_store(flags, 0, T - s)
        add_rows(dh0, dh, 0, B)
        add_rows(dc0, dc, 0, B)
    pipe_passes(j, flags, dx, da, da, W_ih, x, y, h0, off, reverse, dW_ih, db_ih, dW_hh, db_hh, Xh, clear)


# -- large W_hh: the sweeps split by hidden units (bptt.kernels.rnn, "large W_hh") ----------------

def lstm_forward_wide(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse, parts=None):
    """:func:`lstm_forward` split by hidden units (:mod:`bptt.kernels.rnn`, "large W_hh"): W_hh's
    rows of each part and gate packed transposed, then one job per part (per thread), meeting at
    every step."""
    NP, P, flags = wide_packed_T(W_hh, gates.shape[0], parts)
    _lstm_forward_wide(NP, y, gates, c, tc, h0, c0, b_hh, off, reverse, P, flags)


@jobs
def _lstm_forward_wide(j, njobs, y, gates, c, tc, h0, c0, b_hh, off, reverse, P, flags):
    """Job j of :func:`lstm_forward_wide`: every step, the parts it claims
    (:func:`bptt.kernels.rnn.wide_step`)."""
    T, H = gates.shape[0], gates.shape[2] // 4
    NP = njobs
    for s in range(T):
        for k in range(NP):
            p = wide_step(flags, j, k, s, NP)
            if p >= 0:
                j0, j1 = wide_units(H, p, NP)
                lstm_forward_part(s, y, gates, c, tc, h0, c0, b_hh, off, reverse, P[p], j0, j1)
                wide_step_done(flags, s, p, NP)


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
    hp = apart(h0 if s == 0 else y[tp, :, off:off + H], B, H)   # read by four products
    cp = c0 if s == 0 else c[tp]
    a = gates[t]
    for g in range(4):
        ag = a[:, g * H + j0:g * H + j1]
        add_bias_rows(ag, b_hh[g * H + j0:g * H + j1], 0, B)   # (W_ih·x_t + b_ih) + b_hh
        step_product(ag, hp, Pp[g], 0, B, n, H)                 #   + h_prev·W_hhᵀ, these units
    lstm_cells(y, gates, c, tc, cp, t, off, 0, B, j0, j1, 0, 0)


def lstm_backward_wide(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse, parts=None):
    """:func:`lstm_backward` split by hidden units (as :func:`lstm_forward_wide`): W_hh's columns of each part packed,
    then one job per part (per thread), meeting twice a step (after the gate gradients, and after
    the products)."""
    NP, P, flags = wide_packed(W_hh, gates.shape[0], parts)
    np.copyto(dh, dh_n)
    np.copyto(dc, dc_n)
    _lstm_backward_wide(NP, da, dh, dc, dy, gates, c, tc, c0, off, reverse, P, flags)
    dh0 += dh
    dc0 += dc


@jobs
def _lstm_backward_wide(j, njobs, da, dh, dc, dy, gates, c, tc, c0, off, reverse, P, flags):
    """Job j of :func:`lstm_backward_wide`: at each step (from the last processed), the gate
    gradients of the parts it claims (:func:`bptt.kernels.rnn.wide_grads`), then their products
    (:func:`bptt.kernels.rnn.wide_products`)."""
    T, B, G4 = gates.shape
    H = G4 // 4
    NP = njobs
    for s in range(T - 1, -1, -1):
        for k in range(NP):
            p = wide_grads(flags, j, k, s, T, NP)
            if p >= 0:
                j0, j1 = wide_units(H, p, NP)
                lstm_backward_part(s, da, dh, dc, dy, gates, c, tc, c0, off, reverse, j0, j1)
                wide_grads_done(flags, s, T, p, NP)
        wide_products(flags, j, s, T, NP, dh, da[T - 1 - s if reverse else s], P, G4)   # dh += da_t·W_hh


@inline
def lstm_backward_part(s, da, dh, dc, dy, gates, c, tc, c0, off, reverse, j0, j1):
    """The gate gradients of step s of :func:`lstm_backward` for the units j0:j1, every sequence
    (:func:`lstm_backward_step`'s formulas on those columns; dh ← 0 there for the product)."""
    T, B = gates.shape[0], gates.shape[1]
    t = T - 1 - s if reverse else s
    cp = c0 if s == 0 else c[t + 1 if reverse else t - 1]
    lstm_gate_grads(da[t], dh, dc, dy, gates, tc, cp, t, off, 0, B, j0, j1, 0, 0)
