"""Layer 3: sampling text from a language model, embedding text with it, and vector search.

The embedding of a text is the recurrent network's hidden state after reading it: the top
layer's h_T (``pool='last'``) or the mean of h_1..h_T (``pool='mean'``), optionally scaled to unit
L2 norm. Search ranks stored vectors by cosine similarity with the query's embedding.
"""
from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np

from .data import UNK_ID
from .model import LanguageModel


def _softmax_sample(logits: np.ndarray, temperature: float, top_k: int | None, rng) -> int:
    with np.errstate(over="ignore"):
        z = logits.astype(np.float64) / temperature
    if z.size > 1:
        z[UNK_ID] = -np.inf  # <unk> stands for any unseen symbol: it has no text to write
    if not np.isfinite(z.max()):
        # so small a temperature that logit / T overflows: take its limit, the likeliest token
        best = logits.astype(np.float64)
        if best.size > 1:
            best[UNK_ID] = -np.inf
        return int(np.argmax(best))
    if top_k is not None and top_k < z.size:
        cut = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cut, z, -np.inf)
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    return int(rng.choice(p.size, p=p))


def sample(model: LanguageModel, tokenizer, *, length: int = 500, temperature: float = 1.0,
           top_k: int | None = None, prime: str = "", seed: int = 0):
    """Generate ``length`` tokens after ``prime``, yielding each token's text as it is made.

    Deterministic for a given seed. ``prime`` must use only the vocabulary (ValueError listing the
    unknown symbols otherwise). ``temperature`` > 0 divides the logits; ``top_k`` keeps only the k
    most likely tokens. ``<unk>`` is never sampled, unless it is the whole vocabulary.
    """
    if not (isinstance(length, int) and length >= 0):
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k!r}")
    ids = tokenizer.encode(prime, strict=True) if prime else np.zeros(0, np.int64)
    # Checked above, before the first token: a bad prime fails at the call, not mid-stream.
    return _generate(model, tokenizer, ids, length, temperature, top_k, np.random.default_rng(seed),
                     prime_ends_in_space=prime[-1:].isspace())


def _generate(model, tokenizer, ids, length, temperature, top_k, rng, prime_ends_in_space=False):
    state = None
    if ids.size:
        logits, state = model.forward(ids.reshape(1, -1), state)
        last = logits[0, -1]
    else:
        # No prime: start from the zero state with a newline-like token if there is one.
        start = tokenizer.encode("\n")
        logits, state = model.forward(start.reshape(1, -1)[:, :1], state)
        last = logits[0, -1]
    nxt = np.zeros((1, 1), np.int64)
    prev = [int(ids[-1])] if ids.size else []   # the token before: it decides the space between
    for _ in range(length):
        tok = _softmax_sample(last, temperature, top_k, rng)
        if tokenizer.kind == "char":
            yield tokenizer.decode([tok])
        else:  # words: the space before a word depends on the one before it (decode is prefix-stable)
            piece = tokenizer.decode(prev + [tok])[len(tokenizer.decode(prev)):]
            if prime_ends_in_space:   # the prime's own space stands in for it
                piece, prime_ends_in_space = piece.lstrip(" "), False
            yield piece
            prev = [tok]
        nxt[0, 0] = tok
        logits, state = model.forward(nxt, state)
        last = logits[0, -1]


EMBED_BATCH_TOKENS = 16384   # texts of one length are embedded together, up to this many tokens


def embed_texts(model, tokenizer, texts, *, pool: str = "mean", normalize: bool = True) -> np.ndarray:
    """One embedding per text: (N, H) float32. Unseen symbols map to the tokenizer's <unk>.

    ``model`` is anything with ``hidden_states(ids (B, T)) -> (hs (B, T, H), state)``: a
    :class:`LanguageModel` or a contrastive encoder. Texts of the same token length run as one
    batch (rows do not interact, so a text's vector does not depend on its neighbours).
    """
    if pool not in ("last", "mean"):
        raise ValueError(f"pool must be 'last' or 'mean', got {pool!r}")
    pooled = getattr(model, "pooled", None)   # a `bptt fit` text classifier: its encoder's pooled state
    if pooled is not None:
        out = np.zeros((len(texts), model.pooled_size), np.float32)
        for i, text in enumerate(texts):
            ids = tokenizer.encode(text)
            if ids.size:            # an empty text embeds as the zero vector
                out[i] = pooled(ids, pool)
    else:
        out = _embed_by_length(model, tokenizer, texts, pool)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.where(norms > 0, out / np.where(norms > 0, norms, 1), out).astype(np.float32)
    return out


