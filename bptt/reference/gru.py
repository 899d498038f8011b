"""The GRU over a sequence, gate by gate, and its BPTT: the twin of :mod:`bptt.kernels.gru`.

Gate order r, z, n, and torch's formula for n (r multiplies W_hn·h_prev + b_hn):

    [x_r, x_z, x_n] = W_ih·x_t + b_ih          [m_r, m_z, m_n] = W_hh·h_prev + b_hh
    r = σ(x_r + m_r)    z = σ(x_z + m_z)    n = tanh(x_n + r ⊙ m_n)
    h_t = (1 − z) ⊙ n + z ⊙ h_prev

Backward, with dh_next carried from the later step:

    dh_t = dy_t + dh_next
    da_n = dh_t ⊙ (1 − z) ⊙ (1 − n²)                  (∂L/∂(x_n + r ⊙ m_n))
    dx_n = da_n                dm_n = da_n ⊙ r
    dx_r = dm_r = da_n ⊙ m_n ⊙ r(1 − r)
    dx_z = dm_z = dh_t ⊙ (h_prev − n) ⊙ z(1 − z)
    dh_next = dh_t ⊙ z + dm·W_hh

dx (for W_ih, b_ih and the input) and dm (for W_hh, b_hh) differ only in the n block.
"""
import numpy as np

from .activations import sigmoid
from .rnn import previous, time_steps


def gru_forward(y, gates, mn, m, h0, W_hh, b_hh, off, reverse):
    """Forward over the sequence, keeping r, z, n and m_n of every step for backward.

    y : (T, B, D·H) output (columns off:off+H).  gates : (T, B, 3H) in: W_ih·x_t + b_ih;
    out: [r, z, n].  mn : (T, B, H) out: m_n.  m : (B, 3H) workspace: W_hh·h_prev + b_hh.
    h0 : (B, H).  W_hh : (3H, H).  b_hh : (3H,).  off : column offset.  reverse : bool.
    """
    T, B, H = mn.shape
    h_prev = h0
    for t in time_steps(T, reverse):
        m[...] = h_prev @ W_hh.T + b_hh
        x_r, x_z, x_n = (gates[t, :, k * H:(k + 1) * H] for k in range(3))
        m_r, m_z, m_n = (m[:, k * H:(k + 1) * H] for k in range(3))
        r = sigmoid(x_r + m_r)
        z = sigmoid(x_z + m_z)
        n = np.tanh(x_n + r * m_n)
        mn[t] = m_n
        y[t, :, off:off + H] = (1.0 - z) * n + z * h_prev    # h_t = (1 − z) ⊙ n + z ⊙ h_prev
        gates[t] = np.concatenate([r, z, n], axis=1)
        h_prev = y[t, :, off:off + H]


def gru_backward(dgx, dgh, dh0, dh, dy, dh_n, gates, mn, y, h0, W_hh, off, reverse):
    """Backpropagation through time, from the last processed step to the first (equations in
    the module docstring); at the end dh0 += dh_next.

    dgx : (T, B, 3H) written: ∂L/∂[x_r, x_z, x_n].  dgh : (T, B, 3H) written: ∂L/∂[m_r, m_z, m_n].
    dh0 : (B, H) accumulated.  dh : (B, H) workspace: holds dh_next.  dy : (T, B, D·H).
    dh_n : (B, H).  gates, mn, y : from :func:`gru_forward`.  h0 : (B, H).  W_hh : (3H, H).
    """
    T, B, H = mn.shape
    steps = time_steps(T, reverse)
    dh_next = dh
    dh_next[...] = dh_n
    for t in reversed(steps):
        r, z, n = (gates[t, :, k * H:(k + 1) * H] for k in range(3))
        h_prev = h0 if t == steps[0] else y[previous(t, reverse), :, off:off + H]
        dh_t = dy[t, :, off:off + H] + dh_next
        da_n = dh_t * (1.0 - z) * (1.0 - n * n)
        da_r = da_n * mn[t] * r * (1.0 - r)
        da_z = dh_t * (h_prev - n) * z * (1.0 - z)
        dgx[t] = np.concatenate([da_r, da_z, da_n], axis=1)
        dgh[t] = np.concatenate([da_r, da_z, da_n * r], axis=1)
        dh_next[...] = dh_t * z + dgh[t] @ W_hh         # the direct path h_prev -> h_t, and through m
    dh0 += dh_next
