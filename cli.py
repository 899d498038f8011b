"""The ``bptt`` command line. It parses options and prints; all the math lives in the package."""
from __future__ import annotations

import sys

import click

from bptt.commands import register
from bptt.commands.common import (CONTEXT, FiniteFloatRange, Progress as _Progress, echo_interrupted,
                                  fail as _fail, refuse_changed_options, set_threads as _set_threads,
                                  training_errors, user_errors as _user_errors)


def _perplexity(m: dict, decimals: int = 2) -> str:
    """A perplexity as text: fixed-point while it is readable, then scientific, and ``inf`` once
    exp(nats) overflows (a diverged model)."""
    if not m["nats"] < 700:
        return "inf"
    return f"{m['ppl']:.{decimals}f}" if m["ppl"] < 1e6 else f"{m['ppl']:.3e}"


@click.group(context_settings=CONTEXT)
@click.option("--threads", type=click.IntRange(min=1), default=None, envvar="BPTT_THREADS",
              show_envvar=True,
              help="Threads for the Numba kernels; 1 runs the serial build. [default: all cores]")
@click.option("--kernels", type=click.Choice(["fast", "reference"]), default=None, envvar="BPTT_KERNELS",
              show_envvar=True,
              help="reference: run on the readable twins in bptt.reference (plain NumPy, no JIT, "
                   "steppable in pdb, slow). [default: fast]")
@click.version_option(package_name="bptt", prog_name="bptt")
def main(threads, kernels):
    """bptt: neural networks trained with hand-written backpropagation (through time), in Numba.

    Every forward and backward pass is an explicit Numba loop, checked by finite differences and
    against PyTorch. Run `bptt COMMAND --help` for a command's options.
    """
    try:
        from bptt import jit  # reads BPTT_THREADS on import
    except ValueError as e:
        _fail(str(e), 2)
    if threads is not None:
        try:
            jit.set_threads(threads)
        except ValueError as e:
            _fail(str(e), 2)
    if kernels is not None:
        jit.set_kernels(kernels)


@main.command()
@click.option("--model", type=click.Choice(["dense", "mlp", "rnn", "lstm", "gru", "dropout", "table-regression",
                                           "table-binary", "table-multiclass", "text", "forecaster"]),
              default="mlp", show_default=True,
              help="What to check: a Dense layer, an MLP, a recurrent layer, dropout "
                   "(a fixed mask), the MLP of `bptt fit` with each task's loss, its text classifier "
                   "(padded sequences with a mask), or the forecaster of `bptt forecast` "
                   "(an LSTM over a window and its head).")
@click.option("--activation", default="tanh", show_default=True,
              help="identity, relu, tanh, sigmoid, gelu (exact), gelu_tanh or gelu_sigmoid; "
                   "for rnn: tanh, relu or identity; table-* and text: of the hidden layers (not identity); "
                   "lstm, gru, dropout and forecaster have fixed nonlinearities and refuse it.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
              help="Finite differences need float64; float32 is up-cast, with a note.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed for weights, inputs and the sample.")
@click.option("--batch", type=click.IntRange(min=1), default=3, show_default=True, help="Batch size B.")
@click.option("--hidden", type=click.IntRange(min=1), default=8, show_default=True, help="Hidden/output units H.")
@click.option("--layers", type=click.IntRange(min=1), default=None,
              help="Hidden layers (mlp) or stacked layers (rnn/lstm/gru). [default: 2 for mlp, 1 for rnn/lstm/gru]")
@click.option("--bidirectional", is_flag=True, default=False,
              help="rnn/lstm/gru: run each layer in both directions. [default: off]")
@click.option("--seq-len", type=click.IntRange(min=1), default=4, show_default=True,
              help="Time steps T of the input sequence (rnn/lstm/gru).")
@click.option("--max-checks", type=click.IntRange(min=1), default=100, show_default=True,
              help="Entries checked per tensor; larger tensors are sampled.")
@click.option("--explain", is_flag=True, default=False,
              help="Also show two checked entries of each tensor worked out: θ ± ε, the two losses, "
                   "the numeric and analytic values and their relative error.")
