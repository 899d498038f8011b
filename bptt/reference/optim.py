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


def sum_squares(out, a):
    """out[0] = Σ a² in float64: NumPy's pairwise sum of the squares.   out : (1,).  a : (N,)."""
    out[0] = np.sum(np.square(a.astype(np.float64)))
