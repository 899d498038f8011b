"""What is benchmarked: the shapes, the targets, the data, the same step built in bptt and in
torch, the correctness check between the two, and the FLOPs of a step.

A job is (kind, spec): kind ``"cell"`` with spec {cell, B, T, I, H}, ``"char_lm"`` with
:data:`CHAR_LM`, ``"mlp"`` with :data:`MLP_SPEC`. :func:`make_data` draws every array the step
needs (weights under ``"p.<name>"``, torch's parameter names); :func:`build_bptt` and
:func:`build_torch` (from :mod:`.torch_steps`) turn them into

    step()     zero_grad, forward, loss or upstream gradient, backward
    results()  {name: array} after a step: outputs, input and weight gradients, compared by name

torch's ``zero_grad`` sets the gradients to None and its backward then writes them. bptt's
recurrent layers' and MLP's steps do the same in their own way: no zero_grad, and a backward that
sets the gradients (``accumulate=False``: the same bits as zero_grad then backward; ``bptt fit``
trains its MLPs so); the char-LM's step clears its gradients with ``zero_grad`` and adds to them.
"""
from __future__ import annotations

import numpy as np

from ..layers import MLP, softmax_cross_entropy
from ..layers.recurrent import GRU, LSTM, RNN
from ..model import LanguageModel, LMConfig
from .torch_steps import build_torch, params as _params

# (B, T, I, H): a teaching example, a char-RNN, the fastrnns benchmark and DeepBench's RNN training.
SHAPES = {
    "teach": (1, 25, 65, 100),
    "char": (50, 50, 65, 128),
    "fastrnns": (64, 100, 512, 512),
    "deepbench": (32, 25, 1024, 1024),
}
QUICK_SHAPES = ("teach", "char")
CELLS = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
TOLERANCE = 1e-3  # float32 relative error allowed between bptt and torch

# The extras: a character language model and a dense MLP, each against the same model in torch.
CHAR_LM = {"V": 65, "E": 64, "H": 256, "B": 50, "T": 50}
MLP_SPEC = {"sizes": [784, 512, 512, 10], "B": 128}
EXTRAS = ("char_lm", "mlp")

# Each target: (description, the rows it applies to, a short label for the table). Rows are named
# by shape, extras by name; None means every row and every extra.
TARGETS = {
    "ratio_ge_1": ("torch / bptt >= 1 (bptt at least as fast as torch)", None, ">=1x"),
    "ratio_ge_3": ("torch / bptt >= 3", ("teach",), ">=3x"),
    "peak_ge_55": ("bptt >= 55% of the measured float32 FMA peak on the threads in use",
                   ("fastrnns", "deepbench"), ">=55%peak"),
}

TORCH_MISSING = "bptt bench needs torch: pip install 'bptt[bench]'"


class BenchError(RuntimeError):
    """A benchmark cannot run (torch missing, a worker died); the message is for the user."""


def require_torch():
    """The torch module, or BenchError with the one-line install hint."""
    try:
        import torch
    except ImportError:
        raise BenchError(TORCH_MISSING) from None
    return torch


