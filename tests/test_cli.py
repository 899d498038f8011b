"""The click CLI, through CliRunner."""
from click.testing import CliRunner

import pytest

from bptt import jit
from cli import main


@pytest.fixture(autouse=True)
def _restore_threads():
    before = jit.get_threads()
    yield
    jit.set_threads(before)


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_help_lists_commands_and_defaults():
    r = run("--help")
    assert r.exit_code == 0 and "gradcheck" in r.output and "--threads" in r.output
    r = run("gradcheck", "--help")
    assert r.exit_code == 0 and "default: mlp" in r.output


def test_gradcheck_mlp_gelu_passes():
    r = run("gradcheck", "--model", "mlp", "--activation", "gelu")
    assert r.exit_code == 0, r.output
    assert "FAIL" not in r.output and "layers.0.weight" in r.output and "pass" in r.output


def test_gradcheck_dense_with_threads_and_float32_note():
    r = run("--threads", "1", "gradcheck", "--model", "dense", "--activation", "relu", "--dtype", "float32")
    assert r.exit_code == 0, r.output
    assert "up-casting" in r.output


def test_gradcheck_bad_options_are_one_line_errors():
    r = run("gradcheck", "--activation", "swish")
    assert r.exit_code == 2 and "activation must be one of" in r.output
    assert "Traceback" not in r.output
    r = run("gradcheck", "--model", "transformer")
    assert r.exit_code == 2
    r = run("--threads", "0", "gradcheck")
    assert r.exit_code == 2


def test_bad_BPTT_THREADS_is_a_one_line_usage_error():
    """bptt.jit reads BPTT_THREADS when first imported, so this needs a fresh process."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    cli = Path(__file__).resolve().parent.parent / "cli.py"
    env = {**os.environ, "BPTT_THREADS": str(jit.max_threads() + 1)}
    for args in (["gradcheck", "--model", "dense"], ["train", "--help"]):
        r = subprocess.run([sys.executable, str(cli), *args], env=env, capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "BPTT_THREADS" in r.stderr


def test_every_option_has_help():
    import click
    for name, cmd in main.commands.items():
        options = [p for p in cmd.params if isinstance(p, click.Option)]
        assert [p.name for p in options if not p.help] == [], name


def test_training_errors_end_a_command_with_one_line(capsys):
    """What the training commands run inside: a second Ctrl-C, or bad input, is one ``Error:``
    line and exit status 1; anything else passes through."""
    from bptt.commands.common import training_errors
    from bptt.data import DataError

    with pytest.raises(SystemExit) as e:
        with training_errors():
            raise KeyboardInterrupt
    assert e.value.code == 1 and "Error: interrupted twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        with training_errors():
            raise DataError("bad input")
    assert capsys.readouterr().err.strip() == "Error: bad input"
    with pytest.raises(RuntimeError):
        with training_errors():
            raise RuntimeError("a bug, shown as one")


def test_refuse_changed_options_names_each_differing_option_given():
    import click
    from bptt.commands.common import refuse_changed_options

    @click.command()
    @click.option("--hidden", type=int, default=8)
    @click.option("--lr", type=float, default=None)
    @click.option("--sizes", default="4,4")
    @click.option("--steps", type=int, default=10)
    def cmd(hidden, lr, sizes, steps):
        ctx = click.get_current_context()
        refuse_changed_options(ctx, {"hidden": 16, "lr": 0.001, "sizes": "4,4"})
        click.echo("ok")

    r = CliRunner().invoke(cmd, ["--steps", "99"])              # not named by the run: free to change
    assert r.exit_code == 0 and "ok" in r.output
    r = CliRunner().invoke(cmd, ["--hidden", "16", "--lr", "1e-3", "--sizes", "4,4"])   # the same values
    assert r.exit_code == 0 and "ok" in r.output
    r = CliRunner().invoke(cmd, ["--hidden", "32", "--lr", "0.5"])
    assert r.exit_code != 0
    msg = str(r.exception)
    assert "--hidden 32 (the run's: 16)" in msg and "--lr 0.5 (the run's: 0.001)" in msg


def test_gradcheck_activation_is_used_or_refused():
    runner = CliRunner()
    # the text classifier's head takes the activation: relu and sigmoid check different models
    outs = [runner.invoke(main, ["gradcheck", "--model", "text", "--activation", a]) for a in ("relu", "sigmoid")]
    assert all(r.exit_code == 0 for r in outs), [r.output for r in outs]
    assert outs[0].output.splitlines()[-3:] != outs[1].output.splitlines()[-3:]
    for model in ("lstm", "dropout", "forecaster"):
        r = runner.invoke(main, ["gradcheck", "--model", model, "--activation", "relu"])
        assert r.exit_code == 2 and "does not apply to --model " + model in r.output, r.output
    r = runner.invoke(main, ["gradcheck", "--model", "table-binary", "--activation", "identity"])
    assert r.exit_code == 2 and "got 'identity'" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_every_command_has_a_whole_line_in_the_group_help():
    from cli import SHORT_HELP
    out = CliRunner().invoke(main, ["--help"], terminal_width=80).output
    assert set(SHORT_HELP) == set(main.commands)
    for name, text in SHORT_HELP.items():
        assert f"{name} " in out and text in out and len(text) <= 60, name
    assert "..." not in out.split("Commands:")[1]


def test_progress_says_what_the_wait_before_the_first_step_is_on_a_terminal_only(capsys):
    """The first step compiles the kernels on a first run (half a minute for a language model):
    on a terminal a line says so, and the first step's line replaces it; in a log, nothing."""
    from bptt.commands.common import Progress
    p = Progress(10, 0, None)
    p.tty = True
    p.start()
    err = capsys.readouterr().err
    assert err.startswith("\r") and "compiling them on a first run" in err and "\n" not in err
    p.step({"step": 1, "loss": 4.6, "elapsed": 30.0, "tokens_per_sec": 100.0})
    err = capsys.readouterr().err
    assert err.startswith("\rstep 1/10")   # written over the notice (click drops the erase code off a terminal)
    quiet = Progress(10, 0, None)
    quiet.tty = False
    quiet.start()
    assert capsys.readouterr().err == ""
