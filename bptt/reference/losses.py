"""Losses and their gradients: the twin of :mod:`bptt.kernels.losses`.

Each writes the loss of every row into ``row_loss`` (the caller sums them and multiplies by
``scale`` for the mean) and the gradient of the *mean* loss into its gradient buffer
(overwritten: a loss is where backpropagation starts).
"""
import numpy as np

from .activations import sigmoid


def mse_rows(row_loss, dpred, pred, target, scale):
    """Mean squared error, L = scale · Σ (p − t)², scale = 1/(N·O):

        row_loss[n] = Σ_o (p − t)²        ∂L/∂p = 2 (p − t) · scale

    row_loss : (N,).  dpred, pred, target : (N, O).
    """
    d = pred - target
    row_loss[...] = (d * d).sum(axis=1)
    dpred[...] = 2.0 * d * scale


def softmax_xent_rows(row_loss, dlogits, logits, targets, weight, scale):
    """Softmax cross-entropy from logits z, for row n with target class t and weight w (0 or 1):

        p = softmax(z) = e^z / Σ_v e^z_v        ℓ = −w log p_t = w (log Σ_v e^z_v − z_t)
        ∂ℓ/∂z_v = w (p_v − [v = t])             (p − y, y the one-hot target)

    log Σ e^z is computed as m + log Σ e^(z − m), m = max z, so that nothing overflows.
    L = scale · Σ_n ℓ_n with scale = 1/Σ_n w_n.

    row_loss : (N,).  dlogits, logits : (N, V).  targets : (N,) int.  weight : (N,).
    """
    N = logits.shape[0]
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(axis=1, keepdims=True)
    p = e / s
    z_t = logits[np.arange(N), targets]
    lse = m[:, 0] + np.log(s[:, 0])
    row_loss[...] = np.where(weight > 0, weight * (lse - z_t), 0.0)
    y = np.zeros_like(p)
    y[np.arange(N), targets] = 1.0
    dlogits[...] = np.where(weight[:, None] > 0, (weight * scale)[:, None] * (p - y), 0.0)


def bce_logits_rows(row_loss, dlogits, logits, target, scale):
    """Binary cross-entropy from logits z with targets t ∈ [0, 1]:

        ℓ = −t log σ(z) − (1 − t) log(1 − σ(z)) = max(z, 0) − t z + log(1 + e^−|z|)
        ∂ℓ/∂z = σ(z) − t

    L = scale · Σ ℓ, scale = 1/(N·O).   row_loss : (N,).  dlogits, logits, target : (N, O).
    """
    z, t = logits, target
    loss = np.maximum(z, 0.0) - t * z + np.log1p(np.exp(-np.abs(z)))
    row_loss[...] = loss.sum(axis=1)
    dlogits[...] = scale * (sigmoid(z) - t)
