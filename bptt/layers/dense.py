"""Dense layers and the multi-layer perceptron built from them."""
from __future__ import annotations

import math

import numpy as np

from ..kernels.activations import (activation_backward, activation_code, IDENTITY,
                                   SIGMOID, TANH)
from ..kernels.dense import (dense_backward, dense_backward_params, dense_forward, dense_forward_act,
                             dense_forward_kept, dense_weight_grads, dense_zero_grads)
from .base import Layer, check_array, uniform

INITS = ("torch", "xavier", "he")
READS_OUTPUT = (TANH, SIGMOID)   # activations whose derivative backward computes from y = f(q)


def init_linear(rng: np.random.Generator, out_features: int, in_features: int, init: str, dtype):
    """Weights (O, I) and bias (O,) for a linear map.

    - ``torch`` (default), as ``torch.nn.Linear.reset_parameters``: kaiming_uniform with a=√5,
      which is W ~ U(-1/√I, 1/√I), and b ~ U(-1/√I, 1/√I).
    - ``xavier`` (Glorot uniform): W ~ U(-√(6/(I+O)), √(6/(I+O))), b = 0.
    - ``he`` (Kaiming normal, for ReLU): W ~ N(0, 2/I), b = 0.
    """
    if init == "torch":
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        W = uniform(rng, (out_features, in_features), bound, dtype)
        b = uniform(rng, (out_features,), bound, dtype)
    elif init == "xavier":
        bound = math.sqrt(6.0 / (in_features + out_features))
        W = uniform(rng, (out_features, in_features), bound, dtype)
        b = np.zeros(out_features, dtype)
    elif init == "he":
        W = (rng.standard_normal((out_features, in_features)) * math.sqrt(2.0 / in_features)).astype(dtype)
        b = np.zeros(out_features, dtype)
    else:
        raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    return W, b


def _rng(seed, rng):
    if rng is not None:
        return rng
    return np.random.default_rng(seed)


def _positive(name, v):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


class Dense(Layer):
    """y = act(x·Wᵀ + b), as ``torch.nn.Linear`` followed by an activation.

    Parameters ``weight`` (O, I) and ``bias`` (O,) (no ``bias`` with ``bias=False``, as torch).
    ``x`` may be (N, I) or (B, T, I): every leading dimension is treated as a row. See
    :func:`init_linear` for the initialisations.

    What backward needs is the layer's own: changing ``x`` or the returned output in place
    between forward and backward (``y -= target``) does not change the gradients.
    """

    def __init__(self, in_features: int, out_features: int, activation: str = "identity", *,
                 bias: bool = True, init: str = "torch", dtype=np.float64, seed=None, rng=None):
        super().__init__(dtype)
        self.in_features = _positive("in_features", in_features)
        self.out_features = _positive("out_features", out_features)
        self.activation = activation
        self.code = activation_code(activation)
        W, b = init_linear(_rng(seed, rng), self.out_features, self.in_features, init, self.dtype)
        self.add_param("weight", W)
        self.has_bias = bool(bias)
        if self.has_bias:
            self.add_param("bias", b)
        else:   # the kernels add a bias: a zero one, no parameter (torch's state has no "bias")
            self._zero_bias = np.zeros(self.out_features, self.dtype)
        self._cache = None

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features}, activation={self.activation!r}, dtype={self.dtype.name})"

    def _bias(self):
        return self.params["bias"] if self.has_bias else self._zero_bias

    def forward(self, x: np.ndarray) -> np.ndarray:
        """y = act(x·Wᵀ + b), with copies kept of what the caller could change before backward."""
        return self.run(x, own_input=False, own_output=False)

    def run(self, x: np.ndarray, *, own_input: bool, own_output: bool) -> np.ndarray:
        """:meth:`forward`, without the copies for backward a caller does not need: ``own_input``,
        nothing changes ``x`` before backward (it is kept, not copied); ``own_output``, nothing
        changes the returned array (tanh and sigmoid read it back). What a model passes between
        its own layers."""
        if isinstance(x, np.ndarray) and x.ndim == 3:
            B, T = x.shape[:2]
            x2 = check_array("x", x, ("B", "T", self.in_features), self.dtype).reshape(B * T, self.in_features)
            lead = (B, T)
        else:
            x2 = check_array("x", x, ("N", self.in_features), self.dtype)
            lead = (x2.shape[0],)
        N = x2.shape[0]
        xc = None   # the weight gradient reads x: the caller's array may change before backward,
        if not own_input and np.may_share_memory(x2, x):   # so a copy, made by the forward's jobs
            xc = np.empty_like(x2, order="C")
        q = np.empty((N, self.out_features), self.dtype)
        y = q if self.code == IDENTITY else np.empty_like(q)   # f applied by each job to its block
        if xc is not None:
            dense_forward_kept(q, y, xc, x2, self.params["weight"], self._bias(), self.code)
        elif self.code == IDENTITY:
            dense_forward(q, x2, self.params["weight"], self._bias())
        else:
            dense_forward_act(q, y, x2, self.params["weight"], self._bias(), self.code)
        self._cache = (x2 if xc is None else xc, q, y, lead)
        if not own_output and self.code in READS_OUTPUT:
            y = y.copy()     # backward reads y = f(q): the caller's y -= target must not reach it
        return y.reshape(lead + (self.out_features,))

    def backward(self, dout: np.ndarray, *, input_grad: bool = True, accumulate: bool = True):
        """Given ∂L/∂y, accumulate ∂L/∂weight and ∂L/∂bias and return ∂L/∂x (None, without
        computing it, when ``input_grad`` is false: the input is data, as in a network's first
        layer).

        ``accumulate=False`` sets the gradients to this call's instead of adding to them: the
        same bits as ``zero_grad()`` then ``backward(dout)``, without a pass that clears them
        first (each job of the weight gradient clears its own block just before it sums into
        it: :func:`bptt.kernels.dense.dense_weight_grads`). It is what torch's backward does
        after ``zero_grad(set_to_none=True)``."""
        if self._cache is None:
            raise RuntimeError("Dense.backward called before forward")
        x2, q, y, lead = self._cache
        dy = check_array("dout", dout, lead + (self.out_features,), self.dtype).reshape(q.shape)
        if self.code == IDENTITY:
            dq = dy
        else:
            dq = np.empty_like(q)
            activation_backward(dq, dy, q, y, self.code)
        db = self.grads["bias"] if self.has_bias else np.zeros_like(self._zero_bias)
        if not input_grad:
            (dense_backward_params if accumulate else dense_weight_grads)(self.grads["weight"], db, dq, x2)
            return None
        dx = np.empty_like(x2)   # both products' jobs in one parallel run (dense_backward)
        dense_backward(self.grads["weight"], db, dx, dq, x2, self.params["weight"], not accumulate)
        return dx.reshape(lead + (self.in_features,))

    def zero_grad(self) -> None:
        """Every gradient to zero, each block by the thread that adds to it in backward
        (:func:`bptt.kernels.dense.dense_zero_grads`)."""
        dense_zero_grads(self.grads["weight"], self.grads["bias"] if self.has_bias else np.zeros_like(self._zero_bias))


