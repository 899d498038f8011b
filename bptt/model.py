"""Layer 3: a recurrent language model assembled from the layers already built.

    tokens (B, T) ─ Embedding(V, E) ─> (B, T, E) ─ RNN/LSTM/GRU × L ─> (B, T, H) ─ Dense(H, V) ─> logits
    loss = mean softmax cross-entropy of logits against the next tokens (B, T)

With ``dropout`` p > 0, as ``torch.nn.LSTM(..., dropout=p)``: inverted dropout on the output of
every recurrent layer but the last, and on the top layer's output before the head. Masks are drawn
from the generator passed to ``forward``/``loss_and_grad`` (the trainer's seeded one); without a
generator (evaluation, sampling) dropout is off. With p = 0 the model is the plain stack, bit for
bit.

Parameter names carry a prefix per part: ``embedding.weight``, ``rnn.weight_ih_l0`` …,
``head.weight``, ``head.bias``, the names ``torch.nn`` modules of the same structure would have.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import SavedConfig
from .layers import Dense, softmax_cross_entropy
from .layers.base import Parameterised, as_dtype
from .layers.dropout import Dropout
from .layers.embedding import Embedding
from .layers.recurrent import GRU, LSTM, RNN

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def check_stack_config(config) -> float:
    """What every embedding → recurrent stack model checks of its config (a language model's, a
    contrastive encoder's): the cell, whole positive sizes, and dropout in [0, 1), which it
    returns as a float. ValueError naming the setting otherwise."""
    if config.cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {config.cell!r}")
    for name in ("vocab_size", "hidden", "layers", "embed_dim"):
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    p = config.dropout
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0 <= p < 1:
        raise ValueError(f"dropout must be in [0, 1), got {p!r}")
    return float(p)


@dataclass
class LMConfig(SavedConfig):
    """What a language model is, saved in every checkpoint."""
    vocab_size: int
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embed_dim: int = 64
    dtype: str = "float32"
    seed: int = 0
    dropout: float = 0.0


class DroppedStack:
    """L single-layer cells with dropout between them, as torch's ``dropout=``: the API of a
    stacked :class:`~bptt.layers.RNN` (state (L, B, H), ``dh0``/``dc0``) and its parameter names
    (layer k's ``weight_ih_l0`` is ``weight_ih_l{k}``). Built in the same order from the same
    generator, it starts from the same weights as the stack."""

    def __init__(self, cell, input_size, hidden, layers, p, *, dtype, rng):
        self.cells = []
        self.drops = [Dropout(p, dtype=dtype) for _ in range(layers - 1)]
        self.params, self.grads = {}, {}
        self.is_lstm = cell is LSTM
        for k in range(layers):
            c = cell(input_size if k == 0 else hidden, hidden, 1, dtype=dtype, rng=rng)
            self.cells.append(c)
            for name in c.params:
                self.params[name.replace("_l0", f"_l{k}")] = c.params[name]
                self.grads[name.replace("_l0", f"_l{k}")] = c.grads[name]
        self.dh0 = self.dc0 = None

    def zero_grad(self):
        for c in self.cells:
            c.zero_grad()

    def forward(self, x, state=None, rng=None):
        hs, cs = [], []
        for k, c in enumerate(self.cells):
            if state is None:
                s = None
            elif self.is_lstm:
                s = (state[0][k:k + 1], state[1][k:k + 1])
            else:
                s = state[k:k + 1]
            x, s = c.forward(x, s)
            if self.is_lstm:
                hs.append(s[0]), cs.append(s[1])
            else:
                hs.append(s)
            if k < len(self.drops):
                self.drops[k].train(rng is not None)
                x = self.drops[k].forward(x, rng)
        h = np.concatenate(hs)
        return x, ((h, np.concatenate(cs)) if self.is_lstm else h)

    def backward(self, dout):
        dh0, dc0 = [], []
        for k in range(len(self.cells) - 1, -1, -1):
            dout = self.cells[k].backward(dout)
            dh0.append(self.cells[k].dh0)
            if self.is_lstm:
                dc0.append(self.cells[k].dc0)
            if k > 0:
                dout = self.drops[k - 1].backward(dout)
        self.dh0 = np.concatenate(dh0[::-1])
        self.dc0 = np.concatenate(dc0[::-1]) if self.is_lstm else None
        return dout


class LanguageModel(Parameterised):
    """Embedding → stacked recurrent layers → dense head, trained with softmax cross-entropy."""

    def __init__(self, config: LMConfig):
        p = check_stack_config(config)
        self.config = config
        self.dtype = as_dtype(config.dtype)
        rng = np.random.default_rng(config.seed)
        self.embedding = Embedding(config.vocab_size, config.embed_dim, dtype=self.dtype, rng=rng)
        if p > 0 and config.layers > 1:
            self.rnn = DroppedStack(CELLS[config.cell], config.embed_dim, config.hidden, config.layers,
                                    p, dtype=self.dtype, rng=rng)
        else:
            self.rnn = CELLS[config.cell](config.embed_dim, config.hidden, num_layers=config.layers,
                                          dtype=self.dtype, rng=rng)
        self.head = Dense(config.hidden, config.vocab_size, dtype=self.dtype, rng=rng)
        self.drop = Dropout(p, dtype=self.dtype) if p > 0 else None
        self.parts = {"embedding": self.embedding, "rnn": self.rnn, "head": self.head}
        self.check_dropout_seed = None   # gradcheck: the same dropout masks on every forward
        self.params = {f"{p}.{k}": v for p, part in self.parts.items() for k, v in part.params.items()}
        self.grads = {f"{p}.{k}": v for p, part in self.parts.items() for k, v in part.grads.items()}
        self._last_state = None

    @property
    def is_lstm(self) -> bool:
        return self.config.cell == "lstm"

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
    def _rnn_forward(self, e, state, rng):
        if isinstance(self.rnn, DroppedStack):
            return self.rnn.forward(e, state, rng)
        return self.rnn.forward(e, state)

    def forward(self, ids: np.ndarray, state=None, rng=None):
        """logits (B, T, V) and the final state, from token ids (B, T). Dropout (if any) is on
        when a generator ``rng`` is given to draw its masks."""
        e = self.embedding.forward(ids)
        hs, new_state = self._rnn_forward(e, state, rng)
        if self.drop is not None:
            self.drop.train(rng is not None)
            hs = self.drop.forward(hs, rng)
        logits = self.head.run(hs, own_input=True, own_output=False)   # hs: the model's own array
        return logits, new_state

    def hidden_states(self, ids: np.ndarray, state=None):
        """The top layer's hidden states (B, T, H) and the final state: the text's embedding."""
        e = self.embedding.forward(ids)
        return self._rnn_forward(e, state, None)

    def backward(self, dlogits: np.ndarray) -> None:
        dh = self.head.backward(dlogits)
        if self.drop is not None:
            dh = self.drop.backward(dh)
        de = self.rnn.backward(dh)
        self.embedding.backward(de)

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray, state=None, rng=None):
        """One training computation: forward, mean cross-entropy, full BPTT over the chunk.

        Gradients are accumulated into ``gradients()`` (call ``zero_grad`` first). Returns the
        loss and the final state, detached, to carry into the next chunk (truncated BPTT).
        ``rng`` draws the dropout masks (dropout is off without it).
        """
        logits, new_state = self.forward(x, state, rng)
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
        seed = self.check_dropout_seed
        logits, _ = self.forward(x, state, None if seed is None else np.random.default_rng(seed))
        loss, self._dlogits = softmax_cross_entropy(logits, y)
        return (np.array([loss]),)

    def check_backward(self, dloss):
        self.backward(self._dlogits * dloss[0])
        out = {"h0": self.rnn.dh0}
        if self.is_lstm:
            out["c0"] = self.rnn.dc0
        return out
