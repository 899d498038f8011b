"""The simple RNN end to end: RNN(activation='identity') + Dense, trained with plain SGD.

Also runs every Python block of docs/simple_rnn.md, so the documented example stays true.
"""
import pathlib
import re

import numpy as np

from bptt import RNN, Dense, mse_loss

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "simple_rnn.md"


def test_identity_rnn_is_one_weight_over_x_and_h_prev():
    rng = np.random.default_rng(3)
    rnn = RNN(2, 3, activation="identity", seed=5)
    W0 = np.hstack([rnn.weight_ih_l0, rnn.weight_hh_l0])
    b0 = rnn.bias_ih_l0 + rnn.bias_hh_l0
    x, h0 = rng.standard_normal((4, 6, 2)), rng.standard_normal((1, 4, 3))
    out, h_n = rnn.forward(x, h0)
    h = h0[0]
    for t in range(6):
        h = np.concatenate([x[:, t], h], axis=1) @ W0.T + b0
        np.testing.assert_allclose(out[:, t], h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_n[0], h, rtol=1e-12, atol=1e-14)


def train_delay_task(seed, steps=150, lr=0.1, H=8, T=12, B=32):
    """Learn y_t = x_{t-1}. Returns the loss of every step."""
    rng = np.random.default_rng(seed)
    rnn = RNN(1, H, activation="identity", seed=seed)
    head = Dense(H, 1, seed=seed + 1)
    losses = []
    for _ in range(steps):
        x = rng.standard_normal((B, T, 1))
        y = np.zeros_like(x)
        y[:, 1:] = x[:, :-1]
        pred = head.forward(rnn.forward(x)[0])
        loss, dpred = mse_loss(pred, y)
        rnn.zero_grad()
        head.zero_grad()
        rnn.backward(head.backward(dpred))
        for layer in (rnn, head):
            for k, p in layer.params.items():
                p -= lr * layer.grads[k]
        losses.append(loss)
    return np.array(losses)


def test_simple_rnn_learns_to_remember_the_previous_input():
    for seed in (0, 1):
        losses = train_delay_task(seed)
        assert np.all(np.isfinite(losses))
        first, last = losses[:10].mean(), losses[-10:].mean()
        # A memoryless model can do no better than predicting 0 (loss ≈ (T-1)/T ≈ 0.92).
        assert last < 0.1 * first and last < 0.05, (seed, first, last)


def test_docs_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 3
    namespace = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert np.mean(namespace["losses"][-10:]) < 0.1 * np.mean(namespace["losses"][:10])
