"""Layer 3: hyper-parameter sweeps, many runs of one bptt command, scheduled by Ray Tune.

The pieces, in the order a sweep uses them:

- :class:`SweepSpec`: the search space (grids, and ``uniform``, ``loguniform`` and ``choice``
  distributions), the command, the fixed arguments, the scheduler; read from a TOML file with
  :func:`load_spec` and/or built from command-line options.
- :func:`make_trials`: the list of trials, generated here with NumPy's seeded generator (not by
  Ray's searchers), so that the same spec and seed always give the same trials.
- :func:`run_sweep`: starts a local Ray (logs inside the sweep folder) or joins a cluster, puts
  the data files into the object store once, runs every unfinished trial as a Ray Tune trial
  (:mod:`bptt.sweep_trial`: one ``python -m bptt COMMAND`` process each), keeps the state of
  every trial in ``DIR/sweep.json`` after each change, and writes ``DIR/results.csv`` and
  ``DIR/best`` at the end. ``resume=True`` reruns nothing finished and resumes the rest from their
  checkpoints.

Ray is imported only inside :func:`run_sweep`; everything else runs without it.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .sweep_trial import LOG_NAME, TRIAL_COMMANDS, last_line, run_trial

STATE_NAME = "sweep.json"
RESULTS_NAME = "results.csv"
BEST_LINK = "best"
TRIALS_DIR = "trials"
RAY_DIR = "ray"
FINISHED = ("done", "stopped")   # not rerun by a resume
SCHEDULERS = ("fifo", "asha")
RANDOM_KINDS = ("uniform", "loguniform", "choice")
INSTALL_HINT = 'bptt sweep needs Ray Tune: pip install "bptt[sweep]"'


class SweepError(ValueError):
    """A sweep that cannot start or continue, for a reason the user must see (one line)."""


@dataclass
class SweepSpec:
    """A sweep: which command, which values to try, and how to schedule the trials.

    ``grid``: name -> list of values, every combination is tried. ``uniform`` / ``loguniform``:
    name -> (low, high); ``choice``: name -> list of values; ``samples`` points are drawn from
    these with ``seed`` and each is crossed with the grid. ``args``: the fixed arguments of every
    trial (data files among them, marked by :data:`DATA_MARK` once the sweep has read them).
    ``flags``: the swept names that are flag options of the command, each -> the option that
    turns it off (None: leaving the flag out); their values are true or false (:func:`as_flag`).
    None: not known (a sweep from before flags were known), booleans as ``--name``/``--no-name``.
    """
    command: str = "train"
    grid: dict = field(default_factory=dict)
    uniform: dict = field(default_factory=dict)
    loguniform: dict = field(default_factory=dict)
    choice: dict = field(default_factory=dict)
    samples: int = 1
    seed: int = 0
    scheduler: str = "fifo"
    cpus_per_trial: int | None = None
    args: list = field(default_factory=list)
    flags: dict | None = None

    def validate(self):
        if self.command not in TRIAL_COMMANDS:
            raise SweepError(f"command must be one of {', '.join(TRIAL_COMMANDS)}; got {self.command!r}")
        if self.scheduler not in SCHEDULERS:
            raise SweepError(f"scheduler must be fifo or asha; got {self.scheduler!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise SweepError(f"samples must be a positive integer; got {self.samples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SweepError(f"seed must be a non-negative integer; got {self.seed!r}")
        if self.cpus_per_trial is not None and (isinstance(self.cpus_per_trial, bool) or
                                                not isinstance(self.cpus_per_trial, int) or self.cpus_per_trial < 1):
            raise SweepError(f"cpus_per_trial must be a positive integer; got {self.cpus_per_trial!r}")
        seen = {}
        for kind in ("grid",) + RANDOM_KINDS:
            for name, values in getattr(self, kind).items():
                if name in seen:
                    raise SweepError(f"{name} is given twice, as {seen[name]} and as {kind}")
                seen[name] = kind
                if not isinstance(values, (list, tuple)) or not values:
                    raise SweepError(f"{kind} {name}: give a list of values, got {values!r}")
                if kind in ("uniform", "loguniform"):
                    if len(values) != 2:
                        raise SweepError(f"{kind} {name}: give two bounds, low,high; got {values!r}")
                    lo, hi = (_number(kind, name, v) for v in values)
                    if not lo < hi:
                        raise SweepError(f"{kind} {name}: low must be below high; got {lo}, {hi}")
                    if kind == "loguniform" and lo <= 0:
                        raise SweepError(f"loguniform {name}: the bounds must be positive; got {lo}, {hi}")
        for name in self.flags or {}:
            for kind in ("uniform", "loguniform"):
                if name in getattr(self, kind):
                    raise SweepError(f"{kind} {name}: {_opt(name)} is a flag (true or false); sweep it "
                                     f"with grid or choice")
            for kind in ("grid", "choice"):
                for v in getattr(self, kind).get(name, ()):
                    as_flag(name, v)

    def random_names(self):
        return [n for kind in RANDOM_KINDS for n in getattr(self, kind)]


def _number(kind, name, v):
    if isinstance(v, bool):
        raise SweepError(f"{kind} {name}: {v!r} is not a number")
    if isinstance(v, (int, float)):
        x = v
    else:
        try:
            x = int(v) if str(v).strip().lstrip("+-").isdigit() else float(v)
        except ValueError:
            raise SweepError(f"{kind} {name}: {v!r} is not a number") from None
    if not math.isfinite(x):
        raise SweepError(f"{kind} {name}: {v!r} is not finite")
    return x


SPEC_KEYS = {"command", "grid", "uniform", "loguniform", "choice", "samples", "seed", "scheduler",
             "cpus_per_trial", "args", "fixed"}


def load_spec(path) -> dict:
    """The entries of a TOML sweep spec as a dict (keys as :class:`SweepSpec`, plus ``fixed``:
    a table of name = value, each becoming ``--name value``). Needs Python 3.11+ (tomllib)."""
    try:
        import tomllib
    except ImportError:
        raise SweepError("TOML sweep specs need Python 3.11 or newer; give the search space as "
                         "options (--grid, --uniform, ...) instead") from None
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except OSError as e:
        raise SweepError(f"cannot read {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path}: not valid TOML ({e})") from None
    unknown = sorted(set(d) - SPEC_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown entries {', '.join(unknown)}; expected some of "
                         f"{', '.join(sorted(SPEC_KEYS))}")
    for key in ("grid", "uniform", "loguniform", "choice", "fixed"):
        if key in d and not isinstance(d[key], dict):
            raise SweepError(f"{path}: {key} must be a table ([{key}] with name = value lines)")
    if "args" in d and not (isinstance(d["args"], list) and all(isinstance(a, str) for a in d["args"])):
        raise SweepError(f"{path}: args must be a list of strings")
    return d


FLAG_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _opt(name) -> str:
    return "--" + str(name).replace("_", "-")


def as_flag(name, v) -> bool:
    """The value of a flag option: a boolean, 1 or 0, or true/false/yes/no/1/0 in any case."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in FLAG_WORDS:
        return FLAG_WORDS[v.strip().lower()]
    raise SweepError(f"{_opt(name)} is a flag: give true or false (or yes/no, 1/0); got {v!r}")


