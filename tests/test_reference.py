"""bptt.reference, the readable twin of every kernel, against the fast kernels in float64.

Every kernel in bptt.kernels has a twin of the same name and signature; each pair agrees to 1e-12
on shapes at the edges: one step (T = 1), one sequence (B = 1), the reverse direction at a
column offset (the second half of a bidirectional layer), H not a multiple of any vector width.
The layers, stacked and bidirectional, give the same outputs and gradients on either set
(``bptt.jit.set_kernels``), and the reference set compiles nothing.
"""
import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import bptt.kernels
from bptt import jit
from bptt.reference import activations as ref_act

TOL = 1e-12
SPEED_ONLY = {"peak"}        # measures the FMA peak: nothing to read, no twin
PENDING = set()             # kernel modules whose twin is not written yet (none)
# (B, T, I, H): one step and one sequence; odd sizes; H = 17 and I = 9 fit no vector width
SHAPES = [(1, 1, 3, 5), (1, 4, 2, 3), (3, 2, 9, 17), (5, 5, 4, 7)]


def kernel_functions():
    """(module name, name, dispatch) of every @kernel and @composite function in bptt.kernels."""
    out = []
    for info in pkgutil.iter_modules(bptt.kernels.__path__):
        path = f"{bptt.kernels.__name__}.{info.name}"
        src = importlib.util.find_spec(path).origin
        text = open(src, encoding="utf-8").read()
        if "@kernel" not in text and "@composite" not in text:
            continue
        mod = importlib.import_module(path)
        for name, obj in vars(mod).items():
            if callable(obj) and hasattr(obj, "serial") and obj.__module__ == path:   # not job sets
                out.append((info.name, name, obj))
    return out


def test_every_kernel_has_a_twin_with_the_same_signature():
    found = kernel_functions()
    assert {m for m, _, _ in found} >= {"dense", "activations", "losses", "embedding", "rnn", "lstm", "gru"}
    for module, name, fn in found:
        pending = module in PENDING and importlib.util.find_spec(f"bptt.reference.{module}") is None
        if module in SPEED_ONLY or pending:
            continue
        twin = jit.reference_twin(fn)
        assert twin.__module__ == f"bptt.reference.{module}", name
        fast = list(inspect.signature(fn.py_func).parameters)
        assert list(inspect.signature(twin).parameters) == fast, f"{module}.{name}: signatures differ"


def test_activation_codes_match():
    from bptt.kernels.activations import ACTIVATIONS
    assert ref_act.ACTIVATIONS == ACTIVATIONS


@pytest.fixture
def kernels():
    """Switch between the two sets inside a test; restores the previous set."""
    before = jit.get_kernels()
    yield jit.set_kernels
    jit.set_kernels(before)


def both(kernels, run):
    """run() on the fast kernels, then on the reference ones: the two results."""
    out = []
    for name in ("fast", "reference"):
        kernels(name)
        out.append(run())
    return out


def assert_close(fast, ref, what=""):
    if isinstance(fast, dict):
        for k in fast:
            assert_close(fast[k], ref[k], f"{what}{k}")
        return
    if isinstance(fast, (tuple, list)):
        for i, (a, b) in enumerate(zip(fast, ref)):
            assert_close(a, b, f"{what}[{i}]")
        return
    a, b = np.asarray(fast, np.float64), np.asarray(ref, np.float64)
    assert a.shape == b.shape, what
    err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-300) if a.size else 0.0
    assert err <= TOL, f"{what}: relative error {err:.1e}"


def test_a_wrong_twin_is_caught(kernels, monkeypatch):
    """The comparison can fail: a reference LSTM with the forget-gate derivative dropped differs."""
    from bptt import LSTM
    from bptt.reference import lstm as ref_lstm

    def run():
        layer = LSTM(3, 4, seed=1)
        x = np.random.default_rng(0).standard_normal((2, 3, 3))
        out, _ = layer(x)
        layer.backward(np.ones_like(out))
        return layer.grads["weight_hh_l0"].copy()
    good = run()
    orig = ref_lstm.sigmoid
    monkeypatch.setattr(ref_lstm, "sigmoid", lambda a: orig(a) * 1.0000001)
    fast, bad = both(kernels, run)
    assert_close(fast, good)
    with pytest.raises(AssertionError):
        assert_close(fast, bad)


