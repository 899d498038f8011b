"""The gradient through time, made visible: ‖∂L/∂h_t‖ for every step and layer, and what
truncating BPTT after K steps cuts from each weight's gradient.

The loss sits at the *last* step only, so whatever gradient reaches an early state h_t has
travelled back through T − 1 − t steps of the recurrence. For a plain RNN each step multiplies it
by Jᵀ = W_hhᵀ·diag(f'(q_t)): with the weights small it shrinks geometrically (vanishing), with
them large it grows until the tanh saturates (exploding). The LSTM's cell state carries it back
multiplied only by the forget gate f, so with f near 1 it reaches the first steps.

How the norms are measured, exactly and with nothing but the layers' public API: the stack is a
list of single-layer recurrent layers. A backward pass gives each layer's *upward* gradient
dy_t = ∂L/∂h_t through the layer above only; the total is

    ∂L/∂h_t = dy_t + (the gradient through h_{t+1}, h_{t+2}, ...)

and the second term is ``dh0`` of the same layer run from step t + 1 with h0 = h_t (and c0 = c_t)
and the upward gradients of steps t + 1, ... as ``dout``: one extra forward and backward per
step (O(T²) work, fine for the sequences of a demonstration).

Truncated BPTT after K steps (:func:`truncation_errors`): run the first T − K steps forward, carry
their final state as a constant, and backpropagate through the last K only. Its gradient against
the full one, ‖g_K − g_T‖ / ‖g_T‖ per weight, is what the truncation cuts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import demos
from .layers import GRU, LSTM, RNN, Dense, softmax_cross_entropy, mse_loss

CELLS = {"rnn": RNN, "gru": GRU, "lstm": LSTM}
SPARK = "▁▂▃▄▅▆▇█"


def adding_problem(batch: int, length: int, seed: int = 0):
    """The adding problem (Hochreiter & Schmidhuber): x (B, T, 2) holds a random value in [0, 1)
    and a marker (0/1) per step; the target (B, 1) is the sum of the two marked values. One marker
    lies in the first tenth of the sequence, the other in its second half, so the answer needs a
    value seen at the start: the gradient must reach the first steps."""
    if length < 2:
        raise ValueError(f"length must be at least 2 for the adding problem, got {length}")
    x, y = demos.adding_problem(batch, length, seed, first_within=length // 10)
    return x, y[:, None]


class Stack:
    """Single-layer recurrent layers, one above the other, and a dense head that reads the last
    step: head(h_{T-1}) -> loss. ``loss`` is ``"mse"`` (regression target (B, O)) or ``"xent"``
    (class ids (B,))."""

    def __init__(self, cell: str, layers, head: Dense, loss: str):
        self.cell, self.layers, self.head, self.loss = cell, list(layers), head, loss

    @classmethod
    def fresh(cls, cell, input_size, hidden, num_layers, out_size, loss, *, init_scale=1.0,
              forget_bias=0.0, seed=0):
        """A new stack with torch's initialisation, every W_ih and W_hh multiplied by
        ``init_scale``, and ``forget_bias`` added to the LSTM's forget-gate bias b_hf."""
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {cell!r}")
        if not (math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"init_scale must be a positive number, got {init_scale!r}")
        rng = np.random.default_rng(seed)
        layers = []
        for k in range(num_layers):
            layer = CELLS[cell](input_size if k == 0 else hidden, hidden, rng=rng)
            for name in ("weight_ih_l0", "weight_hh_l0"):
                layer.params[name] *= init_scale
            if cell == "lstm":
                layer.params["bias_hh_l0"][hidden:2 * hidden] += forget_bias
            layers.append(layer)
        return cls(cell, layers, Dense(hidden, out_size, rng=rng), loss)

    @classmethod
    def from_language_model(cls, model):
        """The recurrent layers and head of a :class:`bptt.model.LanguageModel`, one layer per
        object: float64 copies of its weights (gradients 1e-40 down are still seen, where
        float32 would flush them to 0)."""
        from .model import LanguageModel
        if not isinstance(model, LanguageModel):
            raise ValueError(f"gradflow reads a language model here, got a {type(model).__name__}")
        cfg, rnn = model.config, model.rnn
        layers = []
        for k in range(cfg.layers):
            layer = CELLS[cfg.cell](cfg.embed_dim if k == 0 else cfg.hidden, cfg.hidden)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                layer.params[f"{name}_l0"][...] = rnn.params[f"{name}_l{k}"]
            layers.append(layer)
        head = Dense(cfg.hidden, cfg.vocab_size)
        head.load_state(model.head.params)
        return cls(cfg.cell, layers, head, "xent")

    @classmethod
    def from_sequence_model(cls, model):
        """The encoder and head of a `bptt fit` sequence regressor (``--demo adding``, or any
        checkpoint of kind ``"sequence"``): its single-layer cells, one above the other, and its
        MLP head on the last step. Needs one direction and ``last`` pooling (the loss then sits
        at the last step, as here), and a float64 model (see :func:`sequence_model_float64`)."""
        spec = model.spec
        if model.encoder.D != 1 or spec["pool"] != "last":
            raise ValueError("gradflow reads fit models with one direction and --pool last; this one has "
                             f"{model.encoder.D} direction(s) and --pool {spec['pool']}")
        if model.embedding is not None:
            raise ValueError("gradflow reads fit sequence models on numbers (such as --demo adding), "
                             "not text classifiers")
        if spec["task"] != "regression":
            raise ValueError("gradflow reads fit sequence regressors (such as --demo adding)")
        model.train(False)   # evaluation: no dropout
        return cls(spec["cell"], [pair[0] for pair in model.encoder.cells], _MLPHead(model.head), "mse")

    # -- one layer ------------------------------------------------------------------------------
    def _run(self, k, x, state):
        """Layer k forward: (out, final state), the state (h, c) for the LSTM."""
        out, st = self.layers[k](x, state)
        return out, st

    def forward(self, x, states=None):
        """Every layer's input and output sequences, and the final states, from x (B, T, I)."""
        ins, outs, finals = [], [], []
        for k in range(len(self.layers)):
            ins.append(x)
            x, st = self._run(k, x, None if states is None else states[k])
            outs.append(x)
            finals.append(st)
        return ins, outs, finals

    def _loss(self, x, target, states=None):
        """Forward, the loss at the last step and backward: (loss, ins, outs, upward gradients)."""
        ins, outs, _ = self.forward(x, states)
        logits = self.head.forward(outs[-1][:, -1])
        if self.loss == "mse":
            loss, dlogits = mse_loss(logits, target)
        else:
            loss, dlogits = softmax_cross_entropy(logits, target)
        dy = np.zeros_like(outs[-1])
        dy[:, -1] = self.head.backward(dlogits)
        ups = [None] * len(self.layers)
        for k in range(len(self.layers) - 1, -1, -1):
            ups[k] = dy
            dy = self.layers[k].backward(dy)
        return loss, ins, outs, ups

    def zero_grad(self):
        for layer in self.layers:
            layer.zero_grad()
        self.head.zero_grad()

    def state_at(self, k, ins, outs, t):
        """Layer k's state after step t: h_t, or (h_t, c_t) for the LSTM (c_t by running the
        first t + 1 steps again)."""
        h = outs[k][:, t][None].copy()
        if self.cell != "lstm":
            return h
        _, (_, c) = self.layers[k](ins[k][:, :t + 1])
        return (h, c)

    def grad_norms(self, x, target):
        """(loss, norms (L, T)): ‖∂L/∂h_t‖ (over batch and units) for every layer and step."""
        self.zero_grad()
        loss, ins, outs, ups = self._loss(x, target)
        T = x.shape[1]
        norms = np.zeros((len(self.layers), T))
        for k, layer in enumerate(self.layers):
            dh = ups[k].copy()
            for t in range(T - 1):
                layer(ins[k][:, t + 1:], self.state_at(k, ins, outs, t))
                layer.backward(ups[k][:, t + 1:])
                dh[:, t] += layer.dh0[0]
            norms[k] = np.sqrt((dh ** 2).sum(axis=(0, 2)))
        self.zero_grad()
        return loss, norms

    def weight_grads(self, x, target, K):
        """The gradient of every recurrent weight when BPTT runs back K steps from the loss (the
        first T − K steps only carry their state forward): {name: array}."""
        T = x.shape[1]
        states = None
        if K < T:
            _, _, states = self.forward(x[:, :T - K])
        self.zero_grad()
        self._loss(x[:, T - K:], target, states)
        grads = {f"l{k}.{n[:-3]}": g.copy() for k, layer in enumerate(self.layers)
                 for n, g in layer.grads.items()}
        self.zero_grad()
        return grads