def option_args(name: str, value, flags: dict | None = None) -> list:
    """``lr`` = 0.001 -> ``["--lr", "0.001"]``; ``embed_dim`` -> ``--embed-dim``.

    ``flags``: the command's flag options, name -> the option that turns the flag off (None: the
    flag left out). A flag's value is true or false (:func:`as_flag`): true -> ``["--name"]``,
    false -> ``[off]`` or ``[]``. Without ``flags`` a boolean is taken for a ``--name/--no-name``
    flag."""
    opt = _opt(name)
    if flags is not None and name in flags:
        if as_flag(name, value):
            return [opt]
        return [flags[name]] if flags[name] else []
    if isinstance(value, bool) and flags is None:
        return [opt] if value else ["--no-" + opt[2:]]
    return [opt, format_value(value)]


def format_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"   # as TOML and click's BOOL write it
    if isinstance(v, float):
        return repr(v)   # the shortest string that reads back as the same float
    return str(v)


def _draw(rng, kind, values):
    if kind == "choice":
        return values[int(rng.integers(len(values)))]
    lo, hi = (_number(kind, "", v) for v in values)
    ints = isinstance(lo, int) and isinstance(hi, int)
    if kind == "uniform":
        return int(rng.integers(lo, hi + 1)) if ints else float(rng.uniform(lo, hi))
    x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return int(min(hi, max(lo, round(x)))) if ints else float(x)


