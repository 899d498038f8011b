"""The straightforward kernels bptt started from, kept as the reference for the blocked ones.

Each is one loop nest per equation, with every sum in a register in natural order: easy to read
and to trust, and slow. tests/test_kernels_vs_reference.py checks that the blocked kernels in
bptt.kernels compute the same thing. Serial builds only (they are references, not fast paths).
"""
import math

from bptt.jit import kernel
from bptt.kernels.activations import act, dact, sigmoid

prange = range

# ---- from bptt/kernels/dense.py ------------------------------------------------------------

@kernel(parallel=False)
def dense_forward(y, x, W, b):
    """y[n, o] = b[o] + Σ_i x[n, i] W[o, i].

    y : (N, O) output, x : (N, I), W : (O, I), b : (O,).
    """
    N, I = x.shape
    O = W.shape[0]
    for n in prange(N):
        for o in range(O):
            acc = b[o]
            for i in range(I):
                acc += x[n, i] * W[o, i]
            y[n, o] = acc


@kernel(parallel=False)
def dense_backward_input(dx, dy, W):
    """dx[n, i] += Σ_o dy[n, o] W[o, i]   (∂L/∂x = dy·W).

    dx : (N, I) accumulated, dy : (N, O), W : (O, I).
    """
    N, O = dy.shape
    I = W.shape[1]
    for n in prange(N):
        for o in range(O):
            g = dy[n, o]
            for i in range(I):
                dx[n, i] += g * W[o, i]


@kernel(parallel=False)
def dense_backward_params(dW, db, dy, x):
    """dW[o, i] += Σ_n dy[n, o] x[n, i],  db[o] += Σ_n dy[n, o]   (∂L/∂W = dyᵀ·x).

    dW : (O, I) accumulated, db : (O,) accumulated, dy : (N, O), x : (N, I).
    Parallel over output units o, so each dW row has one writer and a fixed summation order.
    """
    N, O = dy.shape
    I = x.shape[1]
    for o in prange(O):
        s = 0.0
        for n in range(N):
            g = dy[n, o]
            s += g
            for i in range(I):
                dW[o, i] += g * x[n, i]
        db[o] += s

# ---- from bptt/kernels/rnn.py ------------------------------------------------------------

@kernel(parallel=False)
def rnn_forward(y, q, h0, W_hh, b_hh, off, reverse, code):
    """Forward over the sequence: q_t += W_hh·h_prev + b_hh, h_t = f(q_t).

    y : (T, B, D·H) output; writes y[t, :, off:off+H] = h_t.
    q : (T, B, H) in: the input projection W_ih·x_t + b_ih; out: the pre-activation q_t (kept
        for backward).
    h0 : (B, H) initial state.  W_hh : (H, H).  b_hh : (H,).
    off : int column offset of this direction in y.  reverse : bool.  code : activation code.
    """
    T, B, H = q.shape
    for b in prange(B):  # sequences are independent: one parallel region, the time loop inside
        for s in range(T):
            t = T - 1 - s if reverse else s
            # h_prev: h0 at the first processed step, else the previous step's columns of y
            hp = h0 if s == 0 else y[t + 1 if reverse else t - 1]
            hoff = 0 if s == 0 else off
            for o in range(H):
                acc = q[t, b, o] + b_hh[o]
                for j in range(H):
                    acc += W_hh[o, j] * hp[b, hoff + j]
                q[t, b, o] = acc
                y[t, b, off + o] = act(acc, code)


@kernel(parallel=False)
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
    T, B, H = q.shape
    for b in prange(B):
        for o in range(H):
            dh[b, o] = dh_n[b, o]
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if reverse else s
            for o in range(H):
                g = dy[t, b, off + o] + dh[b, o]
                dq[t, b, o] = g * dact(q[t, b, o], y[t, b, off + o], code)
            for j in range(H):
                acc = 0.0
                for o in range(H):
                    acc += dq[t, b, o] * W_hh[o, j]
                dh[b, j] = acc
        for o in range(H):
            dh0[b, o] += dh[b, o]


@kernel(parallel=False)
def input_backward_params(dW_ih, db_ih, dg, x):
    """Input-side weight gradients in one pass over all N = T·B rows, for every cell:

        dW_ih[u, i] += Σ_n dg[n, u] · x[n, i]      db_ih[u] += Σ_n dg[n, u]

    dW_ih : (G·H, I) accumulated.  db_ih : (G·H,) accumulated.
    dg : (N, G·H) gate pre-activation gradients of every step, rows n = t·B + b.
    x : (N, I) the layer's input, rows as in dg.
    Parallel over the rows u; each sum runs over n in order, in a register.
    """
    N, GH = dg.shape
    I = x.shape[1]
    for u in prange(GH):
        sb = 0.0
        for n in range(N):
            sb += dg[n, u]
        db_ih[u] += sb
        for i in range(I):
            acc = 0.0
            for n in range(N):
                acc += dg[n, u] * x[n, i]
            dW_ih[u, i] += acc