@click.pass_context
def gradcheck(ctx, model, activation, dtype, seed, batch, hidden, layers, bidirectional, seq_len, max_checks,
              explain):
    """Check hand-written gradients against central finite differences.

    Prints one row per parameter and input (for rnn/lstm/gru: every weight and bias, x, h0 and,
    for lstm, c0, with non-zero random initial states): entries checked, the maximum absolute and
    relative error, and pass/fail. Exits with status 1 if any row fails.
    """
    from click.core import ParameterSource
    from bptt.checks import IGNORE_ACTIVATION, build_problem
    from bptt.finitediff import gradcheck as run_check
    if (model in IGNORE_ACTIVATION and activation != "tanh"
            and ctx.get_parameter_source("activation") is not ParameterSource.DEFAULT):   # tanh: the default, harmless
        _fail(f"--activation does not apply to --model {model}: its nonlinearities are fixed", 2)
    if dtype == "float32":
        click.echo("note: gradcheck runs in float64 (float32 rounding swamps finite differences); up-casting.")
    if layers is None:
        layers = 2 if model == "mlp" or model.startswith("table-") else 1
    try:
        target, inputs = build_problem(model, activation=activation, seed=seed, batch=batch,
                                       hidden=hidden, layers=layers, seq_len=seq_len,
                                       bidirectional=bidirectional)
    except ValueError as e:
        _fail(str(e), 2)
    shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in inputs.items())
    click.echo(f"gradcheck {target!r}, seed {seed}; inputs {shapes}")
    report = run_check(target, inputs, seed=seed, max_checks=max_checks, explain=2 if explain else 0)
    if explain:
        click.echo(f"L = Σ_k ⟨out_k, g_k⟩ with a random upstream gradient g; ε = {report.eps:g}\n")
        click.echo(report.explain() + "\n")
    click.echo(report.table())
    if not report.passed:
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
# language models: train, sample, eval, embed, search, plot
# ---------------------------------------------------------------------------------------------

@main.command()
@click.argument("text_files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--cell", type=click.Choice(["lstm", "gru", "rnn"]), default="lstm", show_default=True,
              help="Recurrent cell.")
@click.option("--hidden", type=click.IntRange(min=1), default=256, show_default=True, help="Hidden units H.")
@click.option("--layers", type=click.IntRange(min=1), default=1, show_default=True, help="Stacked layers.")
@click.option("--embed-dim", type=click.IntRange(min=1), default=64, show_default=True, help="Token embedding size.")
@click.option("--dropout", type=FiniteFloatRange(min=0, max=1, max_open=True), default=0.0, show_default=True,
              help="Dropout probability between stacked layers (as torch's dropout=) and before the head.")
@click.option("--tokenizer", type=click.Choice(["char", "word"]), default="char", show_default=True,
              help="Characters (UTF-8 code points) or words (capped vocabulary with <unk>).")
@click.option("--max-vocab", type=click.IntRange(min=2), default=10000, show_default=True,
              help="Vocabulary cap for --tokenizer word.")
@click.option("--seq-len", type=click.IntRange(min=1), default=64, show_default=True,
              help="Truncated-BPTT length T: the gradient stops at chunk boundaries, the state is carried.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Parallel streams B.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Optimisation steps to train up to (a total, also on --resume). [default: 1000 "
                   "unless --epochs or --minutes is given]")
@click.option("--epochs", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Train for this many passes over the training text instead.")
@click.option("--minutes", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Stop (and save) after this much wall-clock time.")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=2e-3, show_default=True,
              help="Learning rate.")
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd", "rmsprop", "adagrad"]),
              default="adam", show_default=True, help="Optimiser (sgd and rmsprop use --momentum).")
@click.option("--momentum", type=FiniteFloatRange(min=0, max=1, max_open=True), default=0.9,
              show_default=True, help="Momentum for sgd and rmsprop.")
@click.option("--weight-decay", type=FiniteFloatRange(min=0), default=None,
              help="Weight decay. [default: 0, or 0.01 for adamw]")
@click.option("--schedule", type=click.Choice(["constant", "step", "cosine"]), default="constant",
              show_default=True, help="Learning-rate schedule.")
@click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True,
              help="Linear warm-up steps.")
