"""Activation functions: scalar forward and derivative side by side, and array kernels.

Each activation has an integer code (used inside other kernels, e.g. the RNN cell) and a pair of
scalar helpers ``<name>(q)`` and ``d<name>(q, y)`` = f'(q), where ``y = f(q)`` is passed in so
that tanh and sigmoid can reuse their forward value.

====================  ==============================================  =====================================
name                  f(q)                                            f'(q)
====================  ==============================================  =====================================
identity              q                                               1
relu                  max(q, 0)                                       1 if q > 0 else 0
tanh                  tanh(q)                                         1 - y²
sigmoid               σ(q) = 1 / (1 + e^-q)                           y (1 - y)
gelu (exact, erf)     q Φ(q),  Φ(q) = ½(1 + erf(q/√2))                 Φ(q) + q φ(q),  φ(q) = e^(-q²/2)/√(2π)
gelu_tanh             ½ q (1 + tanh u),  u = √(2/π)(q + 0.044715 q³)   ½(1 + tanh u) + ½ q (1 - tanh² u) u'
                                                                      u' = √(2/π)(1 + 3·0.044715 q²)
gelu_sigmoid          q σ(1.702 q)                                    s + 1.702 q s (1 - s),  s = σ(1.702 q)
====================  ==============================================  =====================================

``gelu_tanh`` equals ``torch.nn.functional.gelu(approximate='tanh')``; ``gelu`` equals torch's
default exact form. Each derivative is of the form it sits beside (numpy-ml once mixed them).
"""
import math

from ..jit import inline, kernel, prange

IDENTITY, RELU, TANH, SIGMOID, GELU, GELU_TANH, GELU_SIGMOID = range(7)

ACTIVATIONS = {
    "identity": IDENTITY,
    "relu": RELU,
    "tanh": TANH,
    "sigmoid": SIGMOID,
    "gelu": GELU,
    "gelu_tanh": GELU_TANH,
    "gelu_sigmoid": GELU_SIGMOID,
}

_SQRT_HALF = 0.7071067811865476       # 1/√2
_INV_SQRT_2PI = 0.3989422804014327    # 1/√(2π)
_SQRT_2_OVER_PI = 0.7978845608028654  # √(2/π)
_GELU_TANH_C = 0.044715
_GELU_SIGMOID_C = 1.702


@inline
def sigmoid(q):
    # Two branches so that exp never overflows: σ(q) = 1/(1+e^-q) = e^q/(1+e^q).
    if q >= 0:
        return 1.0 / (1.0 + math.exp(-q))
    e = math.exp(q)
    return e / (1.0 + e)


@inline
def act(q, code):
    """f(q) for the activation ``code``."""
    if code == IDENTITY:
        return q
    if code == RELU:
        return 0.0 if q <= 0 else q  # NaN passes through, as in torch
    if code == TANH:
        return math.tanh(q)
    if code == SIGMOID:
        return sigmoid(q)
    if code == GELU:
        return q * 0.5 * (1.0 + math.erf(q * _SQRT_HALF))
    if code == GELU_TANH:
        u = _SQRT_2_OVER_PI * (q + _GELU_TANH_C * q * q * q)
        return 0.5 * q * (1.0 + math.tanh(u))
    # GELU_SIGMOID
    return q * sigmoid(_GELU_SIGMOID_C * q)


@inline
def dact(q, y, code):
    """f'(q) for the activation ``code``, given q and y = f(q)."""
    if code == IDENTITY:
        return 1.0
    if code == RELU:
        return 1.0 if q > 0 else 0.0
    if code == TANH:
        return 1.0 - y * y
    if code == SIGMOID:
        return y * (1.0 - y)
    if code == GELU:
        cdf = 0.5 * (1.0 + math.erf(q * _SQRT_HALF))
        pdf = _INV_SQRT_2PI * math.exp(-0.5 * q * q)
        return cdf + q * pdf
    if code == GELU_TANH:
        u = _SQRT_2_OVER_PI * (q + _GELU_TANH_C * q * q * q)
        t = math.tanh(u)
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * q * q)
        return 0.5 * (1.0 + t) + 0.5 * q * (1.0 - t * t) * du
    # GELU_SIGMOID
    s = sigmoid(_GELU_SIGMOID_C * q)
    return s + _GELU_SIGMOID_C * q * s * (1.0 - s)


@kernel
def activation_forward(y, q, code):
    """y = f(q), elementwise.

    y : (N, O) output, q : (N, O) pre-activation, code : int activation code.
    """
    N, O = q.shape
    for n in prange(N):
        for o in range(O):
            y[n, o] = act(q[n, o], code)


@kernel
def activation_backward(dq, dy, q, y, code):
    """dq += dy ⊙ f'(q), elementwise.

    dq : (N, O) accumulated, dy : (N, O), q : (N, O) pre-activation, y : (N, O) = f(q).
    """
    N, O = q.shape
    for n in prange(N):
        for o in range(O):
            dq[n, o] += dy[n, o] * dact(q[n, o], y[n, o], code)


def activation_code(name: str) -> int:
    """The integer code of an activation name; ValueError listing the valid names otherwise."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}") from None


def activation_names():
    return list(ACTIVATIONS)
