"""Library log noise off (used by the CLI and by worker processes, which the CLI does not run)."""

from __future__ import annotations

from typing import Any


def quiet_libraries() -> None:
    """datasets' and transformers' progress bars and info logs off: our own progress shows."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def step_bar(label: str, *extra: str, disable: bool = False) -> Any:
    """The rich progress bar of ``search train`` and ``search confirm`` on stderr: ``label``,
    the bar, done/total, then ``extra`` text columns (``{task.fields[...]}`` templates),
    elapsed and remaining time."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(e) for e in extra),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=disable,
    )
