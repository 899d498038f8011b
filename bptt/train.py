"""Layer 3: training a language model with truncated BPTT, with exact resume.

One step: take the next chunk (B streams × T tokens) from the :class:`~bptt.data.StreamBatcher`,
run forward and full BPTT over the chunk from the hidden state carried from the previous chunk,
clip the gradients, let the optimiser update the weights, and carry the final hidden state
(detached) into the next chunk. At the start of each epoch the carried state is reset to zero.

Everything a step depends on is in the checkpoint: weights, optimiser state, the carried hidden
state, the batcher's position, the step count and the RNG state. So N steps, then a resume to 2N,
gives bitwise the same weights as 2N steps without a break (with a schedule whose shape does not
depend on the total, i.e. constant or step; a cosine schedule is exact when resumed with the same
``steps``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import SavedConfig
from .checkpoint import CheckpointError, _check_required, check_output_folder, load_checkpoint, save_checkpoint
from .data import DataError, StreamBatcher, fit_tokenizer, load_corpus, split_train_val, tokenizer_from_dict
from .model import CELLS, LanguageModel, LMConfig
from .optim import clip_grad_norm, clip_grad_value, make_optimizer, make_schedule

CHECKPOINT_NAME = "checkpoint.bptt"
METRICS_NAME = "metrics.jsonl"
BEST_NAME = "best.bptt"   # the checkpoint of the lowest validation loss so far
# What a language-model checkpoint must hold to be loaded for use, and to resume training.
MODEL_KEYS = ("config.seq_len", "config.batch_size", "model_config", "model", "tokenizer")
RESUME_KEYS = MODEL_KEYS + ("step", "optim", "batcher", "rng", "data.fingerprint", "metrics")



@contextlib.contextmanager
def ctrl_c_stops(trainer):
    """While inside: the first Ctrl-C calls ``trainer.request_stop()`` (the run finishes its step,
    validates, saves and returns), a second raises KeyboardInterrupt at once. The handler that was
    there before is put back on the way out. Off the main thread (no signals there) nothing is
    installed. Every trainer's ``run`` loop runs inside it."""
    def handler(signum, frame):
        if trainer._stop:
            raise KeyboardInterrupt   # a second Ctrl-C: leave at once
        trainer.request_stop()

    try:
        old = signal.signal(signal.SIGINT, handler)
    except ValueError:   # not the main thread
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)



def stop_reason(trainer, start: float, minutes) -> str | None:
    """Why a run loop stops before its next step: ``"interrupted"`` (Ctrl-C, or
    ``request_stop``), ``"time"`` (the ``minutes`` since ``start`` are spent), or None to go on."""
    if trainer._stop:
        return "interrupted"
    if minutes is not None and time.perf_counter() - start > 60 * minutes:
        return "time"
    return None


def save_at_end(trainer, first_step: int, on_event) -> None:
    """After a run loop: validate and save the last step if the run made steps its last
    validation did not see; otherwise make sure a checkpoint exists (a run with nothing left to
    do still leaves one), with a ``"save"`` event."""
    if trainer.step > first_step and (trainer.last_val is None or trainer.last_val.get("step") != trainer.step):
        trainer._validate_and_save(on_event, scheduled=False)   # off the schedule: where the run paused
    elif not (trainer.out_dir / CHECKPOINT_NAME).exists():
        on_event("save", {"path": str(trainer.save()), "step": trainer.step})


