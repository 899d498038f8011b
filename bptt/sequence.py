"""Layer 3: sequence models for ``bptt fit``: labelled text and the adding problem.

    ids (B, T) ─ Embedding(V, E) ─┐
                                  ├─> (B, T, F) ─ encoder: RNN/LSTM/GRU × L (±reverse) ─> (B, T, D·H)
    x (B, T, I) ──────────────────┘      ─ pool over the valid steps ─> (B, D·H) ─ [Dropout] ─ MLP head ─> out (B, O)

Sequences of different lengths share a batch right-padded to its longest, with ``len`` (B,) the
true lengths. Padding changes neither the loss nor any gradient:

- the forward direction reads the valid steps first; what it computes on the padding after them
  reaches no output that is pooled, so its gradients there are exactly zero;
- the reverse direction reads each sequence reversed *within its length*, ``rev(x)[b, t] =
  x[b, len_b - 1 - t]`` for t < len_b (padding stays at the end), so it too starts at the
  sequence's last valid step (what ``torch.nn.utils.rnn.pack_padded_sequence`` does);
- pooling looks only at t < len_b:
  ``last``: v = [h→_{len-1} ; h←_0] (each direction's final state),
  ``mean``: v = (1/len) Σ_{t<len} h_t, ``max``: v_j = max_{t<len} h_{t,j} (the gradient goes to
  the arg max).

Stacked layers (``layers`` > 1) with ``dropout`` p > 0 get inverted dropout between them, as
torch's ``dropout=``, and on the pooled vector before the head. Parameter names are torch's:
``embedding.weight``, ``rnn.weight_ih_l{k}`` (``_reverse``), ``head.layers.{k}.weight``.

The model follows the protocol of :mod:`bptt.supervised`; a batch is ``{"ids" or "x", "len", "y"}``.
"""
from __future__ import annotations

import numpy as np

from .data import DataError, fit_tokenizer, tokenizer_from_dict
from .jit import SERIAL_WORK, serial_when
from .kernels.pooling import POOL_MODES
from .kernels.pooling import pool_backward as _pool_backward, pool_forward as _pool_forward
from .layers.base import Parameterised
from .layers.dropout import Dropout
from .layers.embedding import Embedding
from .layers.recurrent import GRU, LSTM, RNN
from .tabular import Encoder, TabularMLP, task_loss

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
POOLS = ("last", "mean", "max")


def reverse_index(lengths: np.ndarray, T: int) -> np.ndarray:
    """idx (B, T): idx[b, t] = len_b - 1 - t for t < len_b, else t. Its own inverse."""
    t = np.arange(T)[None, :]
    L = lengths[:, None]
    return np.where(t < L, L - 1 - t, t)


def _gather(a, idx):
    return np.take_along_axis(a, idx[:, :, None], axis=1)