def make_trials(spec: SweepSpec) -> list:
    """Every trial of the sweep: a list of dicts ``{"id", "params"}``, in a fixed order.

    For each of ``samples`` draws (NumPy's generator seeded with ``spec.seed``; names drawn in the
    order uniform, loguniform, choice, each sorted), every combination of the grid. With nothing
    random to draw, ``samples`` > 1 repeats the grid with the trial's ``seed`` option counting up
    from the fixed one (``--seed`` among the fixed arguments, else 0), unless ``seed`` is swept.
    """
    spec.validate()
    flags = spec.flags or {}

    def values(kind, n):   # a flag's true/yes/1 all become True, so equal trials look equal
        vs = getattr(spec, kind)[n]
        return [as_flag(n, v) for v in vs] if n in flags else list(vs)

    rng = np.random.default_rng(spec.seed)
    names = list(spec.grid)
    combos = list(itertools.product(*(values("grid", n) for n in names))) or [()]
    random_names = spec.random_names()
    repeat_seed = spec.samples > 1 and not random_names and "seed" not in spec.grid
    base_seed = _fixed_seed(spec.args) if repeat_seed else 0
    trials = []
    for s in range(spec.samples):
        drawn = {}
        for kind in RANDOM_KINDS:
            for n in sorted(getattr(spec, kind)):
                drawn[n] = _draw(rng, kind, values(kind, n))
        for combo in combos:
            params = dict(zip(names, combo))
            params.update(drawn)
            if repeat_seed:
                params["seed"] = base_seed + s
            trials.append({"id": f"t{len(trials):03d}", "params": params})
    return trials


def repeated(trials) -> list:
    """The ids of the trials whose options are those of an earlier trial: the same run again
    (a run is deterministic given its options), e.g. a choice drawn the same in two samples."""
    seen, out = set(), []
    for t in trials:
        key = json.dumps(t["params"], sort_keys=True, default=str)
        if key in seen:
            out.append(t["id"])
        seen.add(key)
    return out


def _fixed_seed(args) -> int:
    for i, a in enumerate(args):
        try:
            if a == "--seed":
                return int(args[i + 1])
            if a.startswith("--seed="):
                return int(a.split("=", 1)[1])
        except (IndexError, ValueError):
            return 0
    return 0


def trial_args(spec: SweepSpec, params: dict) -> list:
    """A trial's arguments to the command: the fixed ones, then one option per parameter."""
    args = list(spec.args)
    for name, value in params.items():
        args += option_args(name, value, spec.flags)
    return args


# ---------------------------------------------------------------------------------------------
# The sweep folder: DIR/sweep.json holds the plan and the state of every trial
# ---------------------------------------------------------------------------------------------

def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class SweepState:
    """The plan (spec, trials, data file names) and each trial's status and results, saved to
    ``DIR/sweep.json`` after every change so that a Ctrl-C or a crash loses nothing finished."""

    def __init__(self, out_dir, plan: dict):
        self.out_dir = Path(out_dir)
        self.plan = plan

    @property
    def trials(self):
        return self.plan["trials"]

    @classmethod
    def create(cls, out_dir, spec: SweepSpec, trials, data_names, max_steps=None):
        out = Path(out_dir)
        if (out / STATE_NAME).exists():
            raise SweepError(f"{out} already holds a sweep; pass --resume to continue it, or choose "
                             f"another --out folder")
        plan = {"version": 1, "spec": asdict(spec), "data": list(data_names), "max_steps": max_steps,
                "trials": [{**t, "argv": trial_args(spec, t["params"]), "status": "pending",
                            "step": 0, "best_val_loss": None, "val_loss": None, "error": None}
                           for t in trials]}
        out.mkdir(parents=True, exist_ok=True)
        state = cls(out, plan)
        state.save()
        return state

    @classmethod
    def load(cls, out_dir):
        path = Path(out_dir) / STATE_NAME
        try:
            plan = json.loads(path.read_text(encoding="utf-8"))
            plan["trials"][0]["argv"]
        except FileNotFoundError:
            raise SweepError(f"{out_dir} holds no sweep to resume ({STATE_NAME} is missing)") from None
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            raise SweepError(f"{path}: not a sweep state file ({e})") from None
        return cls(out_dir, plan)

    def forget(self) -> None:
        """Remove the state file and the data copies of a sweep in which no trial has run."""
        (self.out_dir / STATE_NAME).unlink(missing_ok=True)
        for name in self.plan["data"]:
            (self.out_dir / "data" / name).unlink(missing_ok=True)

    def spec(self) -> SweepSpec:
        return SweepSpec(**self.plan["spec"])

    def save(self) -> None:
        _atomic_write(self.out_dir / STATE_NAME, json.dumps(self.plan, indent=1) + "\n")

    def trial_dir(self, tid) -> Path:
        return (self.out_dir / TRIALS_DIR / tid).resolve()

    def by_id(self, tid) -> dict:
        return next(t for t in self.trials if t["id"] == tid)

    def counts(self) -> dict:
        c = {k: 0 for k in ("pending", "running", "done", "stopped", "failed")}
        for t in self.trials:
            c[t["status"]] = c.get(t["status"], 0) + 1
        return c

    def best(self):
        """The finished trial with the lowest best validation loss (else any trial with one)."""
        scored = [t for t in self.trials if t["best_val_loss"] is not None and math.isfinite(t["best_val_loss"])]
        good = [t for t in scored if t["status"] in FINISHED] or scored
        return min(good, key=lambda t: (t["best_val_loss"], t["id"])) if good else None

    def sorted_trials(self):
        def key(t):
            v = t["best_val_loss"]
            return (v is None or not math.isfinite(v), v if v is not None else 0.0, t["id"])
        return sorted(self.trials, key=key)

    def param_names(self):
        names = []
        for t in self.trials:
            for n in t["params"]:
                if n not in names:
                    names.append(n)
        return names


