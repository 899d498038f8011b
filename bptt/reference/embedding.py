"""The embedding lookup and its gradient: the twin of :mod:`bptt.kernels.embedding`.

    out[n] = W[ids[n]]                  dW[v] += Σ_{n : ids[n] = v} dout[n]

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
