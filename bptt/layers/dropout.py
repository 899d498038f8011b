"""Dropout, as ``torch.nn.Dropout``: inverted dropout with a hand-written backward.

In training each element is kept with probability 1 - p and scaled by 1/(1 - p), else zeroed:

    m ~ Bernoulli(1 - p),   y = x ⊙ m / (1 - p),   ∂L/∂x = ∂L/∂y ⊙ m / (1 - p)

In evaluation (``eval()``, or p = 0) it is the identity. The mask is drawn from a NumPy
``Generator`` passed in by the caller (the trainer's seeded one), so that a run and its resume
draw the same masks: ``keep = rng.random(x.shape) >= p``, one float64 draw per element in C order.
"""
from __future__ import annotations

import numpy as np

from ..kernels.dropout import dropout_backward, dropout_forward
from .base import Layer, check_array


def dropout_scale(rng: np.random.Generator, shape, p: float, dtype) -> np.ndarray:
    """A mask of 0 (dropped, probability p) and 1/(1-p) (kept), drawn from ``rng``."""
    keep = rng.random(shape) >= p
    return np.where(keep, np.asarray(1.0 / (1.0 - p), dtype), np.asarray(0, dtype)).astype(dtype)


class Dropout(Layer):
    """Inverted dropout with probability ``p`` in [0, 1). No parameters.

    ``forward(x, rng=None)``: in training mode with p > 0, draws the mask from ``rng`` (or from
    ``self.rng``, which a trainer may set); a mask fixed with :meth:`fix_mask` takes precedence
    (used by gradient checks). ``backward(dout)`` returns ∂L/∂x. ``train()`` / ``eval()`` set the
    mode (training by default).
    """

    def __init__(self, p: float = 0.5, *, dtype=np.float64, rng=None):
        super().__init__(dtype)
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 <= p < 1:
            raise ValueError(f"p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = rng
        self.training = True
        self.fixed_mask = None
        self._scale = None
        self._shape = None

    def __repr__(self):
        return f"Dropout(p={self.p}, dtype={self.dtype.name})"

    def train(self, mode: bool = True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    @property
    def active(self) -> bool:
        return self.training and (self.p > 0 or self.fixed_mask is not None)

    def fix_mask(self, scale) -> None:
        """Use ``scale`` (0 or 1/(1-p) per element, the input's shape and dtype) on every forward
        instead of drawing one; None draws again."""
        self.fixed_mask = None if scale is None else np.ascontiguousarray(scale, dtype=self.dtype)

    def forward(self, x: np.ndarray, rng=None) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise ValueError(f"x must be a numpy array, got {type(x).__name__}")
        x = check_array("x", x, x.shape, self.dtype)
        self._shape = x.shape
        if not self.active:
            self._scale = None
            return x.copy()
        if self.fixed_mask is not None:
            scale = check_array("fixed mask", self.fixed_mask, x.shape, self.dtype, what=" (the shape of x)")
        else:
            rng = rng if rng is not None else self.rng
            if not isinstance(rng, np.random.Generator):
                raise ValueError("Dropout in training mode needs a numpy Generator (np.random.default_rng(seed)): "
                                 f"pass rng= or set .rng; got {type(rng).__name__}")
            scale = dropout_scale(rng, x.shape, self.p, self.dtype)
        self._scale = scale
        y = np.empty_like(x)
        dropout_forward(y.reshape(-1), x.reshape(-1), scale.reshape(-1))
        return y

    def __call__(self, x, rng=None):
        return self.forward(x, rng)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._shape is None:
            raise RuntimeError("Dropout.backward called before forward")
        dout = check_array("dout", dout, self._shape, self.dtype, what=" (the shape of the output)")
        if self._scale is None:
            return dout.copy()
        dx = np.zeros_like(dout)
        dropout_backward(dx.reshape(-1), dout.reshape(-1), self._scale.reshape(-1))
        return dx
