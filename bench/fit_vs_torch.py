"""bptt fit against a PyTorch model of the same size and training budget, on generated data:
two tables (an MLP) and labelled text (an LSTM text classifier).

Both see the same rows: bptt reads and encodes the CSV (standardisation, one-hot, the seeded
stratified split), and torch trains on exactly those arrays. Both use the same MLP (sizes,
activation, torch's default initialisation scheme), Adam with the same learning rate, batch size
and epochs, early stopping on the validation loss with the same patience, and keep the best
epoch's weights. Nothing is downloaded: the tables are generated here.

    python bench/fit_vs_torch.py [--rows 4000] [--epochs 60] [--seed 0]

Prints one line per table and framework with the validation metrics (and the seconds each took,
on the same thread count: BPTT_THREADS or all cores), and the differences.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_tables(folder, rows, seed):
    """A multiclass table (4 numeric and 1 categorical feature, 3 classes from a nonlinear rule
    with label noise) and a regression table (a smooth nonlinear function plus noise)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, 4))
    cat = rng.choice(["north", "south", "east", "west"], rows)
    shift = {"north": 0.5, "south": -0.5, "east": 0.0, "west": 1.0}
    score = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + np.array([shift[c] for c in cat])
    label = np.digitize(score + 0.3 * rng.standard_normal(rows), [-0.5, 0.5])
    y = 2 * np.sin(X[:, 0]) + X[:, 1] ** 2 - X[:, 2] * X[:, 3] + np.array([shift[c] for c in cat]) \
        + 0.3 * rng.standard_normal(rows)
    paths = {}
    for name, target in (("classes", [f"c{v}" for v in label]), ("regression", [f"{v:.5f}" for v in y])):
        p = os.path.join(folder, f"{name}.csv")
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["a", "b", "c", "d", "region", "target"])
            for i in range(rows):
                w.writerow([f"{v:.5f}" for v in X[i]] + [cat[i], target[i]])
        paths[name] = p
    return paths


def make_text(folder, rows, seed):
    """Labelled text: 4 to 20 words from a 40-word vocabulary; the label is the group of the first
    of the signal words in the text (or 'none'), with 5 % of the labels redrawn at random."""
    rng = np.random.default_rng(seed + 7)
    filler = [f"w{k}" for k in range(34)]
    signal = {"up": ["rise", "gain"], "down": ["fall", "drop"], "flat": ["same", "still"]}
    labels = list(signal) + ["none"]
    p = os.path.join(folder, "text.csv")
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for _ in range(rows):
            words = list(rng.choice(filler, rng.integers(4, 21)))
            label = "none"
            for _ in range(rng.integers(0, 3)):
                g = labels[rng.integers(0, 3)]
                words.insert(int(rng.integers(0, len(words) + 1)), signal[g][rng.integers(0, 2)])
            for word in words:
                hit = [g for g in signal if word in signal[g]]
                if hit:
                    label = hit[0]
                    break
            if rng.random() < 0.05:
                label = labels[rng.integers(0, 4)]
            w.writerow([" ".join(words), label])
    return p


def run_bptt(path, args, text=False):
    from bptt.fitting import FitOptions, evaluate_job, make_trainer, prepare
    from bptt.supervised import SupervisedConfig
    if text:
        opts = FitOptions(data=path, target="label", text="text", tokenizer="word", hidden=[32],
                          embed_dim=16, rnn_hidden=32, pool="mean", dtype="float32", seed=args.seed)
        cfg = SupervisedConfig(epochs=args.text_epochs, batch_size=32, lr=2e-3, clip=1.0,
                               patience=args.patience, seed=args.seed)
    else:
        opts = FitOptions(data=path, target="target", hidden=args.hidden, dtype="float32", seed=args.seed)
        cfg = SupervisedConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               patience=args.patience, seed=args.seed)
    job = prepare(opts)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        trainer = make_trainer(job, opts, cfg, out)
        trainer.run()
        trainer.restore_best()
        secs = time.perf_counter() - t0
        return job, evaluate_job(job), secs


class TorchText(object):
    """Embedding -> LSTM over packed sequences -> mean over the valid steps -> Linear-ReLU-Linear."""

    def __new__(cls, vocab, classes):
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = torch.nn.Embedding(vocab, 16)
                self.rnn = torch.nn.LSTM(16, 32, batch_first=True)
                self.head = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, classes))

            def forward(self, ids, lengths):
                T = int(lengths.max())
                e = self.embedding(ids[:, :T])
                packed = torch.nn.utils.rnn.pack_padded_sequence(e, lengths, batch_first=True, enforce_sorted=False)
                out, _ = torch.nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=T)
                return self.head(out.sum(1) / lengths[:, None].to(out.dtype))
        return Net()


