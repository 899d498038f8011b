"""The contrastive loss (finite differences, torch, a broken gradient), the encoder's whole
gradient through mean pooling and BPTT, the views, and the trainer/command (resume, checkpoints)."""
import numpy as np
import pytest
from click.testing import CliRunner

import bptt.layers.contrastive as lc
from bptt.checkpoint import load_checkpoint
from bptt.contrastive import (ContrastiveConfig, ContrastiveTrainer, Encoder, EncoderConfig,
                              crop_views, disjoint_views, load_embedder, split_paragraphs)
from bptt.finitediff import gradcheck
from bptt.kernels.pooling import l2_normalize_backward
from bptt.layers.contrastive import InfoNCELoss
from cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    return rng.standard_normal((5, 4)) + 0.3, rng.standard_normal((5, 4)) - 0.2


def test_info_nce_gradcheck(pair):
    report = gradcheck(InfoNCELoss(0.3, learn_temperature=True), {"za": pair[0], "zb": pair[1]})
    assert report.passed, report


def test_info_nce_matches_torch(pair):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    za, zb = pair
    loss = InfoNCELoss(0.3, learn_temperature=True)
    value = loss.forward(za, zb)
    dza, dzb = loss.backward()
    a = torch.tensor(za, requires_grad=True)
    b = torch.tensor(zb, requires_grad=True)
    log_scale = torch.tensor([-np.log(0.3)], requires_grad=True)
    S = log_scale.exp() * F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    t = torch.arange(5)
    ref = (F.cross_entropy(S, t) + F.cross_entropy(S.T, t)) / 2
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-12)
    assert np.allclose(dza, a.grad.numpy(), atol=1e-12) and np.allclose(dzb, b.grad.numpy(), atol=1e-12)
    assert loss.grads["log_scale"][0] == pytest.approx(log_scale.grad.item(), rel=1e-10)


def test_a_broken_gradient_is_caught(pair, monkeypatch):
    def no_projection(dz, du, u, norm):   # forgets that scaling z leaves u unchanged
        dz += du / norm[:, None]
    monkeypatch.setattr(lc, "l2_normalize_backward", no_projection)
    assert not gradcheck(InfoNCELoss(0.3), {"za": pair[0], "zb": pair[1]}).passed
    monkeypatch.setattr(lc, "l2_normalize_backward", l2_normalize_backward)
    assert gradcheck(InfoNCELoss(0.3), {"za": pair[0], "zb": pair[1]}).passed


@pytest.mark.parametrize("cell,bidirectional", [("lstm", True), ("gru", False)])
def test_encoder_gradcheck_through_mean_pooling(cell, bidirectional):
    m = Encoder(EncoderConfig(vocab_size=7, cell=cell, hidden=3, layers=2, embed_dim=4, bidirectional=bidirectional,
                              temperature=0.5, learn_temperature=True, dtype="float64", seed=2))
    rng = np.random.default_rng(1)
    ids_a, ids_b = rng.integers(0, 7, (3, 5)), rng.integers(0, 7, (3, 5))
    report = gradcheck(m, {"ids_a": ids_a, "ids_b": ids_b}, max_checks=20)
    assert report.passed, report


def test_crop_views():
    rng = np.random.default_rng(0)
    paras = [np.arange(100, 140), np.arange(200, 230)]
    cfg = ContrastiveConfig(crop_low=0.5, crop_high=0.5, crop_min=4, crop_max=64)
    a, b = crop_views(paras, rng, cfg)
    assert a.shape == b.shape == (2, 15)                      # half the shortest paragraph
    for row, p in zip(np.concatenate([a, b]), paras * 2):
        assert np.all(np.diff(row) == 1) and row[0] in p and row[-1] in p   # a contiguous span
    a, b = disjoint_views(paras, rng, ContrastiveConfig(crop_low=0.9, crop_high=0.9, crop_min=4, crop_max=64))
    assert a.shape == b.shape == (2, 15)                      # at most half the shortest
    for x, y in zip(a, b):
        assert not set(x) & set(y) and np.all(np.diff(x) == 1) and np.all(np.diff(y) == 1)


