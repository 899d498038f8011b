"""Optimiser updates, the twin of :mod:`bptt.kernels.optim`: the NumPy expressions themselves.

Each in-place operation rounds to the arrays' dtype (a Python float factor is rounded to it first,
NumPy ≥ 2), so these are the bits the kernels reproduce element by element.
"""
import numpy as np


def adam_update(p, g, m, v, decay, use_decay, wd, use_l2, c1, b2, c2, r, eps, s):
    """One Adam (or AdamW) step: θ ← θ(1 − ηλ) (``use_decay``); g ← g + λθ (``use_l2``);
    m ← m + c₁(g − m); v ← vβ₂ + c₂g²; θ ← θ − s·m / (√v / r + ε). Every array (N,)."""
    if use_decay:
        p *= decay
    if use_l2:
        g = g + wd * p
    m += c1 * (g - m)
    v *= b2
    v += c2 * (g * g)
    denom = np.sqrt(v)
    denom /= r
    denom += eps
    p -= s * (m / denom)


def sgd_update(p, g, buf, use_l2, wd, use_momentum, first, mu, c, nesterov, lr):
    """One SGD step (see :class:`bptt.optim.SGD`). Every array (N,)."""
    if use_l2:
        g = g + wd * p
    if use_momentum:
        if first:
            buf[...] = g
        else:
            buf *= mu
            buf += c * g
        g = g + mu * buf if nesterov else buf
    p -= lr * g


def adagrad_update(p, g, s, use_l2, wd, eps, lr):
    """One Adagrad step (see :class:`bptt.optim.Adagrad`). Every array (N,)."""
    if use_l2:
        g = g + wd * p
    s += g * g
    denom = np.sqrt(s)
    denom += eps
    p -= lr * (g / denom)


def rmsprop_update(p, g, v, m, b, use_l2, wd, a, c, centered, use_momentum, mom, eps, lr):
    """One RMSprop step (see :class:`bptt.optim.RMSprop`). Every array (N,)."""
    if use_l2:
        g = g + wd * p
    v *= a
    v += c * (g * g)
    if centered:
        m += c * (g - m)
        d = np.sqrt(v - m * m)
    else:
        d = np.sqrt(v)
    d += eps
    if use_momentum:
        b *= mom
        b += g / d
        p -= lr * b
    else:
        p -= lr * (g / d)


def sum_squares(out, a):
    """out[0] = Σ a² in float64: NumPy's pairwise sum of the squares.   out : (1,).  a : (N,)."""
    out[0] = np.sum(np.square(a.astype(np.float64)))
