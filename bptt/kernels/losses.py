"""Losses, each reduced by the mean, with their gradients written beside them.

Every kernel writes the gradient of the mean loss with respect to its input into a buffer the
caller provides (overwritten, not accumulated: a loss is where backpropagation starts) and writes
per-row losses into ``row_loss``; the caller sums those rows in a fixed order, so the result does
not depend on the thread count.
Reference twins: :mod:`bptt.reference.losses` (same names and signatures, plain NumPy).
"""
import math

import numpy as np

from ..jit import inline, kernel, prange
from .activations import exp


@kernel
def mse_rows(row_loss, dpred, pred, target, scale):
    """Mean squared error: L = (1/M) Σ (p - t)², M = N·O.

    row_loss : (N,) Σ_o (p - t)² per row;  dpred : (N, O) = 2 (p - t) · scale, with scale = 1/M.
    pred, target : (N, O).
    """
    N, O = pred.shape
    for n in prange(N):
        s = 0.0
        for o in range(O):
            d = pred[n, o] - target[n, o]
            s += d * d
            dpred[n, o] = 2.0 * d * scale
        row_loss[n] = s


LANES = 8   # independent running maxima and partial sums a row's reductions keep (row_max, lane_sum)


@inline
def row_max(z):
    """max_v z[v], as the first of the largest values in order would give (NaN past z[0] skipped,
    as ``if z[v] > m``): LANES running maxima, z[v] in lane v mod LANES, then the rest and the
    lanes in order. A maximum does not depend on the order it is taken in, so the value is the
    one-pass loop's; but one chain of compares waited on itself at every element, and LANES of
    them run side by side (softmax_xent_rows 1.7-1.8× faster on one core at V = 65 and 1000,
    Intel Xeon, docs/performance.md, thirty-third session). Written out, not in an array: an
    array per row cost an allocation."""
    V = z.shape[0]
    m = z[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = m
    V8 = V - V % LANES
    for v in range(0, V8, LANES):
        if z[v] > m0:
            m0 = z[v]
        if z[v + 1] > m1:
            m1 = z[v + 1]
        if z[v + 2] > m2:
            m2 = z[v + 2]
        if z[v + 3] > m3:
            m3 = z[v + 3]
        if z[v + 4] > m4:
            m4 = z[v + 4]
        if z[v + 5] > m5:
            m5 = z[v + 5]
        if z[v + 6] > m6:
            m6 = z[v + 6]
        if z[v + 7] > m7:
            m7 = z[v + 7]
    for v in range(V8, V):
        if z[v] > m:
            m = z[v]
    for c in (m0, m1, m2, m3, m4, m5, m6, m7):
        if c > m:
            m = c
    return m


@inline
def lane_sum(a, i0, n, square):
    """Σ a[i] (a[i]², with ``square``) for i0 ≤ i < i0 + n, in float64, in a fixed order: LANES
    partial sums from 0 (a[i0 + v] into lane v mod LANES, each in increasing v), added pairwise
    ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)), then the last n mod LANES in order. That is NumPy's
    pairwise sum of a run of at most 128 (its lanes start from the first 8 values; 0 + x is x),
    so :func:`bptt.kernels.optim.sum_squares` keeps NumPy's bits with it. The order is the
    source's, so the bits do not depend on the thread count or the ISA; one running sum waited
    for each add in turn (4 cycles an element)."""
    e = i0 + n - n % LANES
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for v in range(i0, e, LANES):
        x0, x1, x2, x3 = np.float64(a[v]), np.float64(a[v + 1]), np.float64(a[v + 2]), np.float64(a[v + 3])
        x4, x5, x6, x7 = np.float64(a[v + 4]), np.float64(a[v + 5]), np.float64(a[v + 6]), np.float64(a[v + 7])
        if square:
            x0, x1, x2, x3, x4, x5, x6, x7 = x0 * x0, x1 * x1, x2 * x2, x3 * x3, x4 * x4, x5 * x5, x6 * x6, x7 * x7
        a0 += x0
        a1 += x1
        a2 += x2
        a3 += x3
        a4 += x4
        a5 += x5
        a6 += x6
        a7 += x7
    s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    for v in range(e, i0 + n):
        x = np.float64(a[v])
        s += x * x if square else x
    return s


@kernel
def softmax_xent_rows(row_loss, dlogits, logits, targets, weight, scale):
    """Softmax cross-entropy from logits, numerically stable.

    For row n with weight w_n (0 for masked/ignored rows, else 1) and target class t_n:
        m = max_v z_v,  lse = m + log Σ_v exp(z_v - m),  ℓ_n = w_n (lse - z_t)
        ∂ℓ_n/∂z_v = w_n (softmax(z)_v - [v = t_n])
    The mean loss is L = scale · Σ_n ℓ_n, with scale = 1/Σ_n w_n.

    row_loss : (N,) ℓ_n;  dlogits : (N, V) = scale · ∂ℓ_n/∂z;  logits : (N, V);
    targets : (N,) int64 in [0, V) where w_n > 0;  weight : (N,) 0/1 row weights.
    """
    N, V = logits.shape
    for n in prange(N):
        w = weight[n]
        if w == 0.0:
            row_loss[n] = 0.0
            for v in range(V):
                dlogits[n, v] = 0.0
            continue
        dn = dlogits[n]
        zn = logits[n]
        m = row_max(zn)
        for v in range(V):   # the exponentials first, in a loop of their own, which vectorises
            dn[v] = exp(zn[v] - m)   # (float32: activations.exp32, not libm's scalar expf)
        s = lane_sum(dn, 0, V, False)   # then their sum in float64, in a fixed order
        t = targets[n]
        row_loss[n] = w * (m + math.log(s) - logits[n, t])
        c = w * scale / s
        for v in range(V):
            dlogits[n, v] *= c
        dlogits[n, t] -= w * scale


@inline
def _softplus(z):
    # log(1 + e^z) without overflow.
    if z > 0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


@kernel
def bce_logits_rows(row_loss, dlogits, logits, target, scale):
    """Binary cross-entropy from logits z with targets t ∈ [0, 1]:
        ℓ = softplus(z) - t z = max(z, 0) - t z + log(1 + e^-|z|),   ∂ℓ/∂z = σ(z) - t.
    L = scale · Σ ℓ with scale = 1/(N·O).

    row_loss : (N,) Σ_o ℓ;  dlogits : (N, O) = scale (σ(z) - t);  logits, target : (N, O).
    """
    N, O = logits.shape
    for n in prange(N):
        s = 0.0
        for o in range(O):
            z = logits[n, o]
            t = target[n, o]
            s += _softplus(z) - t * z
            if z >= 0:
                sig = 1.0 / (1.0 + math.exp(-z))
            else:
                e = math.exp(z)
                sig = e / (1.0 + e)
            dlogits[n, o] = scale * (sig - t)
        row_loss[n] = s
