"""The ``bptt`` command line. It parses options and prints; all the math lives in the package."""
from __future__ import annotations

import sys

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _fail(msg: str, code: int = 1):
    click.echo(f"Error: {msg}", err=True)
    sys.exit(code)


@click.group(context_settings=CONTEXT)
@click.option("--threads", type=click.IntRange(min=1), default=None, envvar="BPTT_THREADS",
              show_envvar=True,
              help="Threads for the Numba kernels; 1 runs the serial build. [default: all cores]")
@click.version_option(package_name="bptt", prog_name="bptt")
def main(threads):
    """bptt: neural networks trained with hand-written backpropagation (through time), in Numba.

    Every forward and backward pass is an explicit Numba loop, checked by finite differences and
    against PyTorch. Run `bptt COMMAND --help` for a command's options.
    """
    from bptt import jit
    if threads is not None:
        try:
            jit.set_threads(threads)
        except ValueError as e:
            _fail(str(e), 2)


@main.command()
@click.option("--model", type=click.Choice(["dense", "mlp", "rnn", "lstm", "gru"]), default="mlp",
              show_default=True, help="What to check: a Dense layer, an MLP, or a recurrent layer.")
@click.option("--activation", default="tanh", show_default=True,
              help="identity, relu, tanh, sigmoid, gelu (exact), gelu_tanh or gelu_sigmoid; "
                   "for rnn: tanh, relu or identity; ignored by lstm and gru.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
              help="Finite differences need float64; float32 is up-cast, with a note.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for weights, inputs and the sample.")
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
def gradcheck(model, activation, dtype, seed, batch, hidden, layers, bidirectional, seq_len, max_checks):
    """Check hand-written gradients against central finite differences.

    Prints one row per parameter and input (for rnn/lstm/gru: every weight and bias, x, h0 and,
    for lstm, c0, with non-zero random initial states): entries checked, the maximum absolute and
    relative error, and pass/fail. Exits with status 1 if any row fails.
    """
    from bptt.checks import build_problem
    from bptt.gradcheck import gradcheck as run_check
    if dtype == "float32":
        click.echo("note: gradcheck runs in float64 (float32 rounding swamps finite differences); up-casting.")
    if layers is None:
        layers = 2 if model == "mlp" else 1
    try:
        target, inputs = build_problem(model, activation=activation, seed=seed, batch=batch,
                                       hidden=hidden, layers=layers, seq_len=seq_len,
                                       bidirectional=bidirectional)
    except ValueError as e:
        _fail(str(e), 2)
    shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in inputs.items())
    click.echo(f"gradcheck {target!r}, seed {seed}; inputs {shapes}")
    report = run_check(target, inputs, seed=seed, max_checks=max_checks)
    click.echo(report.table())
    if not report.passed:
        sys.exit(1)


if __name__ == "__main__":
    main()
