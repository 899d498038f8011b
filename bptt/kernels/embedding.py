"""Embedding lookup and its scatter-add gradient, as ``torch.nn.Embedding``.

Shapes: N token positions (B·T, or any flattened batch), V vocabulary, D embedding width.

    out[n] = W[ids[n]]                       dW[v] += Σ_{n : ids[n] = v} dout[n]
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