def _embed_by_length(model, tokenizer, texts, pool: str) -> np.ndarray:
    """Pooled hidden states (N, H) float32, texts of the same token length run as one batch; an
    empty text embeds as the zero vector."""
    encoded = [tokenizer.encode(t) for t in texts]   # (T,) ids, or (T, 1 + K) subword rows
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        if len(ids):
            by_len.setdefault(len(ids), []).append(i)
    out = None
    for T, rows in sorted(by_len.items()):
        step = max(1, EMBED_BATCH_TOKENS // T)
        for s in range(0, len(rows), step):
            chunk = rows[s:s + step]
            hs, _ = model.hidden_states(np.stack([encoded[i] for i in chunk]))
            v = hs[:, -1] if pool == "last" else hs.mean(axis=1)
            if out is None:
                out = np.zeros((len(texts), v.shape[1]), np.float32)
            out[chunk] = v
    if out is None:   # every text empty: zero vectors of the model's width
        hs, _ = model.hidden_states(np.zeros((1, 1), np.int64))
        out = np.zeros((len(texts), hs.shape[2]), np.float32)
    return out


def cosine_top_k(vectors: np.ndarray, query: np.ndarray, k: int):
    """Indices and cosine similarities of the k rows of ``vectors`` most similar to ``query``,
    best first (ties broken by index, so the order is deterministic)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    v = vectors.astype(np.float64)
    q = query.astype(np.float64)
    vn = np.linalg.norm(v, axis=1)
    qn = np.linalg.norm(q)
    sims = (v @ q) / np.maximum(vn * qn, 1e-30)
    order = np.lexsort((np.arange(len(sims)), -sims))[:k]
    return order, sims[order]


VECTORS_FORMAT = "bptt-vectors"


def model_fingerprint(model) -> str:
    """16 hex digits of SHA-256 over the model's parameter names, shapes and bytes: which weights
    made a vectors file, so vectors from another (or a retrained) checkpoint are refused."""
    h = hashlib.sha256()
    for name, p in sorted(model.parameters().items()):
        a = np.ascontiguousarray(p)
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def check_vectors_model(meta: dict, model, where: str) -> None:
    """ValueError (one line) unless the vectors described by ``meta`` were made by ``model``."""
    want = meta.get("model_fingerprint")
    if want is not None and want != model_fingerprint(model):
        raise ValueError(f"{where} was made by another checkpoint (or {meta.get('checkpoint')} changed "
                         "since): its vectors do not match this model; run `bptt embed` again")


def save_vectors(path, vectors: np.ndarray, texts, *, checkpoint, pool: str, normalize: bool,
                 model=None, post: dict | None = None) -> None:
    """Write embeddings with their texts and the checkpoint that made them.

    ``.npy``: the (N, H) float32 array, plus ``<path>.json`` holding the texts and metadata.
    ``.jsonl``: a header line ``{"format", "checkpoint", "pool", "normalize", ...}``, then one
    ``{"text", "vector"}`` object per line. The metadata also holds the model's fingerprint
    (:func:`model_fingerprint`) and the centring/whitening fitted on the collection
    (``center`` (H,), ``whiten`` (H, H) or null), which queries are put through as well.
    """
    from .retrieval import post_to_meta
    path = str(path)
    meta = {"format": VECTORS_FORMAT, "version": 1, "checkpoint": os.path.abspath(str(checkpoint)),
            "pool": pool, "normalize": bool(normalize), "dim": int(vectors.shape[1]),
            "model_fingerprint": None if model is None else model_fingerprint(model),
            **post_to_meta(post)}
    if path.endswith(".npy"):
        np.save(path, vectors.astype(np.float32), allow_pickle=False)
        with open(path + ".json", "w", encoding="utf-8") as f:
            json.dump({**meta, "texts": list(texts)}, f, ensure_ascii=False)
    elif path.endswith(".jsonl"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(meta) + "\n")
            for t, v in zip(texts, vectors):
                f.write(json.dumps({"text": t, "vector": [float(x) for x in v]}, ensure_ascii=False) + "\n")
    else:
        raise ValueError(f"--out must end in .npy or .jsonl, got {path!r}")


def load_vectors(path):
    """(vectors (N, H) float32, texts, metadata) from a file written by :func:`save_vectors`."""
    path = str(path)
    bad = f"{path}: not a vectors file written by `bptt embed`"
    try:
        if path.endswith(".npy"):
            if not os.path.exists(path):
                raise ValueError(f"{path}: no such vectors file")
            if not os.path.exists(path + ".json"):
                raise ValueError(f"{path}: its texts file {path}.json is missing")
            vecs = np.load(path, allow_pickle=False)
            with open(path + ".json", encoding="utf-8") as f:
                meta = json.load(f)
            texts = meta.pop("texts")
        else:
            with open(path, encoding="utf-8") as f:
                meta = json.loads(f.readline())
                rows = [json.loads(line) for line in f if line.strip()]
            texts = [r["text"] for r in rows]
            vecs = np.array([r["vector"] for r in rows], np.float32)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(bad) from None
    if not isinstance(meta, dict) or meta.get("format") != VECTORS_FORMAT:
        raise ValueError(bad)
    if vecs.ndim != 2 or len(texts) != vecs.shape[0] or vecs.shape[0] == 0:
        raise ValueError(f"{path}: vectors and texts do not match or are empty")
    width = vecs.shape[1]
    center, whiten = meta.get("center"), meta.get("whiten")
    if (meta.get("dim", width) != width or (center is not None and np.shape(center) != (width,))
            or (whiten is not None and np.shape(whiten) != (width, width))):
        raise ValueError(f"{path}: the vectors are {width} wide but its metadata describes "
                         f"{meta.get('dim', np.shape(center)[0] if center is not None else '?')}: "
                         "the files do not belong together; run `bptt embed` again")
    return vecs.astype(np.float32), texts, meta


SEARCH_PARAGRAPHS = 300
SEARCH_CHARS = 200


def search_corpus(paths=None):
    """Texts to search when none were embedded beforehand: the non-empty lines of ``paths``, or
    the first 300 paragraphs of the built-in corpus, each cut to 200 characters."""
    from .data import builtin_corpus, read_text_files
    if paths:
        texts = [line for line in read_text_files(paths).splitlines() if line.strip()]
    else:
        paras = [" ".join(p.split()) for p in builtin_corpus().split("\n\n")]
        texts = [p[:SEARCH_CHARS] for p in paras if len(p) > 20][:SEARCH_PARAGRAPHS]
    if not texts:
        raise ValueError("nothing to search: the text has no non-empty lines")
    return texts