class RecurrentEncoder:
    """L layers of one cell type, each forward and (bidirectional) reverse, with dropout between.

    ``forward(x, lengths, rng)`` -> out (B, T, D·H); ``backward(dout)`` -> dx (B, T, F).
    """

    def __init__(self, cell, input_size, hidden, layers=1, bidirectional=False, dropout=0.0, *,
                 dtype, rng):
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {cell!r}")
        self.hidden, self.layers = hidden, layers
        self.D = 2 if bidirectional else 1
        self.cells = []          # per layer: [forward] or [forward, reverse]
        self.params, self.grads = {}, {}
        for k in range(layers):
            F = input_size if k == 0 else self.D * hidden
            pair = []
            for d in range(self.D):
                c = CELLS[cell](F, hidden, 1, dtype=dtype, rng=rng)
                pair.append(c)
                for name in c.params:   # weight_ih_l0 -> weight_ih_l{k}[_reverse]
                    full = name.replace("_l0", f"_l{k}") + ("_reverse" if d else "")
                    self.params[full], self.grads[full] = c.params[name], c.grads[name]
            self.cells.append(pair)
        self.drops = [Dropout(dropout, dtype=dtype) for _ in range(layers - 1)] if dropout > 0 else []

    def zero_grad(self):
        for pair in self.cells:
            for c in pair:
                c.zero_grad()

    def train(self, mode=True):
        for d in self.drops:
            d.train(mode)

    def forward(self, x, lengths, rng=None, h0=None):
        """``h0``: optional initial states (L·D, B, H) (and c0 for the LSTM, as a pair)."""
        self._idx = reverse_index(lengths, x.shape[1]) if self.D == 2 else None
        for k, pair in enumerate(self.cells):
            outs = []
            for d, c in enumerate(pair):
                s = None
                if h0 is not None:
                    j = k * self.D + d
                    s = (h0[0][j:j + 1], h0[1][j:j + 1]) if isinstance(h0, tuple) else h0[j:j + 1]
                if d == 0:
                    outs.append(c.forward(x, s)[0])
                else:
                    outs.append(_gather(c.forward(np.ascontiguousarray(_gather(x, self._idx)), s)[0], self._idx))
            x = outs[0] if self.D == 1 else np.concatenate(outs, axis=2)
            if k < len(self.drops):
                x = self.drops[k].forward(x, rng)
        return x

    def backward(self, dout):
        H = self.hidden
        self.dh0, self.dc0 = [None] * (self.layers * self.D), [None] * (self.layers * self.D)
        for k in range(self.layers - 1, -1, -1):
            if k < len(self.drops):
                dout = self.drops[k].backward(dout)
            pair = self.cells[k]
            dx = pair[0].backward(np.ascontiguousarray(dout[:, :, :H]))
            self.dh0[k * self.D] = pair[0].dh0
            self.dc0[k * self.D] = getattr(pair[0], "dc0", None)
            if self.D == 2:
                drev = np.ascontiguousarray(_gather(dout[:, :, H:], self._idx))
                dx = dx + _gather(pair[1].backward(drev), self._idx)
                self.dh0[k * self.D + 1] = pair[1].dh0
                self.dc0[k * self.D + 1] = getattr(pair[1], "dc0", None)
            dout = dx
        return dout


def pool_forward(out, lengths, pool, D, H):
    """v (B, D·H) from the encoder's out (B, T, D·H) over the valid steps (module docstring;
    :mod:`bptt.kernels.pooling`); returns (v, arg), arg the steps chosen (last, max)."""
    B, T, C = out.shape
    if np.any(lengths < 1) or np.any(lengths > T):
        raise ValueError(f"lengths must be in [1, {T}], got {lengths.min()}..{lengths.max()}")
    v = np.empty((B, C), out.dtype)
    arg = np.empty((B, C), np.int64)
    _pool_forward(v, arg, np.ascontiguousarray(out), np.ascontiguousarray(lengths, np.int64),
                  POOL_MODES[pool], H if D == 2 else C)
    return v, arg


def pool_backward(dv, arg, shape, lengths, pool, D, H):
    """∂L/∂out (B, T, D·H) from ∂L/∂v (B, D·H): zero on every padded step."""
    dout = np.zeros(shape, dv.dtype)
    _pool_backward(dout, np.ascontiguousarray(dv), arg, np.ascontiguousarray(lengths, np.int64),
                   POOL_MODES[pool])
    return dout


