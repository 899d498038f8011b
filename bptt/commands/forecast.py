"""``bptt forecast``: train a recurrent forecaster on a time series (CLI layer: no math here)."""
from __future__ import annotations

import math

import click

from .common import (CONTEXT, FiniteFloatRange, Progress, echo_interrupted, fail, json_safe, refuse_changed_options,
                     set_threads, training_errors)


def _fmt(v, width=8):
    return f"{v:{width}.4g}" if not math.isnan(v) else f"{'n/a':>{width}}"


def _table(report) -> str:
    m = report["metrics"]
    cols = [("model", "model"), ("naive", "naive"), ("seasonal_naive", f"seasonal S={report['season']}")]
    head1 = "step  " + "  ".join(f"{title:^26}" for _, title in cols)
    head2 = "      " + "  ".join(f"{'MAE':>8} {'RMSE':>8} {'MASE':>8}" for _ in cols)
    lines = [head1, head2]
    for k in range(report["horizon"]):
        cells = "  ".join(f"{_fmt(m[key]['mae'][k])} {_fmt(m[key]['rmse'][k])} {_fmt(m[key]['mase'][k])}"
                          for key, _ in cols)
        lines.append(f"{k + 1:>4}  {cells}")
    cells = "  ".join(f"{_fmt(m[key]['mae_mean'])} {_fmt(m[key]['rmse_mean'])} {_fmt(m[key]['mase_mean'])}"
                      for key, _ in cols)
    lines.append(f"{'mean':>4}  {cells}")
    return "\n".join(lines)


def _g(v) -> str:
    """A metric for a line of text: n/a for NaN (a MASE whose scale is 0), as in the table."""
    return f"{v:.4g}" if not math.isnan(v) else "n/a"


def _saved_options(config, ckpt) -> dict:
    """The run's value of every option that --resume may not change, by click's parameter names,
    in the types the command line gives them (what was detected, if the option was not given)."""
    f = ckpt["forecast"]
    saved = {k: getattr(config, k) for k in ("header", "horizon", "val_fraction", "val_steps",
                                             "target", "cell", "hidden", "layers", "dropout",
                                             "batch_size", "lr", "optimizer", "weight_decay",
                                             "seed", "dtype")}
    saved.update(columns=list(config.columns) or list(f["target_names"]),
                 covariates=list(config.covariates), window=int(f["window"]),
                 season=int(config.season if config.season is not None else f["season"]),
                 clip=float(config.clip or 0.0), patience=int(config.patience or 0),
                 weight_decay=(config.weight_decay if config.weight_decay is not None   # the default, resolved
                               else 0.01 if config.optimizer == "adamw" else 0.0))
    return saved


def _json_report(summary, config, series) -> dict:
    m = summary["metrics"]
    return {
        "series": series.source, "columns": series.target_names, "covariates": series.covariate_names,
        "horizon": summary["horizon"], "window": summary["window"], "season": summary["season"],
        "season_detected": summary["season_detected"], "steps": summary["n"],
        "train_steps": summary["n_train"], "val_steps": summary["n"] - summary["n_train"],
        "train_windows": summary["train_windows"], "val_windows": summary["val_windows"],
        "model": m["model"], "naive": m["naive"], "seasonal_naive": m["seasonal_naive"],
        "per_series": summary["per_series"], "val_loss": summary["val_loss"],
        "best_step": summary["best_step"], "epochs": summary["epoch"], "steps_trained": summary["step"],
        "stopped": summary["reason"], "elapsed_seconds": summary["elapsed"],
        "checkpoint": summary["checkpoint"], "best_checkpoint": summary["best_checkpoint"],
        "config": {k: config.to_dict()[k] for k in ("cell", "hidden", "layers", "dropout", "lr",
                                                   "optimizer", "batch_size", "target", "seed", "dtype")},
    }


@click.command(context_settings=CONTEXT)
@click.argument("series_csv", required=False, type=click.Path(dir_okay=False))
@click.option("--demo", type=click.Choice(["seasonal"]), default=None,
              help="Built-in series instead of a file: 'seasonal' is 16 weeks of a seeded hourly "
                   "series with a trend, daily and weekly cycles and AR(1) noise.")
@click.option("--demo-csv", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write the --demo series to FILE as CSV (to try `bptt predict` on it).")
@click.option("--column", "columns", default=None, metavar="A,B",
              help="Target column(s), by header name or index (-1 the last); several give several "
                   "series forecast at once. [default: the last column]")
@click.option("--covariates", default=None, metavar="C,D",
              help="Extra input columns (read over the window, not forecast).")
@click.option("--header/--no-header", default=None,
              help="Whether the first row names the columns. [default: detected]")
@click.option("--horizon", type=click.IntRange(min=1), default=1, show_default=True,
              help="K: how many steps ahead to forecast.")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="W: past steps the network reads. [default: the season if one is found, at "
                   "least 2·K and 16, at most 256]")
@click.option("--season", type=click.IntRange(min=1), default=None,
              help="Season length for the seasonal-naive baseline. [default: detected from the "
                   "training part's autocorrelation; 1 if none]")
