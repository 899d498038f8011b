"""Every code block in docs/ runs, or is checked, in CI: a page that stops being true fails.

Fences, by their info string:

- ``python``: run, block after block in one namespace per page;
- ``python source=PATH``: a quotation of the package, checked to appear verbatim in PATH;
- ``bash``/``console``: every line starting with ``bptt `` runs (in-process, through the click
  group that ``python -m bptt`` runs) and must exit 0;
- ``text``: output, or a command that is not run (say why on the page).

Any other fence fails, and a ``bash`` block with no ``bptt`` line fails unless the line before it
is ``<!-- docs-test: not run (REASON) -->``. docs/simple_rnn.md's python blocks are run by
tests/test_simple_rnn.py (which asserts on their result).
"""
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").rglob("*.md"))
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
RUN_ELSEWHERE = {"docs/simple_rnn.md": "tests/test_simple_rnn.py"}


def blocks(path):
    """(info string, body, the text before the block) for each fenced block of a page."""
    text = path.read_text(encoding="utf-8")
    return [(m.group(1).strip(), m.group(2), text[:m.start()]) for m in FENCE.finditer(text)]


def rel(path):
    return path.relative_to(ROOT).as_posix()


def test_every_block_has_a_known_kind():
    assert len(DOCS) >= 10
    for path in DOCS:
        for info, body, before in blocks(path):
            kind = info.split()[0] if info else ""
            assert kind in ("python", "bash", "console", "text"), f"{rel(path)}: fence {info!r}"
            if kind in ("bash", "console") and not any(l.startswith("bptt ") for l in body.splitlines()):
                last = before.rstrip().splitlines()[-1]
                assert last.startswith("<!-- docs-test: not run ("), f"{rel(path)}: unmarked block {body!r}"


def test_quoted_source_is_in_the_package():
    n = 0
    for path in DOCS:
        for info, body, _ in blocks(path):
            if info.startswith("python") and "source=" in info:
                src = info.split("source=", 1)[1].split()[0]
                source = (ROOT / src).read_text(encoding="utf-8")
                assert body in source, f"{rel(path)}: quote not found in {src}:\n{body}"
                n += 1
    assert n >= 8


@pytest.mark.parametrize("path", [p for p in DOCS if any(i == "python" for i, _, _ in blocks(p))], ids=rel)
def test_python_blocks_run(path):
    if rel(path) in RUN_ELSEWHERE:
        assert rel(path).split("/")[-1] in (ROOT / RUN_ELSEWHERE[rel(path)]).read_text()
        return
    from bptt import jit
    namespace, before = {"__name__": "docs"}, jit.get_kernels()
    try:
        for info, body, _ in blocks(path):
            if info == "python":
                exec(compile(body, str(path), "exec"), namespace)
    finally:
        jit.set_kernels(before)


COMMANDS = [(rel(p), line) for p in DOCS for info, body, _ in blocks(p) if info in ("bash", "console")
            for line in body.splitlines() if line.startswith("bptt ")]


@pytest.mark.parametrize("page,command", COMMANDS, ids=[f"{p}:{c[5:30]}" for p, c in COMMANDS])
def test_bptt_commands_run(page, command, tmp_path, monkeypatch):
    from bptt import jit
    from cli import main
    monkeypatch.chdir(tmp_path)
    before = jit.get_kernels()
    try:
        r = CliRunner().invoke(main, shlex.split(command)[1:])
    finally:
        jit.set_kernels(before)
    assert r.exit_code == 0, f"{page}: {command}\n{r.output}"
