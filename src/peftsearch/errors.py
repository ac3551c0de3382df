"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """Bad input: a space file, a path, a flag. Printed as one line; exit code 2."""

    exit_code = 2


class SpaceError(UserError):
    """A problem in a space file, located by file and dotted key path.

    Printed as ``space.yaml: params.lora_r.low: must be >= 0 (got -1)``.
    """

    def __init__(self, file: str, key: str | None, message: str, value: Any = ...) -> None:
        self.file = file
        self.key = key
        self.message = message
        self.value = value
        where = f"{file}: {key}: " if key else f"{file}: "
        got = "" if value is ... else f" (got {value!r})"
        # One line, whatever the key names or library messages hold.
        super().__init__(" ".join(f"{where}{message}{got}".split("\n")))


class TrialFailed(Exception):
    """A trial that cannot finish (NaN loss, out of memory, ...); recorded, the study goes on."""