class SequenceModel(Parameterised):
    """Embedding (token ids) or raw features -> :class:`RecurrentEncoder` -> pooling -> MLP head.

    Built from a ``spec`` dict (saved in the checkpoint as ``model_spec``); see :meth:`from_spec`.
    """

    def __init__(self, spec: dict):
        self.spec = dict(spec)
        s = self.spec
        if s["pool"] not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}; got {s['pool']!r}")
        rng = np.random.default_rng(s["seed"])
        self.task = s["task"]
        self.pool = s["pool"]
        self.embedding = None
        if s["input"] == "ids":
            self.embedding = Embedding(s["vocab_size"], s["embed_dim"], dtype=s["dtype"], rng=rng)
            F = s["embed_dim"]
        else:
            F = s["input_size"]
        self.encoder = RecurrentEncoder(s["cell"], F, s["rnn_hidden"], s["layers"], s["bidirectional"],
                                        s["dropout"], dtype=s["dtype"], rng=rng)
        self.pooled_size = self.encoder.D * s["rnn_hidden"]
        self.drop = Dropout(s["dropout"], dtype=s["dtype"]) if s["dropout"] > 0 else None
        self.head = TabularMLP(self.pooled_size, s["head_hidden"], s["out_features"], s["task"],
                               activation=s["activation"], dropout=s["dropout"], dtype=s["dtype"], rng=rng)
        self.dtype = self.head.dtype
        self.params, self.grads = {}, {}
        parts = ([("embedding", self.embedding)] if self.embedding else []) + [("rnn", self.encoder), ("head", self.head)]
        for prefix, part in parts:
            for k in part.params:
                self.params[f"{prefix}.{k}"] = part.params[k]
                self.grads[f"{prefix}.{k}"] = part.grads[k]
        G = {"rnn": 1, "gru": 3, "lstm": 4}[s["cell"]]
        self._work_per_step = G * s["rnn_hidden"] * (F + s["rnn_hidden"]) * self.encoder.D * s["layers"]
        self.check_dropout_seed = None

    from_spec = classmethod(lambda cls, spec: cls(spec))

    def __repr__(self):
        s = self.spec
        return (f"{'Bi' if s['bidirectional'] else ''}{s['cell'].upper()}(H={s['rnn_hidden']}, layers={s['layers']}, "
                f"pool={s['pool']}) -> MLP({[self.pooled_size] + list(s['head_hidden']) + [s['out_features']]})")

    # -- the model protocol ---------------------------------------------------------------------
    def train(self, mode=True):
        self.encoder.train(mode)
        self.head.train(mode)
        if self.drop is not None:
            self.drop.train(mode)

    def eval(self):
        self.train(False)

    # -- forward / backward ---------------------------------------------------------------------
    def _inputs(self, batch):
        lengths = np.asarray(batch["len"], np.int64)
        T = int(lengths.max())
        if self.embedding is not None:
            return np.ascontiguousarray(batch["ids"][:, :T]), lengths
        return np.ascontiguousarray(batch["x"][:, :T], dtype=self.dtype), lengths

    def encode(self, batch, rng=None, h0=None):
        """The pooled encoder state v (B, D·H)."""
        inp, lengths = self._inputs(batch)
        x = self.embedding.forward(inp) if self.embedding is not None else inp
        out = self.encoder.forward(x, lengths, rng, h0)
        v, cache = pool_forward(out, lengths, self.pool, self.encoder.D, self.encoder.hidden)
        self._cache = (cache, out.shape, lengths)
        return v

    def forward(self, batch, rng=None, h0=None):
        inp, lengths = self._inputs(batch)
        with serial_when(len(lengths) * inp.shape[1] * self._work_per_step < SERIAL_WORK):
            v = self.encode(batch, rng, h0)
            if self.drop is not None:
                v = self.drop.forward(v, rng)
            return self.head.forward(v, rng)

    def backward(self, dout):
        cache, shape, lengths = self._cache
        with serial_when(shape[0] * shape[1] * self._work_per_step < SERIAL_WORK):
            dv = self.head.backward(dout, input_grad=True)
            if self.drop is not None:
                dv = self.drop.backward(dv)
            dh = pool_backward(dv, cache, shape, lengths, self.pool, self.encoder.D, self.encoder.hidden)
            dx = self.encoder.backward(dh)
            if self.embedding is not None:
                self.embedding.backward(dx)
        return dx

    def _small(self, batch):
        lengths = batch["len"]
        return serial_when(len(lengths) * int(lengths.max()) * self._work_per_step < SERIAL_WORK)

    def loss_and_grad(self, batch, rng=None):
        with self._small(batch):   # the loss kernels too
            out = self.forward(batch, rng)
            loss, dout = task_loss(self.task, out, batch["y"])
            self.backward(dout)
        return loss

    def loss(self, batch):
        with self._small(batch):
            return task_loss(self.task, self.forward(batch), batch["y"])[0]

    def predict_batch(self, batch):
        self.eval()
        return self.forward(batch)

    def pooled(self, ids: np.ndarray, pool: str | None = None) -> np.ndarray:
        """The pooled encoder state (D·H,) of one token sequence (``bptt embed``)."""
        self.eval()
        saved = self.pool
        self.pool = pool or saved
        try:
            ids = ids if ids.size else np.zeros(1, np.int64)
            return self.encode({"ids": ids.reshape(1, -1), "len": np.array([ids.size])})[0]
        finally:
            self.pool = saved

    # -- gradcheck interface: the mean loss as a function of the parameters (and of x, h0) ------
    def check_forward(self, len, y, ids=None, x=None, h0=None, c0=None):
        batch = {"len": len, "y": y, **({"ids": ids} if ids is not None else {"x": x})}
        self._check_inputs = (x is not None, h0 is not None, c0 is not None)
        seed = self.check_dropout_seed
        state = (h0, c0) if c0 is not None else h0
        out = self.forward(batch, None if seed is None else np.random.default_rng(seed), state)
        loss, self._dout = task_loss(self.task, out, y)
        return (np.array([loss]),)

    def check_backward(self, dloss):
        dx = self.backward(self._dout * dloss[0])
        g = {}
        if self._check_inputs[0]:
            g["x"] = dx
        if self._check_inputs[1]:
            g["h0"] = np.concatenate(self.encoder.dh0)
        if self._check_inputs[2]:
            g["c0"] = np.concatenate(self.encoder.dc0)
        return g


