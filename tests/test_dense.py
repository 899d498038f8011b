"""Dense layers, activations and losses: finite-difference checks, references, bad input."""
import math

import numpy as np
import pytest

from bptt import MLP, Dense, gradcheck
from bptt.kernels.activations import ACTIVATIONS
from bptt.layers import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from bptt.layers.losses import bce_with_logits, mse_loss, softmax_cross_entropy

ACTS = list(ACTIVATIONS)


def _np_act(name, q):
    """Reference activations written with numpy/math, independently of the kernels."""
    erf = np.vectorize(math.erf)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))
    return {
        "identity": lambda: q,
        "relu": lambda: np.maximum(q, 0),
        "tanh": lambda: np.tanh(q),
        "sigmoid": lambda: sig(q),
        "gelu": lambda: 0.5 * q * (1 + erf(q / math.sqrt(2))),
        "gelu_tanh": lambda: 0.5 * q * (1 + np.tanh(math.sqrt(2 / math.pi) * (q + 0.044715 * q ** 3))),
        "gelu_sigmoid": lambda: q * sig(1.702 * q),
    }[name]()


@pytest.mark.parametrize("act", ACTS)
def test_dense_gradcheck_every_activation(act, rng):
    layer = Dense(6, 5, act, seed=3)
    report = gradcheck(layer, {"x": rng.standard_normal((4, 6))})
    assert report.passed, report.table()
    assert {r.name for r in report.rows} == {"weight", "bias", "x"}


@pytest.mark.parametrize("act", ACTS)
def test_dense_forward_matches_numpy_reference(act, rng):
    layer = Dense(7, 3, act, seed=0)
    x = rng.standard_normal((5, 7)) * 2
    q = x @ layer.weight.T + layer.bias
    np.testing.assert_allclose(layer.forward(x), _np_act(act, q), rtol=1e-12, atol=1e-14)


def test_mlp_gradcheck_and_3d_input(rng):
    mlp = MLP([4, 8, 8, 3], "gelu", seed=1)
    report = gradcheck(mlp, {"x": rng.standard_normal((2, 3, 4))})
    assert report.passed, report.table()
    assert len(report.rows) == 7


def test_large_tensor_is_sampled(rng):
    layer = Dense(40, 30, "tanh", seed=0)
    report = gradcheck(layer, {"x": rng.standard_normal((2, 40))}, max_checks=50)
    w = next(r for r in report.rows if r.name == "weight")
    assert w.checked == 50 and report.passed
    b = next(r for r in report.rows if r.name == "bias")
    assert b.checked == 30


@pytest.mark.parametrize("loss,target", [
    (MSELoss(), lambda r: r.standard_normal((5, 3))),
    (BCEWithLogitsLoss(), lambda r: r.random((5, 3))),
    (CrossEntropyLoss(), lambda r: r.integers(0, 3, size=5)),
    (CrossEntropyLoss(ignore_index=1), lambda r: np.array([0, 1, 2, 1, 0])),
    (CrossEntropyLoss(mask=np.array([1, 0, 1, 1, 0])), lambda r: r.integers(0, 3, size=5)),
])
def test_losses_gradcheck(loss, target, rng):
    report = gradcheck(loss, {"x": rng.standard_normal((5, 3)) * 3, "target": target(rng)})
    assert report.passed, report.table()


