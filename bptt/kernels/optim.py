"""Optimiser updates, element by element, in one pass over a parameter and its buffers, and the
sum of squares of a gradient clip.

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

import numpy as np

from ..jit import inline, kernel, prange
from .losses import lane_sum


@inline
def l2_grad(g, n, pn, use_l2, wd):
    """g[n], plus λθ (θ = pn) if ``use_l2``: weight decay as an L2 term in the gradient."""
    gn = g[n]
    if use_l2:
        gn = gn + wd * pn
    return gn


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
        gn = l2_grad(g, n, pn, use_l2, wd)
        mn = m[n]
        mn = mn + c1 * (gn - mn)
        vn = v[n] * b2 + c2 * (gn * gn)
        m[n] = mn
        v[n] = vn
        p[n] = pn - s * (mn / (math.sqrt(vn) / r + eps))


@kernel
def sgd_update(p, g, buf, use_l2, wd, use_momentum, first, mu, c, nesterov, lr):
    """One SGD step of N elements (:class:`bptt.optim.SGD`): g ← g + λθ (``use_l2``); with
    ``use_momentum``, b ← g on the ``first`` step, else b ← bμ + c g (c = 1 − τ), then g ← g + μb
    (``nesterov``) or g ← b; θ ← θ − η g.

    p : (N,) θ, updated.  g : (N,) read only.  buf : (N,) the momentum buffer (read and written
    only with ``use_momentum``).  wd : λ.  mu : μ.  c : 1 − τ.  lr : η.
    """
    N = p.shape[0]
    for n in prange(N):
        pn = p[n]
        gn = l2_grad(g, n, pn, use_l2, wd)
        if use_momentum:
            if first:
                bn = gn
            else:
                bn = buf[n] * mu + c * gn
            buf[n] = bn
            gn = gn + mu * bn if nesterov else bn
        p[n] = pn - lr * gn


@kernel
def adagrad_update(p, g, s, use_l2, wd, eps, lr):
    """One Adagrad step of N elements (:class:`bptt.optim.Adagrad`): g ← g + λθ (``use_l2``);
    s ← s + g g; θ ← θ − η (g / (√s + ε)).

    p : (N,) θ, updated.  g : (N,) read only.  s : (N,) the sum of squares, updated.
    """
    N = p.shape[0]
    for n in prange(N):
        pn = p[n]
        gn = l2_grad(g, n, pn, use_l2, wd)
        sn = s[n] + gn * gn
        s[n] = sn
        p[n] = pn - lr * (gn / (math.sqrt(sn) + eps))


@kernel
def rmsprop_update(p, g, v, m, b, use_l2, wd, a, c, centered, use_momentum, mom, eps, lr):
    """One RMSprop step of N elements (:class:`bptt.optim.RMSprop`): g ← g + λθ (``use_l2``);
    v ← vα + c g g (c = 1 − α); d ← √(v − m m) + ε after m ← m + c (g − m) (``centered``), else
    d ← √v + ε; with ``use_momentum`` b ← b μ + g / d and θ ← θ − η b, else θ ← θ − η (g / d).

    p : (N,) θ, updated.  g : (N,) read only.  v, m, b : (N,) the buffers (m updated only when
    ``centered``, b only with ``use_momentum``).
    """
    N = p.shape[0]
    for n in prange(N):
        pn = p[n]
        gn = l2_grad(g, n, pn, use_l2, wd)
        vn = v[n] * a + c * (gn * gn)
        v[n] = vn
        if centered:
            mn = m[n]
            mn = mn + c * (gn - mn)
            m[n] = mn
            d = math.sqrt(vn - mn * mn) + eps
        else:
            d = math.sqrt(vn) + eps
        if use_momentum:
            bn = b[n] * mom + gn / d
            b[n] = bn
            p[n] = pn - lr * bn
        else:
            p[n] = pn - lr * (gn / d)


PW_BLOCK = 128   # NumPy's pairwise summation: runs of at most this many add in 8 lanes
DEPTH = 64       # pending halves of sum_squares' tree: its depth is about log2(N / PW_BLOCK)


@kernel(parallel=False)
def sum_squares(out, a):
    """out[0] = Σ_n a[n]² in float64, with exactly NumPy's pairwise summation of the squares
    (``np.sum(np.square(a.astype(np.float64)))`` on a contiguous array: a run of more than
    PW_BLOCK splits into halves at n/2 rounded down to a multiple of 8, each summed the same
    way, then added; shorter runs are :func:`bptt.kernels.losses.lane_sum`), so the same bits. A square of a
    float32 is exact in float64. The tree walked with a stack of pending halves, in one pass
    with no copy (NumPy's made a float64 copy and an array of squares first).

    out : (1,) float64.  a : (N,) float32 or float64.
    """
    st_i = np.empty(DEPTH, np.int64)     # a pending run: its start, length, and state
    st_n = np.empty(DEPTH, np.int64)     # (0: not begun, 1: its left half running,
    st_s = np.empty(DEPTH, np.int64)     #  2: its right half running, left in st_v)
    st_v = np.empty(DEPTH, np.float64)
    st_i[0], st_n[0], st_s[0] = 0, a.shape[0], 0
    sp = 1
    total = 0.0
    while sp > 0:
        k = sp - 1
        n = st_n[k]
        if st_s[k] == 0 and n > PW_BLOCK:   # a run to split: its left half first
            h = n // 2
            h -= h % 8
            st_s[k] = 1
            st_i[sp], st_n[sp], st_s[sp] = st_i[k], h, 0
            sp += 1
            continue
        val = lane_sum(a, st_i[k], n, True)   # a run short enough: its sum goes up the stack
        sp -= 1
        while True:
            if sp == 0:
                total = val
                break
            k = sp - 1
            h = st_n[k] // 2
            h -= h % 8
            if st_s[k] == 1:   # the left half is done: the right half next
                st_v[k] = val
                st_s[k] = 2
                st_i[sp], st_n[sp], st_s[sp] = st_i[k] + h, st_n[k] - h, 0
                sp += 1
                break
            val = st_v[k] + val   # both halves done: this run's sum goes up
            sp -= 1
    out[0] = total
