"""Token embedding, as ``torch.nn.Embedding``: a lookup table whose gradient is a scatter-add; and
the embedding bag, as ``torch.nn.EmbeddingBag``: the sum or mean of a bag of rows per position."""
from __future__ import annotations

import numpy as np

from ..kernels.embedding import (embedding_backward, embedding_bag_backward, embedding_bag_forward,
                                 embedding_forward)
from .base import Layer, check_array, check_ids


def _positive(name, v):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _init_table(layer, num_embeddings, embedding_dim, seed, rng) -> None:
    """The lookup table both layers own: ``weight`` (V, D) ~ N(0, 1), as torch initialises it."""
    layer.num_embeddings = _positive("num_embeddings", num_embeddings)
    layer.embedding_dim = _positive("embedding_dim", embedding_dim)
    rng = rng if rng is not None else np.random.default_rng(seed)
    layer.add_param("weight", rng.standard_normal((layer.num_embeddings, layer.embedding_dim)))


class Embedding(Layer):
    """out[..., :] = weight[ids[...]], weight (V, D) ~ N(0, 1) as in torch.

    ``forward(ids)``: integer ids of shape (B, T) or (N,), each in [0, V); returns (B, T, D) or
    (N, D). ``backward(dout)`` adds dout into the rows of ``grads['weight']`` that were looked up
    (a repeated id gets the sum) and returns None: ids are not differentiable.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dtype=np.float64, seed=None, rng=None):
        super().__init__(dtype)
        _init_table(self, num_embeddings, embedding_dim, seed, rng)
        self._ids = None

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}, dtype={self.dtype.name})"

    def forward(self, ids: np.ndarray) -> np.ndarray:
        if isinstance(ids, np.ndarray) and ids.ndim not in (1, 2):
            raise ValueError(f"ids must have shape (B, T) or (N,), got {ids.shape} ({ids.ndim} dimensions)")
        shape = ("N",) if isinstance(ids, np.ndarray) and ids.ndim == 1 else ("B", "T")
        orig = ids
        ids = check_ids("ids", ids, shape, self.num_embeddings)
        flat = ids.reshape(-1)
        out = np.empty((flat.shape[0], self.embedding_dim), self.dtype)
        embedding_forward(out, flat, self.params["weight"])
        self._ids = ids.copy() if np.may_share_memory(ids, orig) else ids   # backward's, whatever the caller does to theirs
        return out.reshape(ids.shape + (self.embedding_dim,))

    def __call__(self, ids):
        return self.forward(ids)

    def backward(self, dout: np.ndarray) -> None:
        """grads['weight'][v] += Σ over positions holding id v of dout at that position."""
        if self._ids is None:
            raise RuntimeError("Embedding.backward called before forward")
        dout = check_array("dout", dout, self._ids.shape + (self.embedding_dim,), self.dtype,
                           what=" (the shape of the output)")
        embedding_backward(self.grads["weight"], dout.reshape(-1, self.embedding_dim),
                           self._ids.reshape(-1))
        return None

    # gradcheck interface: ids are held fixed; only the weight is checked.
    def check_forward(self, ids):
        return (self.forward(ids),)

    def check_backward(self, dout):
        self.backward(dout)
        return {}


BAG_MODES = ("sum", "mean")


class EmbeddingBag(Layer):
    """out[..., :] = Σ_k w_k · weight[ids[..., k]] over the filled slots (id ≥ 0; -1 is an empty
    slot), w_k = 1 (``mode='sum'``) or 1 / (number of filled slots) (``mode='mean'``); a bag with
    no filled slot gives zeros, as ``torch.nn.EmbeddingBag``. weight (V, D) ~ N(0, 1).

    ``forward(ids)``: integer ids of shape (B, T, K) or (N, K), each in [-1, V); returns
    (B, T, D) or (N, D). ``backward(dout)`` adds w_k · dout into the rows looked up and returns None.
    The contrastive encoder uses it for the hashed character n-grams of each word (fastText).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, mode: str = "mean", dtype=np.float64,
                 seed=None, rng=None):
        super().__init__(dtype)
        if mode not in BAG_MODES:
            raise ValueError(f"mode must be one of {', '.join(BAG_MODES)}, got {mode!r}")
        self.mode = mode
        _init_table(self, num_embeddings, embedding_dim, seed, rng)
        self._cache = None

    def __repr__(self):
        return f"EmbeddingBag({self.num_embeddings}, {self.embedding_dim}, mode={self.mode!r}, dtype={self.dtype.name})"

    def forward(self, ids: np.ndarray) -> np.ndarray:
        if isinstance(ids, np.ndarray) and ids.ndim not in (2, 3):
            raise ValueError(f"ids must have shape (B, T, K) or (N, K), got {ids.shape} ({ids.ndim} dimensions)")
        shape = ("N", "K") if isinstance(ids, np.ndarray) and ids.ndim == 2 else ("B", "T", "K")
        # ids + 1 in [0, V + 1): -1 (an empty slot) is allowed, nothing below it
        ids = check_ids("ids", ids + 1 if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu" else ids,
                        shape, self.num_embeddings + 1) - 1
        flat = ids.reshape(-1, ids.shape[-1])
        filled = flat >= 0
        if self.mode == "sum":
            w = filled.astype(self.dtype)
        else:
            count = filled.sum(axis=1, keepdims=True)
            w = np.where(filled, 1.0 / np.maximum(count, 1), 0.0).astype(self.dtype)
        out = np.empty((flat.shape[0], self.embedding_dim), self.dtype)
        embedding_bag_forward(out, flat, w, self.params["weight"])
        self._cache = (ids.shape[:-1], flat, w)
        return out.reshape(ids.shape[:-1] + (self.embedding_dim,))

    def __call__(self, ids):
        return self.forward(ids)

    def backward(self, dout: np.ndarray) -> None:
        """grads['weight'][v] += Σ over the slots holding id v of w_k · dout at their position."""
        if self._cache is None:
            raise RuntimeError("EmbeddingBag.backward called before forward")
        lead, flat, w = self._cache
        dout = check_array("dout", dout, lead + (self.embedding_dim,), self.dtype,
                           what=" (the shape of the output)")
        embedding_bag_backward(self.grads["weight"], dout.reshape(-1, self.embedding_dim), flat, w)
        return None

    # gradcheck interface: ids are held fixed; only the weight is checked.
    def check_forward(self, ids):
        return (self.forward(ids),)

    def check_backward(self, dout):
        self.backward(dout)
        return {}
