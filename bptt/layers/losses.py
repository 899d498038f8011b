"""Losses as functions ``(loss, dinput)`` and as small objects with forward/backward.

All are reduced by the mean. Each function returns the float loss and the gradient of that mean
loss with respect to its first argument.
"""
from __future__ import annotations

import numpy as np

from ..kernels.losses import bce_logits_rows, mse_rows, softmax_xent_rows
from .base import check_array


def _float_input(name, a):
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy float32/float64 array, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if a.ndim < 1:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    return a


def _rows(a):
    return a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(-1, 1)


def mse_loss(pred: np.ndarray, target: np.ndarray):
    """L = mean((pred - target)²) over every element. Returns (L, ∂L/∂pred)."""
    pred = _float_input("pred", pred)
    target = check_array("target", target, pred.shape, pred.dtype, what=" (the shape of pred)")
    p2, t2 = _rows(np.ascontiguousarray(pred)), _rows(target)
    row = np.empty(p2.shape[0], pred.dtype)
    d = np.empty_like(p2)
    mse_rows(row, d, p2, t2, 1.0 / max(pred.size, 1))
    return float(np.sum(row, dtype=np.float64)) / max(pred.size, 1), d.reshape(pred.shape)


def _check_classes(t, V):
    """ValueError unless every target in ``t`` is a class id in [0, V)."""
    if t.size:
        lo, hi = t.min(), t.max()
        if lo < 0 or hi >= V:
            raise ValueError(f"targets must be class ids in the range [0, {V}), found {int(lo) if lo < 0 else int(hi)}")


def softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray, mask=None, ignore_index=None):
    """Mean softmax cross-entropy from logits (..., V) and integer targets (...).

    Rows where ``mask`` is 0/False, or where the target equals ``ignore_index``, count for nothing
    and are left out of the mean. Returns (L, ∂L/∂logits). If every row is masked, L = 0.
    """
    logits = _float_input("logits", logits)
    V = logits.shape[-1]
    lead = logits.shape[:-1]
    if not isinstance(targets, np.ndarray) or targets.dtype.kind not in "iu":
        raise ValueError(f"targets must be an integer numpy array of shape {lead}, "
                         f"got {getattr(targets, 'dtype', type(targets).__name__)}")
    if targets.shape != lead:
        raise ValueError(f"targets must have shape {lead} (logits' shape without the last axis), got {targets.shape}")
    if targets.dtype.kind == "u" and targets.size and int(targets.max()) >= V:   # before a cast could wrap it
        raise ValueError(f"targets must be class ids in [0, {V}), found {int(targets.max())}")
    z = np.ascontiguousarray(logits).reshape(-1, V)
    t = np.ascontiguousarray(targets, dtype=np.int64).reshape(-1)
    w = np.ones(t.shape[0], logits.dtype)
    if mask is None and ignore_index is None:   # every row counts: no row weights to work out
        _check_classes(t, V)
        count = float(t.shape[0])
    else:
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != lead:
                raise ValueError(f"mask must have shape {lead}, got {mask.shape}")
            if mask.dtype.kind not in "biuf" or (mask.size and not np.all((mask == 0) | (mask == 1))):
                raise ValueError(f"mask must hold 0/1 or False/True (rows left out / counted), got "
                                 f"{'dtype ' + str(mask.dtype) if mask.dtype.kind not in 'biuf' else 'other values'}")
            w[mask.reshape(-1) == 0] = 0
        if ignore_index is not None:
            if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
                raise ValueError(f"ignore_index must be an integer class id, got {ignore_index!r}")
            w[t == ignore_index] = 0
        live = w > 0
        _check_classes(t[live], V)
        t = np.where(live, t, 0)
        count = float(w.sum())
    scale = 1.0 / count if count > 0 else 0.0
    row = np.empty(z.shape[0], logits.dtype)
    d = np.empty_like(z)
    softmax_xent_rows(row, d, z, t, w, scale)
    return float(np.sum(row, dtype=np.float64)) * scale, d.reshape(logits.shape)


def bce_with_logits(logits: np.ndarray, target: np.ndarray):
    """Mean binary cross-entropy from logits with targets in [0, 1]. Returns (L, ∂L/∂logits)."""
    logits = _float_input("logits", logits)
    target = check_array("target", target, logits.shape, logits.dtype, what=" (the shape of logits)")
    z2, t2 = _rows(np.ascontiguousarray(logits)), _rows(target)
    row = np.empty(z2.shape[0], logits.dtype)
    d = np.empty_like(z2)
    scale = 1.0 / max(logits.size, 1)
    bce_logits_rows(row, d, z2, t2, scale)
    return float(np.sum(row, dtype=np.float64)) * scale, d.reshape(logits.shape)


class _Loss:
    """forward(x, target) -> float; backward(dloss=1.0) -> ∂(dloss·L)/∂x. No parameters."""

    fn = None

    def __init__(self, **options):
        self.options = options
        self._d = None

    def forward(self, x, target):
        loss, self._d = type(self).fn(x, target, **self.options)
        return loss

    __call__ = forward

    def backward(self, dloss=1.0):
        if self._d is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._d * np.asarray(dloss, dtype=self._d.dtype)

    # gradcheck interface: only ``x`` is differentiated; ``target`` is held fixed.
    def parameters(self):
        return {}

    def gradients(self):
        return {}

    def zero_grad(self):
        pass

    def check_forward(self, x, target):
        return (np.array([self.forward(x, target)]),)

    def check_backward(self, dloss):
        return {"x": self.backward(dloss[0])}


class MSELoss(_Loss):
    fn = staticmethod(mse_loss)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy; options ``mask=`` and ``ignore_index=`` as in :func:`softmax_cross_entropy`."""
    fn = staticmethod(softmax_cross_entropy)


class BCEWithLogitsLoss(_Loss):
    fn = staticmethod(bce_with_logits)


LOSSES = {"mse": MSELoss, "xent": CrossEntropyLoss, "bce": BCEWithLogitsLoss}
