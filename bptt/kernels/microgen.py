"""Writes the register-blocked micro-kernels, one family per vector ISA, unrolled.

    python bptt/kernels/microgen.py      # rewrites micro_avx512.py, micro_avx2.py, micro_generic.py

(run as a file: it imports nothing from bptt, whose import needs the files it writes).

Each micro-kernel ``body_RxW`` computes one block of R rows × W columns of

    C[n, c] = fma(A[n, k], B[k, c], C[n, c])      for k = k0, k0+1, ..., k1-1 in order

with the R·W partial sums held in scalar variables from the first k to the last: C is read once
and written once per call, not once per k. LLVM's SLP vectoriser packs each row's W scalars into
SIMD registers. Numba has no vector type and no stack arrays, so scalar variables are the way to
keep a block of C in registers; writing hundreds of them by hand would invite typos, hence this
generator. ``tests/test_micro.py`` checks that the files are what this script writes.

Families. A block must fit the ISA's registers, or LLVM spills partial sums to the stack and
every spilled chain waits on a store and a reload at each k (on a Zen 3 a 4 × 64 float32 block,
32 ymm registers' worth, ran at about a third of the core's FMA peak: docs/performance.md):

=========  ======  ========  ===========  =====  ============================================
family     vector  block     single row   panel  registers per k
=========  ======  ========  ===========  =====  ============================================
avx512     512     12 × 32   4 × 1 × 32   32     24 zmm sums + 2 of B + 1 broadcast (of 32)
avx2       256     4 × 24    1 × 24       24     12 ymm sums + 3 of B + 1 broadcast (of 16)
generic    128     4 × 12    1 × 12       24     12 xmm sums + 3 of B + 1 broadcast (of 16)
=========  ======  ========  ===========  =====  ============================================

(avx512's 4 × 32 tail block takes the rows left over four at a time: ``R2``. Its last block of
12 takes 1 or 2 rows left below it, as one 13 × 32 or 14 × 32 block (26 or 28 sums + 2 of B, of
32 registers; 113 GFLOP/s on a Zen 4 core like 12 × 32, where a single row runs at about half
that): ``X``. A chunk of 25 rows, half of a batch of 50, runs 12 + 13 instead of 12 + 12 + 1,
and one-core step products of 25 and 50 rows ran 3 and 5 % faster (2 % for an untouched
24-row control; docs/performance.md, nineteenth session). A 15-row block spilled: 93 GFLOP/s.)

(The avx2 and generic families cannot take a fifth row into a block of 4: 5 × 24 needs 19 of
16 registers. Instead (``split``), where 1 or 2 rows would be left below the blocks of 4, the
last blocks of 4 and those rows run as blocks of 3 × W (9 chains, 13 registers): 25 rows as
4 · 4 + 3 · 3, 26 as 5 · 4 + 2 · 3 (``R2 = 3``, which also takes 3 rows left). A block of 3
runs at about 88 % of a block of 4's speed per row on a Zen 4 core, a single row at about
half; a one-core step product of 26 rows (K = 256, N = 1024) went 140.2 → 131.8 µs, 25 rows
131.3 → 129.3: docs/performance.md, twenty-sixth session.)

Panels. B is packed into panels of ``panel`` columns (:mod:`bptt.kernels.engine`). A panel is
one block wide, so the K × W sliver a kernel reads is contiguous: the hardware prefetcher
streams it, and it fills every set of L1. In panels of 96 columns the avx2 sliver's rows lay 384
bytes apart, in a third of L1's sets, and the same block ran slower (docs/performance.md).

The avx512 block was 4 × 64 in panels of 128 (written and measured on a Zen 4, whose 512-bit
FMAs run as two halves). On an Intel core with two full 512-bit FMA units (a Xeon of the
Sapphire Rapids kind) each k step has half the cycles to get its B, and the 64 KB sliver of a
4 × 64 block (K = 256) does not fit a 48 KB L1: one core's 4 × 64 bodies ran at 100-150 GFLOP/s
(of a 247 peak), 8 × 32 in panels of 32 (a 32 KB sliver, in L1, read by every row block of a
tile) at 205, and the large rows of ``bptt bench`` 10-15 % faster (docs/performance.md,
fourteenth session). 12 × 32 (24 sums: the shape of BLIS's Skylake-X kernel, 32 × 12 in its
column-major terms) has the same 32 KB sliver and fewer loads per fma (14 per 24 against 10 per
16): 210-213 GFLOP/s on that Xeon, and on a Zen 4 (sixteenth session) 112 of a 116 peak where
8 × 32 ran at 83-84. It waited for a way to run up to 11 rows left over: they now run in 4-row
blocks (``R2``), as many as fit, then one row at a time. The LSTM `char` step on the Zen 4 went
12.0 → 10.4 ms (docs/performance.md, "The Zen 4 again").

An FMA has a latency of 4 cycles and two issue per cycle, so at least 8 independent vector
chains must be in flight; the avx2 and generic blocks have 12, the shape of BLIS's Haswell
kernels (12 accumulators, B's vectors loaded once per k, A broadcast one row at a time).

Order of a k step. ``rows`` (the first avx512 family's): one column at a
time, every row's fma for it. ``bcast`` (every family now): B's W values first, then for each row
one broadcast of A and its W fmas. With 16 registers the order decides whether the block fits:
in ``rows`` order LLVM hoisted all four broadcasts and spilled a sum; in ``bcast`` order the same
block has no spill and runs at more than twice the speed (docs/performance.md,
``python bench/micro_kernels.py``).

Every family computes every output as the same fma chain over k in increasing order, so all of
them give the same bits, on any tiling and at any thread count.
"""
import os
from collections import namedtuple