def append_metrics(out_dir: Path, record: dict) -> None:
    """Add one JSON record as a line of the run's metrics.jsonl (every trainer writes it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / METRICS_NAME, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def trim_metrics(out_dir: Path, step: int) -> None:
    """On resume, drop the metric lines written after the checkpoint at ``step`` (a crash between
    saves), so that the resumed run's records continue the file exactly once."""
    path = out_dir / METRICS_NAME
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    path.write_text("".join(l + "\n" for l in keep), encoding="utf-8")


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must see (a NaN loss, a bad resume)."""


@dataclass
class TrainConfig(SavedConfig):
    """Every option of a training run. Saved in the checkpoint."""
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embed_dim: int = 64
    dropout: float = 0.0
    tokenizer: str = "char"
    max_vocab: int = 10000
    seq_len: int = 64
    batch_size: int = 32
    steps: int | None = 1000
    epochs: float | None = None
    minutes: float | None = None
    lr: float = 2e-3
    optimizer: str = "adam"
    weight_decay: float | None = None
    momentum: float = 0.9
    clip: float | None = 1.0
    clip_value: float | None = None
    schedule: str = "constant"
    warmup: int = 0
    lr_step_size: int = 1000
    lr_gamma: float = 0.5
    val_every: int = 200
    val_fraction: float = 0.1
    val_tokens: int = 100_000
    save_every: int | None = None
    seed: int = 0
    dtype: str = "float32"
    sources: list = field(default_factory=list)

    # The options of `bptt train` that a resumed run keeps (--steps, --epochs, --minutes may change).
    RESUME_FIXED = ("cell", "hidden", "layers", "embed_dim", "dropout", "tokenizer", "max_vocab", "seq_len",
                    "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule", "warmup",
                    "lr_step_size", "lr_gamma", "clip", "clip_value", "val_every", "val_tokens", "seed",
                    "dtype")

    def as_options(self) -> dict:
        """The run's fixed options as `bptt train` takes them (its click parameter names and value
        types): what ``--resume`` compares the command line against. A default that depends on
        another option is resolved (weight decay: 0, or 0.01 for adamw), and no clipping is
        ``--clip 0``."""
        opts = {k: getattr(self, k) for k in self.RESUME_FIXED}
        if opts["weight_decay"] is None:
            opts["weight_decay"] = 0.01 if self.optimizer == "adamw" else 0.0
        if not opts["clip"]:
            opts["clip"] = 0.0
        return opts

    def validate(self):
        def pos(name, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise ValueError(f"{name} must be positive and finite, got {v!r}")
        for name in ("hidden", "layers", "embed_dim", "seq_len", "batch_size", "lr", "val_every",
                     "max_vocab", "val_tokens"):
            pos(name)
        for name in ("steps", "epochs", "minutes", "clip", "clip_value", "save_every"):
            pos(name, allow_none=True)
        if self.weight_decay is not None and not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be >= 0 and finite, got {self.weight_decay}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {self.cell!r}")
        if self.tokenizer not in ("char", "word"):
            raise ValueError(f"tokenizer must be char or word; got {self.tokenizer!r}")
        if isinstance(self.dropout, bool) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.steps is None and self.epochs is None and self.minutes is None:
            raise ValueError("give a length for the run: steps, epochs or minutes")


def unigram_baseline(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of the validation tokens under the training set's unigram
    distribution, with add-one smoothing: the loss of a model that ignores context."""
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val_ids].mean())


def metrics_summary(nats: float, tokenizer_kind: str) -> dict:
    """Loss in nats per token, bits per token (= bits per character for a char model), perplexity."""
    return {"nats": nats, "bits": nats / math.log(2), "ppl": math.exp(min(nats, 700.0)),
            "unit": "bpc" if tokenizer_kind == "char" else "bits/word"}


