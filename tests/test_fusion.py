"""Hybrid search's score fusion: the z-score math, α fitted where the answer is known, the fusion
spec and its bad values, α stored by `bptt contrastive` and used by `bptt retrieval`/`search`."""
import json

import numpy as np
import pytest

from bptt.checkpoint import load_checkpoint
from bptt.contrastive import ContrastiveConfig, split_paragraphs
from bptt.retrieval import (
    ALPHA_GRID,
    DEFAULT_ALPHA,
    check_alpha,
    check_fusion,
    fit_fusion,
    fuse,
    gold_ranks,
    resolve_fusion,
    rrf_matrix,
    score_fusion,
    zscore_rows,
)
from clihelp import one_line_error, run


def test_zscore_and_score_fusion():
    rng = np.random.default_rng(0)
    d, l = rng.standard_normal((3, 7)) * 5 + 2, rng.exponential(size=(3, 7))
    z = zscore_rows(d)
    assert np.allclose(z.mean(axis=1), 0) and np.allclose(z.std(axis=1), 1)
    assert np.array_equal(zscore_rows(np.full((2, 4), 3.0)), np.zeros((2, 4)))   # constant: no NaN
    assert np.allclose(score_fusion(d, l, 1.0), z) and np.allclose(score_fusion(d, l, 0.0), zscore_rows(l))
    assert np.allclose(score_fusion(d, l, 0.3), 0.3 * z + 0.7 * zscore_rows(l))
    # a scale or shift of either side does not change the fused scores
    assert np.allclose(score_fusion(10 * d - 4, l / 3, 0.3), score_fusion(d, l, 0.3))
    assert np.allclose(fuse(d, l, {"fusion": "score", "alpha": 0.3}), score_fusion(d, l, 0.3))
    assert np.allclose(fuse(d, l, {"fusion": "rrf", "k": 5}), rrf_matrix([d, l], k=5))
    for bad in (-0.1, 1.5, float("nan"), "x", None):
        with pytest.raises(ValueError, match="alpha"):
            check_alpha(bad)
    with pytest.raises(ValueError, match="shape"):
        score_fusion(d, l[:, :3], 0.5)
    for spec in ({"fusion": "max"}, {"fusion": "rrf", "k": 0}, {"fusion": "score", "alpha": 2},
                 {"fusion": "score", "lexical": "grep"}):
        with pytest.raises(ValueError):
            check_fusion(spec)


def _known_alpha_case(alpha, Q=100, N=200, seed=0):
    """Dense and lexical scores whose true mix t = α·a + (1 − α)·b puts each query's document
    (document q for query q) first; every other α ranks some documents differently."""
    rng = np.random.default_rng(seed)
    a, b = zscore_rows(rng.standard_normal((Q, N))), zscore_rows(rng.standard_normal((Q, N)))
    t = alpha * a + (1 - alpha) * b
    for q in range(Q):   # move each row's best document to column q, in a, b and t alike
        j = int(np.argmax(t[q]))
        for m in (a, b, t):
            m[q, [q, j]] = m[q, [j, q]]
    return a, b, rng.standard_normal((Q, N))


@pytest.mark.parametrize("alpha", [0.7, 0.0, 1.0])
def test_fit_fusion_finds_the_known_alpha(alpha):
    a, b, noise = _known_alpha_case(alpha)
    fit = fit_fusion(a, {"tfidf": noise, "bm25": b})
    assert fit["alpha"] == pytest.approx(alpha) and fit["mrr"] == 1.0
    assert fit["lexical"] == ("bm25" if alpha < 1 else "tfidf")   # at α = 1 the lexical side is unused: first
    assert fit["pairs"] == 100 and alpha in ALPHA_GRID
    assert np.all(gold_ranks(score_fusion(a, b, fit["alpha"])) == 1)


def test_resolve_fusion():
    fitted = {"fusion": "score", "alpha": 0.35, "lexical": "tfidf"}
    assert resolve_fusion(None) == ({"fusion": "rrf", "k": 60.0, "lexical": "bm25"}, "default")
    assert resolve_fusion(fitted) == ({"fusion": "score", "alpha": 0.35, "lexical": "tfidf"}, "fitted")
    assert resolve_fusion(fitted, alpha=0.8)[0]["alpha"] == 0.8
    assert resolve_fusion(fitted, fusion="rrf")[0]["fusion"] == "rrf"
    assert resolve_fusion(None, fusion="score")[0] == {"fusion": "score", "alpha": DEFAULT_ALPHA, "lexical": "bm25"}
    assert resolve_fusion(fitted, rrf_k=10)[0] == {"fusion": "rrf", "k": 10.0, "lexical": "bm25"}
    assert resolve_fusion(fitted, lexical="bm25")[0]["lexical"] == "bm25"
    for kw in ({"alpha": 0.5, "rrf_k": 10}, {"fusion": "rrf", "alpha": 0.5}, {"fusion": "score", "rrf_k": 5},
               {"fusion": "mean"}, {"alpha": 1.5}):
        with pytest.raises(ValueError):
            resolve_fusion(fitted, **kw)


def test_config_from_before_the_split_validates_on_its_heldout_set():
    c = ContrastiveConfig.from_dict({"val_fraction": 0.2, "steps": 5})
    assert (c.test_fraction, c.val_fraction) == (0.2, 0.0)
    text = "\n\n".join(" ".join(f"w{i} x{j}" for j in range(10)) for i in range(30))
    train, val, test = split_paragraphs(text, 0.0, 0, test_fraction=0.2)
    assert val is test and len(test) == 6 and len(train) == 24


