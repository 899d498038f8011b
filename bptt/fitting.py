"""Layer 3: what ``bptt fit`` and ``bptt predict`` do, from files (or a demo) to a trained run.

- :func:`prepare` reads the data (:mod:`bptt.tabular` for tables and labelled text,
  :mod:`bptt.demos` for the built-in sets), splits it and builds the model, as a :class:`Job`;
- :func:`train_job` trains it with :class:`bptt.supervised.SupervisedTrainer` (or resumes), then
  reloads the weights of the best validation loss and computes the final metrics next to the
  baseline's (:func:`evaluate_job`);
- :func:`predict_file` applies a ``table`` or ``text`` checkpoint to a CSV file.

The checkpoint (``kind`` ``"table"``, ``"text"`` or ``"sequence"``) holds, besides the trainer's
entries, ``fit`` (the options), ``model_spec`` (how to rebuild the model) and ``encoder`` (the
feature statistics, classes, tokenizer): everything ``predict`` needs.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import SavedConfig
from .checkpoint import CheckpointError, load_checkpoint
from .data import DataError
from .supervised import BEST_NAME, CHECKPOINT_NAME, SupervisedConfig, SupervisedTrainer
from .tabular import (Encoder, TabularMLP, Table, baseline_metrics, canonical_label, class_label,
                      classification_metrics, column_kind, confusion_matrix, decimal_comma_example,
                      detect_task, drop_missing, empty_columns, label_spellings, output_size,
                      probabilities, read_csv, regression_metrics, split_rows)

DEMOS = ("spirals", "adding")


@dataclass
class FitOptions(SavedConfig):
    """Every option of ``bptt fit`` that shapes the data and the model (saved as ``fit``)."""
    data: str | None = None
    target: str | None = None
    text: str | None = None
    features: list | None = None
    drop: list = field(default_factory=list)
    task: str | None = None
    header: bool | None = None
    missing: str = "error"
    val: str | None = None
    val_fraction: float = 0.2
    hidden: list = field(default_factory=lambda: [64, 64])
    activation: str = "relu"
    dropout: float = 0.0
    cell: str = "lstm"
    layers: int = 1
    bidirectional: bool = False
    pool: str = "last"
    tokenizer: str = "char"
    embed_dim: int = 32
    rnn_hidden: int = 64
    max_vocab: int = 10000
    max_len: int = 400
    demo: str | None = None
    length: int = 100
    samples: int | None = None
    dtype: str = "float32"
    seed: int = 0


@dataclass
class Job:
    """A prepared fit: the model, its datasets, and what the report needs."""
    kind: str
    task: str
    model: object
    train: dict
    val: dict
    encoder: object
    spec: dict
    notes: list
    y_train: np.ndarray = None     # targets in the target's units (regression) or class ids
    y_val: np.ndarray = None
    labels: list = None            # printable class labels


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------

def _names(spec) -> list:
    if spec is None:
        return []
    if isinstance(spec, str):
        spec = spec.split(",")
    return [s.strip() for s in spec if s.strip()]


def _select(table: Table, opts: FitOptions):
    """(target index, feature indices)."""
    if opts.target is None:
        raise DataError("give the target column with --target COL (a name, or a position such as -1)")
    t = table.index_of(opts.target, "target column")
    drop = {table.index_of(d, "column") for d in _names(opts.drop)}
    if opts.features is not None:
        feats = [table.index_of(f, "feature column") for f in _names(opts.features)]
        if t in feats:
            raise DataError(f"{table.path}: column {table.names[t]!r} is the target; it cannot also be a feature")
    else:
        feats = [j for j in range(len(table.names)) if j != t and j not in drop]
    if opts.text is None and not feats:
        raise DataError(f"{table.path}: no feature columns left (the target is {table.names[t]!r})")
    return t, feats


def _plural(n, word):
    return f"{n} {word}{'s' * (n != 1)}"


def _empty_features(table: Table, t: int, feats: list, opts: FitOptions, notes: list) -> list:
    """``feats`` without the columns no cell of which is filled: an unnamed one (Excel's trailing
    delimiter) is left out with a note; a named one, or an empty target, is a DataError."""
    if empty_columns(table, [t]):
        raise DataError(f"{table.path}, column {table.names[t]!r}: the target is missing in every row")
    for j in empty_columns(table, feats):
        name = table.names[j]
        if j in table.unnamed and opts.features is None:
            feats = [f for f in feats if f != j]
            notes.append(f"note: left out column {name!r}: it has no name and is empty in every row")
        else:
            how = f"--drop {name}" if opts.features is None else "leave it out of --features"
            raise DataError(f"{table.path}, column {name!r}: every cell is missing; {how}")
    if not feats:
        raise DataError(f"{table.path}: no feature columns left (the target is {table.names[t]!r})")
    return feats


def _table_job(table: Table, opts: FitOptions, val_table: Table | None, encoder_dict=None) -> Job:
    t, feats = _select(table, opts)
    notes = []
    feats = _empty_features(table, t, feats, opts, notes)
    table, dropped = drop_missing(table, feats + [t], opts.missing)
    if dropped:
        notes.append(f"dropped {_plural(dropped, 'row')} with missing values")
    kinds = [column_kind(table, j) for j in feats]
    for j, kind in zip(feats, kinds):
        n_cat = len(set(table.column(j))) if kind == "categorical" else 0
        if n_cat > 100 and n_cat > len(table) / 2:
            notes.append(f"note: column {table.names[j]!r} has {n_cat} distinct strings, one-hot encoded; "
                         "--drop it if it is an identifier or free text")
    for j in [j for j, kind in zip(feats, kinds) if kind == "categorical"] + [t]:
        example = decimal_comma_example(table.column(j))
        if example is not None:
            notes.append(f"note: column {table.names[j]!r} holds numbers written with a comma (such as "
                         f"{example!r}), read as text, not numbers; write them with a decimal point to use them as numbers")
    task, classes, numeric_labels, why = detect_task(table, t, opts.task)
    notes.append(f"task: {task} ({why}{'' if opts.task else '; --task overrides'})")
    if val_table is not None:
        val_table, vdropped = drop_missing(val_table, [val_table.index_of(table.names[j], "column") for j in feats + [t]],
                                           opts.missing)
        if vdropped:
            notes.append(f"dropped {_plural(vdropped, 'row')} with missing values from {val_table.path}")
        train_rows, val_rows = np.arange(len(table)), None
    else:
        strat = None
        if task != "regression":
            pos = {c: k for k, c in enumerate(classes)}
            strat = np.array([pos[canonical_label(r[t], numeric_labels)] for r in table.rows])
        train_rows, val_rows = split_rows(len(table), strat, opts.val_fraction, opts.seed, table.path)
    if encoder_dict is None:
        enc = Encoder.fit(table, feats, kinds, t, task, train_rows, classes)
        enc.stats["numeric_labels"] = bool(numeric_labels)
        enc.stats["has_header"] = bool(table.has_header)
        enc.stats["n_columns"] = len(table.names)
        enc.stats["columns"] = list(table.names)   # predict accepts any of them
        if task != "regression":
            enc.stats["labels"] = label_spellings(table, t, classes, numeric_labels)
    else:
        enc = Encoder.from_dict(encoder_dict)
    tr = table.subset(train_rows)
    va = val_table if val_table is not None else table.subset(val_rows)
    if val_table is not None:
        unseen = enc.unknown_categories(va)
        if unseen:
            n = sum(unseen.values())
            notes.append(f"note: {_plural(n, 'cell')} of {va.path} hold categories the training rows do not have ("
                         + ", ".join(f"{k}: {v}" for k, v in unseen.items()) + "), encoded as all zeros")
    Xtr, ytr = enc.encode_x(tr), enc.encode_y(tr)
    Xva, yva = enc.encode_x(va, unknown="zeros"), enc.encode_y(va)
    dt = np.dtype(opts.dtype)
    spec = {"type": "mlp", "in_features": enc.width, "hidden": list(opts.hidden),
            "out_features": output_size(task, classes), "task": task, "activation": opts.activation,
            "dropout": opts.dropout, "dtype": opts.dtype, "seed": opts.seed}
    model = build_model(spec)
    notes.append(f"{len(tr)} training and {len(va)} validation rows, {_plural(len(feats), 'feature column')} "
                 f"-> {enc.width} inputs")
    job = Job("table", task, model, {"x": Xtr.astype(dt), "y": _ydt(ytr, task, dt)},
              {"x": Xva.astype(dt), "y": _ydt(yva, task, dt)}, enc, spec, notes)
    job.y_train, job.y_val = _units(enc, ytr), _units(enc, yva)
    if task != "regression":
        job.labels = [class_label(enc, k) for k in range(len(enc.classes))]
    return job


def _ydt(y, task, dt):
    return y.astype(dt) if task == "regression" else y


def _units(enc, y):
    if enc.task == "regression":
        return y * enc.stats["y_std"] + enc.stats["y_mean"]
    return y


def build_model(spec: dict):
    """The model a ``model_spec`` describes (fresh weights from its seed)."""
    if spec["type"] == "mlp":
        return TabularMLP(spec["in_features"], spec["hidden"], spec["out_features"], spec["task"],
                          activation=spec["activation"], dropout=spec["dropout"], dtype=spec["dtype"],
                          seed=spec["seed"])
    from .sequence import SequenceModel
    return SequenceModel.from_spec(spec)


def spirals_table(seed: int = 0, n: int = 300) -> Table:
    """The spiral demo as a table (columns x1, x2, label)."""
    from .demos import spirals
    X, y = spirals(n, seed)
    rows = [[repr(float(a)), repr(float(b)), f"arm{c}"] for (a, b), c in zip(X, y)]
    return Table("<spirals>", ["x1", "x2", "label"], rows, list(range(2, len(rows) + 2)), True)


def save_table(table: Table, path) -> None:
    try:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(table.names)
            w.writerows(table.rows)
    except OSError as e:
        raise DataError(f"{path}: cannot write ({e.strerror or e})") from None


# ---------------------------------------------------------------------------------------------
# preparing, training, evaluating
# ---------------------------------------------------------------------------------------------

def prepare(opts: FitOptions, encoder_dict=None) -> Job:
    """Read and split the data, and build the model (``encoder_dict``: a resumed run's)."""
    if opts.demo is not None and opts.val:
        raise ValueError("--val gives validation rows for a CSV file; the demos generate their own")
    if opts.demo == "spirals":
        opts.target = opts.target or "label"
        return _table_job(spirals_table(opts.seed, opts.samples or 300), opts, None, encoder_dict)
    if opts.demo == "adding":
        from .sequence import adding_job
        return adding_job(opts)
    if opts.demo is not None:
        raise ValueError(f"demo must be one of {', '.join(DEMOS)}; got {opts.demo!r}")
    if opts.data is None:
        raise DataError("give a CSV file to fit, or --demo spirals|adding")
    table = read_csv(opts.data, opts.header)
    val_table = read_csv(opts.val, table.has_header) if opts.val else None
    if opts.text is not None:
        if opts.features is not None or _names(opts.drop):
            raise ValueError("--features and --drop choose the columns of a table; with --text the model "
                             "reads only the text column")
        from .sequence import text_job
        return text_job(table, opts, val_table, encoder_dict)
    return _table_job(table, opts, val_table, encoder_dict)


def predict_outputs(job_or_model, data: dict, batch_size: int = 1024) -> np.ndarray:
    model = job_or_model.model if isinstance(job_or_model, Job) else job_or_model
    model.eval()
    n = len(next(iter(data.values())))
    outs = [model.predict_batch({k: v[s:s + batch_size] for k, v in data.items()})
            if hasattr(model, "predict_batch") else model.predict(data["x"][s:s + batch_size])
            for s in range(0, n, batch_size)]
    return np.concatenate(outs)


def metrics_of(job: Job, out: np.ndarray, y: np.ndarray) -> dict:
    """The task's metrics of raw outputs ``out`` against targets ``y`` (units or class ids)."""
    if job.task == "regression":
        enc = job.encoder
        pred = out[:, 0].astype(np.float64) * enc.stats["y_std"] + enc.stats["y_mean"]
        m = regression_metrics(pred, y)
        if job.kind == "sequence":   # the adding problem is judged by its MSE
            m = {"mse": m["rmse"] ** 2, **m}
        return m
    return classification_metrics(probabilities(job.task, out), y)


def metrics_fn(job: Job):
    return lambda model: metrics_of(job, predict_outputs(model, job.val), job.y_val)


def evaluate_job(job: Job) -> dict:
    """Final metrics on the validation rows, the baseline's, and (classification) the confusion
    matrix with its labels."""
    out = predict_outputs(job, job.val)
    base = baseline_metrics(job.task, job.y_train, job.y_val,
                            None if job.task == "regression" else len(job.labels))
    if job.kind == "sequence":
        base = {"mse": base["rmse"] ** 2, **base}
    res = {"task": job.task, "metrics": metrics_of(job, out, job.y_val), "baseline": base,
           "baseline_name": "mean predictor" if job.task == "regression" else "majority class",
           "val_rows": int(len(job.y_val))}
    if job.task != "regression":
        pred = np.argmax(probabilities(job.task, out), axis=1)
        res["labels"] = job.labels
        res["confusion"] = confusion_matrix(pred, job.y_val, len(job.labels)).tolist()
    return res


def make_trainer(job: Job, opts: FitOptions, config: SupervisedConfig, out_dir, checkpoint=None):
    extra = {"fit": opts.to_dict(), "model_spec": job.spec, "encoder": encoder_to_dict(job.encoder)}
    kw = dict(kind=job.kind, extra=extra, metrics_fn=metrics_fn(job))
    if checkpoint is None:
        return SupervisedTrainer.fresh(job.model, job.train, job.val, config, out_dir, **kw)
    return SupervisedTrainer(job.model, job.train, job.val, config, out_dir, checkpoint=checkpoint, **kw)


def encoder_to_dict(enc):
    return None if enc is None else enc.to_dict()


FIT_KINDS = ("table", "text", "sequence")
OTHER_RUNS = {   # kind -> (what it is, the command that continues it)
    "lm": ("a language model run of `bptt train`", "bptt train --resume --out {out}"),
    "forecast": ("a `bptt forecast` run", "bptt forecast SERIES.csv --resume --out {out}"),
    "contrastive": ("a `bptt contrastive` run", "bptt contrastive --resume --out {out}"),
}


def load_run(out_dir):
    """(checkpoint, saved FitOptions, saved SupervisedConfig) of the ``bptt fit`` run in ``out_dir``;
    CheckpointError, saying what it is and which command continues it, for another kind of run."""
    from .supervised import RESUME_KEYS
    path = Path(out_dir) / CHECKPOINT_NAME
    ckpt = load_checkpoint(path)
    kind = ckpt.get("kind")
    if kind not in FIT_KINDS:
        if kind in OTHER_RUNS:
            what, how = OTHER_RUNS[kind]
            raise CheckpointError(f"{path}: {what}, not a `bptt fit` run; continue it with "
                                  f"`{how.format(out=out_dir)}`")
        raise CheckpointError(f"{path}: not a `bptt fit` run (its kind is {kind!r})")
    missing = [k for k in RESUME_KEYS + ("fit",) if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks the entry {missing[0]!r}")
    return ckpt, FitOptions.from_dict(ckpt["fit"]), SupervisedConfig.from_dict(ckpt["supervised"])


def resume_config(config: SupervisedConfig, epochs=None, minutes=None) -> SupervisedConfig:
    """The saved config with the resumed run's length: ``epochs`` (a total) if given, ``minutes``."""
    if epochs is not None:
        config.epochs = epochs
    config.minutes = minutes
    if config.epochs is None and config.minutes is None:
        raise ValueError("give --epochs or --minutes to resume a run that was limited by time")
    return config


def run_finished(ckpt: dict, config: SupervisedConfig, out_dir) -> str | None:
    """Why the run in ``out_dir`` has nothing left to train with ``config`` (early stopping ended
    it, or its epochs are done), as one line, or None. (As ``bptt forecast --resume``.)"""
    import math
    e, step = ckpt["early"], int(ckpt["step"])
    best = Path(out_dir) / BEST_NAME
    if config.patience is not None and int(e.get("bad_vals") or 0) >= config.patience:
        return (f"{out_dir}: the run already finished: early stopping ended it at step {step} (no better "
                f"validation loss in {config.patience} epoch{'s' * (config.patience != 1)}; the best was at "
                f"step {e.get('best_step')}); its best weights are in {best}. Start a new run in another "
                "--out to train with other options")
    rows = (ckpt.get("data") or {}).get("train_rows")
    if config.epochs is not None and rows:
        per_epoch = -(-int(rows) // config.batch_size)
        if step >= max(1, int(math.ceil(config.epochs * per_epoch))):
            return (f"{out_dir}: the run already finished: its {config.epochs:g} epochs are done (step {step}); "
                    f"its best weights are in {best}. To train on, pass a larger --epochs (a total)")
    return None


def resume_job(out_dir, data=None, epochs=None, minutes=None, loaded=None):
    """(job, options, config, checkpoint) of the run in ``out_dir``, to continue it (``loaded``:
    what :func:`load_run` returned, if the caller has it)."""
    ckpt, opts, config = loaded if loaded is not None else load_run(out_dir)
    if data is not None:
        opts.data = str(data)
    resume_config(config, epochs, minutes)
    job = prepare(opts, ckpt.get("encoder"))
    return job, opts, config, ckpt


# ---------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------

def load_fit_checkpoint(path):
    """(checkpoint, path) for a file or a run folder (its best.bptt, else checkpoint.bptt)."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST_NAME if (path / BEST_NAME).exists() else path / CHECKPOINT_NAME
    ckpt = load_checkpoint(path)
    return ckpt, path


def model_from_checkpoint(ckpt, path):
    try:
        model = build_model(ckpt["model_spec"])
        model.load_state(ckpt["model"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: checkpoint content is inconsistent ({e})") from None
    return model


def predict_file(ckpt: dict, ckpt_path, csv_path, out_path) -> dict:
    """Write predictions for every row of ``csv_path`` to ``out_path``; returns a summary (rows,
    and the metrics if the file holds the target)."""
    kind = ckpt.get("kind")
    if kind not in ("table", "text"):
        raise CheckpointError(f"{ckpt_path}: a {kind!r} checkpoint; predict takes a checkpoint of "
                              "`bptt fit` on a table or labelled text, or of `bptt forecast`")
    opts = FitOptions.from_dict(ckpt["fit"])
    model = model_from_checkpoint(ckpt, ckpt_path)
    enc = Encoder.from_dict(ckpt["encoder"]) if kind == "table" else None
    table = read_csv(csv_path, ckpt["encoder"].get("stats", {}).get("has_header", opts.header))
    if kind == "table":
        # the training file's columns (older checkpoints: the features, target and --drop), and
        # unnamed empty ones (a trailing delimiter)
        known = set(enc.features) | {enc.target} | set(_names(opts.drop)) | set(enc.stats.get("columns", ()))
        known |= {table.names[j] for j in empty_columns(table, sorted(table.unnamed))}
        if table.has_header:
            extra = [n for n in table.names if n not in known]
            if extra:
                raise DataError(f"{table.path}, row {table.lines[0] - 1 if table.lines else 1} (the header): "
                                f"column {extra[0]!r} was not a feature in training (features: {', '.join(enc.features)})")
        elif len(table.names) == len(enc.features):   # no header, only the features: in training's order
            table.names = list(enc.features)
        elif len(table.names) != enc.stats.get("n_columns"):
            raise DataError(f"{table.path}: {len(table.names)} columns, but the model was trained on a file of "
                            f"{enc.stats.get('n_columns')} columns ({len(enc.features)} features, no header)")
        for name in enc.features:
            table.index_of(name, "feature column")
        cols = [table.index_of(n, "column") for n in enc.features]
        table, _ = drop_missing(table, cols, "error", "predict needs every feature: fill the cell in, "
                                                      "or remove the row")
        x = enc.encode_x(table, unknown="error")
        data = {"x": x.astype(model.dtype)}
        task, labels, target = enc.task, None, enc.target
    else:
        from .sequence import text_dataset, text_encoder_from_dict
        tenc = text_encoder_from_dict(ckpt["encoder"])
        j = table.index_of(tenc.text, "text column")
        data = text_dataset([r[j] for r in table.rows], tenc, model.dtype)
        task, target = tenc.task, tenc.target
        enc = tenc
    out = predict_outputs(model, data)
    labels = [class_label(enc, k) for k in range(len(enc.classes))] if task != "regression" else None
    summary = {"rows": len(table), "task": task}
    has_header = ckpt["encoder"].get("stats", {}).get("has_header", True)
    name = target if has_header else ("prediction" if task == "regression" else "label")
    try:
        with open(out_path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if task == "regression":
                pred = out[:, 0].astype(np.float64) * enc.stats["y_std"] + enc.stats["y_mean"]
                w.writerow([name])
                w.writerows([[repr(float(v))] for v in pred])
            else:
                proba = probabilities(task, out)
                w.writerow([name] + [f"p_{l}" for l in labels])
                best = np.argmax(proba, axis=1)
                w.writerows([[labels[k]] + [f"{p:.6g}" for p in row] for k, row in zip(best, proba)])
    except OSError as e:
        raise DataError(f"{out_path}: cannot write ({e.strerror or e})") from None
    if target in table.names:
        try:
            y = enc.encode_y(table)
        except DataError as e:
            y = None
            summary["metrics_skipped"] = str(e)
        if y is not None:
            job = Job(kind, task, model, {}, {}, enc, {}, [])
            if task == "regression":
                y = y * enc.stats["y_std"] + enc.stats["y_mean"]
            summary["metrics"] = metrics_of(job, out, y)
    return summary
