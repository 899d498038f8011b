"""What the command-line tests share: run a command in this process, and check that it failed
with exactly one ``Error:`` line and no traceback."""
from click.testing import CliRunner

from cli import main


def run(*args):
    """``bptt ARGS...`` in-process (click's runner); every argument is turned into a string."""
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, *parts, code=1):
    """The single ``Error:`` line of a failed run ``r`` (exit ``code``, no traceback), which must
    contain each of ``parts``."""
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, r.output
    for p in parts:
        assert p in lines[0], lines[0]
    return lines[0]
