"""Layer 2 base: objects that own parameters, gradients and caches, and check their inputs.

A layer keeps its parameters in ``self.params`` and gradients in ``self.grads`` (dicts with the
same keys, torch's names), reachable as attributes too (``layer.weight``). ``backward`` adds into
``grads``; ``zero_grad`` resets them. Every array a kernel sees has been checked here first, so a
Numba typing error never reaches a user.
"""
from __future__ import annotations

import numpy as np

from ..kernels.engine import aligned_empty   # the layers' workspaces start on a cache line

FLOAT_DTYPES = (np.float32, np.float64)


def as_dtype(dtype) -> np.dtype:
    """np.float32 / np.float64 from a dtype or its name; ValueError otherwise."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def aligned_zeros(shape, dtype) -> np.ndarray:
    """:func:`aligned_empty`, filled with zeros."""
    a = aligned_empty(shape, dtype)
    a.fill(0)
    return a


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def check_array(name: str, a, shape, dtype, *, what: str = "") -> np.ndarray:
    """Return ``a`` as a C-contiguous array of ``dtype`` with the given shape, or raise ValueError.

    ``shape`` is a tuple whose entries are ints, or strings naming a free dimension (``'B'``).
    The dtype must match exactly: silently casting float64 to float32 would hide a user's mistake.
    """
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of shape {_fmt_shape(shape)} and dtype "
                         f"{np.dtype(dtype)}, got {type(a).__name__}")
    if a.ndim != len(shape):
        raise ValueError(f"{name} must have shape {_fmt_shape(shape)}{what}, got {_fmt_shape(a.shape)} "
                         f"({a.ndim} dimensions instead of {len(shape)})")
    for got, want in zip(a.shape, shape):
        if got != want and isinstance(want, (int, np.integer)):
            raise ValueError(f"{name} must have shape {_fmt_shape(shape)}{what}, got {_fmt_shape(a.shape)}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)} (the layer's dtype), got {a.dtype}")
    if not a.flags.writeable:   # a memory map opened 'r', np.frombuffer: the kernels take writable arrays
        return np.array(a, order="C")
    return np.ascontiguousarray(a)


def check_ids(name: str, ids, shape, high: int) -> np.ndarray:
    """Integer token ids in [0, high) with the given shape, as C-contiguous int64."""
    expected = _fmt_shape(shape)
    if not isinstance(ids, np.ndarray):
        raise ValueError(f"{name} must be a numpy integer array of shape {expected}, got {type(ids).__name__}")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.ndim != len(shape):
        raise ValueError(f"{name} must have shape {expected}, got {_fmt_shape(ids.shape)}")
    for got, want in zip(ids.shape, shape):
        if isinstance(want, (int, np.integer)) and got != want:
            raise ValueError(f"{name} must have shape {expected}, got {_fmt_shape(ids.shape)}")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= high:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} must be in the range [0, {high}), found {bad}")
    return np.ascontiguousarray(ids, dtype=np.int64)


def uniform(rng: np.random.Generator, shape, bound: float, dtype) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(dtype)



def load_params(params: dict, state: dict, *, partial: bool = False) -> list[str]:
    """Copy ``state``'s arrays into the parameter arrays ``params`` by name, in place: what every
    layer and model's ``load_state`` does. A missing name or a wrong shape is a ValueError naming
    the parameter (nothing is copied then: all are checked first). ``partial``: skip the names
    ``state`` lacks (a contrastive encoder started from a language model). Returns the names copied."""
    names = []
    for name, p in params.items():
        if name not in state:
            if partial:
                continue
            raise ValueError(f"missing parameter {name!r}")
        v = np.asarray(state[name])
        if v.shape != p.shape:
            raise ValueError(f"parameter {name!r} must have shape {_fmt_shape(p.shape)}, got {_fmt_shape(v.shape)}")
        if v.dtype.kind not in "biuf":
            raise ValueError(f"parameter {name!r} must hold real numbers, got dtype {v.dtype}")
        names.append(name)
    values = {name: np.asarray(state[name]).astype(params[name].dtype) for name in names}   # then copy: all or nothing
    for name in names:
        params[name][...] = values[name]
    return names


def copy_params(params: dict) -> dict:
    """A copy of each array in ``params``, by name (a model's ``state_dict``)."""
    return {k: v.copy() for k, v in params.items()}

class Parameterised:
    """What every layer and model with named parameters offers, from ``self.params`` and
    ``self.grads`` (name → array, the same names; a model's are its parts' own arrays under
    prefixed names, so zeroing them zeroes the parts')."""

    def parameters(self) -> dict[str, np.ndarray]:
        """Live parameter arrays by name (perturbing one in place changes the layer)."""
        return self.params

    def gradients(self) -> dict[str, np.ndarray]:
        """Accumulated gradients by name, with the keys of :meth:`parameters`."""
        return self.grads

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the parameters by name; ValueError on a missing name or wrong shape."""
        load_params(self.params, state)

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter, by name."""
        return copy_params(self.params)

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.params.values()))


class Layer(Parameterised):
    """Base class: named parameters and gradients, ``zero_grad``, and gradcheck hooks."""

    def __init__(self, dtype=np.float64):
        self.dtype = as_dtype(dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    # -- parameters -------------------------------------------------------------------------
    def add_param(self, name: str, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value, dtype=self.dtype)
        self.params[name] = value
        self.grads[name] = aligned_zeros(value.shape, value.dtype)   # products accumulate into its rows

    def __getattr__(self, name):
        # Only called when normal lookup fails: expose parameters as attributes (layer.weight).
        params = self.__dict__.get("params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name, value):
        # layer.weight = W writes into the parameter (shape checked), as load_state does: an
        # attribute of that name would be a second array the kernels never see
        params = self.__dict__.get("params")
        if params is not None and name in params:
            load_params({name: params[name]}, {name: value})
            return
        object.__setattr__(self, name, value)

    # -- gradcheck interface ----------------------------------------------------------------
    # gradcheck calls check_forward(**inputs) -> tuple of float outputs, then
    # check_backward(*douts) -> {input name: gradient}. The defaults suit a layer whose forward
    # takes one array ``x`` and returns one array.
    def check_forward(self, x):
        return (self.forward(x),)

    def check_backward(self, dout):
        return {"x": self.backward(dout)}
