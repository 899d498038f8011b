"""The one place that holds bptt's Numba settings.

Every kernel in :mod:`bptt.kernels` is compiled through :func:`kernel` (entry points called from
Python), :func:`jobs` (the body of a parallel loop, compiled once; see "job sets" below) or
:func:`inline` (scalar helpers called from other kernels); :func:`composite` makes a kernel out of
other kernels and job sets in Python; :func:`helper` and :func:`typed_helper` compile the array
helpers kernels share (the latter once per dtype, for arrays of any layout). Nothing else in the
package calls ``numba.njit`` directly.

Settings
--------
ISA
    The vector instruction set the kernels are compiled for, chosen once, at import:
    ``avx512``, ``avx2`` or ``generic`` (vectors of at most 128 bits: NEON, SSE, anything else).
    By default the widest the host CPU has (llvmlite reports its features);
    ``BPTT_ISA=avx512|avx2|generic`` overrides it, and Numba then compiles *everything* for that
    target (``numba.config.CPU_FEATURES`` without the wider extensions), so an AVX-512 machine can
    build, test and time the AVX2 and generic paths. The ISA picks the micro-kernel family
    (:mod:`bptt.kernels.engine`); every family computes each output as the same fma chain, so all
    give the same bits. Asking for an ISA the CPU lacks is a one-line ``ValueError``.
    ``BPTT_ISA=<isa>@host`` (``avx512@host``) takes that family's kernels (its blocks, panels and
    loop orders, its vectors of the family's width) but compiles them for the host's own
    instructions: LLVM splits each 512-bit vector into the host's. So a machine without AVX-512
    tests the avx512 family's code, bit for bit against its own (``tests/test_isa.py``), slowly:
    for testing, never for timing (``bptt bench`` refuses it).
    On an AVX-512 host the target also turns off LLVM's ``prefer-256-bit`` tuning, which LLVM
    sets for Intel's server cores (Skylake-SP to Emerald Rapids) and which stops its loop and SLP
    vectorisers at 256 bits: the elementwise loops (the cells' σ and tanh, the gate gradients,
    the softmax, the copies) then run on 512-bit vectors, as the micro-kernels (LLVM vector IR)
    always have. Each lane does the same operations, so the bits are the same. On a Xeon
    (Emerald Rapids), paired: the char-LM step took 0.975 of its time, LSTM `char` 0.973
    (docs/performance.md, thirty-fifth session). ``NUMBA_CPU_FEATURES``, if set, is left alone.
threads
    ``BPTT_THREADS`` in the environment, or the CLI's global ``--threads``, or
    :func:`set_threads`. ``1`` runs the *serial* build of every kernel (``prange`` is plain
    ``range``); more than one runs the ``parallel=True`` build on that many threads. The default is
    every core Numba sees. Setting the count starts no threads: Numba's thread pool is started,
    and sized, when the first parallel kernel runs. (Started at import, an OpenMP pool spins
    beside any other framework's in the same process and slows it about ninefold: see
    docs/performance.md, "Design measurements".)
fastmath
    Off: strict IEEE arithmetic, chosen after measuring. Fused multiply-adds are written out
    instead, with :func:`fma` (below), wherever a product is accumulated. With ``reassoc``
    (re-association, which lets LLVM vectorise a dot product) the serial and the ``prange`` builds of one kernel sum in
    different orders and disagree in the last bits for most shapes; with ``contract`` (fused
    multiply-add) the build loaded from the on-disk cache disagrees with a fresh compile of the
    same function for some shapes (cf. numba#10617: cached parallel code is optimised
    differently). Either would break bit-for-bit determinism across thread counts and across
    runs. Without them every correct compilation gives the same bits, so kernels get their speed
    from vectorising across independent outputs instead of inside reductions. ``nnan``/``ninf``
    would in any case stay off, so that NaN and infinity checks keep working.
error model
    NumPy's: a division by zero gives ±inf or NaN, as IEEE says, instead of Python's
    ZeroDivisionError. The check Python's model puts before every division kept loops with a
    division (σ, tanh) from being vectorised: 3.1 ns per σ instead of 0.4 in the serial build
    (the ``prange`` bodies already used NumPy's model).
fma
    ``fma(a, b, c)`` is a·b + c rounded once: LLVM's ``llvm.fma`` intrinsic, one ``vfmadd``
    instruction, scalar or vectorised. Unlike fastmath's ``contract``, which lets the optimiser
    decide where to fuse (and it decided differently in cached and fresh builds), an explicit
    ``fma`` is fused in every build, serial or parallel, vectorised or not, so it keeps results
    bitwise equal while doubling the arithmetic per instruction.
SLP vectorisation
    On (``numba.config.SLP_VECTORIZE``, off in Numba by default, unless ``NUMBA_SLP_VECTORIZE``
    is set in the environment). The register-blocked micro-kernels of
    :mod:`bptt.kernels.micro_avx2` (and the other families) keep their accumulators in scalar variables, which LLVM's SLP
    vectoriser packs into SIMD registers. It changes speed only: every accumulation is an
    ``fma`` chain in a fixed order, so the bits are the same with it on or off.
kernels
    ``BPTT_KERNELS=reference`` (the CLI's global ``--kernels reference``, or
    :func:`set_kernels`) makes every kernel call run its readable twin in :mod:`bptt.reference`
    instead (``bptt.kernels.<module>.<name>`` -> ``bptt.reference.<module>.<name>``, the same
    signature): plain Python and NumPy, no JIT, steppable in ``pdb``, slow. This is the one
    dispatch point: layers, models and commands call the kernels as always. The default is
    ``fast``. Only the ``dispatch`` of :func:`kernel` looks at it (``.serial``/``.parallel`` stay
    the compiled builds).
micro-kernels
    ``BPTT_MICRO=vector`` (the default) compiles the micro-kernel bodies from LLVM vector IR
    (:func:`bptt.kernels.microcall.vector_body`); ``BPTT_MICRO=scalar`` compiles the readable
    scalar bodies of the family files, which the SLP vectoriser packs: the same bits, about four
    times the compilation (6.5 s against 1.8 s for the avx2 float32 family).
job sets
    ``@jobs`` compiles ``body(job, njobs, *args)`` once, as a serial function, and runs its jobs
    from two small launchers, a ``range`` loop and a ``prange`` loop, that call the body by a
    symbol name (Numba's calling convention, arrays as Numba passes them): the call links none of
    the body's code, so each launcher compiles in well under a second, where a ``prange`` loop
    holding the body compiled it a second time, with every helper it calls (Numba makes each
    ``prange`` loop a function of its own). The recurrent sweeps, the packing of panels, the
    dense layer's products, the weight-gradient passes and the elementwise activations are job
    sets, inside composite kernels: the cold first training step of the three cells went from
    about 80 to about 21 CPU seconds, an MLP's from 20 to 10 (docs/performance.md). A job set's
    ``last`` preparation (a weight matrix packed into panels) runs inside the serial launcher, so
    a small layer's kernel is still one call from Python. The jobs must write disjoint outputs,
    so the serial and parallel runs give the same bits. A *pipeline* (``jobs(concurrent=True)``)
    is a job set whose two jobs hand work to each other as they run, through
    :func:`atomic_store` / :func:`atomic_load` / :func:`atomic_add` (the LSTM's small-batch
    passes beside its sweeps, :mod:`bptt.kernels.rnn`); it runs its jobs side by side or in
    order, whichever has been faster, with the same bits.
IR inliner
    Numba's inliner for ``inline="always"`` helpers copies each callee's blocks one at a time,
    and every block's copy copies the function's whole scope with it; bptt has it copy them in
    one piece (:func:`_fast_inline_copy`: the same LLVM IR, half the cold compile time).
    ``BPTT_NUMBA_INLINER=numba`` keeps Numba's own.
cache
    Compiled machine code is cached on disk beside the sources (``__pycache__``), so the second
    start of a process skips compilation. ``BPTT_CACHE=0`` turns it off. Cache entries are named
    with a hash of the kernel sources (:func:`_sources_hash`), so editing any kernel file
    recompiles every kernel that might inline it.

Determinism
-----------
Results are bitwise identical at any thread count because every ``prange`` runs over independent
outputs (rows, output units, batch entries): each output element is computed by exactly one
iteration, with a fixed inner summation order. No reduction is ever split across threads.
``NUMBA_DISABLE_JIT=1`` runs the very same code as plain Python, for debugging.
"""
from __future__ import annotations

