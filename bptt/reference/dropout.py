"""Inverted dropout, the twin of :mod:`bptt.kernels.dropout`.

``scale`` is the mask the trainer drew: 0 where a unit is dropped, 1/(1 - p) where it is kept, so
that E[y] = x and evaluation needs no rescaling. The derivative of y = x ⊙ scale with respect to x
is the diagonal of ``scale``: the gradient flows only through the kept units, scaled the same way.
"""


def dropout_forward(y, x, scale):
    """y = x ⊙ scale.   y, x, scale : (N,)."""
    y[...] = x * scale


def dropout_backward(dx, dy, scale):
    """dx += dy ⊙ scale.   dx, dy, scale : (N,)."""
    dx += dy * scale
