"""Loss curves of a training run as a PNG (matplotlib is an optional extra: ``bptt[plot]``)."""
from __future__ import annotations

import json
from pathlib import Path


def read_metrics(run_dir):
    """(training records, validation records) from ``run_dir/metrics.jsonl``."""
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
        (val if "val_loss" in rec else train).append(rec)
    if not train and not val:
        raise ValueError(f"{path}: no metrics recorded yet")
    return train, val


def plot_run(run_dir, out_path=None) -> str:
    train, val = read_metrics(run_dir)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_path = str(out_path or Path(run_dir) / "loss.png")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, alpha=0.7, label="training loss")
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", lw=1.5, label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"bptt run {Path(run_dir).name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
    return out_path
