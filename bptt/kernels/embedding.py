"""Embedding lookup and its scatter-add gradient, as ``torch.nn.Embedding``.

Shapes: N token positions (B·T, or any flattened batch), V vocabulary, D embedding width.

    out[n] = W[ids[n]]                       dW[v] += Σ_{n : ids[n] = v} dout[n]

The embedding bag (as ``torch.nn.EmbeddingBag`` with ``per_sample_weights``) sums a weighted bag of
rows per position; K is the bag width, and an id < 0 is padding (an empty slot):

    out[n] = Σ_{k : ids[n, k] ≥ 0} w[n, k] · W[ids[n, k]]
    dW[v] += Σ_{(n, k) : ids[n, k] = v} w[n, k] · dout[n]

Reference twins: :mod:`bptt.reference.embedding` (same names and signatures, plain NumPy).
"""
from ..jit import kernel, prange


@kernel
def embedding_forward(out, ids, W):
    """out[n, d] = W[ids[n], d].

    out : (N, D) output.  ids : (N,) int64 in [0, V).  W : (V, D).
    """
    N = ids.shape[0]
    D = W.shape[1]
    for n in prange(N):
        v = ids[n]
        for d in range(D):
            out[n, d] = W[v, d]


@kernel
def embedding_backward(dW, dout, ids):
    """dW[ids[n], d] += dout[n, d] for every n: a scatter-add.

    dW : (V, D) accumulated.  dout : (N, D) ∂L/∂out.  ids : (N,) int64 in [0, V).
    Parallel over the columns d, never over n: a token id may repeat, and two threads adding into
    one row would race. Per column, the n are added in order, so the result is deterministic.
    """
    N = ids.shape[0]
    D = dW.shape[1]
    for d in prange(D):
        for n in range(N):
            dW[ids[n], d] += dout[n, d]


@kernel
def embedding_bag_forward(out, ids, weights, W):
    """out[n, d] = Σ_k weights[n, k] · W[ids[n, k], d], over the slots with ids[n, k] ≥ 0.

    out : (N, D) output.  ids : (N, K) int64 in [-1, V), -1 = empty slot.  weights : (N, K).
    W : (V, D). Parallel over the positions n: each writes only its own row.
    """
    N, K = ids.shape
    D = W.shape[1]
    for n in prange(N):
        for d in range(D):
            out[n, d] = 0.0
        for k in range(K):
            v = ids[n, k]
            if v >= 0:
                w = weights[n, k]
                for d in range(D):
                    out[n, d] += w * W[v, d]


@kernel
def embedding_bag_backward(dW, dout, ids, weights):
    """dW[ids[n, k], d] += weights[n, k] · dout[n, d] for every filled slot: a weighted scatter-add.

    dW : (V, D) accumulated.  dout : (N, D) ∂L/∂out.  ids : (N, K) int64 in [-1, V).  weights : (N, K).
    Parallel over blocks of 32 columns only, as :func:`embedding_backward` is over columns: one id
    may fill many slots, and per column the slots are added in order (n, then k), so the result is
    deterministic. A block (not one column) per pass reads a row segment of dW at a time, instead
    of one number per row looked up.
    """
    N, K = ids.shape
    D = dW.shape[1]
    for blk in prange((D + 31) // 32):
        d0 = blk * 32
        d1 = min(D, d0 + 32)
        for n in range(N):
            for k in range(K):
                v = ids[n, k]
                if v >= 0:
                    w = weights[n, k]
                    for d in range(d0, d1):
                        dW[v, d] += w * dout[n, d]