@click.option("--lr-step-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Steps between decays, for --schedule step.")
@click.option("--lr-gamma", type=FiniteFloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="Decay factor, for --schedule step.")
@click.option("--clip", type=FiniteFloatRange(min=0), default=1.0, show_default=True,
              help="Clip the global gradient norm to this (0 turns it off).")
@click.option("--clip-value", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Also clip every gradient entry to [-v, v].")
@click.option("--val-every", type=click.IntRange(min=1), default=200, show_default=True,
              help="Steps between validations (each also writes a checkpoint).")
@click.option("--val-tokens", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="At most this many validation tokens per validation.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed for the weights and sampling.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Floating-point type of the weights and the arithmetic.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for the kernels (as the global --threads). [default: all cores]")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/lm", show_default=True,
              help="Run folder: checkpoint.bptt (the latest), best.bptt (the lowest validation loss) "
                   "and metrics.jsonl go here.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out exactly where it stopped, with its options (only --steps, "
                   "--epochs, --minutes and --threads may change; TEXT_FILES: the same text, "
                   "[default: the files the run recorded]).")
@click.pass_context
def train(ctx, text_files, cell, hidden, layers, embed_dim, dropout, tokenizer, max_vocab, seq_len, batch_size,
          steps, epochs, minutes, lr, optimizer, momentum, weight_decay, schedule, warmup,
          lr_step_size, lr_gamma, clip,
          clip_value, val_every, val_tokens, seed, dtype, threads, out_dir, resume):
    """Train a language model on TEXT_FILES (UTF-8), or on the built-in corpus if none are given.

    The built-in corpus is English text that ships with Python: the docstrings of the standard
    library's modules (about 600 KB). The text is split 90/10 into training and validation parts.
    Progress shows the loss, tokens per second and the ETA; validation reports nats per token,
    bits per character (or per word) and perplexity against the unigram baseline. Ctrl-C saves a
    checkpoint and exits; --resume continues bit-for-bit.
    """
    from bptt.data import load_corpus
    from bptt.train import Trainer, TrainConfig
    _set_threads(threads)
    with training_errors():
        if resume:
            text = load_corpus(list(text_files)) if text_files else None
            was = {}

            def check(saved):
                refuse_changed_options(ctx, saved.as_options())
                was.update(schedule=saved.schedule, steps=saved.steps, epochs=saved.epochs)

            trainer = Trainer.resume(out_dir, steps=steps, epochs=epochs, minutes=minutes, text=text,
                                     check_config=check)
            if was["schedule"] == "cosine" and (steps, epochs) != (None, None) and \
                    (steps, epochs) != (was["steps"], was["epochs"]):
                click.echo("note: the cosine schedule is laid out over the run's length, so it changes with "
                           "--steps/--epochs: this resume is not the run it would have been (give the same "
                           "length for an exact resume)")
            if trainer.step >= trainer.total_steps:
                click.echo(f"{out_dir}: the run already finished: its {trainer.total_steps} steps are done; to "
                           "train on, pass a larger --steps (a total)")
            click.echo(f"resuming {out_dir} at step {trainer.step}")
        else:
            if steps is None and epochs is None and minutes is None:
                steps = 1000
            config = TrainConfig(cell=cell, hidden=hidden, layers=layers, embed_dim=embed_dim, dropout=dropout,
                                 tokenizer=tokenizer, max_vocab=max_vocab, seq_len=seq_len,
                                 batch_size=batch_size, steps=steps, epochs=epochs, minutes=minutes,
                                 lr=lr, optimizer=optimizer, momentum=momentum,
                                 weight_decay=weight_decay, clip=clip or None, clip_value=clip_value,
                                 schedule=schedule, warmup=warmup, lr_step_size=lr_step_size,
                                 lr_gamma=lr_gamma, val_every=val_every,
                                 val_tokens=val_tokens, seed=seed, dtype=dtype,
                                 sources=[str(p) for p in text_files])
            text = load_corpus(list(text_files))
            trainer = Trainer.fresh(config, out_dir, text)
        c = trainer.config
        what = ", ".join(c.sources) if c.sources else "the built-in corpus"
        click.echo(f"training a {c.layers}-layer {c.cell.upper()} (H={c.hidden}, "
                   f"{trainer.model.num_parameters():,} parameters, {c.dtype}) on {what}: "
                   f"{trainer.train_ids.size:,} training and {trainer.val_ids.size:,} validation "
                   f"tokens, vocabulary {trainer.tokenizer.vocab_size}")
        click.echo(f"unigram baseline: {trainer.unigram:.4f} nats/token")
        progress = _Progress(trainer.total_steps, trainer.step, c.minutes)
        progress.start()

        def on_event(kind, info):
            if kind == "step":
                progress.step(info)
            elif kind == "val":
                ppl = _perplexity({"nats": info["val_loss"], "ppl": info["val_ppl"]})
                progress.message(f"step {info['step']}: val loss {info['val_loss']:.4f} nats/token, "
                                 f"{info['val_bits']:.3f} {info['unit']}, perplexity {ppl} "
                                 f"(unigram baseline {info['unigram']:.4f})")

        summary = trainer.run(on_event)
    if summary["reason"] == "interrupted":
        echo_interrupted(summary, out_dir)
    val = summary["val"]["val_loss"] if summary["val"] else float("nan")
    click.echo(f"final: step {summary['step']}, validation loss {val:.4f} nats/token vs unigram "
               f"baseline {summary['unigram']:.4f}; checkpoint {summary['checkpoint']}")
    if summary.get("best_step") is not None and summary["best_step"] != summary["step"]:
        click.echo(f"best: step {summary['best_step']}, validation loss {summary['best_val']:.4f} "
                   f"nats/token; checkpoint {summary['best_checkpoint']}")


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--length", type=click.IntRange(min=0), default=500, show_default=True, help="Tokens to generate.")
@click.option("--temperature", type=FiniteFloatRange(min=0, min_open=True), default=0.8, show_default=True,
              help="Divides the logits: lower is more conservative (towards 0 it picks the likeliest "
                   "token; --top-k 1 is greedy decoding).")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Sample only from the k likeliest tokens.")
