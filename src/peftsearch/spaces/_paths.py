"""Where the files named in a space file are.

Relative paths resolve against the space file's folder, so a space file means the same thing
from any working directory. ``pkg://PACKAGE/sub/path`` names a file inside an installed package
(found with ``importlib.util.find_spec`` without importing the package, whose imports can be heavy):
the offline MiniLM and the Rotten Tomatoes data ship that way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PKG_SCHEME = "pkg://"
# Suffixes of the data files ``search`` reads; a data path ending in one is a file, not a hub name.
DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
COMPRESSION_SUFFIXES = (".bz2", ".gz", ".xz", ".zst", ".zip")


class PathProblem(ValueError):
    """A path that cannot be resolved; the message says why."""


def package_file(uri: str) -> Path:
    """Resolve ``pkg://package/sub/path`` to a path inside the installed package."""
    rest = uri[len(PKG_SCHEME) :]
    package, _, sub = rest.partition("/")
    if not package:
        raise PathProblem(f"{uri!r} names no package; write pkg://PACKAGE/path/inside")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PathProblem(
            f"package {package!r} is not installed or is not a package (pip install --no-deps "
            f"{package.replace('_', '-')}), so {uri!r} cannot be found"
        )
    return Path(next(iter(spec.submodule_search_locations))) / sub


def looks_local(value: str) -> bool:
    """True for values that can only mean a local path (never a hub id)."""
    return value.startswith((PKG_SCHEME, "/", "./", "../", "~")) or value.startswith(".")


def is_data_file_name(value: str) -> bool:
    """True for a name like ``train.csv`` or ``x.jsonl.gz``: a local data file, never a hub name."""
    suffixes = [s.lower() for s in Path(value).suffixes if s.lower() not in COMPRESSION_SUFFIXES]
    return bool(suffixes) and suffixes[-1] in DATA_SUFFIXES


def resolve(value: str, base_dir: Path) -> Path | None:
    """Return the local path ``value`` means, or None when it can only be a hub id.

    Raises:
        PathProblem: a ``pkg://`` value whose package is missing.
    """
    if value.startswith(PKG_SCHEME):
        return package_file(value)
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if looks_local(value) or path.exists():
        return path.resolve()
    return None
