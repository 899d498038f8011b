"""bptt's forecaster against a PyTorch model of the same size, windows, scaling and budget.

    python bench/forecast_vs_torch.py [--cell lstm] [--hidden 32] [--epochs 30] [--seeds 3]

The series is generated here (no download): ``--length`` days of a daily series with a trend, a
weekly and a yearly cycle and AR(1) noise, from ``--data-seed``. Both models read the same windows
(``bptt.forecast.ForecastData``: the same split, the scaler fitted on the training part, the same
delta targets), train with Adam at the same learning rate, the same batch size, the same order of
windows each epoch, gradient-norm clipping at 1, the same early stopping on the validation loss,
and keep their best weights. Each framework initialises its own weights from ``--seed + i``. The
script prints MAE, RMSE and MASE (means over the horizon) of both models and of the naive and
seasonal-naive forecasts, per seed and averaged, and the training time of each.
"""
from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time

import numpy as np


def daily_series(length: int, seed: int):
    from bptt.forecast import Series
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    weekly = np.array([0.0, 0.3, 0.4, 0.35, 0.5, 1.4, 1.1])[t.astype(int) % 7]
    yearly = 2.0 * np.sin(2 * np.pi * t / 365.25 + 1.3)
    noise = np.zeros(length)
    e = 0.0
    for i in range(length):
        e = 0.6 * e + 0.3 * rng.standard_normal()
        noise[i] = e
    y = 10.0 + 0.002 * t + weekly + yearly + noise
    return Series(y[:, None], np.zeros((length, 0)), ["y"], [], source="generated daily series")


def torch_run(data, args, seed):
    import torch
    torch.manual_seed(seed)
    torch.set_num_threads(args.threads)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[args.cell]
    K, S, I = data.horizon, data.n_series, data.input_size

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = cls(I, args.hidden, num_layers=args.layers, batch_first=True)
            self.head = torch.nn.Linear(args.hidden, K * S)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1, :])

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sp = data.split
    xv = torch.from_numpy(data.inputs(sp.val_origins, np.float32))
    yv = torch.from_numpy(data.targets(sp.val_origins, np.float32))
    best, best_state, bad = None, copy.deepcopy(net.state_dict()), 0
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        # the same order of windows as bptt.supervised draws
        perm = np.random.default_rng([seed, 0, epoch]).permutation(len(sp.train_origins))
        net.train()
        for b in range(0, len(perm), args.batch_size):
            o = sp.train_origins[np.sort(perm[b:b + args.batch_size])]
            x = torch.from_numpy(data.inputs(o, np.float32))
            y = torch.from_numpy(data.targets(o, np.float32))
            opt.zero_grad()
            loss = torch.mean((net(x) - y) ** 2)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        with torch.no_grad():
            val = float(torch.mean((net(xv) - yv) ** 2))
        if best is None or val < best:
            best, best_state, bad = val, copy.deepcopy(net.state_dict()), 0
        else:
            bad += 1
            if bad >= args.patience:
                break
    elapsed = time.perf_counter() - t0
    net.load_state_dict(best_state)
    with torch.no_grad():
        out = net(xv).numpy().astype(np.float64)
    return data.to_values(out, sp.val_origins), elapsed, epoch + 1


def bptt_run(series, args, seed):
    from bptt.forecast import ForecastConfig, ForecastTrainer
    config = ForecastConfig(source="bench", horizon=args.horizon, window=args.window, cell=args.cell,
                            hidden=args.hidden, layers=args.layers, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                            seed=seed, dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = ForecastTrainer.fresh(config, tmp, series)
        t0 = time.perf_counter()
        summary = trainer.run()
        elapsed = time.perf_counter() - t0
    return trainer.data, summary["pred"], elapsed, int(round(summary["epoch"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--horizon", type=int, default=7)
    ap.add_argument("--window", type=int, default=28)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--length", type=int, default=1500)
    ap.add_argument("--data-seed", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from bptt import jit
    from bptt.forecast import forecast_metrics, summarize
    jit.set_threads(args.threads)
    series = daily_series(args.length, args.data_seed)
    print(f"series: {args.length} generated days (data seed {args.data_seed}); {args.cell.upper()} "
          f"H={args.hidden} x{args.layers}, window {args.window}, horizon {args.horizon}, "
          f"<= {args.epochs} epochs, patience {args.patience}, batch {args.batch_size}, Adam lr {args.lr}, "
          f"{args.threads} thread(s); {platform.processor() or platform.machine()}")
    rows = []
    for i in range(args.seeds):
        seed = args.seed + i
        data, pred_b, t_b, ep_b = bptt_run(series, args, seed)
        pred_t, t_t, ep_t = torch_run(data, args, seed)
        o = data.split.val_origins
        truth = data.truth(o)
        preds = {"bptt": pred_b, "torch": pred_t, **data.baselines(o)}
        m = summarize({k: forecast_metrics(p, truth, data.naive_scale) for k, p in preds.items()})
        rows.append(m)
        print(f"seed {seed}: season {data.season}; " + "; ".join(
            f"{k} MAE {v['mae_mean']:.4f} RMSE {v['rmse_mean']:.4f} MASE {v['mase_mean']:.4f}"
            for k, v in m.items()) + f"; time bptt {t_b:.1f} s ({ep_b} epochs), torch {t_t:.1f} s ({ep_t} epochs)")
    print(f"mean over {args.seeds} seed(s):")
    for k in rows[0]:
        mae, rmse, mase = (float(np.mean([r[k][f"{q}_mean"] for r in rows])) for q in ("mae", "rmse", "mase"))
        print(f"  {k:15s} MAE {mae:.4f}  RMSE {rmse:.4f}  MASE {mase:.4f}")
    b, t = (float(np.mean([r[k]["mae_mean"] for r in rows])) for k in ("bptt", "torch"))
    print(f"bptt/torch MAE ratio: {b / t:.3f} ({100 * (b / t - 1):+.1f} %)")


if __name__ == "__main__":
    main()