@click.option("--prime", default="", help="Text to start from (its symbols must be in the vocabulary).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="The same seed gives the same text.")
def sample(checkpoint, length, temperature, top_k, prime, seed):
    """Generate text from a trained CHECKPOINT (a file, or a run folder), streamed as it comes."""
    from bptt.generate import sample as run_sample
    from bptt.train import load_model
    try:
        model, tok, _ = load_model(checkpoint, "sample")
        gen = run_sample(model, tok, length=length, temperature=temperature, top_k=top_k,
                         prime=prime, seed=seed)
        click.echo(prime, nl=False)
        for piece in gen:
            click.echo(piece, nl=False)
            sys.stdout.flush()
        click.echo()
    except _user_errors() as e:
        _fail(str(e))


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path())
@click.argument("text_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--seq-len", type=click.IntRange(min=1), default=None,
              help="Chunk length T; the hidden state is carried across chunks. [default: the training --seq-len]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Parallel streams B the text is read as. [default: the training --batch-size]")
def eval_(checkpoint, text_files, seq_len, batch_size):
    """Print the loss, perplexity and bits per character of CHECKPOINT on TEXT_FILES.

    Every token after the first is scored once: the text is read as B streams of T-step chunks
    with the hidden state carried, the last chunk of each stream shorter, and the few tokens left
    after the last stream continue it. Characters (or words) the model never saw are read as
    <unk>; their count is shown.
    """
    from bptt.data import count_unknown, read_text_files
    from bptt.train import evaluate, load_model, metrics_summary
    try:
        model, tok, ckpt = load_model(checkpoint, "eval")
        ids = tok.encode(read_text_files(list(text_files)))
        T = seq_len or ckpt["config"]["seq_len"]
        B = batch_size or ckpt["config"]["batch_size"]
        if ids.size < 2:
            raise ValueError("the text has fewer than 2 tokens: nothing to predict")
        nats = evaluate(model, ids, batch_size=B, seq_len=min(T, ids.size - 1), whole=True)
    except _user_errors() as e:
        _fail(str(e))
    m = metrics_summary(nats, tok.kind)
    unit = "characters" if tok.kind == "char" else "words"
    unknown = count_unknown(tok, ids)
    click.echo(f"tokens: {ids.size:,} ({ids.size - 1:,} scored: every one after the first)")
    click.echo(f"unseen {unit}: {unknown:,} of {ids.size:,} ({100 * unknown / ids.size:.2f}%), read as <unk>")
    click.echo(f"loss: {m['nats']:.4f} nats/token")
    click.echo(f"perplexity: {_perplexity(m, 3)}")
    click.echo(f"{'bits per character' if tok.kind == 'char' else 'bits per word'}: {m['bits']:.4f}")


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--per", type=click.Choice(["line", "paragraph", "file"]), default="line", show_default=True,
              help="Embed each non-empty line, each paragraph (blocks between blank lines), or each file.")