@pytest.mark.jit
@pytest.mark.parametrize("name", list(ref_act.ACTIVATIONS))
def test_activations(name, kernels):
    from bptt.kernels import activations as fast
    code = ref_act.ACTIVATIONS[name]
    q = np.linspace(-6, 6, 3 * 41).reshape(3, 41)
    dy = np.cos(q)

    def run():
        y, dq = np.empty_like(q), np.empty_like(q)
        fast.activation_forward(y, q, code)
        fast.activation_backward(dq, dy, q, y, code)
        return y, dq
    assert_close(*both(kernels, run), name)


@pytest.mark.jit
@pytest.mark.parametrize("N,I,O", [(1, 1, 1), (4, 9, 17), (7, 3, 5)])
def test_dense(N, I, O, kernels):
    from bptt.kernels import dense
    rng = np.random.default_rng(N + I + O)
    x, W, b, dy = (rng.standard_normal(s) for s in [(N, I), (O, I), (O,), (N, O)])

    def run():
        y, dx, dW, db = np.empty((N, O)), np.full((N, I), 0.5), np.full((O, I), 0.5), np.full(O, 0.5)
        dense.dense_forward(y, x, W, b)
        dense.dense_backward_input(dx, dy, W)
        dense.dense_backward_params(dW, db, dy, x)
        return y, dx, dW, db
    assert_close(*both(kernels, run))


@pytest.mark.jit
@pytest.mark.parametrize("mode", ["last", "mean", "max"])
def test_dropout_and_pooling(mode, kernels):
    """Dropout with a fixed mask, and pooling over padded sequences (lengths 1..T, both
    directions' columns), forward and backward."""
    from bptt.kernels import dropout, pooling
    rng = np.random.default_rng(3)
    B, T, H = 4, 5, 3
    x, dy = rng.standard_normal(12), rng.standard_normal(12)
    scale = np.where(rng.random(12) < 0.5, 0.0, 2.0)
    out, dv = rng.standard_normal((B, T, 2 * H)), rng.standard_normal((B, 2 * H))
    lengths = np.array([1, 5, 3, 2], np.int64)

    def run():
        y, dx = np.empty(12), np.full(12, 0.5)
        dropout.dropout_forward(y, x, scale)
        dropout.dropout_backward(dx, dy, scale)
        v, arg, dout = np.empty((B, 2 * H)), np.empty((B, 2 * H), np.int64), np.full((B, T, 2 * H), 0.5)
        pooling.pool_forward(v, arg, out, lengths, pooling.POOL_MODES[mode], H)
        pooling.pool_backward(dout, dv, arg, lengths, pooling.POOL_MODES[mode])
        return y, dx, v, arg, dout
    assert_close(*both(kernels, run))


