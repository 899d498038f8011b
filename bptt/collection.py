"""Layer 3: a searchable collection: texts, their vectors, the model and post-processing that made
them, and optionally an ANN index and a BM25 index for hybrid search.

    query ─ embed (same pooling) ─ centre/whiten (fitted on the collection) ─ normalise ─ dense ranking
    query ─ BM25 (or TF-IDF) ranking

    hybrid, score fusion: α·z(cosines) + (1 − α)·z(lexical scores), z-scores over the collection,
            α fitted on validation pairs in the encoder's training (stored in its checkpoint);
    hybrid, RRF: Σ 1/(k + rank) over the two rankings (the default without a fitted α).
"""
from __future__ import annotations

import numpy as np

from .data import UNK_ID
from .generate import check_vectors_model, embed_texts, load_vectors
from .retrieval import (
    RRF_K,
    apply_postprocess,
    check_fusion,
    fit_postprocess,
    post_from_meta,
    rrf_scores,
    score_fusion,
)

HYBRID_DEPTH = 100   # each ranking contributes its top max(100, 10·k) documents to the fusion
# Too few texts to fit a transform on: one text centred on itself is the zero vector, two become
# v and −v; a covariance needs many more texts than a mean.
MIN_CENTER = 5
MIN_WHITEN = 10


def postprocess_plan(n: int, center: bool = True, whiten: bool = False):
    """(center, whiten, note): what a collection of ``n`` texts is put through, given what was
    asked; ``note`` (one line, or None) says what was skipped because ``n`` is too small."""
    if whiten and n < MIN_WHITEN:
        note = (f"not whitened: {n} text{'' if n == 1 else 's'} (whitening is fitted on "
                f"{MIN_WHITEN} or more)")
        if center and n < MIN_CENTER:
            note = f"not centred or whitened: {n} text{'' if n == 1 else 's'} (centring needs {MIN_CENTER} or more)"
        return center and n >= MIN_CENTER, False, note
    if center and n < MIN_CENTER:
        return False, whiten, (f"not centred: {n} text{'' if n == 1 else 's'} (centring on the "
                               f"collection's mean needs {MIN_CENTER} or more)")
    return center, whiten, None


def count_unknown_texts(tokenizer, texts) -> int:
    """How many of ``texts`` have no token the tokenizer knows (all ``<unk>``, or empty): they
    embed as the model's state for ``<unk>`` alone (or as the zero vector)."""
    return sum(1 for t in texts if not _knows_a_token(tokenizer, t))


def _knows_a_token(tokenizer, text: str) -> bool:
    ids = tokenizer.encode(text)
    words = ids[:, 0] if ids.ndim == 2 else ids   # subword rows: their word ids
    return bool(words.size) and not np.all(words == UNK_ID)


def embed_collection(model, tokenizer, texts, *, pool: str = "mean", normalize: bool = True,
                     center: bool = True, whiten: bool = False):
    """(vectors (N, H'), post): the texts' vectors with centring/whitening fitted on them and
    applied (``post`` is None when neither is asked for). A collection too small for them is
    left as it is (see :func:`postprocess_plan`, whose note says so)."""
    if not texts:
        raise ValueError("the collection is empty: nothing to embed")
    center, whiten, _ = postprocess_plan(len(texts), center, whiten)
    raw = embed_texts(model, tokenizer, texts, pool=pool, normalize=normalize)
    post = fit_postprocess(raw, whiten=whiten) if (center or whiten) else None
    if post is not None and not center:
        post["center"] = np.zeros_like(post["center"])
    return apply_postprocess(raw, post, normalize), post