Family = namedtuple("Family", "isa bits order R W W1 panel narrow R2 X tall split")

# ``tall``: (width, rows) of the blocks that run a tile's column tail (the columns past the last
# W-wide block) instead of blocks of R rows: at R = 4 the avx2 family's 4 × 8 body has 4 vector
# chains and ran at 54.7 GFLOP/s, its 4 × 16 at 78.6, against 111.7 for 4 × 24 (one Zen 4 core);
# 12 × 8 and 6 × 16 have 12 chains, as 4 × 24 (and 14 and 15 of 16 registers). Widths that are
# a multiple of 8 but not of 24 are common: the MLP's batch of 128 (5 · 24 + 8), 4H = 512, H = 256
# or I = 64 (2 · 24 + 16).
FAMILIES = {
    "avx512": Family("avx512", 512, "bcast", 12, 32, 32, 32, 16, 4, 2, (), False),
    "avx2": Family("avx2", 256, "bcast", 4, 24, 24, 24, 8, 3, 0, ((16, 6), (8, 12)), True),
    "generic": Family("generic", 128, "bcast", 4, 12, 12, 24, 4, 3, 0, (), True),
}


def _powers_below(W):
    """Widths W, then the powers of two below W: any width < W is a sum of at most one of each."""
    out = [W]
    p = 1
    while p * 2 < W:
        p *= 2
    while p >= 1:
        if p < W:
            out.append(p)
        p //= 2
    return tuple(out)


def sizes(f: Family):
    """(R, W) of every single-block kernel of family ``f``: R-row blocks (the main width and the
    tails), then single rows."""
    tail = tuple((f.R2, w) for w in _powers_below(f.W)) if f.R2 else ()
    extra = tuple((f.R + x, f.W) for x in range(1, f.X + 1))
    tall = tuple((rows, w) for w, rows in f.tall)
    return (tuple((f.R, w) for w in _powers_below(f.W)) + tail + extra + tall
            + tuple((1, w) for w in _powers_below(f.W1)))


def pairs(f: Family):
    """(R, W) of the pair kernels: a single row's two W1-wide blocks, ``d`` columns apart (when
    a panel holds two)."""
    return ((1, f.W1),) if 2 * f.W1 <= f.panel else ()


