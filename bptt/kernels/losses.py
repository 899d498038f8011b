"""Losses, each reduced by the mean, with their gradients written beside them.

Every kernel writes the gradient of the mean loss with respect to its input into a buffer the
caller provides (overwritten, not accumulated: a loss is where backpropagation starts) and writes
per-row losses into ``row_loss``; the caller sums those rows in a fixed order, so the result does
not depend on the thread count.
Reference twins: :mod:`bptt.reference.losses` (same names and signatures, plain NumPy).
"""
import math

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
        m = logits[n, 0]
        for v in range(1, V):
            if logits[n, v] > m:
                m = logits[n, v]
        dn = dlogits[n]
        zn = logits[n]
        for v in range(V):   # the exponentials first, in a loop of their own, which vectorises
            dn[v] = exp(zn[v] - m)   # (float32: activations.exp32, not libm's scalar expf)
        s = 0.0
        for v in range(V):   # then their sum, in order (a float64 sum in one order: no vectors)
            s += dn[v]
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
