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


def _text_classifier(tmp_path):
    """A tiny `bptt fit --text` run folder: a text classifier's checkpoint."""
    csv = tmp_path / "reviews.csv"
    rows = ["good nice item", "bad poor item", "very good thing", "awful bad thing"] * 6
    csv.write_text("review,label\n" + "".join(f"{t},{'pos' if 'good' in t else 'neg'}\n" for t in rows))
    out = tmp_path / "rev"
    r = CliRunner().invoke(main, ["fit", str(csv), "--text", "review", "--target", "label", "--tokenizer", "word",
                                  "--epochs", "1", "--rnn-hidden", "3", "--embed-dim", "3", "--hidden", "3",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_gradflow_refuses_a_text_classifier_in_one_line(tmp_path):
    out = _text_classifier(tmp_path)
    r = CliRunner().invoke(main, ["gradflow", str(out), "--length", "10"])
    assert r.exit_code == 1, r.output
    assert "text classifier" in r.output and "language models" in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


# -- finite differences at a kink (a ReLU's corner) ----------------------------------------------
def _relu_at_a_kink():
    """Dense(2, 2, relu) whose unit 0 has the pre-activation 3e-6 > 0: moving its weights or x by
    ε = 1e-5 crosses ReLU's corner, so the central difference averages the slopes 1 and 0."""
    from bptt import Dense
    layer = Dense(2, 2, "relu", seed=0)
    layer.params["weight"][...] = [[1.0, -0.5], [0.3, 0.8]]
    x = np.array([[1.0, 0.5], [0.7, -1.2]])
    layer.params["bias"][...] = [-(1.0 - 0.25) + 3e-6, 0.2]   # row 0, unit 0: 1 − 0.25 + b = 3e-6
    return layer, x


def test_gradcheck_skips_entries_at_a_kink_and_says_so():
    from bptt.finitediff import gradcheck
    layer, x = _relu_at_a_kink()
    report = gradcheck(layer, {"x": x}, explain=4)
    assert report.passed, report
    assert report.kinks >= 2 and "at a kink" in report.table(), report.table()
    rows = {r.name: r for r in report.rows}
    assert rows["weight"].kinks >= 1 and rows["weight"].max_rel <= 1e-5
    assert "1e-05" in report.table()   # the documented rule still shown for the smooth entries


def test_a_wrong_gradient_still_fails_at_a_kink_and_off_it():
    from bptt.finitediff import gradcheck
    layer, x = _relu_at_a_kink()
    right = layer.backward

    def broken(dout, **kw):
        dx = right(dout, **kw)
        layer.grads["weight"] *= 0.5           # the bug: half of every weight's gradient
        return dx
    layer.backward = broken
    report = gradcheck(layer, {"x": x})
    assert not report.passed and [r.name for r in report.failures()] == ["weight"], report
    assert rows_kinks(report, "weight") == 0   # a wrong value matches neither side of the kink


def rows_kinks(report, name):
    return next(r.kinks for r in report.rows if r.name == name)


def test_cli_gradcheck_relu_rnn_seed_34_passes_with_a_kink_note():
    r = CliRunner().invoke(main, ["gradcheck", "--model", "rnn", "--activation", "relu", "--seed", "34"])
    assert r.exit_code == 0, r.output
    assert "FAIL" not in r.output and "6/6 tensors pass" in r.output and "skipped at a kink" in r.output


# -- bad input ends in one line, before the work --------------------------------------------------
def _one_line_error(r, code=2):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert "gradflow: loss" not in r.output        # refused before any work


@pytest.mark.parametrize("name,msg", [("gf.txt", "got '.txt'"), ("gf", "got no extension"),
                                      ("nodir/x.png", "does not exist")])
def test_cli_gradflow_refuses_a_plot_path_it_cannot_write_before_the_work(name, msg, tmp_path):
    pytest.importorskip("matplotlib")
    r = CliRunner().invoke(main, ["gradflow", "--plot", str(tmp_path / name), "--length", "5", "--hidden", "2"])
    _one_line_error(r)
    assert "--plot" in r.output and msg in r.output, r.output
    assert not (tmp_path / name).exists()


def test_cli_gradflow_plots_any_format_matplotlib_writes(tmp_path):
    pytest.importorskip("matplotlib")
    svg = tmp_path / "flow.SVG"
    r = CliRunner().invoke(main, ["gradflow", "--plot", str(svg), "--length", "4", "--hidden", "2", "--cell", "rnn"])
    assert r.exit_code == 0, r.output
    assert "<svg" in svg.read_text()


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A `bptt train` run folder (one step of a tiny LSTM) and the text it read."""
    tmp = tmp_path_factory.mktemp("lm")
    text = tmp / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    r = CliRunner().invoke(main, ["train", str(text), "--steps", "1", "--hidden", "4", "--embed-dim", "3",
                                  "--seq-len", "8", "--batch-size", "2", "--dtype", "float64",
                                  "--out", str(tmp / "run")])
    assert r.exit_code == 0, r.output
    return tmp / "run", text


@pytest.mark.parametrize("args,flags", [(["--cell", "gru"], "--cell"), (["--hidden", "8"], "--hidden"),
                                        (["--layers", "2"], "--layers"), (["--init-scale", "3"], "--init-scale"),
                                        (["--forget-bias", "1"], "--forget-bias"),
                                        (["--cell", "lstm", "--hidden", "4"], "--cell and --hidden")])
def test_cli_gradflow_refuses_fresh_model_options_with_a_checkpoint(args, flags, lm_run):
    run, text = lm_run
    r = CliRunner().invoke(main, ["gradflow", str(run), "--text", str(text), "--length", "6"] + args)
    _one_line_error(r)
    assert f"{flags} describe" in r.output and "the checkpoint fixes" in r.output, r.output
    # their defaults, or the options that do apply to a checkpoint, are fine
    r = CliRunner().invoke(main, ["gradflow", str(run), "--text", str(text), "--length", "6", "--seed", "3"])
    assert r.exit_code == 0, r.output


def test_cli_gradflow_notes_a_text_shorter_than_length(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world\n")                        # 12 characters: T = 11
    r = CliRunner().invoke(main, ["gradflow", "--text", str(text), "--length", "50", "--cell", "rnn",
                                  "--hidden", "2"])
    assert r.exit_code == 0, r.output
    assert f"note: --length 50 cut to 11: {text} holds only 12 characters" in r.stderr, r.stderr
    assert "11 characters of" in r.stdout and "note:" not in r.stdout
    r = CliRunner().invoke(main, ["gradflow", "--text", str(text), "--length", "11", "--cell", "rnn",
                                  "--hidden", "2"])
    assert r.exit_code == 0 and "note:" not in r.output, r.output


def test_cli_gradflow_notes_a_checkpoint_text_shorter_than_length(lm_run, tmp_path):
    run, _ = lm_run
    short = tmp_path / "short.txt"
    short.write_text("the lazy dog.")                      # 13 characters: T = 12
    r = CliRunner().invoke(main, ["gradflow", str(run), "--text", str(short), "--length", "40"])
    assert r.exit_code == 0, r.output
    assert f"note: --length 40 cut to 12: {short} holds only 13 tokens" in r.stderr, r.stderr
    assert "12 tokens of" in r.stdout


def test_cli_gradflow_bounds_length_and_says_why():
    MAX_LENGTH = 1000                                    # as the README and --help say
    r = CliRunner().invoke(main, ["gradflow", "--length", str(MAX_LENGTH + 1)])
    _one_line_error(r)
    assert f"--length {MAX_LENGTH + 1} is above {MAX_LENGTH}" in r.output and "square" in r.output, r.output
    r = CliRunner().invoke(main, ["gradflow", "--help"])
    assert f"at most {MAX_LENGTH}" in " ".join(r.output.split())