# ---------------------------------------------------------------------------------------------
# jobs: labelled text, the adding problem
# ---------------------------------------------------------------------------------------------

class TextEncoder(Encoder):
    """Targets as :class:`~bptt.tabular.Encoder`, plus the text column and the tokenizer."""

    def __init__(self, text, target, task, stats, tokenizer, max_len):
        super().__init__([], [], target, task, stats)
        self.text = text
        self.tokenizer = tokenizer
        self.max_len = max_len

    def to_dict(self):
        return {**super().to_dict(), "text": self.text, "tokenizer": self.tokenizer.to_dict(),
                "max_len": self.max_len}


def text_encoder_from_dict(d):
    return TextEncoder(d["text"], d["target"], d["task"], d["stats"], tokenizer_from_dict(d["tokenizer"]),
                       d["max_len"])


def text_dataset(texts, enc: TextEncoder, dtype=None) -> dict:
    """Padded ids (N, T) and lengths (N,); an empty text is one <unk>; cut to ``enc.max_len``."""
    seqs = [enc.tokenizer.encode(t)[:enc.max_len] for t in texts]
    seqs = [s if s.size else np.zeros(1, np.int64) for s in seqs]
    T = max(s.size for s in seqs)
    ids = np.zeros((len(seqs), T), np.int64)
    for i, s in enumerate(seqs):
        ids[i, :s.size] = s
    return {"ids": ids, "len": np.array([s.size for s in seqs], np.int64)}


def _spec(opts, task, out_features, **kw):
    return {"type": "sequence", "task": task, "out_features": out_features, "cell": opts.cell,
            "rnn_hidden": opts.rnn_hidden, "layers": opts.layers, "bidirectional": opts.bidirectional,
            "pool": opts.pool, "head_hidden": list(opts.hidden), "activation": opts.activation,
            "dropout": opts.dropout, "dtype": opts.dtype, "seed": opts.seed, **kw}


