"""Pooling a padded batch of sequences, the twin of :mod:`bptt.kernels.pooling`.

out : (B, T, C) holds each sequence's states, padded after its len_b valid steps; C = D·H, and
the reverse direction's columns (j ≥ H when D = 2) read step 0 last.

    last:  v[b, j] = out[b, len_b - 1, j]  (j < H),   out[b, 0, j]  (j ≥ H)
    mean:  v[b, j] = (1/len_b) Σ_{t < len_b} out[b, t, j]
    max:   v[b, j] = max_{t < len_b} out[b, t, j]          (the first arg max on ties)

Backward: last and max send dv to the step they chose (``arg``); mean spreads dv / len_b over
the valid steps. Padded steps get no gradient, so padding changes nothing.
"""
import numpy as np

LAST, MEAN, MAX = 0, 1, 2


def pool_forward(v, arg, out, lengths, mode, H):
    """v : (B, C) output.  arg : (B, C) int64 output.  out : (B, T, C).  lengths : (B,)."""
    for b in range(out.shape[0]):
        valid = out[b, :lengths[b]]                 # (len_b, C): the steps that count
        if mode == MEAN:
            v[b] = valid.sum(axis=0) / lengths[b]
            arg[b] = 0
        elif mode == MAX:
            arg[b] = np.argmax(valid, axis=0)       # the first arg max, as the kernel
            v[b] = valid.max(axis=0)
        else:
            arg[b, :H] = lengths[b] - 1             # forward direction: its last step
            arg[b, H:] = 0                          # reverse direction: it ends at step 0
            v[b] = out[b, arg[b], np.arange(out.shape[2])]


def pool_backward(dout, dv, arg, lengths, mode):
    """dout : (B, T, C) accumulated.  dv : (B, C).  arg, lengths, mode : as the forward."""
    C = dout.shape[2]
    for b in range(dout.shape[0]):
        if mode == MEAN:
            dout[b, :lengths[b]] += dv[b] / lengths[b]
        else:
            dout[b, arg[b], np.arange(C)] += dv[b]


def mean_pool_forward(z, h):
    """z[b] = (1/T) Σ_t h[b, t]: every step counts.   z : (B, H).  h : (B, T, H)."""
    z[...] = h.mean(axis=1)


def mean_pool_backward(dh, dz):
    """dh[b, t] += dz[b] / T for every t.   dh : (B, T, H) accumulated.  dz : (B, H)."""
    dh += dz[:, None, :] / dh.shape[1]


def l2_normalize_forward(u, norm, z):
    """u[b] = z[b] / ‖z[b]‖, norm[b] = ‖z[b]‖ (1 for a zero row, which stays zero)."""
    n = np.sqrt((z * z).sum(axis=1))
    norm[...] = np.where(n == 0.0, 1.0, n)
    u[...] = z / norm[:, None]


def l2_normalize_backward(dz, du, u, norm):
    """dz[b] += (du[b] − u[b]⟨u[b], du[b]⟩) / ‖z[b]‖: scaling z does not move u, so du's part
    along u is lost."""
    dz += (du - u * (u * du).sum(axis=1, keepdims=True)) / norm[:, None]
