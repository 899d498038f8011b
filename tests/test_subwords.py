"""Character n-grams of each word (fastText) in the contrastive encoder: the embedding bag (kernel,
reference twin, finite differences in float64, torch.nn.EmbeddingBag), the SubwordTokenizer
(stable ids, saved and loaded), the encoder's gradient through both tables, a run that resumes
exactly and embeds, old checkpoints, and one-line errors."""
import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from bptt import jit
from bptt.checkpoint import load_checkpoint
from bptt.contrastive import (ContrastiveConfig, ContrastiveTrainer, Encoder, EncoderConfig, crop_views,
                              load_embedder, mask_tokens)
from bptt.data import UNK_ID, SubwordTokenizer, WordTokenizer, tokenizer_from_dict
from bptt.finitediff import gradcheck
from bptt.generate import embed_texts
from bptt.layers import EmbeddingBag
from clihelp import one_line_error, run

FIT = "the cat sat on the mat . the dog sat on the log . a cat and a dog"


def bag_ids(rng, shape, V, K):
    """ids (shape + (K,)) in [-1, V) with some bags empty, some ids repeated."""
    ids = rng.integers(-1, V, size=shape + (K,))
    ids.reshape(-1, K)[0] = -1            # an empty bag gives zeros
    ids.reshape(-1, K)[1, :] = 2          # one id filling every slot of a bag
    return ids


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_bag_is_a_weighted_sum_of_rows_and_backward_a_scatter_add(mode):
    rng = np.random.default_rng(0)
    bag = EmbeddingBag(6, 3, mode=mode, seed=0)
    ids = bag_ids(rng, (2, 4), 6, 5)
    out = bag.forward(ids)
    assert out.shape == (2, 4, 3)
    W = bag.weight
    dout = rng.standard_normal(out.shape)
    bag.backward(dout)
    want_dW = np.zeros_like(W)
    for idx in np.ndindex(2, 4):
        filled = [v for v in ids[idx] if v >= 0]
        w = 1.0 if mode == "sum" else 1.0 / max(len(filled), 1)
        np.testing.assert_allclose(out[idx], w * sum((W[v] for v in filled), np.zeros(3)), rtol=1e-14, atol=1e-15)
        for v in filled:
            want_dW[v] += w * dout[idx]
    assert not out[0, 0].any()
    np.testing.assert_allclose(bag.grads["weight"], want_dW, rtol=1e-14, atol=1e-15)
    bag.backward(dout)                                               # accumulates
    np.testing.assert_allclose(bag.grads["weight"], 2 * want_dW, rtol=1e-14, atol=1e-15)


def test_bag_kernels_match_their_reference_twins():
    from bptt.kernels import embedding as fast
    from bptt.reference import embedding as ref
    rng = np.random.default_rng(1)
    ids = bag_ids(rng, (7,), 9, 4)
    w = rng.standard_normal(ids.shape)
    W = rng.standard_normal((9, 5))
    dout = rng.standard_normal((7, 5))
    outs = []
    for mod in (fast, ref):
        out, dW = np.empty((7, 5)), np.ones((9, 5))
        mod.embedding_bag_forward(out, ids, w, W)
        mod.embedding_bag_backward(dW, dout, ids, w)
        outs.append((out, dW))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_bag_gradcheck_float64(mode):
    bag = EmbeddingBag(5, 3, mode=mode, seed=2)
    report = gradcheck(bag, {"ids": bag_ids(np.random.default_rng(2), (2, 3), 5, 4)})
    assert report.passed, report.table()


def test_a_broken_bag_gradient_is_caught(monkeypatch):
    import bptt.layers.embedding as layer
    real = layer.embedding_bag_backward
    monkeypatch.setattr(layer, "embedding_bag_backward", lambda dW, dout, ids, w: real(dW, dout, ids, 1.5 * w))
    bag = EmbeddingBag(5, 3, mode="mean", seed=2)
    assert not gradcheck(bag, {"ids": bag_ids(np.random.default_rng(2), (2, 3), 5, 4)}).passed


