"""Hash buckets for out-of-vocabulary words (WordTokenizer ``oov_buckets``) and their use by
``bptt contrastive``: stable ids across processes and saves, old descriptions and checkpoints
unchanged, exact resume, one-line errors."""
import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from bptt.checkpoint import load_checkpoint
from bptt.contrastive import ContrastiveConfig, ContrastiveTrainer, load_embedder
from bptt.data import UNK_ID, UNK_TEXT, WordTokenizer, fit_tokenizer, oov_bucket, tokenizer_from_dict
from clihelp import one_line_error, run

FIT = "the cat sat on the mat . the dog sat on the log . a cat and a dog"
PROBE = "the zebra sat on the quagga . Zebra xylophone"


def test_unknown_words_go_to_their_crc32_bucket_after_the_words():
    tok = WordTokenizer.fit(FIT, lowercase=True, oov_buckets=7)
    plain = WordTokenizer.fit(FIT, lowercase=True)
    n = len(tok.vocab)
    assert tok.vocab == plain.vocab and tok.vocab_size == n + 1 + 7
    ids = tok.encode(PROBE)
    known = plain.encode(PROBE)
    assert np.array_equal(ids[known != UNK_ID], known[known != UNK_ID])   # words keep their ids
    toks = WordTokenizer.split(PROBE, True)
    for t, i, k in zip(toks, ids.tolist(), known.tolist()):
        if k == UNK_ID:   # CRC-32 is a standard: the bucket does not depend on this process
            assert i == 1 + n + zlib.crc32(t.encode()) % 7 == 1 + n + oov_bucket(t, 7)
    assert ids[toks.index("zebra")] == ids[len(toks) - 2]   # 'Zebra', lower-cased: the same bucket
    assert UNK_ID not in ids.tolist() and int(ids.max()) < tok.vocab_size
    assert oov_bucket("hello", 2 ** 32) == 0x3610A686   # the published CRC-32 of b"hello"
    # decode: a bucket is a readable placeholder; tokens() lists every id
    j = int(ids[toks.index("quagga")]) - 1 - n
    assert f"<oov:{j}>" in tok.decode(ids)
    assert len(tok.tokens()) == tok.vocab_size and tok.tokens()[1 + n + j] == f"<oov:{j}>"
    with pytest.raises(ValueError, match="words not in the vocabulary: 'quagga'"):
        tok.encode("the quagga", strict=True)   # a prompt must still be in the vocabulary


def test_bucket_ids_are_the_same_in_another_process_and_after_a_save():
    tok = WordTokenizer.fit(FIT, lowercase=True, oov_buckets=5, min_count=2)
    d = json.loads(json.dumps(tok.to_dict()))
    assert d["oov_buckets"] == 5
    back = tokenizer_from_dict(d)
    assert back == tok and np.array_equal(back.encode(PROBE), tok.encode(PROBE))
    code = ("import json, sys; from bptt.data import tokenizer_from_dict; "
            "print(json.dumps(tokenizer_from_dict(json.loads(sys.argv[1])).encode(sys.argv[2]).tolist()))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(d), PROBE], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == tok.encode(PROBE).tolist()


def test_min_count_sends_rare_words_to_the_buckets():
    tok = WordTokenizer.fit(FIT, oov_buckets=3, min_count=2)
    assert set(tok.vocab) == {"the", "sat", "on", ".", "cat", "dog", "a"}   # each seen 2+ times
    i = int(tok.encode("mat")[0])
    assert tok.vocab_size - 3 <= i < tok.vocab_size
    with pytest.raises(ValueError, match="min_count=9"):
        WordTokenizer.fit(FIT, min_count=9)


def test_an_old_description_loads_without_buckets_and_gives_the_old_ids():
    old = {"kind": "word", "vocab": ["the", "cat", "."], "lowercase": True}   # saved before buckets
    tok = tokenizer_from_dict(old)
    assert tok.oov_buckets == 0 and tok.vocab_size == 4 and tok.to_dict() == old
    assert tok.encode("The cat sat .").tolist() == [1, 2, UNK_ID, 3]
    assert tok.decode([1, 0]) == "the " + UNK_TEXT
    # the language model's default fit is unchanged (no buckets, every word with a row)
    assert fit_tokenizer("word", FIT) == WordTokenizer(WordTokenizer.fit(FIT).vocab)
    assert "oov_buckets" not in fit_tokenizer("word", FIT).to_dict()


def test_bad_bucket_arguments_raise():
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="oov_buckets must be a non-negative integer"):
            WordTokenizer(["a"], oov_buckets=bad)
    with pytest.raises(ValueError, match="oov_buckets must be a non-negative integer"):
        tokenizer_from_dict({"kind": "word", "vocab": ["a"], "oov_buckets": -2})
    with pytest.raises(ValueError, match="for the word tokenizer"):
        fit_tokenizer("char", "abc", oov_buckets=4)
    with pytest.raises(ValueError, match="min_count must be a positive integer"):
        WordTokenizer.fit(FIT, min_count=0)


