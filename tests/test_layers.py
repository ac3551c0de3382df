"""The layers import downwards only: a walk over every import statement in ``src/``, those
inside function bodies included.

Order, low to high: ``errors`` / ``logs``, ``spaces``, ``objectives`` (with its adapter and
task rooms), ``reports``, ``searcher``, ``cli``. The package root (``peftsearch/__init__.py``)
is the assembly point that registers the built-in adapters and tasks; it is not a layer, and
``from peftsearch import __version__`` reads only its version.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "peftsearch"
LAYERS = {
    "errors": 0,
    "logs": 0,
    "spaces": 1,
    "objectives": 2,
    "reports": 3,
    "searcher": 4,
    "cli": 5,
    "__main__": 5,
}


def _layer(dotted: str) -> int | None:
    """The layer of ``peftsearch.X...`` (None: the package root itself)."""
    parts = dotted.split(".")
    if parts[0] != "peftsearch":
        raise ValueError(dotted)
    return None if len(parts) == 1 else LAYERS[parts[1]]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``peftsearch`` module ``path`` imports, with its line, anywhere in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("peftsearch")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("peftsearch"):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; write it absolute")
    return out


MODULES = sorted(p for p in SRC.rglob("*.py") if p != SRC / "__init__.py")


def test_every_module_has_a_layer() -> None:
    assert MODULES, SRC
    for path in MODULES:
        top = path.relative_to(SRC).parts[0].removesuffix(".py")
        assert top in LAYERS, f"{path}: not in a layer; add it to LAYERS"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_runs_up_a_layer(path: Path) -> None:
    mine = LAYERS[path.relative_to(SRC).parts[0].removesuffix(".py")]
    upward = [
        f"{path.relative_to(SRC)}:{line}: imports {name}"
        for line, name in _imports(path)
        if (layer := _layer(name)) is not None and layer > mine
    ]
    assert not upward, "\n".join(upward)


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The checker itself: an upward import hidden in a function body is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from peftsearch.searcher import study\n", encoding="utf-8")
    assert _imports(bad) == [(2, "peftsearch.searcher")]
    assert _layer("peftsearch.searcher.study") > LAYERS["objectives"]