def test_bag_parity_with_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for mode in ("sum", "mean"):
        for dtype, tol in ((np.float64, 1e-14), (np.float32, 1e-6)):
            bag = EmbeddingBag(8, 4, mode=mode, dtype=dtype, seed=4)
            ids = bag_ids(rng, (3, 5), 8, 6)
            m = torch.nn.EmbeddingBag(8, 4, mode=mode, dtype=torch.float64 if dtype == np.float64 else torch.float32)
            with torch.no_grad():
                m.weight.copy_(torch.tensor(bag.weight))
            flat = ids.reshape(-1, 6)
            values = torch.tensor(flat[flat >= 0])
            offsets = torch.tensor(np.concatenate([[0], np.cumsum((flat >= 0).sum(1))[:-1]]))
            out_t = m(values, offsets)
            dout = rng.standard_normal((3, 5, 4)).astype(dtype)
            out_t.backward(torch.tensor(dout.reshape(-1, 4)))
            out = bag.forward(ids)
            bag.backward(dout)
            np.testing.assert_allclose(out.reshape(-1, 4), out_t.detach().numpy(), rtol=tol, atol=tol)
            np.testing.assert_allclose(bag.grads["weight"], m.weight.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.skipif(jit.max_threads() < 2, reason="needs two threads")
def test_bag_serial_and_parallel_bitwise_equal(threads):
    rng = np.random.default_rng(5)
    ids = bag_ids(rng, (9, 13), 7, 6)
    dout = rng.standard_normal((9, 13, 5)).astype(np.float32)
    res = []
    for n in (1, 2):
        threads(n)
        bag = EmbeddingBag(7, 5, dtype=np.float32, seed=3)
        out = bag.forward(ids)
        bag.backward(dout)
        res.append((out, bag.grads["weight"].copy()))
    assert all(np.array_equal(a, b) for a, b in zip(*res))


def test_bag_bad_input_raises_value_error():
    bag = EmbeddingBag(5, 2)
    with pytest.raises(ValueError, match=r"ids must be in the range \[0, 6\), found 6"):
        bag.forward(np.array([[0, 5]]))           # (shifted by one: -1 is allowed, 5 is not)
    with pytest.raises(ValueError, match=r"found -1"):
        bag.forward(np.array([[-2, 1]]))
    with pytest.raises(ValueError, match=r"ids must have shape \(B, T, K\) or \(N, K\)"):
        bag.forward(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="integer token ids"):
        bag.forward(np.zeros((2, 2)))
    with pytest.raises(RuntimeError, match="before forward"):
        EmbeddingBag(5, 2).backward(np.zeros((1, 2)))
    bag.forward(np.array([[0, 1, -1]]))
    with pytest.raises(ValueError, match=r"dout must have shape \(1, 2\)"):
        bag.backward(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="mode must be one of sum, mean"):
        EmbeddingBag(5, 2, mode="max")


# -- the tokenizer ------------------------------------------------------------------------------
def test_subword_rows_are_word_ids_then_crc32_ngrams():
    word = WordTokenizer.fit(FIT, lowercase=True, oov_buckets=7)
    tok = SubwordTokenizer.from_word(word, 1000, max_ngrams=6)
    text = "The zebra sat ."
    rows = tok.encode(text)
    assert rows.shape == (4, 7) and rows.dtype == np.int64
    assert np.array_equal(rows[:, 0], word.encode(text))             # column 0: the word ids
    grams = ["<th", "<the", "<the>", "the", "the>", "he>"]           # "<the>", by start, then n
    assert rows[0, 1:].tolist() == [zlib.crc32(g.encode()) % 1000 for g in grams]
    assert rows[1, 1:].tolist() == [zlib.crc32(g.encode()) % 1000 for g in ["<ze", "<zeb", "<zebr", "zeb", "zebr", "zebra"]]
    assert rows[3, 1:].tolist() == [zlib.crc32(b"<.>") % 1000] + [-1] * 5   # short: padded with -1
    assert tok.decode(rows) == word.decode(rows[:, 0])
    assert tok.encode("").shape == (0, 7)
    with pytest.raises(ValueError, match="subword_buckets must be a positive integer"):
        SubwordTokenizer.from_word(word, 0)
    with pytest.raises(ValueError, match="min_n"):
        SubwordTokenizer.from_word(word, 10, min_n=4, max_n=3)


def test_subword_tokenizer_survives_a_save_and_another_process():
    tok = SubwordTokenizer.from_word(WordTokenizer.fit(FIT, lowercase=True, oov_buckets=5, min_count=2), 97)
    d = json.loads(json.dumps(tok.to_dict()))
    back = tokenizer_from_dict(d)
    assert isinstance(back, SubwordTokenizer) and back == tok
    probe = "the quagga sat on xylophones"
    assert np.array_equal(back.encode(probe), tok.encode(probe))
    code = ("import json, sys; from bptt.data import tokenizer_from_dict; "
            "print(json.dumps(tokenizer_from_dict(json.loads(sys.argv[1])).encode(sys.argv[2]).tolist()))")
    env = {**os.environ, "PYTHONHASHSEED": "4321", "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(d), probe], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == tok.encode(probe).tolist()
    with pytest.raises(ValueError, match="not a subword tokenizer description"):
        tokenizer_from_dict({"kind": "subword", "vocab": ["a"]})


# -- the encoder --------------------------------------------------------------------------------
def encoder_ids(rng, B, T, V, S, K):
    ids = np.empty((B, T, 1 + K), np.int64)
    ids[..., 0] = rng.integers(0, V, (B, T))
    ids[..., 1:] = rng.integers(-1, S, (B, T, K))
    return ids


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_encoder_gradcheck_through_words_and_ngrams(dropout):
    m = Encoder(EncoderConfig(vocab_size=7, hidden=3, layers=2, embed_dim=4, temperature=0.5, learn_temperature=True,
                              dtype="float64", seed=2, subword_buckets=11, dropout=dropout))
    m.check_dropout_seed = 5 if dropout else None
    rng = np.random.default_rng(1)
    ids_a, ids_b = encoder_ids(rng, 3, 5, 7, 11, 4), encoder_ids(rng, 3, 5, 7, 11, 4)
    report = gradcheck(m, {"ids_a": ids_a, "ids_b": ids_b}, max_checks=20)
    assert report.passed, report
    assert {"subword.weight", "embedding.weight"} <= {r.name for r in report.rows}


def test_encoder_without_ngrams_is_unchanged_and_word_ids_still_work():
    cfg = dict(vocab_size=7, hidden=3, embed_dim=4, dtype="float64", seed=2)
    plain, sub = Encoder(EncoderConfig(**cfg)), Encoder(EncoderConfig(**cfg, subword_buckets=11))
    assert all(np.array_equal(plain.params[k], sub.params[k]) for k in plain.params)   # drawn last
    ids = np.random.default_rng(0).integers(0, 7, (2, 5))
    np.testing.assert_array_equal(plain.encode(ids), sub.encode(ids))   # (B, T): words only
    with pytest.raises(ValueError, match="no subword table"):
        plain.encode(encoder_ids(np.random.default_rng(0), 2, 5, 7, 11, 3))


def test_views_and_masking_keep_the_ngram_columns():
    rng = np.random.default_rng(0)
    paras = [np.stack([np.arange(100, 140), np.arange(0, 40)], 1), np.stack([np.arange(200, 230), np.arange(50, 80)], 1)]
    a, b = crop_views(paras, rng, ContrastiveConfig(crop_low=0.5, crop_high=0.5, crop_min=4, crop_max=64))
    assert a.shape == b.shape == (2, 15, 2) and np.all(a[..., 0] - a[..., 1] == [[100], [150]])
    masked = np.zeros((2, 15), bool)
    masked[0, 3] = True
    m = mask_tokens(a, masked)
    assert m[0, 3].tolist() == [UNK_ID, -1] and np.array_equal(m[~masked], a[~masked])
    assert np.array_equal(mask_tokens(a[..., 0], masked), np.where(masked, UNK_ID, a[..., 0]))


TEXT = "\n\n".join(" ".join(f"t{i % 9} w{(i * j) % 17} x{j % 5}" for j in range(9)) for i in range(60)) + "\n"
TINY = ["--hidden", 6, "--embed-dim", 4, "--batch-size", 4, "--val-every", 3, "--crop-tokens", 4, 16, "--mask", 0.1,
        "--subwords", 64]


def test_a_run_with_subwords_resumes_exactly_embeds_and_searches(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    r = run("contrastive", tmp_path / "t.txt", *TINY, "--steps", 6, "--out", tmp_path / "full")
    assert r.exit_code == 0, r.output
    assert "64 character n-gram buckets" in r.output
    assert run("contrastive", tmp_path / "t.txt", *TINY, "--steps", 3, "--out", tmp_path / "half").exit_code == 0
    r = run("contrastive", tmp_path / "t.txt", "--resume", "--steps", 6, "--out", tmp_path / "half")
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(tmp_path / "full" / "checkpoint.bptt")
    a, b = ckpt["model"], load_checkpoint(tmp_path / "half" / "checkpoint.bptt")["model"]
    assert "subword.weight" in a and a["subword.weight"].shape == (64, 4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert ckpt["tokenizer"]["kind"] == "subword" and ckpt["config"]["subwords"] == 64
    model, tok, _ = load_embedder(tmp_path / "full")
    assert isinstance(tok, SubwordTokenizer) and model.subword is not None
    v = embed_texts(model, tok, ["t1 w3 x2", "t1 w3 x2 unseenword", ""])
    assert v.shape == (3, 6) and not v[2].any() and not np.array_equal(v[0], v[1])
    r = run("retrieval", tmp_path / "full", tmp_path / "full" / "heldout.txt", "--min-words", 8)
    assert r.exit_code == 0 and "| BM25 |" in r.output, r.output
    (tmp_path / "docs.txt").write_text(TEXT, encoding="utf-8")
    r = run("embed", tmp_path / "full", tmp_path / "docs.txt", "--per", "paragraph", "--out", tmp_path / "v.npy")
    assert r.exit_code == 0, r.output
    r = run("search", tmp_path / "v.npy", "t3 w5 zzz", "-k", 2, "--hybrid")
    assert r.exit_code == 0 and "t3" in r.output, r.output


def test_an_old_checkpoint_has_no_subwords(tmp_path):
    cfg = ContrastiveConfig.from_dict({k: v for k, v in ContrastiveConfig(steps=1).to_dict().items() if k != "subwords"})
    assert cfg.subwords == 0
    tr = ContrastiveTrainer.fresh(ContrastiveConfig(steps=1, hidden=6, embed_dim=4, batch_size=4, crop_min=4,
                                                    crop_max=16, val_every=1), tmp_path / "r", TEXT)
    tr.run()
    assert not isinstance(tr.tokenizer, SubwordTokenizer) and tr.model.subword is None
    model_config = load_checkpoint(tmp_path / "r" / "checkpoint.bptt")["model_config"]
    old = EncoderConfig.from_dict({k: v for k, v in model_config.items() if k != "subword_buckets"})
    assert old.subword_buckets == 0 and Encoder(old).subword is None


@pytest.mark.parametrize("args,message", [
    (["--subwords", 8, "--tokenizer", "char"], "need the word tokenizer"),
    (["--subwords", -1], "--subwords"),
])
def test_bad_subword_options_are_one_line_errors(tmp_path, args, message):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    r = run("contrastive", tmp_path / "t.txt", *args, "--steps", 1, "--out", tmp_path / "r")
    one_line_error(r, message, code=1 if "-1" not in map(str, args) else 2)
