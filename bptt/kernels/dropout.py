"""Inverted dropout: multiply by a mask of 0 and 1/(1-p), drawn by the caller.

Shapes: N elements (any array, flattened). ``scale`` holds, per element, 0 (dropped) or
1/(1 - p) (kept), so that the expected output equals the input and evaluation needs no rescaling.

    y[n] = x[n] · scale[n]                  dx[n] += dy[n] · scale[n]
"""
from ..jit import kernel, prange


@kernel
def dropout_forward(y, x, scale):
    """y = x ⊙ scale.

    y : (N,) output.  x : (N,) input.  scale : (N,) 0 or 1/(1-p).
    """
    N = x.shape[0]
    for n in prange(N):
        y[n] = x[n] * scale[n]


@kernel
def dropout_backward(dx, dy, scale):
    """dx += dy ⊙ scale  (∂y/∂x is the diagonal of ``scale``).

    dx : (N,) accumulated.  dy : (N,) ∂L/∂y.  scale : (N,) the forward's mask.
    """
    N = dy.shape[0]
    for n in prange(N):
        dx[n] += dy[n] * scale[n]
