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

Float32 exp, σ and tanh. libm's ``expf``/``tanhf`` are calls, one element at a time, and a loop
that calls them cannot be vectorised: in an LSTM step they cost more than the matrix product.
So in float32, :func:`exp`, :func:`sigmoid` and :func:`tanh` are computed here from IEEE
operations only, which LLVM vectorises:

    exp(x)  = 2^k · p(r),   k = ⌊x·log₂e + ½⌋,  r = x − k·ln2 (ln2 split in two parts, so r is
              exact),  p = the degree-7 Taylor polynomial of e^r (|r| ≤ ½ln2: error < 1e-8)
    σ(x)    = 1 / (1 + exp(−x))
    tanh(x) = x·(1 − x²/3 + 2x⁴/15 − 17x⁶/315 + 62x⁸/2835)      for |x| < ¼ (no cancellation)
            = 1 − 2 / (exp(2x) + 1)                              otherwise

Each is within a few float32 ulps (absolute error < 3e-7; exp clamps its argument to ±87), NaN in
gives NaN out, and the same operations in the same order give the same bits in every build. Float64 keeps libm (gradient
checks and parity with torch at 1e-10 need its last bits).
Reference twins: :mod:`bptt.reference.activations` (same names and signatures, plain NumPy).
"""
import math

import numpy as np
from numba.core import types as _types
from numba.extending import overload as _overload

from ..jit import composite, float32_from_bits, fma, inline, jobs

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


_F = np.float32
_LOG2E = _F(1.4426950408889634)
_LN2_HI = _F(0.693145751953125)        # ln 2 = _LN2_HI + _LN2_LO; k·_LN2_HI is exact for |k| < 2^9
_LN2_LO = _F(1.4286068203094173e-06)
_EXP_MAX = _F(87.0)                     # |x| ≤ 87 keeps 2^k a normal float32 (|k| ≤ 126)
_EXP_C = tuple(_F(1.0 / math.factorial(j)) for j in range(8))   # Taylor coefficients of e^r
_ONE, _TWO, _HALF, _QUARTER = _F(1.0), _F(2.0), _F(0.5), _F(0.25)
_TANH_C = (_F(-1.0 / 3.0), _F(2.0 / 15.0), _F(-17.0 / 315.0), _F(62.0 / 2835.0))


@inline
def exp32(x):
    """e^x for float32 x, from IEEE operations only (see the module docstring); vectorisable."""
    x = _EXP_MAX if x > _EXP_MAX else x      # written so that a NaN passes through both
    x = -_EXP_MAX if x < -_EXP_MAX else x
    k = np.floor(fma(x, _LOG2E, _HALF))
    r = fma(k, -_LN2_LO, fma(k, -_LN2_HI, x))
    p = fma(_EXP_C[7], r, _EXP_C[6])
    p = fma(p, r, _EXP_C[5])
    p = fma(p, r, _EXP_C[4])
    p = fma(p, r, _EXP_C[3])
    p = fma(p, r, _EXP_C[2])
    p = fma(p, r, _EXP_C[1])
    p = fma(p, r, _EXP_C[0])
    return p * float32_from_bits(np.int32((np.int32(k) + 127) << 23))   # p · 2^k


@inline
def sigmoid32(x):
    return _ONE / (_ONE + exp32(-x))


@inline
def tanh32(x):
    x2 = x * x
    p = fma(_TANH_C[3], x2, _TANH_C[2])
    p = fma(p, x2, _TANH_C[1])
    p = fma(p, x2, _TANH_C[0])
    small = fma(p * x2, x, x)
    big = _ONE - _TWO / (exp32(_TWO * x) + _ONE)
    return small if abs(x) < _QUARTER else big


def sigmoid(q):
    """σ(q): the float32 form above, or libm's exp in float64 (two branches so that exp never
    overflows: σ(q) = 1/(1+e^-q) = e^q/(1+e^q))."""
    if q >= 0:
        return 1.0 / (1.0 + math.exp(-q))
    e = math.exp(q)
    return e / (1.0 + e)


def tanh(q):
    """tanh(q): the float32 form above, or libm's in float64."""
    return math.tanh(q)


def exp(q):
    """e^q: the float32 form above, or libm's in float64."""
    return math.exp(q)


def _by_dtype(f32_impl, py_fn):
    """Inside kernels, ``py_fn`` compiles to ``f32_impl`` for float32 and to itself otherwise."""
    @_overload(py_fn)
    def _ov(q):
        if q == _types.float32:
            return lambda q: f32_impl(q)
        return py_fn
    return _ov


_by_dtype(exp32, exp)
_by_dtype(sigmoid32, sigmoid)
_by_dtype(tanh32, tanh)