import collections
import functools
import importlib
import os
import statistics
import threading
import time
import types

import numba
import numpy as np
from numba import prange  # re-exported: kernels import prange from here
from numba.core import types as _types
from numba.extending import intrinsic as _intrinsic

__all__ = ["kernel", "inline", "helper", "typed_helper", "external", "fma", "float32_from_bits", "prange",
           "atomic_load", "atomic_store", "atomic_add", "spin_pause", "yield_cpu",
           "serial_when", "SERIAL_WORK", "set_threads", "get_threads", "max_threads", "FASTMATH",
           "CACHE", "ISA", "ISAS", "host_isa", "vector_floats", "isa_info", "pool_started",
           "KERNELS", "set_kernels", "get_kernels", "reference_twin", "jobs", "composite", "compiled_jobs", "side_by_side",
           "MICRO", "renamed"]

FASTMATH = False  # see the module docstring: strict IEEE keeps every build bitwise equal
ERROR_MODEL = "numpy"  # x / 0 is inf or NaN (IEEE), not a ZeroDivisionError check in every loop
CACHE = os.environ.get("BPTT_CACHE", "1") not in ("0", "false", "no", "")
MICRO = os.environ.get("BPTT_MICRO", "vector").strip().lower() or "vector"   # see the docstring
if MICRO not in ("vector", "scalar"):
    raise ValueError(f"BPTT_MICRO must be vector or scalar, got {MICRO!r}")
if "NUMBA_SLP_VECTORIZE" not in os.environ:
    numba.config.SLP_VECTORIZE = 1   # see the module docstring; read at each compilation


# -- the vector ISA -----------------------------------------------------------------------------

ISAS = ("avx512", "avx2", "generic")
_VECTOR_BITS = {"avx512": 512, "avx2": 256, "generic": 128}


def _host_features() -> dict:
    try:
        import llvmlite.binding as ll
        return {k: bool(v) for k, v in ll.get_host_cpu_features().items()}
    except Exception:  # pragma: no cover - llvmlite always ships with numba; non-LLVM hosts
        return {}


def host_isa(features=None) -> str:
    """The widest ISA family the host CPU (or the llvmlite ``features`` given) can run."""
    f = _host_features() if features is None else features
    if all(f.get(k) for k in ("avx512f", "avx512bw", "avx512dq", "avx512vl", "fma")):
        return "avx512"
    if f.get("avx2") and f.get("fma"):
        return "avx2"
    return "generic"


def _target_features(isa: str, features: dict) -> str:
    """The LLVM feature string that compiles for ``isa`` on this host: the host's own features,
    for avx512 without the 256-bit preference, for avx2 with every AVX-512 extension off, and for
    generic also AVX2 off and 128-bit vectors preferred (x86: AVX's 128-bit encodings, FMA kept;
    elsewhere the host's own target)."""
    on = dict(features)
    if isa in ("avx2", "generic"):
        for k in on:
            if k.startswith("avx512") or k.startswith("avx10") or k.startswith("amx"):
                on[k] = False
    if isa == "avx512":
        on["prefer-256-bit"] = False    # see the module docstring (ISA)
    if isa == "generic" and "avx2" in on:
        on["avx2"] = False
        on["prefer-128-bit"] = True
        on["prefer-256-bit"] = False
    return ",".join(("+" if v else "-") + k for k, v in sorted(on.items()))


FAMILY_ONLY = "BPTT_ISA, the family only (this CPU's own instructions)"   # ISA_SOURCE of <isa>@host


def _choose_isa():
    """(ISA, where it came from): BPTT_ISA if set (checked against the host), else the host's."""
    host = host_isa()
    want = os.environ.get("BPTT_ISA", "").strip().lower()
    if not want or want == "native":
        _host_target(host)
        return host, "host"
    if want.endswith("@host"):   # the family's code on the host's target: any family runs
        family = want[:-len("@host")]
        if family not in ISAS:
            raise ValueError(f"BPTT_ISA={want}: the family must be one of {', '.join(ISAS)}, got {family!r}")
        _host_target(host)
        return family, FAMILY_ONLY
    if want not in ISAS:
        raise ValueError(f"BPTT_ISA must be one of {', '.join(ISAS)}, native, or a family@host "
                         f"(avx512@host), got {want!r}")
    if ISAS.index(want) < ISAS.index(host):
        raise ValueError(f"BPTT_ISA={want}: this CPU cannot run it (its widest is {host}); "
                         f"use {', '.join(ISAS[ISAS.index(host):])}")
    if want == host:
        _host_target(host)
    else:
        if _codegen_started():
            raise ValueError(f"BPTT_ISA={want}: Numba has already compiled code for this CPU in this "
                             "process; set BPTT_ISA before anything is compiled (before importing bptt)")
        numba.config.CPU_FEATURES = _target_features(want, _host_features())
    return want, "BPTT_ISA"


def _host_target(host: str):
    """Compile for the host's own instructions; on an AVX-512 host without LLVM's 256-bit
    preference (the module docstring, ISA). Left as it is if ``NUMBA_CPU_FEATURES`` is set, or if
    Numba's code generator already exists (its target is fixed then: the same bits either way)."""
    if host == "avx512" and numba.config.CPU_FEATURES is None and not _codegen_started():
        numba.config.CPU_FEATURES = _target_features("avx512", _host_features())


def _codegen_started() -> bool:
    """Whether Numba's CPU code generator exists yet (its target is fixed when it is made)."""
    try:
        from numba.core.registry import cpu_target
        return "_toplevel_target_context" in vars(cpu_target)   # a cached_property, once made
    except Exception:  # pragma: no cover
        return False


ISA, ISA_SOURCE = _choose_isa()


def vector_floats(isa: str = None) -> int:
    """float32 lanes of one vector register of ``isa`` (the current ISA by default)."""
    return _VECTOR_BITS[isa or ISA] // 32


def isa_info() -> dict:
    """What ``bptt bench`` and ``bptt --version`` print: the ISA, where it came from, the host's."""
    import llvmlite.binding as ll
    return {"isa": ISA, "source": ISA_SOURCE, "host_isa": host_isa(), "cpu_name": ll.get_host_cpu_name(),
            "vector_bits": _VECTOR_BITS[ISA]}


if numba.config.DISABLE_JIT:   # plain Python stand-ins, for debugging
    def fma(a, b, c):
        """a·b + c (plain Python under NUMBA_DISABLE_JIT=1: two roundings, for debugging only)."""
        return a * b + c

    def float32_from_bits(i):
        """The float32 whose IEEE bit pattern is the int32 ``i``."""
        import numpy as np
        return np.array(i, np.int32).view(np.float32)[()]
else:
    @_intrinsic
    def fma(typingctx, a, b, c):
        """a·b + c with a single rounding (``llvm.fma``), for float32 or float64 operands of one type."""
        if not (isinstance(a, _types.Float) and a == b == c):
            return None

        def codegen(context, builder, signature, args):
            return builder.fma(*args)
        return a(a, b, c), codegen

    @_intrinsic
    def float32_from_bits(typingctx, i):
        """The float32 whose IEEE bit pattern is the int32 ``i`` (a bitcast, vectorisable)."""
        if i != _types.int32:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(_types.float32))
        return _types.float32(_types.int32), codegen


# -- hand-offs between the two jobs of a pipeline (bptt.kernels.rnn's small-batch passes) ---------
#
# A pipeline is a job set of two jobs that run at the same time, one consuming what the other
# produces as it goes (the backward sweep's gate gradients, step by step). The producer publishes
# how far it has got with ``atomic_store`` (a release store: everything it wrote before is visible
# to whoever reads the count with ``atomic_load``, an acquire load), and the consumer waits for the
# count with ``spin_wait``. Nothing is summed by both jobs, so the bits do not depend on the timing.

