"""``space.yaml`` -> a validated :class:`Space`.

Validation never imports torch: ``search validate`` and ``search --help`` stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from peftsearch.errors import SpaceError
from peftsearch.spaces._params import (
    DEFAULT_PARAMS,
    RULES,
    CategoricalDist,
    FloatDist,
    IntDist,
    ParamSpec,
    Rule,
    cat,
    log_range,
    register_method,
    register_params,
    register_task,
)
from peftsearch.spaces._paths import PathProblem, is_data_file_name, resolve
from peftsearch.spaces._schema import (
    DataSpec,
    GenerationSpec,
    ModelSpec,
    ObjectivesSpec,
    PrunerSpec,
    Space,
    StudySpec,
)
from peftsearch.spaces._templates import (
    DEMOS,
    Template,
    has_mask_slot,
    has_slot,
    render,
    template_text,
)

__all__ = [
    "DEFAULT_PARAMS",
    "RULES",
    "PrunerSpec",
    "CategoricalDist",
    "DataSpec",
    "GenerationSpec",
    "FloatDist",
    "IntDist",
    "ModelSpec",
    "ObjectivesSpec",
    "ParamSpec",
    "Rule",
    "cat",
    "log_range",
    "register_method",
    "register_params",
    "register_task",
    "Space",
    "StudySpec",
    "Template",
    "DEMOS",
    "has_mask_slot",
    "has_slot",
    "load_space",
    "render",
    "template_text",
]


def load_space(path: str | Path, overrides: dict[str, Any] | None = None) -> Space:
    """Read, validate and resolve a space file.

    Args:
        path: the YAML file.
        overrides: dotted keys set over the file's values before validation, e.g.
            ``{"study.n_trials": 5}`` (CLI flags), so flag values are validated too.

    Raises:
        SpaceError: anything wrong, named by file, key path and value.
    """
    file = Path(path)
    name = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpaceError(name, None, "no such file") from None
    except OSError as exc:
        raise SpaceError(name, None, f"cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpaceError(name, None, f"malformed YAML: {where}{problem}") from None
    if not isinstance(raw, dict):
        raise SpaceError(name, None, "must be a mapping of sections (model, data, templates, ...)")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):  # absent or empty (`study:` alone)
                node[key] = {}
            node = node[key]
        node[leaf] = value
    try:
        space = Space.model_validate(raw)
    except ValidationError as exc:
        raise _space_error(name, exc, raw) from None
    space._file = file
    _check_paths(space, name)
    return space


def _key_path(loc: list[Any], raw: Any, keep_last: bool) -> str:
    """Dotted key path of ``loc`` as found in ``raw``.

    pydantic puts the names of union members (``str``, ``list[str]``, tags) into a location;
    those are not keys of the file, so parts that do not index into the data are dropped. The
    last part is kept when it names a key that should be there (missing or unknown keys).
    """
    parts: list[Any] = []
    node = raw
    for i, part in enumerate(loc):
        present = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if present:
            parts.append(part)
            node = node[part]
        elif keep_last and i == len(loc) - 1:
            parts.append(part)
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    return text


def _value_at(raw: Any, loc: list[Any]) -> Any:
    """The value at ``loc`` in ``raw``, or ``...`` when there is none."""
    node = raw
    for part in loc:
        present = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if not present:
            return ...
        node = node[part]
    return node


def _space_error(file: str, exc: ValidationError, raw: Any) -> SpaceError:
    """The first pydantic error as one line: ``file: key.path: message (got value)``."""
    err = exc.errors()[0]
    ctx = err.get("ctx") or {}
    loc = list(ctx.get("loc") or err["loc"])
    if loc and loc[0] == "auto_verbalizers":  # written as verbalizers.auto
        loc = ["verbalizers", "auto", *loc[1:]]
    if err["type"] == "unknown_key":
        loc.append(ctx["key"])
    key = _key_path(loc, raw, keep_last=err["type"] in ("unknown_key", "missing", "at_key"))
    msg = err["msg"].removeprefix("Value error, ")
    value: Any = ...
    if err["type"] not in ("unknown_key", "at_key", "missing") and not isinstance(
        err.get("input"), dict
    ):
        value = err.get("input")
    elif err["type"] == "at_key":  # a cross-check: show the entry unless the message does
        entry = _value_at(raw, loc)
        if entry is not ... and not isinstance(entry, dict) and repr(entry) not in msg:
            value = entry
    more = len(exc.errors()) - 1
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return SpaceError(file, key or None, msg, value)


def _check_paths(space: Space, file: str) -> None:
    """Resolve model and data paths in place; a local path that is missing is an error."""
    base = space.file.parent

    def local(key: str, value: str, must_be_dir: bool = False, data: bool = False) -> str:
        try:
            path = resolve(value, base)
        except PathProblem as exc:
            raise SpaceError(file, key, str(exc)) from None
        if path is None and data and is_data_file_name(value):
            path = base / Path(value).expanduser()  # `train.csv` is a file, never a hub name
        if path is None:
            return value  # a hub id
        if not path.exists():
            raise SpaceError(file, key, f"no such {'directory' if must_be_dir else 'file'}", value)
        if must_be_dir and not path.is_dir() and path.suffix != ".gguf":
            raise SpaceError(
                file, key, "must be a model directory (or a .gguf file), not a file", value
            )
        return str(path)

    def local_file(key: str, value: str) -> str:
        """A split file: always local, resolved against the space file's folder."""
        path = Path(value).expanduser()
        if value.startswith("pkg://"):
            return local(key, value)
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise SpaceError(file, key, "no such file", value)
        return str(path.resolve())

    space.model.path = local("model.path", space.model.path, must_be_dir=True)
    if space.data.path is not None:
        space.data.path = local("data.path", space.data.path, data=True)
    if space.data.files is not None:
        files = space.data.files
        for split in ("train", "validation", "test"):
            value = getattr(files, split)
            if value:
                setattr(files, split, local_file(f"data.files.{split}", value))
