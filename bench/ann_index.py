"""ANN index against exact search on random but clustered unit vectors.

    python bench/ann_index.py [--n 100000] [--dim 256] [--clusters 1000] [--queries 1000] [--ef 32,64,128] [--json PATH]

Vectors: ``clusters`` centres ~ N(0, I); each vector is a centre plus N(0, σ²I) noise with σ such
that the noise has the centre's norm (clusters overlap, so neighbours are not trivial), scaled to
unit length. Queries are fresh draws from the same mixture. The index is the one ``bptt embed
--index`` builds for this N (bptt.ann.build_index); Recall@10 is the fraction of the exact top 10
(brute-force inner product) that the index returns; time per query is measured one query at a time
(as `bptt search` runs), after one warm-up query.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bptt.ann import build_index, ef_search, index_search  # noqa: E402


def clustered(n, dim, clusters, rng, centres=None):
    if centres is None:
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    which = rng.integers(0, clusters, n)
    x = centres[which] + rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, centres


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--ef", default=None, help="also search with these efSearch values, e.g. 32,64,128")
    a = ap.parse_args()
    import faiss
    rng = np.random.default_rng(a.seed)
    x, centres = clustered(a.n, a.dim, a.clusters, rng)
    q, _ = clustered(a.queries, a.dim, a.clusters, rng, centres)
    t0 = time.perf_counter()
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :a.k]
    t_exact = (time.perf_counter() - t0) / a.queries
    t0 = time.perf_counter()
    index, kind = build_index(x)
    t_build = time.perf_counter() - t0
    index_search(index, q[:1], a.k)
    runs = []
    for ef in ([None] + [int(e) for e in a.ef.split(",")] if a.ef else [None]):
        times, found = [], np.empty((a.queries, a.k), np.int64)
        for i in range(a.queries):
            t = time.perf_counter()
            if ef is None:                 # the rule bptt search uses
                ids, _ = index_search(index, q[i:i + 1], a.k)
            else:
                index.hnsw.efSearch = ef
                _, ids = index.search(q[i:i + 1], a.k)
            times.append(time.perf_counter() - t)
            found[i] = ids[0]
        recall = float(np.mean([len(set(found[i]) & set(exact[i])) / a.k for i in range(a.queries)]))
        runs.append({"ef_search": ef_search(a.k) if ef is None else ef, "rule": ef is None,
                     "recall_at_k": round(recall, 4),
                     "ms_per_query_mean": round(1e3 * float(np.mean(times)), 3),
                     "ms_per_query_median": round(1e3 * float(np.median(times)), 3),
                     "ms_per_query_p95": round(1e3 * float(np.percentile(times, 95)), 3)})
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": platform.processor() or platform.machine(),
           "n": a.n, "dim": a.dim, "clusters": a.clusters, "queries": a.queries, "k": a.k,
           "index": kind, "faiss_threads": faiss.omp_get_max_threads(), "build_s": round(t_build, 2),
           "exact_numpy_ms_per_query_batched": round(1e3 * t_exact, 3), "searches": runs}
    print(json.dumps(res, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
