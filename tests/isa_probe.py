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
    # operands whose rows are a multiple of 4 KB apart, which the avx512 family lays out apart
    # (engine.apart_rows, rows_apart) and the others do not: the same bits either way. A dense
    # weight gradient over 1024 rows (dyᵀ), a transposed forward over W of 1024 inputs, and the
    # recurrent weight gradients over T·B = 1024 (transposed) and half-batches of 1024 rows
    from bptt.kernels import dense
    dy = rng.standard_normal((1024, 40)).astype(np.float32)
    xa = rng.standard_normal((1024, 70)).astype(np.float32)
    dW, db = np.full((40, 70), 0.5, np.float32), np.full(40, 0.5, np.float32)
    dense.dense_backward_params(dW, db, dy, xa)
    out["apart_dense_dW"], out["apart_dense_db"] = dW, db
    xa = rng.standard_normal((256, 1024)).astype(np.float32)
    Wa = rng.standard_normal((352, 1024)).astype(np.float32)
    ya = np.empty((256, 352), np.float32)
    dense.dense_forward(ya, xa, Wa, rng.standard_normal(352).astype(np.float32))
    out["apart_dense_y"] = ya
    for B, T, I, H in ((32, 32, 19, 37), (32, 64, 660, 37)):
        layer = bptt.RNN(I, H, dtype=np.float32, seed=4)
        y, _ = layer.forward(rng.standard_normal((B, T, I)).astype(np.float32))
        layer.zero_grad()
        layer.backward(rng.standard_normal(y.shape).astype(np.float32))
        for name, g in layer.grads.items():
            out[f"apart_rnn_{T}_d{name}"] = g
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
