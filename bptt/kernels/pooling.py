"""Pooling a sequence of states into one vector, and scaling vectors to unit length.

Shapes: B sequences, T time steps, H features (D·H for a bidirectional stack).

    mean pool:   z[b] = (1/T) Σ_t h[b, t]              dh[b, t] += dz[b] / T
    L2 norm:     u[b] = z[b] / ‖z[b]‖                   dz[b] += (du[b] − u[b] ⟨u[b], du[b]⟩) / ‖z[b]‖
"""
import math

from ..jit import kernel, prange


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
