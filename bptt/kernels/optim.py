"""Optimiser updates, element by element, in one pass over a parameter and its buffers.

Shapes: N elements (a parameter, its gradient and its buffers, each flattened). Every scalar
comes in the parameter's dtype, already rounded to it, and every operation runs in that dtype in
the order :mod:`bptt.optim`'s update rules write it (NumPy ≥ 2 rounds a Python-float factor to
the array's dtype first, and rounds each operation): so the bits are those of the NumPy
expressions, in the reference twin, for any thread count and any chunking of the elements.

Adam (:class:`bptt.optim.Adam`, with ``decay`` for AdamW's decoupled weight decay and ``l2`` for
Adam's), with c₁ = 1 − β₁, c₂ = 1 − β₂, s = η / (1 − β₁ᵗ), r = √(1 − β₂ᵗ)::

    θ ← θ · (1 − ηλ)                 (decay)
    g ← g + λ θ                       (l2)
    m ← m + c₁ (g − m)
    v ← v β₂ + c₂ (g g)
    θ ← θ − s (m / (√v / r + ε))

One pass reads θ, g, m and v and writes θ, m and v once: the NumPy form made ten passes, each
with a temporary array, on one thread (the char-LM's 350 k parameters: 1.18 ms a step against
18 ms for its forward and backward; docs/performance.md, thirty-third session).
Reference twin: :mod:`bptt.reference.optim` (the NumPy expressions).
"""
import math

from ..jit import kernel, prange


@kernel
def adam_update(p, g, m, v, decay, use_decay, wd, use_l2, c1, b2, c2, r, eps, s):
    """One Adam (or AdamW) step of N elements.

    p : (N,) θ, updated.  g : (N,) its gradient (read only).  m, v : (N,) the moment buffers,
    updated.  decay : 1 − ηλ, applied if ``use_decay``.  wd : λ, added as λθ to g if ``use_l2``.
    c1, b2, c2 : 1 − β₁, β₂, 1 − β₂.  r : √(1 − β₂ᵗ).  eps : ε.  s : η / (1 − β₁ᵗ).
    """
    N = p.shape[0]
    for n in prange(N):
        pn = p[n]
        if use_decay:
            pn = pn * decay
        gn = g[n]
        if use_l2:
            gn = gn + wd * pn
        mn = m[n]
        mn = mn + c1 * (gn - mn)
        vn = v[n] * b2 + c2 * (gn * gn)
        m[n] = mn
        v[n] = vn
        p[n] = pn - s * (mn / (math.sqrt(vn) / r + eps))
