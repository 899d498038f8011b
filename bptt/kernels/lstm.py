"""LSTM cell over a whole sequence, gate order i, f, g, o as in torch.

Shapes: T time steps, B batch, H hidden units, G = 4 gates, D directions (1 or 2).
Layout, direction (``reverse``) and output columns (``off``) are as in :mod:`bptt.kernels.rnn`.

    [a_i, a_f, a_g, a_o] = (W_ih·x_t + b_ih) + W_hh·h_prev + b_hh          (each a block of H)
    i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
    c_t = f ⊙ c_prev + i ⊙ g
    h_t = o ⊙ tanh(c_t)

Weight gradients and dx are one pass each after the sweep, from the stored da (T, B, 4H), with the
kernels every cell shares (:mod:`bptt.kernels.rnn`): ``input_backward_params``,
``recurrent_backward_params`` and ``input_backward``.
"""
import math

from ..jit import kernel, prange
from .activations import sigmoid


@kernel
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


@kernel
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
