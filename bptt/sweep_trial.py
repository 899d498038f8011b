"""Layer 3: one trial of a sweep, as it runs inside a Ray worker.

A trial is one run of a bptt command (``train``, ``fit`` or ``forecast``) in a process of its own,
``python -m bptt COMMAND ARGS --out TRIAL_DIR``, with ``BPTT_THREADS`` set to the trial's cores.
The run writes its folder exactly as the command alone would (checkpoints and ``metrics.jsonl``);
this module only starts it, reads each validation record from ``metrics.jsonl`` as it appears and
hands it to Ray Tune, and stops it when Tune stops the trial. So a trial's weights are those of the
same command run alone: the process, its arguments and its data bytes are the same.

Nothing here imports Ray at module level: :func:`run_trial` takes the ``report`` function.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

LOG_NAME = "log.txt"      # the trial process's stdout and stderr
DATA_DIR = "data"         # the sweep's data files, written into each trial folder
DATA_MARK = "{data:%d}"   # stands for the i-th data file in a trial's argument list
POLL_SECONDS = 0.25


class TrialCommand:
    """What the sweep needs to know about a command whose runs are trials: the key of the
    validation loss in its ``metrics.jsonl`` records and the names of its checkpoint files."""

    def __init__(self, val_key="val_loss", checkpoint="checkpoint.bptt", best="best.bptt",
                 metrics="metrics.jsonl"):
        self.val_key, self.checkpoint, self.best, self.metrics = val_key, checkpoint, best, metrics


# One line per command that a sweep can run. fit and forecast write the same run-folder layout
# as train (checkpoint.bptt, best.bptt, metrics.jsonl with one record per validation).
TRIAL_COMMANDS = {
    "train": TrialCommand(val_key="val_loss"),
    "fit": TrialCommand(val_key="val_loss"),
    "forecast": TrialCommand(val_key="val_loss"),
}


def _set_parent_death_signal():   # runs in the child between fork and exec
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG: die with the Ray worker
    except Exception:   # not Linux: the finally in run_trial still stops the child
        pass


class MetricsTail:
    """Reads the complete lines appended to a ``metrics.jsonl`` since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_records(self):
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:   # the run trimmed the file (a resume): read it again
                    self.offset, self.partial = 0, b""
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
        return out


def last_line(path: Path, default: str = "") -> str:
    """The last non-empty line of a text file (the tail only), without a progress bar's \\r parts."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return default
    lines = [l.split("\r")[-1].strip() for l in tail.splitlines()]
    lines = [l for l in lines if l]
    return lines[-1] if lines else default


def trial_argv(command: str, argv, trial_dir: Path, data_names, resume: bool):
    """The trial process's command line: the data marks replaced by the trial's own copies."""
    data_dir = trial_dir / DATA_DIR
    args = list(argv)
    for i, name in enumerate(data_names):
        args = [str(data_dir / name) if a == DATA_MARK % i else a for a in args]
    return [sys.executable, "-m", "bptt", command, *args, "--out", str(trial_dir),
            *(["--resume"] if resume else [])]


def _write_data(trial_dir: Path, data) -> None:
    """Write the sweep's data files into the trial folder (atomically; kept if already there)."""
    if not data:
        return
    d = trial_dir / DATA_DIR
    d.mkdir(parents=True, exist_ok=True)
    for name, blob in data:
        path = d / name
        if path.exists() and path.stat().st_size == len(blob):
            continue
        tmp = d / f".{name}.tmp{os.getpid()}"
        tmp.write_bytes(blob)
        os.replace(tmp, path)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _exit_reason(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


def run_trial(spec: dict, data, report, python_path: str | None = None, should_stop=None) -> dict | None:
    """Run one trial to its end, calling ``report(metrics)`` at every validation.

    ``spec``: ``id``, ``command``, ``argv`` (with data marks), ``dir`` (the trial folder),
    ``cpus``. ``data``: a list of (file name, bytes). A run folder that already holds a checkpoint
    is resumed (``--resume``), exactly as ``bptt COMMAND --resume`` would. Returns the final
    metrics, which are also reported: ``status`` is ``done`` or ``failed`` (with ``error``, the
    run's last log line). When ``should_stop()`` turns true (Tune stopped the trial), the run is
    stopped and None returned, with nothing more reported.
    """
    info = TRIAL_COMMANDS[spec["command"]]
    trial_dir = Path(spec["dir"])
    trial_dir.mkdir(parents=True, exist_ok=True)
    _write_data(trial_dir, data)
    resume = (trial_dir / info.checkpoint).exists()
    if not resume:   # records of a run that never saved a checkpoint are not a history to resume
        (trial_dir / info.metrics).unlink(missing_ok=True)
    names = [name for name, _ in data]
    cmd = trial_argv(spec["command"], spec["argv"], trial_dir, names, resume)
    env = dict(os.environ)
    cpus = str(int(spec["cpus"]))
    env.update(BPTT_THREADS=cpus, OMP_NUM_THREADS=cpus, PYTHONUNBUFFERED="1")
    if python_path:
        env["PYTHONPATH"] = python_path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    tail = MetricsTail(trial_dir / info.metrics)
    best = math.inf
    last = {"step": 0}

    def forward(records):
        nonlocal best
        for rec in records:
            if info.val_key not in rec or rec.get("step", 0) <= last["step"]:
                continue   # a training-step record, or one already reported
            val = float(rec[info.val_key])
            best = min(best, val)
            last.update(step=int(rec.get("step", 0)), val=val)
            report({"val_loss": val, "best_val_loss": best, "step": last["step"], "status": "running"})

    log_path = trial_dir / LOG_NAME
    with open(log_path, "ab") as log:
        log.write((" ".join(cmd[1:]) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=str(trial_dir), start_new_session=True,
                                preexec_fn=_set_parent_death_signal if sys.platform == "linux" else None)
        try:
            while proc.poll() is None:
                forward(tail.new_records())
                if should_stop is not None and should_stop():
                    return None
                time.sleep(POLL_SECONDS)
            forward(tail.new_records())
        finally:   # Tune stopped the trial (early stopping, Ctrl-C): stop the run with it
            _stop(proc)
    rc = proc.returncode
    final = {"val_loss": last.get("val", best), "best_val_loss": best, "step": last["step"]}
    tail_line = last_line(log_path)
    if rc != 0:
        final.update(status="failed", error=f"{_exit_reason(rc)}: {tail_line}" if tail_line else _exit_reason(rc))
    elif tail_line.startswith("interrupted"):   # someone sent the run a SIGINT: it saved and left
        final.update(status="failed", error=tail_line)
    else:
        final.update(status="done")
    report(final)
    return final