TEXT = "\n\n".join(" ".join(f"t{i % 9} w{(i * j) % 17} x{j % 5} r{i}q{j}" for j in range(9))
                   for i in range(60)) + "\n"   # r{i}q{j}: each word once only, so rare
TINY = ["--hidden", 6, "--embed-dim", 4, "--batch-size", 4, "--val-every", 3, "--crop-tokens", 4, 16,
        "--oov-buckets", 16, "--min-count", 2]


def test_a_run_with_buckets_resumes_exactly_and_embeds_rare_words(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    r = run("contrastive", tmp_path / "t.txt", *TINY, "--steps", 4, "--out", tmp_path / "full")
    assert r.exit_code == 0, r.output
    assert "16 of them buckets" in r.output
    assert run("contrastive", tmp_path / "t.txt", *TINY, "--steps", 2, "--out", tmp_path / "half").exit_code == 0
    r = run("contrastive", tmp_path / "t.txt", "--resume", "--steps", 4, "--out", tmp_path / "half")
    assert r.exit_code == 0, r.output
    a, b = (load_checkpoint(tmp_path / n / "checkpoint.bptt") for n in ("full", "half"))
    assert all(np.array_equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["tokenizer"]["oov_buckets"] == 16 and a["config"]["min_count"] == 2
    model, tok, _ = load_embedder(tmp_path / "full")
    assert model.params["embedding.weight"].shape[0] == tok.vocab_size
    ids = tok.encode("r0q0 r0q1 never_seen_anywhere")   # r0q*: once each in training, or held out
    assert (ids > len(tok.vocab)).all()
    r = run("retrieval", tmp_path / "full", tmp_path / "full" / "heldout.txt", "--min-words", 8)
    assert r.exit_code == 0, r.output


def test_old_runs_resume_without_buckets_and_defaults_follow_the_tokenizer(tmp_path):
    old = ContrastiveConfig().to_dict()
    del old["oov_buckets"], old["min_count"]   # a run saved before the option existed
    cfg = ContrastiveConfig.from_dict(old)
    assert (cfg.oov_buckets, cfg.min_count) == (0, 1)
    fresh = ContrastiveConfig()
    fresh.resolve_vocabulary()
    assert fresh.oov_buckets > 0 and fresh.min_count >= 1
    char = ContrastiveConfig(tokenizer="char")
    char.resolve_vocabulary()
    assert (char.oov_buckets, char.min_count) == (0, 1)


@pytest.mark.parametrize("args, message", [
    (["--tokenizer", "char", "--oov-buckets", 8], "apply to the word tokenizer"),
    (["--tokenizer", "char", "--min-count", 2], "apply to the word tokenizer"),
    (["--init-from", "somewhere", "--oov-buckets", 8], "apply to the word tokenizer"),
])
def test_bad_combinations_are_one_line_errors(tmp_path, args, message):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    r = run("contrastive", tmp_path / "t.txt", *args, "--steps", 1, "--out", tmp_path / "r")
    one_line_error(r, message)
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    r = run("contrastive", tmp_path / "t.txt", "--oov-buckets", -1, "--steps", 1, "--out", tmp_path / "r")
    assert r.exit_code == 2 and "--oov-buckets" in r.output