if numba.config.DISABLE_JIT:
    def atomic_load(a, i):
        """a[i] (plain Python under NUMBA_DISABLE_JIT=1, where jobs run one after the other)."""
        return a[i]

    def atomic_store(a, i, v):
        """a[i] = v."""
        a[i] = v

    def atomic_add(a, i, v):
        """a[i] += v, returning the old a[i]."""
        old = a[i]
        a[i] = old + v
        return old

    def spin_pause():
        """Nothing (plain Python)."""

    def yield_cpu():
        """Nothing (plain Python)."""
else:
    def _int64_vector(a):
        return isinstance(a, _types.Array) and a.ndim == 1 and a.dtype == _types.int64

    def _element(context, builder, aty, a, ity, i):
        from numba.core import cgutils
        ary = context.make_array(aty)(context, builder, a)
        idx = context.cast(builder, i, ity, _types.intp)
        return cgutils.get_item_pointer(context, builder, aty, ary, [idx])

    @_intrinsic
    def atomic_load(typingctx, a, i):
        """a[i] of a 1-D int64 array, an acquire load: what the job that stored it (with
        :func:`atomic_store`) wrote before the store is visible after it. No bounds check."""
        if not (_int64_vector(a) and isinstance(i, _types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            ptr = _element(context, builder, signature.args[0], args[0], signature.args[1], args[1])
            return builder.load_atomic(ptr, "acquire", 8)
        return _types.int64(a, i), codegen

    @_intrinsic
    def atomic_store(typingctx, a, i, v):
        """a[i] = v for a 1-D int64 array, a release store (see :func:`atomic_load`)."""
        if not (_int64_vector(a) and isinstance(i, _types.Integer) and isinstance(v, _types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            ptr = _element(context, builder, signature.args[0], args[0], signature.args[1], args[1])
            val = context.cast(builder, args[2], signature.args[2], _types.int64)
            builder.store_atomic(val, ptr, "release", 8)
            return context.get_dummy_value()
        return _types.void(a, i, v), codegen

    @_intrinsic
    def atomic_add(typingctx, a, i, v):
        """a[i] += v for a 1-D int64 array, atomically, returning the old a[i]: of several jobs
        adding 1 to the same 0, exactly one gets 0 (a claim on a piece of work)."""
        if not (_int64_vector(a) and isinstance(i, _types.Integer) and isinstance(v, _types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            ptr = _element(context, builder, signature.args[0], args[0], signature.args[1], args[1])
            val = context.cast(builder, args[2], signature.args[2], _types.int64)
            return builder.atomic_rmw("add", ptr, val, "seq_cst")
        return _types.int64(a, i, v), codegen

    @_intrinsic
    def spin_pause(typingctx):
        """The CPU's spin-wait hint (x86's ``pause``, through its LLVM intrinsic; nothing on other
        CPUs), for a loop that waits on :func:`atomic_load`."""
        import platform
        x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")

        def codegen(context, builder, signature, args):
            if x86:
                from llvmlite import ir
                from numba.core import cgutils
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                    "llvm.x86.sse2.pause")
                builder.call(fn, [])
            return context.get_dummy_value()
        return _types.void(), codegen


    def _has_sched_yield() -> bool:
        """Register libc's ``sched_yield`` for the JIT as ``bptt_sched_yield``; False where there
        is none (not a POSIX system)."""
        import ctypes
        import ctypes.util
        import llvmlite.binding as ll
        if ll.address_of_symbol("bptt_sched_yield"):
            return True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"))
            ll.add_symbol("bptt_sched_yield", ctypes.cast(libc.sched_yield, ctypes.c_void_p).value)
        except (OSError, AttributeError, TypeError):
            return False
        return True

    # registered at import, before any cached kernel that calls it is loaded
    _SCHED_YIELD = _has_sched_yield()

    @_intrinsic
    def yield_cpu(typingctx):
        """Give this thread's core to another thread (POSIX ``sched_yield``; nothing where the
        process has no such symbol): for a wait that has spun a while, so that on an
        oversubscribed machine the thread being waited for gets to run."""
        def codegen(context, builder, signature, args):
            if _SCHED_YIELD:
                from llvmlite import ir
                from numba.core import cgutils
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                    "bptt_sched_yield")
                builder.call(fn, [])
            return context.get_dummy_value()
        return _types.void(), codegen


def max_threads() -> int:
    """The most threads Numba can use in this process (``NUMBA_NUM_THREADS``, by default all cores)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def _parse_threads(value) -> int:
    try:
        n = int(value)
        if isinstance(value, bool) or (isinstance(value, float) and n != value):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"threads must be a whole number between 1 and {max_threads()}, got {value!r}") from None
    if not 1 <= n <= max_threads():
        raise ValueError(f"threads must be between 1 and {max_threads()} (the cores Numba sees), got {n}")
    return n


_threads = max_threads()
_pool_threads = 0   # what Numba's pool was last set to (0: not yet, and the pool may not exist)


def set_threads(n) -> int:
    """Use ``n`` threads from now on; 1 selects the serial build of every kernel. Starts nothing:
    the pool is sized when the next parallel kernel runs (:func:`_size_pool`)."""
    global _threads
    n = _parse_threads(n)
    _threads = n
    return n


def _size_pool() -> None:
    """Give Numba's pool ``_threads`` threads, starting it if need be: called before a parallel
    build runs with a count the pool does not have yet."""
    global _pool_threads
    numba.set_num_threads(_threads)
    _pool_threads = _threads
    _POOL_SIZE[0] = _threads


def pool_started() -> bool:
    """Whether Numba's threading layer (its OpenMP, TBB or workqueue pool) has been started."""
    from numba.np.ufunc import parallel as _p
    return bool(getattr(_p, "_is_initialized", False))


def get_threads() -> int:
    """The number of threads kernels currently run on (1 = serial build)."""
    return _threads


def running_threads() -> int:
    """The threads a job set called now runs its jobs on: :func:`get_threads` where its parallel
    build runs (:func:`side_by_side`), else 1 (one thread, a layer's ``serial_when``, or a
    composite's ``.serial``). A sweep cuts its batch into this many chunks
    (``bptt.kernels.engine.sweep_chunks``)."""
    return _threads if side_by_side() else 1


def _init_from_env() -> None:
    kernels = os.environ.get("BPTT_KERNELS")
    if kernels:
        try:
            set_kernels(kernels)
        except ValueError as e:
            raise ValueError(f"BPTT_KERNELS: {e}") from None
    env = os.environ.get("BPTT_THREADS")
    if env:
        try:
            set_threads(env)
        except ValueError as e:
            raise ValueError(f"BPTT_THREADS: {e}") from None


def _lock_numba_cache() -> None:
    """Make Numba's on-disk cache safe for processes that fill one directory at once.

    Numba saves an entry by reading the function's index, picking the first free data file name,
    writing the index, then the data. Two processes saving different signatures of one function
    at once (``pytest -n 2``, a sweep's trials, a cache shared by a cluster's nodes) both read the
    same index and both pick ``1.nbc``: the index ends up naming one signature and the file
    holding the other's machine code. Found when a float32 panel product loaded from such a cache
    called the float64 micro-kernels, whose symbols did not exist yet: the process aborted
    (``LLVM ERROR: Symbol not found``). Here each save holds an exclusive lock on a file beside the
    index (so it reads the index others have just written) and each load a shared one. Where
    ``fcntl`` is missing (Windows) or the lock file cannot be opened, Numba's own behaviour."""
    try:
        import fcntl
        from numba.core import caching
    except ImportError:
        return
    cls = caching.IndexDataCacheFile
    if getattr(cls, "_bptt_locked", False):
        return

    def locked(method, mode):
        @functools.wraps(method)
        def run(self, *args):
            try:
                lock = open(self._index_path + ".lock", "a")
            except OSError:
                return method(self, *args)
            with lock:
                fcntl.flock(lock, mode)
                return method(self, *args)   # the lock goes with the file's closing
        return run

    cls.save = locked(cls.save, fcntl.LOCK_EX)
    cls.load = locked(cls.load, fcntl.LOCK_SH)
    cls._bptt_locked = True


_lock_numba_cache()

# Numba's IR inliner (``inline="always"``, every :func:`inline` helper) copies a callee's IR
# before it splices it in: in InlineWorker.inline_ir, ``copy_ir`` deep-copies the blocks one at a
# time, each with a fresh memo. Every block refers to the function's one scope, which holds every
# variable, so each block's copy copies the whole scope again: b blocks and v variables cost
# b·v copies, twice per call site. With helpers inlined into helpers (a dense layer's weight-gradient
# job: the packing product, its block products, their tiles) one kernel's compile copied 3.6 million
# variables, and the copies took half of a cold compile. _INLINER_COPY is that loop as Numba
# 0.59-0.68 write it; _fast_inline_copy puts in its place one deep copy of the dict of blocks
# (one memo: the scope copied once, shared by the copied blocks as the original blocks share
# theirs). Compared over the 90 functions the ISA probe (tests/isa_probe.py) compiles: the same
# LLVM IR, apart from the order of a few reference-count increments in 10 job bodies, so the
# same arithmetic and the same bits; the probe's first run took 60 s instead of 98 (Zen 4,
# one thread, docs/performance.md, thirty-seventh session).
_INLINER_COPY = ("        kernel_copy.blocks = {}\n"
                 "        for block_label, block in the_ir.blocks.items():\n"
                 "            new_block = copy.deepcopy(the_ir.blocks[block_label])\n"
                 "            kernel_copy.blocks[block_label] = new_block\n")


def _fast_inline_copy() -> bool:
    """Replace Numba's ``InlineWorker.inline_ir`` by the same source with its block-by-block copy
    (``_INLINER_COPY``) as one deep copy (see above); True if it is in place. A Numba whose
    source differs (or cannot be read) keeps its own inliner: slower to compile, the same code.
    ``BPTT_NUMBA_INLINER=numba`` keeps Numba's own (to compare the two)."""
    import inspect
    import textwrap
    try:
        from numba.core import inline_closurecall as icc
    except ImportError:
        return False
    worker = icc.InlineWorker
    if getattr(worker, "_bptt_fast_copy", False):
        return True
    if os.environ.get("BPTT_NUMBA_INLINER", "").strip().lower() == "numba":
        return False
    try:
        source = textwrap.dedent(inspect.getsource(worker.inline_ir))
    except (OSError, TypeError):
        return False
    if source.count(_INLINER_COPY) != 1 or not source.startswith("def inline_ir("):
        return False
    new = source.replace(_INLINER_COPY, "        kernel_copy.blocks = copy.deepcopy(the_ir.blocks)\n")
    space = {}
    exec(compile(new, icc.__file__, "exec"), vars(icc), space)   # the module's globals, as before
    space["inline_ir"].__qualname__ = worker.inline_ir.__qualname__
    worker.inline_ir = space["inline_ir"]
    worker._bptt_fast_copy = True
    return True


FAST_INLINE_COPY = _fast_inline_copy()


def renamed(fn, suffix: str, **new_globals):
    """A copy of ``fn`` under another qualname (``fn``'s + ``suffix``), so its on-disk cache file
    is its own, with ``new_globals`` replacing some of its globals.

    Numba's cache index does not key on compile flags, so the serial and the parallel build of
    one function must not share a cache file; and one template (a launcher, a micro-kernel
    wrapper) compiled with different globals must not either.
    """
    g = fn.__globals__ if not new_globals else {**fn.__globals__, **new_globals}
    f = types.FunctionType(fn.__code__, g, fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    f.__qualname__ = fn.__qualname__ + suffix
    f.__module__ = fn.__module__
    f.__doc__ = fn.__doc__
    f.__kwdefaults__ = fn.__kwdefaults__
    return f


def cache_bytes(level: int, default: int) -> int:
    """The size of a core's level-``level`` data (or unified) cache in bytes, as Linux reports it
    for CPU 0 (/sys/devices/system/cpu/cpu0/cache), or ``default`` where it cannot be read. The
    size of a piece of work that should stay in a cache level is then a share of that level on
    the host (Zen 3: L2 512 KB; Zen 4: 1 MB; recent Intel cores: 1.25-2 MB), not of the machine
    it was measured on. Only speed depends on it, never the bits."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for name in sorted(os.listdir(base)):
            d = os.path.join(base, name)
            with open(os.path.join(d, "level")) as f:
                lv = int(f.read())
            with open(os.path.join(d, "type")) as f:
                kind = f.read().strip()
            if lv == level and kind in ("Data", "Unified"):
                with open(os.path.join(d, "size")) as f:
                    text = f.read().strip().upper()
                mult = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
                return int(text.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return default


L2_BYTES = cache_bytes(2, 1 << 19)    # a core's L2 (512 KB where unknown)
L3_BYTES = cache_bytes(3, 1 << 25)    # the L3 a core shares (32 MB where unknown)


def _sources_hash() -> str:
    """A short hash of this module and every kernel source file, and of the host's values that
    the kernels hold as constants.

    Numba's cache checks only the timestamp of the file that defines a function, not of the
    helpers compiled into it: after an edit to :mod:`bptt.kernels.dense`, the cached RNN kernels
    would still hold the old ``acc_panels``. Every kernel's cache name carries this hash, so an edit
    to any kernel source compiles everything afresh (old cache files are left unused).

    Nor does its index key on module globals. The kernels hold the ISA family, the cores Numba
    may use (``engine.CHUNKS``: how a large product is cut into jobs) and the cache sizes as
    constants, and Python code sizes the jobs with the same values: a cache filled with
    ``NUMBA_NUM_THREADS=2`` and loaded with 1 gave kernels that cut a sweep into two chunks
    where the launcher ran one (or the reverse), rows past the batch, and a corrupted heap (a
    sweep's jobs now take their count from the launch: ``engine.chunk_rows``). So these are hashed too: a
    cache shared by processes or machines that differ in them keeps one set of files for each.
    """
    import hashlib
    here = os.path.dirname(os.path.abspath(__file__))
    kdir = os.path.join(here, "kernels")
    h = hashlib.sha1(f"{ISA} {max_threads()} {L2_BYTES} {L3_BYTES}".encode())
    try:
        for path in [os.path.join(here, "jit.py")] + sorted(
                os.path.join(kdir, f) for f in os.listdir(kdir) if f.endswith(".py")):
            with open(path, "rb") as f:
                h.update(f.read())
    except OSError:
        return "0"
    return h.hexdigest()[:10]


_HASH = _sources_hash()


_first_use_hooks = []     # f(dtype name), run before a kernel first runs on arrays of that float dtype
_prepared = set()         # the float dtypes (np.dtype objects) the hooks have run for
_all_prepared = False     # both float32 and float64: no more checks


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def on_first_use(hook) -> None:
    """Run ``hook(dtype_name)`` before any kernel first runs on arrays of a float dtype (the
    engine compiles its micro-kernels for that dtype then, not at import)."""
    _first_use_hooks.append(hook)
    for name in sorted(dt.name for dt in _prepared):
        hook(name)


def _prepare(args) -> None:
    """Run the first-use hooks for the float dtypes among ``args`` not seen yet. Before the first
    dtype, the engine is imported, so that its hooks are registered first: a hook registered
    after a dtype was prepared runs at once, and the engine's run while its module is still being
    executed (a kernel of a module that does not import the engine, such as
    :mod:`bptt.kernels.optim`, could run first, and ``import bptt.layers`` after it failed)."""
    global _all_prepared
    if not _prepared and not _NO_JIT:
        importlib.import_module("bptt.kernels.engine")
    for a in args:
        dt = getattr(a, "dtype", None)
        if dt is not None and dt.kind == "f" and dt not in _prepared:
            for hook in _first_use_hooks:
                hook(dt.name)
            _prepared.add(dt)
    _all_prepared = {_F32, _F64} <= _prepared and not _reference


# -- which kernels run: the fast ones, or their readable twins in bptt.reference ---------------

KERNELS = ("fast", "reference")
_reference = False


def set_kernels(name) -> str:
    """Run every kernel call on the ``fast`` (compiled) kernels or on their ``reference`` twins
    (:mod:`bptt.reference`: plain Python and NumPy, no JIT)."""
    global _reference, _all_prepared
    name = str(name).strip().lower()
    if name not in KERNELS:
        raise ValueError(f"kernels must be one of {', '.join(KERNELS)}, got {name!r}")
    _reference = name == "reference"
    # the dispatch looks at _reference only while _all_prepared is false: keep it false
    _all_prepared = {_F32, _F64} <= _prepared and not _reference
    return name


def get_kernels() -> str:
    """``'fast'`` or ``'reference'``: what kernel calls run on now."""
    return "reference" if _reference else "fast"


def reference_twin(fn):
    """The readable twin of the kernel function ``fn`` (``bptt.kernels.<module>.<name>``):
    ``bptt.reference.<module>.<name>``; RuntimeError if it has none."""
    import importlib
    module = fn.__module__.rsplit(".", 1)[-1]
    try:
        return getattr(importlib.import_module(f"bptt.reference.{module}"), fn.__name__)
    except ModuleNotFoundError as e:
        if e.name != f"bptt.reference.{module}":
            raise
    except AttributeError:
        pass
    raise RuntimeError(f"BPTT_KERNELS=reference: {fn.__module__}.{fn.__name__} has no reference "
                       f"twin (bptt.reference.{module}.{fn.__name__})")


def _run_twin(twin, args):
    """The twin on ``args`` with IEEE's silent inf and NaN, as the kernels' NumPy error model
    (a diverging run is caught by the trainer's NaN guard, not by a warning per array)."""
    with np.errstate(all="ignore"):
        return twin(*args)


def kernel(fn=None, *, parallel: bool = True):
    """Compile ``fn`` as a kernel: a serial build and, if ``parallel``, a ``prange`` build.

    Both builds come from the one Python function. The returned callable picks the build from the
    current thread count; ``.serial`` and ``.parallel`` expose them for tests and benchmarks.
    Builds are compiled lazily, on first call with a given signature.
    """
    if fn is None:
        return functools.partial(kernel, parallel=parallel)
    # no_cfunc_wrapper (here, on the launchers, the runner and helpers): none of them is ever
    # called as a C function (from Python, or linked, or by symbol through Numba's own calling
    # convention), so Numba need not build and optimise a C wrapper for each. On the bench's
    # compile script (Zen 3) the launchers' lowering went from 3.4-4.0 s to 2.2-2.8 s.
    serial = numba.njit(renamed(fn, f"__serial_{_HASH}"), cache=CACHE, fastmath=FASTMATH, nogil=True,
                        error_model=ERROR_MODEL, no_cfunc_wrapper=True)
    par = (numba.njit(renamed(fn, f"__parallel_{_HASH}"), cache=CACHE, fastmath=FASTMATH, parallel=True,
                      error_model=ERROR_MODEL, nogil=True, no_cfunc_wrapper=True) if parallel else serial)

    twin = []   # the reference twin, found on its first call

    @functools.wraps(fn)
    def dispatch(*args):
        if not _all_prepared:   # cheap for single-dtype kernels: the first argument's dtype
            if _reference:      # BPTT_KERNELS=reference: plain Python, nothing compiled
                if not twin:
                    twin.append(reference_twin(fn))
                return _run_twin(twin[0], args)
            if not args or getattr(args[0], "dtype", None) not in _prepared:
                _prepare(args)
        if _threads > 1 and not _serial_scope:
            if _pool_threads != _threads:
                _size_pool()
            return par(*args)
        return serial(*args)

    def run_serial(*args):
        _prepare(args)
        return serial(*args)

    def run_parallel(*args):
        _prepare(args)
        if _pool_threads != _threads and _threads > 1:
            _size_pool()
        return par(*args)

    dispatch.serial = run_serial
    dispatch.parallel = run_parallel
    dispatch.serial_build = serial
    dispatch.parallel_build = par
    dispatch.py_func = fn
    return dispatch


# -- job sets: a parallel loop whose body is compiled once, for both builds ----------------------
#
# A kernel's ``prange`` loop is compiled by Numba as a function of its own (a "gufunc"), and every
# helper its body calls is linked into that function and optimised and compiled again there; the
# serial build compiles the same body once more. For the recurrent sweeps and the weight-gradient
# passes that was about half of a cold first training step (docs/performance.md, "Compile time").
# A job set compiles its body once, as an ordinary serial function, and runs it from two small
# launchers (a ``range`` loop and a ``prange`` loop) that call it by a symbol name: the call links
# no code, so each launcher compiles in a fraction of a second, and the on-disk cache keeps working
# (the symbol is registered, from the body's compiled or cached code, before a launcher is
# compiled or loaded).

_job_sets = []   # every JobSet made, for tests (compiled_jobs)
_NO_JIT = bool(numba.config.DISABLE_JIT)


def _body_symbol(body, argtys) -> str:
    import hashlib
    sig = hashlib.sha1(str(tuple(argtys)).encode()).hexdigest()[:16]
    return f"bptt_job_{body.py_func.__module__}_{body.py_func.__qualname__}_{sig}".replace(".", "_")


def _register_native(fn, sig, name) -> None:
    """Compile (or load from the cache) the dispatcher ``fn`` for the argument types ``sig`` and
    register its native entry point (Numba's calling convention) under the symbol ``name``."""
    import llvmlite.binding as ll
    fn.compile(sig)
    cres = fn.overloads[sig]
    ll.add_symbol(name, cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))


def _lead(slots: bool) -> tuple:
    """The types of a body's leading arguments: (job, njobs), and the slot if it takes one."""
    return (_types.int64,) * (3 if slots else 2)


def _register_body(body, argtys, registered, slots=False) -> str:
    """Compile (or load from the cache) ``body`` for (int64, int64, *argtys) (with ``slots``,
    (int64, int64, int64, *argtys)) and register its address under its symbol name, once per
    process; returns the name."""
    name = _body_symbol(body, argtys)
    if name not in registered:
        _register_native(body, _lead(slots) + tuple(argtys), name)
        registered.add(name)
    return name


def _call_body(context, builder, name, argtys, job, njobs, vals, slot=None):
    """Generated code: the body registered as ``name`` on (job, njobs, *vals), or on (job, njobs,
    slot, *vals) for a job set with slots, by Numba's calling convention (declared in the
    builder's module on first use)."""
    from numba.core import cgutils
    lead = [job, njobs] + ([] if slot is None else [slot])
    full = _lead(slot is not None) + tuple(argtys)
    fnty = context.call_conv.get_function_type(_types.void, full)
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    vals = [_unowned(context, builder, ty, v) for ty, v in zip(argtys, vals)]
    context.call_conv.call_function(builder, fn, _types.void, full, lead + vals)


def _unowned(context, builder, ty, val):
    """Generated code: ``val`` (of Numba type ``ty``) with every array in it (arrays within
    tuples too) given no memory-info pointer, so that the body takes no references to the
    arrays its caller keeps alive for the whole call.

    A view made in a body (``dq[n]``) takes a reference to its array's memory info, an atomic
    increment and decrement of one counter, which Numba removes only in simple control flow. Two
    threads running jobs on the same arrays then bounce that counter's cache line between their
    cores: the ReLU's backward over 128 × 512 took 38 µs on two threads against 13 on one
    (docs/performance.md). With no memory info a reference is a test of a null pointer."""
    from numba.core import cgutils
    if isinstance(ty, _types.Array):
        arr = context.make_array(ty)(context, builder, value=val)
        arr.meminfo = cgutils.get_null_value(arr.meminfo.type)
        return arr._getvalue()
    if isinstance(ty, _types.BaseTuple):
        for i, t in enumerate(ty.types):
            val = builder.insert_value(val, _unowned(context, builder, t, builder.extract_value(val, i)), i)
    return val


def _body_caller(body, registered, slots=False):
    """An intrinsic ``call(job, njobs, args)``: ``body(job, njobs, *args)`` (with ``slots``,
    ``body(job, njobs, 0, *args)``: run in order, every job is slot 0's), called by symbol with
    Numba's own calling convention (arrays as Numba passes them). The body must not raise."""
    from numba.core import cgutils

    @_intrinsic
    def call(typingctx, job, njobs, args):
        if not isinstance(args, _types.BaseTuple):
            return None
        argtys = tuple(args.types)
        name = _register_body(body, argtys, registered, slots)

        def codegen(context, builder, signature, llargs):
            i64 = _types.int64
            j = context.cast(builder, llargs[0], signature.args[0], i64)
            n = context.cast(builder, llargs[1], signature.args[1], i64)
            vals = cgutils.unpack_tuple(builder, llargs[2], len(argtys))
            slot = context.get_constant(i64, 0) if slots else None
            _call_body(context, builder, name, argtys, j, n, vals, slot)
            return context.get_dummy_value()
        return _types.void(job, njobs, args), codegen
    return call


# The one parallel loop every job set's parallel launcher calls: ``_run_jobs(tramp, ctx, njobs)``
# runs tramp(job, njobs, ctx, slot) for every job (slot: which of the loop's ranges the job's
# thread is working through, :func:`_run_jobs`), where tramp is a small function the launcher
# generates (it unpacks the arguments the launcher stored at ctx and calls the body by its
# symbol). Numba compiles this ``prange`` loop once per process (or loads it from the cache); a
# ``prange`` loop in each launcher cost 0.4-1 s of compilation per job set, most of it LLVM
# marshalling the arrays into and out of the loop's function.
_RUNNER = "bptt_run_jobs_" + "v3"
_CLAIM = 16   # int64s between two ranges' claim counters: each range's on a cache line of its own
# The runner's thread count, read through a symbol: ``numba.get_num_threads()`` in compiled code
# bakes an address into it, and Numba then will not cache the function.
_POOL_SIZE_SYMBOL = "bptt_pool_size_" + "v1"
_POOL_SIZE = np.ones(1, np.int64)   # _size_pool keeps it at Numba's pool size


@_intrinsic
def _pool_size(typingctx):
    """The thread count Numba's pool was last given (:func:`_size_pool`), from ``_POOL_SIZE``."""
    def codegen(context, builder, signature, args):
        from llvmlite import ir
        g = builder.module.globals.get(_POOL_SIZE_SYMBOL)
        if g is None:
            g = ir.GlobalVariable(builder.module, ir.IntType(64), _POOL_SIZE_SYMBOL)
            g.linkage = "external"
        return builder.load(g)
    return _types.int64(), codegen
_runner_registered = []


@_intrinsic
def _call_tramp(typingctx, tramp, job, njobs, ctx, slot):
    """tramp(job, njobs, ctx, slot) for the function and context addresses ``tramp`` and ``ctx``."""
    if not all(isinstance(a, _types.Integer) for a in (tramp, job, njobs, ctx, slot)):
        return None

    def codegen(context, builder, signature, args):
        from llvmlite import ir
        i64, i8p = ir.IntType(64), ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i64, i64, i8p, i64])
        a = [context.cast(builder, v, ty, _types.int64) for v, ty in zip(args, signature.args)]
        fn = builder.inttoptr(a[0], fnty.as_pointer())
        builder.call(fn, [a[1], a[2], builder.inttoptr(a[3], i8p), a[4]])
        return context.get_dummy_value()
    return _types.void(tramp, job, njobs, ctx, slot), codegen


def _run_jobs(tramp, ctx, njobs):
    """Every job once: each thread its own contiguous range of the jobs, in order (a thread's
    jobs share an operand: :func:`bptt.kernels.engine.block_index`), then, when its range is
    done, the jobs still unclaimed in the others' ranges, taken from their ends. A static split
    (``prange`` over the jobs) made the whole call wait for the slower core: on a virtual machine
    one core is now and then slowed for milliseconds, and in the dense product 800 × 1024 →
    4096 (18 jobs of about 4 ms, two threads) one thread's range then ended 9 ms after the
    other's (docs/performance.md, twenty-second session).

    A range's claims: ``c[0]`` counts the jobs claimed from it by anyone (a claim is taken only
    while that count is under the range's size), ``c[1]`` the owner's from the front, ``c[2]``
    the others' from the back, so the two ends never take the same job. Which thread runs a job
    changes nothing in its outputs (jobs write disjoint outputs), so the bits are the same.

    Each job is also given its *slot*: t, the iteration of the parallel loop that runs it. One
    thread runs an iteration from start to end, so no two jobs of one slot ever run at the same
    time, and a job set with slots (:func:`jobs`) may keep a private buffer per slot: its
    operands packed by the thread that reads them (:func:`bptt.kernels.engine.own_panels`)."""
    nt = max(1, min(_pool_size(), njobs))
    claims = np.zeros(nt * _CLAIM, np.int64)
    for t in prange(nt):
        for q in range(nt):
            r = (t + q) % nt
            s = r * njobs // nt
            size = (r + 1) * njobs // nt - s
            c = r * _CLAIM
            while atomic_add(claims, c, 1) < size:
                if q == 0:
                    j = s + atomic_add(claims, c + 1, 1)
                else:
                    j = s + size - 1 - atomic_add(claims, c + 2, 1)
                _call_tramp(tramp, j, njobs, ctx, t)


def _ensure_runner() -> None:
    if not _runner_registered:
        import llvmlite.binding as ll
        ll.add_symbol(_POOL_SIZE_SYMBOL, _POOL_SIZE.ctypes.data)
        runner = numba.njit(renamed(_run_jobs, f"__{_HASH}"), cache=CACHE, parallel=True, nogil=True,
                            error_model=ERROR_MODEL, no_cfunc_wrapper=True)
        _register_native(runner, (_types.int64, _types.int64, _types.int64), _RUNNER)
        _runner_registered.append(runner)


def _parallel_caller(body, registered, slots=False):
    """An intrinsic ``run(njobs, args)``: every job of ``body`` through :func:`_run_jobs`. It
    stores the argument tuple on the stack, defines a trampoline tramp(job, njobs, ctx, slot) that
    loads it and calls the body by symbol (passing the slot on with ``slots``), and calls the
    runner by its symbol with their addresses."""
    from llvmlite import ir
    from numba.core import cgutils

    @_intrinsic
    def run(typingctx, njobs, args):
        if not isinstance(args, _types.BaseTuple):
            return None
        argtys = tuple(args.types)
        name = _register_body(body, argtys, registered, slots)
        _ensure_runner()

        def codegen(context, builder, signature, llargs):
            i64t = _types.int64
            mod = builder.module
            tupty = llargs[1].type
            ctx = cgutils.alloca_once(builder, tupty)
            builder.store(llargs[1], ctx)
            i64, i8p = ir.IntType(64), ir.IntType(8).as_pointer()
            tname = name + "_tramp"
            tramp = mod.globals.get(tname)
            if tramp is None:
                tramp = ir.Function(mod, ir.FunctionType(ir.VoidType(), [i64, i64, i8p, i64]), tname)
                tramp.linkage = "internal"
                tb = ir.IRBuilder(tramp.append_basic_block("entry"))
                j, n, c, t = tramp.args
                tup = tb.load(tb.bitcast(c, tupty.as_pointer()))
                vals = [tb.extract_value(tup, i) for i in range(len(argtys))]
                _call_body(context, tb, name, argtys, j, n, vals, t if slots else None)
                tb.ret_void()
            rty = context.call_conv.get_function_type(_types.void, (i64t, i64t, i64t))
            runner = cgutils.get_or_insert_function(mod, rty, _RUNNER)
            nj = context.cast(builder, llargs[0], signature.args[0], i64t)
            context.call_conv.call_function(builder, runner, _types.void, (i64t, i64t, i64t),
                                            [builder.ptrtoint(tramp, i64), builder.ptrtoint(ctx, i64), nj])
            return context.get_dummy_value()
        return _types.void(njobs, args), codegen
    return run


_call = None   # in each launcher's own globals: its body's caller (see JobSet)


def _parallel_jobs(njobs, *args):
    _call(njobs, args)   # the launcher's _parallel_caller: every job, through _run_jobs


def _serial_jobs(njobs, *args):
    for j in range(njobs):
        _call(j, njobs, args)


_last = None   # in a launcher's own globals: the job set's ``last`` preparation (compiled form)


def _serial_jobs_last(njobs, *args):
    a = args[:-1] + (_last(args[-1]),)
    for j in range(njobs):
        _call(j, njobs, a)


_PROBE_FIRST = 32    # a pipeline tries the other way of running its jobs after this many calls,
_PROBE_MAX = 1024    # and, while that way keeps losing, after twice as many each time, up to this
_PROBE_RUNS = 4      # calls of a try: one to wake the other way's threads, three timed
_RECENT = 9          # calls of the way in use whose median a try is compared with
_TO_ORDER = 0.8      # a try in order is taken under this share of the recent side-by-side median,
_TO_SIDE = 0.95      # a try side by side under this share of the recent in-order one (_run_timed)


class JobSet:
    """``run(njobs, *args)`` runs ``body(job, njobs, *args)`` for job = 0 .. njobs-1: in parallel
    (a ``prange`` over the jobs) when the thread count and the layer allow (as :func:`kernel`'s
    builds), else in order on this thread. The jobs must write disjoint outputs: each output is
    then computed as in the serial order, so both give the same bits.

    ``last = (compiled, python)`` prepares the last argument once before the jobs (a weight
    matrix packed into panels, say): ``run(njobs, *args, W)`` runs the body on ``(*args,
    prepare(W))``. The serial run does it inside its launcher (``compiled``, an inline function:
    one call from Python, as small layers need), the parallel run from Python (``python``, which
    may run jobs of its own), and both must give the same array."""

    def __init__(self, fn, last=None, concurrent=False, slots=False):
        self.py_func = fn
        self.concurrent = concurrent
        self.slots = slots
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        self._last = last
        # a pipeline's choice between running its jobs side by side or in order (_run_timed)
        self._side_by_side = True
        self._seconds = {True: None, False: None}   # each way's last _RECENT call times
        self._runs = {True: 0, False: 0}
        self._calls = 0
        self._interval = _PROBE_FIRST
        self._probe_left = 0
        self._probe_seconds = []
        if numba.config.DISABLE_JIT:
            return
        self._registered = set()
        # called only by symbol, from the launchers: no CPython or C wrapper to compile
        self.body = numba.njit(renamed(fn, f"__job_{_HASH}"), cache=CACHE, fastmath=FASTMATH, nogil=True,
                               error_model=ERROR_MODEL, no_cpython_wrapper=True, no_cfunc_wrapper=True)
        call = _body_caller(self.body, self._registered, slots)
        # the launchers' cache files are named by the body's module and name: two job sets of one
        # name in different modules must not load each other's launcher (it would call a body
        # symbol that is not registered)
        q = (fn.__module__ + "." + self.body.py_func.__qualname__).replace(".", "_")
        # each launcher: a copy of its template with this body's _call (and _last), its own cache file
        self.parallel_build = numba.njit(renamed(_parallel_jobs, f"__{q}",
                                                 _call=_parallel_caller(self.body, self._registered, slots)),
                                         cache=CACHE, nogil=True, error_model=ERROR_MODEL, no_cfunc_wrapper=True)
        self.serial_build = numba.njit(renamed(_serial_jobs_last if last else _serial_jobs, f"__{q}", _call=call,
                                               _last=last[0] if last else None),
                                       cache=CACHE, nogil=True, error_model=ERROR_MODEL, no_cfunc_wrapper=True)
        self._before_new_signature(self.serial_build, prepare_last=last is not None)
        self._before_new_signature(self.parallel_build)
        _job_sets.append(self)

    def _before_new_signature(self, build, prepare_last=False) -> None:
        """Register the body's symbol for a launcher's argument types before the launcher is
        compiled or loaded from the cache for them: Numba calls ``_compile_for_args`` on every call
        whose types it has no machine code for yet, and on no other, so known calls cost nothing.
        With ``prepare_last`` the body's last argument is the prepared one (typed from one run of
        the Python preparation)."""
        compile_for_args = build._compile_for_args

        def register_then_compile(njobs, args):   # Numba passes a launcher's *args as one tuple
            body_args = self._prepare_last(args) if prepare_last else args
            _register_body(self.body, tuple(numba.typeof(a) for a in body_args), self._registered, self.slots)
            _ensure_runner()
            return compile_for_args(njobs, args)
        build._compile_for_args = register_then_compile

    def _run_timed(self, njobs, args):
        """Run a pipeline's jobs side by side or one after the other, whichever has been faster
        here: the same bits either way (job 0 never waits for unclaimed work), but side by side
        needs both cores. With more threads than free cores (other processes, or ``pytest -n``) a
        job can wait a whole time slice for the other: one LSTM `teach` step took 7.4 ms side by
        side against 0.48 in order, beside two busy processes (docs/performance.md). So each call
        is timed (the last ``_RECENT`` per way), and every ``_interval`` calls the other way is
        tried for ``_PROBE_RUNS`` calls: the first untimed (run in order for a while, the thread
        pool has gone to sleep, and waking it took longer than the gain: a pipeline once stayed in
        order for good), then it is taken if the others' median is under a share of the median of
        the current way's recent calls (``_TO_ORDER``, 0.8, to go in order; ``_TO_SIDE``, 0.95, to
        go back side by side); if not, the next try waits twice as long (up to ``_PROBE_MAX``
        calls). The two shares differ so that a pipeline does not stay in order after the machine
        has become quick again: the LSTM `teach` forward pipeline on a Zen 4 (avx512) took 63-73 µs
        side by side against 86.6 in order, 0.73-0.84, and at 0.80-0.84 one that a slow spell had
        sent in order could not come back (docs/performance.md, twenty-seventh session). Between 0.8 and
        0.95 neither way is taken from the other, so the two never alternate. The first two calls
        of each way (which compile or load its launcher) are not timed. Medians, not running
        averages: a few calls slowed by the machine (a 7 ms spike on a virtual machine) had lifted
        the average of the LSTM `teach` forward pipeline side by side from 62 to 192 µs, it went in
        order (99 µs), which also left the backward pipeline a sleeping pool to wake at every call,
        and that process's step took 300 µs instead of 200 until the end (docs/performance.md,
        nineteenth session)."""
        self._calls += 1
        if self._probe_left == 0 and self._calls >= self._interval:
            self._probe_left = _PROBE_RUNS
            self._probe_seconds = []
        probe = self._probe_left > 0
        side = self._side_by_side != probe
        t0 = time.perf_counter()
        if side:
            self.parallel_build(njobs, *self._prepare_last(args))
        else:
            self.serial_build(njobs, *args)
        dt = time.perf_counter() - t0
        self._runs[side] += 1
        if self._runs[side] <= 2:
            return                 # a probe then goes on until it has its timed calls
        if not probe:
            if self._seconds[side] is None:
                self._seconds[side] = collections.deque(maxlen=_RECENT)
            self._seconds[side].append(dt)
            return
        self._probe_left -= 1
        if self._probe_left < _PROBE_RUNS - 1:    # not the first call of the probe
            self._probe_seconds.append(dt)
        if self._probe_left > 0:
            return
        self._calls = 0
        tried = statistics.median(self._probe_seconds)
        recent = self._seconds[self._side_by_side]
        if recent and tried < (_TO_SIDE if side else _TO_ORDER) * statistics.median(recent):
            self._side_by_side = side
            self._seconds[side] = collections.deque(self._probe_seconds, maxlen=_RECENT)
            self._interval = _PROBE_FIRST
        else:
            self._interval = min(_PROBE_MAX, 2 * self._interval)

    def _prepare_last(self, args):
        """``args`` with the last one prepared by the Python form of ``last`` (if any)."""
        return args[:-1] + (self._last[1](args[-1]),) if self._last else args

    def __call__(self, njobs, *args):
        if njobs > 1 and side_by_side(self.concurrent):
            if _pool_threads != _threads:
                _size_pool()
            if self.concurrent and not _parallel_scope:
                self._run_timed(njobs, args)
            else:
                self.parallel_build(njobs, *self._prepare_last(args))
        elif not _NO_JIT:
            self.serial_build(njobs, *args)   # the common small case: one compiled call
        else:
            args = self._prepare_last(args)
            for j in range(njobs):
                self.py_func(j, njobs, *((0,) + args if self.slots else args))


def jobs(fn=None, *, last=None, concurrent=False, slots=False):
    """Decorate ``fn(job, njobs, *args)``, one of ``njobs`` independent jobs: a :class:`JobSet`
    (``last``: see there).

    ``slots=True``: ``fn(job, njobs, slot, *args)``, where ``slot`` (0 ≤ slot < the thread
    count) is the same for all the jobs one thread runs in a call, and no two jobs of one slot
    run at the same time (:func:`_run_jobs`; 0 for every job run in order). The jobs may keep
    work in a buffer per slot: each thread packs the operands it reads itself
    (:func:`bptt.kernels.engine.own_panels`).

    ``concurrent=True`` marks a pipeline: jobs that hand work to each other while they run
    (:func:`atomic_store`, :func:`atomic_load`), so they gain only by running at the same time
    even on small work. Its jobs run in parallel whenever there are threads to spare, inside a
    layer's ``serial_when`` too (only a composite's ``.serial`` runs them in order). Job 0 must
    never wait for another job: run in order, it then finishes before the others start, and the
    others find everything done."""
    if fn is None:
        return functools.partial(jobs, last=last, concurrent=concurrent, slots=slots)
    return JobSet(fn, last, concurrent, slots)


def compiled_jobs() -> list:
    """The names of the job sets whose body has been compiled (or loaded) in this process."""
    return [js.__name__ for js in _job_sets if js.body.signatures]


_parallel_scope = 0   # >0 inside a composite's .parallel(): job sets run their parallel launcher
_forced_serial = 0    # >0 inside a composite's .serial(): even pipelines run their jobs in order


def side_by_side(concurrent: bool = False) -> bool:
    """Whether a job set called now runs its jobs on two or more threads at once (a pipeline's,
    ``concurrent``, may still choose to run them in order: :meth:`JobSet._run_timed`): compiled,
    and a composite's ``.parallel`` in force, or more than one thread with neither a composite's
    ``.serial`` nor (but for pipelines) a layer's ``serial_when``. A composite whose jobs wait for
    each other's progress checks this first (:func:`bptt.kernels.lstm.lstm_forward`'s split by
    hidden units)."""
    return not _NO_JIT and (_parallel_scope > 0 or (
        _threads > 1 and not _forced_serial and (concurrent or not _serial_scope)))


def composite(fn):
    """A kernel written in Python from other kernels and job sets (allocation, packing, then the
    jobs), with :func:`kernel`'s interface: the reference twin under ``BPTT_KERNELS=reference``,
    the first-use hooks, and ``.serial`` / ``.parallel`` to force a build."""
    twin = []

    @functools.wraps(fn)
    def dispatch(*args):
        if not _all_prepared:   # as kernel's dispatch
            if _reference:
                if not twin:
                    twin.append(reference_twin(fn))
                return _run_twin(twin[0], args)
            if not args or getattr(args[0], "dtype", None) not in _prepared:
                _prepare(args)
        return fn(*args)

    def run_serial(*args):
        global _forced_serial
        _prepare(args)
        _forced_serial += 1
        try:
            with serial_when(True):
                return fn(*args)
        finally:
            _forced_serial -= 1

    def run_parallel(*args):
        global _parallel_scope
        _prepare(args)
        _parallel_scope += 1
        try:
            return fn(*args)
        finally:
            _parallel_scope -= 1

    dispatch.serial = run_serial
    dispatch.parallel = run_parallel
    dispatch.py_func = fn
    dispatch.composite = True
    return dispatch


# Below this many multiply-adds, a layer's call runs the serial builds even with threads to spare:
# starting a parallel region costs microseconds, more than it saves on such small work, and
# with one sequence (B = 1) the recurrent sweep has nothing to share anyway. The builds give the
# same bits, so this changes speed only.
SERIAL_WORK = 1 << 22
_serial_scope = 0


class serial_when:
    """``with serial_when(cond):`` runs every kernel called inside on its serial build if
    ``cond`` is true (layers pass ``work < SERIAL_WORK``)."""
    __slots__ = ("on",)

    def __init__(self, cond):
        self.on = bool(cond)

    def __enter__(self):
        global _serial_scope
        _serial_scope += self.on

    def __exit__(self, *exc):
        global _serial_scope
        _serial_scope -= self.on
        return False


def helper(fn):
    """Compile an array helper that kernels call; LLVM inlines it or not. (Its cache name carries
    :func:`_sources_hash`, as every kernel's: Python calls some helpers too.)"""
    return numba.njit(renamed(fn, f"__{_HASH}"), cache=CACHE, fastmath=FASTMATH, nogil=True, error_model=ERROR_MODEL, no_cfunc_wrapper=True)


_typed_lock = threading.RLock()


def typed_helper(signature):
    """:func:`helper`, compiled for one signature per dtype: ``signature(numba_dtype)``, whose
    arrays should have layout ``'A'``. Numba compiles a helper again for every combination of
    its arguments' layouts (and for a literal ``0`` passed as an int); here it is compiled once per
    dtype, when a kernel first runs on that dtype (:func:`on_first_use`), and every call converts
    to that signature. For the large helpers that many kernels call (the panel products of
    :mod:`bptt.kernels.engine`: four compilations each in a first training step)."""
    def decorate(fn):
        d = helper(fn)
        if _NO_JIT:
            return d

        def compile_for(dtype_name):
            sig = tuple(signature(getattr(_types, dtype_name)))
            with _typed_lock:   # two Python threads may first use a dtype at once
                if sig not in d.overloads:
                    d._can_compile = True
                    try:
                        d.compile(sig)
                    finally:
                        d.disable_compile()
        on_first_use(compile_for)
        return d
    return decorate


def external(fn, signature, symbol: str):
    """Compile ``fn`` once, as a C function of ``signature``, and register it as ``symbol``.

    Kernels call it by that name (see :mod:`bptt.kernels.microcall`) instead of
    linking its code: Numba links a callee's code into every caller and optimises it again there,
    which for the large unrolled micro-kernels cost about 3 s per kernel, per dtype and per build.
    Compiled (or loaded from the cache) when this is called, i.e. before the first kernel runs on
    arrays of a dtype (:func:`on_first_use`), so the symbol exists before any kernel that calls it
    is compiled or loaded.
    """
    import llvmlite.binding as ll
    # under a name that carries _sources_hash, as every kernel's: the cache checks only the file
    # that defines fn, and a tile inlines code from microcall (its main block's body)
    compiled = numba.cfunc(signature, cache=CACHE, fastmath=FASTMATH, nopython=True,
                           error_model=ERROR_MODEL)(renamed(fn, f"__{_HASH}"))
    ll.add_symbol(symbol, compiled.address)
    return compiled


def inline(fn):
    """Compile a scalar helper that other kernels call (``x -> f(x)``); inlined into its callers.
    Called from Python it is compiled on its own, and cached under a name that carries
    :func:`_sources_hash`: ``engine.block_jobs`` counts a product's jobs with the compiled
    ``n_blocks``, which must hold the same ``CHUNKS`` as the job bodies."""
    return numba.njit(renamed(fn, f"__{_HASH}"), cache=CACHE, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)


_init_from_env()
