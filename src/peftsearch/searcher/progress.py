"""The live display of a study: trials done/total, best metric, Pareto size, ETA."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class StudyProgress:
    """A bar for the study (with best metric and front size) and one per running trial."""

    def __init__(self, total: int, done: int, metric: str, enabled: bool = True) -> None:
        # Not a terminal (CI, a log file): a wide fixed width, so lines are not wrapped.
        self.console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
        self.metric = metric
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
            transient=False,
        )
        self._study: TaskID = self._progress.add_task(
            "trials", total=total, completed=done, info=""
        )
        self._trials: dict[Any, TaskID] = {}  # one bar per trial in flight (a pack has many)

    def __enter__(self) -> StudyProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def trial_started(self, number: int, summary: str) -> None:
        self._trials[number] = self._progress.add_task(f"trial {number}", total=None, info=summary)

    def trial_step(self, number: int, step: int, total: int) -> None:
        task = self._trials.get(number)
        if task is not None:
            self._progress.update(task, completed=step, total=total)

    def trial_finished(
        self, line: str, done: int, best: float | None, front: int, number: Any = None
    ) -> None:
        task = self._trials.pop(number, None)
        if task is not None:
            self._progress.remove_task(task)
        best_txt = f"best {self.metric} {best:.4f}" if best is not None else "no result yet"
        self._progress.update(self._study, completed=done, info=f"{best_txt} | front {front}")
        self._progress.console.print(line, highlight=False, markup=False)

    def note(self, line: str) -> None:
        self._progress.console.print(line, highlight=False, markup=False)