@kernel(parallel=False)
def input_backward(dx, dg, W_ih):
    """dx[n, i] += Σ_u dg[n, u] · W_ih[u, i]   (∂L/∂x_t = dg_t·W_ih for every step at once).

    dx : (N, I) accumulated (both directions of a layer add into it).
    dg : (N, G·H) gate pre-activation gradients, rows n = t·B + b.  W_ih : (G·H, I).
    Parallel over the rows n.
    """
    N, GH = dg.shape
    I = W_ih.shape[1]
    for n in prange(N):
        for i in range(I):
            acc = 0.0
            for u in range(GH):
                acc += dg[n, u] * W_ih[u, i]
            dx[n, i] += acc


@kernel(parallel=False)
def recurrent_backward_params(dW_hh, db_hh, dgh, y, h0, off, reverse):
    """Recurrent weight gradients in one pass over all steps, for every cell:

        dW_hh[u, j] += Σ_t Σ_b dgh[t, b, u] · h_prev_t[b, j]      db_hh[u] += Σ_t Σ_b dgh[t, b, u]

    where h_prev_t is the state the step at time t read (h0 for the first processed step).

    dW_hh : (G·H, H) accumulated.  db_hh : (G·H,) accumulated.
    dgh : (T, B, G·H) ∂L/∂(W_hh·h_prev + b_hh) for every step (the gate pre-activation gradients;
          for the GRU's n gate the r ⊙ factor is already applied).
    y : (T, B, D·H) the layer output holding this direction's states in columns off:off+H.
    h0 : (B, H).  off, reverse : as in :func:`rnn_forward`.
    Parallel over the rows u; each sum runs over (t, b) in order, in a register.
    """
    T, B, GH = dgh.shape
    H = h0.shape[1]
    for u in prange(GH):
        sb = 0.0
        for t in range(T):
            for b in range(B):
                sb += dgh[t, b, u]
        db_hh[u] += sb
        for j in range(H):
            acc = 0.0
            for t in range(T):
                first = t == T - 1 if reverse else t == 0
                if first:
                    for b in range(B):
                        acc += dgh[t, b, u] * h0[b, j]
                else:
                    tp = t + 1 if reverse else t - 1
                    for b in range(B):
                        acc += dgh[t, b, u] * y[tp, b, off + j]
            dW_hh[u, j] += acc

# ---- from bptt/kernels/lstm.py ------------------------------------------------------------

@kernel(parallel=False)
def lstm_forward(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse):
    """Forward over the sequence, keeping every gate and cell state for backward.

    y : (T, B, D·H) output; writes y[t, :, off:off+H] = h_t.
    gates : (T, B, 4H) in: the input projection W_ih·x_t + b_ih; out: the gate activations
            [i, f, g, o] of every step.
    c : (T, B, H) out: cell states c_t.   tc : (T, B, H) out: tanh(c_t).
    h0, c0 : (B, H) initial state.  W_hh : (4H, H).  b_hh : (4H,).
    off : int column offset of this direction in y.  reverse : bool.
    """
    T, B, G4 = gates.shape
    H = G4 // 4
    for b in prange(B):  # sequences are independent: one parallel region, the time loop inside
        for s in range(T):
            t = T - 1 - s if reverse else s
            tp = t + 1 if reverse else t - 1
            hp = h0 if s == 0 else y[tp]     # h_prev, at columns hoff:hoff+H
            hoff = 0 if s == 0 else off
            cp = c0 if s == 0 else c[tp]     # c_prev
            # a = projection + b_hh + W_hh·h_prev for all 4H units, then the nonlinearities.
            for u in range(G4):
                acc = gates[t, b, u] + b_hh[u]
                for j in range(H):
                    acc += W_hh[u, j] * hp[b, hoff + j]
                gates[t, b, u] = acc
            for o in range(H):
                ig = sigmoid(gates[t, b, o])
                fg = sigmoid(gates[t, b, H + o])
                gg = math.tanh(gates[t, b, 2 * H + o])
                og = sigmoid(gates[t, b, 3 * H + o])
                gates[t, b, o] = ig
                gates[t, b, H + o] = fg
                gates[t, b, 2 * H + o] = gg
                gates[t, b, 3 * H + o] = og
                ct = fg * cp[b, o] + ig * gg
                c[t, b, o] = ct
                th = math.tanh(ct)
                tc[t, b, o] = th
                y[t, b, off + o] = og * th