def test_cross_entropy_reference_and_stability(rng):
    z = rng.standard_normal((6, 4)) * 5
    t = rng.integers(0, 4, 6)
    ref = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(6), t])
    loss, d = softmax_cross_entropy(z, t)
    assert abs(loss - ref) < 1e-12
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    p[np.arange(6), t] -= 1
    np.testing.assert_allclose(d, p / 6, atol=1e-15)
    # Huge logits neither overflow nor produce NaN.
    big, dbig = softmax_cross_entropy(np.array([[1000.0, 0.0], [-1000.0, 1000.0]]), np.array([0, 0]))
    assert np.isfinite(big) and np.all(np.isfinite(dbig))
    assert abs(big - 1000.0) < 1e-9
    # Mask and ignore_index leave rows out of the mean.
    loss_m, dm = softmax_cross_entropy(z, t, mask=np.array([1, 1, 1, 0, 0, 0]))
    loss_3, _ = softmax_cross_entropy(z[:3], t[:3])
    assert abs(loss_m - loss_3) < 1e-12 and np.all(dm[3:] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_row_reductions_keep_their_lanes_in_a_fixed_order(dtype, rng):
    """softmax_xent_rows' max and sum run in losses.LANES lanes: the max is the plain maximum (NaN
    past the first element skipped, as a one-pass ``if z > m`` does), and the float64 sum is
    exactly the documented order (lane v mod LANES in increasing v, lanes pairwise, then the tail),
    for every length around the lanes; values spread over 30 decades, so another order rounds
    differently."""
    from bptt.kernels import losses as kl

    def reduce(out, z):   # the inline helpers, compiled on their own
        out[0], out[1] = kl.row_max(z), kl.lane_sum(z, 0, z.shape[0], False)

    def in_order(e):
        a = [0.0] * kl.LANES
        V8 = len(e) - len(e) % kl.LANES
        for v in range(V8):
            a[v % kl.LANES] += float(e[v])
        s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
        for v in range(V8, len(e)):
            s += float(e[v])
        return s

    out = np.empty(2)
    differs = 0
    for V in [1, 2, 7, 8, 9, 15, 16, 17, 31, 65, 100]:
        for _ in range(20):
            e = (10.0 ** rng.uniform(-30, 0, V)).astype(dtype)
            reduce(out, e)
            assert out[0] == e.max() and out[1] == in_order(e), V
            differs += in_order(e) != sum(float(x) for x in e)   # one running sum's bits
        z = rng.standard_normal(V).astype(dtype)
        if V > 1:
            z[V // 2] = np.nan
        reduce(out, z)
        assert out[0] == np.nanmax(z), V
    z = np.array([np.nan, 3.0, 1.0], dtype)   # the first element NaN: the max stays NaN
    reduce(out, z)
    assert np.isnan(out[0])
    assert differs   # the data tells orders apart: one running sum gives other bits somewhere


def test_bce_and_mse_reference(rng):
    z = rng.standard_normal((4, 2)) * 4
    y = rng.random((4, 2))
    s = 1 / (1 + np.exp(-z))
    ref = -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))
    assert abs(bce_with_logits(z, y)[0] - ref) < 1e-12
    assert np.isfinite(bce_with_logits(np.array([[800.0, -800.0]]), np.array([[0.0, 1.0]]))[0])
    assert abs(mse_loss(z, y)[0] - np.mean((z - y) ** 2)) < 1e-14


def test_checker_catches_a_wrong_gradient(rng, monkeypatch):
    """A deliberately broken backward (bias gradient scaled by 1.1) must fail the check."""
    layer = Dense(4, 3, "tanh", seed=0)
    original = Dense.backward

    def broken(self, dout):
        before = self.grads["bias"].copy()
        dx = original(self, dout)
        self.grads["bias"][...] = before + 1.1 * (self.grads["bias"] - before)
        return dx

    monkeypatch.setattr(Dense, "backward", broken)
    report = gradcheck(layer, {"x": rng.standard_normal((3, 4))})
    assert not report.passed
    assert [r.name for r in report.failures()] == ["bias"]
    assert "FAIL" in report.table()


def test_checker_catches_a_wrong_activation_derivative(rng, monkeypatch):
    """GELU's derivative swapped for the tanh-approximated form's must fail: numpy-ml's bug."""
    layer = Dense(4, 3, "gelu", seed=0)
    from bptt.kernels import activations as A
    from bptt.layers import dense as D

    def wrong(dq, dy, q, y, code):
        A.activation_backward(dq, dy, q, y, A.GELU_TANH)

    monkeypatch.setattr(D, "activation_backward", wrong)
    report = gradcheck(layer, {"x": rng.standard_normal((3, 4)) * 2})
    assert not report.passed


def test_gradcheck_refuses_float32(rng):
    layer = Dense(3, 2, dtype=np.float32)
    with pytest.raises(ValueError, match="float64"):
        gradcheck(layer, {"x": rng.standard_normal((2, 3)).astype(np.float32)})


