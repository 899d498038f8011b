"""GRU cell over a whole sequence, gate order r, z, n and torch's formula for n.

Shapes: T time steps, B batch, H hidden units, G = 3 gates, D directions (1 or 2).
Layout, direction (``reverse``) and output columns (``off``) are as in :mod:`bptt.kernels.rnn`.

    [x_r, x_z, x_n] = W_ih·x_t + b_ih           [m_r, m_z, m_n] = W_hh·h_prev + b_hh
    r = σ(x_r + m_r)    z = σ(x_z + m_z)    n = tanh(x_n + r ⊙ m_n)
    h_t = (1 - z) ⊙ n + z ⊙ h_prev

Because r multiplies m_n = W_hn·h_prev + b_hn, the pre-activation gradients differ on the two
sides for the n block, so backward keeps both: dgx = ∂L/∂[x_r, x_z, x_n] for W_ih, b_ih and dx,
and dgh = ∂L/∂[m_r, m_z, m_n] for W_hh and b_hh (equal to dgx on the r and z blocks).
Reference twins: :mod:`bptt.reference.gru` (same names and signatures, plain NumPy).
"""

from ..jit import composite, jobs
from .activations import sigmoid, tanh
from .engine import (add_rows, chunk_rows, copy_bias_rows, copy_rows, LAST_PANELS, LAST_PANELS_T, row_chunks,
                     step_product, sweep_chunks)


@composite
def gru_forward(y, gates, mn, m, h0, W_hh, b_hh, off, reverse):
    """Forward over the sequence, keeping r, z, n and m_n of every step for backward.

    y : (T, B, D·H) output; writes y[t, :, off:off+H] = h_t.
    gates : (T, B, 3H) in: the input projection W_ih·x_t + b_ih; out: [r, z, n] of every step.
    mn : (T, B, H) out: m_n = W_hn·h_prev + b_hn of every step.
    m : (B, 3H) workspace: m = W_hh·h_prev + b_hh of the current step.
    h0 : (B, H) initial state.  W_hh : (3H, H).  b_hh : (3H,).
    off : int column offset of this direction in y.  reverse : bool.
    Blocked and parallel as described in :mod:`bptt.kernels.rnn`.
    """
    _gru_forward_rows(sweep_chunks(gates.shape[1]), y, gates, mn, m, h0, b_hh, off, reverse, W_hh)


@jobs(last=LAST_PANELS_T)
def _gru_forward_rows(ch, nch, y, gates, mn, m, h0, b_hh, off, reverse, P):
    """Chunk ch of :func:`gru_forward`'s sequences, every step; P: W_hhᵀ (H, 3H) in panels."""
    T, B, G3 = gates.shape
    H = G3 // 3
    one = gates.dtype.type(1.0)
    nch, rc = row_chunks(B)
    r0, r1 = chunk_rows(ch, nch, rc, B)
    for s in range(T):
        t = T - 1 - s if reverse else s
        hp = h0 if s == 0 else y[t + 1 if reverse else t - 1, :, off:off + H]   # h_prev
        copy_bias_rows(m, b_hh, r0, r1)         # m = b_hh
        step_product(m, hp, P, r0, r1, G3, H)   #   + h_prev·W_hhᵀ
        # the gates and the new state, one simple loop per quantity so that each vectorises;
        # each loop runs from 0 over a view (see lstm_forward), in the arrays' dtype
        for b in range(r0, r1):
            gb = gates[t, b]
            gr, gz, gn = gb[0:H], gb[H:2 * H], gb[2 * H:G3]
            mb = m[b]
            mbn = mb[2 * H:G3]
            mnb = mn[t, b]
            hpb = hp[b]
            yb = y[t, b, off:off + H]
            for u in range(2 * H):                  # r, z
                gb[u] = sigmoid(gb[u] + mb[u])
            for o in range(H):
                mnb[o] = mbn[o]
            for o in range(H):                      # n = tanh(x_n + r ⊙ m_n)
                gn[o] = tanh(gn[o] + gr[o] * mnb[o])
            for o in range(H):                      # h_t = (1 - z) ⊙ n + z ⊙ h_prev
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
    """
    _gru_backward_rows(sweep_chunks(gates.shape[1]), dgx, dgh, dh0, dh, dy, dh_n, gates, mn, y, h0, off,
                       reverse, W_hh)


@jobs(last=LAST_PANELS)
def _gru_backward_rows(ch, nch, dgx, dgh, dh0, dh, dy, dh_n, gates, mn, y, h0, off, reverse, P):
    """Chunk ch of :func:`gru_backward`'s sequences, every step; P: W_hh (3H, H) in panels."""
    T, B, G3 = gates.shape
    H = G3 // 3
    one = gates.dtype.type(1.0)
    nch, rc = row_chunks(B)
    r0, r1 = chunk_rows(ch, nch, rc, B)
    copy_rows(dh, dh_n, r0, r1)   # the carried gradient starts from ∂L/∂h_n
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if reverse else s
        hp = h0 if s == 0 else y[t + 1 if reverse else t - 1, :, off:off + H]
        for b in range(r0, r1):       # row views, so that the loop vectorises
            gb = gates[t, b]
            gr, gz, gn = gb[0:H], gb[H:2 * H], gb[2 * H:G3]
            dgxb = dgx[t, b]
            dxr, dxz, dxn = dgxb[0:H], dgxb[H:2 * H], dgxb[2 * H:G3]
            dghb = dgh[t, b]
            dmr, dmz, dmn = dghb[0:H], dghb[H:2 * H], dghb[2 * H:G3]
            mnb = mn[t, b]
            dyb = dy[t, b, off:off + H]
            hpb = hp[b]
            dhb = dh[b]
            for o in range(H):          # in the arrays' dtype (a 1.0 would make it float64)
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
                dhb[o] = dht * z     # the direct path h_prev -> h_t
        step_product(dh, dgh[t], P, r0, r1, H, G3)  # dh += dm_t·W_hh
    add_rows(dh0, dh, r0, r1)   # what reaches the first step is ∂L/∂h0
