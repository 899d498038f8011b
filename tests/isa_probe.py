"""Every result the cross-ISA test compares, computed under whatever ISA this process runs.

    BPTT_ISA=generic python tests/isa_probe.py OUT.npz

writes the outputs and gradients of a dense layer and an MLP, of the three cells (two layers,
bidirectional, non-zero biases and initial states), and of one char-LM training step (forward,
backward, clipping and an Adam update), in float32 (and float64 with ISA_PROBE_DTYPES=float32,float64), with shapes that take every
micro-kernel path: blocks of rows and single rows, widths past the main block, k past one
k-block. ``tests/test_isa.py`` runs it under each ISA the host can run and compares the files
bitwise with the native results.
"""
import os
import sys

import numpy as np

# float32 by default (CI: one cold compile per ISA); ISA_PROBE_DTYPES=float32,float64 for both
DTYPES = tuple(os.environ.get("ISA_PROBE_DTYPES", "float32").split(","))


def compute() -> dict:
    import bptt
    from bptt import jit
    out = {"isa": np.array(jit.ISA)}
    rng = np.random.default_rng(0)
    for dt in map(np.dtype, DTYPES):
        tag = np.dtype(dt).name
        # dense: 37 rows (blocks of 4 and single rows), 70 inputs (past 64 and 24), 300 outputs
        mlp = bptt.MLP([70, 300, 29], activation="tanh", dtype=dt, seed=1)
        x = rng.standard_normal((37, 70)).astype(dt)
        y = mlp.forward(x)
        dx = mlp.backward(rng.standard_normal(y.shape).astype(dt))
        out[f"mlp_y_{tag}"], out[f"mlp_dx_{tag}"] = y, dx
        for k, g in mlp.gradients().items():
            out[f"mlp_d{k}_{tag}"] = g
        for cell in ("rnn", "gru", "lstm"):
            C = {"rnn": bptt.RNN, "gru": bptt.GRU, "lstm": bptt.LSTM}[cell]
            B, T, I, H = 5, 4, 19, 37
            layer = C(I, H, num_layers=2, bidirectional=True, dtype=dt, seed=2)
            for name, p in layer.params.items():
                if name.startswith("bias"):
                    p[...] = rng.standard_normal(p.shape).astype(dt) * 0.1
            x = rng.standard_normal((B, T, I)).astype(dt)
            h0 = rng.standard_normal((4, B, H)).astype(dt)
            state = (h0, rng.standard_normal((4, B, H)).astype(dt)) if cell == "lstm" else h0
            y, _ = layer.forward(x, state)
            layer.zero_grad()
            dx = layer.backward(rng.standard_normal(y.shape).astype(dt))
            out[f"{cell}_y_{tag}"], out[f"{cell}_dx_{tag}"] = y, dx
            for name, g in layer.grads.items():
                out[f"{cell}_d{name}_{tag}"] = g
    # one char-LM training step, float32: the model the README trains
    from bptt.model import LanguageModel, LMConfig
    from bptt.optim import Adam, clip_grad_norm
    lm = LanguageModel(LMConfig(vocab_size=41, cell="lstm", hidden=53, layers=2, embed_dim=17, seed=3))
    opt = Adam(lm.parameters(), lr=2e-3)
    ids = rng.integers(0, 41, size=(6, 11))
    for step in range(2):
        lm.zero_grad()
        loss, _ = lm.loss_and_grad(ids[:, :-1], ids[:, 1:])
        clip_grad_norm(lm.gradients(), 1.0)
        opt.step(lm.gradients())
        out[f"lm_loss_{step}"] = np.asarray(loss)
    for name, p in lm.params.items():
        out[f"lm_{name}"] = p
    return out


if __name__ == "__main__":
    np.savez(sys.argv[1], **compute())
