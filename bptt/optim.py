"""Layer 3: optimisers, gradient clipping and learning-rate schedules.

An optimiser holds the model's live parameter arrays (``model.parameters()``, a dict name ->
array) and updates them in place from a dict of gradients with the same keys
(``model.gradients()``)::

    opt = make_optimizer("adam", model.parameters(), lr=2e-3)
    for step in range(total):
        model.zero_grad(); ...forward/backward...
        clip_grad_norm(model.gradients(), 5.0)
        opt.lr = schedule(step)
        opt.step(model.gradients())

Every update rule follows ``torch.optim`` (single-tensor CPU path) operation for operation, and is
written out in its class docstring with θ the parameter, g its gradient, t the step count after
increment (1 on the first step) and η the learning rate. All arithmetic happens in the parameter's
dtype (float32 or float64; Python-float hyperparameters do not promote under NumPy ≥ 2), in place,
element by element, so that a step is deterministic and independent of thread count. Each update
runs as one compiled pass over a parameter and its buffers (:mod:`bptt.kernels.optim`, the same
bits as the NumPy expressions of its reference twin).

``state_dict()`` returns plain dicts of numbers and (copied) NumPy arrays, which
:mod:`bptt.checkpoint` stores as they are; ``load_state_dict`` restores them so that a resumed run
takes bit-for-bit the same steps.
"""
from __future__ import annotations

import inspect
import math

import numpy as np

from .kernels.optim import adagrad_update, adam_update, rmsprop_update, sgd_update, sum_squares
from .reference.optim import adagrad_update as adagrad_update_numpy
from .reference.optim import adam_update as adam_update_numpy
from .reference.optim import rmsprop_update as rmsprop_update_numpy
from .reference.optim import sgd_update as sgd_update_numpy

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "OPTIMIZERS", "make_optimizer",
           "clip_grad_norm", "clip_grad_value", "Schedule", "SCHEDULES", "make_schedule"]


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------