def evaluate(model: LanguageModel, ids: np.ndarray, *, batch_size: int, seq_len: int,
             max_tokens: int | None = None, whole: bool = False) -> float:
    """Mean cross-entropy (nats/token) of ``model`` over ``ids``, read as B streams with the hidden
    state carried across chunks, exactly as in training. At most ``max_tokens`` are used.

    The chunks cover B·T·⌊S/T⌋ of the N − 1 targets (validation during training scores those).
    ``whole`` scores every target: each stream's last S mod T tokens as one shorter chunk, then
    the N − 1 − B·S after the last stream as its continuation (from its final state), so every
    token after the first is predicted exactly once, with its full left context in its stream."""
    if max_tokens is not None and ids.size > max_tokens + 1:
        ids = ids[:max_tokens + 1]
    B = max(1, min(batch_size, (ids.size - 1) // seq_len))
    T = min(seq_len, ids.size - 1)
    batcher = StreamBatcher(ids, B, T)
    state = None
    total = 0.0
    count = 0
    for batch in batcher.iter_epoch():
        loss, n, state = model.loss(batch.x, batch.y, state)
        total += loss * n
        count += n
    if whole:
        rest = batcher.remainder()
        if rest is not None:
            loss, n, state = model.loss(rest[0], rest[1], state)
            total += loss * n
            count += n
        end = B * batcher.stream_len   # the last stream's last input is ids[end - 1]
        if end < ids.size - 1:
            row = lambda a: np.ascontiguousarray(a[:, -1:])   # (L, 1, H): stream B-1's state
            last = tuple(row(a) for a in state) if isinstance(state, tuple) else row(state)
            x, y = ids[end:-1].reshape(1, -1), ids[end + 1:].reshape(1, -1)
            loss, n, _ = model.loss(np.ascontiguousarray(x), np.ascontiguousarray(y), last)
            total += loss * n
            count += n
    return total / count


def load_lm_checkpoint(path, required=MODEL_KEYS) -> dict:
    """A language-model checkpoint's payload. CheckpointError (one line) if the file is bad, is
    not a language-model checkpoint, or lacks one of the ``required`` entries."""
    ckpt = load_checkpoint(path, required=required)
    if ckpt.get("kind") != "lm":
        raise CheckpointError(f"{path}: not a language-model checkpoint")
    return ckpt


def corpus_fingerprint(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


class Trainer:
    """Builds (or resumes) a run in ``out_dir`` and trains it.

    Use :meth:`fresh` or :meth:`resume` to make one, then :meth:`run`. ``run`` takes a callback
    ``on_event(kind, info)`` (kinds: ``"step"``, ``"val"``, ``"save"``) for progress display.
    """

    def __init__(self, config: TrainConfig, out_dir, text: str | None = None, checkpoint: dict | None = None):
        self.out_dir = Path(out_dir)
        self.config = config
        config.validate()
        if checkpoint is None:
            self.tokenizer = fit_tokenizer(config.tokenizer, text, max_vocab=config.max_vocab)
        else:
            self.tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])
        ids = self.tokenizer.encode(text)
        self.fingerprint = corpus_fingerprint(ids)
        try:
            self.train_ids, self.val_ids = split_train_val(ids, config.val_fraction,
                                                           min_tokens=config.seq_len + 1)
        except ValueError:   # its advice (a larger val_fraction) is no option of `bptt train`
            raise DataError(f"the text has {ids.size:,} tokens, too few for a training and a "
                            f"{config.val_fraction:.0%} validation part of at least --seq-len + 1 = "
                            f"{config.seq_len + 1} tokens each (about {self._min_tokens():,} tokens in "
                            "all): use more text or a smaller --seq-len") from None
        self.batcher = StreamBatcher(self.train_ids, config.batch_size, config.seq_len)
        self.model_config = LMConfig(vocab_size=self.tokenizer.vocab_size, cell=config.cell,
                                     hidden=config.hidden, layers=config.layers,
                                     embed_dim=config.embed_dim, dtype=config.dtype, seed=config.seed,
                                     dropout=config.dropout)
        self.model = LanguageModel(self.model_config)
        kw = {}
        if config.weight_decay is not None and config.optimizer in ("sgd", "adam", "adamw"):
            kw["weight_decay"] = config.weight_decay
        if config.optimizer in ("sgd", "rmsprop"):
            kw["momentum"] = config.momentum
        self.optimizer = make_optimizer(config.optimizer, self.model.parameters(), config.lr, **kw)
        self.total_steps = self._total_steps()
        self.schedule = make_schedule(config.schedule, config.lr, self.total_steps, warmup=config.warmup,
                                      step_size=config.lr_step_size, gamma=config.lr_gamma)
        self.rng = np.random.default_rng(config.seed)
        self.step = 0
        self.state = None
        self.unigram = unigram_baseline(self.train_ids, self.val_ids, self.tokenizer.vocab_size)
        self.best_val = None
        self.best_step = None
        self.last_val = None
        self._stop = False
        if checkpoint is not None:
            self._restore(checkpoint)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def fresh(cls, config: TrainConfig, out_dir, text: str):
        out = Path(out_dir)
        if (out / CHECKPOINT_NAME).exists():
            raise TrainingError(f"{out} already holds a checkpoint; pass --resume to continue it, "
                                f"or choose another --out folder")
        check_output_folder(out)
        return cls(config, out, text)

    @classmethod
    def resume(cls, out_dir, *, steps=None, epochs=None, minutes=None, text: str | None = None,
               check_config=None):
        """The run in ``out_dir``, to continue up to ``steps`` (or ``epochs``; None: its own).
        ``check_config(config)``, if given, sees the saved :class:`TrainConfig` first (the CLI
        refuses changed options there). TrainingError if the run is already past ``steps``."""
        out = Path(out_dir)
        ckpt = load_lm_checkpoint(out / CHECKPOINT_NAME, required=RESUME_KEYS)
        config = TrainConfig.from_dict(ckpt["config"])
        if check_config is not None:
            check_config(config)
        if steps is not None or epochs is not None:
            config.steps, config.epochs = steps, epochs
        config.minutes = minutes
        if text is None:
            try:
                text = load_corpus(config.sources or None)
            except DataError as e:
                raise DataError(f"cannot read the text this run recorded ({', '.join(config.sources)}, "
                                f"paths as given when it started): {e}; pass the text files to resume "
                                f"with: bptt train FILE ... --resume --out {out}") from None
        trainer = cls(config, out, text, checkpoint=ckpt)
        if trainer.step > trainer.total_steps:
            what = f"--steps {steps}" if steps is not None and trainer.total_steps == steps else \
                f"its {trainer.total_steps} steps"
            raise TrainingError(f"{out} is already at step {trainer.step}, past {what}: give a larger "
                                "--steps (a total, not a number of more steps)")
        return trainer

    def _min_tokens(self) -> int:
        """The fewest tokens the split accepts at this --seq-len (both parts need T + 1)."""
        need = self.config.seq_len + 1
        n = need
        while not (n - round(n * self.config.val_fraction) >= need and round(n * self.config.val_fraction) >= need):
            n += 1
        return n

    def _total_steps(self) -> int:
        c = self.config
        n = []
        if c.steps is not None:
            n.append(int(c.steps))
        if c.epochs is not None:
            n.append(max(1, int(math.ceil(c.epochs * self.batcher.num_chunks))))
        return min(n) if n else 10 ** 12

    def _restore(self, ckpt: dict) -> None:
        if ckpt["data"]["fingerprint"] != self.fingerprint:
            raise TrainingError("the text differs from the one this run was trained on; resume with "
                                "the same files (or none, for the built-in corpus)")
        try:
            self.model.load_state(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optim"])
            self.batcher.load_state_dict(ckpt["batcher"])
            self.state = self.model.state_from_arrays(ckpt.get("carry") or {})
            self.rng.bit_generator.state = ckpt["rng"]
            self.step = int(ckpt["step"])
            self.best_val = ckpt["metrics"].get("best_val")
            self.best_step = ckpt["metrics"].get("best_step")
            self.last_val = ckpt["metrics"].get("val")
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{self.out_dir / CHECKPOINT_NAME}: checkpoint content is "
                                  f"inconsistent ({e})") from None

    # -- checkpoints ----------------------------------------------------------------------------
    def payload(self) -> dict:
        return {
            "kind": "lm",
            "config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "optim": self.optimizer.state_dict(),
            "carry": {k: v.copy() for k, v in self.model.state_arrays(self.state).items()},
            "batcher": self.batcher.state_dict(),
            "rng": self.rng.bit_generator.state,
            "data": {"fingerprint": self.fingerprint, "train_tokens": int(self.train_ids.size),
                     "val_tokens": int(self.val_ids.size)},
            "metrics": {"val": self.last_val, "best_val": self.best_val, "best_step": self.best_step,
                        "unigram": self.unigram},
        }

    def save(self, name: str = CHECKPOINT_NAME) -> Path:
        """Write the checkpoint (or ``best.bptt``); TrainingError, and the previous one kept, if
        any weight is not finite."""
        bad = [k for k, v in self.model.parameters().items() if not np.all(np.isfinite(v))]
        if bad:
            more = f" and {len(bad) - 2} more" if len(bad) > 2 else ""
            raise self._diverged(f"the weights became non-finite ({', '.join(bad[:2])}{more}) at step {self.step}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / name
        save_checkpoint(path, self.payload())
        return path

    # -- training -------------------------------------------------------------------------------
    def validate_now(self) -> float:
        c = self.config
        return evaluate(self.model, self.val_ids, batch_size=c.batch_size, seq_len=c.seq_len,
                        max_tokens=c.val_tokens)

    def train_step(self) -> dict:
        """One optimisation step on the next chunk. Raises TrainingError on a non-finite loss or
        gradient, before any weight changes."""
        c = self.config
        batch = next(self.batcher)
        state = None if batch.reset else self.state
        self.model.zero_grad()
        # dropout masks come from the run's generator, saved in the checkpoint: resume is exact
        kw = {"rng": self.rng} if c.dropout else {}
        loss, new_state = self.model.loss_and_grad(batch.x, batch.y, state, **kw)
        grads = self.model.gradients()
        norm = clip_grad_norm(grads, c.clip) if c.clip else math.sqrt(
            sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise self._diverged(f"the loss became {'non-finite' if not math.isfinite(loss) else 'finite but the gradient non-finite'} "
                                 f"({loss}) at step {self.step + 1}")
        if c.clip_value:
            clip_grad_value(grads, c.clip_value)
        self.optimizer.lr = self.schedule(self.step)
        with np.errstate(over="ignore", invalid="ignore"):  # a diverged update is caught before saving
            self.optimizer.step(grads)
        self.state = new_state
        self.step += 1
        return {"step": self.step, "loss": loss, "grad_norm": norm, "lr": self.optimizer.lr,
                "epoch": batch.epoch}

    def run(self, on_event=None) -> dict:
        """Train until the step/epoch/time budget is spent, or Ctrl-C. Saves a checkpoint at each
        validation, at the end and on interrupt. Returns a summary dict."""
        c = self.config
        on_event = on_event or (lambda kind, info: None)
        trim_metrics(self.out_dir, self.step)
        self._stop = False
        start = time.perf_counter()
        tokens = c.batch_size * c.seq_len
        reason = "done"
        first_step = self.step
        with ctrl_c_stops(self):
            while self.step < self.total_steps:
                reason = stop_reason(self, start, c.minutes) or reason
                if reason != "done":
                    break
                t0 = time.perf_counter()
                info = self.train_step()
                dt = time.perf_counter() - t0
                info["tokens_per_sec"] = tokens / dt if dt > 0 else float("inf")
                info["elapsed"] = time.perf_counter() - start
                append_metrics(self.out_dir, {k: info[k] for k in ("step", "loss", "lr", "grad_norm", "tokens_per_sec", "elapsed")})
                on_event("step", info)
                if self.step % c.val_every == 0 or self.step == self.total_steps:
                    self._validate_and_save(on_event)
                elif c.save_every and self.step % c.save_every == 0:
                    on_event("save", {"path": str(self.save()), "step": self.step})
        save_at_end(self, first_step, on_event)
        return {"reason": reason, "step": self.step, "val": self.last_val, "unigram": self.unigram,
                "elapsed": time.perf_counter() - start, "checkpoint": str(self.out_dir / CHECKPOINT_NAME),
                "best_val": self.best_val, "best_step": self.best_step,
                "best_checkpoint": str(self.out_dir / BEST_NAME)}

    def request_stop(self) -> None:
        """Finish the current step, then validate, save and return (what Ctrl-C does)."""
        self._stop = True

    def _diverged(self, what: str) -> TrainingError:
        good = self.out_dir / CHECKPOINT_NAME
        kept = (f"the last good checkpoint is kept at {good}" if good.exists()
                else "no checkpoint had been written yet")
        return TrainingError(f"{what}; stopping: {kept}. Try a lower --lr or a --clip")

    def _validate_and_save(self, on_event, scheduled: bool = True) -> None:
        # ``scheduled`` (every val_every steps) or not (where the run paused): a language model's
        # run has no early stopping, so every validation may pick best.bptt; the weights of a
        # resumed run are exact either way.
        val = self.validate_now()
        if not math.isfinite(val):
            raise self._diverged(f"the validation loss became non-finite ({val}) at step {self.step}")
        rec = {"step": self.step, "val_loss": val, **{f"val_{k}": v for k, v in
                                                      metrics_summary(val, self.tokenizer.kind).items() if k != "unit"}}
        self.last_val = rec
        improved = self.best_val is None or val < self.best_val
        if improved:
            self.best_val, self.best_step = val, self.step
        append_metrics(self.out_dir, rec)
        if improved:   # a long run overfits: keep the weights of the best validation loss too
            self.save(BEST_NAME)
        path = self.save()   # after best.bptt: a checkpoint never names a best that is not on disk
        on_event("val", {**rec, "unigram": self.unigram, "unit": metrics_summary(val, self.tokenizer.kind)["unit"],
                         "path": str(path)})


def load_model(path, command: str | None = None):
    """A trained :class:`LanguageModel` and its tokenizer from a checkpoint file (or run folder);
    for a text classifier's checkpoint (``bptt fit --text``), its :class:`~bptt.sequence.SequenceModel`
    (the best weights, for a run folder), whose ``pooled`` state ``embed_texts`` uses.

    With ``command`` (``"sample"``, ``"eval"``: what needs next-token predictions) a text
    classifier's checkpoint is a CheckpointError naming it, instead."""
    path = folder = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") == "text" and command:
        raise CheckpointError(f"{folder}: a text-classifier checkpoint of `bptt fit`, which `bptt {command}` "
                              "cannot use (it predicts labels, not the next token); give a language "
                              "model of `bptt train` (a classifier can `bptt embed` and `bptt search`)")
    if ckpt.get("kind") == "text":   # a text classifier of `bptt fit --text`: its pooled encoder state
        from .fitting import load_fit_checkpoint, model_from_checkpoint
        from .sequence import text_encoder_from_dict
        ckpt, path = load_fit_checkpoint(folder)   # a run folder: its best.bptt
        return model_from_checkpoint(ckpt, path), text_encoder_from_dict(ckpt["encoder"]).tokenizer, ckpt
    if ckpt.get("kind") != "lm":
        if command:
            raise CheckpointError(f"{path}: not a language-model checkpoint of `bptt train`, which "
                                  f"`bptt {command}` needs")
        raise CheckpointError(f"{path}: not a language-model or text-classifier checkpoint")
    _check_required(str(path), ckpt, MODEL_KEYS)
    try:
        model = LanguageModel(LMConfig.from_dict(ckpt["model_config"]))
        model.load_state(ckpt["model"])
        tok = tokenizer_from_dict(ckpt["tokenizer"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: checkpoint content is inconsistent ({e})") from None
    return model, tok, ckpt