def test_float32_layers(rng):
    layer = Dense(5, 4, "gelu", dtype=np.float32, seed=0)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == np.float32 and layer.grads["weight"].dtype == np.float32
    ref = Dense(5, 4, "gelu", dtype=np.float64, seed=0)
    np.testing.assert_allclose(y, ref.forward(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_zero_grad_and_accumulation(rng):
    layer = Dense(3, 2, "tanh", seed=0)
    x = rng.standard_normal((4, 3))
    layer.forward(x)
    layer.backward(np.ones((4, 2)))
    g1 = layer.grads["weight"].copy()
    layer.forward(x)
    layer.backward(np.ones((4, 2)))
    np.testing.assert_allclose(layer.grads["weight"], 2 * g1, rtol=1e-15)
    layer.zero_grad()
    assert not layer.grads["weight"].any() and not layer.grads["bias"].any()


def test_initialisations_are_seeded_and_bounded():
    a, b = Dense(100, 50, seed=7), Dense(100, 50, seed=7)
    assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    assert np.abs(a.weight).max() <= 0.1 and np.abs(a.bias).max() <= 0.1  # 1/√I
    assert a.weight.std() > 0.05  # uniform on ±0.1 has std 0.0577
    x = Dense(100, 50, init="xavier", seed=0)
    assert np.abs(x.weight).max() <= math.sqrt(6 / 150) and not x.bias.any()
    h = Dense(100, 50, init="he", seed=0)
    assert abs(h.weight.std() - math.sqrt(2 / 100)) < 0.01
    assert not np.array_equal(Dense(100, 50, seed=8).weight, a.weight)


@pytest.mark.parametrize("call,match", [
    (lambda l: l.forward(np.zeros((2, 4))), r"x must have shape \(N, 3\)"),
    (lambda l: l.forward(np.zeros(3)), r"1 dimensions instead of 2"),
    (lambda l: l.forward(np.zeros((2, 3), np.float32)), "dtype float64"),
    (lambda l: l.forward([[1.0, 2.0, 3.0]]), "numpy array"),
    (lambda l: l.forward(np.zeros((2, 3), np.int64)), "dtype float64"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(Dense(3, 2))


def test_bad_constructor_and_loss_arguments():
    with pytest.raises(ValueError, match="activation must be one of"):
        Dense(3, 2, "swish")
    with pytest.raises(ValueError, match="in_features"):
        Dense(0, 2)
    with pytest.raises(ValueError, match="dtype"):
        Dense(3, 2, dtype=np.int32)
    with pytest.raises(ValueError, match="init"):
        Dense(3, 2, init="orthogonal")
    with pytest.raises(ValueError, match=r"range \[0, 3\)"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="targets must have shape"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="target must have shape"):
        mse_loss(np.zeros((2, 3)), np.zeros((3, 2)))
    layer = Dense(3, 2)
    layer.forward(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"dout must have shape \(4, 2\)"):
        layer.backward(np.zeros((2, 2)))


def test_serial_and_parallel_are_bitwise_equal(threads, rng):
    x = rng.standard_normal((33, 17))
    results = []
    for n in (1, 2):
        threads(n)
        mlp = MLP([17, 31, 9], "gelu_tanh", seed=5)
        y = mlp.forward(x)
        dx = mlp.backward(np.cos(y))
        loss, d = softmax_cross_entropy(y, np.arange(33) % 9)
        results.append([y, dx, d, np.array([loss])] + [g.copy() for g in mlp.grads.values()])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ACTS)
def test_activation_rows_match_the_scalar_definitions(act, dtype, rng):
    """The kernels' per-activation row loops (written so that they vectorise) against the scalar
    f and f' they specialise, in float64 arithmetic; NaN passes through ReLU as in torch."""
    from bptt.kernels import activations as A
    code = A.ACTIVATIONS[act]
    q = (rng.standard_normal((3, 37)) * 3).astype(dtype)
    q[0, :3] = [0.0, -0.0, np.nan]
    dy = rng.standard_normal(q.shape).astype(dtype)
    y = np.empty_like(q)
    A.activation_forward(y, q, code)
    dq = np.empty_like(q)
    A.activation_backward(dq, dy, q, y, code)
    f = np.vectorize(lambda v: A.act(float(v), code))
    tol = dict(rtol=3e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    ok = ~np.isnan(q)
    np.testing.assert_allclose(y[ok], f(q[ok].astype(np.float64)), **tol)
    if act == "relu":
        assert np.isnan(y[0, 2])
    ref = np.array([dy.flat[i] * A.dact(float(q.flat[i]), float(y.flat[i]), code) for i in range(q.size)])
    np.testing.assert_allclose(dq[ok], ref.reshape(q.shape)[ok], **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", [[5, 7, 3], [40, 33, 1], [784, 64, 10]])
def test_backward_that_sets_the_gradients_gives_the_bits_of_zero_grad_then_backward(sizes, dtype, rng):
    """``backward(dout, accumulate=False)`` after anything (old gradients, NaN) sets every
    gradient to what zero_grad() then backward(dout) gives, bit for bit; a second backward with
    the default accumulate=True then adds to them as before."""
    x = rng.standard_normal((9, sizes[0])).astype(dtype)
    dout = rng.standard_normal((9, sizes[-1])).astype(dtype)
    a, b = MLP(sizes, "gelu", dtype=dtype, seed=0), MLP(sizes, "gelu", dtype=dtype, seed=0)
    for g in b.grads.values():
        g.fill(np.nan)
    a.zero_grad()
    a.forward(x)
    dx_a = a.backward(dout)
    b.forward(x)
    dx_b = b.backward(dout, accumulate=False)
    np.testing.assert_array_equal(dx_a, dx_b)
    for name in a.grads:
        np.testing.assert_array_equal(a.grads[name], b.grads[name])
    for m in (a, b):
        m.forward(x)
        m.backward(dout, input_grad=False)
    for name in a.grads:
        np.testing.assert_array_equal(a.grads[name], b.grads[name])
    once = {k: v.copy() for k, v in a.grads.items()}
    b.forward(x)
    b.backward(dout, accumulate=False)
    assert not all(np.array_equal(once[k], b.grads[k]) for k in once)   # two steps' sums, then one's
    layer = Dense(sizes[0], 4, bias=False, dtype=dtype, seed=0)
    layer.grads["weight"].fill(np.nan)
    layer.forward(x)
    layer.backward(np.ones((9, 4), dtype), accumulate=False)
    assert np.isfinite(layer.grads["weight"]).all()


def test_backward_without_input_grad_skips_dx_and_keeps_the_weight_gradients(rng):
    x = rng.standard_normal((6, 5))
    a, b = MLP([5, 7, 3], "relu", seed=0), MLP([5, 7, 3], "relu", seed=0)
    dout = rng.standard_normal((6, 3))
    a.forward(x)
    dx = a.backward(dout)
    b.forward(x)
    assert b.backward(dout, input_grad=False) is None and dx.shape == x.shape
    for name in a.grads:
        np.testing.assert_array_equal(a.grads[name], b.grads[name])
    layer = Dense(5, 4, "tanh", seed=0)
    layer.forward(x)
    assert layer.backward(np.ones((6, 4)), input_grad=False) is None


def _transposed_then_plain(dtype, rng, monkeypatch, N, I, O, off):
    """dense_forward on a random (N, I) → O layer, which must run transposed (yᵀ = W·xᵀ), then
    again with the setting ``off`` = (name, value) of bptt.kernels.dense that turns that form off:
    the two outputs must be the same bits, and close to x·Wᵀ + b."""
    from bptt.kernels import dense
    x = rng.standard_normal((N, I)).astype(dtype)
    W = rng.standard_normal((O, I)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    calls = []
    original = dense._forward_T_blocks
    monkeypatch.setattr(dense, "_forward_T_blocks", lambda *a: calls.append(1) or original(*a))
    swapped = np.empty((N, O), dtype)
    dense.dense_forward(swapped, x, W, b)
    assert calls, "the transposed form did not run"
    monkeypatch.setattr(dense, *off)
    plain = np.empty((N, O), dtype)
    dense.dense_forward(plain, x, W, b)
    assert len(calls) == 1
    np.testing.assert_array_equal(swapped, plain)
    np.testing.assert_allclose(plain, x @ W.T + b, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-3)


@pytest.mark.jit   # the compiled kernels' paths (a reference run has only the twin)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_forward_gives_the_same_bits(dtype, rng, monkeypatch):
    """A mini-batch through a wide layer runs yᵀ = W·xᵀ (W read in place, xᵀ packed): each output
    must be the same fma chain, from its bias, as the plain y = x·Wᵀ + b."""
    from bptt.kernels import dense
    N, I, O = 16, 300, 900   # N·(I + O) < O·I, and N·I·O above SWAP_WORK
    assert N * (I + O) < O * I and N * I * O >= dense.SWAP_WORK
    _transposed_then_plain(dtype, rng, monkeypatch, N, I, O, ("SWAP_WORK", 1 << 62))


@pytest.mark.jit
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,I,O", [(128, 70, 10), (37, 33, 1), (50, 16, 3)])
def test_a_forward_narrower_than_a_panel_runs_transposed_with_the_same_bits(dtype, N, I, O, rng, monkeypatch):
    """A layer of fewer outputs than a panel (a classifier's classes, a regression's one output)
    runs yᵀ = W·xᵀ while x is small (dense.NARROW_X): the bits of the plain y = x·Wᵀ + b."""
    from bptt.kernels import dense
    assert O < dense.PANEL and O % dense.LANES != 0 and N * I <= dense.NARROW_X
    _transposed_then_plain(dtype, rng, monkeypatch, N, I, O, ("NARROW_X", 0))


def _own_or_once_same_bits(run, threads, monkeypatch):
    """run()'s arrays with each thread packing its own operands (engine.own_panels: the panels
    packed by the first rows that read them, engine.packing_product) and with the operands packed
    once for all (OWN_BYTES 0), at one and two threads: all the same bits; returns the first."""
    from bptt.kernels import engine
    results = []
    for own_bytes in (engine.OWN_BYTES, 0):
        monkeypatch.setattr(engine, "OWN_BYTES", own_bytes)
        for n in (1, 2):
            threads(n)
            results.append(run())
    for r in results[1:]:
        for u, v in zip(results[0], r):
            np.testing.assert_array_equal(u, v)
    return results[0]


@pytest.mark.jit   # the compiled kernels' paths
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,I,O", [(12, 70, 40), (13, 64, 1100), (25, 100, 64), (128, 512, 512), (40, 1100, 30)])
def test_the_first_rows_pack_the_panels_as_they_read_them_with_the_same_bits(N, I, O, dtype, threads, rng, monkeypatch):
    """dx and the weight gradient pack each thread's panels of their right-hand operand (W, x) in
    the block of a job's first rows that reads them (engine.packing_product): the bits of the
    panels packed once for all before the jobs (operands over OWN_BYTES), at one and two
    threads. The shapes take every branch: jobs of exactly one block of rows, of a block and a
    remainder too short for another (not packed this way), of a block and more; k in several
    k-blocks (K over KC: dx's O = 1100, the weight gradient's N rows); a last panel in part;
    panels another job of the thread has already packed."""
    from bptt.kernels import dense
    x = rng.standard_normal((N, I)).astype(dtype)
    W = rng.standard_normal((O, I)).astype(dtype)
    dy = rng.standard_normal((N, O)).astype(dtype)
    dW0 = rng.standard_normal((O, I)).astype(dtype)
    db0 = rng.standard_normal(O).astype(dtype)

    def run():
        dx = np.full((N, I), np.nan, dtype)
        dense.dense_input_grad(dx, dy, W)
        dW, db = np.full((O, I), np.nan, dtype), np.full(O, np.nan, dtype)
        dense.dense_weight_grads(dW, db, dy, x)
        aW, ab = dW0.copy(), db0.copy()
        dense.dense_backward_params(aW, ab, dy, x)
        bW, bb, bx = np.full((O, I), np.nan, dtype), np.full(O, np.nan, dtype), np.full((N, I), np.nan, dtype)
        dense.dense_backward(bW, bb, bx, dy, x, W, 1)
        return [dx, dW, db, aW, ab, bW, bb, bx]

    dx, dW, db, aW, ab, bW, bb, bx = _own_or_once_same_bits(run, threads, monkeypatch)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(dx, dy @ W, **tol)
    np.testing.assert_allclose(dW, dy.T @ x, **tol)
    np.testing.assert_allclose(aW, dW0 + dy.T @ x, **tol)
    np.testing.assert_array_equal(bx, dx)
    np.testing.assert_array_equal(bW, dW)


@pytest.mark.jit   # the compiled kernels' paths
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(128, 784, 512), (16, 300, 900), (70, 40, 37), (5, 33, 1)])
def test_operands_packed_per_thread_or_once_give_the_same_bits(shape, dtype, threads, rng, monkeypatch):
    """The products' operands packed by each thread into its own copy, as its jobs need them
    (bptt.kernels.engine.own_panels), or once for all (operands over OWN_BYTES): the same bits,
    at one thread and two, called twice on the same buffers; and the new written forms
    (dense_input_grad, dense_zero_grads, dense_weight_grads, dense_forward_act) the bits of the
    accumulating ones (the set forms over NaN: every output written), as dense_backward's, which
    runs the weight gradient's and dx's jobs together."""
    from bptt.kernels import activations, dense
    N, I, O = shape
    x = rng.standard_normal((N, I)).astype(dtype)
    W = rng.standard_normal((O, I)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    dy = rng.standard_normal((N, O)).astype(dtype)
    dx0 = rng.standard_normal((N, I)).astype(dtype)
    dW0 = rng.standard_normal((O, I)).astype(dtype)
    db0 = rng.standard_normal(O).astype(dtype)

    def run():
        out = []
        for _ in range(2):
            y = np.empty((N, O), dtype)
            dense.dense_forward(y, x, W, b)
            dx = dx0.copy()
            dense.dense_backward_input(dx, dy, W)
            dW, db = dW0.copy(), db0.copy()
            dense.dense_backward_params(dW, db, dy, x)
            out.append([y, dx, dW, db])
        assert all(np.array_equal(u, v) for u, v in zip(*out))
        return out[0]

    first = _own_or_once_same_bits(run, threads, monkeypatch)
    y, dx, dW, db = first
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(y, x @ W.T + b, **tol)
    np.testing.assert_allclose(dx, dx0 + dy @ W, **tol)
    np.testing.assert_allclose(dW, dW0 + dy.T @ x, **tol)

    zeros = np.zeros((N, I), dtype)
    dense.dense_backward_input(zeros, dy, W)
    written = np.full((N, I), np.nan, dtype)
    dense.dense_input_grad(written, dy, W)
    np.testing.assert_array_equal(written, zeros)
    dW, db = dW0.copy(), db0.copy()
    dense.dense_zero_grads(dW, db)
    assert not dW.any() and not db.any()
    dense.dense_backward_params(dW, db, dy, x)   # from zeros: what dense_weight_grads must set
    for n in (1, 2):
        threads(n)
        set_W, set_b = np.full((O, I), np.nan, dtype), np.full(O, np.nan, dtype)
        dense.dense_weight_grads(set_W, set_b, dy, x)
        np.testing.assert_array_equal(set_W, dW)
        np.testing.assert_array_equal(set_b, db)
    for act in ("relu", "gelu", "tanh"):
        code = activations.ACTIVATIONS[act]
        q, z = np.empty((N, O), dtype), np.empty((N, O), dtype)
        dense.dense_forward_act(q, z, x, W, b, code)
        ref = np.empty_like(z)
        activations.activation_forward(ref, y, code)
        np.testing.assert_array_equal(q, y)
        np.testing.assert_array_equal(z, ref)
    for n in (1, 2):   # both products' jobs in one run: the bits of the two calls, set and added
        threads(n)
        for clear in (1, 0):
            both_W, both_b = (np.full((O, I), np.nan, dtype), np.full(O, np.nan, dtype)) if clear else (dW0.copy(), db0.copy())
            both_x = np.full((N, I), np.nan, dtype)
            dense.dense_backward(both_W, both_b, both_x, dy, x, W, clear)
            np.testing.assert_array_equal(both_x, zeros)
            np.testing.assert_array_equal(both_W, dW if clear else first[2])
            np.testing.assert_array_equal(both_b, db if clear else first[3])


@pytest.mark.jit   # the compiled kernels' paths
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_gradient_reading_dy_in_place_gives_the_same_bits(dtype, threads, rng, monkeypatch):
    """The weight gradient with A = dyᵀ read in place (a mini-batch, wg_in_place) or transposed
    into each thread's copy first: the same bits, on one thread and two, set and added, alone and
    beside dx (dense_backward)."""
    from bptt.kernels import dense
    for N, I, O in ((128, 784, 500), (25, 65, 400), (37, 300, 10), (64, 40, 256)):
        x = rng.standard_normal((N, I)).astype(dtype)
        dy = rng.standard_normal((N, O)).astype(dtype)
        W = rng.standard_normal((O, I)).astype(dtype)
        base = rng.standard_normal((O, I)).astype(dtype), rng.standard_normal(O).astype(dtype)
        got = []
        for bound in (dense.WG_IN_PLACE_N, 0):
            monkeypatch.setattr(dense, "WG_IN_PLACE_N", bound)
            assert dense.wg_in_place(dy) == (bound > 0)
            for n in (1, 2):
                threads(n)
                dW, db = base[0].copy(), base[1].copy()
                dense.dense_backward_params(dW, db, dy, x)
                sW, sb, sx = np.empty_like(dW), np.empty_like(db), np.empty((N, I), dtype)
                dense.dense_backward(sW, sb, sx, dy, x, W, 1)
                got.append((dW, db, sW, sb))
        for g in got[1:]:
            for u, v in zip(got[0], g):
                np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_sums_are_float64_chains_in_row_order(dtype, rng):
    """add_column_sums (the bias gradients), whose sums run in vector registers, over column
    ranges that are not whole vectors, into a strided db: each sum in float64 from 0 over the rows
    in order, then added to db in float64 and rounded to its type, as a plain loop does."""
    from numba import njit

    from bptt.kernels.engine import add_column_sums

    @njit
    def sums(db, g, u0, u1):
        add_column_sums(db, g, u0, u1)

    for N, U, u0, u1 in ((128, 512, 0, 512), (37, 101, 3, 98), (5, 7, 1, 7), (1, 40, 0, 40), (200, 72, 0, 72),
                         (300, 1030, 5, 1030)):
        g = rng.standard_normal((N, U)).astype(dtype)
        base = rng.standard_normal(2 * U).astype(dtype)
        db = base.copy()
        sums(db[::2], g, u0, u1)
        want = base.copy()
        for u in range(u0, u1):
            s = 0.0
            for n in range(N):
                s += float(g[n, u])
            want[2 * u] = float(base[2 * u]) + s
        np.testing.assert_array_equal(db, want)


def test_read_only_arrays_are_taken():
    """np.load(mmap_mode='r') or np.frombuffer give read-only arrays: the same results as writable ones."""
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    want = []
    for ro in (False, True):
        m = MLP([3, 5, 2], activation="tanh", seed=0)
        xx, gg = x.copy(), g.copy()
        xx.flags.writeable = gg.flags.writeable = not ro
        y = m.forward(xx)
        dx = m.backward(gg)
        want.append((y, dx, m.grads["layers.0.weight"].copy()))
    for a, b in zip(*want):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "identity"])
def test_changing_input_or_output_in_place_before_backward_changes_nothing(activation):
    """Backward reads the layer's own copies: ``y -= target`` (or x[...] = 0) between forward
    and backward gives the gradients of the values forward saw."""
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((8, 3)), rng.uniform(size=(8, 2))

    def grads(inplace, model):
        xx = x.copy()
        y = model.forward(xx)
        if inplace:
            y -= t
            d = 2 * y / y.size
            xx[...] = 0
        else:
            d = 2 * (y - t) / y.size
        model.backward(d)
        return {k: v.copy() for k, v in model.grads.items()}

    for make in (lambda: MLP([3, 4, 2], activation="tanh", out_activation=activation, seed=0),
                 lambda: Dense(3, 2, activation, seed=0)):
        a, b = grads(False, make()), grads(True, make())
        for k in a:
            assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("N,I,O", [(16, 300, 900), (128, 70, 10), (300, 40, 64)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_the_forward_s_jobs_copy_x_for_backward(N, I, O, n_threads, threads):
    """A layer's copy of the caller's x is made by the forward's jobs, each its share of the rows
    (dense.copy_share), on the transposed path (16 × 300 → 900; 128 × 70 → 10, narrower than a
    panel) and the plain one (300 × 40 → 64): x zeroed between forward and backward must
    change nothing, and the kept copy holds x's bits, every row."""
    threads(n_threads)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, I)).astype(np.float32)
    d = rng.standard_normal((N, O)).astype(np.float32)
    runs = []
    for zero in (False, True):
        layer = Dense(I, O, "relu", dtype=np.float32, seed=0)
        xx = x.copy()
        layer.forward(xx)
        assert not np.may_share_memory(layer._cache[0], xx)
        assert np.array_equal(layer._cache[0], x)
        if zero:
            xx[...] = 0
        dx = layer.backward(d)
        runs.append((dx, *(g.copy() for g in layer.grads.values())))
    for a, b in zip(*runs):
        assert np.array_equal(a, b)


def test_dense_without_bias_has_no_bias_parameter():
    d = Dense(3, 4, bias=False, seed=0)
    assert sorted(d.state_dict()) == ["weight"] and sorted(d.grads) == ["weight"]
    d.load_state({"weight": np.ones((4, 3))})
    assert np.array_equal(d.forward(np.zeros((1, 3))), np.zeros((1, 4)))
    d.backward(np.ones((1, 4)))


def test_parameters_assigned_as_attributes_are_written_into_the_layer():
    d = Dense(3, 1, seed=0)
    d.weight = np.zeros((1, 3))
    d.bias = np.zeros(1)
    assert np.array_equal(d.forward(np.ones((1, 3))), np.zeros((1, 1)))
    assert d.params["weight"] is d.weight
    with pytest.raises(ValueError, match="shape"):
        d.weight = np.zeros((2, 3))


def test_load_state_is_all_or_nothing_and_refuses_non_numbers():
    d = MLP([3, 4, 2], seed=0)
    before = d.state_dict()
    bad = {k: v + 1 for k, v in before.items()}
    bad["layers.1.bias"] = np.full(2, "x")
    with pytest.raises(ValueError, match="real numbers"):
        d.load_state(bad)
    bad["layers.1.bias"] = np.full(2, 1 + 2j)
    with pytest.raises(ValueError, match="real numbers"):
        d.load_state(bad)
    for k in before:
        assert np.array_equal(d.params[k], before[k]), k


def test_cross_entropy_mask_and_ignore_index_are_checked():
    z = np.random.default_rng(0).standard_normal((4, 5))
    t = np.array([0, 1, 4, 2])
    for mask in (np.array(["1", "0", "1", "1"]), np.array([1, 0, -1, 1]), np.array([1.0, np.nan, 1, 1])):
        with pytest.raises(ValueError, match="mask must hold 0/1"):
            softmax_cross_entropy(z, t, mask=mask)
    with pytest.raises(ValueError, match="ignore_index must be an integer"):
        softmax_cross_entropy(z, t, ignore_index="1")
    with pytest.raises(ValueError, match=r"class ids in \[0, 5\), found 18446744073709551516"):
        softmax_cross_entropy(z, np.array([0, 2 ** 64 - 100, 4, 2], np.uint64), ignore_index=-100)
    L, _ = softmax_cross_entropy(z, t, mask=np.array([True, False, True, True]))
    assert L == softmax_cross_entropy(z, t, mask=np.array([1.0, 0.0, 1.0, 1.0]))[0]
