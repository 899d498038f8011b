"""``bptt gradflow``: how much gradient reaches each step of a sequence, per layer and cell."""
from __future__ import annotations

import click

from .common import CONTEXT, FiniteFloatRange, fail, user_errors

# Each step's norm reruns the steps after it, so the work grows as T²: past this, a run takes
# minutes with nothing to show for them.
MAX_LENGTH = 1000
# What a checkpoint fixes: the options that describe a fresh model.
MODEL_OPTIONS = ("cell", "hidden", "layers", "init_scale", "forget_bias")


@click.command(context_settings=CONTEXT)
@click.argument("checkpoints", nargs=-1, type=click.Path(exists=True))
@click.option("--cell", default="rnn,lstm", show_default=True,
              help="Fresh models to compare: a comma list of rnn, gru, lstm. Not with CHECKPOINTS, "
                   "which fix it, as they fix --hidden, --layers, --init-scale and --forget-bias.")
@click.option("--hidden", type=click.IntRange(min=1), default=32, show_default=True, help="Hidden units H.")
@click.option("--layers", type=click.IntRange(min=1), default=1, show_default=True, help="Stacked layers.")
@click.option("--init-scale", type=FiniteFloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Multiply every W_ih and W_hh of torch's initialisation by this: above about 2 "
                   "the plain RNN's gradient explodes.")
@click.option("--forget-bias", type=FiniteFloatRange(min=-20, max=20), default=0.0, show_default=True,
              help="Add this to the LSTM's forget-gate bias at initialisation (1 is a common choice).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed for weights and data.")
@click.option("--demo", is_flag=True, default=False,
              help="Use an adding problem as the sequence (the default without --text).")
@click.option("--text", "text_file", type=click.Path(dir_okay=False),
              help="Read the sequence from this text file (characters; the loss predicts the next one).")
@click.option("--length", type=click.IntRange(min=2), default=100, show_default=True,
              help=f"Time steps T, at most {MAX_LENGTH}: the work grows as T² (each step's norm reruns "
                   "the steps after it). A text shorter than that gives fewer steps, with a note.")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True,
              help="Sequences of the adding problem.")
@click.option("--truncate", is_flag=True, default=False,
              help="Also print, for K = 1, 2, 4, ..., T, the relative error of each weight's gradient "
                   "when BPTT stops K steps back, against full BPTT.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help='Draw the norms on a log scale, one curve per cell, into this file (.png, .pdf, .svg '
                   'or another format matplotlib writes; its folder must exist; needs "bptt[plot]").')
