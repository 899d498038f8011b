"""GRU cell over a whole sequence, gate order r, z, n and torch's formula for n.

Shapes: T time steps, B batch, H hidden units, G = 3 gates, D directions (1 or 2).
Layout, direction (``reverse``) and output columns (``off``) are as in :mod:`bptt.kernels.rnn`.

    [x_r, x_z, x_n] = W_ih·x_t + b_ih           [m_r, m_z, m_n] = W_hh·h_prev + b_hh
    r = σ(x_r + m_r)    z = σ(x_z + m_z)    n = tanh(x_n + r ⊙ m_n)
    h_t = (1 - z) ⊙ n + z ⊙ h_prev

Because r multiplies m_n = W_hn·h_prev + b_hn, the pre-activation gradients differ on the two
sides for the n block, so backward keeps both: dgx = ∂L/∂[x_r, x_z, x_n] for W_ih, b_ih and dx,
and dgh = ∂L/∂[m_r, m_z, m_n] for W_hh and b_hh (equal to dgx on the r and z blocks).

The sweeps split the batch's sequences between the threads, or, when W_hh does not fit in a
core's L2 (and the batch is small, or W_hh is past a share of the L3), the hidden units, as the
LSTM's do (:func:`gru_forward_wide`; :mod:`bptt.kernels.rnn`, "large W_hh"). The same sums in the
same order either way: the same bits.
Reference twins: :mod:`bptt.reference.gru` (same names and signatures, plain NumPy).
"""

import numpy as np

from ..jit import composite, inline, jobs
from .activations import sigmoid, tanh
from .engine import (add_rows, apart, chunk_rows, copy_bias_rows, copy_rows, LAST_PANELS, LAST_PANELS_T,
                     step_product, sweep_chunks)
from .rnn import (wide, wide_grads, wide_grads_done, wide_packed, wide_packed_T, wide_products, wide_step,
                  wide_step_done, wide_units)


@composite
def gru_forward(y, gates, mn, m, h0, W_hh, b_hh, off, reverse):
    """Forward over the sequence, keeping r, z, n and m_n of every step for backward.

    y : (T, B, D·H) output; writes y[t, :, off:off+H] = h_t.
    gates : (T, B, 3H) in: the input projection W_ih·x_t + b_ih; out: [r, z, n] of every step.
    mn : (T, B, H) out: m_n = W_hn·h_prev + b_hn of every step.
    m : (B, 3H) workspace: m = W_hh·h_prev + b_hh of the current step.
    h0 : (B, H) initial state.  W_hh : (3H, H).  b_hh : (3H,).
    off : int column offset of this direction in y.  reverse : bool.
    Blocked and parallel as described in :mod:`bptt.kernels.rnn`; with a large W_hh (and a small
    batch, or W_hh past a share of the L3: :func:`bptt.kernels.rnn.wide`) the jobs split the hidden
    units between the threads instead of the sequences (:func:`gru_forward_wide`). The same sums
    either way (the same bits).
    """
    if wide(W_hh, gates.shape[1]):
        gru_forward_wide(y, gates, mn, m, h0, W_hh, b_hh, off, reverse)
        return
    _gru_forward_rows(sweep_chunks(gates.shape[1]), y, gates, mn, m, h0, b_hh, off, reverse, W_hh)


@jobs(last=LAST_PANELS_T)
def _gru_forward_rows(ch, nch, y, gates, mn, m, h0, b_hh, off, reverse, P):
    """Chunk ch of :func:`gru_forward`'s sequences, every step; P: W_hhᵀ (H, 3H) in panels."""
    T, B, G3 = gates.shape
    H = G3 // 3
    r0, r1 = chunk_rows(ch, nch, B)
    for s in range(T):
        t = T - 1 - s if reverse else s
        hp = h0 if s == 0 else y[t + 1 if reverse else t - 1, :, off:off + H]   # h_prev
        copy_bias_rows(m, b_hh, r0, r1)         # m = b_hh
        step_product(m, hp, P, r0, r1, G3, H)   #   + h_prev·W_hhᵀ
        gru_cells(y, gates, mn, m, hp, t, off, r0, r1, 0, H)


