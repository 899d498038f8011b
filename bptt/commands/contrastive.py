"""``bptt contrastive``: train a text encoder whose vectors find what a text means."""
from __future__ import annotations

import click

from .common import (CONTEXT, FiniteFloatRange, Progress, echo_interrupted, refuse_changed_options, set_threads,
                     training_errors)


def _run_options(c) -> dict:
    """A run's configuration by click's parameter names, with the types click gives them, for
    :func:`refuse_changed_options`. With --init-from the cell, sizes and tokenizer are the
    language model's, whatever the command said, so they are not compared."""
    saved = {"init_from": c.init_from, "bidirectional": bool(c.bidirectional), "max_vocab": c.max_vocab,
             "oov_buckets": c.oov_buckets, "min_count": c.min_count, "subwords": c.subwords,
             "batch_size": c.batch_size, "views": c.views, "dropout": c.dropout, "mask": c.mask,
             "crop": (c.crop_low, c.crop_high), "crop_tokens": (c.crop_min, c.crop_max),
             "temperature": c.temperature, "learn_temperature": bool(c.learn_temperature), "lr": c.lr,
             "clip": c.clip or 0.0, "val_every": c.val_every, "val_fraction": c.val_fraction,
             "test_fraction": c.test_fraction, "min_words": c.min_words, "seed": c.seed, "dtype": c.dtype}
    if not c.init_from:
        saved.update(cell=c.cell, hidden=c.hidden, layers=c.layers, embed_dim=c.embed_dim, tokenizer=c.tokenizer)
    return saved


@click.command(context_settings=CONTEXT)
@click.argument("text_files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--init-from", type=click.Path(), default=None,
              help="Start from a language-model checkpoint: its tokenizer, embedding and recurrent "
                   "weights (its cell, --hidden, --layers and --embed-dim are used).")
@click.option("--cell", type=click.Choice(["lstm", "gru", "rnn"]), default="lstm", show_default=True,
              help="Recurrent cell.")
@click.option("--hidden", type=click.IntRange(min=1), default=256, show_default=True, help="Hidden units H.")
@click.option("--layers", type=click.IntRange(min=1), default=1, show_default=True, help="Stacked layers.")
@click.option("--embed-dim", type=click.IntRange(min=1), default=128, show_default=True,
              help="Token embedding size.")
@click.option("--bidirectional", is_flag=True, help="Read each text both ways (the vector is 2H wide).")
@click.option("--tokenizer", type=click.Choice(["word", "char"]), default="word", show_default=True,
              help="Tokens (lower-cased words, or characters), unless --init-from.")
@click.option("--max-vocab", type=click.IntRange(min=2), default=20000, show_default=True,
              help="Vocabulary cap for --tokenizer word.")
@click.option("--oov-buckets", type=click.IntRange(min=0), default=None,
              help="Hash each word outside the vocabulary (unseen in training, or seen fewer than "
                   "--min-count times) into one of N shared embedding rows by a fixed hash (CRC-32), "
                   "so a rare name shared by a query and a document still matches; 0: all such "
                   "words are one <unk>. Word tokenizer only. [default: 4096, 0 with --tokenizer "
                   "char or --init-from]")
@click.option("--min-count", type=click.IntRange(min=1), default=None,
              help="Words seen fewer times in the training paragraphs get no row of their own and go "
                   "to the buckets, so the buckets are trained as they are used on new text. "
                   "[default: 2 with buckets, else 1]")
@click.option("--subwords", type=click.IntRange(min=0), default=0, show_default=True,
              help="Give each word the mean of its character 3- to 5-grams' vectors as well as its own "
                   "(fastText): the n-grams are hashed (CRC-32) into N shared rows, so names, versions "
                   "and paths the vocabulary lacks still get vectors made of their parts (0: off). "
                   "Word tokenizer only.")
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True,
              help="Paragraphs per step; each one's views are the other paragraphs' negatives.")
@click.option("--views", type=click.Choice(["crop", "disjoint", "dropout"]), default="crop", show_default=True,
              help="Two random spans of each paragraph (which may overlap), two that do not, or one "
                   "span twice, the views differing only by their dropout masks (SimCSE).")
@click.option("--dropout", type=FiniteFloatRange(min=0, max=1, max_open=True), default=None,
              help="Dropout on the token embeddings and between stacked layers, in training only. "
                   "[default: 0.1 with --views dropout, else 0]")