HEADER = '''"""Register-blocked micro-kernels for the {isa} family ({bits}-bit vectors): GENERATED by
``python bptt/kernels/microgen.py``; do not edit.

``body_RxW(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh)`` adds to an R × W block of C:

    C[r, w] = fma(A[r, k], B[k, w], C[r, w])      for k = k0, ..., k1-1 in order

i.e. C[r, w] += Σ_k A[r, k] · B[k, w], each output one fused multiply-add chain in increasing k,
exactly as :func:`bptt.kernels.engine.acc_scalar` computes it one element at a time; with
``fresh`` non-zero, from C = 0 (here by clearing the block first; the vector form compiled by
default starts its sums at 0 without reading C). The
arguments are pointers to the block's first element and strides in elements: C[r, w] is
pC[r·ldc + w], A[r, k] is pA[r·sa0 + k·sa1], B[k, w] is pB[k·ldb + w]. The partial sums live in
the scalar variables s<r>_<w> for the whole k loop; the k step is in ``{order}`` order (see
:mod:`bptt.kernels.microgen`).

``body_RxWx2(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, d)`` does the same for two R × W blocks,
at columns 0 and d (0 ≤ d ≤ W), in one loop over k. Where they overlap (d < W), the two blocks
compute the same outputs from the same C, A and B in the same order, so both store the same bits.

:mod:`bptt.kernels.microcall` compiles each body once per dtype, as a C function, and
:func:`tile` covers any block of C with them, itself compiled once per dtype and called by
:func:`bptt.kernels.engine.acc_tile`.
"""
from ..jit import fma
from .microcall import {imports}

ISA = {isa!r}
SIZES = {sizes!r}
PAIRS = {pairs!r}
PANEL = {panel}   # columns of a packed panel of B: a whole number of {W}-wide blocks
NARROW = {narrow}   # a weight gradient's last I mod NARROW columns run transposed (one vector)
R = {R}   # rows of the main block
R2 = {R2}   # rows of the tail block that takes R2 or more of the rows a tile has left (0: none)
X = {X}   # up to this many rows left below a block of R are taken by the last block of R, {W} wide (0: none)
SPLIT = {split}   # the last blocks of R and the 1 or 2 rows left below them run as blocks of R2 = R - 1
ROW_PANELS = {row_panels}   # a single row takes this many panels at once (body_1x{W1}x{row_panels}p), when > 1
STREAM = {stream!r}   # (R, W) of the main block's streaming body (body_RxWs: prefetches the next sliver), or None
'''


def _joined(indent: str, stmts, per_line: int = 8):
    """Statements joined with '; ', ``per_line`` to a line."""
    return [indent + "; ".join(stmts[i:i + per_line]) for i in range(0, len(stmts), per_line)]


def _k_step(R, W, order, sname, boff):
    """The body of one k step: the fmas of an R × W block of sums ``sname``, B at kb + boff."""
    lines = []
    if order == "rows":
        for w in range(W):
            lines.append(f"        b = pB[{boff}{w}]; "
                         + "; ".join(f"{sname}{r}_{w} = fma(a{r}, b, {sname}{r}_{w})" for r in range(R)))
    else:
        lines += _joined("        ", [f"b{w} = pB[{boff}{w}]" for w in range(W)])
        for r in range(R):
            lines += _joined("        ", [f"{sname}{r}_{w} = fma(a{r}, b{w}, {sname}{r}_{w})" for w in range(W)])
    return lines


def _fresh_lines(R, W, pair=False):
    """``if fresh:`` the block's R × W outputs (and, for a pair, the R × W at column d) set to 0
    first: the sums then start from 0 (a product that sets C rather than adds to it)."""
    return ["    if fresh:   # the sums start from 0",
            f"        for r in range({R}):",
            f"            for w in range({W}):",
            "                pC[r * ldc + w] = 0"] + (
           ["                pC[r * ldc + d + w] = 0"] if pair else [])


def kernel_source(R: int, W: int, order: str = "rows") -> str:
    lines = ["", "", f"def body_{R}x{W}(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh):",
             f'    """C[0:{R}, 0:{W}] += A[0:{R}, k0:k1] · B[k0:k1, 0:{W}], by pointers and strides (fresh: from 0)."""']
    lines.append("    " + "; ".join(f"c{r} = {r} * ldc" for r in range(R)))
    lines.append("    " + "; ".join(f"a{r}_ = {r} * sa0" for r in range(R)))
    lines += _fresh_lines(R, W)
    for r in range(R):
        lines += _joined("    ", [f"s{r}_{w} = pC[c{r} + {w}]" for w in range(W)])
    lines.append("    for k in range(k0, k1):")
    lines.append("        ka = k * sa1; kb = k * ldb")
    lines.append("        " + "; ".join(f"a{r} = pA[a{r}_ + ka]" for r in range(R)))
    lines += _k_step(R, W, order, "s", "kb + ")
    for r in range(R):
        lines += _joined("    ", [f"pC[c{r} + {w}] = s{r}_{w}" for w in range(W)])
    return "\n".join(lines) + "\n"


