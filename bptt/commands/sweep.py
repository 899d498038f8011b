"""``bptt sweep``: many runs of train, fit or forecast, scheduled by Ray Tune (bptt.sweep)."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import click

from bptt.sweep_trial import TRIAL_COMMANDS   # standard library only: --help stays fast

from .common import CONTEXT, fail

RESERVED = ("out", "resume", "threads", "help")   # the sweep sets these for every trial
KINDS = ("grid", "uniform", "loguniform", "choice")


def _pairs(option, items, kind, seen):
    """``--grid lr=1e-3,2e-3`` -> {"lr": ["1e-3", "2e-3"]}. ``seen``: name -> the option that
    already gave it (a name is swept once)."""
    out = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not sep or not name or not values.strip():
            fail(f"{option} {item!r}: write NAME=VALUE,VALUE,... (for example {option} lr=1e-3,2e-3)", 2)
        if name in seen:
            how = ("give its values once, " + f"{option} {name}=A,B" if seen[name] == option == "--grid"
                   else "sweep it one way")
            fail(f"{name} is given twice ({seen[name]} and {option}): {how}", 2)
        seen[name] = option
        out[name] = [v.strip() for v in values.split(",")]
        if kind in ("uniform", "loguniform") and len(out[name]) != 2:
            fail(f"{option} {item!r}: give two bounds, NAME=LOW,HIGH", 2)
    return out


def _option_names(cmd):
    """name -> click.Option, by the command's long option strings (``--json`` -> ``json``,
    ``--no-header`` -> ``no_header``), not by the parameter names (``json_path``)."""
    names = {}
    for p in cmd.params:
        if isinstance(p, click.Option):
            for opt in p.opts + p.secondary_opts:
                if opt.startswith("--"):
                    names[opt[2:].replace("-", "_")] = p
    return names


def _flags(cmd):
    """The command's flag options: name -> the option that turns the flag off (None: leaving
    it out), e.g. bidirectional -> None, header -> --no-header, no_header -> --header."""
    flags = {}
    for p in cmd.params:
        if isinstance(p, click.Option) and p.is_flag:
            on, off = [o for o in p.opts if o.startswith("--")], p.secondary_opts
            for opt in on:
                flags[opt[2:].replace("-", "_")] = off[0] if off else None
            for opt in off:
                flags[opt[2:].replace("-", "_")] = on[0] if on else None
    return flags


def _command(root, command):
    if command not in TRIAL_COMMANDS:
        return None   # SweepSpec.validate says which commands a sweep runs
    return root.get_command(click.get_current_context(), command)


def _check_trial_args(root, command, trials, spec, planned=False):
    """Parse every trial's arguments with the command's own options, so that a bad value is a
    one-line error now and not a failed trial later. Returns the parsed params of each trial and
    the positional file arguments (the data files) of the fixed arguments. ``planned``: the
    sweep is resumed as it was planned, so an option both swept and fixed is not refused now."""
    from bptt.sweep import trial_args
    ctx = click.get_current_context()
    cmd = root.get_command(ctx, command)
    if cmd is None:
        fail(f"--command {command}: this bptt has no `{command}` command", 2)
    options = _option_names(cmd)
    for name in list(trials[0]["params"]) if trials else []:
        if name in RESERVED:
            fail(f"{name} cannot be swept: the sweep sets --{name} for every trial", 2)
        if name not in options:
            fail(f"{name}: `bptt {command}` has no option --{name.replace('_', '-')}", 2)
    by_opt = {o: p for p in cmd.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}
    swept = {n: kind for kind in KINDS for n in getattr(spec, kind)}
    for a in spec.args:
        if a.split("=", 1)[0].lstrip("-") in RESERVED and a.startswith("--"):
            fail(f"{a.split('=', 1)[0]} cannot be a fixed option: the sweep sets it for every trial", 2)
        p = by_opt.get(a.split("=", 1)[0]) if a.startswith("-") else None
        for name, kind in swept.items():
            if p is not None and options.get(name) is p and not planned:
                fail(f"{a.split('=', 1)[0]} is given twice, swept ({kind} {name}) and as a fixed "
                     f"argument: give it one way", 2)
    parsed = []
    for t in trials:
        args = trial_args(spec, t["params"])
        try:
            with cmd.make_context(command, list(args), parent=ctx) as sub:
                parsed.append(dict(sub.params))
        except click.ClickException as e:
            what = ", ".join(f"{k}={v}" for k, v in t["params"].items())
            fail(f"trial {t['id']} ({what or 'the fixed options'}): {e.format_message()}", 2)
    data = []
    if parsed:
        for p in cmd.params:
            if isinstance(p, click.Argument) and isinstance(p.type, click.Path):
                v = parsed[0][p.name]
                data += list(v) if isinstance(v, (list, tuple)) else ([] if v is None else [v])
    return parsed, data


def _mark_data(spec, data_paths, out_dir):
    """Read each data file once and keep its bytes in DIR/data; the fixed arguments name it by a
    mark that each trial replaces with its own copy."""
    from bptt.sweep_trial import DATA_MARK
    names = []
    blobs = []
    for path in data_paths:
        try:
            blobs.append(Path(path).read_bytes())
        except OSError as e:
            fail(f"cannot read {path}: {e.strerror or e}")
        name = os.path.basename(path) or "data"
        while name in names:
            name = f"{len(names)}-{name}"
        names.append(name)
    args = list(spec.args)
    for i, path in enumerate(data_paths):
        args = [DATA_MARK % i if a == path else a for a in args]
    spec.args = args
    return names, blobs


def _write_data(out_dir, names, blobs):
    if not names:
        return
    d = Path(out_dir) / "data"
    d.mkdir(parents=True, exist_ok=True)
    for name, blob in zip(names, blobs):
        (d / name).write_bytes(blob)


class _Status:
    """The progress line: trials running, done, stopped, failed, pending; the best loss so far."""

    def __init__(self, state):
        self.state = state
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.nodes = 1

    def line(self):
        c = self.state.counts()
        best = self.state.best()
        b = (f"best val {best['best_val_loss']:.4f} ({best['id']})" if best else "best val -")
        el = int(time.perf_counter() - self.t0)
        return (f"[{el // 60}:{el % 60:02d}] {c['running']} running, {c['done']} done, "
                f"{c['stopped']} stopped, {c['failed']} failed, {c['pending']} pending; {b}")

    def __call__(self, kind, info):
        if kind == "ray":
            self.nodes = info["nodes"]
            click.echo(f"Ray: {info['address']}, {info['nodes']} node(s), {int(info['cpus'])} CPUs; "
                       f"{info['cpus_per_trial']} CPU(s) per trial")
            return
        if kind == "trial":
            t = info
            if t["status"] in ("done", "stopped", "failed"):
                v = t["best_val_loss"]
                loss = "-" if v is None else f"{v:.4f}"
                err = f": {t['error']}" if t["status"] == "failed" and t["error"] else ""
                self._clear()
                click.echo(f"{t['id']} {t['status']} at step {t['step']}, best val {loss}{err}")
        now = time.perf_counter()
        if self.tty:
            click.echo("\r" + self.line() + "\x1b[K", nl=False, err=True)
        elif kind == "trial" or now - self.last > 30:
            click.echo(self.line(), err=True)
        self.last = now

    def _clear(self):
        if self.tty:
            click.echo("\r\x1b[K", nl=False, err=True)

    def end(self):
        self._clear()


@click.command(context_settings=CONTEXT)
@click.argument("spec_and_args", nargs=-1, type=click.UNPROCESSED, metavar="[SPEC.toml] [-- FIXED...]")
@click.option("--command", "command", type=click.Choice(list(TRIAL_COMMANDS)), default=None,
              help="The command each trial runs. [default: the spec's, or train]")
@click.option("--grid", multiple=True, metavar="NAME=V1,V2",
              help="Try every value (repeatable; every combination of the grids is a trial).")
@click.option("--uniform", multiple=True, metavar="NAME=LOW,HIGH",
              help="Draw uniformly (integers if both bounds are integers).")
@click.option("--loguniform", multiple=True, metavar="NAME=LOW,HIGH",
              help="Draw log-uniformly, e.g. --loguniform lr=1e-4,1e-2.")
@click.option("--choice", multiple=True, metavar="NAME=A,B",
              help="Draw one of the values.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Random draws, each crossed with the grid; with nothing random, repeats of the "
                   "grid with the trial's --seed counting up. [default: 1]")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the random draws: the same spec and seed give the same trials. [default: 0]")
@click.option("--scheduler", type=click.Choice(["fifo", "asha"]), default=None,
              help="fifo runs every trial to its end; asha (Ray Tune's ASHA) stops poor trials at "
                   "their validations. [default: fifo]")
@click.option("--cpus-per-trial", type=click.IntRange(min=1), default=None,
              help="Ray's CPU request and the trial's BPTT_THREADS. [default: all the cores of a "
                   "node for a one-trial sweep, else 1]")
@click.option("--address", default=None, metavar="auto|HOST:PORT",
              help="Run on an existing Ray cluster (--out must be a folder every node can reach). "
                   "[default: start a local Ray, with its logs in DIR/ray]")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/sweep", show_default=True,
              help="The sweep folder: trials/<id>/ (one run folder each), sweep.json, results.csv, best.")
@click.option("--resume", is_flag=True,
              help="Continue the sweep in --out: finished trials are kept, the others resume from "
                   "their checkpoints.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write every trial's results as JSON here.")
@click.option("--dry-run", is_flag=True,
              help="Print every trial's command line and stop (nothing is written, Ray is not started).")
def sweep(spec_and_args, command, grid, uniform, loguniform, choice, samples, seed, scheduler,
          cpus_per_trial, address, out_dir, resume, json_path, dry_run):
    """Run many trials of train, fit or forecast on Ray Tune, locally or on a Ray cluster.

    \b
    bptt sweep SPEC.toml --out DIR
    bptt sweep --grid lr=1e-3,2e-3 --grid cell=lstm,gru --out DIR -- --steps 300 --hidden 64

    Arguments after `--` are given to every trial (data files among them are read once, shared
    through Ray's object store and written into each trial's folder). A trial is one run of the
    command in DIR/trials/<id>, exactly as the command alone writes it; each validation reports
    its loss to Ray Tune. The end prints every trial sorted by best validation loss, and writes
    DIR/results.csv and DIR/best (a link to the best trial's best checkpoint). Ctrl-C keeps the
    finished trials; --resume --out DIR runs the rest. Needs Ray: pip install "bptt[sweep]".

    NAME is the command's option name (json for --json). A flag takes true or false (yes/no,
    1/0): --grid bidirectional=true,false runs with --bidirectional and without it. A name is
    swept once, and not also given after `--`.

    A TOML spec holds command, samples, seed, scheduler, cpus_per_trial, args (a list of fixed
    arguments), and tables [grid] (name = [values]), [uniform] and [loguniform] (name = [low,
    high]), [choice] (name = [values]) and [fixed] (name = value); options given on the command
    line override it.
    """
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.tune") is None:
        fail('bptt sweep needs Ray Tune: pip install "bptt[sweep]"')
    from bptt.sweep import (SweepError, SweepSpec, SweepState, format_table, link_best, load_spec,
                            make_trials, option_args, repeated, results_json, run_sweep,
                            write_results)
    args = list(spec_and_args)
    state = None
    root = click.get_current_context().find_root().command
    try:
        if resume:
            if args or grid or uniform or loguniform or choice or samples or seed is not None or command or dry_run:
                fail("--resume continues the sweep in --out as it was planned: give only --out "
                     "(and --address, --cpus-per-trial, --json)", 2)
            state = SweepState.load(out_dir)
            spec = state.spec()
            parsed, _ = _check_trial_args(root, spec.command, state.trials, spec, planned=True)
        else:
            d = {}
            if args and args[0].endswith(".toml"):
                d = load_spec(args.pop(0))
            seen = {}   # name -> the option that swept it on the command line
            given = {kind: _pairs(f"--{kind}", items, kind, seen)
                     for kind, items in zip(KINDS, (grid, uniform, loguniform, choice))}
            for kind in KINDS:   # the command line wins over the spec's entries for its names
                d[kind] = {k: v for k, v in d.get(kind, {}).items() if k not in seen}
                d[kind].update(given[kind])
            for key, value in (("command", command), ("samples", samples), ("seed", seed),
                               ("scheduler", scheduler), ("cpus_per_trial", cpus_per_trial)):
                if value is not None:
                    d[key] = value
            cmd = _command(root, d.get("command", "train"))
            flags = _flags(cmd) if cmd is not None else {}
            fixed = d.pop("fixed", {})
            d["args"] = list(d.get("args", []))
            for k, v in fixed.items():
                if k not in seen:   # swept on the command line: that wins over the spec's value
                    d["args"] += option_args(k, v, flags)
            d["args"] += args
            d["flags"] = {n: off for n, off in flags.items() if any(n in d[kind] for kind in KINDS)}
            try:
                spec = SweepSpec(**d)
            except TypeError as e:
                raise SweepError(f"bad sweep spec: {e}") from None
            trials = make_trials(spec)
            parsed, data_paths = _check_trial_args(root, spec.command, trials, spec)
            same = repeated(trials)
            if same:
                click.echo(f"note: {len(same)} of the {len(trials)} trials ({', '.join(same[:5])}"
                           f"{', ...' if len(same) > 5 else ''}) have the options of an earlier trial: "
                           f"the same run again (to repeat runs with other seeds, sweep --seed, "
                           f"e.g. --grid seed=0,1,2)", err=True)
            if dry_run:
                from bptt.sweep import trial_args
                for t in trials:
                    click.echo(f"{t['id']}: bptt {spec.command} "
                               + " ".join(trial_args(spec, t["params"]))
                               + f" --out {Path(out_dir) / 'trials' / t['id']}")
                return
            names, blobs = _mark_data(spec, data_paths, out_dir)
            steps = [p.get("steps") for p in parsed]
            max_steps = max(steps) if steps and all(isinstance(s, int) for s in steps) else None
            state = SweepState.create(out_dir, spec, trials, names, max_steps=max_steps)
            _write_data(out_dir, names, blobs)
        if json_path and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
            raise SweepError(f"--json: the folder of {json_path} does not exist")
        vals = [p.get("val_every") for p in parsed]
        grace = min(vals) if vals and all(isinstance(v, int) for v in vals) else None
        n_finished = sum(t["status"] in ("done", "stopped") for t in state.trials)
        click.echo(f"sweep of {len(state.trials)} `{spec.command}` trials in {out_dir}"
                   + (f" ({n_finished} finished before, kept)" if resume else "")
                   + f"; scheduler {spec.scheduler}")
        status = _Status(state)
        summary = run_sweep(state, address=address, cpus_per_trial=cpus_per_trial,
                            max_steps=state.plan.get("max_steps"), grace_steps=grace, on_event=status)
        status.end()
    except (SweepError, OSError, KeyboardInterrupt) as e:
        nothing_ran = state is not None and all(t["step"] == 0 and t["status"] == "pending"
                                                for t in state.trials)
        if not resume and nothing_ran:
            state.forget()   # the same command can simply be given again
        if isinstance(e, KeyboardInterrupt):   # before Ray Tune took over Ctrl-C
            fail("interrupted before any trial ran" if nothing_ran or state is None else
                 f"interrupted: continue with bptt sweep --resume --out {out_dir}", 130)
        fail(str(e))
    click.echo()
    click.echo(format_table(state, nodes=status.nodes > 1))
    write_results(state)
    best = link_best(state)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(results_json(state, summary["wall_seconds"]), f, indent=1)
    c = state.counts()
    click.echo(f"\n{c['done']} done, {c['stopped']} stopped, {c['failed']} failed, "
               f"{c['pending'] + c['running']} unfinished, in {summary['wall_seconds']:.1f} s; "
               f"results in {Path(out_dir) / 'results.csv'}")
    if best is not None:
        b = state.best()
        click.echo(f"best: {b['id']} ({', '.join(f'{k}={v}' for k, v in b['params'].items())}), "
                   f"val loss {b['best_val_loss']:.4f}; checkpoint {best}")
    if json_path:
        click.echo(f"wrote {json_path}")
    if summary["interrupted"]:
        click.echo(f"interrupted: continue with bptt sweep --resume --out {out_dir}")
        sys.exit(130)
    if c["done"] + c["stopped"] == 0:
        sys.exit(1)   # every trial failed


COMMANDS = [sweep]
