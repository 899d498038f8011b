"""The embedding lookup and its gradient: the twin of :mod:`bptt.kernels.embedding`.

    out[n] = W[ids[n]]                  dW[v] += Σ_{n : ids[n] = v} dout[n]

The embedding bag sums weighted rows per position, an id < 0 being an empty slot:

    out[n] = Σ_{k : ids[n, k] ≥ 0} w[n, k] · W[ids[n, k]]     dW[ids[n, k]] += w[n, k] · dout[n]

A token that occurs twice gets the sum of both gradients: the backward of a lookup is a
scatter-add.
"""


def embedding_forward(out, ids, W):
    """out[n] = W[ids[n]].   out : (N, D) output.  ids : (N,) int in [0, V).  W : (V, D)."""
    out[...] = W[ids]


def embedding_backward(dW, dout, ids):
    """dW[ids[n]] += dout[n] for every n.   dW : (V, D) accumulated.  dout : (N, D).  ids : (N,)."""
    for n in range(ids.shape[0]):
        dW[ids[n]] += dout[n]


def embedding_bag_forward(out, ids, weights, W):
    """out[n] = Σ_k weights[n, k] · W[ids[n, k]] over ids[n, k] ≥ 0.   out : (N, D) output.
    ids : (N, K) int, -1 = empty.  weights : (N, K).  W : (V, D)."""
    out[...] = 0
    for n in range(ids.shape[0]):
        for k in range(ids.shape[1]):
            if ids[n, k] >= 0:
                out[n] += weights[n, k] * W[ids[n, k]]


def embedding_bag_backward(dW, dout, ids, weights):
    """dW[ids[n, k]] += weights[n, k] · dout[n] for every filled slot.   dW : (V, D) accumulated.
    dout : (N, D).  ids : (N, K).  weights : (N, K)."""
    for n in range(ids.shape[0]):
        for k in range(ids.shape[1]):
            if ids[n, k] >= 0:
                dW[ids[n, k]] += weights[n, k] * dout[n]