def row_panels(f: Family) -> int:
    """Panels a single row takes at once: in families whose panel is one block wide, a single row
    has only W/lanes vector chains per panel (3 for avx2: latency-bound, a quarter of the FMA
    throughput), so it runs four panels in one k loop (12 chains), and the two or three whole
    panels left at the end of a row in one loop too (bodies ``body_1xWx2p``, ``body_1xWx3p``)."""
    return 4 if f.panel == f.W1 else 1


def panels_source(W: int, NP: int) -> str:
    """``body_1xWxNPp``: one row of C, NP blocks of W columns side by side, against NP panels of B
    ``dB`` elements apart (block j: C[0, jW:(j+1)W] += A[0, k0:k1] · B_j[k0:k1, 0:W])."""
    lines = ["", "", f"def body_1x{W}x{NP}p(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, dB):",
             f'    """C[0, 0:{NP * W}] += A[0, k0:k1] · [B_0 | ... | B_{NP - 1}][k0:k1], B_j = pB[j·dB:] ({W} wide; fresh: from 0)."""']
    lines.append("    " + "; ".join(f"d{j} = {j} * dB" for j in range(NP)))
    lines += _fresh_lines(1, NP * W)
    for j in range(NP):
        lines += _joined("    ", [f"s{j}_{w} = pC[{j * W + w}]" for w in range(W)])
    lines.append("    for k in range(k0, k1):")
    lines.append("        a0 = pA[k * sa1]; kb = k * ldb")
    for j in range(NP):
        lines += _joined("        ", [f"b{w} = pB[d{j} + kb + {w}]" for w in range(W)])
        lines += _joined("        ", [f"s{j}_{w} = fma(a0, b{w}, s{j}_{w})" for w in range(W)])
    for j in range(NP):
        lines += _joined("    ", [f"pC[{j * W + w}] = s{j}_{w}" for w in range(W)])
    return "\n".join(lines) + "\n"


def pair_source(R: int, W: int, order: str = "rows") -> str:
    lines = ["", "", f"def body_{R}x{W}x2(pC, ldc, pA, sa0, sa1, pB, ldb, k0, k1, fresh, d):",
             f'    """C[0:{R}, 0:{W}] and C[0:{R}, d:d+{W}] += A[0:{R}, k0:k1] · B[k0:k1, same columns] (fresh: from 0)."""']
    lines.append("    " + "; ".join(f"c{r} = {r} * ldc" for r in range(R)))
    lines.append("    " + "; ".join(f"e{r} = {r} * ldc + d" for r in range(R)))
    lines.append("    " + "; ".join(f"a{r}_ = {r} * sa0" for r in range(R)))
    lines += _fresh_lines(R, W, pair=True)
    for r in range(R):
        lines += _joined("    ", [f"s{r}_{w} = pC[c{r} + {w}]" for w in range(W)])
        lines += _joined("    ", [f"t{r}_{w} = pC[e{r} + {w}]" for w in range(W)])
    lines.append("    for k in range(k0, k1):")
    lines.append("        ka = k * sa1; kb = k * ldb; kd = kb + d")
    lines.append("        " + "; ".join(f"a{r} = pA[a{r}_ + ka]" for r in range(R)))
    lines += _k_step(R, W, order, "s", "kb + ")
    lines += _k_step(R, W, order, "t", "kd + ")
    for r in range(R):
        lines += _joined("    ", [f"pC[c{r} + {w}] = s{r}_{w}" for w in range(W)])
        lines += _joined("    ", [f"pC[e{r} + {w}] = t{r}_{w}" for w in range(W)])
    return "\n".join(lines) + "\n"


def stream(f: Family):
    """(R, W) of the block whose streaming body the tile runs when B streams, or None: the
    ``bcast`` families whose panels are one block wide (avx2), whose tile runs a panel's sliver
    of B down every row block, so that each row block can fetch its share of the next sliver
    (the panel's next rows) while the current one is in L1."""
    return (f.R, f.W) if f.order == "bcast" and f.panel == f.W else None


