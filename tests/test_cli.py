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
