"""bptt gradflow (the gradient reaching each step) and gradcheck --explain."""
import numpy as np
import pytest
from click.testing import CliRunner

from bptt import gradflow as gf
from cli import main

T = 12


@pytest.fixture(scope="module")
def data():
    return gf.adding_problem(2, T, seed=1)


def test_adding_problem():
    x, y = gf.adding_problem(5, 40, seed=0)
    assert x.shape == (5, 40, 2) and y.shape == (5, 1)
    assert (x[:, :, 1].sum(axis=1) == 2).all()
    assert (x[:, :4, 1].sum(axis=1) == 1).all()          # one marker in the first tenth
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * x[:, :, 1]).sum(axis=1))
    with pytest.raises(ValueError, match="length"):
        gf.adding_problem(1, 1)


def _loss_with_h_moved(stack, x, target, k, t, v, eps):
    """The loss with h_t of layer k moved by eps·v, by forward passes only (an independent check):
    layer k runs to t, its state is moved, it runs on from t + 1; the layers above see the moved
    sequence."""
    ins, outs, _ = stack.forward(x)
    seq = outs[k].copy()
    seq[:, t] += eps * v[0]
    state = stack.state_at(k, ins, outs, t)
    if isinstance(state, tuple):
        state = (state[0] + eps * v, state[1])
    else:
        state = state + eps * v
    if t + 1 < x.shape[1]:
        seq[:, t + 1:] = stack.layers[k](ins[k][:, t + 1:], state)[0]
    for layer in stack.layers[k + 1:]:
        seq = layer(seq)[0]
    logits = stack.head.forward(seq[:, -1])
    return gf.mse_loss(logits, target)[0]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_norms_are_the_total_gradient_on_each_state(cell, data):
    """⟨∂L/∂h_t, v⟩ against a central difference of the loss with h_t moved along v, for both
    layers of a stack, at the first, a middle and the last step."""
    x, y = data
    stack = gf.Stack.fresh(cell, 2, 5, 2, 1, "mse", seed=2, init_scale=1.5)
    loss, norms = stack.grad_norms(x, y)
    assert norms.shape == (2, T)
    rng = np.random.default_rng(0)
    for k in range(2):
        for t in (0, 5, T - 1):
            # the gradient itself, from the norms' own computation, direction by direction
            ins, outs, ups = stack._loss(x, y)[1:]
            layer = stack.layers[k]
            dh = ups[k][:, t].copy()
            if t < T - 1:
                layer(ins[k][:, t + 1:], stack.state_at(k, ins, outs, t))
                layer.backward(ups[k][:, t + 1:])
                dh += layer.dh0[0]
            stack.zero_grad()
            assert np.linalg.norm(dh) == pytest.approx(norms[k, t], rel=1e-12)
            v = rng.standard_normal((1,) + dh.shape)
            eps = 1e-6
            num = (_loss_with_h_moved(stack, x, y, k, t, v, eps)
                   - _loss_with_h_moved(stack, x, y, k, t, v, -eps)) / (2 * eps)
            ana = float((dh * v[0]).sum())
            assert abs(num - ana) <= 1e-6 * max(abs(ana), 1e-3), (k, t, num, ana)


def test_rnn_vanishes_lstm_with_forget_bias_keeps_it_and_scale_explodes():
    x, y = gf.adding_problem(2, 30, seed=0)
    ratio = {}
    for name, cell, scale, fb in [("rnn", "rnn", 1.0, 0.0), ("lstm+3", "lstm", 1.0, 3.0), ("rnn x3", "rnn", 3.0, 0.0)]:
        n = gf.Stack.fresh(cell, 2, 16, 1, 1, "mse", init_scale=scale, forget_bias=fb, seed=0).grad_norms(x, y)[1][0]
        ratio[name] = n[0] / n[-1]
    assert ratio["rnn"] < 1e-4
    assert ratio["lstm+3"] > 1e3 * ratio["rnn"]
    assert ratio["rnn x3"] > 1.0


def test_truncation_errors(data):
    x, y = data
    stack = gf.Stack.fresh("gru", 2, 4, 1, 1, "mse", seed=0)
    errs = gf.truncation_errors(stack, x, y)
    assert list(errs) == [1, 2, 4, 8, T]
    assert set(errs[T]) == {"l0.weight_ih", "l0.weight_hh", "l0.bias_ih", "l0.bias_hh"}
    assert all(e == 0.0 for e in errs[T].values())
    assert all(e > 1e-3 for e in errs[1].values())
    assert errs[8]["l0.weight_hh"] < errs[1]["l0.weight_hh"]