@click.option("--mask", type=FiniteFloatRange(min=0, max=1, max_open=True), default=0.3, show_default=True,
              help="Replace each token of a view by <unk> with this probability, in training only: an "
                   "augmentation that keeps the encoder from matching views by their exact tokens "
                   "alone (0: off).")
@click.option("--crop", "crop", type=(FiniteFloatRange(min=0, max=1, min_open=True),
                                      FiniteFloatRange(min=0, max=1, min_open=True)),
              default=(0.25, 0.6), show_default=True, metavar="LOW HIGH",
              help="Each view is a random span of this fraction of the (shortest) paragraph.")
@click.option("--crop-tokens", type=(click.IntRange(min=1), click.IntRange(min=1)), default=(8, 128),
              show_default=True, metavar="MIN MAX", help="Bounds on a view's length in tokens.")
@click.option("--temperature", type=FiniteFloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="τ of the softmax over similarities (logits = cosine / τ).")
@click.option("--learn-temperature", is_flag=True, help="Learn τ (from --temperature, floored at 0.01).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Optimisation steps. [default: 1000, unless --minutes]")
@click.option("--minutes", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Stop after this much wall time.")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Learning rate (Adam).")
@click.option("--clip", type=FiniteFloatRange(min=0), default=1.0, show_default=True,
              help="Clip the global gradient norm (0: off).")
@click.option("--val-every", type=click.IntRange(min=1), default=200, show_default=True,
              help="Run the retrieval benchmark on the validation paragraphs every N steps.")
@click.option("--val-fraction", type=FiniteFloatRange(min=0, max=1, min_open=True, max_open=True),
              default=0.1, show_default=True,
              help="Paragraphs held out for validation: choosing best.bptt and fitting the hybrid "
                   "search's fusion weight (OUT/validation.txt).")
@click.option("--test-fraction", type=FiniteFloatRange(min=0, max=1, min_open=True, max_open=True),
              default=0.1, show_default=True,
              help="Paragraphs held out for testing only (OUT/heldout.txt), never used in training.")
@click.option("--min-words", type=click.IntRange(min=2), default=16, show_default=True,
              help="Paragraphs held out for validation and testing have at least this many words "
                   "(as `bptt retrieval --min-words`); shorter ones are all for training.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed for weights, split and batches.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Floating-point type.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for the Numba kernels. [default: all cores]")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/embed", show_default=True,
              help="Run folder: checkpoint.bptt, best.bptt, metrics.jsonl, validation.txt, heldout.txt.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
