"""Layer 3: a generic supervised trainer: minibatches of array datasets, early stopping, exact resume.

``bptt fit`` (tables, labelled text, sequence regression) and ``bptt forecast`` train through it.
It knows nothing of the model but this protocol:

The model protocol
------------------
A model object provides

- ``parameters()`` / ``gradients()``: dicts name -> live array, the same keys (as every layer);
- ``zero_grad()``;
- ``train()`` / ``eval()``: training mode (dropout on) and evaluation mode (off);
- ``loss_and_grad(batch, rng) -> float``: the mean loss over the batch, with its gradient
  *accumulated* into ``gradients()``; ``rng`` (a NumPy ``Generator``, the trainer's, saved in the
  checkpoint) draws whatever is random in a step (dropout masks);
- optionally, ``sets_gradients = True`` and ``loss_and_grad(batch, rng, accumulate=False)``,
  which *sets* ``gradients()`` to the batch's rather than adding to them: the same bits as
  ``zero_grad()`` then ``loss_and_grad(batch, rng)``, without a pass that clears them first
  (the tabular MLP: :meth:`bptt.layers.Dense.backward`);
- ``loss(batch) -> float``: the mean loss over the batch, forward only, in evaluation mode;
- ``state_dict()`` / ``load_state(state)``: the weights as a dict of arrays.

A *dataset* is a dict of arrays sharing their first dimension N (``{"x": (N, I), "y": (N,)}``, or
padded token ids and lengths); a *batch* is the same dict restricted to some rows, in order.

What the trainer does
---------------------
- Each epoch visits the training rows in a seeded permutation, ``default_rng([seed, epoch])``, in
  batches of ``batch_size`` (the last one smaller); a step is zero_grad, ``loss_and_grad`` (or
  one ``loss_and_grad`` that sets the gradients), optional clipping of the gradient norm, the
  optimiser's update (:mod:`bptt.optim`).
- Validation after every epoch (and every ``val_every`` steps, if set): the mean validation loss
  over all rows (batches weighted by their size), plus the caller's ``metrics_fn(model)`` (a dict
  of numbers: accuracy, RMSE ...). Each validation appends one JSON record to ``metrics.jsonl``
  (``{"step", "epoch", "val_loss", ...}``), as ``bptt train`` does, and saves ``checkpoint.bptt``;
  a new best validation loss also saves ``best.bptt``. Each training step appends
  ``{"step", "loss", "lr", "grad_norm", "elapsed"}``.
- Early stopping: after ``patience`` validations without a lower validation loss, training stops.
  A validation where a run paused off the schedule (Ctrl-C, --minutes, a fractional --epochs) is
  logged but counts neither for early stopping nor for best.bptt (until a scheduled one exists),
  so a resumed run stops and keeps its best exactly where one without the pause would.
  :meth:`SupervisedTrainer.restore_best` loads the best weights back.
- Budget: ``epochs`` (a total, also on resume) and/or ``minutes`` of wall-clock time.
- Exact resume: the checkpoint holds the weights, the optimiser state, the generator's state, the
  step, the epoch and the position within it, the early-stopping counters, and a fingerprint of
  the data. A run stopped anywhere (budget, Ctrl-C) and resumed gives bitwise the weights of a run
  without a break.
- Ctrl-C finishes the current step, validates, saves and returns (reason ``"interrupted"``); a
  second Ctrl-C leaves at once.
- NaN guard: a non-finite loss or gradient stops training with :class:`~bptt.train.TrainingError`
  before any weight changes; a checkpoint is written only if every weight is finite, atomically
  (:mod:`bptt.checkpoint`), so a good checkpoint is never replaced by a bad one.
- Progress: ``run(on_event)`` calls ``on_event(kind, info)`` with kinds ``"step"``, ``"val"``,
  ``"save"`` and ``"stop"`` (early stopping).

The caller puts what it needs to rebuild the model and its data pipeline (configuration,
standardisation statistics, vocabulary ...) in ``extra``, a dict stored in the checkpoint next to the
trainer's own entries, and marks the checkpoint with ``kind`` (``"table"``, ``"text"``, ``"forecast"``).
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import SavedConfig
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .optim import clip_grad_norm, make_optimizer, make_schedule
from .train import (BEST_NAME, CHECKPOINT_NAME, TrainingError, append_metrics, ctrl_c_stops, save_at_end,
                    stop_reason, trim_metrics)

RESUME_KEYS = ("kind", "supervised", "model", "optim", "rng", "step", "epoch", "pos", "data", "early")


@dataclass
class SupervisedConfig(SavedConfig):
    """The trainer's options; saved in the checkpoint under ``supervised``."""
    epochs: float | None = 100
    minutes: float | None = None
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float | None = None
    momentum: float = 0.9
    clip: float | None = None
    schedule: str = "constant"
    patience: int | None = 10
    val_every: int | None = None
    seed: int = 0

    def validate(self):
        for name in ("batch_size", "lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise ValueError(f"{name} must be positive and finite, got {v!r}")
        for name in ("epochs", "minutes", "clip", "patience", "val_every"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf):
                raise ValueError(f"{name} must be positive and finite, got {v!r}")
        if self.weight_decay is not None and not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be >= 0 and finite, got {self.weight_decay}")
        if self.epochs is None and self.minutes is None:
            raise ValueError("give a length for the run: epochs or minutes")


def dataset_size(data: dict) -> int:
    """N, the rows shared by every array of a dataset; ValueError if they disagree or N = 0."""
    if not isinstance(data, dict) or not data:
        raise ValueError("a dataset must be a non-empty dict of arrays")
    sizes = {k: len(v) for k, v in data.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the arrays of a dataset must have the same number of rows, got {sizes}")
    n = next(iter(sizes.values()))
    if n == 0:
        raise ValueError("a dataset must have at least one row")
    return n


def take(data: dict, idx) -> dict:
    """The batch of rows ``idx`` (an index array or a slice) of every array."""
    return {k: v[idx] for k, v in data.items()}


def fingerprint(*datasets) -> str:
    h = hashlib.sha256()
    for data in datasets:
        for k in sorted(data):
            a = np.ascontiguousarray(data[k])
            h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def mean_loss(model, data: dict, batch_size: int) -> float:
    """The mean of ``model.loss`` over every row of ``data``, batch by batch in order (weighted by
    batch size), in evaluation mode."""
    model.eval()
    n = dataset_size(data)
    total = 0.0
    for s in range(0, n, batch_size):
        b = take(data, slice(s, min(n, s + batch_size)))
        total += model.loss(b) * (min(n, s + batch_size) - s)
    return total / n


class SupervisedTrainer:
    """Trains ``model`` on ``train_data``, validating on ``val_data``, in the run folder ``out_dir``.

    Make one with :meth:`fresh` (refuses a folder that already holds a checkpoint) or
    :meth:`resume` (the model must be rebuilt by the caller from ``load_checkpoint(...)``'s
    ``extra`` entries first), then call :meth:`run`.
    """

    def __init__(self, model, train_data: dict, val_data: dict, config: SupervisedConfig, out_dir, *,
                 kind: str, extra: dict | None = None, metrics_fn=None, checkpoint: dict | None = None):
        config.validate()
        self.model = model
        self.train_data, self.val_data = train_data, val_data
        self.n_train = dataset_size(train_data)
        dataset_size(val_data)
        self.config = config
        self.out_dir = Path(out_dir)
        self.kind = kind
        self.extra = extra or {}
        self.metrics_fn = metrics_fn
        self.data_fingerprint = fingerprint(train_data, val_data)
        kw = {}
        if config.weight_decay is not None and config.optimizer in ("sgd", "adam", "adamw", "rmsprop", "adagrad"):
            kw["weight_decay"] = config.weight_decay
        if config.optimizer in ("sgd", "rmsprop"):
            kw["momentum"] = config.momentum
        self.optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, **kw)
        self.steps_per_epoch = -(-self.n_train // config.batch_size)
        self.total_steps = (max(1, int(math.ceil(config.epochs * self.steps_per_epoch)))
                            if config.epochs is not None else 10 ** 12)
        self.schedule = make_schedule(config.schedule, config.lr, self.total_steps)
        self.rng = np.random.default_rng([config.seed, 1])   # dropout masks and the like
        self.step = self.epoch = self.pos = 0
        self.best_val = self.best_step = self.last_val = None
        self.bad_vals = 0   # validations since the best one
        self._perm = None
        self._stop = False
        if checkpoint is not None:
            self._restore(checkpoint)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def fresh(cls, model, train_data, val_data, config, out_dir, **kw):
        out = Path(out_dir)
        if (out / CHECKPOINT_NAME).exists():
            raise TrainingError(f"{out} already holds a checkpoint; pass --resume to continue it, "
                                f"or choose another --out folder")
        return cls(model, train_data, val_data, config, out, **kw)

    @staticmethod
    def load(out_dir, kind=None) -> dict:
        """The checkpoint of the run in ``out_dir``, complete enough to resume."""
        path = Path(out_dir) / CHECKPOINT_NAME
        ckpt = load_checkpoint(path, required=RESUME_KEYS)
        if kind is not None and ckpt.get("kind") not in ((kind,) if isinstance(kind, str) else kind):
            raise CheckpointError(f"{path}: not a {kind} checkpoint (it is {ckpt.get('kind')!r})")
        return ckpt

    def _restore(self, ckpt: dict) -> None:
        path = self.out_dir / CHECKPOINT_NAME
        if ckpt["data"]["fingerprint"] != self.data_fingerprint:
            raise TrainingError(f"{path}: the data differ from those this run was trained on; resume "
                                "with the same files and options")
        try:
            self.model.load_state(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optim"])
            self.rng.bit_generator.state = ckpt["rng"]
            self.step, self.epoch, self.pos = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["pos"])
            e = ckpt["early"]
            self.best_val, self.best_step, self.bad_vals = e["best_val"], e["best_step"], int(e["bad_vals"])
            self.last_val = e.get("last_val")
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path}: checkpoint content is inconsistent ({e})") from None

    # -- checkpoints ----------------------------------------------------------------------------
    def payload(self) -> dict:
        return {
            **self.extra,
            "kind": self.kind,
            "supervised": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optim": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "step": self.step, "epoch": self.epoch, "pos": self.pos,
            "data": {"fingerprint": self.data_fingerprint, "train_rows": self.n_train,
                     "val_rows": dataset_size(self.val_data)},
            "early": {"best_val": self.best_val, "best_step": self.best_step, "bad_vals": self.bad_vals,
                      "last_val": self.last_val},
        }

    def _diverged(self, what: str) -> TrainingError:
        good = self.out_dir / CHECKPOINT_NAME
        kept = (f"the last good checkpoint is kept at {good}" if good.exists()
                else "no checkpoint had been written yet")
        return TrainingError(f"{what}; stopping: {kept}. Try a lower --lr or a --clip")

    def save(self, name=CHECKPOINT_NAME) -> Path:
        bad = [k for k, v in self.model.parameters().items() if not np.all(np.isfinite(v))]
        if bad:
            raise self._diverged(f"the weights became non-finite ({bad[0]}) at step {self.step}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / name
        save_checkpoint(path, self.payload())
        return path

    # -- training -------------------------------------------------------------------------------
    def _permutation(self):
        if self._perm is None or self._perm[0] != self.epoch:
            self._perm = (self.epoch, np.random.default_rng([self.config.seed, 0, self.epoch]).permutation(self.n_train))
        return self._perm[1]

    def train_step(self) -> dict:
        """One optimisation step on the next batch. TrainingError on a non-finite loss or gradient,
        before any weight changes."""
        c = self.config
        perm = self._permutation()
        idx = perm[self.pos:self.pos + c.batch_size]
        batch = take(self.train_data, np.sort(idx))
        self.model.train()
        if getattr(self.model, "sets_gradients", False):   # its backward sets them: no clearing pass
            loss = float(self.model.loss_and_grad(batch, self.rng, accumulate=False))
        else:
            self.model.zero_grad()
            loss = float(self.model.loss_and_grad(batch, self.rng))
        grads = self.model.gradients()
        norm = clip_grad_norm(grads, c.clip) if c.clip else math.sqrt(
            sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise self._diverged(f"the {'loss' if not math.isfinite(loss) else 'gradient'} became "
                                 f"non-finite at step {self.step + 1}")
        self.optimizer.lr = self.schedule(self.step)
        with np.errstate(over="ignore", invalid="ignore"):
            self.optimizer.step(grads)
        self.step += 1
        self.pos += len(idx)
        if self.pos >= self.n_train:
            self.epoch, self.pos = self.epoch + 1, 0
        return {"step": self.step, "loss": loss, "grad_norm": norm, "lr": self.optimizer.lr,
                "epoch": self.epoch + self.pos / self.n_train, "rows": len(idx)}

    def validate_now(self) -> dict:
        val = mean_loss(self.model, self.val_data, max(self.config.batch_size, 256))
        rec = {"step": self.step, "epoch": round(self.epoch + self.pos / self.n_train, 6), "val_loss": val}
        if self.metrics_fn is not None and math.isfinite(val):
            self.model.eval()
            rec.update(self.metrics_fn(self.model))
        return rec

    def _validate_and_save(self, on_event, scheduled: bool = True) -> bool:
        """Validate, log, save; True if early stopping says stop.

        Only ``scheduled`` validations (each epoch's end, every ``val_every`` steps) count for
        early stopping and the best weights. One off the schedule (where a run paused: Ctrl-C,
        --minutes, a fractional --epochs) is logged and reported but changes neither, so that the
        resumed run stops and keeps its best exactly where one without the pause would; it writes
        best.bptt only while no scheduled validation has."""
        rec = self.validate_now()
        val = rec["val_loss"]
        if not math.isfinite(val):
            raise self._diverged(f"the validation loss became non-finite at step {self.step}")
        self.last_val = rec
        improved = scheduled and (self.best_val is None or val < self.best_val)
        if improved:
            self.best_val, self.best_step, self.bad_vals = val, self.step, 0
        elif scheduled:
            self.bad_vals += 1
        append_metrics(self.out_dir, rec)
        if improved or self.best_val is None:
            self.save(BEST_NAME)
        path = self.save()   # after best.bptt: a checkpoint never names a best that is not on disk
        on_event("val", {**rec, "best_val": self.best_val, "improved": improved, "path": str(path)})
        return scheduled and self.config.patience is not None and self.bad_vals >= self.config.patience

    def request_stop(self) -> None:
        self._stop = True

    def run(self, on_event=None) -> dict:
        """Train until the epochs or minutes are spent, early stopping, or Ctrl-C. Returns a summary."""
        c = self.config
        on_event = on_event or (lambda kind, info: None)
        trim_metrics(self.out_dir, self.step)
        self._stop = False
        start = time.perf_counter()
        reason = "done"
        first = self.step
        if c.patience is not None and self.bad_vals >= c.patience:
            reason = "early stop"
        with ctrl_c_stops(self):
            while reason == "done" and self.step < self.total_steps:
                reason = stop_reason(self, start, c.minutes) or reason
                if reason != "done":
                    break
                t0 = time.perf_counter()
                epoch_before = self.epoch
                info = self.train_step()
                dt = time.perf_counter() - t0
                info["rows_per_sec"] = info["rows"] / dt if dt > 0 else float("inf")
                info["elapsed"] = time.perf_counter() - start
                append_metrics(self.out_dir, {k: info[k] for k in ("step", "loss", "lr", "grad_norm", "elapsed")})
                on_event("step", info)
                scheduled = self.epoch != epoch_before or bool(c.val_every and self.step % c.val_every == 0)
                if scheduled or self.step == self.total_steps:
                    if self._validate_and_save(on_event, scheduled):
                        reason = "early stop"
                        on_event("stop", {"step": self.step, "best_step": self.best_step,
                                          "best_val": self.best_val, "patience": c.patience})
        save_at_end(self, first, on_event)
        return {"reason": reason, "step": self.step, "epoch": self.epoch + self.pos / self.n_train,
                "val": self.last_val, "best_val": self.best_val, "best_step": self.best_step,
                "best_epoch": None if self.best_step is None else round(self.best_step / self.steps_per_epoch, 3),
                "elapsed": time.perf_counter() - start,
                "checkpoint": str(self.out_dir / CHECKPOINT_NAME), "best_checkpoint": str(self.out_dir / BEST_NAME)}

    def restore_best(self) -> None:
        """Load the weights of the lowest validation loss (best.bptt) into the model."""
        path = self.out_dir / BEST_NAME
        if path.exists():
            self.model.load_state(load_checkpoint(path)["model"])
