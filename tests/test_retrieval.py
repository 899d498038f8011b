"""The retrieval benchmark, lexical baselines, centring/whitening, rank fusion, the ANN index,
and the embed/search/retrieval commands' bad inputs."""
import json
import math
import shutil

import numpy as np
import pytest

from bptt.lexical import BM25Index, TfidfIndex, terms
from bptt.retrieval import (apply_postprocess, benchmark, fit_postprocess, gold_ranks, metrics_from_ranks,
                            paragraph_pairs, read_pairs, rrf_matrix, rrf_scores, split_pair)
from bptt.train import Trainer, TrainConfig
from clihelp import one_line_error, run


# -- metrics -------------------------------------------------------------------------------------
def test_metrics_on_a_hand_made_case():
    scores = np.array([[0.9, 0.1, 0.2],     # gold 0 first: rank 1
                       [0.8, 0.5, 0.9],     # gold 1 third: rank 3
                       [0.3, 0.3, 0.3]])    # all tied: ties count against gold, rank 3
    ranks = gold_ranks(scores)
    assert ranks.tolist() == [1, 3, 3]
    m = metrics_from_ranks(ranks, ks=(1, 2))
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(1 / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)
    assert gold_ranks(scores, gold=[2, 2, 0]).tolist() == [2, 1, 3]


def test_paragraph_pairs_and_csv(tmp_path):
    text = "\n\n".join(" ".join(f"w{i}_{j}" for j in range(20)) for i in range(5)) + "\n\nshort one\n"
    q, d = paragraph_pairs(text, max_pairs=3, seed=1)
    assert len(q) == len(d) == 3
    for qi, di in zip(q, d):
        i = qi.split()[0].split("_")[0]
        assert all(w.startswith(i + "_") for w in di.split()) and len(qi.split()) == len(di.split()) == 10
    assert paragraph_pairs(text, seed=1) == paragraph_pairs(text, seed=1)
    assert split_pair("a b c") == ("a", "b c")
    with pytest.raises(ValueError, match="paragraph"):
        paragraph_pairs("too short\n")
    p = tmp_path / "pairs.csv"
    p.write_text('query,document\n"what, is it",the answer\nsecond,"two, words"\n', encoding="utf-8")
    assert read_pairs(p) == (["what, is it", "second"], ["the answer", "two, words"])
    p.write_text("a,b\nonly one column\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_pairs(p)


# -- lexical -------------------------------------------------------------------------------------
DOCS = ["the cat sat on the mat", "a dog and a cat", "stocks fell sharply today"]


def test_bm25_on_a_hand_made_case():
    idx = BM25Index(DOCS, k1=1.2, b=0.75)
    s = idx.scores("cat mat")
    N, lengths = 3, np.array([6, 5, 4.0])
    avg = lengths.mean()

    def term(df, tf, dl):
        return math.log(1 + (N - df + 0.5) / (df + 0.5)) * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avg))
    assert s[0] == pytest.approx(term(2, 1, 6) + term(1, 1, 6))
    assert s[1] == pytest.approx(term(2, 1, 5))
    assert s[2] == 0
    assert idx.scores("zebra").tolist() == [0, 0, 0]
    assert terms("Hello, World_2!") == ["hello", "world_2"]


def test_tfidf_is_a_cosine():
    idx = TfidfIndex(DOCS)
    s = idx.scores(DOCS[2])
    assert s[2] == pytest.approx(1.0) and s[0] == 0 and np.all(s <= 1 + 1e-12)
    assert np.argmax(idx.scores("the mat")) == 0
    with pytest.raises(ValueError, match="empty"):
        BM25Index([])


def test_benchmark_rows():
    q = ["cat on mat", "dog with cat", "stocks today"]
    rows = benchmark(q, DOCS, {"oracle": np.eye(3)}, hybrid_with="oracle")
    assert rows["oracle"]["recall@1"] == 1.0 and rows["BM25"]["recall@10"] == 1.0
    assert {"random", "TF-IDF", "BM25", "oracle"} <= rows.keys()
    assert any(k.startswith("hybrid") for k in rows)


# -- centring, whitening, fusion -----------------------------------------------------------------
def test_centring_and_whitening():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)) @ rng.standard_normal((5, 5)) + 10.0   # a shared offset
    raw = apply_postprocess(x, None)
    assert np.mean(raw @ raw.T) > 0.9            # everything points the same way
    post = fit_postprocess(x)
    assert np.allclose(post["center"], x.mean(axis=0)) and post["whiten"] is None
    c = apply_postprocess(x, post, normalize=False)
    assert np.allclose(c.mean(axis=0), 0, atol=1e-4)
    q = apply_postprocess(x[:3] + 0.0, post)      # queries go through the collection's transform
    assert np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-6)
    w = apply_postprocess(x, fit_postprocess(x, whiten=True, shrink=0.0), normalize=False).astype(np.float64)
    assert np.allclose(w.T @ w / len(w), np.eye(5), atol=1e-3)


def test_rrf_fusion():
    fused = rrf_scores([[2, 0, 1], [0, 3]], 4, k=60)
    assert fused[0] == pytest.approx(1 / 62 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 61) and fused[3] == pytest.approx(1 / 62)
    assert fused[1] == pytest.approx(1 / 63)
    a = np.array([[0.9, 0.1, 0.5]])
    b = np.array([[0.1, 0.2, 0.3]])
    assert np.allclose(rrf_matrix([a, b], k=1)[0], rrf_scores([[0, 2, 1], [2, 1, 0]], 3, k=1))
    with pytest.raises(ValueError):
        rrf_scores([[0]], 1, k=0)