@inline
def gru_cells(y, gates, mn, m, hp, t, off, r0, r1, j0, j1):
    """The gates and the new state of step t for rows r0:r1 and units j0:j1, from m = W_hh·h_prev +
    b_hh (those units' columns of each gate) and hp = h_prev:

        r = σ(x_r + m_r)   z = σ(x_z + m_z)   n = tanh(x_n + r ⊙ m_n)   h_t = (1 - z) ⊙ n + z ⊙ h_prev

    gates[t] holds x_r, x_z, x_n on entry and r, z, n on exit; mn[t] gets m_n. One simple loop per
    quantity over row views, so that each vectorises, in the arrays' dtype."""
    H = gates.shape[2] // 3
    n = j1 - j0
    one = gates.dtype.type(1.0)
    for b in range(r0, r1):
        gb = gates[t, b]
        gr, gz, gn = gb[j0:j1], gb[H + j0:H + j1], gb[2 * H + j0:2 * H + j1]
        mb = m[b]
        mr, mz, mbn = mb[j0:j1], mb[H + j0:H + j1], mb[2 * H + j0:2 * H + j1]
        mnb = mn[t, b, j0:j1]
        hpb = hp[b, j0:j1]
        yb = y[t, b, off + j0:off + j1]
        for o in range(n):                      # r
            gr[o] = sigmoid(gr[o] + mr[o])
        for o in range(n):                      # z
            gz[o] = sigmoid(gz[o] + mz[o])
        for o in range(n):
            mnb[o] = mbn[o]
        for o in range(n):                      # n = tanh(x_n + r ⊙ m_n)
            gn[o] = tanh(gn[o] + gr[o] * mnb[o])
        for o in range(n):                      # h_t = (1 - z) ⊙ n + z ⊙ h_prev
            z = gz[o]
            yb[o] = (one - z) * gn[o] + z * hpb[o]


@composite
def gru_backward(dgx, dgh, dh0, dh, dy, dh_n, gates, mn, y, h0, W_hh, off, reverse):
    """Backward sweep through time (BPTT), from the last processed step to the first.

    With dh the gradient carried from the later step (dh_n at the start):
        dh_t = dy_t + dh
        da_n = dh_t ⊙ (1 - z) ⊙ (1 - n²)                  (∂L/∂(x_n + r ⊙ m_n))
        dx_n = da_n        dm_n = da_n ⊙ r
        dx_r = dm_r = da_n ⊙ m_n ⊙ r(1 - r)
        dx_z = dm_z = dh_t ⊙ (h_prev - n) ⊙ z(1 - z)
        dh   = dh_t ⊙ z + dm·W_hh                         (carried to the earlier step)
    and at the end dh0 += dh.

    dgx : (T, B, 3H) written: ∂L/∂[x_r, x_z, x_n] for every step.
    dgh : (T, B, 3H) written: ∂L/∂[m_r, m_z, m_n] for every step.
    dh0 : (B, H) accumulated.  dh : (B, H) workspace (the carried gradient).
    dy : (T, B, D·H) ∂L/∂y; this direction reads columns off:off+H.  dh_n : (B, H).
    gates, mn, y : from :func:`gru_forward`.  h0 : (B, H).  W_hh : (3H, H).
    off, reverse : as in :func:`gru_forward`.
    Split by hidden units as :func:`gru_forward` (:func:`gru_backward_wide`).
    """
    if wide(W_hh, gates.shape[1]):
        gru_backward_wide(dgx, dgh, dh0, dh, dy, dh_n, gates, mn, y, h0, W_hh, off, reverse)
        return
    _gru_backward_rows(sweep_chunks(gates.shape[1]), dgx, dgh, dh0, dh, dy, dh_n, gates, mn, y, h0, off,
                       reverse, W_hh)


@jobs(last=LAST_PANELS)
def _gru_backward_rows(ch, nch, dgx, dgh, dh0, dh, dy, dh_n, gates, mn, y, h0, off, reverse, P):
    """Chunk ch of :func:`gru_backward`'s sequences, every step; P: W_hh (3H, H) in panels."""
    T, B, G3 = gates.shape
    H = G3 // 3
    r0, r1 = chunk_rows(ch, nch, B)
    copy_rows(dh, dh_n, r0, r1)   # the carried gradient starts from ∂L/∂h_n
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if reverse else s
        hp = h0 if s == 0 else y[t + 1 if reverse else t - 1, :, off:off + H]
        gru_gate_grads(dgx, dgh, dh, dy, gates, mn, hp, t, off, r0, r1, 0, H)
        step_product(dh, dgh[t], P, r0, r1, H, G3)  # dh += dm_t·W_hh
    add_rows(dh0, dh, r0, r1)   # what reaches the first step is ∂L/∂h0