@click.option("--pool", type=click.Choice(["last", "mean"]), default="mean", show_default=True,
              help="The mean of the hidden states over all steps, or the final one.")
@click.option("--normalize/--no-normalize", default=True, show_default=True, help="Scale to unit L2 norm.")
@click.option("--center/--no-center", default=True, show_default=True,
              help="Subtract the collection's mean vector (stored, and applied to queries too).")
@click.option("--whiten", is_flag=True,
              help="Also whiten: decorrelate the directions, fitted on the collection. [default: off]")
@click.option("--index", "build_index", is_flag=True,
              help="Also build a FAISS index beside the vectors (needs bptt[index]). [default: off]")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="vectors.npy", show_default=True,
              help="vectors.npy (with texts in vectors.npy.json beside it) or vectors.jsonl.")
def embed(checkpoint, inputs, per, pool, normalize, center, whiten, build_index, out_path):
    """Embed text with CHECKPOINT: each line (or file) of INPUTS becomes a vector.

    CHECKPOINT is a language model or a `bptt contrastive` encoder. The vectors are centred (and
    optionally whitened) by a transform fitted on them, stored with them and applied to queries.
    """
    from bptt.ann import build_index as make_index, have_faiss, INSTALL_HINT, save_index
    from bptt.checkpoint import check_output_file
    from bptt.collection import count_unknown_texts, embed_collection, postprocess_plan
    from bptt.contrastive import load_embedder
    from bptt.data import read_text_files
    from bptt.generate import save_vectors
    try:
        if build_index and not have_faiss():
            raise ValueError(INSTALL_HINT)
        check_output_file(out_path)
        model, tok, _ = load_embedder(checkpoint)
        if per == "file":
            texts = [read_text_files([p]) for p in inputs]
        elif per == "paragraph":
            from bptt.retrieval import paragraphs
            texts = [p for f in inputs for p in paragraphs(read_text_files([f]), 1)]
        else:
            texts = [line for line in read_text_files(list(inputs)).splitlines() if line.strip()]
        if not texts:
            raise ValueError("nothing to embed: the input has no non-empty lines")
        vecs, post = embed_collection(model, tok, texts, pool=pool, normalize=normalize,
                                      center=center, whiten=whiten)
        note = postprocess_plan(len(texts), center, whiten)[2]
        unknown = count_unknown_texts(tok, texts)
        save_vectors(out_path, vecs, texts, checkpoint=checkpoint, pool=pool, normalize=normalize,
                     model=model, post=post)
        from bptt.ann import remove_index
        stale = remove_index(out_path)   # it belonged to the vectors just overwritten
        if build_index:
            import os
            from bptt.generate import model_fingerprint
            index, kind = make_index(vecs)
            ipath = save_index(out_path, index, kind, vecs, {"model_fingerprint": model_fingerprint(model),
                                                              "checkpoint": os.path.abspath(checkpoint)})
    except _user_errors() as e:
        _fail(str(e))
    if note:
        click.echo(f"note: {note}")
    if unknown:
        click.echo(f"note: {unknown} of {len(texts)} texts have no token the model knows (all <unk>); "
                   "their vectors say nothing about them")
    click.echo(f"wrote {len(texts)} vector{'' if len(texts) == 1 else 's'} of size {vecs.shape[1]} to {out_path}")
    if build_index:
        click.echo(f"wrote a {kind} index to {ipath}")
    elif stale:
        click.echo(f"removed the index of the previous {out_path}")