def write_results(state: SweepState) -> Path:
    """``DIR/results.csv``: one row per trial, sorted by best validation loss."""
    names = state.param_names()
    path = state.out_dir / RESULTS_NAME
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["trial", *names, "steps", "best_val_loss", "last_val_loss", "status", "node", "folder",
                    "error"])
        for t in state.sorted_trials():
            w.writerow([t["id"], *(format_value(t["params"].get(n, "")) for n in names), t["step"],
                        "" if t["best_val_loss"] is None else repr(t["best_val_loss"]),
                        "" if t["val_loss"] is None else repr(t["val_loss"]), t["status"],
                        t.get("node") or "", str(Path(TRIALS_DIR) / t["id"]), t["error"] or ""])
    os.replace(tmp, path)
    return path


def link_best(state: SweepState) -> Path | None:
    """``DIR/best``: a relative symlink to the best trial's best checkpoint (a copy where
    symlinks are not allowed). None if no trial has a validation loss."""
    best = state.best()
    if best is None:
        return None
    info = TRIAL_COMMANDS[state.plan["spec"]["command"]]
    target = Path(TRIALS_DIR) / best["id"] / info.best
    if not (state.out_dir / target).exists():
        target = Path(TRIALS_DIR) / best["id"] / info.checkpoint
        if not (state.out_dir / target).exists():
            return None
    link = state.out_dir / BEST_LINK
    tmp = state.out_dir / f".{BEST_LINK}.tmp{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(target, tmp)
    except OSError:
        shutil.copyfile(state.out_dir / target, tmp)
    os.replace(tmp, link)
    return link


def results_json(state: SweepState, wall_seconds=None) -> dict:
    best = state.best()
    return {"command": state.plan["spec"]["command"], "out": str(state.out_dir),
            "wall_seconds": wall_seconds, "counts": state.counts(),
            "best": None if best is None else {**best, "folder": str(state.trial_dir(best["id"]))},
            "trials": [{**t, "folder": str(state.trial_dir(t["id"]))} for t in state.sorted_trials()]}


def format_table(state: SweepState, nodes: bool = False) -> str:
    """Every trial, sorted by best validation loss: parameters, steps, best loss, (the node it
    ran on,) status."""
    names = state.param_names()
    head = ["trial", *names, "steps", "best val", *(["node"] if nodes else []), "status"]
    rows = []
    for t in state.sorted_trials():
        v = t["best_val_loss"]
        status = t["status"] + (f" ({t['error']})" if t["status"] == "failed" and t["error"] else "")
        rows.append([t["id"], *(format_value(t["params"].get(n, "")) for n in names), str(t["step"]),
                     "-" if v is None or not math.isfinite(v) else f"{v:.4f}",
                     *([t.get("node") or "-"] if nodes else []), status])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head) - 1)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]
    return "\n".join([fmt(head)] + [fmt(r) for r in rows])


# ---------------------------------------------------------------------------------------------
# Running: Ray Tune
# ---------------------------------------------------------------------------------------------

