"""Dense layers, activations and losses against torch autograd on the same weights."""
import numpy as np
import pytest

from bptt import MLP, Dense
from bptt.layers.losses import bce_with_logits, mse_loss, softmax_cross_entropy

from conftest import rel_err

torch = pytest.importorskip("torch")
F = torch.nn.functional

TORCH_ACT = {
    "identity": lambda q: q,
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "gelu_tanh": lambda q: F.gelu(q, approximate="tanh"),
    "gelu_sigmoid": lambda q: q * torch.sigmoid(1.702 * q),
}


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("act", list(TORCH_ACT))
def test_dense_matches_torch(act, dtype, tol, rng):
    layer = Dense(6, 4, act, dtype=dtype, seed=2)
    layer.params["bias"][...] = rng.uniform(-1, 1, 4)  # clearly non-zero biases
    x = (rng.standard_normal((5, 6)) * 2).astype(dtype)
    g = rng.standard_normal((5, 4)).astype(dtype)
    lin = torch.nn.Linear(6, 4).to(getattr(torch, np.dtype(dtype).name))
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(layer.weight))
        lin.bias.copy_(torch.from_numpy(layer.bias))
    xt = torch.from_numpy(x).requires_grad_()
    yt = TORCH_ACT[act](lin(xt))
    yt.backward(torch.from_numpy(g))
    y = layer.forward(x)
    dx = layer.backward(g)
    assert rel_err(y, yt.detach().numpy()) < tol
    assert rel_err(dx, xt.grad.numpy()) < tol
    assert rel_err(layer.grads["weight"], lin.weight.grad.numpy()) < tol
    assert rel_err(layer.grads["bias"], lin.bias.grad.numpy()) < tol


def test_mlp_matches_torch_sequential(rng):
    mlp = MLP([5, 7, 6, 3], "tanh", seed=0)
    seq = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 6),
                              torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    with torch.no_grad():
        for k, lin in enumerate([seq[0], seq[2], seq[4]]):
            lin.weight.copy_(torch.from_numpy(mlp.params[f"layers.{k}.weight"]))
            lin.bias.copy_(torch.from_numpy(mlp.params[f"layers.{k}.bias"]))
    x = rng.standard_normal((4, 5))
    t = rng.integers(0, 3, 4)
    xt = torch.from_numpy(x).requires_grad_()
    lt = F.cross_entropy(seq(xt), torch.from_numpy(t))
    lt.backward()
    logits = mlp.forward(x)
    loss, dlogits = softmax_cross_entropy(logits, t)
    dx = mlp.backward(dlogits)
    assert abs(loss - lt.item()) < 1e-12
    assert rel_err(dx, xt.grad.numpy()) < 1e-12
    for k, lin in enumerate([seq[0], seq[2], seq[4]]):
        assert rel_err(mlp.grads[f"layers.{k}.weight"], lin.weight.grad.numpy()) < 1e-12
        assert rel_err(mlp.grads[f"layers.{k}.bias"], lin.bias.grad.numpy()) < 1e-12


def _torch_grad(fn, z):
    zt = torch.from_numpy(z).requires_grad_()
    out = fn(zt)
    out.backward()
    return out.item(), zt.grad.numpy()


def test_losses_match_torch(rng):
    z = rng.standard_normal((6, 5)) * 3
    t = rng.integers(0, 5, 6)
    t[2] = -100
    loss, d = softmax_cross_entropy(z, t, ignore_index=-100)
    lt, dt = _torch_grad(lambda zt: F.cross_entropy(zt, torch.from_numpy(t), ignore_index=-100), z)
    assert abs(loss - lt) < 1e-12 and rel_err(d, dt) < 1e-12
    y = rng.random((6, 5))
    loss, d = bce_with_logits(z, y)
    lt, dt = _torch_grad(lambda zt: F.binary_cross_entropy_with_logits(zt, torch.from_numpy(y)), z)
    assert abs(loss - lt) < 1e-12 and rel_err(d, dt) < 1e-12
    loss, d = mse_loss(z, y)
    lt, dt = _torch_grad(lambda zt: F.mse_loss(zt, torch.from_numpy(y)), z)
    assert abs(loss - lt) < 1e-12 and rel_err(d, dt) < 1e-12
