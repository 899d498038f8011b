"""Layer 3: lexical retrieval, the baselines dense vectors are measured against: TF-IDF and BM25.

Both score documents by the words they share with the query, through an inverted index (for each
term, the documents holding it and a weight), so a query costs the length of its terms' posting
lists, not the size of the collection. Terms are the lower-cased runs of letters and digits
(``\\w+``); nothing else (no stemming, no stop list), so the baselines are plain and reproducible.

TF-IDF (cosine of L2-normalised tf·idf vectors, the textbook form):
    w(t, d) = (1 + log tf(t, d)) · idf(t),  idf(t) = log((1 + N) / (1 + df(t))) + 1
    score(q, d) = Σ_t w(t, q) w(t, d) / (‖w(·, q)‖ ‖w(·, d)‖)

BM25 (Robertson–Spärck Jones idf, k1 = 1.2, b = 0.75 by default, as in Lucene):
    idf(t) = log(1 + (N − df(t) + 0.5) / (df(t) + 0.5))
    score(q, d) = Σ_{t ∈ q} idf(t) · tf(t, d) (k1 + 1) / (tf(t, d) + k1 (1 − b + b |d| / avgdl))

Subword TF-IDF (``tfidf-sub``) is TF-IDF whose terms are the words and also every character
4-gram of each word marked at both ends (``<word>`` → ``<wor``, ``word``, ``ord>``), as fastText's
subwords: "returns" and "returned", "sys.path" and "path", share terms. It is not a baseline (the
TF-IDF row is the plain one); hybrid search may use it (:func:`bptt.retrieval.fit_fusion` picks the
lexical method on validation pairs).
"""
from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

_TERM_RE = re.compile(r"\w+")


def terms(text: str) -> list[str]:
    """The lexical terms of ``text``: lower-cased ``\\w+`` runs."""
    return _TERM_RE.findall(text.lower())


SUBWORD_N = 4


def subword_terms(text: str, n: int = SUBWORD_N) -> list[str]:
    """The words of ``text`` (:func:`terms`), then the character n-grams of each word with its
    ends marked, prefixed by ``#`` so that a gram never equals a word."""
    words = terms(text)
    out = list(words)
    for w in words:
        m = f"<{w}>"
        out.extend("#" + m[i:i + n] for i in range(len(m) - n + 1))
    return out


class _InvertedIndex:
    """term -> (document ids (int64), weights (float64)); ``scores`` adds the query's postings."""

    tokenize = staticmethod(terms)

    def __init__(self, docs):
        docs = list(docs)
        if not docs:
            raise ValueError("the collection is empty: nothing to index")
        self.n_docs = len(docs)
        self.counts = [Counter(self.tokenize(d)) for d in docs]
        df = Counter()
        for c in self.counts:
            df.update(c.keys())
        self.df = df

    def _build(self, weight):
        """Postings from ``weight(term, tf, doc_index)``."""
        lists: dict[str, tuple[list, list]] = {}
        for i, c in enumerate(self.counts):
            for t, tf in c.items():
                ids, ws = lists.setdefault(t, ([], []))
                ids.append(i)
                ws.append(weight(t, tf, i))
        self.postings = {t: (np.asarray(ids, np.int64), np.asarray(ws, np.float64))
                         for t, (ids, ws) in lists.items()}

    def query_weights(self, query: str) -> dict:
        raise NotImplementedError

    def scores(self, query: str) -> np.ndarray:
        """(N,) float64: the score of every document for ``query`` (0 where no term is shared)."""
        out = np.zeros(self.n_docs, np.float64)
        for t, qw in sorted(self.query_weights(query).items()):   # fixed order: same bits every run
            p = self.postings.get(t)
            if p is not None:
                out[p[0]] += qw * p[1]
        return out

    def known_terms(self, query: str) -> list[str]:
        return [t for t in self.tokenize(query) if t in self.postings]


class TfidfIndex(_InvertedIndex):
    """Cosine similarity of sublinear tf·idf vectors (see the module docstring)."""

    def __init__(self, docs):
        super().__init__(docs)
        N = self.n_docs
        self.idf = {t: math.log((1 + N) / (1 + d)) + 1.0 for t, d in self.df.items()}
        norms = np.zeros(N)
        for i, c in enumerate(self.counts):
            norms[i] = math.sqrt(math.fsum(((1 + math.log(tf)) * self.idf[t]) ** 2 for t, tf in c.items()))
        norms[norms == 0] = 1.0
        self._build(lambda t, tf, i: (1 + math.log(tf)) * self.idf[t] / norms[i])

    def query_weights(self, query):
        c = Counter(t for t in self.tokenize(query) if t in self.idf)
        w = {t: (1 + math.log(tf)) * self.idf[t] for t, tf in c.items()}
        norm = math.sqrt(math.fsum(v * v for v in w.values())) or 1.0
        return {t: v / norm for t, v in w.items()}


class BM25Index(_InvertedIndex):
    """Okapi BM25 (see the module docstring)."""

    def __init__(self, docs, k1: float = 1.2, b: float = 0.75):
        if not (k1 >= 0 and 0 <= b <= 1):
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        super().__init__(docs)
        N = self.n_docs
        lengths = np.array([sum(c.values()) for c in self.counts], np.float64)
        avgdl = float(lengths.mean()) or 1.0
        self.idf = {t: math.log(1 + (N - d + 0.5) / (d + 0.5)) for t, d in self.df.items()}
        norm = k1 * (1 - b + b * lengths / avgdl)
        self._build(lambda t, tf, i: self.idf[t] * tf * (k1 + 1) / (tf + norm[i]))

    def query_weights(self, query):
        # a repeated query term counts once per occurrence, as in Lucene's BooleanQuery of terms
        return dict(Counter(t for t in self.tokenize(query) if t in self.idf))


class SubwordTfidfIndex(TfidfIndex):
    """TF-IDF over words and their character 4-grams (:func:`subword_terms`)."""

    tokenize = staticmethod(subword_terms)


LEXICAL = {"tfidf": TfidfIndex, "bm25": BM25Index, "tfidf-sub": SubwordTfidfIndex}
LEXICAL_NAMES = {"tfidf": "TF-IDF", "bm25": "BM25", "tfidf-sub": "subword TF-IDF"}