def _trainable(config, data=None, python_path=None):
    """The Ray Tune function trainable: one trial (see :func:`bptt.sweep_trial.run_trial`)."""
    import ray
    from ray import tune
    node = f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:8]}"
    try:   # Tune sets its session's stop_event when it stops a trial (ASHA, Ctrl-C)
        from ray.train._internal.session import get_session
        stop_event = get_session().stop_event
        should_stop = stop_event.is_set
    except Exception:   # not there in this Ray: the actor's end stops the run instead
        should_stop = None
    run_trial(config["trial"], data or [], lambda m: tune.report({**m, "node": node}),
              python_path=python_path, should_stop=should_stop)


def _short_temp_dir(target: Path):
    """A path for Ray's temp dir short enough for its unix sockets (<= 107 bytes in all):
    ``target`` itself if short, else a symlink to it under /tmp. Returns (path, link or None)."""
    target.mkdir(parents=True, exist_ok=True)
    # Ray puts sockets at <temp>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store (~70 bytes)
    if len(str(target)) <= 30:
        return str(target), None
    link = tempfile.mkdtemp(prefix="bptt-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    os.rmdir(link)
    os.symlink(target, link)
    return link, link


def _quiet_ray():
    """Ray Tune's own console output off: the sweep prints its own progress and table."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    import logging
    # CRITICAL: a failed trial is reported by the sweep in one line, not by Ray's traceback
    for name in ("ray", "ray.tune", "ray.train", "ray.air", "ray._private"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """SweepError if nothing answers at HOST:PORT (Ray itself would retry for minutes)."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise SweepError(f"--address must be auto or HOST:PORT, got {address!r}")
    import socket
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as e:
        raise SweepError(f"cannot connect to the Ray cluster at {address}: {e.strerror or e}; start it "
                         f"with `ray start --head --port {port}`") from None


def default_cpus_per_trial(n_trials: int, node_cpus: int) -> int:
    """All the cores of the largest node for a one-trial sweep, else one core per trial."""
    return max(1, int(node_cpus)) if n_trials == 1 else 1


def run_sweep(state: SweepState, *, address=None, cpus_per_trial=None, max_steps=None,
              grace_steps=None, on_event=None) -> dict:
    """Run every trial of ``state`` not yet finished, on a local Ray or on the cluster at
    ``address``; return a summary (``interrupted``, ``wall_seconds``, ``cpus_per_trial``).

    ``on_event(kind, info)`` is called on the driver: ``"ray"`` (cluster resources), ``"trial"``
    (a trial's status changed; ``info`` is the trial's entry), ``"result"`` (a validation).
    The data files are read from ``DIR/data`` (written there once by the caller) and put into
    Ray's object store once (``tune.with_parameters``); each trial writes them into its folder.
    ``max_steps`` (the longest trial) and ``grace_steps`` (the first validation) set ASHA's
    range.
    """
    try:
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    except ImportError:
        raise SweepError(INSTALL_HINT) from None
    on_event = on_event or (lambda kind, info: None)
    out = state.out_dir.resolve()
    spec = state.spec()
    todo = [t for t in state.trials if t["status"] not in FINISHED]
    for t in todo:   # what ran when the sweep last stopped is unfinished, resumed from its checkpoint
        t.update(status="pending", error=None)
    state.save()
    t0 = time.perf_counter()
    if not todo:
        return {"interrupted": False, "wall_seconds": 0.0, "cpus_per_trial": spec.cpus_per_trial}
    _quiet_ray()
    data = []
    for name in state.plan["data"]:
        data.append((name, (out / "data" / name).read_bytes()))
    link = None
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as e:
            first = next((l for l in str(e).splitlines() if l.strip()), type(e).__name__)
            raise SweepError(f"cannot connect to the Ray cluster at {address}: {first}") from None
    else:
        temp, link = _short_temp_dir(out / RAY_DIR)
        size = sum(len(b) for _, b in data)
        try:
            ray.init(_temp_dir=temp, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     object_store_memory=max(100 * 2 ** 20, 4 * size))
        except Exception as e:   # Ray's own errors (ports, auth, memory): one line, and the link goes
            if link:
                os.unlink(link)
            first = next((l for l in str(e).splitlines() if l.strip()), type(e).__name__)
            raise SweepError(f"cannot start a local Ray (its logs are in {out / RAY_DIR}): {first}") from None
    interrupted = False
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        node_cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=1)
        cpus = cpus_per_trial or spec.cpus_per_trial or default_cpus_per_trial(len(state.trials), node_cpus)
        if cpus > node_cpus:
            raise SweepError(f"--cpus-per-trial {cpus} is more than the largest node has ({int(node_cpus)} CPUs)")
        on_event("ray", {"nodes": len(nodes), "cpus": ray.cluster_resources().get("CPU", 0),
                         "cpus_per_trial": cpus, "address": address or "local"})
        configs = {t["id"]: {"id": t["id"], "command": spec.command, "argv": t["argv"],
                             "dir": str(state.trial_dir(t["id"])), "cpus": cpus} for t in todo}
        import bptt
        python_path = str(Path(bptt.__file__).resolve().parent.parent)
        trainable = tune.with_resources(tune.with_parameters(_trainable, data=data, python_path=python_path),
                                        {"cpu": cpus})
        if spec.scheduler == "asha":
            # max_t past the last step: a trial that reaches its end finishes by itself (with its
            # final checkpoint written), never stopped by the scheduler at its last validation
            scheduler = ASHAScheduler(time_attr="step", max_t=int(max_steps or 10 ** 9) + 1,
                                      grace_period=int(grace_steps or 1), reduction_factor=4)
        else:
            scheduler = FIFOScheduler()
        callback = _Progress(state, max_steps, on_event)
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([configs[t["id"]] for t in todo])},
            tune_config=tune.TuneConfig(metric="val_loss", mode="min", scheduler=scheduler,
                                        reuse_actors=True,   # a new actor per trial costs seconds
                                        trial_name_creator=lambda tr: tr.config["trial"]["id"],
                                        trial_dirname_creator=lambda tr: tr.config["trial"]["id"]),
            run_config=tune.RunConfig(name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(out / "tune"), verbose=0, callbacks=[callback],
                                      failure_config=tune.FailureConfig(max_failures=0)))
        try:
            tuner.fit()
        except KeyboardInterrupt:
            interrupted = True
        interrupted = interrupted or callback.interrupted()
        for t in todo:   # running when Ray stopped: unfinished, resumed next time
            if t["status"] in ("running", "pending"):
                t["status"] = "pending"
        state.save()
    finally:
        ray.shutdown()
        if link:
            os.unlink(link)
    return {"interrupted": interrupted, "wall_seconds": time.perf_counter() - t0, "cpus_per_trial": cpus}


