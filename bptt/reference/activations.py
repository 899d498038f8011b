"""Activations f and their derivatives f', side by side, in NumPy.

The twin of :mod:`bptt.kernels.activations`. ``d<name>(q, y)`` is f'(q) given q and y = f(q):
tanh and σ reuse their forward value.

    identity      f = q                                   f' = 1
    relu          f = max(q, 0)                           f' = [q > 0]
    tanh          f = tanh q                              f' = 1 − y²
    sigmoid       f = σ(q) = 1 / (1 + e^−q)               f' = y (1 − y)
    gelu          f = q Φ(q)                              f' = Φ(q) + q φ(q)
                  Φ(q) = ½(1 + erf(q/√2)),  φ(q) = e^(−q²/2) / √(2π)
    gelu_tanh     f = ½ q (1 + tanh u)                    f' = ½(1 + tanh u) + ½ q (1 − tanh²u) u'
                  u = √(2/π)(q + 0.044715 q³),  u' = √(2/π)(1 + 3·0.044715 q²)
    gelu_sigmoid  f = q σ(1.702 q)                        f' = s + 1.702 q s (1 − s),  s = σ(1.702 q)

The three GELUs are three different functions (exact, and two approximations of it), so each
has its own derivative: the derivative of the tanh form is not Φ(q) + q φ(q).
"""
import math

import numpy as np

IDENTITY, RELU, TANH, SIGMOID, GELU, GELU_TANH, GELU_SIGMOID = range(7)

ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "tanh": TANH, "sigmoid": SIGMOID,
               "gelu": GELU, "gelu_tanh": GELU_TANH, "gelu_sigmoid": GELU_SIGMOID}

_erf = np.vectorize(math.erf, otypes=[np.float64])   # NumPy has no erf; math.erf per element


def identity(q):
    return q


def didentity(q, y):
    return np.ones_like(q)


def relu(q):
    return np.where(q <= 0, 0.0, q)          # NaN passes through, as in torch


def drelu(q, y):
    return np.where(q > 0, 1.0, 0.0)


def tanh(q):
    return np.tanh(q)


def dtanh(q, y):
    return 1.0 - y * y


def sigmoid(q):
    e = np.exp(-np.abs(q))                    # never overflows: σ(q) = e^q / (1 + e^q) for q < 0
    return np.where(q >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def dsigmoid(q, y):
    return y * (1.0 - y)


def gelu(q):
    Phi = 0.5 * (1.0 + _erf(q / math.sqrt(2.0)))
    return q * Phi


def dgelu(q, y):
    Phi = 0.5 * (1.0 + _erf(q / math.sqrt(2.0)))
    phi = np.exp(-0.5 * q * q) / math.sqrt(2.0 * math.pi)
    return Phi + q * phi


def gelu_tanh(q):
    u = math.sqrt(2.0 / math.pi) * (q + 0.044715 * q ** 3)
    return 0.5 * q * (1.0 + np.tanh(u))


def dgelu_tanh(q, y):
    u = math.sqrt(2.0 / math.pi) * (q + 0.044715 * q ** 3)
    du = math.sqrt(2.0 / math.pi) * (1.0 + 3.0 * 0.044715 * q * q)
    t = np.tanh(u)
    return 0.5 * (1.0 + t) + 0.5 * q * (1.0 - t * t) * du


def gelu_sigmoid(q):
    return q * sigmoid(1.702 * q)


def dgelu_sigmoid(q, y):
    s = sigmoid(1.702 * q)
    return s + 1.702 * q * s * (1.0 - s)


# code -> (f, f'), in the order of the codes
TABLE = [(identity, didentity), (relu, drelu), (tanh, dtanh), (sigmoid, dsigmoid),
         (gelu, dgelu), (gelu_tanh, dgelu_tanh), (gelu_sigmoid, dgelu_sigmoid)]


def act(q, code):
    """f(q) for the activation ``code``."""
    return TABLE[code][0](q)


def dact(q, y, code):
    """f'(q) for the activation ``code``, given q and y = f(q)."""
    return TABLE[code][1](q, y)


def activation_forward(y, q, code):
    """y = f(q), elementwise.  y, q : (N, O).  Computed in float64 and rounded to y's dtype, as
    the fast kernels' scalar f does (float32 cancels in the GELUs' derivatives near their zero)."""
    y[...] = act(q.astype(np.float64), code)


def activation_backward(dq, dy, q, y, code):
    """dq = dy ⊙ f'(q), elementwise.  dq, dy, q, y : (N, O), y = f(q).  In float64, as above."""
    dq[...] = dy * dact(q.astype(np.float64), y.astype(np.float64), code)