@main.command()
@click.argument("source", type=click.Path())
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Neighbours to show.")
@click.option("--in", "in_files", multiple=True, type=click.Path(dir_okay=False),
              help="With a checkpoint as SOURCE: text files whose lines are searched "
                   "[default: paragraphs of the built-in corpus].")
@click.option("--pool", type=click.Choice(["last", "mean"]), default=None,
              help="With a checkpoint as SOURCE. [default: mean]")
@click.option("--checkpoint", default=None, type=click.Path(),
              help="With a vectors file: embed the query with this checkpoint (it must be the one "
                   "that made the vectors). [default: the one recorded in the file]")
@click.option("--hybrid", is_flag=True,
              help="Fuse the vectors' scores with a lexical method's (BM25, TF-IDF or subword TF-IDF). [default: off]")
@click.option("--fusion", type=click.Choice(["rrf", "score"]), default=None,
              help="With --hybrid: score fusion, α·z(cosine) + (1-α)·z(lexical), or reciprocal-rank "
                   "fusion. [default: score if the checkpoint has a fitted α, else rrf]")
@click.option("--alpha", type=FiniteFloatRange(min=0, max=1), default=None,
              help="With --hybrid: α of score fusion. [default: the checkpoint's fitted α, else 0.5]")
@click.option("--rrf-k", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="With --hybrid: RRF score = sum over the two rankings of 1/(k + rank). [default: 60]")
@click.option("--exact", is_flag=True, help="Ignore the FAISS index beside the vectors file. [default: off]")
def search(source, query, k, in_files, pool, checkpoint, hybrid, fusion, alpha, rrf_k, exact):
    """Print the top-k neighbours of QUERY by cosine similarity, with scores and text.

    SOURCE is a vectors file written by `bptt embed` (the query is embedded with the checkpoint
    recorded in it, pooled, centred and whitened as the vectors were; a FAISS index beside it is
    used when present), or a checkpoint, in which case the lines of --in are embedded first.
    With --hybrid the scores fuse the vectors' and a lexical method's: by default with the weight α
    that `bptt contrastive` fitted on validation paragraphs (stored in its checkpoint), else by
    reciprocal-rank fusion with BM25.
    """
    from bptt.collection import Collection, postprocess_plan
    from bptt.contrastive import load_embedder
    from bptt.generate import search_corpus
    from bptt.retrieval import resolve_fusion
    try:
        if not hybrid and (fusion or alpha is not None or rrf_k is not None):
            raise ValueError("--fusion, --alpha and --rrf-k go with --hybrid")
        if source.endswith((".npy", ".jsonl")):
            if pool or in_files:
                raise ValueError("--pool and --in go with a checkpoint as SOURCE, not a vectors file")
            col = Collection.from_vectors_file(source, load_embedder, checkpoint, use_index=not exact)
        else:
            if checkpoint:
                raise ValueError("--checkpoint goes with a vectors file as SOURCE, not a checkpoint")
            model, tok, ckpt = load_embedder(source)
            texts = search_corpus(list(in_files))
            note = postprocess_plan(len(texts))[2]
            if note:
                click.echo(f"note: {note}", err=True)
            col = Collection.from_texts(model, tok, texts, pool=pool or "mean", fitted=ckpt.get("fusion"))
        spec = resolve_fusion(col.fitted, fusion=fusion, alpha=alpha, rrf_k=rrf_k)[0] if hybrid else None
        idx, sims = col.search(query, k, hybrid=hybrid, fusion=spec)
    except _user_errors() as e:
        _fail(str(e))
    for rank, (i, s) in enumerate(zip(idx, sims), 1):
        text = col.texts[i].replace("\n", " ")
        click.echo(f"{rank:>3}  {s:+.4f}  {text[:100]}")


@main.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="[default: RUN/loss.png]")
def plot(run, out_path):
    """Plot the training and validation loss curves of RUN (a run folder) to a PNG.

    Needs matplotlib: pip install "bptt[plot]".
    """
    from bptt.checkpoint import check_output_file
    from bptt.plotting import plot_run
    try:
        if out_path:
            check_output_file(out_path)
        path = plot_run(run, out_path)
    except ImportError:
        _fail('bptt plot needs matplotlib: pip install "bptt[plot]"')
    except _user_errors() as e:
        _fail(str(e))
    click.echo(f"wrote {path}")


