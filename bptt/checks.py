"""Ready-made gradient-check problems: a layer or model plus seeded inputs, for ``bptt gradcheck``.

Each builder returns ``(target, inputs)`` for :func:`bptt.finitediff.gradcheck`. Every parameter is
non-zero (biases included), because a zero bias can hide a bias bug.
"""
from __future__ import annotations

import numpy as np

from .layers import GRU, LSTM, MLP, RNN, Dense

MODELS = ["dense", "mlp", "rnn", "lstm", "gru", "dropout", "table-regression", "table-binary",
          "table-multiclass", "text", "forecaster"]
RECURRENT = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


HIDDEN_ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "gelu_sigmoid", "tanh", "sigmoid")
IGNORE_ACTIVATION = ("lstm", "gru", "dropout", "forecaster")   # their nonlinearities are fixed


def _hidden_activation(model: str, activation: str) -> str:
    """The hidden layers' activation of the table and text models (the heads of `bptt fit`)."""
    if activation not in HIDDEN_ACTIVATIONS:
        raise ValueError(f"--model {model} takes an activation among {', '.join(HIDDEN_ACTIVATIONS)} for its "
                         f"hidden layers; got {activation!r}")
    return activation


def build_problem(model: str, *, activation: str = "tanh", seed: int = 0, batch: int = 3,
                  input_size: int = 5, hidden: int = 8, layers: int = 1, seq_len: int = 4,
                  bidirectional: bool = False):
    """Build a float64 target and its inputs for the named model."""
    rng = np.random.default_rng(seed)
    if model == "dense":
        target = Dense(input_size, hidden, activation, dtype=np.float64, rng=rng)
        return target, {"x": rng.standard_normal((batch, input_size))}
    if model == "mlp":
        sizes = [input_size] + [hidden] * max(layers, 1) + [3]
        target = MLP(sizes, activation, dtype=np.float64, rng=rng)
        return target, {"x": rng.standard_normal((batch, input_size))}
    if model in RECURRENT:
        # x (B, T, I) plus non-zero initial states, so dh0 (and dc0) are checked too.
        if model == "rnn":
            target = RNN(input_size, hidden, layers, bidirectional, activation, dtype=np.float64, rng=rng)
        else:
            target = RECURRENT[model](input_size, hidden, layers, bidirectional, dtype=np.float64, rng=rng)
        state = (layers * (2 if bidirectional else 1), batch, hidden)
        inputs = {"x": rng.standard_normal((batch, seq_len, input_size)),
                  "h0": rng.standard_normal(state)}
        if model == "lstm":
            inputs["c0"] = rng.standard_normal(state)
        return target, inputs
    if model == "dropout":
        from .layers.dropout import Dropout, dropout_scale
        target = Dropout(0.5, dtype=np.float64)
        target.fix_mask(dropout_scale(rng, (batch, hidden), 0.5, np.float64))   # the same mask every call
        return target, {"x": rng.standard_normal((batch, hidden))}
    if model.startswith("table-"):
        # the MLP of `bptt fit` on a table, with its task's loss and dropout (fixed masks)
        from .layers.dropout import dropout_scale
        from .tabular import TabularMLP
        task = model[len("table-"):]
        O = 3 if task == "multiclass" else 1
        act = _hidden_activation(model, activation)
        target = TabularMLP(input_size, [hidden] * max(layers, 1), O, task, activation=act, dropout=0.25,
                            dtype="float64", rng=rng)
        for d in target.drops:
            d.fix_mask(dropout_scale(rng, (batch, hidden), 0.25, np.float64))
        y = {"regression": rng.standard_normal(batch), "binary": (rng.random(batch) > 0.5).astype(np.float64),
             "multiclass": rng.integers(0, 3, batch)}[task]
        return target, {"x": rng.standard_normal((batch, input_size)), "y": y}
    if model == "text":
        # the text classifier of `bptt fit --text`: padded ids with lengths (the mask), an LSTM
        # encoder (--bidirectional), mean pooling over the valid steps, dropout with fixed masks
        from .sequence import SequenceModel
        target = SequenceModel({"type": "sequence", "input": "ids", "vocab_size": 11, "embed_dim": input_size,
                                "cell": "lstm", "rnn_hidden": hidden, "layers": layers,
                                "bidirectional": bidirectional, "pool": "mean", "head_hidden": [hidden],
                                "activation": _hidden_activation(model, activation), "dropout": 0.25,
                                "out_features": 3,
                                "task": "multiclass", "dtype": "float64", "seed": seed})
        target.check_dropout_seed = seed
        lengths = np.maximum(1, seq_len - np.arange(batch) % seq_len)   # seq_len, seq_len - 1, ...: padded
        return target, {"ids": rng.integers(0, 11, (batch, seq_len)), "len": lengths,
                        "y": rng.integers(0, 3, batch)}
    if model == "forecaster":
        # an LSTM over a window, the dense head from its last state to K·S = 3·2 outputs
        from .forecast import forecaster_problem
        return forecaster_problem("lstm", seed=seed, batch=batch, window=seq_len, hidden=hidden,
                                  layers=layers)
    raise ValueError(f"model must be one of {', '.join(MODELS)}; got {model!r}")
