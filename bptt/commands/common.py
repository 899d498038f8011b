"""What every ``bptt`` command shares: the one-line error, option types, the progress bar and the
exception types that mean bad input. Part of the CLI layer: it holds no math."""
from __future__ import annotations

import contextlib
import math
import os
import sys

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def fail(msg: str, code: int = 1):
    click.echo(f"Error: {msg}", err=True)
    sys.exit(code)


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses nan and inf, which click's FloatRange lets through."""

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = 0.0  # not a number at all: FloatRange says so
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(value, param, ctx)


class Progress:
    """A one-line progress bar on stderr: step, loss, tokens per second and the ETA."""

    def __init__(self, total_steps, start_step, minutes):
        self.total = total_steps if total_steps < 10 ** 11 else None
        self.start_step = start_step
        self.minutes = minutes
        self.tty = sys.stderr.isatty()
        self.t0 = None
        self.last_print = 0.0
        self.loss_avg = None

    def _eta(self, step, elapsed):
        done = step - self.start_step
        left = []
        if self.total and done > 0:
            left.append(elapsed / done * (self.total - step))
        if self.minutes:
            left.append(max(0.0, 60 * self.minutes - elapsed))
        if not left:
            return "?"
        s = int(min(left))
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"

    def start(self):
        """On a terminal, a line for the wait before the first step, which the first step's line
        replaces: that step compiles the kernels on a first run (about half a minute for a
        language model on a 2-core machine) or loads them from the cache."""
        if self.tty:
            click.echo(f"\rstep {self.start_step}  loading the kernels from the cache, or compiling them "
                       f"on a first run...\x1b[K", nl=False, err=True)

    def step(self, info):
        import time
        now = time.perf_counter()
        self.loss_avg = info["loss"] if self.loss_avg is None else 0.95 * self.loss_avg + 0.05 * info["loss"]
        if self.tty and now - self.last_print < 0.2 and info["step"] != self.total:
            return
        if not self.tty and now - self.last_print < 30:
            return
        self.last_print = now
        step, el = info["step"], info["elapsed"]
        if self.total:
            frac = min(1.0, step / self.total)
            bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
            pos = f"step {step}/{self.total} [{bar}] {100 * frac:3.0f}%"
        else:
            pos = f"step {step}"
        line = (f"{pos}  loss {self.loss_avg:.4f}  {info['tokens_per_sec'] / 1000:.1f}k tok/s  "
                f"ETA {self._eta(step, el)}")
        if self.tty:
            click.echo("\r" + line + "\x1b[K", nl=False, err=True)
        else:
            click.echo(line, err=True)

    def message(self, text):
        if self.tty:
            click.echo("\r\x1b[K", nl=False, err=True)
        click.echo(text)


def set_threads(threads):
    if threads is not None:
        from bptt import jit
        try:
            jit.set_threads(threads)
        except ValueError as e:
            fail(str(e), 2)


@contextlib.contextmanager
def training_errors():
    """Around a training command's work: a second Ctrl-C (the trainer saved at the first and
    returned; a second one leaves at once) or bad input (:func:`user_errors`) ends the command
    with one line."""
    try:
        yield
    except KeyboardInterrupt:
        fail("interrupted twice: stopped without saving; the last checkpoint is kept")
    except user_errors() as e:
        fail(str(e))


def echo_interrupted(summary: dict, out_dir) -> None:
    """After a run that Ctrl-C stopped: the step it saved, where, and how to go on."""
    where = f" to {summary['checkpoint']}" if summary.get("checkpoint") else ""
    click.echo(f"interrupted: saved step {summary['step']}{where}; continue with --resume --out {out_dir}")


def json_safe(obj):
    """``obj`` with every non-finite float (an undefined R² or MASE, an overflowed metric) as None,
    so that the file written is strict JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _same(given, saved) -> bool:
    if isinstance(given, (list, tuple)) or isinstance(saved, (list, tuple)):
        if not isinstance(given, (list, tuple)) or not isinstance(saved, (list, tuple)) or len(given) != len(saved):
            return False
        return all(_same(a, b) for a, b in zip(given, saved))
    if isinstance(given, float) or isinstance(saved, float):
        try:
            return float(given) == float(saved)
        except (TypeError, ValueError):
            return False
    return given == saved


def _shown(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v) or "none"
    return "off" if v is False else "on" if v is True else "none" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def refuse_changed_options(ctx: click.Context, saved: dict) -> None:
    """On ``--resume``: the options given on the command line (or by environment variable) whose
    value differs from the run's are a ValueError naming each, since a resumed run keeps the
    configuration it was started with. ``saved`` maps click's parameter names to the run's
    values; options it does not name (--steps, --minutes, --out, ...) may change."""
    from click.core import ParameterSource
    changed = []
    for p in ctx.command.params:
        if p.name not in saved or ctx.get_parameter_source(p.name) not in (ParameterSource.COMMANDLINE,
                                                                           ParameterSource.ENVIRONMENT):
            continue
        given, was = ctx.params[p.name], saved[p.name]
        if isinstance(p.type, click.Path) and isinstance(given, str) and isinstance(was, str):
            given, was = os.path.normpath(given), os.path.normpath(was)   # ./a.csv is a.csv, run/ is run
        if not _same(given, was):
            flag = max(p.opts, key=len)
            changed.append(f"{flag} {_shown(given)} (the run's: {_shown(saved[p.name])})")
    if changed:
        raise ValueError("--resume continues a run with the options it was started with, but "
                         + "; ".join(changed) + ": drop them, or start a new run in another --out")


def user_errors():
    """The exception types that mean bad input: shown as one line, exit code 1."""
    from bptt.checkpoint import CheckpointError
    from bptt.data import DataError
    from bptt.train import TrainingError
    return (DataError, CheckpointError, TrainingError, ValueError, OSError)