@click.option("--val-fraction", type=FiniteFloatRange(min=0, max=1, min_open=True, max_open=True),
              default=0.2, show_default=True,
              help="The end of the series kept for validation (at least K steps).")
@click.option("--val-steps", type=click.IntRange(min=1), default=None,
              help="Validation steps at the end of the series (instead of --val-fraction).")
@click.option("--target", type=click.Choice(["delta", "level"]), default="delta", show_default=True,
              help="Predict changes from the last value (delta) or the values themselves (level).")
@click.option("--cell", type=click.Choice(["lstm", "gru", "rnn"]), default="lstm", show_default=True,
              help="Recurrent cell.")
@click.option("--hidden", type=click.IntRange(min=1), default=64, show_default=True, help="Hidden units H.")
@click.option("--layers", type=click.IntRange(min=1), default=1, show_default=True, help="Stacked layers.")
@click.option("--dropout", type=FiniteFloatRange(min=0, max=1, max_open=True), default=0.0,
              show_default=True, help="Dropout between stacked layers and before the head.")
@click.option("--epochs", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Most epochs (passes over the training windows; a total, also with --resume). "
                   "[default: 100]")
@click.option("--minutes", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Stop after this many minutes (saved; --resume continues).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Windows per step.")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Learning rate.")
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd", "rmsprop", "adagrad"]),
              default="adam", show_default=True, help="Optimiser.")
@click.option("--weight-decay", type=FiniteFloatRange(min=0), default=None,
              help="L2 penalty (decoupled for adamw). [default: 0, or 0.01 for adamw]")
@click.option("--clip", type=FiniteFloatRange(min=0), default=1.0, show_default=True,
              help="Clip the gradient's global norm to this (0: off).")
@click.option("--patience", type=click.IntRange(min=0), default=10, show_default=True,
              help="Stop after this many validations (one per epoch) without a better validation "
                   "loss (0: never).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed for the weights and the order of the windows.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Float type of the weights and activations.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for the Numba kernels. [default: all cores]")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/forecast",
              show_default=True, help="Run folder: checkpoint.bptt, best.bptt and metrics.jsonl.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write the final metrics and baselines as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.png",
              help="Draw the history, the validation truth and the forecasts (needs matplotlib).")
