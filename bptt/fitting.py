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
from .tabular import (Encoder, TabularMLP, Table, baseline_metrics, class_label,
                      classification_metrics, column_kind, confusion_matrix, detect_task,
                      drop_missing, output_size, probabilities, read_csv, regression_metrics,
                      split_rows)

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


def _table_job(table: Table, opts: FitOptions, val_table: Table | None, encoder_dict=None) -> Job:
    t, feats = _select(table, opts)
    notes = []
    table, dropped = drop_missing(table, feats + [t], opts.missing)
    if dropped:
        notes.append(f"dropped {dropped} row{'s' * (dropped != 1)} with missing values")
    kinds = [column_kind(table, j) for j in feats]
    for j, kind in zip(feats, kinds):
        n_cat = len(set(table.column(j))) if kind == "categorical" else 0
        if n_cat > 100 and n_cat > len(table) / 2:
            notes.append(f"note: column {table.names[j]!r} has {n_cat} distinct strings, one-hot encoded; "
                         "--drop it if it is an identifier or free text")
    task, classes, numeric_labels, why = detect_task(table, t, opts.task)
    notes.append(f"task: {task} ({why}{'' if opts.task else '; --task overrides'})")
    if val_table is not None:
        val_table, vdropped = drop_missing(val_table, [val_table.index_of(table.names[j], "column") for j in feats + [t]],
                                           opts.missing)
        train_rows, val_rows = np.arange(len(table)), None
    else:
        strat = None
        if task != "regression":
            pos = {c: k for k, c in enumerate(classes)}
            from .tabular import canonical_label
            strat = np.array([pos[canonical_label(r[t], numeric_labels)] for r in table.rows])
        train_rows, val_rows = split_rows(len(table), strat, opts.val_fraction, opts.seed, table.path)
    if encoder_dict is None:
        enc = Encoder.fit(table, feats, kinds, t, task, train_rows, classes)
        enc.stats["numeric_labels"] = bool(numeric_labels)
        enc.stats["has_header"] = bool(table.has_header)
        enc.stats["n_columns"] = len(table.names)
    else:
        enc = Encoder.from_dict(encoder_dict)
    tr = table.subset(train_rows)
    va = val_table if val_table is not None else table.subset(val_rows)
    Xtr, ytr = enc.encode_x(tr), enc.encode_y(tr)
    Xva, yva = enc.encode_x(va, unknown="zeros"), enc.encode_y(va)
    dt = np.dtype(opts.dtype)
    spec = {"type": "mlp", "in_features": enc.width, "hidden": list(opts.hidden),
            "out_features": output_size(task, classes), "task": task, "activation": opts.activation,
            "dropout": opts.dropout, "dtype": opts.dtype, "seed": opts.seed}
    model = build_model(spec)
    notes.append(f"{len(tr)} training and {len(va)} validation rows, {len(feats)} feature columns "
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


def resume_job(out_dir, data=None, epochs=None, minutes=None):
    """(job, options, config, checkpoint) of the run in ``out_dir``, to continue it."""
    ckpt = SupervisedTrainer.load(out_dir, kind=("table", "text", "sequence"))
    opts = FitOptions.from_dict(ckpt["fit"])
    if data is not None:
        opts.data = str(data)
    config = SupervisedConfig.from_dict(ckpt["supervised"])
    if epochs is not None:
        config.epochs = epochs
    config.minutes = minutes
    if config.epochs is None and config.minutes is None:
        raise ValueError("give --epochs or --minutes to resume a run that was limited by time")
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
        known = set(enc.features) | {enc.target} | set(_names(opts.drop))
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
        table, _ = drop_missing(table, cols, "error")
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
        except DataError:
            y = None
        if y is not None:
            job = Job(kind, task, model, {}, {}, enc, {}, [])
            if task == "regression":
                y = y * enc.stats["y_std"] + enc.stats["y_mean"]
            summary["metrics"] = metrics_of(job, out, y)
    return summary