def parse_shape(text: str) -> tuple:
    """'B,T,I,H' -> (B, T, I, H) of positive ints; ValueError otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"--shape must be four positive integers B,T,I,H (e.g. 8,20,32,64), got {text!r}")
    return dims


def parse_list(text, allowed, what: str) -> tuple:
    """'a,b' -> ('a', 'b'), each in ``allowed``, duplicates dropped; None -> all; 'none' -> ()."""
    if text is None:
        return tuple(allowed)
    items = [s.strip().lower() for s in str(text).split(",") if s.strip()]
    if items == ["none"]:
        return ()
    bad = [s for s in items if s not in allowed]
    if bad:
        raise ValueError(f"{what} must be a comma-separated list of {', '.join(allowed)}; got {bad[0]!r}")
    return tuple(dict.fromkeys(items))


def step_flops(cell: str, B: int, T: int, I: int, H: int) -> int:
    """3·2·T·B·G·H·(I+H): the gate matmuls forward, and twice that backward (dx and dW)."""
    return 3 * 2 * T * B * GATES[cell] * H * (I + H)


def job_flops(kind: str, spec: dict) -> int:
    """The FLOPs of a job's step, counting the matrix products it computes: forward, and backward dW and
    dx (the MLP's first layer has no dx)."""
    if kind == "cell":
        return step_flops(spec["cell"], *(spec[k] for k in "BTIH"))
    if kind == "char_lm":
        s = spec
        return step_flops("lstm", s["B"], s["T"], s["E"], s["H"]) + 3 * 2 * s["B"] * s["T"] * s["H"] * s["V"]
    if kind == "mlp":   # every layer forward, every dW, and dx for all but the first layer (whose
        sz = spec["sizes"]  # input is data: neither framework computes it)
        return 2 * spec["B"] * (3 * sum(a * b for a, b in zip(sz[:-1], sz[1:])) - sz[0] * sz[1])
    raise ValueError(f"unknown job kind {kind!r}")


RECURRENT = {"rnn": RNN, "gru": GRU, "lstm": LSTM}


def make_data(kind: str, spec: dict, seed: int) -> dict:
    """Every array the job's step needs, float32, drawn from ``seed``; weights as torch
    initialises them."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    if kind == "cell":
        B, T, I, H = (spec[k] for k in "BTIH")
        layer = RECURRENT[spec["cell"]](I, H, dtype=f32, rng=rng)  # torch's initialisation
        data = {f"p.{k}": v for k, v in layer.params.items()}
        data["x"] = rng.standard_normal((B, T, I)).astype(f32)
        data["h0"] = (0.5 * rng.standard_normal((1, B, H))).astype(f32)
        data["c0"] = (0.5 * rng.standard_normal((1, B, H))).astype(f32)
        data["dout"] = rng.standard_normal((B, T, H)).astype(f32)
        return data
    if kind == "char_lm":
        model = _bptt_char_lm(spec, seed)
        data = {f"p.{k}": v for k, v in model.params.items()}
        data["x"] = rng.integers(0, spec["V"], (spec["B"], spec["T"]))
        data["y"] = rng.integers(0, spec["V"], (spec["B"], spec["T"]))
        return data
    if kind == "mlp":
        mlp = MLP(spec["sizes"], "relu", dtype=f32, rng=rng)
        data = {f"p.{k}": v for k, v in mlp.params.items()}
        data["x"] = rng.standard_normal((spec["B"], spec["sizes"][0])).astype(f32)
        data["y"] = rng.integers(0, spec["sizes"][-1], spec["B"])
        return data
    raise ValueError(f"unknown job kind {kind!r}")


def _bptt_char_lm(spec, seed=0):
    return LanguageModel(LMConfig(vocab_size=spec["V"], cell="lstm", hidden=spec["H"],
                                  embed_dim=spec["E"], dtype="float32", seed=seed))


def build_bptt(kind: str, spec: dict, data: dict):
    """(step, results) of the job in bptt."""
    box = {}
    if kind == "cell":
        layer = RECURRENT[spec["cell"]](spec["I"], spec["H"], dtype=np.float32, seed=0)
        layer.load_state(_params(data))
        lstm = spec["cell"] == "lstm"
        x, dout = data["x"], data["dout"]
        state = (data["h0"], data["c0"]) if lstm else data["h0"]

        def step():   # the backward sets the gradients (the module's notes): no zero_grad
            box["out"], _ = layer.forward(x, state)
            box["dx"] = layer.backward(dout, accumulate=False)

        def results():
            r = {"out": box["out"], "dx": box["dx"], "dh0": layer.dh0}
            if lstm:
                r["dc0"] = layer.dc0
            return {**r, **layer.grads}
        return step, results

    if kind == "char_lm":
        model = _bptt_char_lm(spec)
        model.load_state(_params(data))
        x, y = data["x"], data["y"]

        def step():
            model.zero_grad()
            box["loss"], _ = model.loss_and_grad(x, y)

        return step, lambda: {"loss": np.array([box["loss"]]), **model.grads}

    if kind == "mlp":
        mlp = MLP(spec["sizes"], "relu", dtype=np.float32, seed=0)
        mlp.load_state(_params(data))
        x, y = data["x"], data["y"]

        def step():   # the backward sets the gradients (the module's notes): no zero_grad
            box["loss"], dlogits = softmax_cross_entropy(mlp.forward(x), y)
            mlp.backward(dlogits, input_grad=False, accumulate=False)   # as torch: x does not require a gradient

        return step, lambda: {"loss": np.array([box["loss"]]), **mlp.grads}
    raise ValueError(f"unknown job kind {kind!r}")


def bptt_memory(spec, data) -> dict:
    """bptt's peak memory in one step of a fresh recurrent layer (so that its workspaces are
    allocated in the step): :func:`bptt.benchmark.timing.memory_of`."""
    from .timing import memory_of
    layer = RECURRENT[spec["cell"]](spec["I"], spec["H"], dtype=np.float32, seed=0)
    layer.load_state(_params(data))
    state = (data["h0"], data["c0"]) if spec["cell"] == "lstm" else data["h0"]

    def step():
        layer.forward(data["x"], state)
        layer.backward(data["dout"], accumulate=False)

    return memory_of(step, list(layer.params.values()) + list(layer.grads.values()))


def rel_err(a, b) -> float:
    """max|a − b| / max|b| (NaN if either holds a NaN, inf if the shapes differ)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def check_job(kind: str, spec: dict, data: dict) -> dict:
    """One step of each framework in this process; every result compared by name."""
    bstep, bres = build_bptt(kind, spec, data)
    tstep, tres = build_torch(kind, spec, data)
    bstep()
    tstep()
    rb, rt = bres(), tres()
    errors = {name: rel_err(rb[name], rt[name]) if name in rb else float("inf") for name in rt}
    worst = max(errors, key=lambda k: float(np.nan_to_num(errors[k], nan=np.inf)))
    passed = all(e <= TOLERANCE for e in errors.values())  # False for NaN
    return {"passed": passed, "max_rel_err": errors[worst], "worst": worst, "tolerance": TOLERANCE,
            "errors": errors}
