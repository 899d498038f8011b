"""The README's Python examples run as written, and its test command is what CI runs."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 2
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


def test_ci_runs_the_readme_test_command():
    text = README.read_text(encoding="utf-8")
    after = text.split("ci-test-command", 1)[1]
    command = re.search(r"```bash\n(.*?)\n```", after, re.S).group(1).strip()
    assert "pytest" in command and re.search(r"\.\[test[],]", command)
    assert "ci-test-command" in (README.parent / ".ci" / "run").read_text()
