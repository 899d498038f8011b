"""Finite-difference gradient checking: the proof that each hand-written gradient is right.

Method (as in CS231n and ``torch.autograd.gradcheck``):

1. Run the target forward on the inputs; draw a random upstream gradient g_k ~ N(0, 1) for every
   output k, so that the checked scalar is L = Σ_k ⟨out_k, g_k⟩ and every output counts.
2. Run backward(g) once: the analytic gradients ∂L/∂θ for every parameter and ∂L/∂x for every
   differentiable input.
3. For each checked entry θ_j, the central difference n_j = (L(θ_j + ε) − L(θ_j − ε)) / 2ε.
   A small tensor (≤ ``max_checks`` entries) is checked entry by entry; a large one at a seeded
   random sample of ``max_checks`` entries.
4. Report per tensor: the maximum absolute error |a − n|, the maximum relative error
   |a − n| / max(|a| + |n|, tiny), the entries checked, and pass/fail.
5. An entry that fails is examined once more for a *kink* (:func:`_at_kink`): a ReLU's corner
   (or any point where L is not differentiable) between θ − ε and θ + ε makes the central
   difference an average of two slopes, right for neither. If L is not smooth across
   [θ − ε, θ + ε] and the analytic value is L's derivative on one side, the entry is counted as
   skipped at a kink (shown in the report) and left out of the errors; a wrong gradient matches
   neither side, so it still fails.

Threshold (documented default): a tensor passes when its maximum relative error is ≤ ``rtol`` =
1e-5, with ε = 1e-5 and tiny = 1e-4. In float64, central differences carry a truncation error of
order ε²·|f'''| and a rounding error of order 1e-16·|L|/ε: about 1e-10 absolute for bptt's
targets, whose gradients are of order 1 (L contracts the outputs with N(0, 1) weights). In
practice correct kernels measure 1e-10 to 1e-7 relative. The floor ``tiny`` keeps that absolute
noise from reading as a failure on entries whose true gradient is nearly zero: an entry with
|a| + |n| below 1e-4 is judged by its absolute error (≤ 1e-9 passes). With tiny = 1e-6 a correct
GRU measured 1.03e-5 on an input entry of size 1e-5 (absolute error 1.9e-10). A wrong gradient (a missing term, a wrong sign, a transposed index) gives errors of
order 1e-2 or more, so the threshold sits far from both.

Everything runs in float64. Float32 is refused: its rounding error (≈1e-7 relative) divided by ε
swamps the difference being measured, which is why ``torch.autograd.gradcheck`` warns about it.

The interface a target implements (every bptt layer, loss and model does):

- ``parameters()`` / ``gradients()``: dicts of live arrays with the same keys;
- ``zero_grad()``;
- ``check_forward(**inputs)`` -> tuple of float output arrays;
- ``check_backward(*douts)`` -> dict {input name: ∂L/∂input} for the inputs to check. Inputs
  not in that dict (token ids, targets) are held fixed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

EPS = 1e-5
RTOL = 1e-5
TINY = 1e-4
MAX_CHECKS = 100
KINK_JUMP = 1e-3      # one-sided differences at ε this far apart (relative): a jump in L′, not ε·L″
ONE_SIDED_RTOL = 1e-4   # a one-sided difference at step h carries h·L″/2 of truncation error


@dataclass
class Row:
    name: str
    kind: str           # "param" or "input"
    shape: tuple
    checked: int
    max_abs: float
    max_rel: float
    passed: bool
    kinks: int = 0      # entries skipped at a kink of L (not counted in max_abs, max_rel)


@dataclass
class Entry:
    """One checked entry, every number of its central difference (for ``explain``)."""
    name: str
    index: tuple
    theta: float
    loss_plus: float     # L(θ + ε)
    loss_minus: float    # L(θ − ε)
    numeric: float       # (L(θ + ε) − L(θ − ε)) / 2ε
    analytic: float      # from backward
    rel: float           # |a − n| / max(|a| + |n|, tiny)
    kink: bool = False   # skipped: L is not smooth across [θ − ε, θ + ε] (see _at_kink)


@dataclass
class Report:
    rows: list = field(default_factory=list)
    rtol: float = RTOL
    eps: float = EPS
    entries: list = field(default_factory=list)   # Entry, when gradcheck(explain=n > 0)
    tiny: float = TINY

    def explain(self) -> str:
        """Each explained entry worked out by hand: θ ± ε, the two losses, the numeric and the
        analytic value and their relative error."""
        e_, out = self.eps, []
        for e in self.entries:
            idx = ", ".join(map(str, e.index))
            out += [f"{e.name}[{idx}]   θ = {e.theta:.12g}",
                    f"  L(θ + ε) = L({e.theta + e_:.12g}) = {e.loss_plus:.15g}",
                    f"  L(θ − ε) = L({e.theta - e_:.12g}) = {e.loss_minus:.15g}",
                    f"  numeric  = (L(θ + ε) − L(θ − ε)) / 2ε = {e.numeric:.12g}",
                    f"  analytic = {e.analytic:.12g}   (backward)",
                    f"  relative error |a − n| / max(|a| + |n|, {self.tiny:g}) = {e.rel:.2e}"]
            if e.kink:
                out.append("  skipped at a kink: L bends between θ − ε and θ + ε, and the analytic "
                           "value is its derivative on one side")
        return "\n".join(out)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    def failures(self):
        return [r for r in self.rows if not r.passed]

    @property
    def kinks(self) -> int:
        """Entries skipped at a kink of the loss, over all tensors."""
        return sum(r.kinks for r in self.rows)

    def table(self) -> str:
        head = ("tensor", "kind", "shape", "checked", "max abs err", "max rel err", "result")
        body = [(r.name, r.kind, "x".join(map(str, r.shape)) or "scalar", str(r.checked),
                 f"{r.max_abs:.2e}", f"{r.max_rel:.2e}", ("pass" if r.passed else "FAIL")
                 + (f", {r.kinks} at a kink" if r.kinks else "")) for r in self.rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
        line = lambda cells: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        out = [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
        n_fail = len(self.failures())
        out.append(f"{len(self.rows) - n_fail}/{len(self.rows)} tensors pass "
                   f"(threshold: max rel err <= {self.rtol:g}, eps = {self.eps:g}, float64)")
        if self.kinks:
            n = self.kinks
            out.append(f"{n} entr{'y' if n == 1 else 'ies'} skipped at a kink: the loss is not smooth "
                       f"between θ − ε and θ + ε (a ReLU's corner), so the central difference is no "
                       f"derivative there; the analytic value matched the derivative on one side")
        return "\n".join(out)

    def __str__(self):
        return self.table()


def _require_float64(what, name, a):
    if a.dtype != np.float64:
        raise ValueError(f"gradcheck needs float64, but {what} {name!r} is {a.dtype}: finite differences "
                         "in float32 are dominated by rounding error; build the layer with dtype=np.float64")


def _loss(target, inputs, gouts) -> float:
    outs = target.check_forward(**inputs)
    return math.fsum(float(np.dot(o.ravel(), g.ravel())) for o, g in zip(outs, gouts))


def _at_kink(loss_at, theta, a, eps, rtol, tiny) -> bool:
    """Whether an entry whose central difference failed sits at a kink of L: L is not smooth
    across [θ − ε, θ + ε], and the analytic value ``a`` is its derivative on one side.

    Not smooth: the one-sided differences at ε, (L(θ+ε) − L(θ))/ε and (L(θ) − L(θ−ε))/ε, differ
    by a jump (for a smooth L by ε·L″ only), or the central differences at ε and ε/10 disagree
    (for a smooth L by ε²·L‴ only). One side: at a smaller step h = ε/10, ε/100, ε/1000, the
    central difference (which no longer reaches a kink at least h away) agrees with a within
    ``rtol``, or a one-sided difference does within ``ONE_SIDED_RTOL``. ``loss_at(v)``: L with
    the entry set to v.
    """
    def rel(x, y):
        return abs(x - y) / max(abs(x) + abs(y), tiny)

    def central(h):
        return (loss_at(theta + h) - loss_at(theta - h)) / (2 * h)

    L0 = loss_at(theta)
    right, left = (loss_at(theta + eps) - L0) / eps, (L0 - loss_at(theta - eps)) / eps
    if rel(right, left) <= KINK_JUMP and rel(central(eps), central(eps / 10)) <= rtol:
        return False   # smooth at this scale: the failure is the gradient's
    for h in (eps / 10, eps / 100, eps / 1000):
        if rel(central(h), a) <= rtol:
            return True
        r, l = (loss_at(theta + h) - L0) / h, (L0 - loss_at(theta - h)) / h
        if min(rel(r, a), rel(l, a)) <= ONE_SIDED_RTOL:
            return True
    return False


def _check_tensor(name, kind, arr, analytic, target, inputs, gouts, rng, eps, rtol, tiny, max_checks,
                  explain=0, entries=None):
    flat = arr.reshape(-1)          # a view: perturbing it perturbs the live array
    an = analytic.reshape(-1)
    n = flat.size
    idx = np.arange(n) if n <= max_checks else np.sort(rng.choice(n, size=max_checks, replace=False))
    max_abs = max_rel = 0.0
    kinks = 0

    def loss_at(j, v, old):   # L with entry j set to v, then put back
        flat[j] = v
        try:
            return _loss(target, inputs, gouts)
        finally:
            flat[j] = old

    shown = set(idx[np.linspace(0, len(idx) - 1, min(explain, len(idx))).astype(int)]) if explain else ()
    for j in idx:
        old = flat[j]
        flat[j] = old + eps
        lp = _loss(target, inputs, gouts)
        flat[j] = old - eps
        lm = _loss(target, inputs, gouts)
        flat[j] = old
        num = (lp - lm) / (2 * eps)
        a = float(an[j])
        err = abs(a - num)
        rel = err / max(abs(a) + abs(num), tiny)
        kink = rel > rtol and _at_kink(lambda v: loss_at(j, v, old), float(old), a, eps, rtol, tiny)
        if kink:
            kinks += 1     # no central difference measures a derivative across a kink
        else:
            max_abs = max(max_abs, err)
            max_rel = max(max_rel, rel)
        if j in shown:
            entries.append(Entry(name, tuple(int(i) for i in np.unravel_index(j, arr.shape)), float(old),
                                 lp, lm, num, a, rel, kink))
    if not (math.isfinite(max_abs) and math.isfinite(max_rel)):
        max_rel = max_abs = float("inf")
    return Row(name, kind, tuple(arr.shape), len(idx), max_abs, max_rel, max_rel <= rtol, kinks)


def gradcheck(target, inputs: dict, *, seed: int = 0, eps: float = EPS, rtol: float = RTOL,
              tiny: float = TINY, max_checks: int = MAX_CHECKS, explain: int = 0) -> Report:
    """Check every parameter gradient and input gradient of ``target`` by central differences.

    ``inputs`` maps the names of ``check_forward``'s arguments to arrays; they are copied, so the
    caller's arrays are never modified. Returns a :class:`Report` (``report.passed``,
    ``print(report)``). With ``explain`` = n, n of the checked entries of every tensor keep all
    their numbers (``report.entries``, printed by ``report.explain()``).
    """
    for name, v in (("eps", eps), ("rtol", rtol), ("tiny", tiny)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    inputs = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
    for name, p in target.parameters().items():
        _require_float64("parameter", name, p)
    for name, v in inputs.items():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            _require_float64("input", name, v)
    rng = np.random.default_rng(seed)
    outs = target.check_forward(**inputs)
    gouts = [rng.standard_normal(np.shape(o)) for o in outs]
    target.zero_grad()
    target.check_forward(**inputs)
    dins = target.check_backward(*gouts)
    analytic = {k: g.copy() for k, g in target.gradients().items()}
    report = Report(rtol=rtol, eps=eps, tiny=tiny)
    for name, p in target.parameters().items():
        report.rows.append(_check_tensor(name, "param", p, analytic[name], target, inputs, gouts,
                                         rng, eps, rtol, tiny, max_checks, explain, report.entries))
    for name, d in dins.items():
        if name not in inputs:
            raise ValueError(f"check_backward returned a gradient for {name!r}, which is not an input")
        report.rows.append(_check_tensor(name, "input", inputs[name], np.asarray(d), target, inputs,
                                         gouts, rng, eps, rtol, tiny, max_checks, explain, report.entries))
    return report
