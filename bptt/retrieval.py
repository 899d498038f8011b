"""Layer 3: the retrieval benchmark, vector post-processing (centring, whitening) and rank fusion.

The benchmark: each paragraph of a text is cut in two at its middle word; its first half is a
query, its second half a document, and each query must find its own document among all of them.
For every query we find the rank r of its document (1 = best) and report

    Recall@k = mean over queries of [r ≤ k],      MRR = mean over queries of 1 / r.

Ties count against the right document: r = 1 + #{documents scoring ≥ it, other than itself}, so a
method that scores everything equal gets the worst rank, not the best.

Reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009) merges rankings by their ranks
alone, so scores on different scales (cosines, BM25 sums) need no calibration:

    RRF(d) = Σ_rankings 1 / (k + rank(d)),   k = 60 by default (the paper's value)

A document missing from a ranking adds nothing for it.

Score fusion (a convex combination, as in Bruch, Gai & Ingber, "An analysis of fusion functions
for hybrid retrieval", TOIS 2023) keeps how far ahead a document is, which ranks throw away. Each
query's scores are first put on one scale, the z-score over the documents, then mixed:

    z(s)_d = (s_d − mean_d' s_d') / std_d' s_d',     fused(d) = α · z(dense)_d + (1 − α) · z(lexical)_d

α ∈ [0, 1] is fitted on validation pairs (:func:`fit_fusion`: the α of :data:`ALPHA_GRID`, and the
lexical method, with the best MRR), never on the pairs it is reported on.
"""
from __future__ import annotations

import csv

import numpy as np

from .lexical import LEXICAL, LEXICAL_NAMES

RRF_K = 60
ALPHA_GRID = tuple(i / 20 for i in range(21))   # α = 0, 0.05, …, 1
DEFAULT_ALPHA = 0.5    # score fusion's α when none was fitted (``bptt search --fusion score``)
FUSIONS = ("rrf", "score")
MIN_WORDS = 16       # a paragraph needs this many words to give a query and a document of 8+
MAX_PAIRS = 1000
KS = (1, 10)