class Collection:
    def __init__(self, vectors, texts, model, tokenizer, *, pool, normalize, post, index=None, fitted=None):
        if len(texts) == 0:
            raise ValueError("the collection is empty: nothing to search")
        self.vectors, self.texts = vectors, list(texts)
        self.model, self.tokenizer = model, tokenizer
        self.pool, self.normalize, self.post, self.index = pool, normalize, post, index
        self.fitted = fitted   # the checkpoint's fitted fusion (a dict, see bptt.retrieval.fit_fusion) or None
        self._lexical = {}

    @classmethod
    def from_vectors_file(cls, path, load_model, checkpoint=None, use_index: bool = True):
        """The collection of a vectors file written by ``bptt embed``; the model is the checkpoint
        recorded in it (or ``checkpoint``), and must be the one that made the vectors."""
        from .ann import load_index
        vecs, texts, meta = load_vectors(path)
        model, tok, ckpt = load_model(checkpoint or meta["checkpoint"])
        check_vectors_model(meta, model, str(path))
        index = load_index(path, vecs, meta) if use_index else None
        return cls(vecs, texts, model, tok, pool=meta.get("pool", "last"),
                   normalize=meta.get("normalize", True), post=post_from_meta(meta), index=index,
                   fitted=ckpt.get("fusion"))

    @classmethod
    def from_texts(cls, model, tokenizer, texts, *, pool="mean", center=True, whiten=False, fitted=None):
        vecs, post = embed_collection(model, tokenizer, texts, pool=pool, center=center, whiten=whiten)
        return cls(vecs, texts, model, tokenizer, pool=pool, normalize=True, post=post, fitted=fitted)

    def embed_query(self, query: str) -> np.ndarray:
        if not _knows_a_token(self.tokenizer, query):
            raise ValueError(f"the query {query[:40]!r} has no token the model knows: nothing to embed")
        raw = embed_texts(self.model, self.tokenizer, [query], pool=self.pool, normalize=self.normalize)
        q = apply_postprocess(raw, self.post, True)[0]
        if q.size != self.vectors.shape[1]:
            raise ValueError(f"the model embeds the query as {q.size} numbers but the stored vectors "
                             f"have {self.vectors.shape[1]}: they were not made by this model; run "
                             "`bptt embed` again")
        return q

    def dense(self, q: np.ndarray, m: int):
        """(ids, cosines) of the m nearest vectors, best first: the index if any, else exact."""
        m = min(m, len(self.texts))
        if self.index is not None:
            from .ann import index_search
            ids, sims = index_search(self.index, q[None, :], m)
            keep = ids[0] >= 0
            return ids[0][keep], sims[0][keep].astype(np.float64)
        v = self.vectors.astype(np.float64)
        vn = np.linalg.norm(v, axis=1)
        sims = (v @ q.astype(np.float64)) / np.maximum(vn * max(np.linalg.norm(q), 1e-30), 1e-30)
        order = np.lexsort((np.arange(len(sims)), -sims))[:m]
        return order, sims[order]

    def lexical_scores(self, query: str, kind: str = "bm25") -> np.ndarray:
        """(N,) the lexical scores (BM25 or TF-IDF) of every text for ``query``."""
        from .lexical import LEXICAL
        if kind not in self._lexical:
            self._lexical[kind] = LEXICAL[kind](self.texts)
        return self._lexical[kind].scores(query)

    def bm25_ranking(self, query: str, m: int, kind: str = "bm25"):
        s = self.lexical_scores(query, kind)
        order = np.lexsort((np.arange(len(s)), -s))
        order = order[s[order] > 0][:m]    # documents sharing no term are not ranked at all
        return order, s[order]

    def search(self, query: str, k: int, *, hybrid: bool = False, rrf_k: float = RRF_K, fusion: dict | None = None):
        """(ids, scores) of the top k: cosine similarity, or with ``hybrid`` the fused scores of the
        dense and lexical rankings by ``fusion`` (a spec, see :func:`bptt.retrieval.check_fusion`;
        default RRF with BM25, k = ``rrf_k``).

        RRF fuses each ranking's top max(100, 10·k). Score fusion z-scores every text's cosine
        (computed exactly from the stored vectors, not through the index) and lexical score.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        k = min(k, len(self.texts))
        q = self.embed_query(query)
        if not hybrid:
            return self.dense(q, k)
        spec = check_fusion(fusion or {"fusion": "rrf", "k": rrf_k})
        if spec["fusion"] == "score":
            v = self.vectors.astype(np.float64)
            cos = (v @ q.astype(np.float64)) / np.maximum(np.linalg.norm(v, axis=1) * max(np.linalg.norm(q), 1e-30), 1e-30)
            fused = score_fusion(cos, self.lexical_scores(query, spec["lexical"]), spec["alpha"])[0]
            order = np.lexsort((np.arange(fused.size), -fused))[:k]
            return order, fused[order]
        depth = max(HYBRID_DEPTH, 10 * k)
        d_ids, _ = self.dense(q, depth)
        l_ids, _ = self.bm25_ranking(query, depth, spec["lexical"])
        fused = rrf_scores([d_ids, l_ids], len(self.texts), spec["k"])
        order = np.lexsort((np.arange(fused.size), -fused))[:k]
        order = order[fused[order] > 0]
        return order, fused[order]
