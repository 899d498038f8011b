"""``bptt contrastive --views dropout``: the encoder with dropout (float64 gradient with fixed
masks, a broken backward caught), the two views of a row differing only through their masks,
dropout off when embedding, and exact resume."""
import numpy as np
import pytest
from click.testing import CliRunner

from bptt.checkpoint import load_checkpoint
from bptt.contrastive import ContrastiveConfig, Encoder, EncoderConfig, dropout_views, load_embedder
from bptt.finitediff import gradcheck
from bptt.generate import embed_texts
from cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def encoder(p, **kw):
    return Encoder(EncoderConfig(vocab_size=7, cell="lstm", hidden=3, layers=2, embed_dim=4, bidirectional=True,
                                 temperature=0.5, dtype="float64", seed=2, dropout=p, **kw))


@pytest.fixture(scope="module")
def ids():
    rng = np.random.default_rng(1)
    return rng.integers(0, 7, (3, 5)), rng.integers(0, 7, (3, 5))


def test_gradcheck_with_fixed_masks(ids, monkeypatch):
    m = encoder(0.3, learn_temperature=True)
    m.check_dropout_seed = 4
    masked = m.check_forward(*ids)[0]
    assert np.array_equal(masked, m.check_forward(*ids)[0])           # the same masks every time
    m.check_dropout_seed = None
    assert not np.allclose(masked, m.check_forward(*ids)[0])          # and they are on
    m.check_dropout_seed = 4
    report = gradcheck(m, {"ids_a": ids[0], "ids_b": ids[1]}, max_checks=6)
    assert report.passed, report
    # a backward that forgets the embedding's dropout mask is caught
    monkeypatch.setattr(m, "_backward_states", lambda dhs: m.embedding.backward(m.rnn.backward(dhs)))
    assert not gradcheck(m, {"ids_a": ids[0], "ids_b": ids[1]}, max_checks=2).passed


def test_views_differ_only_through_the_masks(ids):
    paras = [np.arange(100, 140), np.arange(200, 230)]
    a, b = dropout_views(paras, np.random.default_rng(0), ContrastiveConfig(crop_min=4, crop_max=64))
    assert np.array_equal(a, b) and np.all(np.diff(a, axis=1) == 1)       # one contiguous span, twice
    x = np.concatenate([ids[0], ids[0]])                                   # rows i and B+i: one span
    B = ids[0].shape[0]

    m = encoder(0.5)
    hs, _ = m.hidden_states(x, rng=np.random.default_rng(3))
    assert not np.allclose(hs[:B], hs[B:])                                 # own mask per row
    # the same masks for rows i and B+i: the two views become identical
    rng = np.random.default_rng(3)
    for d in [m.drop] + m.rnn.drops:
        shape = (B, 5, 4 if d is m.drop else 6)                            # (B, T, E) or (B, T, D·H)
        half = np.where(rng.random(shape) >= d.p, 1 / (1 - d.p), 0.0)
        d.fix_mask(np.concatenate([half, half]))
    hs, _ = m.hidden_states(x, rng=rng)
    assert np.array_equal(hs[:B], hs[B:]) and not np.allclose(hs, m.hidden_states(x)[0])
    # dropout p = 0: no masks, identical views
    hs0, _ = encoder(0.0).hidden_states(x, rng=np.random.default_rng(3))
    assert np.array_equal(hs0[:B], hs0[B:])


def test_dropout_is_off_when_embedding(ids):
    m, plain = encoder(0.4), encoder(0.0)
    plain.load_state(m.state_dict())                # one parameter naming with and without dropout
    np.testing.assert_allclose(m.hidden_states(ids[0])[0], plain.hidden_states(ids[0])[0], rtol=1e-12, atol=1e-14)
    texts = ["t1 t2 t3", "t4 t5"]

    class Tok:
        def encode(self, t):
            return np.array([int(w[1:]) for w in t.split()], np.int64)
    np.testing.assert_allclose(embed_texts(m, Tok(), texts), embed_texts(plain, Tok(), texts), rtol=1e-6)


TEXT = "\n\n".join(" ".join(f"t{i % 9} w{(i * j) % 17} x{j % 5}" for j in range(9)) for i in range(60)) + "\n"
TINY = ["--views", "dropout", "--layers", 2, "--hidden", 5, "--embed-dim", 4, "--batch-size", 4,
        "--val-every", 3, "--crop-tokens", 4, 12, "--dtype", "float64"]


def test_resume_is_exact(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    r = run("contrastive", tmp_path / "t.txt", *TINY, "--steps", 6, "--out", tmp_path / "full")
    assert r.exit_code == 0 and "dropout 0.1" in r.output, r.output
    assert run("contrastive", tmp_path / "t.txt", *TINY, "--steps", 3, "--out", tmp_path / "half").exit_code == 0
    assert run("contrastive", tmp_path / "t.txt", "--resume", "--steps", 6, "--out", tmp_path / "half").exit_code == 0
    full, half = (load_checkpoint(tmp_path / d / "checkpoint.bptt") for d in ("full", "half"))
    assert full["config"]["dropout"] == full["model_config"]["dropout"] == 0.1
    assert all(np.array_equal(full["model"][k], half["model"][k]) for k in full["model"])
    start = Encoder(EncoderConfig.from_dict(full["model_config"])).state_dict()
    assert any(not np.array_equal(start[k], full["model"][k]) for k in start)    # it trained
    assert isinstance(load_embedder(tmp_path / "full")[0], Encoder)
    r = run("contrastive", tmp_path / "t.txt", "--views", "dropout", "--dropout", 0, "--out", tmp_path / "zero")
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "dropout > 0" in r.output, r.output