class _MLPHead:
    """A `bptt fit` MLP head as :class:`Stack` uses a Dense head: forward, backward returning
    ∂L/∂(its input), zero_grad. Evaluation mode: no dropout."""

    def __init__(self, mlp):
        self.mlp = mlp

    def forward(self, x):
        return self.mlp.forward(x)

    def backward(self, dout):
        return self.mlp.backward(dout, input_grad=True)

    def zero_grad(self):
        self.mlp.zero_grad()


READS = ("lm", "sequence")   # the kinds of checkpoint gradflow reads


def check_kind(path, kind) -> None:
    """ValueError naming what the checkpoint at ``path`` is, unless gradflow reads its ``kind``
    (a language model's loss on the next token, or a sequence regressor's on the last step)."""
    if kind not in READS:
        from .checkpoint import checkpoint_kind
        raise ValueError(f"{path} is {checkpoint_kind(kind)}; gradflow reads language models of "
                         "`bptt train` and sequence regressors of `bptt fit` (such as --demo adding)")


def sequence_model_float64(ckpt):
    """The model of a `bptt fit` checkpoint rebuilt in float64 with its weights (gradients far
    below float32's range are still seen)."""
    from .fitting import build_model
    model = build_model({**ckpt["model_spec"], "dtype": "float64"})
    model.load_state(ckpt["model"])
    return model