def callers_source(f: Family) -> str:
    lines = ["", "", "# micro_RxW(pC, oC, ldc, pA, oA, sa0, sa1, pB, oB, ldb, k0, k1, fresh): body_RxW on the block at",
             "# offsets oC, oA, oB of the pointers, called by its symbol (bptt.kernels.microcall)"]
    for R, W in sizes(f):
        lines.append(f"micro_{R}x{W} = caller(ISA, {R}, {W})")
    for R, W in pairs(f):
        lines.append(f"micro_{R}x{W}x2 = caller(ISA, {R}, {W}, pair=True)")
    if stream(f):
        R, W = stream(f)
        lines += ["", "# the same with the next sliver's share prefetched as it goes (caller's stream)",
                  f"micro_{R}x{W}s = caller(ISA, {R}, {W}, stream=True)"]
    if row_panels(f) > 1:
        NP = row_panels(f)
        lines += ["", f"# row_panels(C, A, P, n, p, k0, k1, fresh): C[n, p·PANEL:(p+{NP})·PANEL] += A[n, k0:k1] · panels p..p+{NP - 1}",
                  "# (fresh: the sums from 0);",
                  "# row_panels_m: the same for m whole panels, the fewer left at the end of a row (engine.acc_panels)",
                  f"row_panels = panels_caller(ISA, {f.W1}, {NP})"]
        lines += [f"row_panels_{m} = panels_caller(ISA, {f.W1}, {m})" for m in range(2, NP)]
    return "\n".join(lines) + "\n"


def _call(R, W, d=None):
    """A call of body_RxW (or the pair body_RxWx2) on the block at row n, column c of the tile."""
    if d is None:
        return f"micro_{R}x{W}(pC, n * ldc + c, ldc, pA, n * sa0, sa0, sa1, pB, c, ldb, kb, ke, f)"
    return f"micro_{R}x{W}x2(pC, n * ldc + c, ldc, pA, n * sa0, sa0, sa1, pB, c, ldb, kb, ke, f, {d})"


def _tail_lines(indent, R, widths):
    """Column tails after the main blocks: one call each of the narrower widths that fit."""
    out = []
    for w in widths:
        if w == 1:
            out += [f"{indent}if c < c1:", f"{indent}    {_call(R, 1)}"]
        else:
            out += [f"{indent}if c + {w} <= c1:", f"{indent}    {_call(R, w)}", f"{indent}    c += {w}"]
    return out


def _single_rows(indent, f: Family, start="c0"):
    """The code for one single row n (B = 1, or the rows left below a block of R), from column
    ``start``."""
    W1 = f.W1
    L = [f"{indent}c = {start}"]
    if pairs(f):
        L += [f"{indent}while c + {2 * W1} <= c1:          # pairs: twice the vector chains in flight",
              f"{indent}    {_call(1, W1, W1)}",
              f"{indent}    c += {2 * W1}",
              f"{indent}if c + {W1} < c1:               # {W1 + 1} to {2 * W1 - 1} columns left: one overlapping pair",
              f"{indent}    {_call(1, W1, f'c1 - c - {W1}')}",
              f"{indent}    c = c1"]
        return L + _tail_lines(indent, 1, _powers_below(W1))
    else:
        L += [f"{indent}while c + {W1} <= c1:",
              f"{indent}    {_call(1, W1)}",
              f"{indent}    c += {W1}"]
    return L + _tail_lines(indent, 1, _powers_below(W1)[1:])