def text_job(table, opts, val_table=None, encoder_dict=None):
    from .fitting import Job, _units
    from .tabular import (canonical_label, class_label, detect_task, drop_missing, label_spellings, mean_std,
                          output_size, split_rows)
    j = table.index_of(opts.text, "text column")
    if opts.target is None:
        raise DataError("give the label column with --target COL")
    t = table.index_of(opts.target, "target column")
    if j == t:
        raise DataError(f"{table.path}: the text and the target are the same column {table.names[j]!r}")
    notes = []
    table, dropped = drop_missing(table, [t], opts.missing)
    if dropped:
        notes.append(f"dropped {dropped} row{'s' * (dropped != 1)} with a missing label")
    task, classes, numeric_labels, why = detect_task(table, t, opts.task)
    notes.append(f"task: {task} ({why}{'' if opts.task else '; --task overrides'})")
    if val_table is not None:
        val_table, vdropped = drop_missing(val_table, [val_table.index_of(table.names[t], "target column")],
                                           opts.missing)
        if vdropped:
            notes.append(f"dropped {vdropped} row{'s' * (vdropped != 1)} with a missing label from {val_table.path}")
        tr_rows, va = np.arange(len(table)), val_table
    else:
        strat = None
        if task != "regression":
            pos = {c: k for k, c in enumerate(classes)}
            strat = np.array([pos[canonical_label(r[t], numeric_labels)] for r in table.rows])
        tr_rows, va_rows = split_rows(len(table), strat, opts.val_fraction, opts.seed, table.path)
        va = table.subset(va_rows)
    tr = table.subset(tr_rows)
    if encoder_dict is None:
        texts = [r[j] for r in tr.rows]
        tok = fit_tokenizer(opts.tokenizer, "\n".join(texts), max_vocab=opts.max_vocab)
        stats = {"classes": classes, "numeric_labels": bool(numeric_labels), "has_header": table.has_header}
        if task == "regression":
            y_mean, y_std = mean_std([float(r[t]) for r in tr.rows])   # overflow-safe
            stats["y_mean"], stats["y_std"] = y_mean, y_std or 1.0
        else:
            stats["labels"] = label_spellings(table, t, classes, numeric_labels)
        enc = TextEncoder(table.names[j], table.names[t], task, stats, tok, opts.max_len)
    else:
        enc = text_encoder_from_dict(encoder_dict)
    dt = np.dtype(opts.dtype)
    vj = va.index_of(enc.text, "text column")
    train = {**text_dataset([r[j] for r in tr.rows], enc), "y": enc.encode_y(tr)}
    val = {**text_dataset([r[vj] for r in va.rows], enc), "y": enc.encode_y(va)}
    for d in (train, val):
        if task == "regression":
            d["y"] = d["y"].astype(dt)
    spec = _spec(opts, task, output_size(task, classes), input="ids",
                 vocab_size=enc.tokenizer.vocab_size, embed_dim=opts.embed_dim)
    model = SequenceModel(spec)
    notes.append(f"{len(tr)} training and {len(va)} validation texts; {opts.tokenizer} vocabulary "
                 f"{enc.tokenizer.vocab_size}; mean length {train['len'].mean():.0f} tokens")
    job = Job("text", task, model, train, val, enc, spec, notes)
    job.y_train, job.y_val = _units(enc, train["y"].astype(np.float64) if task == "regression" else train["y"]), \
        _units(enc, val["y"].astype(np.float64) if task == "regression" else val["y"])
    if task != "regression":
        job.labels = [class_label(enc, k) for k in range(len(classes))]
    return job


def adding_job(opts):
    """The adding problem (:func:`bptt.demos.adding_problem`) as a sequence regression: the
    target in its own units (no scaling), MSE; validation on separately generated sequences."""
    from .demos import adding_problem
    from .fitting import Job
    n = opts.samples or 20000
    xtr, ytr = adding_problem(n, opts.length, opts.seed)
    xva, yva = adding_problem(max(100, n // 10), opts.length, opts.seed + 10 ** 6)
    dt = np.dtype(opts.dtype)
    enc = Encoder([], [], "sum", "regression", {"y_mean": 0.0, "y_std": 1.0})
    spec = _spec(opts, "regression", 1, input="x", input_size=2, head_hidden=[])
    model = SequenceModel(spec)
    L = np.full(n, opts.length, np.int64)
    train = {"x": xtr.astype(dt), "len": L, "y": ytr.astype(dt)}
    val = {"x": xva.astype(dt), "len": np.full(len(yva), opts.length, np.int64), "y": yva.astype(dt)}
    notes = [f"adding problem: length {opts.length}, {n} training and {len(yva)} validation sequences; "
             f"always predicting 1 has MSE 1/6 = 0.1667"]
    job = Job("sequence", "regression", model, train, val, enc, spec, notes)
    job.y_train, job.y_val = ytr, yva
    return job