TEXT = "\n\n".join(" ".join(f"t{i % 9} w{(i * j) % 17} x{j % 5}" for j in range(9)) for i in range(60)) + "\n"
TINY = ["--hidden", 6, "--embed-dim", 4, "--batch-size", 4, "--val-every", 3, "--crop-tokens", 4, 16, "--mask", 0.1]


def test_train_resume_exactly_and_use(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    r = run("contrastive", tmp_path / "t.txt", *TINY, "--steps", 6, "--out", tmp_path / "full")
    assert r.exit_code == 0, r.output
    assert "validation Recall@1" in r.output and (tmp_path / "full" / "heldout.txt").exists()
    assert run("contrastive", tmp_path / "t.txt", *TINY, "--steps", 3, "--out", tmp_path / "half").exit_code == 0
    r = run("contrastive", tmp_path / "t.txt", "--resume", "--steps", 6, "--out", tmp_path / "half")
    assert r.exit_code == 0, r.output
    a = load_checkpoint(tmp_path / "full" / "checkpoint.bptt")["model"]
    b = load_checkpoint(tmp_path / "half" / "checkpoint.bptt")["model"]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    model, tok, _ = load_embedder(tmp_path / "full")
    assert isinstance(model, Encoder)
    r = run("retrieval", tmp_path / "full", tmp_path / "full" / "heldout.txt", "--min-words", 8)
    assert r.exit_code == 0 and "| BM25 |" in r.output, r.output
    r = run("contrastive", tmp_path / "t.txt", *TINY, "--steps", 2, "--out", tmp_path / "full")
    assert r.exit_code == 1 and "--resume" in r.output


def test_init_from_a_language_model(tmp_path):
    from bptt.train import Trainer, TrainConfig
    Trainer.fresh(TrainConfig(steps=1, hidden=6, embed_dim=4, batch_size=2, seq_len=8, val_every=1,
                              val_tokens=100), tmp_path / "lm", TEXT).run()
    cfg = ContrastiveConfig(init_from=str(tmp_path / "lm"), steps=1, batch_size=4, crop_min=4, crop_max=16)
    tr = ContrastiveTrainer.fresh(cfg, tmp_path / "enc", TEXT)
    lm = load_checkpoint(tmp_path / "lm" / "checkpoint.bptt")["model"]
    assert tr.tokenizer.kind == "char" and tr.model.config.hidden == 6
    assert np.array_equal(tr.model.params["rnn.weight_hh_l0"], lm["rnn.weight_hh_l0"])
    train, val, test = split_paragraphs(TEXT, 0.1, 0)
    assert len(val) == len(test) == 6 and not set(train) & set(val) and not set(train) & set(test)
    assert not set(val) & set(test) and split_paragraphs(TEXT, 0.2, 0, test_fraction=0.1)[2] == test


def test_same_bits_at_any_thread_count(tmp_path):
    from bptt import jit
    if jit.max_threads() < 2:
        pytest.skip("one core")
    before, states = jit.get_threads(), []
    try:
        for threads in (1, 2):
            jit.set_threads(threads)
            cfg = ContrastiveConfig(steps=2, hidden=8, embed_dim=4, batch_size=8, crop_min=4, crop_max=16, val_every=2)
            tr = ContrastiveTrainer.fresh(cfg, tmp_path / f"t{threads}", TEXT)
            tr.run()
            states.append(tr.model.state_dict())
    finally:
        jit.set_threads(before)
    assert all(np.array_equal(states[0][k], states[1][k]) for k in states[0])


def _text_classifier(tmp_path):
    """A tiny `bptt fit --text` run folder: a text classifier's checkpoint."""
    csv = tmp_path / "reviews.csv"
    rows = ["good nice item", "bad poor item", "very good thing", "awful bad thing"] * 6
    csv.write_text("review,label\n" + "".join(f"{t},{'pos' if 'good' in t else 'neg'}\n" for t in rows))
    out = tmp_path / "rev"
    r = run("fit", csv, "--text", "review", "--target", "label", "--tokenizer", "word", "--epochs", 1,
            "--rnn-hidden", 3, "--embed-dim", 3, "--hidden", 3, "--out", out)
    assert r.exit_code == 0, r.output
    return out


def test_init_from_a_text_classifier_is_a_one_line_error(tmp_path):
    rev = _text_classifier(tmp_path)
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    r = run("contrastive", tmp_path / "t.txt", "--init-from", rev, "--steps", 2, "--batch-size", 4,
            "--out", tmp_path / "c")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "text classifier" in r.output and "language-model checkpoint" in r.output, r.output
    assert not (tmp_path / "c").exists()


def test_resume_refuses_changed_options_and_takes_the_same_command(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    out = tmp_path / "run"
    cmd = ["contrastive", tmp_path / "t.txt", *TINY, "--tokenizer", "word", "--clip", 0, "--out", out]
    r = run(*cmd, "--steps", 2)
    assert r.exit_code == 0, r.output
    r = run(*cmd[:2], "--resume", "--hidden", 64, "--cell", "gru", "--tokenizer", "char", "--batch-size", 8,
            "--steps", 4, "--out", out)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    for flag in ("--hidden 64 (the run's: 6)", "--cell gru (the run's: lstm)", "--tokenizer char (the run's: word)",
                 "--batch-size 8 (the run's: 4)"):
        assert flag in r.output, r.output
    before = (out / "checkpoint.bptt").read_bytes()
    r = run(*cmd, "--resume", "--steps", 2)   # --steps is a total: 2 is where the run already is
    assert r.exit_code == 0 and "already finished" in r.output, r.output   # a sweep re-running it reads it
    assert (out / "checkpoint.bptt").read_bytes() == before
    r = run(*cmd, "--resume", "--steps", 1)   # below it: an error
    assert r.exit_code == 1 and "--steps 1" in r.output and "step 2" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    r = run(*cmd, "--resume", "--steps", 3)   # the very command that started it: goes on
    assert r.exit_code == 0 and "resuming" in r.output, r.output
    assert load_checkpoint(out / "checkpoint.bptt")["step"] == 3


def test_resume_on_another_text_says_the_text_differs(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    six = "\n\n".join(" ".join(f"s{i} v{j}" for j in range(10)) for i in range(6)) + "\n"
    (tmp_path / "six.txt").write_text(six, encoding="utf-8")
    out = tmp_path / "run"
    assert run("contrastive", tmp_path / "t.txt", *TINY, "--steps", 1, "--out", out).exit_code == 0
    r = run("contrastive", tmp_path / "six.txt", "--resume", "--out", out)
    assert r.exit_code == 1 and "the text differs" in r.output and "batch-size" not in r.output, r.output
    r = run("contrastive", tmp_path / "t.txt", "--min-words", 8, "--resume", "--out", out)
    assert r.exit_code == 1 and "--min-words 8 (the run's: 16)" in r.output, r.output


def test_min_words_is_an_option_saved_in_the_run(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")   # paragraphs of 27 words
    r = run("contrastive", tmp_path / "t.txt", *TINY, "--steps", 1, "--min-words", 28, "--out", tmp_path / "a")
    assert r.exit_code == 1 and "0 paragraph(s) of at least 28 words" in r.output, r.output
    r = run("contrastive", tmp_path / "t.txt", *TINY, "--steps", 1, "--min-words", 20, "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(tmp_path / "b" / "checkpoint.bptt")["config"]["min_words"] == 20
    assert ContrastiveConfig.from_dict({"cell": "gru"}).min_words == 16   # runs from before the option
