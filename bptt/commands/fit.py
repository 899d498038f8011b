"""``bptt fit`` (tables, labelled text, the built-in demos) and ``bptt predict``. No math here:
the work is in :mod:`bptt.fitting`, :mod:`bptt.tabular`, :mod:`bptt.sequence` and
:mod:`bptt.supervised`."""
from __future__ import annotations

import json
import math
import sys

import click

from .common import (CONTEXT, FiniteFloatRange, echo_interrupted, fail, json_safe, refuse_changed_options,
                     set_threads, training_errors, user_errors)

# Per kind of job, the training defaults a user would expect (an option given wins).
DEFAULTS = {
    "table": dict(epochs=200, batch_size=64, lr=1e-3, patience=20, clip=0.0),
    "text": dict(epochs=20, batch_size=32, lr=2e-3, patience=4, clip=1.0),
    "sequence": dict(epochs=40, batch_size=32, lr=2e-3, patience=8, clip=1.0),
}


def _hidden(ctx, param, value):
    if value is None:
        return None
    if value.strip().lower() in ("", "none", "0"):
        return []
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected sizes like 64,64; got {value!r}") from None
    if any(s < 1 for s in sizes):
        raise click.BadParameter(f"sizes must be positive; got {value!r}")
    return sizes


def _fmt(v):
    """0.9500 for ordinary values; 4 significant digits for large and small ones (2.593e-05, not
    0.0000); n/a for an undefined metric (R² of a constant target)."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.4f}" if v == 0 or 1e-3 <= abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


METRIC_NAMES = {"rmse": "RMSE", "mae": "MAE", "r2": "R²", "mse": "MSE", "accuracy": "accuracy",
                "macro_f1": "macro-F1", "log_loss": "log loss"}


def _metrics_text(m: dict) -> str:
    return ", ".join(f"{METRIC_NAMES.get(k, k)} {_fmt(v)}" for k, v in m.items() if k in METRIC_NAMES)


def confusion_text(labels, cm) -> str:
    labels = [str(l) for l in labels]
    w = max(6, *(len(l) for l in labels), *(len(str(v)) for row in cm for v in row))
    lines = ["confusion matrix (rows: true label, columns: predicted):",
             " " * (w + 2) + " ".join(l.rjust(w) for l in labels)]
    for l, row in zip(labels, cm):
        lines.append(l.rjust(w) + "  " + " ".join(str(v).rjust(w) for v in row))
    return "\n".join(lines)


@click.command(context_settings=CONTEXT)
@click.argument("data", required=False, type=click.Path(dir_okay=False))
@click.option("--target", default=None,
              help="The column to predict: a header name, or a position (-1: the last column).")
@click.option("--text", "text_col", default=None,
              help="Labelled text: the column holding the text (a recurrent encoder reads it).")
@click.option("--features", default=None, help="Comma-separated feature columns. [default: all but the target]")
@click.option("--drop", default=None, help="Comma-separated columns to leave out (an id ...).")
@click.option("--task", type=click.Choice(["regression", "binary", "multiclass"]), default=None,
              help="Override the task detected from the target column.")
@click.option("--header/--no-header", default=None,
              help="Whether the first row names the columns. [default: detected]")
@click.option("--missing", type=click.Choice(["error", "drop"]), default="error", show_default=True,
              help="An empty, NA or NaN cell is an error, or its row is dropped.")
@click.option("--val", "val_file", type=click.Path(dir_okay=False), default=None,
              help="Validation rows from this CSV file instead of a split.")
@click.option("--val-fraction", type=FiniteFloatRange(min=0, max=1, min_open=True, max_open=True),
              default=0.2, show_default=True, help="Seeded split, stratified by class for classification.")
@click.option("--hidden", callback=_hidden, default="64,64", show_default=True,
              help="Hidden layer sizes of the MLP (tables) or of the head (text); 'none' for linear.")
@click.option("--activation", type=click.Choice(["relu", "gelu", "gelu_tanh", "gelu_sigmoid", "tanh", "sigmoid"]),
              default="relu", show_default=True, help="Hidden activation.")
@click.option("--dropout", type=FiniteFloatRange(min=0, max=1, max_open=True), default=0.0, show_default=True,
              help="Dropout probability after each hidden layer (text: also between recurrent layers).")
@click.option("--cell", type=click.Choice(["lstm", "gru", "rnn"]), default="lstm", show_default=True,
              help="Recurrent cell (text, --demo adding).")
@click.option("--layers", type=click.IntRange(min=1), default=1, show_default=True, help="Stacked recurrent layers.")
@click.option("--bidirectional", is_flag=True, help="Read the text in both directions. [default: off]")
@click.option("--pool", type=click.Choice(["last", "mean", "max"]), default="last", show_default=True,
              help="How the encoder's states become one vector (padding is masked out).")
@click.option("--rnn-hidden", type=click.IntRange(min=1), default=64, show_default=True,
              help="Hidden units H of the recurrent encoder.")
@click.option("--tokenizer", type=click.Choice(["char", "word"]), default="char", show_default=True,
              help="Text tokens: characters or words, as in `bptt train`.")
@click.option("--embed-dim", type=click.IntRange(min=1), default=32, show_default=True, help="Token embedding size.")
@click.option("--max-vocab", type=click.IntRange(min=2), default=10000, show_default=True,
              help="Vocabulary cap for --tokenizer word.")
@click.option("--max-len", type=click.IntRange(min=1), default=400, show_default=True,
              help="Texts are cut to their first this many tokens.")
@click.option("--demo", type=click.Choice(["spirals", "adding"]), default=None,
              help="Built-in data instead of a file: the 3-class spiral, or the adding problem.")
@click.option("--save-data", type=click.Path(dir_okay=False), default=None,
              help="With --demo spirals: also write the generated table to this CSV file.")
@click.option("--length", type=click.IntRange(min=2), default=100, show_default=True,
              help="Sequence length T of --demo adding.")
@click.option("--samples", type=click.IntRange(min=10), default=None,
              help="Size of the demo data. "
                   "[default: 300 points per arm (spirals); 20000 sequences (adding)]")
@click.option("--epochs", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Passes over the training rows (a total, also on --resume). [default: 200 for tables, 20 text, 40 adding]")
@click.option("--minutes", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Stop (and save) after this much wall-clock time.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="[default: 64 tables, 32 text and adding]")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Learning rate. [default: 1e-3 tables, 2e-3 text and adding]")
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd", "rmsprop", "adagrad"]),
              default="adam", show_default=True, help="Optimiser, as in `bptt train`.")
@click.option("--momentum", type=FiniteFloatRange(min=0, max=1, max_open=True), default=0.9,
              show_default=True, help="Momentum for sgd and rmsprop.")
@click.option("--weight-decay", type=FiniteFloatRange(min=0), default=None,
              help="Weight decay. [default: 0, or 0.01 for adamw]")
@click.option("--clip", type=FiniteFloatRange(min=0), default=None,
              help="Clip the gradient norm (0: off). [default: off for tables, 1 for sequences]")
@click.option("--patience", type=click.IntRange(min=0), default=None,
              help="Stop after this many epochs without a lower validation loss (0: never). "
                   "[default: 20 tables, 4 text, 8 adding]")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed for the split, weights and batches.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Floating-point type of the weights and the arithmetic.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for the Numba kernels. [default: all cores]")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/fit", show_default=True,
              help="Run folder: checkpoint.bptt (latest), best.bptt (lowest validation loss), metrics.jsonl.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the final metrics and the baseline's as JSON here.")
@click.pass_context
def fit(ctx, data, target, text_col, features, drop, task, header, missing, val_file, val_fraction, hidden,
        activation, dropout, cell, layers, bidirectional, pool, rnn_hidden, tokenizer, embed_dim,
        max_vocab, max_len, demo, save_data, length, samples, epochs, minutes, batch_size, lr, optimizer,
        momentum, weight_decay, clip, patience, seed, dtype, threads, out_dir, resume, json_path):
    """Train a model on a CSV table (DATA, --target COL), on labelled text (--text COL), or on
    built-in data (--demo spirals|adding).

    \b
    Tables: an MLP; numeric features standardised, string features one-hot encoded. The task
    comes from the target (numbers: regression, MSE; two values: binary, cross-entropy; labels:
    multiclass, softmax cross-entropy); --task overrides it.
    Text: Embedding -> RNN/LSTM/GRU encoder -> pooling -> dense head; padding is masked.
    --demo spirals: the 3-class spiral, also fitted by a linear model for contrast.
    --demo adding: the adding problem; --cell rnn|lstm|gru, --length T.

    Validation is a seeded, stratified split (--val-fraction) or --val FILE; training stops early
    after --patience epochs without a better validation loss and the best weights are kept.
    Every epoch prints the validation metrics; the last line `final:` gives them next to the
    baseline's (mean predictor, or majority class) and classification adds the confusion matrix.
    Ctrl-C saves and stops; --resume continues bit for bit. Then: bptt predict OUT DATA.csv.
    """
    from bptt.fitting import (FitOptions, load_run, make_trainer, prepare, resume_config, resume_job,
                              run_finished)
    from bptt.checkpoint import check_output_file
    from bptt.supervised import SupervisedConfig
    set_threads(threads)
    with training_errors():
        if json_path:   # before training: a bad path must not waste the run
            check_output_file(json_path, "--json")
        if resume:
            ckpt, opts, config = load_run(out_dir)
            for name in ("features", "drop"):   # compare lists, not the comma strings
                if ctx.params[name] is not None:
                    ctx.params[name] = _names(ctx.params[name])
            refuse_changed_options(ctx, _saved_options(opts, config))
            done = run_finished(ckpt, resume_config(config, epochs, minutes), out_dir)
            if done:   # not an error: a sweep re-running a finished trial reads its final line
                click.echo(done)
            job, opts, config, ckpt = resume_job(out_dir, data, epochs, minutes, loaded=(ckpt, opts, config))
            click.echo(f"resuming {out_dir} at step {ckpt['step']} (epoch {ckpt['epoch']})")
        else:
            if demo and data:
                raise ValueError("give a CSV file or --demo, not both")
            opts = FitOptions(data=data, target=target, text=text_col, features=features, drop=drop or [],
                              task=task, header=header, missing=missing, val=val_file,
                              val_fraction=val_fraction, hidden=[64, 64] if hidden is None else hidden,
                              activation=activation, dropout=dropout, cell=cell, layers=layers,
                              bidirectional=bidirectional, pool=pool, tokenizer=tokenizer,
                              embed_dim=embed_dim, rnn_hidden=rnn_hidden, max_vocab=max_vocab, max_len=max_len, demo=demo,
                              length=length, samples=samples, dtype=dtype, seed=seed)
            if save_data:
                if demo != "spirals":
                    raise ValueError("--save-data writes the table of --demo spirals")
                from bptt.fitting import save_table, spirals_table
                save_table(spirals_table(seed, samples or 300), save_data)
                click.echo(f"wrote the spirals table to {save_data}")
            job = prepare(opts)
            d = DEFAULTS[job.kind]
            given = dict(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, clip=clip)
            v = {k: (given[k] if given[k] is not None else d[k]) for k in d}
            config = SupervisedConfig(epochs=v["epochs"] if (epochs is not None or minutes is None) else None,
                                      minutes=minutes, batch_size=v["batch_size"], lr=v["lr"],
                                      optimizer=optimizer, weight_decay=weight_decay, momentum=momentum,
                                      clip=v["clip"] or None, patience=v["patience"] or None, seed=seed)
            ckpt = None
        trainer = make_trainer(job, opts, config, out_dir, ckpt)
        for note in job.notes:
            click.echo(note)
        click.echo(f"model: {job.model!r}, {job.model.num_parameters():,} parameters; "
                   f"out: {out_dir}")
        summary, result = _train(trainer, job)
        _report(summary, result, out_dir)
        extra = None
        if job.kind == "table" and opts.demo == "spirals" and not resume:
            extra = _linear_contrast(job, opts, config, out_dir)
    if json_path:
        _write_json(json_path, summary, result, extra)


def _names(spec):
    from bptt.fitting import _names as names
    return names(spec)


def _saved_options(opts, config) -> dict:
    """The run's values of the options --resume may not change, by click parameter name, in the
    types click gives them (lists of columns, 0 for an option that is off)."""
    same = ("target", "task", "header", "missing", "val_fraction", "activation", "dropout", "cell", "layers",
            "bidirectional", "pool", "rnn_hidden", "tokenizer", "embed_dim", "max_vocab", "max_len", "demo",
            "length", "samples", "dtype", "seed")
    saved = {k: getattr(opts, k) for k in same}
    saved.update(text_col=opts.text, val_file=opts.val, hidden=list(opts.hidden), drop=_names(opts.drop),
                 features=None if opts.features is None else _names(opts.features),
                 batch_size=config.batch_size, lr=config.lr, optimizer=config.optimizer,
                 momentum=config.momentum, clip=config.clip or 0.0,
                 weight_decay=(config.weight_decay if config.weight_decay is not None   # the default, resolved
                               else 0.01 if config.optimizer == "adamw" else 0.0),
                 patience=config.patience or 0)
    return saved


def _train(trainer, job):
    from bptt.fitting import evaluate_job
    total = trainer.total_steps
    losses = []
    state = {"last": 0.0}
    tty = sys.stderr.isatty()
    import time

    def on_event(kind, info):
        if kind == "step":
            losses.append(info["loss"])
            now = time.perf_counter()
            if tty and now - state["last"] > 0.2:
                state["last"] = now
                pos = f"step {info['step']}" + (f"/{total}" if total < 10 ** 11 else "")
                click.echo(f"\r{pos}  epoch {info['epoch']:.2f}  loss {info['loss']:.4f}\x1b[K", nl=False, err=True)
        elif kind == "val":
            if tty:
                click.echo("\r\x1b[K", nl=False, err=True)
            tl = sum(losses) / len(losses) if losses else float("nan")
            losses.clear()
            click.echo(f"epoch {info['epoch']:g}: train loss {tl:.4f}, val loss {info['val_loss']:.4f}, "
                       + _metrics_text(info) + (" *" if info["improved"] else ""))
        elif kind == "stop":
            click.echo(f"early stop: no better validation loss for {info['patience']} epochs "
                       f"(best at step {info['best_step']})")

    summary = trainer.run(on_event)
    trainer.restore_best()
    return summary, evaluate_job(job)


def _linear_contrast(job, opts, config, out_dir):
    """The same data and training budget, with no hidden layer (a linear classifier)."""
    import dataclasses
    import tempfile
    from bptt.fitting import evaluate_job, make_trainer
    from bptt.tabular import TabularMLP
    spec = dict(job.spec, hidden=[])
    lin = dataclasses.replace(job, model=TabularMLP(spec["in_features"], [], spec["out_features"], spec["task"],
                                                    dtype=spec["dtype"], seed=spec["seed"]), spec=spec)
    click.echo("linear model (no hidden layer), same data and budget:")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(lin, opts, config, tmp)
        trainer.run()
        trainer.restore_best()
        res = evaluate_job(lin)
    click.echo(f"linear: {_metrics_text(res['metrics'])}")
    return res


def _report(summary, result, out_dir):
    if summary["reason"] == "interrupted":
        echo_interrupted(summary, out_dir)
    best = f"best epoch {summary['best_epoch']:g}; " if summary.get("best_epoch") is not None else ""
    click.echo(f"final: {_metrics_text(result['metrics'])} vs {result['baseline_name']}: "
               f"{_metrics_text(result['baseline'])} ({result['val_rows']} validation rows; "
               f"{best}checkpoint {summary['best_checkpoint']})")
    if "confusion" in result:
        click.echo(confusion_text(result["labels"], result["confusion"]))


def _write_json(json_path, summary, result, extra):
    doc = {**result, "stopped": summary["reason"], "steps": summary["step"],
           "best_step": summary["best_step"], "best_epoch": summary["best_epoch"],
           "checkpoint": summary["best_checkpoint"], "elapsed_seconds": summary["elapsed"]}
    if extra is not None:
        doc["linear"] = extra["metrics"]
    try:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(json_safe(doc), f, indent=1, allow_nan=False)
    except OSError as e:
        fail(f"cannot write {json_path}: {e.strerror or e}")
    click.echo(f"wrote {json_path}")


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path())
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="preds.csv", show_default=True,
              help="Where to write the predictions (CSV).")
def predict(checkpoint, data, out_path):
    """Predict every row of DATA (a CSV file) with CHECKPOINT (a file, or a run folder: its best.bptt).

    \b
    Tables and text: one output row per input row; classification gives the label and each
    class's probability (p_<label>), regression the value in the target's units. If DATA holds
    the target column, the metrics are printed too.
    Forecasts (a `bptt forecast` checkpoint): the next values after the end of the given series.
    """
    from bptt.fitting import load_fit_checkpoint, predict_file
    try:
        ckpt, path = load_fit_checkpoint(checkpoint)
        if ckpt.get("kind") == "forecast":
            try:
                from bptt.forecast import predict_forecast
            except ImportError:
                fail(f"{path}: a forecast checkpoint, but this bptt has no forecasting (bptt.forecast)")
            predict_forecast(str(path), data, out_path)
            click.echo(f"wrote {out_path}")
            return
        summary = predict_file(ckpt, path, data, out_path)
    except user_errors() as e:
        fail(str(e))
    n = summary["rows"]
    click.echo(f"wrote {n} prediction{'s' * (n != 1)} to {out_path}")
    if "metrics" in summary:
        click.echo(f"metrics against the file's target column: {_metrics_text(summary['metrics'])}")
    elif "metrics_skipped" in summary:
        click.echo(f"no metrics against the file's target column: {summary['metrics_skipped']}")


COMMANDS = [fit, predict]
