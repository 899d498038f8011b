"""Pooling a padded batch of sequences over each sequence's valid steps.

Shapes: B sequences, T steps (padded), C = D·H channels (D directions of H units; in the reverse
direction's columns, j ≥ H when D = 2, step 0 is the last one read). ``lengths[b]`` = len_b ≥ 1.

    last:  v[b, j] = out[b, len_b - 1, j]   (j < H),   out[b, 0, j]   (j ≥ H)
    mean:  v[b, j] = (1/len_b) Σ_{t < len_b} out[b, t, j]
    max:   v[b, j] = max_{t < len_b} out[b, t, j]            (the first arg max on ties)

For last and max, ``arg[b, j]`` records the step chosen, and the backward sends the gradient there:
dout[b, arg[b, j], j] += dv[b, j]; for mean, dout[b, t, j] += dv[b, j] / len_b for every t < len_b.
Padded steps get nothing.

Whole sequences (every step counts) and unit length, for the contrastive encoder:

    Shapes: B sequences, T time steps, H features (D·H for a bidirectional stack).

    mean pool:   z[b] = (1/T) Σ_t h[b, t]              dh[b, t] += dz[b] / T
    L2 norm:     u[b] = z[b] / ‖z[b]‖                   dz[b] += (du[b] − u[b] ⟨u[b], du[b]⟩) / ‖z[b]‖
"""
import math

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

@kernel
def mean_pool_forward(z, h):
    """z[b, :] = (1/T) Σ_t h[b, t, :].

    z : (B, H) output.  h : (B, T, H) states.
    """
    B, T, H = h.shape
    inv = 1.0 / T
    for b in prange(B):
        for j in range(H):
            z[b, j] = 0.0
        for t in range(T):
            for j in range(H):
                z[b, j] += h[b, t, j]
        for j in range(H):
            z[b, j] *= inv


@kernel
def mean_pool_backward(dh, dz):
    """dh[b, t, :] += dz[b, :] / T for every t: each step gets an equal share.

    dh : (B, T, H) accumulated.  dz : (B, H) ∂L/∂z.
    """
    B, T, H = dh.shape
    inv = 1.0 / T
    for b in prange(B):
        for t in range(T):
            for j in range(H):
                dh[b, t, j] += dz[b, j] * inv


@kernel
def l2_normalize_forward(u, norm, z):
    """u[b] = z[b] / ‖z[b]‖, with ‖z[b]‖ kept in ``norm`` for the backward.

    u : (B, H) output.  norm : (B,) output ‖z[b]‖ (a zero row stays zero: norm is set to 1).
    z : (B, H).
    """
    B, H = z.shape
    for b in prange(B):
        s = 0.0
        for j in range(H):
            s += z[b, j] * z[b, j]
        n = math.sqrt(s)
        if n == 0.0:
            n = 1.0
        norm[b] = n
        for j in range(H):
            u[b, j] = z[b, j] / n


@kernel
def l2_normalize_backward(dz, du, u, norm):
    """dz[b] += (du[b] − u[b] ⟨u[b], du[b]⟩) / ‖z[b]‖: the component of du along u is lost,
    since scaling z does not change u.

    dz : (B, H) accumulated.  du : (B, H) ∂L/∂u.  u : (B, H) and norm : (B,) from the forward.
    """
    B, H = u.shape
    for b in prange(B):
        p = 0.0
        for j in range(H):
            p += u[b, j] * du[b, j]
        inv = 1.0 / norm[b]
        for j in range(H):
            dz[b, j] += (du[b, j] - u[b, j] * p) * inv