def tile_source(f: Family) -> str:
    """``tile``: the dispatch that covers a block of C with the family's kernels.

    ``rows`` families run each block of R rows across all the columns (A's R rows stay in L1,
    B streams from L2); ``bcast`` families run each W-wide column block down all the row blocks,
    so that the K × W sliver of B (24 KB for avx2 at KC = 256, 48 KB at 512: then partly from L2)
    is reused while the rows pass: with 16 registers the k step has no room to wait on B from L2."""
    R, W, W1 = f.R, f.W, f.W1
    wR = _powers_below(W)
    doc = ["", "",
           "def tile(pC, ldc, pA, sa0, sa1, pB, ldb, N, M, k0, k1, KC, fresh):",
           '    """C[n, c] += Σ_{k0 ≤ k < k1} A[n, k] · B[k, c]   for 0 ≤ n < N, 0 ≤ c < M, by pointers',
           "    and strides in elements as the bodies take them (C[n, c] is pC[n·ldc + c], A[n, k] is",
           "    pA[n·sa0 + k·sa1], B[k, c] is pB[k·ldb + c]), compiled once per dtype as a C function.",
           "",
           f"    Blocks of {R} rows × {W} columns cover the tile, then {', '.join(map(str, wR[1:]))} columns",
           (f"    the rest; a single row runs pairs of {W1}-wide blocks (overlapping for {W1 + 1} to {2 * W1 - 1}"
            "\n    columns left), then the same tails." if pairs(f) else
            f"    the rest; a single row runs blocks of {W1}, then the same tails."),
           *([f"    The tail's {' and '.join(f'{w} columns run in blocks of {r} rows' for w, r in f.tall)} (12",
              f"    vector chains), then of {R}."] if f.tall else []),
           *([f"    {f.R2} to {R - 1} rows left over first run one block of {f.R2} rows, with the same widths."] if f.R2 and f.R2 < R - 1 else []),
           *([f"    {f.R2} rows left over run as one block, with the same widths."] if f.R2 == R - 1 else []),
           *([f"    1 to {f.X} rows left below a block of {R} join it: one block of {R + 1} to {R + f.X} rows, {W} wide",
              "    (the columns past the last such block run them one row at a time)."] if f.X else []),
           *([f"    Where 1 or 2 rows would be left below the blocks of {R}, the last blocks of {R} and those rows",
              f"    run as blocks of {f.R2} instead (3 or 2 of them), if there are rows enough (9 or 6): none is",
              f"    left to the single-row bodies, which have a quarter of the vector chains."] if f.split else []),
           "    Every output is one fma chain over k in increasing order, in k-blocks of ``KC``; with",
           "    ``fresh``, from 0 (the first k-block's bodies start their sums at 0: C is only written).\"\"\"",
           "    n0 = 0; n1 = N; c0 = 0; c1 = M",
           "    if fresh and k1 <= k0:             # no terms: the sums are 0",
           "        for n in range(N):",
           "            for c in range(M):",
           "                pC[n * ldc + c] = 0",
           "    for kb in range(k0, k1, KC):",
           "        ke = min(k1, kb + KC)",
           "        f = fresh if kb == k0 else 0   # from 0 in the first k-block, then from C"]
    if f.order == "rows":
        L = doc + ["        n = n0",
                   "        while n < n1:",
                   f"            if n + {R} <= n1:",
                   "                c = c0",
                   f"                while c + {W} <= c1:",
                   f"                    {_call(R, W)}",
                   f"                    c += {W}"]
        L += _tail_lines("                ", R, wR[1:])
        L += [f"                n += {R}", "            else:"]
        L += _single_rows("                ", f)
        L += ["                n += 1"]
        return "\n".join(L) + "\n"
    if f.split:   # rows in blocks of R2 = R - 1 that leave a multiple of R above them, if they fit
        assert f.R2 == R - 1
        main = [f"        nR = n0 + (n1 - n0 - nS) // {R} * {R}     # rows in whole blocks of {R}"]
    else:
        main = [f"        nR = n0 + (n1 - n0) // {R} * {R}     # rows in whole blocks of {R}"]
    nB = "nR"
    if f.X:
        main += [f"        nX = n1 - nR if nR > n0 and n1 - nR <= {f.X} else 0   # rows the last block takes on",
                 f"        nB = nR - {R} if nX > 0 else nR    # the {W}-wide blocks of {R} end here"]
        nB = "nB"
    main += ["        c = c0",
             f"        while c + {W} <= c1:               # a column block down every row block"]
    extra = []
    for x in range(1, f.X + 1):   # the last block of R with the x rows left below it, one body
        extra += [f"            {'if' if x == 1 else 'elif'} nX == {x}:",
                  "                n = nB",
                  f"                {_call(R + x, W)}"]
    if stream(f) is None:
        L = doc + main + [f"            for n in range(n0, {nB}, {R}):",
                          f"                {_call(R, W)}"] + extra + [f"            c += {W}"]
    else:
        at = next(i for i, line in enumerate(doc) if line.startswith("    Every output"))
        doc = doc[:at] + [
            "",
            "    Where B streams (a whole-K product on panels, k1 - k0 > KC: a sweep's step product, W_hh",
            "    from memory at every step), each row block's body also fetches its share of the next",
            f"    sliver of B as it goes (body_{R}x{W}s; the next sliver follows this one in the panels, the",
            "    next panel's first after the last)."] + doc[at:]
        at = doc.index("    for kb in range(k0, k1, KC):")
        L = doc[:at] + [
            f"    stream = k1 - k0 > KC and ldb == {W}",
            f"    share = KC * ldb // max(1, (n1 - n0{' - nS' if f.split else ''}) // {R})    # elements of the next sliver per row block"] + doc[at:]
        L += main + [
            "            if stream:",
            "                step = share * 16 // (ke - kb)",
            f"                for n in range(n0, {nB}, {R}):",
            f"                    micro_{R}x{W}s(pC, n * ldc + c, ldc, pA, n * sa0, sa0, sa1, pB, c, ldb, kb, ke, f,",
            f"                               c + ke * ldb + (n - n0) // {R} * share, step)",
            "            else:",
            f"                for n in range(n0, {nB}, {R}):",
            f"                    {_call(R, W)}"] + extra + [
            f"            c += {W}"]
    if f.X:
        L += ["        cw = c"]
    tall = dict(f.tall)
    for w in wR[1:]:
        L += [f"        if c + {w} <= c1:" if w > 1 else "        if c < c1:"]
        if w in tall:   # the tail in taller blocks, then blocks of R, then single rows
            T = tall[w]
            L += ["            n = n0",
                  f"            while n + {T} <= nR:           # {T * w // (f.bits // 32)} vector chains",
                  f"                {_call(T, w)}",
                  f"                n += {T}",
                  f"            while n + {R} <= nR:",
                  f"                {_call(R, w)}",
                  f"                n += {R}",
                  "            while n < nR:",
                  f"                {_call(1, w)}",
                  "                n += 1"]
        else:
            L += [f"            for n in range(n0, nR, {R}):",
                  f"                {_call(R, w)}"]
        if w > 1:
            L += [f"            c += {w}"]
    if f.X:
        L += ["        for n in range(nR, nR + nX):       # the rows the last block took, past its columns"]
        L += _single_rows("            ", f, start="cw")
        L += ["        nR += nX"]
    if f.R2:
        R2 = f.R2
        L += [f"        while n1 - nR >= {R2}:                # {R2} of the rows left in one block ({R2 * W // (f.bits // 32)} vector chains)",
              "            n = nR",
              "            c = c0",
              f"            while c + {W} <= c1:",
              f"                {_call(R2, W)}",
              f"                c += {W}"]
        L += _tail_lines("            ", R2, wR[1:])
        L += [f"            nR += {R2}"]
    L += ["        for n in range(nR, n1):            # the rows left, one at a time"]
    L += _single_rows("            ", f)
    if f.split:
        at = L.index("    n0 = 0; n1 = N; c0 = 0; c1 = M") + 1   # before the stream's share, which reads it
        L[at:at] = [f"    nS = ({R} - (n1 - n0) % {R}) % {R} * {f.R2}   # the rows the blocks of {f.R2} take",
                    "    if nS > n1 - n0:",
                    "        nS = 0"]
    return "\n".join(L) + "\n"


def source(isa: str) -> str:
    f = FAMILIES[isa]
    return (HEADER.format(isa=f.isa, bits=f.bits, order=f.order, sizes=sizes(f), pairs=pairs(f),
                          panel=f.panel, W=f.W, narrow=f.narrow, R=f.R, R2=f.R2, X=f.X, split=f.split,
                          imports='caller, panels_caller' if row_panels(f) > 1 else 'caller',
                          stream=stream(f),
                          W1=f.W1, row_panels=row_panels(f))
            + "".join(kernel_source(R, W, f.order) for R, W in sizes(f))
            + "".join(pair_source(R, W, f.order) for R, W in pairs(f))
            + "".join(panels_source(f.W1, m) for m in range(2, row_panels(f) + 1))
            + callers_source(f) + tile_source(f))


def path(isa: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"micro_{isa}.py")


if __name__ == "__main__":
    for isa in FAMILIES:
        with open(path(isa), "w", encoding="utf-8") as fh:
            fh.write(source(isa))
        print("wrote", path(isa))
