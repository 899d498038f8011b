"""The LSTM over a sequence, gate by gate, and its BPTT: the twin of :mod:`bptt.kernels.lstm`.

Gate order i, f, g, o (torch's). Each step, with a_t = (W_ih·x_t + b_ih) + W_hh·h_prev + b_hh
split in four blocks of H:

    i = σ(a_i)    f = σ(a_f)    g = tanh(a_g)    o = σ(a_o)
    c_t = f ⊙ c_prev + i ⊙ g
    h_t = o ⊙ tanh(c_t)

Backward, with dh_next and dc_next carried from the later step:

    dh_t = dy_t + dh_next
    dc_t = dc_next + dh_t ⊙ o ⊙ (1 − tanh²c_t)            (c_t feeds h_t and c_{t+1})
    da_i = dc_t ⊙ g ⊙ i(1 − i)        da_f = dc_t ⊙ c_prev ⊙ f(1 − f)
    da_g = dc_t ⊙ i ⊙ (1 − g²)        da_o = dh_t ⊙ tanh(c_t) ⊙ o(1 − o)
    dc_next = dc_t ⊙ f                dh_next = da_t·W_hh

The cell state's own path back in time is dc_t ⊙ f: multiplied by the forget gate, not by a
weight matrix and a squashing derivative. With f near 1 the gradient survives many steps.
"""
import numpy as np

from .activations import sigmoid
from .rnn import (input_backward, input_backward_params, input_forward, previous,
                  recurrent_backward_params, time_steps)


def lstm_forward(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse):
    """Forward over the sequence, keeping every gate and cell state for backward.

    y : (T, B, D·H) output (columns off:off+H).  gates : (T, B, 4H) in: W_ih·x_t + b_ih;
    out: [i, f, g, o].  c, tc : (T, B, H) out: c_t and tanh(c_t).  h0, c0 : (B, H).
    W_hh : (4H, H).  b_hh : (4H,).  off : column offset.  reverse : bool.
    """
    T, B, H = c.shape
    h_prev, c_prev = h0, c0
    for t in time_steps(T, reverse):
        a = gates[t] + h_prev @ W_hh.T + b_hh
        i = sigmoid(a[:, 0:H])
        f = sigmoid(a[:, H:2 * H])
        g = np.tanh(a[:, 2 * H:3 * H])
        o = sigmoid(a[:, 3 * H:4 * H])
        c[t] = f * c_prev + i * g                       # c_t = f ⊙ c_prev + i ⊙ g
        tc[t] = np.tanh(c[t])
        y[t, :, off:off + H] = o * tc[t]                # h_t = o ⊙ tanh(c_t)
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        h_prev, c_prev = y[t, :, off:off + H], c[t]


def lstm_backward(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse):
    """Backpropagation through time, from the last processed step to the first (equations in
    the module docstring); at the end dh0 += dh_next, dc0 += dc_next.

    da : (T, B, 4H) written: ∂L/∂a_t.  dh0, dc0 : (B, H) accumulated.  dh, dc : (B, H)
    workspaces: hold dh_next, dc_next.  dy : (T, B, D·H) (columns off:off+H).
    dh_n, dc_n : (B, H).  gates, c, tc : from :func:`lstm_forward`.  c0 : (B, H).  W_hh : (4H, H).
    """
    T, B, H = c.shape
    steps = time_steps(T, reverse)
    dh_next, dc_next = dh, dc
    dh_next[...] = dh_n
    dc_next[...] = dc_n
    for t in reversed(steps):
        i, f, g, o = (gates[t, :, k * H:(k + 1) * H] for k in range(4))
        c_prev = c0 if t == steps[0] else c[previous(t, reverse)]
        dh_t = dy[t, :, off:off + H] + dh_next
        dc_t = dc_next + dh_t * o * (1.0 - tc[t] ** 2)
        da[t, :, 0:H] = dc_t * g * i * (1.0 - i)                 # da_i
        da[t, :, H:2 * H] = dc_t * c_prev * f * (1.0 - f)        # da_f
        da[t, :, 2 * H:3 * H] = dc_t * i * (1.0 - g * g)         # da_g
        da[t, :, 3 * H:4 * H] = dh_t * tc[t] * o * (1.0 - o)     # da_o
        dc_next[...] = dc_t * f
        dh_next[...] = da[t] @ W_hh
    dh0 += dh_next
    dc0 += dc_next


def lstm_forward_pipelined(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse, x, W_ih, b_ih, P_hh):
    """The input projection, then :func:`lstm_forward` (the fast kernel runs the two side by side
    for a small batch; here one after the other).   x : (T, B, I).  W_ih : (4H, I).  b_ih : (4H,).
    P_hh : the fast kernel's packed W_hh for the backward (not used here)."""
    input_forward(gates, x, W_ih, b_ih)
    lstm_forward(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse)


def lstm_backward_pipelined(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse,
                            x, y, h0, W_ih, dW_ih, db_ih, dW_hh, db_hh, dx, P_hh, packed, clear=False):
    """:func:`lstm_backward`, then the weight gradients and dx from its da (the fast kernel runs
    them beside the sweep for a small batch; here one after the other). P_hh, packed: the fast
    kernel's packed W_hh (not used here). ``clear``: the weight gradients set, not added to."""
    if clear:
        for g in (dW_ih, db_ih, dW_hh, db_hh):
            g[...] = 0
    lstm_backward(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse)
    input_backward_params(dW_ih, db_ih, da, x)
    recurrent_backward_params(dW_hh, db_hh, da, y, h0, off, reverse)
    input_backward(dx, da, W_ih)


def _no_gap(gap):
    if gap:
        raise ValueError("the reference LSTM sweeps take gates, c and tc without a gap (gap=0)")


def lstm_forward_fused(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse, x, W_ih, b_ih, gap=0):
    """``input_forward`` (gates = W_ih·x_t + b_ih), then :func:`lstm_forward`. (``gap`` is the
    kernel's layout of gates, c and tc with rows between the batch halves; this twin takes
    them as they are, gap 0, which is what the layers give it.)"""
    _no_gap(gap)
    input_forward(gates, x, W_ih, b_ih)
    lstm_forward(y, gates, c, tc, h0, c0, W_hh, b_hh, off, reverse)


def lstm_backward_fused(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse, dx, W_ih,
                        in_panels=False, gap=0):
    """:func:`lstm_backward`, then ``input_backward`` (dx += da·W_ih). (``in_panels`` is the
    kernel's layout of da for its weight gradients; this twin always writes da. ``gap``: as in
    :func:`lstm_forward_fused`.)"""
    _no_gap(gap)
    lstm_backward(da, dh0, dc0, dh, dc, dy, dh_n, dc_n, gates, c, tc, c0, W_hh, off, reverse)
    input_backward(dx, da, W_ih)
