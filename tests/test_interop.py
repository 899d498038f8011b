"""bptt.interop: weights copied both ways for Linear, Embedding, RNN, LSTM and GRU; torch is
imported lazily."""
import subprocess
import sys

import numpy as np
import pytest

from bptt import GRU, LSTM, RNN, Dense, Embedding


def test_importing_bptt_and_interop_does_not_import_torch():
    code = ("import sys, bptt, bptt.interop; from bptt.interop import from_torch, to_torch; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


torch = pytest.importorskip("torch")
from bptt.interop import from_torch, to_torch  # noqa: E402


def _same(layer, module):
    tp = dict(module.named_parameters())
    assert list(tp) == list(layer.params) or isinstance(layer, Dense)
    for name, p in tp.items():
        a = layer.params[name]
        assert a.dtype == (np.float64 if p.dtype == torch.float64 else np.float32)
        np.testing.assert_array_equal(a, p.detach().numpy())


@pytest.mark.parametrize("make", [
    lambda dt: torch.nn.Linear(4, 3, dtype=dt),
    lambda dt: torch.nn.Linear(4, 3, bias=False, dtype=dt),
    lambda dt: torch.nn.Embedding(7, 3, dtype=dt),
    lambda dt: torch.nn.RNN(3, 4, num_layers=2, nonlinearity="relu", bidirectional=True, batch_first=True, dtype=dt),
    lambda dt: torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=dt),
    lambda dt: torch.nn.GRU(3, 4, num_layers=1, batch_first=True, dtype=dt),
], ids=["linear", "linear-nobias", "embedding", "rnn", "lstm", "gru"])
@pytest.mark.parametrize("dt", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_round_trip_torch_bptt_torch(make, dt):
    torch.manual_seed(0)
    module = make(dt)
    layer = from_torch(module)
    _same(layer, module)
    back = to_torch(layer)
    assert type(back) is type(module)
    for (n1, p1), (n2, p2) in zip(module.named_parameters(), back.named_parameters()):
        assert n1 == n2 and p1.dtype == p2.dtype
        assert torch.equal(p1, p2)
    # The copies are independent of the source.
    with torch.no_grad():
        next(module.parameters()).add_(1.0)
    assert not np.array_equal(next(iter(layer.params.values())), next(module.parameters()).detach().numpy())


def test_from_torch_same_function():
    torch.manual_seed(1)
    for module in (torch.nn.LSTM(3, 4, 2, batch_first=True, dtype=torch.float64),
                   torch.nn.GRU(3, 4, 1, batch_first=True, bidirectional=True, dtype=torch.float64)):
        layer = from_torch(module)
        x = np.random.default_rng(0).standard_normal((2, 5, 3))
        out_t = module(torch.tensor(x))[0].detach().numpy()
        np.testing.assert_allclose(layer.forward(x)[0], out_t, rtol=1e-12, atol=1e-14)
    emb = torch.nn.Embedding(6, 2, dtype=torch.float64)
    ids = np.array([[0, 5, 5], [2, 1, 0]])
    np.testing.assert_array_equal(from_torch(emb).forward(ids), emb(torch.tensor(ids)).detach().numpy())
    lin = torch.nn.Linear(3, 2, dtype=torch.float64)
    x = np.random.default_rng(1).standard_normal((4, 3))
    np.testing.assert_allclose(from_torch(lin).forward(x), lin(torch.tensor(x)).detach().numpy(), rtol=1e-13)


def test_to_torch_configurations():
    m = to_torch(RNN(3, 4, 2, True, "relu", dtype=np.float32, seed=0))
    assert (m.nonlinearity, m.num_layers, m.bidirectional, m.batch_first, m.hidden_size) == ("relu", 2, True, True, 4)
    assert next(m.parameters()).dtype == torch.float32
    assert isinstance(to_torch(LSTM(3, 4, seed=0)), torch.nn.LSTM)
    assert isinstance(to_torch(GRU(3, 4, seed=0)), torch.nn.GRU)
    assert to_torch(Dense(3, 2, bias=False, seed=0)).bias is None
    assert isinstance(to_torch(Embedding(5, 2, seed=0)), torch.nn.Embedding)


def test_unsupported_configurations_raise_value_error():
    with pytest.raises(ValueError, match="tanh and relu only"):
        to_torch(RNN(3, 4, activation="identity"))
    with pytest.raises(ValueError, match="no activation"):
        to_torch(Dense(3, 4, "relu"))
    with pytest.raises(ValueError, match="supports Dense, Embedding, RNN, LSTM and GRU"):
        to_torch(object())
    with pytest.raises(ValueError, match="bias=False"):
        from_torch(torch.nn.LSTM(3, 4, bias=False))
    with pytest.raises(ValueError, match="dropout"):
        from_torch(torch.nn.GRU(3, 4, num_layers=2, dropout=0.5))
    with pytest.raises(ValueError, match="proj_size"):
        from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match="padding_idx"):
        from_torch(torch.nn.Embedding(5, 2, padding_idx=0))
    with pytest.raises(ValueError, match="supports Linear, Embedding, RNN, LSTM and GRU"):
        from_torch(torch.nn.Conv1d(2, 2, 3))
    with pytest.raises(ValueError, match="float32 and float64"):
        from_torch(torch.nn.Linear(2, 2, dtype=torch.float16))


def test_embedding_scaled_by_frequency_is_refused():
    with pytest.raises(ValueError, match="scale_grad_by_freq"):
        from_torch(torch.nn.Embedding(5, 2, scale_grad_by_freq=True))