def fit_torch(net, opt, backward, val_loss, n, batch_size, epochs, args):
    """torch's side of the comparison, as bptt's trainer runs it: epochs of seeded shuffled
    mini-batches (``backward(idx)`` computes a batch's gradients), a validation loss after each,
    early stopping after ``args.patience`` epochs without a better one, then the best weights."""
    import torch
    gen = np.random.default_rng(args.seed)
    best, best_state, bad = float("inf"), None, 0
    for epoch in range(epochs):
        net.train()
        perm = gen.permutation(n)
        for s in range(0, len(perm), batch_size):
            idx = torch.from_numpy(np.sort(perm[s:s + batch_size]))
            opt.zero_grad()
            backward(idx)
            opt.step()
        net.eval()
        with torch.no_grad():
            v = float(val_loss())
        if v < best:
            best, bad = v, 0
            best_state = {k: t.clone() for k, t in net.state_dict().items()}
        else:
            bad += 1
            if args.patience and bad >= args.patience:
                break
    net.load_state_dict(best_state)

def run_torch_text(job, args):
    import torch
    from bptt import jit
    from bptt.fitting import metrics_of
    torch.set_num_threads(jit.get_threads())
    torch.manual_seed(args.seed)
    net = TorchText(job.spec["vocab_size"], job.spec["out_features"])
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    tr = {k: torch.from_numpy(v) for k, v in job.train.items()}
    va = {k: torch.from_numpy(v) for k, v in job.val.items()}
    t0 = time.perf_counter()

    def batch(idx):
        loss_fn(net(tr["ids"][idx], tr["len"][idx]), tr["y"][idx]).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)

    fit_torch(net, opt, batch, lambda: loss_fn(net(va["ids"], va["len"]), va["y"]), len(tr["y"]), 32,
              args.text_epochs, args)
    with torch.no_grad():
        out = net(va["ids"], va["len"]).numpy()
    return metrics_of(job, out, job.y_val), time.perf_counter() - t0


def run_torch(job, args):
    import torch
    from bptt import jit
    from bptt.fitting import metrics_of
    torch.set_num_threads(jit.get_threads())   # the same thread count as bptt's
    torch.manual_seed(args.seed)
    sizes = [job.train["x"].shape[1]] + list(args.hidden) + [job.spec["out_features"]]
    layers = []
    for k in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    task = job.task
    loss_fn = {"regression": torch.nn.MSELoss(), "binary": torch.nn.BCEWithLogitsLoss(),
               "multiclass": torch.nn.CrossEntropyLoss()}[task]

    def target(y):
        t = torch.from_numpy(y)
        return t.float().reshape(-1, 1) if task != "multiclass" else t.long()

    xtr, ytr = torch.from_numpy(job.train["x"]).float(), target(job.train["y"])
    xva, yva = torch.from_numpy(job.val["x"]).float(), target(job.val["y"])
    t0 = time.perf_counter()
    fit_torch(net, opt, lambda idx: loss_fn(net(xtr[idx]), ytr[idx]).backward(),
              lambda: loss_fn(net(xva), yva), len(xtr), args.batch_size, args.epochs, args)
    with torch.no_grad():
        out = net(xva).numpy()
    return metrics_of(job, out, job.y_val), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--hidden", type=lambda s: [int(v) for v in s.split(",")], default=[64, 64])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text-rows", type=int, default=2000)
    ap.add_argument("--text-epochs", type=int, default=10)
    ap.add_argument("--only", choices=["tables", "text"], default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        todo = {} if args.only == "text" else dict(make_tables(d, args.rows, args.seed))
        if args.only != "tables":
            todo["text"] = make_text(d, args.text_rows, args.seed)
        for name, path in todo.items():
            text = name == "text"
            job, res, secs = run_bptt(path, args, text)
            tm, tsecs = (run_torch_text if text else run_torch)(job, args)
            keys = list(res["metrics"])
            fmt = lambda m: ", ".join(f"{k} {m[k]:.4f}" for k in keys)
            what = (f"word embedding 16 -> LSTM 32 -> mean -> MLP [32], {args.text_epochs} epochs" if text
                    else f"MLP {args.hidden}, {args.epochs} epochs")
            print(f"{name} ({job.task}, {len(job.y_train)} training / {len(job.y_val)} validation rows, "
                  f"{what}, patience {args.patience}):")
            print(f"  bptt : {fmt(res['metrics'])}  ({secs:.1f} s)")
            print(f"  torch: {fmt(tm)}  ({tsecs:.1f} s)")
            print(f"  baseline ({res['baseline_name']}): {fmt(res['baseline'])}")
            if job.task == "regression":
                print(f"  bptt/torch RMSE {res['metrics']['rmse'] / tm['rmse']:.3f}, "
                      f"MAE {res['metrics']['mae'] / tm['mae']:.3f}")
            else:
                print(f"  accuracy bptt - torch: {100 * (res['metrics']['accuracy'] - tm['accuracy']):+.2f} points")


if __name__ == "__main__":
    main()
