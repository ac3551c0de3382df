"""`search --help` and space validation must not import the heavy stack."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "datasets", "optuna", "pandas", "evaluate")


def _imported(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    names = set()
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_help_imports_no_heavy_module() -> None:
    names = _imported(
        "import sys; from peftsearch.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert "peftsearch" in names
    assert not names & set(HEAVY), sorted(names & set(HEAVY))


def test_loading_a_space_imports_no_heavy_module(tmp_path) -> None:
    space = tmp_path / "s.yaml"
    space.write_text(
        "model: {path: " + str(tmp_path) + "}\n"
        "data: {path: " + str(space) + ", text_columns: [text], labels: [a, b]}\n"
        "templates: {t: '{text}'}\n"
    )
    names = _imported(f"from peftsearch.spaces import load_space; load_space({str(space)!r})")
    assert "pydantic" in names
    assert not names & set(HEAVY), sorted(names & set(HEAVY))