@main.command()
@click.option("--cells", default="rnn,gru,lstm", show_default=True,
              help="Comma-separated cells to benchmark: rnn, gru, lstm.")
@click.option("--shapes", default=None,
              help="Comma-separated named shapes (B,T,I,H): teach (1,25,65,100), char (50,50,65,128), "
                   "fastrnns (64,100,512,512), deepbench (32,25,1024,1024); 'none' for only --shape. "
                   "[default: all four]")
@click.option("--shape", "extra_shapes", multiple=True, metavar="B,T,I,H",
              help="Add a shape (repeatable). [default: none]")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="At least this many timed steps per framework; the median is reported.")
@click.option("--min-time", type=FiniteFloatRange(min=0), default=1.0, show_default=True,
              help="Time each framework for at least this many seconds per row "
                   "(0: exactly --repeat steps).")
@click.option("--warmup", type=click.IntRange(min=1), default=1, show_default=True,
              help="Untimed steps per framework before timing (the first loads the kernels; bptt's "
                   "memory is measured on one), and at least 0.2 s of them unless --min-time is 0.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for both bptt and torch. [default: the global --threads, BPTT_THREADS, or all cores]")
@click.option("--peak", type=FiniteFloatRange(min=0, min_open=True), default=None, metavar="GFLOPS",
              help="float32 FMA peak in GFLOP/s for the %peak column; the measured one is still "
                   "reported. [default: measured, about 1 s]")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Also write the full report as JSON here. [default: none]")
@click.option("--quick", is_flag=True, help="Only the teach and char shapes (for tests). [default: off]")
@click.option("--no-extras", is_flag=True,
              help="Skip the char-LM step, the MLP step and the compile-time report. [default: off]")
@click.option("--in-process", is_flag=True,
              help="Time both frameworks in this process instead of one worker process each "
                   "(their OpenMP thread pools then compete: for diagnosis, so no speed target "
                   "applies). [default: off]")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed for weights and inputs.")
@click.option("--isa", type=click.Choice(["avx512", "avx2", "generic"]), default=None,
              help="Vector ISA for both frameworks: bptt's worker runs with BPTT_ISA, torch's is held "
                   "to the same ISA (ATEN_CPU_CAPABILITY, DNNL_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS). "
                   "An ISA this CPU cannot run is refused. generic is for correctness: it runs, but "
                   "no speed target applies. [default: BPTT_ISA if set (torch held to it too), else "
                   "the CPU's widest, torch unrestricted]")
