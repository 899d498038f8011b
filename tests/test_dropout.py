"""Dropout: the layer (finite differences with a fixed mask, torch with the same mask, a broken
gradient caught, modes) and ``train --dropout`` (stacked layers, gradients, exact resume)."""
import numpy as np
import pytest

from bptt import Dropout, gradcheck, jit
from bptt.checkpoint import load_checkpoint
from bptt.layers.dropout import dropout_scale
from bptt.model import DroppedStack, LanguageModel, LMConfig
from bptt.train import CHECKPOINT_NAME, Trainer, TrainConfig


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny shapes: the serial builds (a parallel region costs more than the work, on a busy machine)."""
    before = jit.get_threads()
    jit.set_threads(1)
    yield
    jit.set_threads(before)


def _fixed(p, shape, seed=0):
    layer = Dropout(p)
    layer.fix_mask(dropout_scale(np.random.default_rng(seed), shape, p, np.float64))
    return layer


def test_gradcheck_with_a_fixed_mask(rng):
    layer = _fixed(0.4, (5, 3, 4))
    report = gradcheck(layer, {"x": rng.standard_normal((5, 3, 4))})
    assert report.passed, report.table()
    assert 0 < np.count_nonzero(layer.fixed_mask == 0) < layer.fixed_mask.size


def test_a_broken_gradient_is_caught(rng, monkeypatch):
    layer = _fixed(0.4, (4, 6))
    good = Dropout.backward
    monkeypatch.setattr(Dropout, "backward", lambda self, d: good(self, d) * (1 - self.p))  # forgot 1/(1-p)
    report = gradcheck(layer, {"x": rng.standard_normal((4, 6))})
    assert not report.passed


def test_matches_torch_with_the_same_mask(rng):
    torch = pytest.importorskip("torch")
    p, shape = 0.3, (6, 7, 5)
    x = rng.standard_normal(shape)
    xt = torch.tensor(x, requires_grad=True)
    torch.manual_seed(11)
    yt = torch.nn.functional.dropout(xt, p, training=True)
    torch.manual_seed(11)  # the same draw on ones is torch's mask, times 1/(1-p)
    mask = torch.nn.functional.dropout(torch.ones(shape, dtype=torch.float64), p, training=True).numpy()
    dy = rng.standard_normal(shape)
    yt.backward(torch.tensor(dy))
    layer = Dropout(p)
    layer.fix_mask(mask)
    np.testing.assert_allclose(layer.forward(x), yt.detach().numpy(), rtol=1e-15, atol=0)
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-15, atol=0)


def test_mask_statistics_modes_and_seeding(rng):
    x = np.ones((200, 50))
    layer = Dropout(0.25)
    y = layer.forward(x, np.random.default_rng(3))
    assert abs(np.mean(y == 0) - 0.25) < 0.02
    assert set(np.unique(y)) == {0.0, 1 / 0.75}
    assert abs(y.mean() - 1) < 0.03                           # inverted: the mean is kept
    assert np.array_equal(y, layer.forward(x, np.random.default_rng(3)))   # seeded
    assert np.array_equal(layer.eval().forward(x), x)          # evaluation: the identity
    assert np.array_equal(Dropout(0.0).forward(x), x)
    with pytest.raises(ValueError, match="Generator"):
        Dropout(0.5).forward(x)
    for bad in (1.0, -0.1, "0.5", True):
        with pytest.raises(ValueError, match="p must be"):
            Dropout(bad)
    with pytest.raises(ValueError, match="dtype"):
        Dropout(0.5).forward(x.astype(np.float32), rng)


def _lm(cell, dropout, layers=2):
    return LanguageModel(LMConfig(vocab_size=7, cell=cell, hidden=5, layers=layers, embed_dim=4,
                                  dtype="float64", seed=2, dropout=dropout))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dropped_stack_is_the_stack_without_masks(cell, rng):
    """Without a generator (evaluation) the split stack computes what torch's stacked layer does:
    same names, same initial weights, same outputs and gradients."""
    a, b = _lm(cell, 0.0), _lm(cell, 0.5)
    assert isinstance(b.rnn, DroppedStack) and not isinstance(a.rnn, DroppedStack)
    assert a.parameters().keys() == b.parameters().keys()
    for k in a.parameters():
        assert np.array_equal(a.parameters()[k], b.parameters()[k]), k
    ids = rng.integers(0, 7, (3, 6))
    y = rng.integers(0, 7, (3, 6))
    la, sa = a.loss_and_grad(ids, y)
    lb, sb = b.loss_and_grad(ids, y)
    assert la == pytest.approx(lb, rel=1e-13)
    for k in a.gradients():
        np.testing.assert_allclose(a.gradients()[k], b.gradients()[k], rtol=1e-10, atol=1e-13, err_msg=k)
    # with masks the loss differs, and differs again with another draw
    l1, _ = b.loss_and_grad(ids, y, rng=np.random.default_rng(0))
    l2, _ = b.loss_and_grad(ids, y, rng=np.random.default_rng(1))
    assert l1 != la and l1 != l2


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_lm_with_dropout_gradcheck(cell, rng):
    model = _lm(cell, 0.3)
    model.check_dropout_seed = 5
    inputs = {"x": rng.integers(0, 7, (2, 4)), "y": rng.integers(0, 7, (2, 4)),
              "h0": rng.standard_normal((2, 2, 5))}
    if cell == "lstm":
        inputs["c0"] = rng.standard_normal((2, 2, 5))
    report = gradcheck(model, inputs, max_checks=30)
    assert report.passed, report.table()


WORDS = "the cat sat on a mat while dogs ran far away".split()


def test_train_dropout_resume_is_exact_and_default_unchanged(tmp_path):
    text = "\n".join(" ".join(np.random.default_rng(i).choice(WORDS, 6)) for i in range(60)) + "\n"
    tiny = dict(hidden=8, embed_dim=4, batch_size=3, seq_len=6, val_every=4, val_tokens=200,
                lr=0.01, layers=2, dtype="float64")
    Trainer.fresh(TrainConfig(steps=8, dropout=0.3, **tiny), tmp_path / "a", text).run()
    Trainer.fresh(TrainConfig(steps=4, dropout=0.3, **tiny), tmp_path / "b", text).run()
    Trainer.resume(tmp_path / "b", steps=8, text=text).run()
    ca, cb = (load_checkpoint(tmp_path / d / CHECKPOINT_NAME) for d in "ab")
    assert ca["config"]["dropout"] == 0.3 and ca["model_config"]["dropout"] == 0.3
    for k in ca["model"]:
        assert np.array_equal(ca["model"][k], cb["model"][k]), k
    # dropout 0 draws nothing from the run's generator: the run is the plain model's
    Trainer.fresh(TrainConfig(steps=4, dropout=0.0, **tiny), tmp_path / "c", text).run()
    cc = load_checkpoint(tmp_path / "c" / CHECKPOINT_NAME)
    assert cc["rng"] == np.random.default_rng(0).bit_generator.state


def test_train_command_takes_dropout(tmp_path):
    from click.testing import CliRunner
    from cli import main
    (tmp_path / "t.txt").write_text("the cat sat on the mat\n" * 40)
    r = CliRunner().invoke(main, [str(a) for a in ("train", tmp_path / "t.txt", "--dropout", 0.3, "--layers", 2,
                                                   "--hidden", 8, "--embed-dim", 4, "--batch-size", 2,
                                                   "--seq-len", 8, "--steps", 3, "--dtype", "float64",
                                                   "--out", tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT_NAME)["config"]["dropout"] == 0.3
    r = CliRunner().invoke(main, ["train", str(tmp_path / "t.txt"), "--dropout", "1"])
    assert r.exit_code == 2 and "dropout" in r.output


def test_small_api_mistakes_are_one_line_errors():
    from bptt import Dense, gradcheck, jit
    from bptt.layers.dropout import Dropout
    with pytest.raises(ValueError, match="numpy Generator"):
        Dropout(0.5).forward(np.ones((2, 2)), rng=0)
    with pytest.raises(ValueError, match="whole number"):
        jit.set_threads(1.7)
    with pytest.raises(ValueError, match="eps must be a positive number"):
        gradcheck(Dense(2, 2, seed=0), {"x": np.ones((1, 2))}, eps=0)
