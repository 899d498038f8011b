"""The CLI layer's command modules. ``cli.py`` holds the group and the language-model commands;
each module here adds commands of its own by listing them in ``COMMANDS`` (see :func:`register`).

Modules import the package lazily, inside each command, so that ``bptt --help`` stays fast.
"""
from __future__ import annotations

import importlib
import pkgutil


def register(group) -> None:
    """Add every command listed in ``COMMANDS`` by the modules of this package to ``group``."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "common":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            group.add_command(command)
