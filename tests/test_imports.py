"""The package's import graph: subpackages never import the command line (no import circle)."""

from __future__ import annotations

import ast
from pathlib import Path

import peftsearch

PACKAGE = Path(peftsearch.__file__).parent


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_nothing_but_the_entry_points_imports_the_cli() -> None:
    importers = {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "peftsearch.cli" in _imports(p)
    }
    assert importers == {"__main__.py"}


def test_load_py_imports_nothing_of_peftsearch() -> None:
    """It is copied verbatim beside saved weights, where peftsearch need not be installed."""
    imports = _imports(PACKAGE / "objectives" / "load.py")
    assert not {m for m in imports if m.split(".")[0] == "peftsearch"}
