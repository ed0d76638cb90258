"""Packages whose names are imported from their modules on first use (PEP 562).

Importing such a package (as ``python -m sgim_nodes animate --help`` does) then imports no torch, so
command help stays fast; the names are the same as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, list[str]]) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for ``package``; ``exports`` maps a submodule to the names it provides."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{module_of[name]}", package), name)

    return __getattr__, list(module_of)
