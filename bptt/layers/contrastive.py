"""The in-batch contrastive loss as a layer: cosine similarities of two batches of embeddings,
scaled by a (learnable) inverse temperature, and the symmetric InfoNCE loss over them.

    u = za / ‖za‖,  v = zb / ‖zb‖,  S = e^{log_scale} u vᵀ,  L = InfoNCE(S)  (see
    :mod:`bptt.kernels.contrastive` for the loss and its gradient, :mod:`bptt.kernels.pooling`
    for the normalisation's).
"""
from __future__ import annotations

import math

import numpy as np

from ..kernels.contrastive import info_nce_rows, similarity_backward, similarity_forward
from ..kernels.pooling import l2_normalize_backward, l2_normalize_forward
from .base import Layer, check_array


class InfoNCELoss(Layer):
    """``forward(za, zb) -> L`` for two (B, H) batches, row i of each a view of the same item;
    ``backward(dloss=1.0) -> (dza, dzb)``.

    The parameter ``log_scale`` (shape (1,)) holds log(1/τ); it starts at log(1/temperature).
    With ``learn_temperature=False`` its gradient is still computed but the caller's optimiser
    should leave it out (see :meth:`trainable`). The scale is capped at 100 (τ ≥ 0.01) in the
    forward, as in CLIP, so a learnt temperature cannot run away; the cap's gradient is zero.
    """

    MAX_SCALE = 100.0

    def __init__(self, temperature: float = 0.05, learn_temperature: bool = False, *, dtype=np.float64):
        super().__init__(dtype)
        if not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self.learn_temperature = bool(learn_temperature)
        self.add_param("log_scale", np.array([-math.log(temperature)]))
        self._cache = None

    def trainable(self) -> list[str]:
        return ["log_scale"] if self.learn_temperature else []

    @property
    def scale(self) -> float:
        return min(math.exp(float(self.params["log_scale"][0])), self.MAX_SCALE)

    def forward(self, za: np.ndarray, zb: np.ndarray) -> float:
        za = check_array("za", za, ("B", "H"), self.dtype, what=" (batch, features)")
        zb = check_array("zb", zb, (za.shape[0], za.shape[1]), self.dtype, what=" (the shape of za)")
        B, H = za.shape
        if B < 2:
            raise ValueError(f"the contrastive loss needs at least 2 pairs in a batch, got {B}")
        u, v = np.empty_like(za), np.empty_like(zb)
        nu, nv = np.empty(B, self.dtype), np.empty(B, self.dtype)
        l2_normalize_forward(u, nu, za)
        l2_normalize_forward(v, nv, zb)
        S = np.empty((B, B), self.dtype)
        s = self.scale
        similarity_forward(S, u, v, s)
        row, col = np.empty(B, self.dtype), np.empty(B, self.dtype)
        dS = np.empty((B, B), self.dtype)
        info_nce_rows(row, col, dS, S)
        self._cache = (u, v, nu, nv, S, dS, s)
        return math.fsum(row.tolist() + col.tolist()) / (2 * B)

    def backward(self, dloss: float = 1.0):
        """(dza, dzb), each (B, H); adds ∂L/∂log_scale into ``grads['log_scale']``."""
        if self._cache is None:
            raise RuntimeError("InfoNCELoss.backward called before forward")
        u, v, nu, nv, S, dS, s = self._cache
        dS = dS * dloss
        du, dv = np.zeros_like(u), np.zeros_like(v)
        similarity_backward(du, dv, dS, u, v, s)
        dza, dzb = np.zeros_like(u), np.zeros_like(v)
        l2_normalize_backward(dza, du, u, nu)
        l2_normalize_backward(dzb, dv, v, nv)
        if s < self.MAX_SCALE:
            self.grads["log_scale"][0] += float(np.sum(dS * S))
        return dza, dzb

    # gradcheck interface: inputs za, zb; output the scalar loss.
    def check_forward(self, za, zb):
        return (np.array([self.forward(za, zb)]),)

    def check_backward(self, dloss):
        dza, dzb = self.backward(float(dloss[0]))
        return {"za": dza, "zb": dzb}
