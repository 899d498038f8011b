"""Ready-made gradient-check problems: a layer or model plus seeded inputs, for ``bptt gradcheck``.

Each builder returns ``(target, inputs)`` for :func:`bptt.finitediff.gradcheck`. Every parameter is
non-zero (biases included), because a zero bias can hide a bias bug.
"""
from __future__ import annotations

import numpy as np

from .layers import GRU, LSTM, MLP, RNN, Dense

MODELS = ["dense", "mlp", "rnn", "lstm", "gru", "forecaster"]
RECURRENT = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


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
    if model == "forecaster":
        # an LSTM over a window, the dense head from its last state to K·S = 3·2 outputs
        from .forecast import forecaster_problem
        return forecaster_problem("lstm", seed=seed, batch=batch, window=seq_len, hidden=hidden,
                                  layers=layers)
    raise ValueError(f"model must be one of {', '.join(MODELS)}; got {model!r}")