@inline
def gru_gate_grads(dgx, dgh, dh, dy, gates, mn, hp, t, off, r0, r1, j0, j1):
    """The gate gradients of step t for rows r0:r1 and units j0:j1 (:func:`gru_backward`'s formulas),
    with dh the gradient carried from the later step: writes those units' columns of dgx[t] and
    dgh[t], and leaves dh = dh_t ⊙ z there (the direct path h_prev -> h_t; the product dm·W_hh
    is added after). In the arrays' dtype (a 1.0 would make it float64)."""
    H = gates.shape[2] // 3
    one = gates.dtype.type(1.0)
    for b in range(r0, r1):       # row views, so that the loop vectorises
        gb = gates[t, b]
        gr, gz, gn = gb[j0:j1], gb[H + j0:H + j1], gb[2 * H + j0:2 * H + j1]
        dgxb = dgx[t, b]
        dxr, dxz, dxn = dgxb[j0:j1], dgxb[H + j0:H + j1], dgxb[2 * H + j0:2 * H + j1]
        dghb = dgh[t, b]
        dmr, dmz, dmn = dghb[j0:j1], dghb[H + j0:H + j1], dghb[2 * H + j0:2 * H + j1]
        mnb = mn[t, b, j0:j1]
        dyb = dy[t, b, off + j0:off + j1]
        hpb = hp[b, j0:j1]
        dhb = dh[b, j0:j1]
        for o in range(j1 - j0):
            r = gr[o]
            z = gz[o]
            n = gn[o]
            dht = dyb[o] + dhb[o]
            dan = dht * (one - z) * (one - n * n)
            dar = dan * mnb[o] * r * (one - r)
            daz = dht * (hpb[o] - n) * z * (one - z)
            dxr[o] = dar
            dxz[o] = daz
            dxn[o] = dan
            dmr[o] = dar
            dmz[o] = daz
            dmn[o] = dan * r
            dhb[o] = dht * z


# -- large W_hh: the sweeps split by hidden units (bptt.kernels.rnn, "large W_hh") ----------------

def gru_forward_wide(y, gates, mn, m, h0, W_hh, b_hh, off, reverse, parts=None):
    """:func:`gru_forward` split by hidden units: each part's rows of W_hh, gate by gate, packed
    transposed, then one job per part (per thread), meeting at every step."""
    NP, P, flags = wide_packed_T(W_hh, gates.shape[0], parts)
    _gru_forward_wide(NP, y, gates, mn, m, h0, b_hh, off, reverse, P, flags)


@jobs
def _gru_forward_wide(j, njobs, y, gates, mn, m, h0, b_hh, off, reverse, P, flags):
    """Job j of :func:`gru_forward_wide`: every step, the parts it claims
    (:func:`bptt.kernels.rnn.wide_step`)."""
    T, B, G3 = gates.shape
    H = G3 // 3
    NP = njobs
    for s in range(T):
        for k in range(NP):
            p = wide_step(flags, j, k, s, NP)
            if p >= 0:
                j0, j1 = wide_units(H, p, NP)
                t = T - 1 - s if reverse else s
                hp = apart(h0 if s == 0 else y[t + 1 if reverse else t - 1, :, off:off + H], B, H)
                for g in range(3):   # m = b_hh + h_prev·W_hhᵀ on these units' columns of each gate
                    mg = m[:, g * H + j0:g * H + j1]
                    copy_bias_rows(mg, b_hh[g * H + j0:g * H + j1], 0, B)
                    step_product(mg, hp, P[p, g], 0, B, j1 - j0, H)
                gru_cells(y, gates, mn, m, hp, t, off, 0, B, j0, j1)
                wide_step_done(flags, s, p, NP)


def gru_backward_wide(dgx, dgh, dh0, dh, dy, dh_n, gates, mn, y, h0, W_hh, off, reverse, parts=None):
    """:func:`gru_backward` split by hidden units: each part's columns of W_hh packed, then one
    job per part (per thread), meeting twice a step (after the gate gradients, and after the
    products)."""
    NP, P, flags = wide_packed(W_hh, gates.shape[0], parts)
    np.copyto(dh, dh_n)
    _gru_backward_wide(NP, dgx, dgh, dh, dy, gates, mn, y, h0, off, reverse, P, flags)
    dh0 += dh


@jobs
def _gru_backward_wide(j, njobs, dgx, dgh, dh, dy, gates, mn, y, h0, off, reverse, P, flags):
    """Job j of :func:`gru_backward_wide`: at each step (from the last processed), the gate
    gradients of the parts it claims (:func:`bptt.kernels.rnn.wide_grads`), then their products
    (:func:`bptt.kernels.rnn.wide_products`)."""
    T, B, G3 = gates.shape
    H = G3 // 3
    NP = njobs
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if reverse else s
        for k in range(NP):
            p = wide_grads(flags, j, k, s, T, NP)
            if p >= 0:
                j0, j1 = wide_units(H, p, NP)
                hp = h0 if s == 0 else y[t + 1 if reverse else t - 1, :, off:off + H]
                gru_gate_grads(dgx, dgh, dh, dy, gates, mn, hp, t, off, 0, B, j0, j1)
                wide_grads_done(flags, s, T, p, NP)
        wide_products(flags, j, s, T, NP, dh, dgh[t], P, G3)   # dh += dm_t·W_hh