# -- pairs ---------------------------------------------------------------------------------------
def paragraphs(text: str, min_words: int = MIN_WORDS) -> list[str]:
    """The paragraphs (blocks separated by blank lines) of ``text`` with at least ``min_words``
    words, whitespace collapsed to single spaces, in text order."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        words = block.split()
        if len(words) >= min_words:
            out.append(" ".join(words))
    return out


def split_pair(paragraph: str) -> tuple[str, str]:
    """(first half, second half) of a paragraph, cut at its middle word."""
    words = paragraph.split()
    mid = len(words) // 2
    return " ".join(words[:mid]), " ".join(words[mid:])


def paragraph_pairs(text: str, *, max_pairs: int | None = MAX_PAIRS, seed: int = 0,
                    min_words: int = MIN_WORDS) -> tuple[list[str], list[str]]:
    """(queries, documents): a seeded sample of at most ``max_pairs`` paragraphs of ``text``, each
    cut by :func:`split_pair`. ValueError if fewer than 2 paragraphs qualify."""
    paras = paragraphs(text, min_words)
    if len(paras) < 2:
        raise ValueError(f"the text has {len(paras)} paragraph(s) of at least {min_words} words; "
                         "the benchmark needs 2 or more (paragraphs are separated by blank lines)")
    order = np.random.default_rng(seed).permutation(len(paras))
    if max_pairs is not None:
        order = order[:max_pairs]
    pairs = [split_pair(paras[i]) for i in order]
    return [q for q, _ in pairs], [d for _, d in pairs]


def read_pairs(path) -> tuple[list[str], list[str]]:
    """(queries, documents) from a CSV file of two columns, query and document (a first row
    ``query,document`` is taken as a header). ValueError naming the line if a row is bad."""
    queries, docs = [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if not row or all(not c.strip() for c in row):
                    continue
                if n == 1 and [c.strip().lower() for c in row] == ["query", "document"]:
                    continue
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    raise ValueError(f"{path}, line {n}: expected two non-empty columns, query and "
                                     f"document; got {len(row)} column(s)")
                queries.append(row[0])
                docs.append(row[1])
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except csv.Error as e:
        raise ValueError(f"{path}: not a CSV file ({e})") from None
    if len(queries) < 2:
        raise ValueError(f"{path}: needs at least 2 query,document rows, found {len(queries)}")
    return queries, docs


# -- metrics -------------------------------------------------------------------------------------
def gold_ranks(scores: np.ndarray, gold=None) -> np.ndarray:
    """(Q,) 1-based rank of each query's right document, ties counted against it.

    scores : (Q, N), higher is better;  gold : (Q,) the right document of each query
    (default: query q's document is document q).
    """
    scores = np.asarray(scores, np.float64)
    Q = scores.shape[0]
    gold = np.arange(Q) if gold is None else np.asarray(gold, np.int64)
    g = scores[np.arange(Q), gold][:, None]
    return (scores >= g).sum(axis=1)   # counts the right document itself once: rank = 1 + others ≥ it


def metrics_from_ranks(ranks, ks=KS) -> dict:
    """Recall@k for each k in ``ks`` and MRR, from 1-based ranks."""
    ranks = np.asarray(ranks, np.float64)
    out = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["mrr"] = float(np.mean(1.0 / ranks))
    out["queries"] = int(ranks.size)
    return out


def cosine_scores(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(Q, N) cosine similarities of query rows and document rows (a zero row scores 0)."""
    q = np.asarray(q, np.float64)
    d = np.asarray(d, np.float64)
    qn = np.linalg.norm(q, axis=1, keepdims=True)
    dn = np.linalg.norm(d, axis=1, keepdims=True)
    return (q / np.where(qn > 0, qn, 1)) @ (d / np.where(dn > 0, dn, 1)).T


def ranking(scores: np.ndarray) -> np.ndarray:
    """Document indices best first for each row of ``scores`` (Q, N) (or one (N,) row); ties
    broken by index, so the order is the same on every run."""
    s = np.atleast_2d(np.asarray(scores, np.float64))
    return np.argsort(-s, axis=1, kind="stable")


def rrf_scores(rank_lists, n_docs: int, k: float = RRF_K) -> np.ndarray:
    """(N,) fused scores of one query: Σ over the ranked lists of 1/(k + position), position 1-based.

    rank_lists : sequences of document indices, best first; each may be a prefix (top-m) of a
    full ranking, and documents it leaves out get nothing from it.
    """
    if not k > 0:
        raise ValueError(f"the fusion constant k must be positive, got {k}")
    fused = np.zeros(n_docs, np.float64)
    for ids in rank_lists:
        ids = np.asarray(ids, np.int64)
        fused[ids] += 1.0 / (k + np.arange(1, ids.size + 1))
    return fused


def rrf_matrix(score_mats, k: float = RRF_K) -> np.ndarray:
    """(Q, N) RRF of full score matrices: each is turned into ranks, then fused."""
    out = None
    for s in score_mats:
        order = ranking(s)
        r = np.empty_like(order)
        rows = np.arange(order.shape[0])[:, None]
        r[rows, order] = np.arange(1, order.shape[1] + 1)[None, :]
        part = 1.0 / (k + r)
        out = part if out is None else out + part
    return out


def zscore_rows(scores: np.ndarray) -> np.ndarray:
    """(Q, N) each row's scores minus the row's mean, over the row's standard deviation (a
    constant row becomes zeros)."""
    s = np.atleast_2d(np.asarray(scores, np.float64))
    sd = s.std(axis=1, keepdims=True)
    return (s - s.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def check_alpha(alpha) -> float:
    """α as a float, or ValueError (one line) unless 0 ≤ α ≤ 1."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"the fusion weight alpha must be a number in [0, 1], got {alpha!r}") from None
    if not 0.0 <= a <= 1.0:   # also refuses NaN
        raise ValueError(f"the fusion weight alpha must be in [0, 1], got {alpha!r}")
    return a


def score_fusion(dense: np.ndarray, lexical: np.ndarray, alpha: float) -> np.ndarray:
    """(Q, N) α · z(dense) + (1 − α) · z(lexical), z the per-query z-score (:func:`zscore_rows`)."""
    a = check_alpha(alpha)
    dense, lexical = np.atleast_2d(dense), np.atleast_2d(lexical)
    if dense.shape != lexical.shape:
        raise ValueError(f"dense and lexical scores must have one shape, got {dense.shape} and {lexical.shape}")
    return a * zscore_rows(dense) + (1.0 - a) * zscore_rows(lexical)


def fit_fusion(dense: np.ndarray, lexical: dict, grid=ALPHA_GRID) -> dict:
    """The score fusion with the best MRR on validation pairs (query q's document is document q).

    dense : (Q, N) the encoder's scores;  lexical : name -> (Q, N) scores of each lexical method.
    Tried: every α of ``grid`` with every lexical method; ties go to the α nearest 0.5, then to
    the first method. Returns ``{"fusion": "score", "alpha", "lexical", "pairs", "mrr",
    "recall@10"}`` (the last two measured on these pairs, so optimistic).
    """
    if not lexical:
        raise ValueError("fit_fusion needs at least one lexical score matrix")
    best = None
    for j, (name, lex) in enumerate(lexical.items()):
        zd, zl = zscore_rows(dense), zscore_rows(lex)
        for a in grid:
            a = check_alpha(a)
            m = metrics_from_ranks(gold_ranks(a * zd + (1 - a) * zl))
            key = (m["mrr"], -abs(a - 0.5), -j)
            if best is None or key > best[0]:
                best = (key, {"fusion": "score", "alpha": a, "lexical": name, "pairs": m["queries"],
                              "mrr": m["mrr"], "recall@10": m["recall@10"]})
    return best[1]


def check_fusion(spec: dict) -> dict:
    """A fusion spec, checked: ``{"fusion": "rrf", "k"}`` or ``{"fusion": "score", "alpha",
    "lexical"}`` (lexical: a key of :data:`LEXICAL`, BM25 by default)."""
    kind = spec.get("fusion")
    lex = spec.get("lexical", "bm25")
    if lex not in LEXICAL:
        raise ValueError(f"the lexical method must be one of {', '.join(LEXICAL)}, got {lex!r}")
    if kind == "rrf":
        k = float(spec.get("k", RRF_K))
        if not (k > 0 and np.isfinite(k)):
            raise ValueError(f"the fusion constant k must be positive, got {spec.get('k')!r}")
        return {"fusion": "rrf", "k": k, "lexical": lex}
    if kind == "score":
        return {"fusion": "score", "alpha": check_alpha(spec.get("alpha", DEFAULT_ALPHA)), "lexical": lex}
    raise ValueError(f"the fusion must be one of {', '.join(FUSIONS)}, got {kind!r}")


def fuse(dense: np.ndarray, lexical: np.ndarray, spec: dict) -> np.ndarray:
    """(Q, N) the hybrid scores of full score matrices by ``spec`` (:func:`check_fusion`)."""
    spec = check_fusion(spec)
    if spec["fusion"] == "rrf":
        return rrf_matrix([dense, lexical], k=spec["k"])
    return score_fusion(dense, lexical, spec["alpha"])


def resolve_fusion(fitted: dict | None, *, fusion: str | None = None, alpha: float | None = None,
                   rrf_k: float | None = None, lexical: str | None = None) -> tuple[dict, str]:
    """(spec, where it came from): the hybrid's fusion from a checkpoint's fitted one and options.

    Without options: the fitted score fusion if there is one ("fitted"), else RRF with BM25,
    k = 60 ("default"). ``alpha`` (or ``fusion="score"``) asks for score fusion, with the fitted
    α unless ``alpha`` is given, else :data:`DEFAULT_ALPHA`; ``rrf_k`` (or ``fusion="rrf"``)
    for RRF. ``lexical`` replaces the lexical method. Contradictory options: ValueError.
    """
    if fusion is not None and fusion not in FUSIONS:
        raise ValueError(f"the fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if alpha is not None and rrf_k is not None:
        raise ValueError("give --alpha (score fusion) or --rrf-k (reciprocal-rank fusion), not both")
    if fusion == "rrf" and alpha is not None:
        raise ValueError("--alpha is the weight of score fusion; it does not go with --fusion rrf")
    if fusion == "score" and rrf_k is not None:
        raise ValueError("--rrf-k is the constant of reciprocal-rank fusion; it does not go with --fusion score")
    fitted = fitted if fitted and fitted.get("fusion") == "score" else None
    kind = fusion or ("score" if alpha is not None else "rrf" if rrf_k is not None
                      else "score" if fitted else "rrf")
    if kind == "rrf":
        spec, where = {"fusion": "rrf", "k": RRF_K if rrf_k is None else rrf_k, "lexical": "bm25"}, "default"
        if rrf_k is not None:
            where = "option"
    elif alpha is not None:
        spec, where = {"fusion": "score", "alpha": alpha,
                       "lexical": fitted["lexical"] if fitted else "bm25"}, "option"
    elif fitted:
        spec, where = {"fusion": "score", "alpha": fitted["alpha"], "lexical": fitted["lexical"]}, "fitted"
    else:
        spec, where = {"fusion": "score", "alpha": DEFAULT_ALPHA, "lexical": "bm25"}, "default"
    if lexical is not None:
        spec["lexical"] = lexical
    return check_fusion(spec), where


def fusion_label(spec: dict) -> str:
    spec = check_fusion(spec)
    lex = LEXICAL_NAMES[spec["lexical"]]
    if spec["fusion"] == "rrf":
        return f"RRF with {lex}, k={spec['k']:g}"
    return f"z-scores with {lex}, α={spec['alpha']:g}"


# -- centring and whitening ----------------------------------------------------------------------
def fit_postprocess(vectors: np.ndarray, *, whiten: bool = False, shrink: float = 0.1) -> dict:
    """The transform fitted on a collection: ``{"center": μ (H,), "whiten": W (H, H) or None}``.

    Centring subtracts the collection mean μ: a language model's states share a large common
    direction, which makes every cosine near 1 (the issue's 0.95–0.97 for everything).
    Whitening also decorrelates and equalises the spread of the directions:
        C = (X − μ)ᵀ(X − μ) / N = U diag(λ) Uᵀ,   W = U diag(1 / √(λ + s·mean λ))
    with shrinkage s (default 0.1), so directions of near-zero variance (fewer vectors than
    dimensions) are not blown up into noise.
    """
    X = np.asarray(vectors, np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"vectors must have shape (N, H) with N >= 1, got {X.shape}")
    mu = X.mean(axis=0)
    W = None
    if whiten:
        Xc = X - mu
        C = Xc.T @ Xc / X.shape[0]
        lam, U = np.linalg.eigh(C)
        lam = np.maximum(lam, 0.0)
        W = U / np.sqrt(lam + shrink * max(lam.mean(), 1e-12))[None, :]
    return {"center": mu, "whiten": W}


def apply_postprocess(vectors: np.ndarray, post: dict | None, normalize: bool = True) -> np.ndarray:
    """(N, H') float32: vectors centred (and whitened) by ``post``, then L2-normalised if asked."""
    X = np.asarray(vectors, np.float64)
    if post is not None:
        X = X - np.asarray(post["center"], np.float64)
        if post.get("whiten") is not None:
            X = X @ np.asarray(post["whiten"], np.float64)
    if normalize:
        n = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.where(n > 0, n, 1)
    return X.astype(np.float32)


def post_to_meta(post: dict | None) -> dict:
    if post is None:
        return {"center": None, "whiten": None}
    W = post.get("whiten")
    return {"center": [float(x) for x in post["center"]],
            "whiten": None if W is None else [[float(x) for x in row] for row in W]}


def post_from_meta(meta: dict) -> dict | None:
    if meta.get("center") is None:
        return None
    W = meta.get("whiten")
    return {"center": np.asarray(meta["center"], np.float64),
            "whiten": None if W is None else np.asarray(W, np.float64)}


# -- the benchmark -------------------------------------------------------------------------------
def lexical_scores(kind: str, queries, docs) -> np.ndarray:
    index = LEXICAL[kind](docs)
    return np.stack([index.scores(q) for q in queries])


def random_scores(n_queries: int, n_docs: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n_queries, n_docs))


def centred_cosines(qv: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """(Q, N) cosines of unit-length query and document vectors after both are centred on the
    documents' mean (the "mean, centred" row, and what ``bptt search`` does by default)."""
    qn, dn = apply_postprocess(qv, None), apply_postprocess(dv, None)
    post = fit_postprocess(dn)
    return cosine_scores(apply_postprocess(qn, post), apply_postprocess(dn, post))


def dense_variants(embed, queries, docs) -> dict:
    """Score matrices of one encoder's vectors, from one embedding pass per pooling.

    ``embed(texts, pool)`` returns (N, H) vectors (not normalised). Variants: each pooling raw,
    and the mean-pooled vectors centred, and whitened, with the transform fitted on the documents.
    """
    out = {}
    for pool in ("last", "mean"):
        qv, dv = embed(queries, pool), embed(docs, pool)
        out[f"pool {pool}"] = cosine_scores(qv, dv)
        if pool == "mean":
            out["mean, centred"] = centred_cosines(qv, dv)
            dn, qn = apply_postprocess(dv, None), apply_postprocess(qv, None)
            post = fit_postprocess(dn, whiten=True)
            out["mean, whitened"] = cosine_scores(apply_postprocess(qn, post), apply_postprocess(dn, post))
    return out


def benchmark(queries, docs, dense: dict | None = None, *, seed: int = 0, rrf_k: float = RRF_K,
              hybrid_with: str | None = None, fusion: dict | None = None) -> dict:
    """Metrics per method: random, TF-IDF, BM25, every dense score matrix in ``dense`` (name ->
    (Q, N)), and the hybrids of ``hybrid_with`` (a key of ``dense``): RRF with BM25 (constant
    ``rrf_k``), and the fusion ``fusion`` (a spec for :func:`fuse`) if given."""
    if len(queries) != len(docs) or len(docs) < 2:
        raise ValueError(f"the benchmark needs matching queries and documents, 2 or more; got "
                         f"{len(queries)} and {len(docs)}")
    rows = {"random": metrics_from_ranks(gold_ranks(random_scores(len(queries), len(docs), seed)))}
    lex = {kind: lexical_scores(kind, queries, docs) for kind in LEXICAL}
    for kind, s in lex.items():
        rows[LEXICAL_NAMES[kind]] = metrics_from_ranks(gold_ranks(s))
    for name, s in (dense or {}).items():
        rows[name] = metrics_from_ranks(gold_ranks(s))
    if hybrid_with is not None:
        fused = rrf_matrix([dense[hybrid_with], lex["bm25"]], k=rrf_k)
        rows[f"hybrid ({hybrid_with} + BM25, RRF k={rrf_k:g})"] = metrics_from_ranks(gold_ranks(fused))
        if fusion is not None:
            spec = check_fusion(fusion)
            fused = fuse(dense[hybrid_with], lex[spec["lexical"]], spec)
            rows[f"hybrid ({hybrid_with}, {fusion_label(spec)})"] = metrics_from_ranks(gold_ranks(fused))
    return rows


def trivial_recall_note(n_docs: int, ks=KS) -> str | None:
    """A note when the collection is too small for Recall@k to mean anything: with N ≤ k
    documents every rank is ≤ k, so Recall@k is 1 for every method, random scores too."""
    trivial = [k for k in ks if k > 1 and n_docs <= k]
    if not trivial:
        return None
    which = ", ".join(f"Recall@{k}" for k in trivial)
    return (f"note: the collection has {n_docs} documents, so {which} is 1 for every method (random "
            f"too), as no rank can exceed {n_docs}; compare Recall@1 and MRR, or use more paragraphs")


def format_table(rows: dict) -> str:
    """A Markdown table of the benchmark's rows."""
    lines = ["| method | Recall@1 | Recall@10 | MRR |", "|---|---:|---:|---:|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['recall@1']:.3f} | {m['recall@10']:.3f} | {m['mrr']:.3f} |")
    return "\n".join(lines)