def _make_progress_class():
    from ray.tune import Callback   # Ray is optional: the class is made when a sweep runs

    class Progress(Callback):
        """Keeps ``SweepState`` up to date from Tune's events, on the driver."""

        def __init__(self, state, max_steps, on_event):
            self.state, self.max_steps, self.on_event = state, max_steps, on_event
            self.completed = set()

        def _trial(self, trial):
            return self.state.by_id(trial.config["trial"]["id"])

        def _changed(self, t):
            self.state.save()
            self.on_event("trial", t)

        def on_trial_start(self, iteration, trials, trial, **info):
            t = self._trial(trial)
            t.update(status="running", error=None)
            self._changed(t)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            t = self._trial(trial)
            t["step"] = int(result.get("step", t["step"]))
            t["node"] = result.get("node", t.get("node"))
            best = result.get("best_val_loss")
            if best is not None and math.isfinite(best):
                t["best_val_loss"] = best
                t["val_loss"] = result.get("val_loss")
            if result.get("status") in ("done", "failed"):
                t["status"] = result["status"]
                t["error"] = result.get("error")
                self.completed.add(t["id"])
                self._changed(t)
            else:
                self.state.save()
                self.on_event("result", t)

        def on_trial_complete(self, iteration, trials, trial, **info):
            t = self._trial(trial)
            if t["id"] not in self.completed:   # Tune stopped it (the scheduler) before its end
                t["status"] = "stopped"
                self.completed.add(t["id"])
                self._changed(t)

        def on_trial_error(self, iteration, trials, trial, **info):
            t = self._trial(trial)
            if t["id"] in self.completed:
                return
            t["status"] = "failed"
            log = last_line(self.state.trial_dir(t["id"]) / LOG_NAME)
            t["error"] = f"the trial's Ray worker died{': ' + log if log else ''}"
            self.completed.add(t["id"])
            self._changed(t)

        def interrupted(self):
            return any(t["status"] in ("running", "pending") for t in self.state.trials)

    return Progress


def _Progress(state, max_steps, on_event):
    return _make_progress_class()(state, max_steps, on_event)