@kernel(parallel=False)
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
    """
    T, B, G4 = gates.shape
    H = G4 // 4
    for b in prange(B):
        for o in range(H):
            dh[b, o] = dh_n[b, o]
            dc[b, o] = dc_n[b, o]
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if reverse else s
            cp = c0 if s == 0 else c[t + 1 if reverse else t - 1]   # c_prev
            for o in range(H):
                ig = gates[t, b, o]
                fg = gates[t, b, H + o]
                gg = gates[t, b, 2 * H + o]
                og = gates[t, b, 3 * H + o]
                th = tc[t, b, o]
                dht = dy[t, b, off + o] + dh[b, o]
                dct = dc[b, o] + dht * og * (1.0 - th * th)
                da[t, b, o] = dct * gg * ig * (1.0 - ig)
                da[t, b, H + o] = dct * cp[b, o] * fg * (1.0 - fg)
                da[t, b, 2 * H + o] = dct * ig * (1.0 - gg * gg)
                da[t, b, 3 * H + o] = dht * th * og * (1.0 - og)
                dc[b, o] = dct * fg
            for j in range(H):
                acc = 0.0
                for u in range(G4):
                    acc += da[t, b, u] * W_hh[u, j]
                dh[b, j] = acc
        for o in range(H):
            dh0[b, o] += dh[b, o]
            dc0[b, o] += dc[b, o]

# ---- from bptt/kernels/gru.py ------------------------------------------------------------

@kernel(parallel=False)
def gru_forward(y, gates, mn, h0, W_hh, b_hh, off, reverse):
    """Forward over the sequence, keeping r, z, n and m_n of every step for backward.

    y : (T, B, D·H) output; writes y[t, :, off:off+H] = h_t.
    gates : (T, B, 3H) in: the input projection W_ih·x_t + b_ih; out: [r, z, n] of every step.
    mn : (T, B, H) out: m_n = W_hn·h_prev + b_hn of every step.
    h0 : (B, H) initial state.  W_hh : (3H, H).  b_hh : (3H,).
    off : int column offset of this direction in y.  reverse : bool.
    """
    T, B, G3 = gates.shape
    H = G3 // 3
    for b in prange(B):  # sequences are independent: one parallel region, the time loop inside
        for s in range(T):
            t = T - 1 - s if reverse else s
            hp = h0 if s == 0 else y[t + 1 if reverse else t - 1]   # h_prev, at columns hoff:hoff+H
            hoff = 0 if s == 0 else off
            for o in range(H):
                mr = b_hh[o]
                mz = b_hh[H + o]
                m = b_hh[2 * H + o]
                for j in range(H):
                    hj = hp[b, hoff + j]
                    mr += W_hh[o, j] * hj
                    mz += W_hh[H + o, j] * hj
                    m += W_hh[2 * H + o, j] * hj
                r = sigmoid(gates[t, b, o] + mr)
                z = sigmoid(gates[t, b, H + o] + mz)
                n = math.tanh(gates[t, b, 2 * H + o] + r * m)
                gates[t, b, o] = r
                gates[t, b, H + o] = z
                gates[t, b, 2 * H + o] = n
                mn[t, b, o] = m
                y[t, b, off + o] = (1.0 - z) * n + z * hp[b, hoff + o]


@kernel(parallel=False)
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
    T, B, G3 = gates.shape
    H = G3 // 3
    for b in prange(B):
        for o in range(H):
            dh[b, o] = dh_n[b, o]
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if reverse else s
            hp = h0 if s == 0 else y[t + 1 if reverse else t - 1]
            hoff = 0 if s == 0 else off
            for o in range(H):
                r = gates[t, b, o]
                z = gates[t, b, H + o]
                n = gates[t, b, 2 * H + o]
                dht = dy[t, b, off + o] + dh[b, o]
                dan = dht * (1.0 - z) * (1.0 - n * n)
                dar = dan * mn[t, b, o] * r * (1.0 - r)
                daz = dht * (hp[b, hoff + o] - n) * z * (1.0 - z)
                dgx[t, b, o] = dar
                dgx[t, b, H + o] = daz
                dgx[t, b, 2 * H + o] = dan
                dgh[t, b, o] = dar
                dgh[t, b, H + o] = daz
                dgh[t, b, 2 * H + o] = dan * r
                dh[b, o] = dht * z     # the direct path h_prev -> h_t
            for j in range(H):
                acc = dh[b, j]
                for u in range(G3):
                    acc += dgh[t, b, u] * W_hh[u, j]
                dh[b, j] = acc
        for o in range(H):
            dh0[b, o] += dh[b, o]
