"""Loss curves of a training run as a PNG (matplotlib is an optional extra: ``bptt[plot]``).

Every trainer appends JSON records to ``metrics.jsonl``: training records (``step``, ``loss``, ...)
and validation records (``step`` and ``val_*`` entries). A language model's or a classifier's
validation has ``val_loss``; a contrastive run's has retrieval metrics (``val_mrr``, ...), which are
plotted on a second axis instead.
"""
from __future__ import annotations

import json
from pathlib import Path

# The validation metric plotted when a run records no val_loss, in order of preference.
VAL_METRICS = ("val_loss", "val_mrr", "val_recall@10", "val_recall@1", "val_accuracy")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_metrics(run_dir):
    """(training records, validation records) from ``run_dir/metrics.jsonl``. ValueError (one
    line, naming the line) for a line that is not a JSON object with a numeric ``step``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise ValueError(f"{path}: no such file; is {run_dir} a run folder written by `bptt train`?")
    train, val = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}: line {n} is not JSON") from None
        if not isinstance(rec, dict) or not _number(rec.get("step")):
            raise ValueError(f"{path}: line {n} is not a metrics record (a JSON object with a step)")
        (val if any(k.startswith("val_") for k in rec) else train).append(rec)
    if not train and not val:
        raise ValueError(f"{path}: no metrics recorded yet")
    return train, val


def validation_metric(val) -> str | None:
    """The ``val_*`` entry to plot: ``val_loss`` if the records have it, else the first of
    :data:`VAL_METRICS` (then of any numeric ``val_*`` entry) that they all hold."""
    if not val:
        return None
    numeric = [k for k in val[0] if k.startswith("val_") and all(_number(r.get(k)) for r in val)]
    for k in VAL_METRICS:
        if k in numeric:
            return k
    return numeric[0] if numeric else None


def plot_run(run_dir, out_path=None) -> str:
    train, val = read_metrics(run_dir)
    train = [r for r in train if _number(r.get("loss"))]
    metric = validation_metric(val)
    if not train and metric is None:
        raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'}: no training loss or numeric validation "
                         "metric to plot")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_path = str(out_path or Path(run_dir) / "loss.png")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    lines = []
    if train:
        lines += ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, alpha=0.7,
                         label="training loss")
    if metric == "val_loss":
        lines += ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", lw=1.5,
                         label="validation loss")
    elif metric is not None:   # another scale (a recall, an MRR): its own axis on the right
        ax2 = ax.twinx()
        lines += ax2.plot([r["step"] for r in val], [r[metric] for r in val], "o-", lw=1.5, color="C1",
                          label=f"validation {metric[4:]}")
        ax2.set_ylabel(f"validation {metric[4:]}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss" if metric not in (None, "val_loss") else "loss")
    ax.set_title(f"bptt run {Path(run_dir).name}")
    ax.grid(alpha=0.3)
    ax.legend(lines, [line.get_label() for line in lines])
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
    return out_path