TEXT = "\n\n".join(" ".join(f"t{i % 9} w{(i * j) % 17} x{j % 5}" for j in range(9)) for i in range(60)) + "\n"
TINY = ["--hidden", 6, "--embed-dim", 4, "--batch-size", 4, "--val-every", 2, "--crop-tokens", 4, 16]


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    d = tmp_path_factory.mktemp("fusion")
    (d / "t.txt").write_text(TEXT, encoding="utf-8")
    r = run("contrastive", d / "t.txt", *TINY, "--steps", 2, "--dtype", "float64", "--out", d / "run")
    assert r.exit_code == 0, r.output
    assert "hybrid search: α = " in r.output
    return d


def test_alpha_is_fitted_on_validation_and_stored(enc):
    run_dir = enc / "run"
    val = (run_dir / "validation.txt").read_text().split("\n\n")
    test = (run_dir / "heldout.txt").read_text().split("\n\n")
    assert len(val) == len(test) == 6 and not {p.strip() for p in val} & {p.strip() for p in test}
    for name in ("checkpoint.bptt", "best.bptt"):
        fusion = load_checkpoint(run_dir / name)["fusion"]
        assert fusion["fusion"] == "score" and fusion["alpha"] in ALPHA_GRID and fusion["pairs"] == 6
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["val_alpha"] == fusion["alpha"]


def test_retrieval_and_search_use_the_fitted_alpha(enc, tmp_path):
    run_dir = enc / "run"
    fusion = load_checkpoint(run_dir / "checkpoint.bptt")["fusion"]
    r = run("retrieval", run_dir, run_dir / "heldout.txt", "--min-words", 8, "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert f"α={fusion['alpha']:g})" in r.output and "+ BM25, RRF k=60)" in r.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["fusion"]["from"] == "fitted" and doc["fusion"]["alpha"] == fusion["alpha"]
    r = run("retrieval", run_dir, run_dir / "heldout.txt", "--min-words", 8, "--alpha", 0.25)
    assert r.exit_code == 0 and "α=0.25)" in r.output, r.output
    r = run("retrieval", run_dir, run_dir / "heldout.txt", "--min-words", 8, "--fit-on", run_dir / "heldout.txt")
    assert r.exit_code == 0 and "optimistic" in r.output, r.output     # fitted on the reported pairs: said so

    from bptt.collection import Collection
    from bptt.contrastive import load_embedder
    from bptt.retrieval import paragraphs
    model, tok, ckpt = load_embedder(run_dir)
    texts = paragraphs(TEXT, 1)
    col = Collection.from_texts(model, tok, texts, fitted=ckpt["fusion"])
    query = "t3 w5 x1 t3 w2"
    spec = resolve_fusion(col.fitted, alpha=0.6)[0]
    ids, scores = col.search(query, 5, hybrid=True, fusion=spec)
    cos = col.vectors.astype(np.float64) @ col.embed_query(query).astype(np.float64)
    want = score_fusion(cos, col.lexical_scores(query, spec["lexical"]), 0.6)[0]
    assert np.allclose(scores, np.sort(want)[::-1][:5]) and np.allclose(want[ids], scores)

    r = run("search", run_dir, query, "--in", enc / "t.txt", "--hybrid", "-k", 3)
    assert r.exit_code == 0 and len(r.output.splitlines()) == 3, r.output
    assert "--rrf-k" in one_line_error(run("search", run_dir, query, "--in", enc / "t.txt", "--hybrid",
                                           "--alpha", 0.5, "--rrf-k", 10))
    assert "--hybrid" in one_line_error(run("search", run_dir, query, "--in", enc / "t.txt", "--alpha", 0.5))
    assert "--alpha" in one_line_error(run("search", run_dir, query, "--in", enc / "t.txt", "--hybrid",
                                           "--alpha", 2), code=2)


def test_subword_tfidf():
    from bptt.lexical import LEXICAL, SubwordTfidfIndex, TfidfIndex, subword_terms
    assert subword_terms("Path") == ["path", "#<pat", "#path", "#ath>"]
    docs = ["it returned the value", "a cat sat on the mat"]
    assert TfidfIndex(docs).scores("returns")[0] == 0            # no shared word
    s = SubwordTfidfIndex(docs).scores("returns")
    assert s[0] > 0 and s[1] == 0 and "tfidf-sub" in LEXICAL     # shares <ret, retu, etur, turn


def test_fitted_alpha_survives_resume_and_vectors_files(enc, tmp_path):
    from bptt.collection import Collection
    from bptt.contrastive import ContrastiveTrainer, load_embedder
    run_dir = enc / "run"
    fusion = load_checkpoint(run_dir / "checkpoint.bptt")["fusion"]
    assert ContrastiveTrainer.resume(run_dir, steps=2, text=TEXT).fusion == fusion
    v = tmp_path / "v.npy"
    assert run("embed", run_dir, enc / "t.txt", "--per", "paragraph", "--out", v).exit_code == 0
    assert Collection.from_vectors_file(v, load_embedder).fitted == fusion
    r = run("search", v, "t3 w5 x1", "--hybrid", "-k", 2)
    assert r.exit_code == 0 and len(r.output.splitlines()) == 2, r.output
