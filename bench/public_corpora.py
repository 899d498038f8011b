"""Build retrieval corpora from public text already on this machine, which bptt does not ship.

    python bench/public_corpora.py OUT_DIR [--corpus NAME ...] [--max-bytes N]

writes OUT_DIR/<name>.txt for each corpus (paragraphs separated by blank lines, one line each,
whitespace collapsed) and OUT_DIR/manifest.json (paragraph and byte counts, SHA-256 of each file),
for `bptt contrastive OUT_DIR/<name>.txt` and `bptt retrieval`. The corpora are not committed: they
are rebuilt from what is installed, so their content depends on the machine (the manifest says
what was built). Corpora:

- ``pypi-readmes``: the long descriptions (README text) in the ``*.dist-info/METADATA`` files of
  the Python packages installed beside numpy (the running interpreter's site-packages), packages
  in name order, bptt itself left out;
- ``numpy-docstrings``: the docstrings of the installed numpy's ``.py`` files (module, class and
  function docstrings, read with :mod:`ast`, never imported; test folders skipped), files in
  path order (bptt's built-in corpus is the standard library's docstrings, not numpy's);
- ``debian-docs``: the ``README*`` and ``NEWS*`` files (gzipped or not) under ``/usr/share/doc``,
  packages in name order.

Every corpus is cut into paragraphs (blocks between blank lines); a paragraph is kept if it has at
least MIN_WORDS (16) words, if at least 60 % of its non-space characters are letters (this drops
code, tables and checksums), and if it was not seen before (exact duplicates, after collapsing
whitespace, are dropped: licences and badges repeat). A corpus stops at the paragraph that would
take it past --max-bytes (default 1,000,000 UTF-8 bytes, close to the built-in corpus's 600 KB).
"""
from __future__ import annotations

import argparse
import ast
import email
import glob
import gzip
import hashlib
import inspect
import json
import os
import sys
import sysconfig
from pathlib import Path

MIN_WORDS = 16
MIN_LETTERS = 0.6
MAX_BYTES = 1_000_000


def pypi_readmes():
    """(source, text) of each installed package's long description."""
    site = sysconfig.get_paths()["purelib"]
    for meta in sorted(glob.glob(os.path.join(site, "*.dist-info", "METADATA")), key=str.lower):
        name = os.path.basename(os.path.dirname(meta)).split("-")[0]
        if name.lower() == "bptt":
            continue
        with open(meta, encoding="utf-8", errors="replace") as f:
            msg = email.message_from_file(f)
        body = msg.get_payload()
        if not isinstance(body, str) or not body.strip():
            body = msg.get("Description", "") or ""
        yield name, body


def _docstrings(path):
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield inspect.cleandoc(doc)


def numpy_docstrings():
    """(source, docstring) of every docstring in the installed numpy's .py files."""
    import importlib.util
    spec = importlib.util.find_spec("numpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("numpy is not installed: cannot build numpy-docstrings")
    root = next(iter(spec.submodule_search_locations))
    files = sorted(str(p) for p in Path(root).rglob("*.py")
                   if "tests" not in p.relative_to(root).parts and "testing" not in p.relative_to(root).parts)
    for path in files:
        for doc in _docstrings(path):
            yield os.path.relpath(path, root), doc


def debian_docs(root="/usr/share/doc"):
    """(source, text) of each README*/NEWS* file under /usr/share/doc."""
    if not os.path.isdir(root):
        raise SystemExit(f"{root} does not exist: cannot build debian-docs")
    for pkg in sorted(os.listdir(root)):
        for path in sorted(glob.glob(os.path.join(root, pkg, "README*")) + glob.glob(os.path.join(root, pkg, "NEWS*"))):
            if not os.path.isfile(path):
                continue
            try:
                with (gzip.open(path) if path.endswith(".gz") else open(path, "rb")) as f:
                    raw = f.read()
            except OSError:
                continue
            yield os.path.relpath(path, root), raw.decode("utf-8", errors="replace")


CORPORA = {"pypi-readmes": pypi_readmes, "numpy-docstrings": numpy_docstrings, "debian-docs": debian_docs}


def keep(paragraph: str, min_words: int = MIN_WORDS) -> bool:
    words = paragraph.split()
    if len(words) < min_words:
        return False
    chars = "".join(words)
    return sum(c.isalpha() for c in chars) >= MIN_LETTERS * len(chars)


def build(name: str, out_dir: Path, max_bytes: int = MAX_BYTES, min_words: int = MIN_WORDS) -> dict:
    seen, out, size, sources = set(), [], 0, set()
    for source, text in CORPORA[name]():
        for block in text.replace("\r\n", "\n").split("\n\n"):
            p = " ".join(block.split())
            if p in seen or not keep(p, min_words):
                continue
            n = len(p.encode("utf-8")) + 2
            if size + n > max_bytes:
                break
            seen.add(p)
            out.append(p)
            sources.add(source)
            size += n
        if size + 200 > max_bytes:
            break
    path = out_dir / f"{name}.txt"
    data = "\n\n".join(out) + "\n"
    path.write_text(data, encoding="utf-8")
    return {"file": path.name, "paragraphs": len(out), "bytes": len(data.encode("utf-8")),
            "sources": len(sources), "sha256": hashlib.sha256(data.encode("utf-8")).hexdigest()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--corpus", action="append", choices=sorted(CORPORA),
                    help="Build only these corpora (repeatable). [default: all]")
    ap.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    ap.add_argument("--min-words", type=int, default=MIN_WORDS)
    a = ap.parse_args(argv)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"python": sys.version.split()[0], "min_words": a.min_words, "max_bytes": a.max_bytes,
                "corpora": {}}
    for name in a.corpus or list(CORPORA):
        info = build(name, a.out_dir, a.max_bytes, a.min_words)
        manifest["corpora"][name] = info
        print(f"{name}: {info['paragraphs']:,} paragraphs, {info['bytes']:,} bytes from "
              f"{info['sources']} sources -> {a.out_dir / info['file']}")
    (a.out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
