#!/usr/bin/env python
"""bptt against PyTorch: one training step of RNN/GRU/LSTM, plus a char-LM and an MLP step.

    python bench/bench_vs_torch.py [OPTIONS]      # the same as: bptt bench [OPTIONS]
    python bench/bench_vs_torch.py --help

The options are defined once, by the `bptt bench` command in cli.py; the measurements live in
:mod:`bptt.benchmark` (``run``, ``bench_cell``, ``bench_extra``, ``check_job``,
``compile_times``, ``measure_peak``, ``write_json``), re-exported here for use from Python.
"""
import os
import sys

try:
    import cli
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    import cli

from bptt.benchmark import (BenchConfig, bench_cell, bench_extra, check_job, compile_times,  # noqa: F401
                            measure_peak, run, write_json)


def main(argv=None):
    """Run `bptt bench` with ``argv`` (default: the command line); returns its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(["bench", *args], prog_name="bench_vs_torch.py", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