def test_cli_gradflow(tmp_path):
    png = tmp_path / "flow.png"
    r = CliRunner().invoke(main, ["gradflow", "--cell", "rnn,lstm", "--hidden", "4", "--length", "8",
                                  "--truncate", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "rnn   1" in r.output and "lstm  1" in r.output and "▁" in r.output + "█"
    assert "lstm: relative error" in r.output
    assert png.stat().st_size > 1000
    text = tmp_path / "t.txt"
    text.write_text("hello world, hello gradients\n")
    r = CliRunner().invoke(main, ["gradflow", "--text", str(text), "--cell", "gru", "--hidden", "4"])
    assert r.exit_code == 0, r.output
    assert "characters of" in r.output


@pytest.mark.parametrize("args,msg", [(["--cell", "rnn,transformer"], "--cell must be"),
                                      (["--demo", "--text", "x.txt"], "not both")])
def test_cli_gradflow_errors(args, msg, tmp_path):
    r = CliRunner().invoke(main, ["gradflow"] + args)
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output


def test_gradcheck_explain():
    r = CliRunner().invoke(main, ["gradcheck", "--model", "dense", "--hidden", "3", "--explain"])
    assert r.exit_code == 0, r.output
    assert r.output.count("L(θ + ε) = L(") == 6           # weight, bias and x: two entries each
    assert "numeric  = (L(θ + ε) − L(θ − ε)) / 2ε" in r.output and "3/3 tensors pass" in r.output
    r = CliRunner().invoke(main, ["gradcheck", "--model", "dense", "--dtype", "float32", "--explain"])
    assert r.exit_code == 0 and r.output.count("float32") == 1


def test_explained_entries_are_the_checked_numbers():
    from bptt import Dense
    from bptt.finitediff import gradcheck
    layer = Dense(3, 2, "tanh", seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3))
    rep = gradcheck(layer, {"x": x}, explain=2)
    plain = gradcheck(layer, {"x": x})
    assert [r.max_rel for r in rep.rows] == [r.max_rel for r in plain.rows]   # explaining changes nothing
    assert len(rep.entries) == 6
    for e in rep.entries:
        assert e.numeric == (e.loss_plus - e.loss_minus) / (2 * rep.eps)
        assert e.rel <= 1e-5
    w = rep.entries[0]
    assert w.name == "weight" and w.theta == layer.params["weight"][w.index]


def test_cli_gradflow_on_a_checkpoint(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    r = CliRunner().invoke(main, ["train", str(text), "--steps", "1", "--hidden", "4", "--embed-dim", "3",
                                  "--seq-len", "8", "--batch-size", "2", "--dtype", "float64",
                                  "--layers", "2", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["gradflow", str(tmp_path / "run"), "--text", str(text), "--length", "10"])
    assert r.exit_code == 0, r.output
    assert "lstm  1" in r.output and "lstm  2" in r.output and "on 10 tokens of" in r.output
    run = str(tmp_path / "run")
    r = CliRunner().invoke(main, ["gradflow", run, run, "--text", str(text), "--length", "6"])
    assert r.exit_code == 0, r.output
    assert r.output.count(f"{run} (lstm)  1") == 2       # one row per checkpoint and layer, named
    r = CliRunner().invoke(main, ["gradflow", str(tmp_path / "run"), "--demo"])
    assert r.exit_code == 2 and "reads text" in r.output


def test_cli_gradflow_on_a_fit_adding_model(tmp_path):
    """A `bptt fit --demo adding` checkpoint: its LSTM and MLP head, on the adding problem; the
    norms equal those of the same weights as a Stack built by hand."""
    out = tmp_path / "add"
    r = CliRunner().invoke(main, ["fit", "--demo", "adding", "--length", "6", "--samples", "64",
                                  "--cell", "lstm", "--rnn-hidden", "4", "--hidden", "4", "--epochs", "1",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["gradflow", str(out), "--length", "6", "--batch", "3"])
    assert r.exit_code == 0, r.output
    assert "adding problem" in r.output and "lstm" in r.output
    from bptt.demos import adding_problem
    from bptt.fitting import load_fit_checkpoint
    ckpt, _ = load_fit_checkpoint(out)
    stack = gf.Stack.from_sequence_model(gf.sequence_model_float64(ckpt))
    x, y = adding_problem(3, 6, 0)
    _, norms = stack.grad_norms(x, y[:, None])
    assert f"{norms[0, 0]:.2e}" in r.output