def forecast(series_csv, demo, demo_csv, columns, covariates, header, horizon, window, season,
             val_fraction, val_steps, target, cell, hidden, layers, dropout, epochs, minutes, batch_size, lr,
             optimizer, weight_decay, clip, patience, seed, dtype, threads, out_dir, resume,
             json_path, plot_path):
    """Forecast the next K values of a time series with an RNN/LSTM/GRU over windows.

    SERIES_CSV has one row per time step (a header row is detected); --column names the series to
    forecast. The end of the series (--val-fraction) is held out: the scaler, the MASE scale and
    the season are fitted on the rest, and no training window reaches into it. After every epoch
    the validation loss decides early stopping (--patience); the best weights are kept. At the end
    MAE, RMSE and MASE of every horizon step are printed next to the naive (last value) and
    seasonal-naive forecasts, and a `final:` line. Ctrl-C saves; --resume continues bit-for-bit.
    Use the run with `bptt predict DIR SERIES.csv --out next.csv`.
    """
    import json
    from pathlib import Path
    from bptt.checkpoint import check_output_file
    set_threads(threads)
    for option, path in (("--json", json_path), ("--plot", plot_path)):
        if path:   # before training: a bad path must not waste the run
            try:
                check_output_file(path, option)
            except ValueError as e:
                fail(str(e))
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail("--plot needs matplotlib: pip install 'bptt[plot]'")
    from bptt.forecast import (ForecastConfig, ForecastTrainer, demo_series, plot_forecast, split_names,
                               write_series_csv)
    ctx = click.get_current_context()
    with training_errors():
        if series_csv is not None and demo is not None:
            raise ValueError("give SERIES_CSV or --demo, not both")
        if resume:
            run = ForecastTrainer.load_run(out_dir)
            # compare lists of names, as the run saved them, not the command line's text
            ctx.params["columns"], ctx.params["covariates"] = split_names(columns), split_names(covariates)
            refuse_changed_options(ctx, _saved_options(*run))
            trainer = ForecastTrainer.resume(out_dir, epochs=epochs, minutes=minutes,
                                             series=demo_series(demo) if demo else None,
                                             source=series_csv, checkpoint=run)
            why = trainer.finished()
            if why:   # not an error: a sweep re-running a finished trial reads its final line
                click.echo(f"{out_dir}: the run already finished: {why}")
            click.echo(f"resuming {out_dir} at epoch {trainer.epoch:g}, step {trainer.step}")
        else:
            if series_csv is None and demo is None:
                raise ValueError("give a SERIES_CSV file, or --demo seasonal")
            config = ForecastConfig(source=series_csv, demo=demo, columns=split_names(columns),
                                    covariates=split_names(covariates),
                                    header=header, horizon=horizon, window=window, season=season,
                                    val_fraction=val_fraction, val_steps=val_steps, target=target,
                                    cell=cell, hidden=hidden, layers=layers, dropout=dropout,
                                    epochs=epochs if epochs is not None else 100, minutes=minutes,
                                    batch_size=batch_size, lr=lr, optimizer=optimizer,
                                    weight_decay=weight_decay, clip=clip or None,
                                    patience=patience or None, seed=seed, dtype=dtype)
            config.validate()
            series = demo_series(demo) if demo else None
            if demo_csv:
                if not demo:
                    raise ValueError("--demo-csv writes the --demo series; give --demo too")
                write_series_csv(series, demo_csv)
                click.echo(f"wrote the demo series to {demo_csv}")
            trainer = ForecastTrainer.fresh(config, out_dir, series)
        c, d = trainer.config, trainer.data
        sp = d.split
        names = ", ".join(trainer.series.target_names)
        covs = (f" with covariates {', '.join(trainer.series.covariate_names)}"
                if trainer.series.covariate_names else "")
        click.echo(f"forecasting {names}{covs} from {c.source or 'the ' + str(c.demo) + ' demo'}: "
                   f"{sp.n} steps ({sp.n_train} training, {sp.n - sp.n_train} validation), "
                   f"{len(sp.train_origins)} training and {len(sp.val_origins)} validation window"
                   f"{'s' if len(sp.train_origins) + len(sp.val_origins) > 2 else ''}")
        click.echo(f"window {d.window}, horizon {d.horizon}, season {d.season} "
                   f"({'detected' if d.season_detected else 'given'}); a {c.layers}-layer "
                   f"{c.cell.upper()} (H={c.hidden}, {trainer.model.num_parameters():,} parameters, "
                   f"{c.dtype}), target: {c.target}")
        for note in trainer.notes:
            click.echo(note)
        progress = Progress(trainer.total_steps, trainer.step, c.minutes)
        progress.start()
        window = d.window

        def on_event(kind, info):
            if kind == "step":
                progress.step({**info, "tokens_per_sec": info["rows_per_sec"] * window})
            elif kind == "val":
                progress.message(f"epoch {info['epoch']:g}: val loss {info['val_loss']:.4f}, MAE "
                                 f"{_g(info['val_mae'])}, RMSE {_g(info['val_rmse'])}, MASE "
                                 f"{_g(info['val_mase'])}{'  (best)' if info['improved'] else ''}")
            elif kind == "stop":
                progress.message(f"early stopping: no better validation loss in {info['patience']} "
                                 f"validations (the best was at step {info['best_step']})")

        summary = trainer.run(on_event)
    if summary["reason"] == "interrupted":
        echo_interrupted(summary, out_dir)
    elif summary["reason"] == "time":
        click.echo(f"time budget spent: saved step {summary['step']}; continue with --resume --out {out_dir}")
    best_step = summary.get("best_step")
    nb = trainer.batches_per_epoch
    best_epoch = f"{best_step / nb:.3g}" if best_step else None
    m = summary["metrics"]
    n_series, n_mase = m["model"]["n_series"], m["model"]["mase_series"]
    mase_over = ("" if n_mase == n_series else
                 f"; MASE over the {n_mase} of {n_series} whose training part is not constant"
                 if n_mase else "; MASE undefined: every series is constant in the training part")
    click.echo(f"validation metrics of the best weights (step {best_step}, epoch {best_epoch}), per "
               f"horizon step (mean over {n_series} series{mase_over}):" if best_step else
               f"validation metrics (no step trained: the initial weights{mase_over}):" if not trainer.step else
               f"validation metrics of the last weights (step {trainer.step}: no epoch ended yet, so no best"
               f"{mase_over}):")
    click.echo(_table(summary))
    if json_path:
        try:
            Path(json_path).write_text(json.dumps(json_safe(_json_report(summary, c, trainer.series)),
                                                  indent=2, allow_nan=False), encoding="utf-8")
        except OSError as e:
            fail(f"{json_path}: cannot write ({e.strerror or e})")
    if plot_path:
        try:
            plot_forecast(summary, trainer.series, plot_path)
        except (OSError, ValueError) as e:
            fail(f"{plot_path}: cannot draw the plot ({e})")
        click.echo(f"plot: {plot_path}")
    beats = [name for key, name in (("naive", "naive"), ("seasonal_naive", "seasonal-naive"))
             if m["model"]["mae_mean"] < m[key]["mae_mean"]]
    of = f" (over {n_mase} of {n_series} series)" if 0 < n_mase < n_series else ""
    click.echo(f"final: epoch {summary['epoch']:.3g} (best {best_epoch}), validation MAE "
               f"{_g(m['model']['mae_mean'])} RMSE {_g(m['model']['rmse_mean'])} MASE "
               f"{_g(m['model']['mase_mean'])}{of}; naive MAE {_g(m['naive']['mae_mean'])} MASE "
               f"{_g(m['naive']['mase_mean'])}; seasonal-naive (S={summary['season']}) MAE "
               f"{_g(m['seasonal_naive']['mae_mean'])} MASE {_g(m['seasonal_naive']['mase_mean'])}; "
               f"beats {' and '.join(beats) if beats else 'neither baseline'} on MAE; "
               f"best weights {summary['best_checkpoint']}")


COMMANDS = [forecast]
