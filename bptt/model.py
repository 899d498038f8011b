"""Layer 3: a recurrent language model assembled from the layers already built.

    tokens (B, T) ─ Embedding(V, E) ─> (B, T, E) ─ RNN/LSTM/GRU × L ─> (B, T, H) ─ Dense(H, V) ─> logits
    loss = mean softmax cross-entropy of logits against the next tokens (B, T)

Parameter names carry a prefix per part: ``embedding.weight``, ``rnn.weight_ih_l0`` …,
``head.weight``, ``head.bias``, the names ``torch.nn`` modules of the same structure would have.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .layers import Dense, softmax_cross_entropy
from .layers.base import as_dtype
from .layers.embedding import Embedding
from .layers.recurrent import GRU, LSTM, RNN

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


@dataclass
class LMConfig:
    """What a language model is, saved in every checkpoint."""
    vocab_size: int
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embed_dim: int = 64
    dtype: str = "float32"
    seed: int = 0

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class LanguageModel:
    """Embedding → stacked recurrent layers → dense head, trained with softmax cross-entropy."""

    def __init__(self, config: LMConfig):
        if config.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {config.cell!r}")
        for name in ("vocab_size", "hidden", "layers", "embed_dim"):
            v = getattr(config, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.config = config
        self.dtype = as_dtype(config.dtype)
        rng = np.random.default_rng(config.seed)
        self.embedding = Embedding(config.vocab_size, config.embed_dim, dtype=self.dtype, rng=rng)
        self.rnn = CELLS[config.cell](config.embed_dim, config.hidden, num_layers=config.layers,
                                      dtype=self.dtype, rng=rng)
        self.head = Dense(config.hidden, config.vocab_size, dtype=self.dtype, rng=rng)
        self.parts = {"embedding": self.embedding, "rnn": self.rnn, "head": self.head}
        self.params = {f"{p}.{k}": v for p, part in self.parts.items() for k, v in part.params.items()}
        self.grads = {f"{p}.{k}": v for p, part in self.parts.items() for k, v in part.grads.items()}
        self._last_state = None

    @property
    def is_lstm(self) -> bool:
        return self.config.cell == "lstm"

    # -- parameters ---------------------------------------------------------------------------
    def parameters(self):
        return self.params

    def gradients(self):
        return self.grads

    def zero_grad(self):
        for part in self.parts.values():
            part.zero_grad()

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def load_state(self, state):
        for name, p in self.params.items():
            if name not in state:
                raise ValueError(f"missing parameter {name!r}")
            v = np.asarray(state[name])
            if v.shape != p.shape:
                raise ValueError(f"parameter {name!r} has shape {v.shape}, expected {p.shape}")
            p[...] = v

    def state_dict(self):
        return {k: v.copy() for k, v in self.params.items()}

    # -- recurrent state ----------------------------------------------------------------------
    def initial_state(self, batch: int):
        """Zero hidden state for ``batch`` streams: h (L, B, H), or (h, c) for the LSTM."""
        h = np.zeros((self.config.layers, batch, self.config.hidden), self.dtype)
        return (h, h.copy()) if self.is_lstm else h

    @staticmethod
    def detach(state):
        """A copy of the state: carried into the next chunk, while the gradient stops here."""
        if isinstance(state, tuple):
            return tuple(s.copy() for s in state)
        return state.copy()

    def state_arrays(self, state) -> dict:
        if state is None:
            return {}
        if isinstance(state, tuple):
            return {"h": state[0], "c": state[1]}
        return {"h": state}

    def state_from_arrays(self, arrays: dict):
        if not arrays:
            return None
        if self.is_lstm:
            return (np.asarray(arrays["h"], self.dtype), np.asarray(arrays["c"], self.dtype))
        return np.asarray(arrays["h"], self.dtype)

    # -- forward / backward -------------------------------------------------------------------
    def forward(self, ids: np.ndarray, state=None):
        """logits (B, T, V) and the final state, from token ids (B, T)."""
        e = self.embedding.forward(ids)
        hs, new_state = self.rnn.forward(e, state)
        logits = self.head.forward(hs)
        return logits, new_state

    def hidden_states(self, ids: np.ndarray, state=None):
        """The top layer's hidden states (B, T, H) and the final state: the text's embedding."""
        e = self.embedding.forward(ids)
        return self.rnn.forward(e, state)

    def backward(self, dlogits: np.ndarray) -> None:
        dh = self.head.backward(dlogits)
        de = self.rnn.backward(dh)
        self.embedding.backward(de)

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray, state=None):
        """One training computation: forward, mean cross-entropy, full BPTT over the chunk.

        Gradients are accumulated into ``gradients()`` (call ``zero_grad`` first). Returns the
        loss and the final state, detached, to carry into the next chunk (truncated BPTT).
        """
        logits, new_state = self.forward(x, state)
        loss, dlogits = softmax_cross_entropy(logits, y)
        self.backward(dlogits)
        return loss, self.detach(new_state)

    def loss(self, x: np.ndarray, y: np.ndarray, state=None):
        """Forward only: (mean cross-entropy, number of tokens, final state)."""
        logits, new_state = self.forward(x, state)
        loss, _ = softmax_cross_entropy(logits, y)
        return loss, y.size, self.detach(new_state)

    # -- gradcheck interface: the scalar loss as a function of every parameter and of h0 ------
    def check_forward(self, x, y, h0=None, c0=None):
        state = None
        if h0 is not None:
            state = (h0, c0) if self.is_lstm else h0
        logits, _ = self.forward(x, state)
        loss, self._dlogits = softmax_cross_entropy(logits, y)
        return (np.array([loss]),)

    def check_backward(self, dloss):
        self.backward(self._dlogits * dloss[0])
        out = {"h0": self.rnn.dh0}
        if self.is_lstm:
            out["c0"] = self.rnn.dc0
        return out