@inline
def act(q, code):
    """f(q) for the activation ``code``."""
    if code == IDENTITY:
        return q
    if code == RELU:
        return 0.0 if q <= 0 else q  # NaN passes through, as in torch
    if code == TANH:
        return tanh(q)
    if code == SIGMOID:
        return sigmoid(q)
    if code == GELU:
        return q * 0.5 * (1.0 + math.erf(q * _SQRT_HALF))
    if code == GELU_TANH:
        u = _SQRT_2_OVER_PI * (q + _GELU_TANH_C * q * q * q)
        return 0.5 * q * (1.0 + tanh(u))
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
        t = tanh(u)
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * q * q)
        return 0.5 * (1.0 + t) + 0.5 * q * (1.0 - t * t) * du
    # GELU_SIGMOID
    s = sigmoid(_GELU_SIGMOID_C * q)
    return s + _GELU_SIGMOID_C * q * s * (1.0 - s)


STATE_ACTIVATIONS = ("tanh", "relu", "identity")   # the activations a recurrent state may take (bptt.RNN)
STATE_CODES = tuple(ACTIVATIONS[a] for a in STATE_ACTIVATIONS)


@inline
def state_act_row(y, q, code):
    """y[o] = f(q[o]) along a row for f in ``STATE_CODES`` (any other code: the identity): one
    loop per activation, in the row's dtype, so that each vectorises (a test of ``code`` inside
    the loop, or a float64 literal mixed into float32, keeps a loop scalar: ReLU took 2.4 ns an
    element that way). The RNN's sweeps call this one rather than :func:`act_row`, so that they
    do not compile every other activation (GELU's erf among them) into their bodies."""
    n = q.shape[0]
    zero = y.dtype.type(0.0)
    if code == RELU:
        for o in range(n):
            v = q[o]
            y[o] = zero if v <= zero else v     # NaN passes through, as in torch
    elif code == TANH:
        for o in range(n):
            y[o] = tanh(q[o])
    else:
        for o in range(n):
            y[o] = q[o]


@inline
def act_row(y, q, code):
    """y[o] = f(q[o]) along a row, one loop per common activation (:func:`state_act_row`)."""
    n = q.shape[0]
    if code == RELU or code == TANH or code == IDENTITY:
        state_act_row(y, q, code)
    elif code == SIGMOID:
        for o in range(n):
            y[o] = sigmoid(q[o])
    else:
        for o in range(n):
            y[o] = act(q[o], code)


@inline
def state_dact_row(dq, g, q, y, code):
    """dq[o] = g[o] · f'(q[o]) along a row for f in ``STATE_CODES`` (any other code: the
    identity), one loop per activation (as :func:`state_act_row`). dq must not be g (a possible
    overlap keeps LLVM from vectorising)."""
    n = q.shape[0]
    one = dq.dtype.type(1.0)
    zero = dq.dtype.type(0.0)
    if code == RELU:
        for o in range(n):
            dq[o] = g[o] * (one if q[o] > zero else zero)
    elif code == TANH:
        for o in range(n):
            dq[o] = g[o] * (one - y[o] * y[o])
    else:
        for o in range(n):
            dq[o] = g[o]


@inline
def dact_row(dq, g, q, y, code):
    """dq[o] = g[o] · f'(q[o]) along a row, one loop per common activation
    (:func:`state_dact_row`). dq must not be g."""
    n = q.shape[0]
    one = dq.dtype.type(1.0)
    if code == RELU or code == TANH or code == IDENTITY:
        state_dact_row(dq, g, q, y, code)
    elif code == SIGMOID:
        for o in range(n):
            dq[o] = g[o] * (y[o] * (one - y[o]))
    else:
        for o in range(n):
            dq[o] = g[o] * dact(q[o], y[o], code)


@composite
def activation_forward(y, q, code):
    """y = f(q), elementwise.

    y : (N, O) output, q : (N, O) pre-activation, code : int activation code.
    A job per block of ``ROW_BLOCK`` rows (:func:`bptt.jit.jobs`).
    """
    _activation_rows(row_blocks(q.shape[0]), y, q, code)


@jobs
def _activation_rows(j, njobs, y, q, code):
    """Rows j·ROW_BLOCK ... of :func:`activation_forward`."""
    for n in range(j * ROW_BLOCK, min(q.shape[0], (j + 1) * ROW_BLOCK)):
        act_row(y[n], q[n], code)


@composite
def activation_backward(dq, dy, q, y, code):
    """dq = dy ⊙ f'(q), elementwise.

    dq : (N, O) output, dy : (N, O), q : (N, O) pre-activation, y : (N, O) = f(q).
    A job per block of ``ROW_BLOCK`` rows.
    """
    _dactivation_rows(row_blocks(q.shape[0]), dq, dy, q, y, code)


@jobs
def _dactivation_rows(j, njobs, dq, dy, q, y, code):
    """Rows j·ROW_BLOCK ... of :func:`activation_backward`."""
    for n in range(j * ROW_BLOCK, min(q.shape[0], (j + 1) * ROW_BLOCK)):
        dact_row(dq[n], dy[n], q[n], y[n], code)


ROW_BLOCK = 8   # rows per job of the elementwise kernels (a few microseconds of work each)


def row_blocks(N):
    """Jobs of ``ROW_BLOCK`` rows covering N rows."""
    return (N + ROW_BLOCK - 1) // ROW_BLOCK


def activation_code(name: str) -> int:
    """The integer code of an activation name; ValueError listing the valid names otherwise."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}") from None


def activation_names():
    return list(ACTIVATIONS)