def bench(cells, shapes, extra_shapes, repeat, min_time, warmup, threads, peak, json_path, quick,
          no_extras, in_process, seed, isa):
    """Time one training step of bptt's RNN/GRU/LSTM against torch.nn, on identical weights.

    A step is zero_grad, forward, then full BPTT backward (dx, dh0 and every weight gradient),
    float32, on the same thread count. Each row first checks that out, dx, dh0 and every gradient
    agree (relative error <= 1e-3), then times each framework after warm-up, in its own worker
    process (two OpenMP thread pools in one process slow each other down), in four slices that
    alternate between the two (so that a machine's slow spells slow both alike).
    Columns: median ms of each, torch/bptt (above 1: bptt is faster), the lowest and highest
    torch/bptt of the four rounds (a round: a slice of each, timed one after the other; how far
    the machine moved the ratio while the row ran), GFLOP/s of each counting
    3*2*T*B*G*H*(I+H) per step, bptt's share of the float32 FMA peak of the ISA in use (measured
    in the run), and bptt's peak memory (parameters, gradients and the step's allocations).
    Extras: a char-LM step and an MLP step against torch, and the compile time (cold cache) and
    warm start time (from the cache). The header shows each framework's ISA.

    torch's RNN char step is also timed in a plain process (numpy and torch only); if the torch
    worker took over 1.3x as long, the row is flagged "TORCH WORKER SLOWED".

    Targets: torch/bptt >= 1 on every row and extra, >= 3 on teach, and bptt at >= 55% of the FMA
    peak on fastrnns and deepbench. Exits with status 1 if a correctness check fails; missed speed
    targets are only reported (per row in the JSON under "targets", and "all_targets_met").
    Needs torch: pip install 'bptt[bench]'.
    """
    import os
    from bptt import benchmark as bm, jit
    if jit.get_kernels() == "reference":
        _fail("bench times the fast kernels against torch; run it without --kernels reference "
              "(or BPTT_KERNELS=reference)", 2)
    try:
        bm.require_torch()
        cell_list = bm.parse_list(cells, bm.CELLS, "--cells")
        if not cell_list:
            raise ValueError("--cells must name at least one cell")
        if quick and shapes is not None:
            raise ValueError("--quick and --shapes cannot be combined (--quick means --shapes teach,char)")
        names = bm.QUICK_SHAPES if quick else bm.parse_list(shapes, tuple(bm.SHAPES), "--shapes")
        shape_list = [(n, bm.SHAPES[n]) for n in names]
        shape_list += [("custom", bm.parse_shape(s)) for s in extra_shapes]
        if not shape_list:
            raise ValueError("no shapes to run: give --shapes or --shape")
        from bptt import jit
        if threads is not None and threads > jit.max_threads():
            raise ValueError(f"--threads must be at most {jit.max_threads()} (the cores Numba sees), got {threads}")
        if json_path and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
            raise ValueError(f"--json: the folder of {json_path} does not exist")
        config = bm.BenchConfig(cells=cell_list, shapes=shape_list, threads=threads, repeat=repeat,
                                warmup=warmup, min_time=min_time, peak=peak, extras=not no_extras,
                                in_process=in_process, seed=seed, isa=isa)
        bm.choose_isa(config)   # refuses an ISA this CPU cannot run, before anything starts
    except bm.BenchError as e:
        _fail(str(e))
    except ValueError as e:
        _fail(str(e), 2)
    tty = sys.stderr.isatty()

    def on_event(kind, payload):
        if kind == "header":
            click.echo(bm.format_header(payload))
        elif kind == "start" and tty:
            click.echo(f"\r  running {payload} ...\x1b[K", nl=False, err=True)
        elif kind in ("row", "extra"):
            if tty:
                click.echo("\r\x1b[K", nl=False, err=True)
            if kind == "extra" and payload["name"] == "char_lm":
                click.echo()
            click.echo(bm.format_row(payload) if kind == "row" else bm.format_extra(payload))

    try:
        report = bm.run(config, on_event)
    except (bm.BenchError, ValueError) as e:
        _fail(str(e))
    click.echo(bm.format_summary(report))
    if json_path:
        try:
            bm.write_json(report, json_path)
        except OSError as e:
            _fail(f"cannot write {json_path}: {e}")
        click.echo(f"wrote {json_path}")
    if not report["all_correct"]:
        sys.exit(1)


register(main)

# One line each in `bptt --help` (click would cut every docstring's first sentence at about 60
# characters, mid-phrase); `bptt COMMAND --help` shows the whole text.
SHORT_HELP = {
    "train": "Train a character/word language model on text files.",
    "sample": "Generate text from a trained language model.",
    "eval": "Loss, perplexity and bits per token of a model on a text.",
    "embed": "Embed lines or files of text as vectors (the hidden state).",
    "search": "Search embedded texts by cosine similarity to a query.",
    "plot": "Plot a run's training and validation curves.",
    "fit": "Train on a CSV table, labelled text or a built-in demo.",
    "predict": "Predict the rows of a CSV file with a fit or forecast run.",
    "forecast": "Forecast the next K values of a time series.",
    "contrastive": "Train a text encoder contrastively for retrieval.",
    "retrieval": "Recall@k and MRR of encoders against baselines.",
    "gradcheck": "Check gradients against central finite differences.",
    "gradflow": "How the gradient ‖∂L/∂h_t‖ fades back through time.",
    "bench": "Time a training step of bptt against PyTorch.",
    "sweep": "Run many trials of train, fit or forecast on Ray.",
}
for _name, _text in SHORT_HELP.items():
    if _name in main.commands:
        main.commands[_name].short_help = _text

if __name__ == "__main__":
    main()