def contrastive(text_files, init_from, cell, hidden, layers, embed_dim, bidirectional, tokenizer,
                max_vocab, oov_buckets, min_count, subwords, batch_size, views, dropout, mask, crop, crop_tokens,
                temperature, learn_temperature, steps, minutes, lr, clip, val_every, val_fraction,
                test_fraction, min_words, seed, dtype, threads, out_dir, resume):
    """Train a text encoder contrastively on the paragraphs of TEXT_FILES (or the built-in corpus).

    Each step takes --batch-size paragraphs (blocks separated by blank lines) and makes two views
    of each: two random spans, or one span seen through two dropout masks (--views). The encoder
    (embedding, recurrent stack, mean over time) must place the two views of a paragraph nearer
    to each other than to the other paragraphs' views: the symmetric in-batch InfoNCE loss.

    Two sets of paragraphs are held out. Validation (--val-fraction, OUT/validation.txt) is the
    retrieval benchmark on them (first halves find second halves): it picks best.bptt, and fits
    the weight α with which `bptt search --hybrid` mixes the vectors' and the lexical scores
    (stored in the checkpoint). The test set (--test-fraction, OUT/heldout.txt) is used for
    nothing: `bptt retrieval OUT OUT/heldout.txt` reports on it. Use the checkpoint with
    `bptt embed`, `bptt search` and `bptt retrieval`.
    """
    from bptt.contrastive import ContrastiveConfig, ContrastiveTrainer
    from bptt.data import load_corpus
    set_threads(threads)
    with training_errors():
        if resume:
            text = load_corpus(list(text_files)) if text_files else None
            trainer = ContrastiveTrainer.resume(out_dir, steps=steps, minutes=minutes, text=text)
            refuse_changed_options(click.get_current_context(), _run_options(trainer.config))
            if steps is not None and steps < trainer.step:
                raise ValueError(f"--steps {steps} is below the run's step {trainer.step}: --steps is the "
                                 f"total to train up to, so give more than {trainer.step} to go on")
            if steps is not None and steps == trainer.step:   # not an error: a sweep re-running a finished trial
                click.echo(f"{out_dir}: the run already finished: its {steps} steps are done; to train on, "
                           "pass a larger --steps (a total)")
            click.echo(f"resuming {out_dir} at step {trainer.step}")
        else:
            if steps is None and minutes is None:
                steps = 1000
            if dropout is None:
                dropout = 0.1 if views == "dropout" else 0.0
            config = ContrastiveConfig(
                cell=cell, hidden=hidden, layers=layers, embed_dim=embed_dim, bidirectional=bidirectional,
                tokenizer=tokenizer, max_vocab=max_vocab, oov_buckets=oov_buckets, min_count=min_count,
                subwords=subwords, init_from=init_from, views=views,
                dropout=dropout, mask=mask, crop_low=crop[0],
                crop_high=crop[1], crop_min=crop_tokens[0], crop_max=crop_tokens[1],
                batch_size=batch_size, temperature=temperature, learn_temperature=learn_temperature,
                steps=steps, minutes=minutes, lr=lr, clip=clip or None, val_every=val_every,
                val_fraction=val_fraction, test_fraction=test_fraction, min_words=min_words, seed=seed, dtype=dtype, sources=[str(p) for p in text_files])
            text = load_corpus(list(text_files))
            trainer = ContrastiveTrainer.fresh(config, out_dir, text)
        c, m = trainer.config, trainer.model
        what = ", ".join(c.sources) if c.sources else "the built-in corpus"
        start = f", from {c.init_from}" if c.init_from else ""
        click.echo(f"training a {c.layers}-layer {'bidirectional ' if c.bidirectional else ''}"
                   f"{c.cell.upper()} encoder (H={c.hidden}, {m.num_parameters():,} parameters, "
                   f"{c.dtype}{start}, views {c.views}{f', dropout {c.dropout:g}' if c.dropout else ''}) "
                   f"on {what}: {len(trainer.train_ids):,} training paragraphs, "
                   f"{len(trainer.val_queries):,} for validation, {len(trainer.test_paras):,} for testing, "
                   f"vocabulary {trainer.tokenizer.vocab_size}"
                   f"{f' ({c.oov_buckets} of them buckets for rarer words)' if c.oov_buckets else ''}"
                   f"{f', {c.subwords} character n-gram buckets' if c.subwords else ''}")
        progress = Progress(trainer.total_steps, trainer.step, c.minutes)
        progress.start()

        def on_event(kind, info):
            if kind == "step":
                progress.step(info)
            elif kind == "val":
                hybrid = (f"; hybrid α {info['val_alpha']:g} with {info['val_lexical']}: Recall@10 "
                          f"{info['val_hybrid_recall@10']:.3f}" if "val_alpha" in info else "")
                progress.message(f"step {info['step']}: validation Recall@1 {info['val_recall@1']:.3f}, "
                                 f"Recall@10 {info['val_recall@10']:.3f}, MRR {info['val_mrr']:.3f} "
                                 f"({info['val_queries']} queries){hybrid}")

        summary = trainer.run(on_event)
    if summary["reason"] == "interrupted":
        echo_interrupted(summary, out_dir)
    v = summary["val"] or {}
    click.echo(f"final: step {summary['step']}, validation MRR {v.get('val_mrr', float('nan')):.3f}, "
               f"Recall@10 {v.get('val_recall@10', float('nan')):.3f}; checkpoint {summary['checkpoint']}")
    if summary["best_step"] is not None and summary["best_step"] != summary["step"]:
        click.echo(f"best: step {summary['best_step']}, validation MRR {summary['best']:.3f}; "
                   f"checkpoint {summary['best_checkpoint']}")
    f = summary["fusion"]
    if f is not None:
        click.echo(f"hybrid search: α = {f['alpha']:g} with {f['lexical']} (fitted on {f['pairs']} validation "
                   f"pairs: Recall@10 {f['recall@10']:.3f}, MRR {f['mrr']:.3f})")
    click.echo(f"test paragraphs: {summary['heldout']} (bptt retrieval {out_dir} {summary['heldout']})")


COMMANDS = [contrastive]