@pytest.mark.jit
def test_contrastive_and_whole_sequence_pooling(kernels):
    """InfoNCE on a similarity matrix, the mean over every step and unit length: forward and
    backward, fast against reference."""
    from bptt.kernels import contrastive, pooling
    rng = np.random.default_rng(4)
    B, T, H = 5, 3, 7
    h, dz, du = rng.standard_normal((B, T, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    u, v = rng.standard_normal((B, H)), rng.standard_normal((B, H))

    def run():
        z, dh = np.empty((B, H)), np.full((B, T, H), 0.5)
        pooling.mean_pool_forward(z, h)
        pooling.mean_pool_backward(dh, dz)
        un, norm, dzn = np.empty((B, H)), np.empty(B), np.full((B, H), 0.5)
        pooling.l2_normalize_forward(un, norm, z)
        pooling.l2_normalize_backward(dzn, du, un, norm)
        S, dS, rl, cl = np.empty((B, B)), np.empty((B, B)), np.empty(B), np.empty(B)
        contrastive.similarity_forward(S, u, v, 3.0)
        contrastive.info_nce_rows(rl, cl, dS, S)
        dU, dV = np.full((B, H), 0.5), np.full((B, H), 0.5)
        contrastive.similarity_backward(dU, dV, dS, u, v, 3.0)
        return z, dh, un, norm, dzn, S, dS, rl, cl, dU, dV
    assert_close(*both(kernels, run))


@pytest.mark.jit
def test_losses_and_embedding(kernels):
    from bptt.kernels import embedding, losses
    rng = np.random.default_rng(3)
    N, V = 6, 5
    z, t = rng.standard_normal((N, V)) * 3, rng.uniform(size=(N, V))
    ids, w = np.array([0, 3, 3, 1, 4, 0]), np.array([1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    W, dout = rng.standard_normal((V, 4)), rng.standard_normal((N, 4))

    def run():
        r = [np.empty(N) for _ in range(3)]
        d = [np.empty((N, V)) for _ in range(3)]
        losses.mse_rows(r[0], d[0], z, t, 1 / z.size)
        losses.softmax_xent_rows(r[1], d[1], z, ids, w, 1 / w.sum())
        losses.bce_logits_rows(r[2], d[2], z, t, 1 / z.size)
        out, dW = np.empty((N, 4)), np.full((V, 4), 0.5)
        embedding.embedding_forward(out, ids, W)
        embedding.embedding_backward(dW, dout, ids)
        return r, d, out, dW
    assert_close(*both(kernels, run))


def _cell_arrays(cell, B, T, I, H, reverse, seed):
    G = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s) * 0.5   # noqa: E731
    return dict(G=G, x=r(T, B, I), W_ih=r(G * H, I), b_ih=r(G * H), W_hh=r(G * H, H), b_hh=r(G * H),
                h0=r(B, H), c0=r(B, H), dy=r(T, B, 2 * H), dh_n=r(B, H), dc_n=r(B, H),
                off=H if reverse else 0, y=r(T, B, 2 * H))


def _run_cell(cell, a):
    """Forward and BPTT of one direction with the kernels of bptt.kernels (whichever set is on),
    then the shared weight-gradient passes: every output and gradient."""
    from bptt.kernels import gru, lstm, rnn
    T, B, I = a["x"].shape
    H, G, off = a["h0"].shape[1], a["G"], a["off"]
    rev = off > 0
    y, g = a["y"].copy(), np.empty((T, B, G * H))
    rnn.input_forward(g, a["x"], a["W_ih"], a["b_ih"])
    dg, dh0, dh = np.empty_like(g), np.full((B, H), 0.5), np.empty((B, H))
    out = {}
    if cell == "rnn":
        rnn.rnn_forward(y, g, a["h0"], a["W_hh"], a["b_hh"], off, rev, 2)   # tanh
        rnn.rnn_backward(dg, dh0, dh, a["dy"], a["dh_n"], g, y, a["W_hh"], off, rev, 2)
        dgh = dg
    elif cell == "lstm":
        c, tc, dc0, dc = np.empty((T, B, H)), np.empty((T, B, H)), np.full((B, H), 0.5), np.empty((B, H))
        lstm.lstm_forward(y, g, c, tc, a["h0"], a["c0"], a["W_hh"], a["b_hh"], off, rev)
        lstm.lstm_backward(dg, dh0, dc0, dh, dc, a["dy"], a["dh_n"], a["dc_n"], g, c, tc, a["c0"],
                           a["W_hh"], off, rev)
        out.update(c=c, tc=tc, dc0=dc0)
        dgh = dg
    else:
        mn, m, dgh = np.empty((T, B, H)), np.empty((B, 3 * H)), np.empty_like(g)
        gru.gru_forward(y, g, mn, m, a["h0"], a["W_hh"], a["b_hh"], off, rev)
        gru.gru_backward(dg, dgh, dh0, dh, a["dy"], a["dh_n"], g, mn, y, a["h0"], a["W_hh"], off, rev)
        out.update(mn=mn, dgh=dgh)
    dW_ih, db_ih = np.full((G * H, I), 0.25), np.full(G * H, 0.25)
    dW_hh, db_hh, dx = np.full((G * H, H), 0.25), np.full(G * H, 0.25), np.full((T, B, I), 0.25)
    rnn.input_backward_params(dW_ih, db_ih, dg, a["x"])
    rnn.recurrent_backward_params(dW_hh, db_hh, dgh, y, a["h0"], off, rev)
    rnn.input_backward(dx, dg, a["W_ih"])
    out.update(y=y, gates=g, dg=dg, dh0=dh0, dW_ih=dW_ih, db_ih=db_ih, dW_hh=dW_hh, db_hh=db_hh, dx=dx)
    return out


@pytest.mark.jit
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}I{}H{}".format(*s))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_cells(cell, shape, reverse, kernels):
    a = _cell_arrays(cell, *shape, reverse, seed=sum(shape) + reverse)
    assert_close(*both(kernels, lambda: _run_cell(cell, a)), f"{cell} ")


@pytest.mark.jit
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_layers_stacked_and_bidirectional(cell, kernels):
    """A 2-layer bidirectional layer, through the layer objects, non-zero states and biases."""
    import bptt
    rng = np.random.default_rng(7)
    B, T, I, H = 2, 3, 4, 5
    x, h0, c0 = rng.standard_normal((B, T, I)), rng.standard_normal((4, B, H)), rng.standard_normal((4, B, H))
    dout, dh_n = rng.standard_normal((B, T, 2 * H)), rng.standard_normal((4, B, H))

    def run():
        layer = getattr(bptt, cell)(I, H, num_layers=2, bidirectional=True, seed=3)
        if cell == "LSTM":
            out, (h_n, c_n) = layer(x, (h0, c0))
            dx = layer.backward(dout, (dh_n, dh_n))
            return out, h_n, c_n, dx, layer.dh0, layer.dc0, dict(layer.grads)
        out, h_n = layer(x, h0)
        dx = layer.backward(dout, dh_n)
        return out, h_n, dx, layer.dh0, dict(layer.grads)
    assert_close(*both(kernels, run), cell + " ")


def test_reference_kernels_compile_nothing():
    """In a fresh process with BPTT_KERNELS=reference, an LSTM step and an MLP step run and no
    kernel has a compiled build, nor the engine's micro-kernels (no dtype was prepared)."""
    import subprocess
    import sys
    code = ("import numpy as np, bptt\n"
            "from bptt import jit\n"
            "assert jit.get_kernels() == 'reference'\n"
            "l = bptt.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)\n"
            "out, _ = l(np.ones((2, 3, 3))); l.backward(np.ones_like(out))\n"
            "m = bptt.MLP([3, 5, 2], 'gelu', seed=0); y = m.forward(np.ones((4, 3))); m.backward(np.ones_like(y))\n"
            "loss, d = bptt.softmax_cross_entropy(y, np.array([0, 1, 1, 0]))\n"
            "import sys; sys.path.insert(0, 'tests'); from test_reference import kernel_functions\n"
            "print(sorted(n for _, n, f in kernel_functions() if hasattr(f, 'serial_build') and\n"
            "             (f.serial_build.signatures or f.parallel_build.signatures)) + jit.compiled_jobs(),\n"
            "      sorted(map(str, jit._prepared)))\n")
    env = dict(__import__("os").environ, BPTT_KERNELS="reference")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[] []"


def test_bad_kernels_name_is_refused():
    with pytest.raises(ValueError, match="fast, reference"):
        jit.set_kernels("slow")


def test_cli_kernels_option(kernels):
    from click.testing import CliRunner
    from cli import main
    r = CliRunner().invoke(main, ["--kernels", "reference", "gradcheck", "--model", "gru", "--hidden", "2",
                                  "--seq-len", "2", "--batch", "1"])
    assert r.exit_code == 0 and "6/6 tensors pass" in r.output, r.output
    assert jit.get_kernels() == "reference"
    kernels("fast")
    r = CliRunner().invoke(main, ["--kernels", "slow", "gradcheck"])
    assert r.exit_code == 2 and "slow" in r.output
    r = CliRunner().invoke(main, ["--kernels", "reference", "bench"])
    assert r.exit_code == 2 and "without --kernels reference" in r.output and "Traceback" not in r.output
