"""Built-in data sets for ``bptt fit --demo``: generated, seeded, no download.

``spirals(n, seed)``
    The classic three-class spiral (as in Stanford's CS231n notes): class c has n points
    ``r = i/(n-1)``, ``θ = 4c + 4r + 0.2·N(0, 1)``, at ``(r sin θ, r cos θ)``. No line separates
    the arms, so a linear classifier stays near 50 % while a small MLP exceeds 95 %.
``adding_problem(n, length, seed)``
    The adding problem (Hochreiter & Schmidhuber, 1997, experiment 4): inputs (n, T, 2) whose
    first channel is uniform on [0, 1] and whose second marks two positions with 1, one in the
    first half and one in the second; the target is the sum of the two marked values. Always
    predicting 1 (the mean of the target) has MSE Var(u₁ + u₂) = 1/6 ≈ 0.167. A model must carry
    the first marked value across up to T steps: a plain RNN's gradient vanishes over long
    distances, an LSTM's cell state carries it.
"""
from __future__ import annotations

import numpy as np


def spirals(n: int = 300, seed: int = 0, classes: int = 3, noise: float = 0.2):
    """(X (classes·n, 2) float64, y (classes·n,) int64)."""
    rng = np.random.default_rng(seed)
    X = np.zeros((classes * n, 2))
    y = np.zeros(classes * n, np.int64)
    for c in range(classes):
        r = np.linspace(0.0, 1.0, n)
        t = np.linspace(4.0 * c, 4.0 * (c + 1), n) + noise * rng.standard_normal(n)
        X[c * n:(c + 1) * n] = np.column_stack([r * np.sin(t), r * np.cos(t)])
        y[c * n:(c + 1) * n] = c
    return X, y


def adding_problem(n: int, length: int, seed: int = 0, first_within: int | None = None):
    """(x (n, length, 2) float64, y (n,) float64): see the module docstring. ``length`` >= 2.
    ``first_within``: the first marker lies in steps 0 .. first_within-1 (default: the first
    half; ``bptt gradflow`` puts it in the first tenth, so that its gradient must cross most of
    the sequence)."""
    if length < 2:
        raise ValueError(f"length must be at least 2, got {length}")
    rng = np.random.default_rng(seed)
    x = np.zeros((n, length, 2))
    x[:, :, 0] = rng.uniform(0.0, 1.0, (n, length))
    half = length // 2
    first = rng.integers(0, half if first_within is None else min(max(1, first_within), half), n)
    second = rng.integers(half, length, n)
    rows = np.arange(n)
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    y = x[rows, first, 0] + x[rows, second, 0]
    return x, y
