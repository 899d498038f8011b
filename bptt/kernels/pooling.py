"""Pooling a padded batch of sequences over each sequence's valid steps.

Shapes: B sequences, T steps (padded), C = D·H channels (D directions of H units; in the reverse
direction's columns, j ≥ H when D = 2, step 0 is the last one read). ``lengths[b]`` = len_b ≥ 1.

    last:  v[b, j] = out[b, len_b - 1, j]   (j < H),   out[b, 0, j]   (j ≥ H)
    mean:  v[b, j] = (1/len_b) Σ_{t < len_b} out[b, t, j]
    max:   v[b, j] = max_{t < len_b} out[b, t, j]            (the first arg max on ties)

For last and max, ``arg[b, j]`` records the step chosen, and the backward sends the gradient there:
dout[b, arg[b, j], j] += dv[b, j]; for mean, dout[b, t, j] += dv[b, j] / len_b for every t < len_b.
Padded steps get nothing.
"""
from ..jit import kernel, prange

LAST, MEAN, MAX = 0, 1, 2
POOL_MODES = {"last": LAST, "mean": MEAN, "max": MAX}


@kernel
def pool_forward(v, arg, out, lengths, mode, H):
    """v : (B, C) output.  arg : (B, C) int64 output (last, max).  out : (B, T, C).
    lengths : (B,) int64.  mode : LAST, MEAN or MAX.  H : the forward direction's columns."""
    B, T, C = out.shape
    for b in prange(B):
        L = lengths[b]
        for j in range(C):
            if mode == MEAN:
                s = 0.0
                for t in range(L):
                    s += out[b, t, j]
                v[b, j] = s / L
                arg[b, j] = 0
            elif mode == MAX:
                m = out[b, 0, j]
                a = 0
                for t in range(1, L):
                    if out[b, t, j] > m:
                        m = out[b, t, j]
                        a = t
                v[b, j] = m
                arg[b, j] = a
            else:
                t = L - 1 if j < H else 0
                v[b, j] = out[b, t, j]
                arg[b, j] = t


@kernel
def pool_backward(dout, dv, arg, lengths, mode):
    """dout : (B, T, C) accumulated.  dv : (B, C) ∂L/∂v.  arg, lengths, mode: as the forward."""
    B, T, C = dout.shape
    for b in prange(B):
        L = lengths[b]
        for j in range(C):
            if mode == MEAN:
                g = dv[b, j] / L
                for t in range(L):
                    dout[b, t, j] += g
            else:
                dout[b, arg[b, j], j] += dv[b, j]