def truncation_steps(T):
    """K = 1, 2, 4, ... below T, then T."""
    ks, k = [], 1
    while k < T:
        ks.append(k)
        k *= 2
    return ks + [T]


def truncation_errors(stack: Stack, x, target):
    """{K: {weight: ‖g_K − g_T‖ / ‖g_T‖}} for K in :func:`truncation_steps`."""
    T = x.shape[1]
    full = stack.weight_grads(x, target, T)
    out = {}
    for K in truncation_steps(T):
        g = stack.weight_grads(x, target, K)
        out[K] = {n: float(np.linalg.norm(g[n] - full[n]) / max(np.linalg.norm(full[n]), 1e-300))
                  for n in full}
    return out


@dataclass
class Flow:
    """What :func:`gradient_flow` measured for one model."""
    cell: str
    loss: float
    norms: np.ndarray                      # (L, T)
    truncation: dict = field(default_factory=dict)


def gradient_flow(stack: Stack, x, target, *, truncate: bool = False) -> Flow:
    loss, norms = stack.grad_norms(x, target)
    trunc = truncation_errors(stack, x, target) if truncate else {}
    return Flow(stack.cell, float(loss), norms, trunc)


# -- text output --------------------------------------------------------------------------------

def sparkline(values, lo, hi, width=50) -> str:
    """One character per step (or per group of steps, averaged in log space, when there are more
    than ``width``), on a log scale from lo to hi."""
    v = np.log10(np.maximum(np.asarray(values, float), 1e-300))
    groups = np.array_split(v, min(width, len(v)))
    a, b = math.log10(max(lo, 1e-300)), math.log10(max(hi, 1e-300))
    chars = []
    for g in groups:
        m = float(np.mean(g))
        level = 0 if b <= a else int(round((m - a) / (b - a) * (len(SPARK) - 1)))
        chars.append(SPARK[min(max(level, 0), len(SPARK) - 1)])
    return "".join(chars)


def norms_table(flows, columns=5) -> str:
    """One row per cell and layer: ‖∂L/∂h_t‖ at a few steps, the ratio first/last, and a
    sparkline of every step on one log scale shared by all rows."""
    T = flows[0].norms.shape[1]
    steps = sorted(set(int(round(s)) for s in np.linspace(0, T - 1, min(columns, T))))
    allv = np.concatenate([f.norms.ravel() for f in flows])
    pos = allv[allv > 0]
    lo, hi = (float(pos.min()), float(pos.max())) if pos.size else (1.0, 1.0)
    head = (["cell", "layer"] + [f"t={s}" for s in steps]
            + ["t=0 / last", f"‖∂L/∂h_t‖, t = 0 … {T - 1} (log scale)"])
    rows = []
    for f in flows:
        for k, n in enumerate(f.norms):
            ratio = n[0] / n[-1] if n[-1] > 0 else float("nan")
            rows.append([f.cell, str(k + 1)] + [f"{n[s]:.2e}" for s in steps] + [f"{ratio:.1e}",
                                                                                   sparkline(n, lo, hi)])
    return _table(head, rows, left=2, last_left=True)


def truncation_table(flow) -> str:
    names = list(next(iter(flow.truncation.values())))
    head = ["K"] + names
    rows = [[str(K)] + [f"{errs[n]:.2e}" for n in names] for K, errs in flow.truncation.items()]
    return _table(head, rows, left=0)


def _table(head, rows, left, last_left=False) -> str:
    """Columns before ``left`` (and the last, if ``last_left``) flush left, the rest right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < left or (last_left and i == len(cells) - 1)   # noqa: E731
                                  else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def check_plot_path(path) -> None:
    """ValueError unless :func:`plot` can write ``path``: its extension a format matplotlib writes
    and its folder one that exists. Checked before the O(T²) work, so that a typo costs nothing.
    Needs matplotlib (ImportError otherwise)."""
    import os

    from matplotlib.figure import Figure
    formats = Figure().canvas.get_supported_filetypes()
    ext = os.path.splitext(os.fspath(path))[1][1:].lower()
    if ext not in formats:
        got = f"'.{ext}'" if ext else "no extension"
        raise ValueError(f"{path}: a plot file needs the extension of a format matplotlib writes "
                         f"({', '.join(sorted(formats))}); got {got}")
    folder = os.path.dirname(os.fspath(path)) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"{path}: the folder {folder} does not exist")


def plot(flows, path) -> None:
    """‖∂L/∂h_t‖ against t on a log scale, one curve per cell (dashed for lower layers)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, f in enumerate(flows):
        L = f.norms.shape[0]
        for k, n in enumerate(f.norms):
            label = f.cell if L == 1 else f"{f.cell}, layer {k + 1}"
            ax.semilogy(np.arange(len(n)), np.maximum(n, 1e-300), "-" if k == L - 1 else "--",
                        color=f"C{i}", label=label)
    ax.set_xlabel("step t (the loss is at the last step)")
    ax.set_ylabel("‖∂L/∂h_t‖")
    ax.set_title("gradient reaching each step")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