def gradflow(checkpoints, cell, hidden, layers, init_scale, forget_bias, seed, demo, text_file, length,
             batch, truncate, plot_path):
    """Print ‖∂L/∂h_t‖ for every step t and layer: the gradient that reaches each step.

    The loss sits at the last step only, so the gradient on an early state has travelled back
    through the whole recurrence. Fresh models of each --cell (or the models in CHECKPOINTS,
    `bptt train` language models, one row and curve each) read an adding problem (--demo) or the
    first --length characters of --text. A plain RNN's gradient vanishes geometrically; an LSTM's reaches further, the more
    so with --forget-bias 1; --init-scale 3 makes the RNN's explode.
    """
    import numpy as np

    from bptt import gradflow as gf
    if checkpoints:
        _refuse_model_options(checkpoints)
    if length > MAX_LENGTH:
        fail(f"--length {length} is above {MAX_LENGTH}: the work grows as the square of the length "
             "(each step's norm reruns the steps after it)", 2)
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail('--plot needs matplotlib: pip install "bptt[plot]"')
        try:
            gf.check_plot_path(plot_path)
        except ValueError as e:
            fail(f"--plot {e}", 2)
    cells = [c.strip() for c in cell.split(",") if c.strip()]
    bad = [c for c in cells if c not in gf.CELLS]
    if bad or not cells:
        fail(f"--cell must be a comma list of {', '.join(gf.CELLS)}; got {cell!r}", 2)
    if demo and text_file:
        fail("give --demo or --text, not both", 2)
    try:
        if checkpoints:
            from bptt.checkpoint import CheckpointError
            from bptt.fitting import load_fit_checkpoint
            from bptt.demos import adding_problem
            flows, names = [], []
            for path in checkpoints:
                try:
                    ckpt, _ = load_fit_checkpoint(path)
                except CheckpointError:
                    ckpt = None
                if ckpt is not None:
                    gf.check_kind(path, ckpt.get("kind"))
                if ckpt is not None and ckpt.get("kind") == "sequence":
                    # a `bptt fit` sequence regressor (--demo adding): its own kind of data
                    if text_file:
                        fail(f"{path} is a `bptt fit` sequence model: it reads the adding problem, not --text", 2)
                    stack = gf.Stack.from_sequence_model(gf.sequence_model_float64(ckpt))
                    xs, ys = adding_problem(batch, length, seed)
                    flow = gf.gradient_flow(stack, xs, ys[:, None], truncate=truncate)
                    names.append(f"an adding problem, {batch} sequences of {length} steps")
                else:
                    flow, what_text = _language_model_flow(gf, path, demo, text_file, length, truncate)
                    names.append(what_text)
                if len(checkpoints) > 1:   # one row and curve each, named by the path (and its cell)
                    flow.cell = path if flow.cell in path else f"{path} ({flow.cell})"
                flows.append(flow)
            what = f"{', '.join(checkpoints)} on " + "; ".join(dict.fromkeys(names))
            stacks = []
        elif text_file:
            from bptt.data import CharTokenizer, read_text_files
            text = read_text_files([text_file])
            tok = CharTokenizer.fit(text)
            ids = tok.encode(text)[:length + 1]
            if ids.size < 3:
                fail(f"{text_file}: the text must hold at least 3 characters, got {ids.size}")
            _note_short_text(length, ids.size, text_file, "characters")
            V = tok.vocab_size
            x = np.eye(V)[ids[None, :-1]]                      # one-hot characters (1, T, V)
            target = ids[-1:]
            stacks = [gf.Stack.fresh(c, V, hidden, layers, V, "xent", init_scale=init_scale,
                                     forget_bias=forget_bias, seed=seed) for c in cells]
            what = f"{ids.size - 1} characters of {text_file}, predicting the next one"
        else:
            x, target = gf.adding_problem(batch, length, seed)
            stacks = [gf.Stack.fresh(c, 2, hidden, layers, 1, "mse", init_scale=init_scale,
                                     forget_bias=forget_bias, seed=seed) for c in cells]
            what = f"an adding problem, {batch} sequences of {length} steps"
        if stacks:
            flows = [gf.gradient_flow(s, x, target, truncate=truncate) for s in stacks]
    except user_errors() as e:
        fail(str(e))
    settings = "" if checkpoints else (f"; H = {hidden}, {layers} layer{'s' * (layers > 1)}, init scale "
                                      f"{init_scale:g}, forget bias {forget_bias:g}, seed {seed}")
    click.echo(f"gradflow: loss at the last step of {what}{settings}")
    click.echo(gf.norms_table(flows))
    for f in flows if truncate else ():
        click.echo(f"\n{f.cell}: relative error of each weight's gradient when BPTT stops K steps back")
        click.echo(gf.truncation_table(f))
    if plot_path is not None:
        try:
            gf.plot(flows, plot_path)
        except OSError as e:
            fail(f"cannot write {plot_path}: {e}")
        click.echo(f"plot written to {plot_path}")


COMMANDS = [gradflow]


def _language_model_flow(gf, path, demo, text_file, length, truncate):
    """The flow of a `bptt train` language model on text: (flow, what it read)."""
    import numpy as np

    from bptt.data import BUILTIN_CORPUS_BYTES, builtin_corpus, read_text_files
    from bptt.train import load_model
    if demo:
        fail("a language-model checkpoint reads text: give --text (or nothing, for the "
             "built-in corpus)", 2)
    model, tok, _ = load_model(path)
    if text_file:
        ids = tok.encode(read_text_files([text_file]))[:length + 1]
    else:   # enough of the corpus for --length tokens: a word is more bytes than a character
        budget = 4 * length + 64
        while True:
            ids = tok.encode(builtin_corpus(max_bytes=min(budget, BUILTIN_CORPUS_BYTES)))[:length + 1]
            if ids.size > length or budget >= BUILTIN_CORPUS_BYTES:
                break
            budget *= 4
    if ids.size < 3:
        fail(f"the text must hold at least 3 tokens, got {ids.size}")
    _note_short_text(length, ids.size, text_file or "the built-in corpus", "tokens")
    x = model.embedding.forward(ids[None, :-1]).astype(np.float64)   # analysed in float64
    flow = gf.gradient_flow(gf.Stack.from_language_model(model), x, ids[-1:], truncate=truncate)
    return flow, f"{ids.size - 1} tokens of {text_file or 'the built-in corpus'}"


def _refuse_model_options(checkpoints):
    """The options of a fresh model given with CHECKPOINTS: an error, not silently ignored."""
    from click.core import ParameterSource
    ctx = click.get_current_context()
    given = [max(p.opts, key=len) for p in ctx.command.params if p.name in MODEL_OPTIONS
             and ctx.get_parameter_source(p.name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)]
    if given:
        which = "the checkpoint fixes" if len(checkpoints) == 1 else "the checkpoints fix"
        fail(f"{' and '.join(given)} describe{'s' * (len(given) == 1)} a fresh model, but {which} "
             f"{'it' if len(given) == 1 else 'them'} ({', '.join(checkpoints)}): drop "
             f"{'it' if len(given) == 1 else 'them'}", 2)


def _note_short_text(length, n_ids, source, unit):
    """T is one less than the tokens read (the last is only predicted): say so when the text is
    too short for --length."""
    if n_ids - 1 < length:
        click.echo(f"note: --length {length} cut to {n_ids - 1}: {source} holds only {n_ids} {unit}",
                   err=True)