# -- commands ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    d = tmp_path_factory.mktemp("retrieval")
    text = "\n\n".join(" ".join(f"topic{i % 7} word{(i * j) % 13} filler" for j in range(8)) for i in range(40))
    (d / "paras.txt").write_text(text + "\n", encoding="utf-8")
    lines = [f"line about topic{i} and word{i * 3}" for i in range(12)]
    (d / "lines.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = TrainConfig(steps=2, hidden=8, embed_dim=4, batch_size=2, seq_len=8, val_every=2, val_tokens=200)
    Trainer.fresh(cfg, d / "a", text).run()
    Trainer.fresh(TrainConfig(**{**cfg.to_dict(), "seed": 1}), d / "b", text).run()
    return d


def test_retrieval_command_on_builtin_corpus(lm, tmp_path):
    out = tmp_path / "r.json"
    r = run("retrieval", lm / "a", "--max-pairs", 30, "--json", out)
    assert r.exit_code == 0, r.output
    assert "| TF-IDF |" in r.output and "| pool mean |" in r.output and "hybrid" in r.output
    doc = json.loads(out.read_text())
    assert doc["pairs"] == 30 and doc["methods"]["TF-IDF"]["queries"] == 30
    assert doc["methods"]["BM25"]["recall@10"] > doc["methods"]["random"]["recall@10"]


def test_embed_search_centred_hybrid(lm, tmp_path):
    v = tmp_path / "v.npy"
    r = run("embed", lm / "a", lm / "lines.txt", "--out", v, "--whiten")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "v.npy.json").read_text())
    assert meta["pool"] == "mean" and len(meta["center"]) == 8 and len(meta["whiten"]) == 8
    vecs = np.load(v)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    r = run("search", v, "line about topic3 and word9", "-k", 3, "--hybrid")
    assert r.exit_code == 0, r.output
    assert "topic3" in r.output.splitlines()[0]           # BM25 puts the exact line first
    r = run("search", lm / "a", "topic2", "--in", lm / "lines.txt", "-k", 2)
    assert r.exit_code == 0 and len(r.output.splitlines()) == 2


def test_bad_inputs(lm, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    assert "nothing to embed" in one_line_error(run("embed", lm / "a", empty, "--out", tmp_path / "e.npy"))
    v = tmp_path / "v.npy"
    assert run("embed", lm / "a", lm / "lines.txt", "--out", v).exit_code == 0
    assert "no token" in one_line_error(run("search", v, "☃☃☃"))
    assert "another checkpoint" in one_line_error(run("search", v, "topic", "--checkpoint", lm / "b"))
    assert "no such file" in one_line_error(run("retrieval", lm / "a", "--pairs", tmp_path / "none.csv"))


def test_index_without_faiss_says_how_to_install(lm, tmp_path, monkeypatch):
    import bptt.ann
    monkeypatch.setattr(bptt.ann, "have_faiss", lambda: False)
    line = one_line_error(run("embed", lm / "a", lm / "lines.txt", "--out", tmp_path / "v.npy", "--index"))
    assert "pip install" in line


def test_index_matches_exact_and_refuses_a_mismatch(lm, tmp_path):
    faiss = pytest.importorskip("faiss")
    from bptt.ann import build_index, index_search
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for kind in ("flat", "hnsw"):
        index, _ = build_index(x, kind=kind)
        ids, _ = index_search(index, x[:20], 5)
        assert ids[:, 0].tolist() == list(range(20))       # each vector finds itself first
    assert isinstance(build_index(x)[0], faiss.IndexFlatIP)  # a small collection: exact
    v, w = tmp_path / "v.npy", tmp_path / "w.npy"
    assert run("embed", lm / "a", lm / "lines.txt", "--out", v, "--index").exit_code == 0
    exact = run("search", v, "line about topic3", "--exact")
    indexed = run("search", v, "line about topic3")
    assert indexed.exit_code == 0 and indexed.output.split("\n")[0][:20] == exact.output.split("\n")[0][:20]
    assert run("embed", lm / "b", lm / "lines.txt", "--out", w).exit_code == 0
    shutil.copy(str(v) + ".faiss", str(w) + ".faiss")
    shutil.copy(str(v) + ".faiss.json", str(w) + ".faiss.json")
    assert "does not belong" in one_line_error(run("search", w, "topic"))
    r = run("embed", lm / "b", lm / "lines.txt", "--out", v)       # new vectors: the old index goes
    assert r.exit_code == 0 and "removed the index" in r.output and run("search", v, "topic").exit_code == 0


def test_json_to_stdout_is_json_alone_and_a_small_collection_gets_a_note(lm, tmp_path):
    six = "\n\n".join(" ".join(f"topic{i} word{j} filler" for j in range(8)) for i in range(6)) + "\n"
    (tmp_path / "six.txt").write_text(six, encoding="utf-8")
    r = run("retrieval", lm / "a", tmp_path / "six.txt", "--json", "-")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)                         # stdout holds the JSON and nothing else
    assert doc["pairs"] == 6 and doc["methods"]["random"]["recall@10"] == 1.0
    assert "| BM25 |" in r.stderr and "Recall@10 is 1 for every method" in r.stderr, r.stderr
    assert "Recall@10" in doc["note"]
    r = run("retrieval", lm / "a", lm / "paras.txt", "--max-pairs", 30)
    assert r.exit_code == 0 and "| BM25 |" in r.stdout and "note:" not in r.output, r.output


def test_fit_on_a_text_too_short_is_named(lm, tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("two words\n\nthree more words\n", encoding="utf-8")
    one_line_error(run("retrieval", lm / "a", lm / "paras.txt", "--fit-on", tiny), f"--fit-on {tiny}",
                   "0 paragraph(s)")
    one_line_error(run("retrieval", lm / "a", tiny), f"{tiny}: the text has 0 paragraph(s)")