def _number(name: str, v, *, lo=None, hi=None, lo_open=False, hi_open=False) -> float:
    """``v`` as a finite float in the given range, or ValueError naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {v!r}")
    f = float(v)
    ok = math.isfinite(f)
    if ok and lo is not None:
        ok = f > lo if lo_open else f >= lo
    if ok and hi is not None:
        ok = f < hi if hi_open else f <= hi
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ValueError(f"{name} must be a finite number in {rng}, got {v!r}")
    return f


def _check_params(params) -> dict:
    if not isinstance(params, dict) or not params:
        raise ValueError("params must be a non-empty dict of parameter arrays (model.parameters()), "
                         f"got {type(params).__name__ if not isinstance(params, dict) else 'an empty dict'}")
    for name, p in params.items():
        if not isinstance(name, str):
            raise ValueError(f"params keys must be parameter names (str), got {name!r}")
        if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
            what = p.dtype if isinstance(p, np.ndarray) else type(p).__name__
            raise ValueError(f"params[{name!r}] must be a float32 or float64 numpy array, got {what}")
        if not p.flags.writeable:
            raise ValueError(f"params[{name!r}] must be writeable: the optimiser updates it in place")
    return params


# ---------------------------------------------------------------------------------------------
# optimisers
# ---------------------------------------------------------------------------------------------

def _one_pass(kernel, numpy_twin, arrays, *factors):
    """An update rule's kernel (:mod:`bptt.kernels.optim`) over the flattened parameter, gradient
    and buffers, each scalar factor already rounded to θ's dtype as NumPy rounds a Python float:
    one pass, the bits of the NumPy expressions in its reference twin, which the arrays run
    through as they are when one of them is not contiguous."""
    if all(a.flags.c_contiguous for a in arrays):
        kernel(*(a.reshape(-1) for a in arrays), *factors)
    else:
        numpy_twin(*arrays, *factors)


class Optimizer:
    """Base class: holds ``params`` (live arrays), ``lr``, the step count and per-parameter state.

    Subclasses declare ``name``, their hyperparameters ``hyper`` (names -> values), the buffers
    they keep per parameter (``buffers``) and implement ``_update(p, g, state)``.
    """

    name = "optimizer"
    buffers: tuple = ()

    def __init__(self, params: dict, lr: float, **hyper):
        self.params = _check_params(params)
        self.lr = _number("lr", lr, lo=0.0)
        self.hyper = hyper
        self.step_count = 0
        self.state = {k: {b: np.zeros_like(p) for b in self.buffers} for k, p in self.params.items()}

    def __getattr__(self, name):
        hyper = self.__dict__.get("hyper")
        if hyper is not None and name in hyper:
            return hyper[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __repr__(self):
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items())
        return f"{type(self).__name__}(lr={self.lr!r}, {hp})"

    def step(self, grads: dict) -> None:
        """One update of every parameter from ``grads`` (same keys, shapes and dtypes)."""
        if not isinstance(grads, dict):
            raise ValueError(f"grads must be a dict of gradient arrays (model.gradients()), got {type(grads).__name__}")
        if grads.keys() != self.params.keys():
            missing = [k for k in self.params if k not in grads]
            extra = [k for k in grads if k not in self.params]
            raise ValueError(f"grads must have the parameters' keys; missing {missing}, unexpected {extra}")
        for k, p in self.params.items():
            g = grads[k]
            if not isinstance(g, np.ndarray) or g.shape != p.shape or g.dtype != p.dtype:
                got = f"{g.dtype} {g.shape}" if isinstance(g, np.ndarray) else type(g).__name__
                raise ValueError(f"grads[{k!r}] must be a {p.dtype} array of shape {p.shape}, got {got}")
        self.lr = _number("lr", self.lr, lo=0.0)
        self.step_count += 1
        for k, p in self.params.items():
            self._update(p, grads[k], self.state[k])

    def _update(self, p, g, state):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{'name', 'lr', 'step', 'hyper': {...}, 'state': {param: {buffer: array}}}``, copied."""
        return {"name": self.name, "lr": self.lr, "step": self.step_count,
                "hyper": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.hyper.items()},
                "state": {k: {b: a.copy() for b, a in s.items()} for k, s in self.state.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (lr, step count, hyperparameters and buffers, copied into the
        existing arrays). ValueError if it belongs to another optimiser or other parameters."""
        if not isinstance(state, dict) or not {"name", "lr", "step", "hyper", "state"} <= state.keys():
            raise ValueError("state must be a dict from Optimizer.state_dict() with keys "
                             "name, lr, step, hyper, state")
        if state["name"] != self.name:
            raise ValueError(f"optimizer state is for {state['name']!r}, not {self.name!r}")
        bufs = state["state"]
        if not isinstance(bufs, dict) or bufs.keys() != self.state.keys():
            raise ValueError("optimizer state is for other parameters: expected "
                             f"{sorted(self.state)}, got {sorted(bufs) if isinstance(bufs, dict) else bufs!r}")
        for k, s in self.state.items():
            for b, a in s.items():
                v = bufs[k].get(b) if isinstance(bufs[k], dict) else None
                if not isinstance(v, np.ndarray) or v.shape != a.shape or v.dtype != a.dtype:
                    got = f"{v.dtype} {v.shape}" if isinstance(v, np.ndarray) else repr(v)
                    raise ValueError(f"optimizer state[{k!r}][{b!r}] must be a {a.dtype} array of shape "
                                     f"{a.shape}, got {got}")
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"optimizer state['step'] must be a non-negative integer, got {step!r}")
        hyper = dict(state["hyper"])
        if hyper.keys() != self.hyper.keys():
            raise ValueError(f"optimizer state has hyperparameters {sorted(hyper)}, expected {sorted(self.hyper)}")
        # validate through the constructor's checks before changing anything
        type(self)(self.params, state["lr"], **hyper)
        for k, s in self.state.items():
            for b, a in s.items():
                a[...] = bufs[k][b]
        self.lr = float(state["lr"])
        self.step_count = int(step)
        self.hyper = {k: (tuple(v) if isinstance(self.hyper[k], tuple) else v) for k, v in hyper.items()}


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, as ``torch.optim.SGD``.

    With weight decay λ, momentum μ and dampening τ::

        g ← g + λ θ
        b ← g                      (first step)
        b ← μ b + (1 − τ) g        (later steps)
        g ← g + μ b   if nesterov,  else  g ← b        (only if μ ≠ 0)
        θ ← θ − η g
    """

    name = "sgd"
    buffers = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        momentum = _number("momentum", momentum, lo=0.0)
        dampening = _number("dampening", dampening, lo=0.0, hi=1.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening = 0, "
                             f"got momentum={momentum}, dampening={dampening}")
        super().__init__(params, lr, momentum=momentum, nesterov=bool(nesterov),
                         weight_decay=_number("weight_decay", weight_decay, lo=0.0), dampening=dampening)

    def _update(self, p, g, state):
        h = self.hyper
        mu, wd = h["momentum"], h["weight_decay"]
        f = p.dtype.type
        _one_pass(sgd_update, sgd_update_numpy, (p, g, state["momentum_buffer"]),
                  wd != 0, f(wd), mu != 0, self.step_count == 1, f(mu), f(1.0 - h["dampening"]),
                  h["nesterov"], f(self.lr))


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad`` (no lr decay)::

        g ← g + λ θ
        s ← s + g²                 (s starts at 0)
        θ ← θ − η g / (√s + ε)
    """

    name = "adagrad"
    buffers = ("sum",)

    def __init__(self, params, lr, eps=1e-10, weight_decay=0.0):
        super().__init__(params, lr, eps=_number("eps", eps, lo=0.0),
                         weight_decay=_number("weight_decay", weight_decay, lo=0.0))

    def _update(self, p, g, state):
        h = self.hyper
        f = p.dtype.type
        _one_pass(adagrad_update, adagrad_update_numpy, (p, g, state["sum"]),
                  h["weight_decay"] != 0, f(h["weight_decay"]), f(h["eps"]), f(self.lr))


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``, with smoothing α::

        g ← g + λ θ
        v ← α v + (1 − α) g²                        (v starts at 0)
        m ← α m + (1 − α) g;  d ← √(v − m²) + ε      (centered)
        d ← √v + ε                                   (otherwise)
        b ← μ b + g / d;  θ ← θ − η b                (momentum μ > 0; b starts at 0)
        θ ← θ − η g / d                              (otherwise)
    """

    name = "rmsprop"
    buffers = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, params, lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0, centered=False):
        if not isinstance(centered, (bool, np.bool_)):
            raise ValueError(f"centered must be True or False, got {centered!r}")
        super().__init__(params, lr, alpha=_number("alpha", alpha, lo=0.0, hi=1.0),
                         eps=_number("eps", eps, lo=0.0), momentum=_number("momentum", momentum, lo=0.0),
                         weight_decay=_number("weight_decay", weight_decay, lo=0.0), centered=bool(centered))

    def _update(self, p, g, state):
        h = self.hyper
        a = h["alpha"]
        f = p.dtype.type
        # centered: m ← m + (1 − α)(g − m), torch's grad_avg.lerp_(g, 1 − α)
        _one_pass(rmsprop_update, rmsprop_update_numpy,
                  (p, g, state["square_avg"], state["grad_avg"], state["momentum_buffer"]),
                  h["weight_decay"] != 0, f(h["weight_decay"]), f(a), f(1.0 - a), h["centered"],
                  h["momentum"] > 0, f(h["momentum"]), f(h["eps"]), f(self.lr))


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (amsgrad off), with L2 weight decay λ added to the gradient::

        g ← g + λ θ
        m ← m + (1 − β₁)(g − m)          (= β₁ m + (1 − β₁) g; m, v start at 0)
        v ← β₂ v + (1 − β₂) g²
        θ ← θ − (η / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
    """

    name = "adam"
    buffers = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        betas = (_number("betas[0]", b1, lo=0.0, hi=1.0, hi_open=True),
                 _number("betas[1]", b2, lo=0.0, hi=1.0, hi_open=True))
        super().__init__(params, lr, betas=betas, eps=_number("eps", eps, lo=0.0),
                         weight_decay=_number("weight_decay", weight_decay, lo=0.0))

    def _update(self, p, g, state):
        h = self.hyper
        b1, b2 = h["betas"]
        wd = h["weight_decay"]
        t = self.step_count
        m, v = state["exp_avg"], state["exp_avg_sq"]
        f = p.dtype.type
        _one_pass(adam_update, adam_update_numpy, (p, g, m, v),
                  f(1.0 - self.lr * wd), wd != 0 and self.decoupled, f(wd), wd != 0 and not self.decoupled,
                  f(1.0 - b1), f(b2), f(1.0 - b2), f(math.sqrt(1.0 - b2 ** t)), f(h["eps"]),
                  f(self.lr / (1.0 - b1 ** t)))


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay (default λ = 0.01)::

        θ ← θ (1 − η λ)
        then the Adam update of :class:`Adam` with no λ term in g.
    """

    name = "adamw"
    decoupled = True

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay)


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def make_optimizer(name: str, params: dict, lr: float, **kw) -> Optimizer:
    """The optimiser called ``name`` (sgd, adagrad, rmsprop, adam, adamw) over ``params``.

    Keyword options are those of the class (``momentum``, ``betas``, ``eps``, ``weight_decay``,
    ...). ValueError for an unknown name, an option the optimiser does not take, or a bad value.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    cls = OPTIMIZERS[key]
    allowed = list(inspect.signature(cls.__init__).parameters)[3:]  # after self, params, lr
    bad = [k for k in kw if k not in allowed]
    if bad:
        raise ValueError(f"optimizer {key} does not take option {bad[0]!r}; its options are "
                         f"{', '.join(allowed)}")
    return cls(params, lr, **kw)


# ---------------------------------------------------------------------------------------------
# gradient clipping
# ---------------------------------------------------------------------------------------------

def _grad_arrays(grads):
    if not isinstance(grads, dict):
        raise ValueError(f"grads must be a dict of gradient arrays, got {type(grads).__name__}")
    for k, g in grads.items():
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
            raise ValueError(f"grads[{k!r}] must be a floating-point numpy array, "
                             f"got {g.dtype if isinstance(g, np.ndarray) else type(g).__name__}")
    return list(grads.values())


def clip_grad_norm(grads: dict, max_norm: float, *, error_if_nonfinite: bool = False) -> float:
    """Scale all gradients in place so that their global L2 norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the total norm ‖g‖ = √(Σ over every entry of every
    gradient of g²) is computed in float64 (NumPy's pairwise summation per array, then a sum over
    arrays in dict order, so it is deterministic), then every gradient is multiplied by
    c = max_norm / (‖g‖ + 10⁻⁶) if c < 1. Returns ‖g‖ before clipping, as a float.
    A NaN or infinite norm is returned unchanged and the gradients are left alone, or ValueError if
    ``error_if_nonfinite``: the caller decides whether to skip the step.
    """
    arrays = _grad_arrays(grads)
    max_norm = _number("max_norm", max_norm, lo=0.0, lo_open=True)
    sq = 0.0
    out = np.empty(1)
    for g in arrays:   # each array's sum in one pass, NumPy's bits (kernels.optim.sum_squares)
        if g.flags.c_contiguous and g.size and g.dtype in (np.float32, np.float64):
            sum_squares(out, g.reshape(-1))
            sq += float(out[0])
        else:
            sq += float(np.sum(np.square(g.astype(np.float64, copy=False))))
    total = math.sqrt(sq)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise ValueError(f"the total gradient norm is {total}; cannot clip")
        return total
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in arrays:
            g *= coef
    return total


def clip_grad_value(grads: dict, clip: float) -> None:
    """Clamp every gradient entry to [−clip, clip] in place, as ``torch.nn.utils.clip_grad_value_``."""
    arrays = _grad_arrays(grads)
    clip = _number("clip", clip, lo=0.0, lo_open=True)
    for g in arrays:
        np.clip(g, -clip, clip, out=g)


# ---------------------------------------------------------------------------------------------
# learning-rate schedules
# ---------------------------------------------------------------------------------------------

SCHEDULES = ("constant", "step", "cosine")


class Schedule:
    """``lr_at(step)`` for 0-based update steps: the learning rate to use for update ``step``.

    Linear warmup (any schedule) for the first ``warmup`` steps: η = base_lr · (step + 1) / warmup.
    After it, with s = step − warmup and S = total_steps − warmup:

    - ``constant``: η = base_lr;
    - ``step``: η = base_lr · γ^⌊s / step_size⌋ (as ``torch.optim.lr_scheduler.StepLR``);
    - ``cosine``: η = min_lr + (base_lr − min_lr) · (1 + cos(π · min(s, S) / S)) / 2, which falls
      from base_lr to min_lr at step ``total_steps`` and stays there (the closed form of
      ``CosineAnnealingLR``).
    """

    def __init__(self, name, base_lr, total_steps, warmup=0, step_size=None, gamma=0.1, min_lr=0.0):
        if name not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {name!r}")
        self.name = name
        self.base_lr = _number("base_lr", base_lr, lo=0.0)
        if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        self.total_steps = int(total_steps)
        if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or not 0 <= warmup:
            raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
        if name == "cosine" and warmup >= total_steps:
            raise ValueError(f"warmup must be less than total_steps ({total_steps}) for the cosine "
                             f"schedule, got {warmup}")
        self.warmup = int(warmup)
        if name == "step":
            if isinstance(step_size, bool) or not isinstance(step_size, (int, np.integer)) or step_size < 1:
                raise ValueError(f"step_size must be a positive integer for the step schedule, got {step_size!r}")
            step_size = int(step_size)
        self.step_size = step_size
        self.gamma = _number("gamma", gamma, lo=0.0, lo_open=True)
        self.min_lr = _number("min_lr", min_lr, lo=0.0, hi=self.base_lr)

    def __call__(self, step: int) -> float:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        s = step - self.warmup
        if self.name == "constant":
            return self.base_lr
        if self.name == "step":
            return self.base_lr * self.gamma ** (s // self.step_size)
        S = self.total_steps - self.warmup
        return self.min_lr + (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * min(s, S) / S)) / 2.0

    def __repr__(self):
        return (f"Schedule({self.name!r}, base_lr={self.base_lr}, total_steps={self.total_steps}, "
                f"warmup={self.warmup}, step_size={self.step_size}, gamma={self.gamma}, min_lr={self.min_lr})")


def make_schedule(name: str, base_lr: float, total_steps: int, warmup: int = 0, step_size=None,
                  gamma: float = 0.1, min_lr: float = 0.0) -> Schedule:
    """A :class:`Schedule`: a callable ``lr_at(step)`` (see there for the formulas)."""
    return Schedule(name, base_lr, total_steps, warmup=warmup, step_size=step_size, gamma=gamma,
                    min_lr=min_lr)