class MLP(Layer):
    """A feed-forward network: Dense layers of ``sizes`` = [I, H1, ..., O].

    Hidden layers use ``activation``; the last uses ``out_activation`` (identity by default, so the
    output is logits or a regression value). Parameters are named ``layers.{k}.weight`` and
    ``layers.{k}.bias``, as in a ``torch.nn.Sequential`` of Linear layers numbered by position.
    """

    def __init__(self, sizes, activation: str = "relu", *, out_activation: str = "identity",
                 init: str = "torch", dtype=np.float64, seed=None, rng=None):
        super().__init__(dtype)
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least an input and an output size, got {sizes!r}")
        rng = _rng(seed, rng)
        self.sizes = sizes
        self.activation = activation
        self.layers = []
        for k in range(len(sizes) - 1):
            act = activation if k < len(sizes) - 2 else out_activation
            layer = Dense(sizes[k], sizes[k + 1], act, init=init, dtype=self.dtype, rng=rng)
            self.layers.append(layer)
            for name in ("weight", "bias"):
                self.params[f"layers.{k}.{name}"] = layer.params[name]
                self.grads[f"layers.{k}.{name}"] = layer.grads[name]

    def __repr__(self):
        return f"MLP({self.sizes}, activation={self.activation!r}, dtype={self.dtype.name})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        last = len(self.layers) - 1   # the caller's x and the returned output copied, not the rest
        for k, layer in enumerate(self.layers):
            x = layer.run(x, own_input=k > 0, own_output=k < last)
        return x

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    def backward(self, dout: np.ndarray, *, input_grad: bool = True, accumulate: bool = True):
        """Backward through every layer; returns ∂L/∂x, or None when ``input_grad`` is false (the
        first layer then skips that product: training an MLP on data never needs it).
        ``accumulate=False`` sets every gradient instead of adding to it (:meth:`Dense.backward`):
        a training step then needs no ``zero_grad``."""
        for k in range(len(self.layers) - 1, -1, -1):
            dout = self.layers[k].backward(dout, input_grad=input_grad or k > 0, accumulate=accumulate)
        return dout
