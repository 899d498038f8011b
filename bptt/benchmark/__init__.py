"""Layer 3: bptt against PyTorch, one training step at a time (``bptt bench``, issues #5 and #11).

A *step* of a recurrent layer is what training does per chunk: zero the gradients, forward over
T steps, then full BPTT backward from an upstream gradient on the output, giving dx, ∂L/∂h0 and
every weight gradient. bptt and ``torch.nn.RNN/LSTM/GRU`` run it on the same float32 weights
and inputs, with the same number of threads, and on the same vector ISA.

For every cell × shape:

1. **check**: one step of each, in this process; ``out``, ``dx``, ``dh0`` (``dc0``) and every
   weight gradient are compared by relative error max|a − b| / max|b|. Above ``TOLERANCE``
   the row fails.
2. **time**: each framework in its own worker process (:mod:`.workers`), on the same arrays:
   warm-up steps, then timed steps until at least ``repeat`` of them and ``min_time`` seconds,
   in ``ROUNDS`` slices that alternate between the frameworks (bptt, torch, torch, bptt, ...;
   :func:`~.timing.slices`): a virtual machine drifts between fast and slow periods, and timing
   one framework after the other could put each in a different one. The median is reported,
   with the min and the quartiles in the JSON.
3. **memory**: in bptt's worker, one step of a fresh layer under :mod:`tracemalloc` (which sees
   numpy's allocations): parameters + gradients + the step's peak allocations (workspaces,
   outputs, dx).
4. **torch alone**: for RNN ``char``, torch's step is timed again in a plain process that imports
   numpy and torch only. If the torch worker took more than 1.3× as long, the worker alone and a
   plain process are timed again, in up to two more pairs; if every pair is over 1.3×, something
   of bptt's slowed it, the row is flagged ("TORCH WORKER SLOWED") and ``all_targets_met`` is
   false.

The ISA: ``--isa avx512|avx2|generic`` runs bptt's worker with ``BPTT_ISA`` and holds torch's
worker to the same ISA (``ATEN_CPU_CAPABILITY``, ``DNNL_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``;
see :mod:`.machine`); an ISA the host cannot run is refused. Without it, bptt uses
``BPTT_ISA`` if set (and torch is then held to it too), else the host's widest ISA, and torch
picks its own. ``generic`` is for correctness: it runs, but no speed target applies.

FLOPs per step count the matrix products only, forward plus twice that for backward
(dx-side and dW-side):

    flops = 3 · 2 · T · B · G · H · (I + H)

GFLOP/s = flops / median seconds / 1e9, for both. The percentage of peak divides bptt's figure by
the float32 FMA peak of the ISA in use on the threads in use, measured by
:mod:`bptt.kernels.peak` (independent FMA chains in registers) on all threads and on one.

Targets (``TARGETS``), reported per row and extra, never asserted: torch / bptt ≥ 1 on every row
and on the extras (the char-LM and the MLP step), ≥ 3 on ``teach``, and bptt at ≥ 55 % of the
FMA peak on ``fastrnns`` and ``deepbench``.

The modules: :mod:`.problems` (shapes, targets, data, the step in each framework, the check,
FLOPs), :mod:`.torch_steps` (the torch step, importing nothing of bptt), :mod:`.timing`
(warm-up, timed slices, memory), :mod:`.workers` (the child processes), :mod:`.machine`
(machine, ISA, FMA peak), :mod:`.runner` (the whole run and its targets) and :mod:`.report`
(text and JSON).

torch is imported only inside functions: ``import bptt.benchmark`` works without it, and
:func:`require_torch` turns its absence into one line.
"""
from .machine import (ENV_VARS, TORCH_ISA_ENV, UNTIMED_ISAS, check_isa, machine_info, measure_peak, peaks,
                      torch_isa_env)
from .problems import (CELLS, CHAR_LM, EXTRAS, GATES, MLP_SPEC, QUICK_SHAPES, RECURRENT, SHAPES, TARGETS,
                       TOLERANCE, TORCH_MISSING, BenchError, build_bptt, build_torch, check_job, job_flops,
                       make_data, parse_list, parse_shape, rel_err, require_torch, step_flops)
from .report import format_extra, format_header, format_row, format_summary, table_header, write_json
from .runner import (PEAK_SHARE_MIN, PLAIN_CHECK, PLAIN_RECHECKS, RATIO_MIN, TEACH_RATIO_MIN, TORCH_SLOWED, BenchConfig,
                     bench_cell, bench_extra, choose_isa, evaluate_targets, run, torch_plain_check)
from .timing import NOISY, ROUNDS, SLICE_WARM, memory_of, slices, summary, timed_steps, warm_up
from .workers import FRAMEWORKS, child_env, compile_env, compile_times, plain_torch_times, worker_env

__all__ = [
    "BenchConfig", "BenchError", "CELLS", "CHAR_LM", "ENV_VARS", "EXTRAS", "FRAMEWORKS", "GATES",
    "MLP_SPEC", "NOISY", "PEAK_SHARE_MIN", "PLAIN_CHECK", "QUICK_SHAPES", "RATIO_MIN", "RECURRENT",
    "ROUNDS", "SHAPES", "SLICE_WARM", "TARGETS", "TEACH_RATIO_MIN", "TOLERANCE", "TORCH_ISA_ENV",
    "PLAIN_RECHECKS", "TORCH_MISSING", "TORCH_SLOWED", "UNTIMED_ISAS", "bench_cell", "bench_extra", "build_bptt",
    "build_torch", "check_isa", "check_job", "child_env", "choose_isa", "compile_env", "compile_times",
    "evaluate_targets", "format_extra", "format_header", "format_row", "format_summary", "job_flops",
    "machine_info", "make_data", "measure_peak", "memory_of", "parse_list", "parse_shape", "peaks",
    "plain_torch_times", "rel_err", "require_torch", "run", "slices", "step_flops", "summary",
    "table_header", "timed_steps", "torch_isa_env", "torch_plain_check", "warm_up", "worker_env",
    "write_json",
]
