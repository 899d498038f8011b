"""bptt fit / predict: CSV reading, each task, each bad input, the padding mask, gradient checks,
exact resume, the NaN guard, the demos' generators, embed with a text classifier."""
import csv
import json
import os
import signal

import numpy as np
import pytest

from bptt import gradcheck, jit
from bptt.checkpoint import load_checkpoint
from bptt.demos import adding_problem, spirals
from bptt.fitting import FitOptions, make_trainer, prepare
from bptt.sequence import SequenceModel, reverse_index
from bptt.supervised import CHECKPOINT_NAME, SupervisedConfig, SupervisedTrainer
from bptt.tabular import TabularMLP, read_csv
from bptt.train import TrainingError
from clihelp import one_line_error, run

FAST = ["--dtype", "float64", "--threads", "1", "--epochs", "3", "--hidden", "8"]


@pytest.fixture(autouse=True)
def _one_thread():
    before = jit.get_threads()
    jit.set_threads(1)   # tiny shapes: the serial builds
    yield
    jit.set_threads(before)


def write(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(0)
    reg, binary, multi = [["id", "a", "b", "color", "y"]], [], [["x1", "x2", "kind"]]
    for i in range(80):
        a, b = rng.standard_normal(2)
        c = ["red", "green", "blue"][i % 3]
        reg.append([i, f"{a:.3f}", f"{b:.3f}", c, f"{3 * a - b + (c == 'red'):.3f}"])
        binary.append([f"{a:.3f}", f"{b:.3f}", int(a + b > 0)])
        multi.append([f"{a:.3f}", f"{b:.3f}", ["cat", "dog", "eel"][int(a > 0) + int(b > 0)]])
    return {"reg": write(d / "reg.csv", reg), "bin": write(d / "bin.csv", binary),
            "multi": write(d / "multi.csv", multi), "dir": d}


# -- reading --------------------------------------------------------------------------------------

def test_header_detection_and_positions(tables):
    t = read_csv(tables["reg"])
    assert t.has_header and t.names == ["id", "a", "b", "color", "y"] and len(t) == 80
    t = read_csv(tables["bin"])
    assert not t.has_header and t.names == ["0", "1", "2"] and t.index_of("-1") == 2
    assert t.lines[0] == 1
    rows = list(csv.reader(open(tables["reg"])))
    with open(tables["dir"] / "semi.csv", "w", newline="") as f:
        csv.writer(f, delimiter=";").writerows(rows)
    t = read_csv(tables["dir"] / "semi.csv")
    assert t.names == ["id", "a", "b", "color", "y"] and t.rows[0] == rows[1]
    (tables["dir"] / "housing.data").write_text(" 0.1  18.0  2  7.5\n0.25   0.0  7  8.1\n0.3 0 7 9.2\n")
    t = read_csv(tables["dir"] / "housing.data")
    assert not t.has_header and t.rows[2] == ["0.3", "0", "7", "9.2"]


# -- each task, end to end ------------------------------------------------------------------------

def test_regression_fit_predict_and_json(tables, tmp_path):
    out, js = tmp_path / "r", tmp_path / "r.json"
    r = run("fit", tables["reg"], "--target", "y", "--drop", "id", "--out", out, "--json", js, *FAST)
    assert r.exit_code == 0, r.output
    assert "task: regression" in r.output and "epoch 3:" in r.output
    final = [l for l in r.output.splitlines() if l.startswith("final:")][0]
    assert "RMSE" in final and "R²" in final and "mean predictor" in final
    doc = json.loads(js.read_text())
    assert doc["task"] == "regression" and set(doc["metrics"]) == {"rmse", "mae", "r2"}
    assert doc["baseline"]["r2"] <= 0.05 and doc["metrics"]["rmse"] < doc["baseline"]["rmse"]
    r = run("predict", out, tables["reg"], "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(open(tmp_path / "p.csv")))
    assert rows[0] == ["y"] and len(rows) == 81 and float(rows[1][0]) == float(rows[1][0])
    assert "RMSE" in r.output


def test_binary_without_header_and_multiclass_with_confusion(tables, tmp_path):
    r = run("fit", tables["bin"], "--target", "-1", "--out", tmp_path / "b", *FAST)
    assert r.exit_code == 0, r.output
    assert "task: binary" in r.output and "majority class" in r.output
    r = run("fit", tables["multi"], "--target", "kind", "--out", tmp_path / "m", "--dropout", "0.2", *FAST)
    assert r.exit_code == 0, r.output
    assert "task: multiclass (3 labels" in r.output and "confusion matrix" in r.output
    assert "macro-F1" in r.output and "log loss" in r.output
    r = run("predict", tmp_path / "m", tables["multi"], "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(open(tmp_path / "p.csv")))
    assert rows[0] == ["kind", "p_cat", "p_dog", "p_eel"]
    p = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    assert np.allclose(p.sum(1), 1, atol=1e-5) and rows[1][0] in ("cat", "dog", "eel")


def test_val_file_instead_of_a_split(tables, tmp_path):
    rows = list(csv.reader(open(tables["multi"])))
    write(tmp_path / "train.csv", rows[:61])
    write(tmp_path / "val.csv", [rows[0]] + rows[61:])
    r = run("fit", tmp_path / "train.csv", "--target", "kind", "--val", tmp_path / "val.csv",
            "--out", tmp_path / "o", *FAST)
    assert r.exit_code == 0, r.output
    assert "60 training and 20 validation rows" in r.output


def test_stratified_split_is_seeded_and_keeps_class_shares(tables):
    a = prepare(FitOptions(data=str(tables["multi"]), target="kind", dtype="float64"))
    b = prepare(FitOptions(data=str(tables["multi"]), target="kind", dtype="float64"))
    assert np.array_equal(a.val["x"], b.val["x"])
    share = lambda y: np.bincount(y, minlength=3) / y.size
    assert np.abs(share(a.train["y"]) - share(a.val["y"])).max() < 0.06
    # the standardisation comes from the training rows only
    assert np.allclose(a.train["x"][:, 0].mean(), 0, atol=1e-12) and not np.isclose(a.val["x"][:, 0].mean(), 0, atol=1e-6)


# -- bad input: one line naming file, row and column; no checkpoint written ----------------------

def test_bad_inputs_are_one_line_errors(tables, tmp_path):
    d = tmp_path
    one_line_error(run("fit", tables["reg"], "--target", "nope", "--out", d / "o", *FAST), "reg.csv", "row 1", "'nope'")
    write(d / "ragged.csv", [["a", "b"], [1, 2], [3]])
    one_line_error(run("fit", d / "ragged.csv", "--target", "b", "--out", d / "o", *FAST), "ragged.csv", "row 3", "ragged")
    (d / "empty.csv").write_text("")
    one_line_error(run("fit", d / "empty.csv", "--target", "b", "--out", d / "o", *FAST), "empty.csv", "empty")
    rows = [["a", "b", "y"]] + [[i, i % 3, i % 2] for i in range(20)]
    rows[5][0] = "abc"
    write(d / "typo.csv", rows)
    one_line_error(run("fit", d / "typo.csv", "--target", "y", "--out", d / "o", *FAST),
                   "typo.csv", "row 6", "column 'a'", "'abc'")
    rows[5][0] = "NaN"
    rows[7][1] = ""
    write(d / "nan.csv", rows)
    one_line_error(run("fit", d / "nan.csv", "--target", "y", "--out", d / "o", *FAST),
                   "nan.csv", "row 6", "column 'a'", "--missing drop")
    r = run("fit", d / "nan.csv", "--target", "y", "--missing", "drop", "--out", d / "ok", *FAST)
    assert r.exit_code == 0 and "dropped 2 rows" in r.output, r.output
    write(d / "one.csv", [["a", "y"]] + [[i, "same"] for i in range(10)])
    one_line_error(run("fit", d / "one.csv", "--target", "y", "--out", d / "o", *FAST), "one.csv", "column 'y'", "one value")
    write(d / "few.csv", [["a", "y"], [1, 1.5], [2, 2.5]])
    one_line_error(run("fit", d / "few.csv", "--target", "y", "--out", d / "o", *FAST), "few.csv", "too few")
    write(d / "text.csv", [["t", "y"], ["ab", "x"], ["cd", "z"], ["ef", "x"]])
    one_line_error(run("fit", d / "text.csv", "--text", "body", "--target", "y", "--out", d / "o", *FAST),
                   "text.csv", "row 1", "'body'")
    assert not (d / "o").exists()


def test_bad_prediction_inputs_and_no_overwrite(tables, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert run("fit", tables["reg"], "--target", "y", "--drop", "id", "--out", out, *FAST).exit_code == 0
    before = (out / CHECKPOINT_NAME).read_bytes()
    one_line_error(run("fit", tables["reg"], "--target", "y", "--out", out, *FAST), "--resume")
    assert (out / CHECKPOINT_NAME).read_bytes() == before
    d = tmp_path
    write(d / "unknown.csv", [["id", "a", "b", "color"], [1, 0.5, 0.2, "purple"]])
    one_line_error(run("predict", out, d / "unknown.csv", "--out", d / "p.csv"), "unknown.csv", "row 2",
                   "column 'color'", "'purple'")
    write(d / "missing.csv", [["id", "a", "color"], [1, 0.5, "red"]])
    one_line_error(run("predict", out, d / "missing.csv", "--out", d / "p.csv"), "missing.csv", "'b'")
    write(d / "extra.csv", [["a", "b", "color", "zzz"], [0.5, 0.2, "red", 3]])
    one_line_error(run("predict", out, d / "extra.csv", "--out", d / "p.csv"), "extra.csv", "'zzz'")
    # a language model's checkpoint is not a fit checkpoint
    from bptt.checkpoint import save_checkpoint
    save_checkpoint(d / "lm.bptt", {"kind": "lm", "model": {}})
    one_line_error(run("predict", d / "lm.bptt", tables["reg"], "--out", d / "p.csv"), "lm.bptt", "'lm'")


# -- models: gradients ---------------------------------------------------------------------------

@pytest.mark.parametrize("task,O", [("regression", 1), ("binary", 1), ("multiclass", 3)])
def test_tabular_mlp_gradcheck_each_loss_with_dropout(task, O, rng):
    from bptt.layers.dropout import dropout_scale
    m = TabularMLP(4, [6, 5], O, task, activation="gelu", dropout=0.3, dtype="float64", seed=1)
    for k, d in enumerate(m.drops):
        d.fix_mask(dropout_scale(np.random.default_rng(k), (5, [6, 5][k]), 0.3, np.float64))
    y = {"regression": rng.standard_normal(5), "binary": (rng.random(5) > 0.5).astype(float),
         "multiclass": rng.integers(0, 3, 5)}[task]
    report = gradcheck(m, {"x": rng.standard_normal((5, 4)), "y": y})
    assert report.passed, report.table()
    assert len(report.rows) == 7


def _seq_spec(**kw):
    spec = {"type": "sequence", "task": "multiclass", "out_features": 3, "cell": "lstm", "rnn_hidden": 4,
            "layers": 1, "bidirectional": True, "pool": "mean", "head_hidden": [5], "activation": "tanh",
            "dropout": 0.0, "dtype": "float64", "seed": 3, "input": "ids", "vocab_size": 9, "embed_dim": 3}
    spec.update(kw)
    return spec


@pytest.mark.parametrize("cell,pool,layers", [("lstm", "last", 2), ("gru", "max", 1), ("rnn", "mean", 2)])
def test_padding_changes_neither_loss_nor_gradients(cell, pool, layers, rng):
    """A padded batch gives the loss and every gradient of the sequences run one at a time,
    unpadded (the mean over the batch = the mean of the single-sequence losses)."""
    m = SequenceModel(_seq_spec(cell=cell, pool=pool, layers=layers))
    lens = np.array([5, 2, 4])
    ids = rng.integers(1, 9, (3, 7))   # padding beyond len: any ids, to show they count for nothing
    y = np.array([0, 2, 1])
    m.zero_grad()
    loss = m.loss_and_grad({"ids": ids, "len": lens, "y": y})
    padded = {k: g.copy() for k, g in m.gradients().items()}
    m.zero_grad()
    singles = [m.loss_and_grad({"ids": ids[b:b + 1, :lens[b]], "len": lens[b:b + 1], "y": y[b:b + 1]})
               for b in range(3)]
    assert loss == pytest.approx(np.mean(singles), rel=1e-12)
    for k, g in m.gradients().items():
        np.testing.assert_allclose(padded[k], g / 3, rtol=1e-9, atol=1e-14, err_msg=k)
    assert np.abs(padded["embedding.weight"]).sum() > 0


def test_reverse_index_is_its_own_inverse():
    idx = reverse_index(np.array([3, 1, 4]), 4)
    assert idx.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [3, 2, 1, 0]]
    assert np.array_equal(np.take_along_axis(idx, idx, 1), np.tile(np.arange(4), (3, 1)))


def test_text_classifier_gradcheck_with_mask_and_dropout(rng):
    m = SequenceModel(_seq_spec(cell="gru", layers=2, dropout=0.3, pool="last"))
    m.check_dropout_seed = 4
    inputs = {"ids": rng.integers(0, 9, (3, 5)), "len": np.array([5, 3, 1]), "y": np.array([1, 0, 2]),
              "h0": rng.standard_normal((4, 3, 4))}
    report = gradcheck(m, inputs, max_checks=25)
    assert report.passed, report.table()
    assert any(r.name == "h0" for r in report.rows)


def test_sequence_regressor_gradcheck_on_raw_inputs(rng):
    m = SequenceModel(_seq_spec(input="x", input_size=2, task="regression", out_features=1, head_hidden=[],
                                bidirectional=False, pool="last"))
    inputs = {"x": rng.standard_normal((2, 4, 2)), "len": np.array([4, 4]), "y": rng.standard_normal(2),
              "h0": rng.standard_normal((1, 2, 4)), "c0": rng.standard_normal((1, 2, 4))}
    report = gradcheck(m, inputs)
    assert report.passed, report.table()


@pytest.mark.parametrize("model", ["dropout", "table-regression", "table-binary", "table-multiclass", "text"])
def test_gradcheck_command_covers_the_new_models(model):
    r = run("--threads", 1, "gradcheck", "--model", model, "--max-checks", 20)
    assert r.exit_code == 0, r.output
    assert "tensors pass" in r.output and "FAIL" not in r.output


def test_a_broken_pooling_gradient_is_caught(rng, monkeypatch):
    import bptt.sequence as seq
    good = seq.pool_backward
    monkeypatch.setattr(seq, "pool_backward", lambda dv, *a: good(dv, *a) * 0.9)
    m = SequenceModel(_seq_spec())
    report = gradcheck(m, {"ids": rng.integers(0, 9, (2, 4)), "len": np.array([4, 2]), "y": np.array([0, 1])},
                       max_checks=10)
    assert not report.passed


# -- training: exact resume, Ctrl-C, NaN guard ---------------------------------------------------

def _trainer(tables, out, epochs, dropout=0.2):
    opts = FitOptions(data=str(tables["multi"]), target="kind", dtype="float64", hidden=[8], dropout=dropout)
    job = prepare(opts)
    cfg = SupervisedConfig(epochs=epochs, batch_size=16, lr=0.01, patience=None)
    return job, opts, cfg, make_trainer(job, opts, cfg, out)


def test_steps_that_set_the_gradients_train_the_bits_of_zero_grad_then_accumulate(tables, tmp_path):
    """The trainer lets a model that declares ``sets_gradients`` set them in its backward (no
    zero_grad pass): the same weights, bit for bit, as zero_grad then an accumulating backward,
    dropout and all."""
    *_, a = _trainer(tables, tmp_path / "a", 2)
    *_, b = _trainer(tables, tmp_path / "b", 2)
    assert a.model.sets_gradients
    b.model.sets_gradients = False   # the general path: zero_grad, then loss_and_grad adds
    calls = []
    zero_grad = b.model.zero_grad
    b.model.zero_grad = lambda: calls.append(1) or zero_grad()
    a.run()
    b.run()
    assert calls and a.step == b.step > 4
    pa, pb = a.model.state_dict(), b.model.state_dict()
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_resume_after_a_stop_mid_epoch_is_bitwise_exact(tables, tmp_path):
    *_, a = _trainer(tables, tmp_path / "a", 4)
    a.run()
    *_, b = _trainer(tables, tmp_path / "b", 4)
    b.run(lambda kind, info: os.kill(os.getpid(), signal.SIGINT) if kind == "step" and info["step"] == 6 else None)
    ck = SupervisedTrainer.load(tmp_path / "b")
    assert ck["step"] == 6 and ck["pos"] > 0
    job, opts, cfg, _ = _trainer(tables, tmp_path / "unused", 4)
    c = make_trainer(job, opts, cfg, tmp_path / "b", checkpoint=ck)
    assert c.run()["reason"] == "done"
    pa, pc = a.model.state_dict(), c.model.state_dict()
    assert all(np.array_equal(pa[k], pc[k]) for k in pa)
    recs = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert sum("val_loss" in r for r in recs) == 4 and "accuracy" in recs[-1]


def test_cli_resume_continues_to_the_same_weights(tables, tmp_path):
    args = [tables["bin"], "--target", "-1", "--dtype", "float64", "--threads", "1", "--hidden", "8", "--patience", "0"]
    assert run("fit", *args, "--epochs", 4, "--out", tmp_path / "a").exit_code == 0
    assert run("fit", *args, "--epochs", 2, "--out", tmp_path / "b").exit_code == 0
    r = run("fit", tables["bin"], "--resume", "--epochs", 4, "--out", tmp_path / "b")
    assert r.exit_code == 0 and "resuming" in r.output, r.output
    ma, mb = (load_checkpoint(tmp_path / d / CHECKPOINT_NAME)["model"] for d in "ab")
    assert all(np.array_equal(ma[k], mb[k]) for k in ma)


def test_nan_guard_keeps_the_good_checkpoint(tables, tmp_path):
    job, *_, t = _trainer(tables, tmp_path / "n", 6)
    t.config.epochs = 2
    t.total_steps = 2 * t.steps_per_epoch
    t.run()
    good = (tmp_path / "n" / CHECKPOINT_NAME).read_bytes()
    job2, opts, cfg, _ = _trainer(tables, tmp_path / "x", 6)
    t2 = make_trainer(job2, opts, cfg, tmp_path / "n", checkpoint=SupervisedTrainer.load(tmp_path / "n"))
    t2.model.loss_and_grad = lambda batch, rng=None, **kw: float("nan")
    with pytest.raises(TrainingError, match="non-finite.*kept"):
        t2.run()
    assert (tmp_path / "n" / CHECKPOINT_NAME).read_bytes() == good


# -- demos and text ------------------------------------------------------------------------------

def test_demo_generators():
    X, y = spirals(50, seed=1)
    assert X.shape == (150, 2) and np.bincount(y).tolist() == [50, 50, 50]
    assert np.array_equal(X, spirals(50, seed=1)[0])
    x, t = adding_problem(4000, 30, seed=2)
    assert x.shape == (4000, 30, 2)
    marks = x[:, :, 1]
    assert np.all(marks.sum(1) == 2) and np.all(marks[:, :15].sum(1) == 1)
    assert np.allclose(t, (x[:, :, 0] * marks).sum(1))
    assert abs(np.mean((t - 1) ** 2) - 1 / 6) < 0.01


def test_text_fit_predict_and_embed(tmp_path):
    rng = np.random.default_rng(0)
    words = "the a cat dog sat ran on mat".split()
    rows = [["text", "label"]]
    for i in range(60):
        w = list(rng.choice(words, rng.integers(2, 6)))
        lab = ["good", "bad"][i % 2]
        w.insert(int(rng.integers(0, len(w))), lab)
        rows.append([" ".join(w), lab])
    write(tmp_path / "t.csv", rows)
    out = tmp_path / "t"
    r = run("fit", tmp_path / "t.csv", "--text", "text", "--target", "label", "--tokenizer", "word",
            "--rnn-hidden", "6", "--embed-dim", "4", "--bidirectional", "--pool", "max", "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    assert "task: binary" in r.output and "final:" in r.output
    assert load_checkpoint(out / "best.bptt")["kind"] == "text"
    r = run("predict", out, tmp_path / "t.csv", "--out", tmp_path / "p.csv")
    assert r.exit_code == 0 and "accuracy" in r.output, r.output
    (tmp_path / "q.txt").write_text("the cat good\na dog bad\n")
    r = run("embed", out, tmp_path / "q.txt", "--out", tmp_path / "v.npy")
    assert r.exit_code == 0 and "2 vectors of size 12" in r.output, r.output
    r = run("search", tmp_path / "v.npy", "the cat good", "-k", "1")
    assert r.exit_code == 0 and "+1.0000  the cat good" in r.output, r.output


def test_encoder_matches_torch_packed_sequences(rng):
    """The bidirectional 2-layer encoder on a padded batch equals torch's LSTM on the packed
    sequences: outputs at the valid steps, and every weight gradient."""
    torch = pytest.importorskip("torch")
    from bptt.sequence import RecurrentEncoder
    enc = RecurrentEncoder("lstm", 3, 4, layers=2, bidirectional=True, dtype=np.float64,
                           rng=np.random.default_rng(5))
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(torch.from_numpy(enc.params[name]))
    lens = np.array([6, 3, 5])
    x = rng.standard_normal((3, 6, 3))
    dout = rng.standard_normal((3, 6, 8)) * (np.arange(6)[None, :, None] < lens[:, None, None])
    out = enc.forward(x, lens)
    enc.zero_grad()
    dx = enc.backward(dout)
    xt = torch.tensor(x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lens), batch_first=True, enforce_sorted=False)
    yt, _ = torch.nn.utils.rnn.pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=6)
    (yt * torch.from_numpy(dout)).sum().backward()
    valid = np.arange(6)[None, :] < lens[:, None]
    np.testing.assert_allclose(out[valid], yt.detach().numpy()[valid], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)   # zero on the padding
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(enc.grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("pool", ["last", "mean", "max"])
@pytest.mark.parametrize("D", [1, 2])
def test_pooling_kernels_match_a_numpy_reference(pool, D, rng):
    from bptt.sequence import pool_backward, pool_forward
    H, lens = 3, np.array([4, 1, 3])
    out = rng.standard_normal((3, 4, D * H))
    v, arg = pool_forward(out, lens, pool, D, H)
    dv = rng.standard_normal(v.shape)
    dout = pool_backward(dv, arg, out.shape, lens, pool, D, H)
    ref_v, ref_d = np.zeros_like(v), np.zeros_like(out)
    for b, L in enumerate(lens):
        seg = out[b, :L]
        if pool == "mean":
            ref_v[b] = seg.mean(0)
            ref_d[b, :L] = dv[b] / L
        elif pool == "max":
            a = seg.argmax(0)
            ref_v[b] = seg[a, np.arange(D * H)]
            ref_d[b, a, np.arange(D * H)] = dv[b]
        else:
            ref_v[b, :H], ref_d[b, L - 1, :H] = seg[L - 1, :H], dv[b, :H]
            if D == 2:
                ref_v[b, H:], ref_d[b, 0, H:] = seg[0, H:], dv[b, H:]
    np.testing.assert_allclose(v, ref_v, rtol=1e-14)
    np.testing.assert_allclose(dout, ref_d, rtol=1e-14)


def test_adding_demo_runs_and_reports_mse(tmp_path):
    js = tmp_path / "a.json"
    r = run("fit", "--demo", "adding", "--length", 6, "--samples", 60, "--cell", "gru", "--rnn-hidden", 4,
            "--epochs", 2, "--dtype", "float64", "--threads", 1, "--out", tmp_path / "a", "--json", js)
    assert r.exit_code == 0, r.output
    assert "always predicting 1 has MSE" in r.output and "final: MSE" in r.output
    doc = json.loads(js.read_text())
    assert doc["metrics"]["mse"] == pytest.approx(doc["metrics"]["rmse"] ** 2)
    assert 0.05 < doc["baseline"]["mse"] < 0.4


# -- robustness: audit of bptt fit / predict --------------------------------------------------------

def _table(n=60, seed=0, label=lambda a: "yes" if a > 0 else "no"):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a = float(rng.standard_normal())
        rows.append([i, f"{a:.3f}", ["red", "green", "blue"][i % 3], label(a)])
    return rows


FAST2 = ["--dtype", "float64", "--threads", "1", "--epochs", "2", "--hidden", "8"]


def test_predict_accepts_the_columns_features_left_out(tmp_path):
    write(tmp_path / "t.csv", [["id", "a", "color", "label"]] + _table())
    r = run("fit", tmp_path / "t.csv", "--target", "label", "--features", "a,color", "--out", tmp_path / "r", *FAST2)
    assert r.exit_code == 0, r.output
    r = run("predict", tmp_path / "r", tmp_path / "t.csv", "--out", tmp_path / "p.csv")
    assert r.exit_code == 0 and "wrote 60 predictions" in r.output, r.output
    write(tmp_path / "x.csv", [["id", "a", "color", "zzz"], [1, 0.5, "red", 3]])   # still refused
    one_line_error(run("predict", tmp_path / "r", tmp_path / "x.csv", "--out", tmp_path / "p.csv"), "'zzz'")


def test_huge_and_tiny_magnitudes_give_finite_statistics_and_metrics(tmp_path):
    from bptt.tabular import mean_std, regression_metrics
    for scale in (1e305, 1e-300):
        v = np.array([1.0, 2.0, 4.0]) * scale
        m, s = mean_std(v)
        assert m == pytest.approx(7 / 3 * scale) and s == pytest.approx(np.std([1.0, 2.0, 4.0]) * scale)
        met = regression_metrics(v[::-1].copy(), v)
        assert met["rmse"] == pytest.approx(np.sqrt(6) * scale) and met["mae"] == pytest.approx(2 * scale)
        assert np.isfinite(met["r2"])
    rng = np.random.default_rng(1)
    x = [float(a) for a in rng.standard_normal(40)]
    write(tmp_path / "hy.csv", [["x", "y"]] + [[f"{a:.3f}", repr(abs(a) * 1e305)] for a in x])
    write(tmp_path / "hx.csv", [["big", "y"]] + [[repr(a * 1e300), repr(2 * a + 1)] for a in x])
    write(tmp_path / "ty.csv", [["x", "y"]] + [[f"{a:.3f}", repr(a * 1e-300)] for a in x])
    for name in ("hy", "hx", "ty"):
        js = tmp_path / f"{name}.json"
        r = run("fit", tmp_path / f"{name}.csv", "--target", "y", "--out", tmp_path / name, "--json", js, *FAST2)
        assert r.exit_code == 0, r.output
        assert "nan" not in r.output.lower(), r.output
        doc = json.loads(js.read_text())
        assert all(np.isfinite(doc[k][m]) for k in ("metrics", "baseline") for m in ("rmse", "mae", "r2")), doc
    ck = load_checkpoint(tmp_path / "hx" / "best.bptt")["encoder"]["stats"]
    assert np.isfinite(ck["std"]["big"]) and ck["std"]["big"] > 1e299    # not zeroed: std was inf before
    ck = load_checkpoint(tmp_path / "ty" / "best.bptt")["encoder"]["stats"]
    assert 0 < ck["y_std"] < 1e-299                                     # not underflowed to 0 -> 1
    # a value that cannot be standardised with the training statistics: one line naming the cell
    write(tmp_path / "tiny.csv", [["x", "y"]] + [[repr(a * 1e-300), f"{a:.3f}"] for a in x])
    assert run("fit", tmp_path / "tiny.csv", "--target", "y", "--out", tmp_path / "tiny", *FAST2).exit_code == 0
    write(tmp_path / "far.csv", [["x", "y"], ["1e300", "1"]])
    one_line_error(run("predict", tmp_path / "tiny", tmp_path / "far.csv", "--out", tmp_path / "p.csv"),
                   "far.csv", "row 2", "column 'x'", "cannot be standardised")


def test_resume_refuses_changed_options_but_takes_the_same_command(tmp_path):
    write(tmp_path / "t.csv", [["id", "a", "color", "label"]] + _table())
    args = [tmp_path / "t.csv", "--target", "label", "--features", "a,color", "--drop", "id", "--hidden", "8",
            "--lr", "0.01", "--patience", "0", "--dtype", "float64", "--threads", "1", "--out", tmp_path / "r"]
    assert run("fit", *args, "--epochs", 2).exit_code == 0
    before = (tmp_path / "r" / CHECKPOINT_NAME).read_bytes()
    e = one_line_error(run("fit", "--resume", "--out", tmp_path / "r", "--hidden", "32", "--target", "color",
                           "--lr", "0.5", "--features", "a"), "--hidden 32", "--target color", "--lr 0.5", "--features a")
    assert "8" in e and "label" in e
    assert (tmp_path / "r" / CHECKPOINT_NAME).read_bytes() == before
    # the identical command (the comma lists spaced differently) resumes
    args[4] = "a, color"
    r = run("fit", *args, "--epochs", 3, "--resume")
    assert r.exit_code == 0 and "resuming" in r.output and "epoch 3:" in r.output, r.output
    # a run whose epochs are done, or that stopped early, says so first, trains nothing and
    # reports its final metrics again (exit 0: a sweep re-running a finished trial reads them)
    before = (tmp_path / "r" / CHECKPOINT_NAME).read_bytes()
    r = run("fit", *args, "--epochs", 3, "--resume")
    assert r.exit_code == 0 and "already finished" in r.output and "epochs are done" in r.output, r.output
    assert "epoch 4:" not in r.output and "final:" in r.output
    assert (tmp_path / "r" / CHECKPOINT_NAME).read_bytes() == before
    write(tmp_path / "n.csv", [["a", "y"]] + [[i % 7, ["p", "q"][i % 2]] for i in range(40)])   # nothing to learn
    assert run("fit", tmp_path / "n.csv", "--target", "y", "--patience", "1", "--epochs", "30", "--lr", "0.05",
               "--out", tmp_path / "es", *FAST2[:4], "--hidden", "4").exit_code == 0
    r = run("fit", "--resume", "--out", tmp_path / "es", "--epochs", "60")
    assert r.exit_code == 0 and "already finished" in r.output and "early stopping" in r.output, r.output


def test_a_typo_in_a_numeric_target_is_an_error_not_classes(tmp_path):
    rng = np.random.default_rng(2)
    rows = [["x", "price"]] + [[f"{a:.3f}", f"{100 + 3 * a:.3f}"] for a in rng.standard_normal(40)]
    rows[6][1] = "1O4.2"
    write(tmp_path / "p.csv", rows)
    one_line_error(run("fit", tmp_path / "p.csv", "--target", "price", "--out", tmp_path / "o", *FAST2),
                   "p.csv", "row 7", "column 'price'", "'1O4.2'", "--task multiclass")
    rows = [["x", "rooms"]] + [[i, 1 + i % 6] for i in range(40)]
    rows[3][1] = "three"
    write(tmp_path / "r.csv", rows)
    one_line_error(run("fit", tmp_path / "r.csv", "--target", "rooms", "--out", tmp_path / "o", *FAST2),
                   "row 4", "'three'")
    r = run("fit", tmp_path / "r.csv", "--target", "rooms", "--task", "multiclass", "--out", tmp_path / "o", *FAST2)
    assert r.exit_code == 0, r.output
    # a split that fails because classes have one row says so
    write(tmp_path / "s.csv", [["x", "y"]] + [[i, f"c{i}"] for i in range(6)])
    one_line_error(run("fit", tmp_path / "s.csv", "--target", "y", "--out", tmp_path / "s", *FAST2),
                   "too few", "6 of the 6 classes have a single row")


def test_predict_gives_advice_that_fits_and_says_why_metrics_are_skipped(tmp_path):
    rows = _table()
    write(tmp_path / "t.csv", [["id", "a", "color", "label"]] + rows)
    assert run("fit", tmp_path / "t.csv", "--target", "label", "--drop", "id", "--out", tmp_path / "r", *FAST2).exit_code == 0
    bad = [r[:] for r in rows]
    bad[3][1] = ""
    write(tmp_path / "m.csv", [["id", "a", "color", "label"]] + bad)
    e = one_line_error(run("predict", tmp_path / "r", tmp_path / "m.csv", "--out", tmp_path / "p.csv"),
                       "m.csv", "row 5", "column 'a'")
    assert "--missing" not in e
    for cell, why in (("maybe", "'maybe' was not among the training labels"), ("", "missing target value")):
        bad = [r[:] for r in rows]
        bad[3][3] = cell
        write(tmp_path / "b.csv", [["id", "a", "color", "label"]] + bad)
        r = run("predict", tmp_path / "r", tmp_path / "b.csv", "--out", tmp_path / "p.csv")
        assert r.exit_code == 0, r.output
        line = [l for l in r.output.splitlines() if l.startswith("no metrics")]
        assert len(line) == 1 and "b.csv, row 5" in line[0] and why in line[0], r.output
    write(tmp_path / "one.csv", [["id", "a", "color"], [1, 0.5, "red"]])
    r = run("predict", tmp_path / "r", tmp_path / "one.csv", "--out", tmp_path / "p.csv")
    assert r.exit_code == 0 and "wrote 1 prediction to" in r.output, r.output


def test_an_empty_trailing_column_is_left_out_and_an_empty_named_one_is_an_error(tmp_path):
    rows = _table()
    p = tmp_path / "trail.csv"
    p.write_text("id,a,color,label,\n" + "".join(",".join(map(str, r)) + ",\n" for r in rows))
    r = run("fit", p, "--target", "label", "--drop", "id", "--out", tmp_path / "r", *FAST2)
    assert r.exit_code == 0, r.output
    assert "left out column '4'" in r.output and "2 feature columns" in r.output
    r = run("predict", tmp_path / "r", p, "--out", tmp_path / "p.csv")
    assert r.exit_code == 0 and "accuracy" in r.output, r.output
    write(tmp_path / "named.csv", [["id", "a", "color", "label", "notes"]] + [r + [""] for r in rows])
    one_line_error(run("fit", tmp_path / "named.csv", "--target", "label", "--missing", "drop", "--out",
                       tmp_path / "o", *FAST2), "named.csv", "column 'notes'", "--drop notes")


def test_val_file_notes_dropped_rows_and_unseen_categories(tmp_path):
    rows = _table(80)
    write(tmp_path / "train.csv", [["id", "a", "color", "label"]] + rows[:60])
    val = [r[:] for r in rows[60:]]
    val[0][1], val[1][2], val[2][2] = "", "purple", "teal"
    write(tmp_path / "val.csv", [["id", "a", "color", "label"]] + val)
    r = run("fit", tmp_path / "train.csv", "--target", "label", "--drop", "id", "--val", tmp_path / "val.csv",
            "--missing", "drop", "--out", tmp_path / "o", *FAST2)
    assert r.exit_code == 0, r.output
    assert "dropped 1 row with missing values from" in r.output and "val.csv" in r.output
    assert "2 cells of" in r.output and "color: 2" in r.output and "all zeros" in r.output


def test_decimal_comma_numbers_get_a_note(tmp_path):
    rng = np.random.default_rng(3)
    rows = [[f"{a:.3f}".replace(".", ","), ["p", "q"][i % 2]] for i, a in enumerate(rng.standard_normal(40))]
    with open(tmp_path / "semi.csv", "w", newline="") as f:
        csv.writer(f, delimiter=";").writerows([["x", "label"]] + rows)
    r = run("fit", tmp_path / "semi.csv", "--target", "label", "--out", tmp_path / "o", *FAST2)
    assert r.exit_code == 0, r.output
    assert "column 'x' holds numbers written with a comma" in r.output


def test_small_metrics_keep_significant_digits():
    from bptt.commands.fit import _fmt, _metrics_text
    assert _fmt(0.95) == "0.9500" and _fmt(12.5) == "12.5000" and _fmt(0.0) == "0.0000"
    assert _fmt(2.593e-05) == "2.593e-05" and _fmt(123456.0) == "1.235e+05"
    assert _metrics_text({"r2": float("nan")}) == "R² n/a"


def test_zero_padded_class_codes_keep_their_spelling(tmp_path):
    rng = np.random.default_rng(4)
    write(tmp_path / "c.csv", [["x", "code"]] + [[f"{a:.3f}", "007" if a > 0 else "010"] for a in rng.standard_normal(40)])
    r = run("fit", tmp_path / "c.csv", "--target", "code", "--out", tmp_path / "c", *FAST2)
    assert r.exit_code == 0, r.output
    assert "007" in r.output.split("confusion matrix", 1)[1], r.output
    assert run("predict", tmp_path / "c", tmp_path / "c.csv", "--out", tmp_path / "p.csv").exit_code == 0
    rows = list(csv.reader(open(tmp_path / "p.csv")))
    assert rows[0] == ["code", "p_007", "p_010"] and rows[1][0] in ("007", "010")
    # a checkpoint saved before labels were kept still predicts (with the numbers' spelling)
    from bptt.checkpoint import save_checkpoint
    ck = load_checkpoint(tmp_path / "c" / "best.bptt")
    del ck["encoder"]["stats"]["labels"], ck["encoder"]["stats"]["columns"]
    save_checkpoint(tmp_path / "old.bptt", ck)
    assert run("predict", tmp_path / "old.bptt", tmp_path / "c.csv", "--out", tmp_path / "q.csv").exit_code == 0
    assert list(csv.reader(open(tmp_path / "q.csv")))[0] == ["code", "p_7", "p_10"]


def test_resume_of_another_kind_of_run_and_early_option_checks(tmp_path):
    from bptt.checkpoint import save_checkpoint
    for kind, what, how in (("lm", "bptt train", "bptt train --resume"), ("forecast", "bptt forecast", "bptt forecast")):
        (tmp_path / kind).mkdir()
        save_checkpoint(tmp_path / kind / CHECKPOINT_NAME, {"kind": kind, "model": {}})
        e = one_line_error(run("fit", "--resume", "--out", tmp_path / kind), what, how)
        assert "lacks" not in e and "(" not in e.split("run")[0]
    write(tmp_path / "t.csv", [["id", "a", "color", "label"]] + _table())
    one_line_error(run("fit", tmp_path / "t.csv", "--target", "label", "--json", tmp_path / "no" / "x.json",
                       "--out", tmp_path / "o", *FAST2), "--json", "does not exist")
    assert not (tmp_path / "o").exists()
    write(tmp_path / "tx.csv", [["t", "y"]] + [["ab cd", "x"], ["ef", "z"]] * 10)
    for opt in (["--features", "t"], ["--drop", "t"]):
        one_line_error(run("fit", tmp_path / "tx.csv", "--text", "t", "--target", "y", *opt, "--out", tmp_path / "o",
                           *FAST2), "--features and --drop", "--text")
    # JSON has no NaN: an undefined R² (a constant validation target) is null
    rows = [["x", "y"]] + [[i, 1.5 if i % 5 else i * 0.37] for i in range(40)]
    write(tmp_path / "c.csv", rows)
    val = tmp_path / "v.csv"
    write(val, [["x", "y"], [1, 1.5], [2, 1.5], [3, 1.5]])
    js = tmp_path / "c.json"
    r = run("fit", tmp_path / "c.csv", "--target", "y", "--val", val, "--json", js, "--out", tmp_path / "cj", *FAST2)
    assert r.exit_code == 0 and "R² n/a" in r.output, r.output
    text = js.read_text()
    assert "NaN" not in text and json.loads(text)["metrics"]["r2"] is None


def test_a_pause_off_the_epoch_changes_neither_early_stopping_nor_the_weights(tmp_path):
    """A run that stops mid-epoch (a fractional --epochs, Ctrl-C, --minutes) validates where it
    stopped; that validation must not count for early stopping, or the resumed run stops
    elsewhere than one without the pause. 1.5 epochs then a resume to 40 = 40 straight."""
    rng = np.random.default_rng(3)
    rows = [["a", "b", "y"]] + [[f"{a:.4f}", f"{b:.4f}", f"{a - 2 * b + 0.3 * rng.standard_normal():.4f}"]
                                for a, b in rng.standard_normal((120, 2))]
    write(tmp_path / "t.csv", rows)
    args = [tmp_path / "t.csv", "--target", "y", "--hidden", "16,16", "--lr", "0.02", "--batch-size", "16",
            "--patience", "2", "--dtype", "float64", "--threads", "1"]
    straight = run("fit", *args, "--epochs", "40", "--out", tmp_path / "full")
    assert straight.exit_code == 0 and "early stop" in straight.output, straight.output
    assert run("fit", *args, "--epochs", "1.5", "--out", tmp_path / "p").exit_code == 0
    r = run("fit", *args, "--epochs", "40", "--resume", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    for name in (CHECKPOINT_NAME, "best.bptt"):
        a, b = load_checkpoint(tmp_path / "full" / name), load_checkpoint(tmp_path / "p" / name)
        assert a["step"] == b["step"], name
        for k in a["model"]:
            assert np.array_equal(a["model"][k], b["model"][k]), (name, k)


def test_resume_takes_default_weight_decay_and_paths_spelled_otherwise(tmp_path, monkeypatch):
    write(tmp_path / "t.csv", [["id", "a", "color", "label"]] + _table())
    write(tmp_path / "v.csv", [["id", "a", "color", "label"]] + _table(seed=1))
    monkeypatch.chdir(tmp_path)
    args = ["t.csv", "--target", "label", "--val", "v.csv", "--patience", "0", *FAST2[:4], "--hidden", "8"]
    assert run("fit", *args, "--epochs", "1", "--out", "r").exit_code == 0
    r = run("fit", "t.csv", "--target", "label", "--val", "./v.csv", "--patience", "0", *FAST2[:4], "--hidden", "8",
            "--weight-decay", "0", "--epochs", "2", "--resume", "--out", "r/")
    assert r.exit_code == 0 and "resuming" in r.output, r.output
