"""RNN, LSTM and GRU against torch autograd on the same weights (skipped without torch).

Seeded random configurations (cell, layers, direction, sizes, activation). Every comparison uses
non-zero initial states and upstream gradients on out, h_n and (LSTM) c_n, and checks out, h_n,
c_n, dx, dh0, dc0 and every parameter gradient: relative error max|a − b| / max|b| ≤ 1e-10 in
float64 and ≤ 1e-4 in float32.
"""
import numpy as np
import pytest

from bptt import GRU, LSTM, RNN

torch = pytest.importorskip("torch")
from bptt.interop import to_torch  # noqa: E402

TOL = {np.float64: 1e-10, np.float32: 1e-4}
CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def configs(dtype, per_cell=3, seed=0):
    """Per cell: one 2-layer bidirectional configuration, one single-layer unidirectional, and one
    drawn at random; sizes drawn at random (T = 1 and B = 1 allowed)."""
    rng = np.random.default_rng(seed + (0 if dtype == np.float64 else 100))
    out = []
    for cell in CELLS:
        for k in range(per_cell):
            layers, bidi = [(2, True), (1, False)][k] if k < 2 else (int(rng.integers(1, 4)), bool(rng.integers(0, 2)))
            out.append(dict(cell=cell, layers=layers, bidirectional=bidi, B=int(rng.integers(1, 5)),
                            T=int(rng.integers(1, 7)), I=int(rng.integers(1, 6)), H=int(rng.integers(1, 7)),
                            activation=str(rng.choice(["tanh", "relu"])) if cell == "rnn" else None,
                            seed=int(rng.integers(1 << 30))))
    return out


def _ids(cfgs):
    return ["{cell}-L{layers}-{d}-B{B}T{T}I{I}H{H}{a}".format(
        d="bi" if c["bidirectional"] else "uni", a="-" + c["activation"] if c["activation"] else "", **c)
        for c in cfgs]


def run_both(layer, module, rng, dtype, B, T):
    """Forward and backward through the bptt layer and the torch module; returns pairs to compare."""
    lstm = isinstance(layer, LSTM)
    D, L, H = layer.num_directions, layer.num_layers, layer.hidden_size
    x = rng.standard_normal((B, T, layer.input_size)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, H)).astype(dtype)
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype)
    dout = rng.standard_normal((B, T, D * H)).astype(dtype)
    dh_n = rng.standard_normal((L * D, B, H)).astype(dtype)
    dc_n = rng.standard_normal((L * D, B, H)).astype(dtype)

    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    if lstm:
        out_t, (hn_t, cn_t) = module(xt, (h0t, c0t))
        torch.autograd.backward([out_t, hn_t, cn_t], [torch.tensor(a) for a in (dout, dh_n, dc_n)])
        out, (h_n, c_n) = layer.forward(x, (h0, c0))
        dx = layer.backward(dout, dh_n, dc_n)
    else:
        out_t, hn_t = module(xt, h0t)
        torch.autograd.backward([out_t, hn_t], [torch.tensor(a) for a in (dout, dh_n)])
        out, h_n = layer.forward(x, h0)
        dx = layer.backward(dout, dh_n)
    pairs = {"out": (out, out_t), "h_n": (h_n, hn_t), "dx": (dx, xt.grad), "dh0": (layer.dh0, h0t.grad)}
    if lstm:
        pairs.update({"c_n": (c_n, cn_t), "dc0": (layer.dc0, c0t.grad)})
    for name, p in module.named_parameters():
        pairs["grad " + name] = (layer.grads[name], p.grad)
    return {k: (a, b.detach().numpy()) for k, (a, b) in pairs.items()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_parity_with_torch_over_random_configurations(dtype):
    cfgs = configs(dtype)
    for cfg, name in zip(cfgs, _ids(cfgs)):
        kw = {"activation": cfg["activation"]} if cfg["cell"] == "rnn" else {}
        layer = CELLS[cfg["cell"]](cfg["I"], cfg["H"], cfg["layers"], cfg["bidirectional"], dtype=dtype,
                                   seed=cfg["seed"], **kw)
        module = to_torch(layer)
        assert module.batch_first
        rng = np.random.default_rng(cfg["seed"])
        # Two calls with different (B, T): the second reuses nothing stale from the first.
        for B, T in ((cfg["B"], cfg["T"]), (cfg["B"] + 1, cfg["T"] + 2)):
            layer.zero_grad()
            module.zero_grad()
            pairs = run_both(layer, module, rng, dtype, B, T)
            expected = {"out", "h_n", "dx", "dh0"} | ({"c_n", "dc0"} if cfg["cell"] == "lstm" else set())
            assert expected | {"grad " + n for n in layer.params} == set(pairs)
            for what, (a, b) in pairs.items():
                assert a.dtype == dtype and a.shape == b.shape, (name, what)
                err = rel_err(a, b)
                assert err <= TOL[dtype], f"{name}: {what} rel err {err:.2e}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_parity_with_torch_with_the_batch_split_in_halves(cell, dtype):
    """From SPLIT_B sequences on the weight gradients are summed per batch half, then added:
    the same comparison with torch (odd B: unequal halves; non-zero biases and initial states)."""
    from bptt.kernels.rnn import SPLIT_B
    layer = CELLS[cell](5, 6, 2, True, dtype=dtype, seed=4)
    module = to_torch(layer)
    rng = np.random.default_rng(4)
    for what, (a, b) in run_both(layer, module, rng, dtype, SPLIT_B + 1, 3).items():
        err = rel_err(a, b)
        assert err <= TOL[dtype], f"{cell} {what} rel err {err:.2e}"


def torch_identity_rnn(layer, x, h0):
    """torch autograd reference for RNN(activation='identity'), which torch.nn.RNN lacks:
    the same stacked, bidirectional recurrence written with torch ops."""
    L, D = layer.num_layers, layer.num_directions
    P = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
    inp, h_n = x, []
    for l in range(L):
        outs = []
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            h = h0[l * D + d]
            steps = [None] * x.shape[1]
            for t in (range(x.shape[1]) if d == 0 else reversed(range(x.shape[1]))):
                h = inp[:, t] @ P["weight_ih" + sfx].T + P["bias_ih" + sfx] + h @ P["weight_hh" + sfx].T + P["bias_hh" + sfx]
                steps[t] = h
            outs.append(torch.stack(steps, 1))
            h_n.append(h)
        inp = torch.cat(outs, 2)
    return inp, torch.stack(h_n), P


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_identity_rnn_parity_with_torch_autograd(dtype):
    rng = np.random.default_rng(7)
    layer = RNN(3, 5, 2, True, "identity", dtype=dtype, seed=3)
    x = rng.standard_normal((2, 4, 3)).astype(dtype)
    h0 = rng.standard_normal((4, 2, 5)).astype(dtype)
    dout = rng.standard_normal((2, 4, 10)).astype(dtype)
    dh_n = rng.standard_normal((4, 2, 5)).astype(dtype)
    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    out_t, hn_t, P = torch_identity_rnn(layer, xt, h0t)
    torch.autograd.backward([out_t, hn_t], [torch.tensor(dout), torch.tensor(dh_n)])
    out, h_n = layer.forward(x, h0)
    dx = layer.backward(dout, dh_n)
    pairs = [(out, out_t), (h_n, hn_t), (dx, xt.grad), (layer.dh0, h0t.grad)]
    pairs += [(layer.grads[k], P[k].grad) for k in layer.params]
    for a, b in pairs:
        assert rel_err(a, b.detach().numpy()) <= TOL[dtype]
