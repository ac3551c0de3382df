"""What a run counts and ends with: the trials that count toward the budget, the outcome that
``search run`` reports, and the report it refreshes now and then.

Budget: ``study.n_trials`` counts trials that *ended on their own*: COMPLETE, PRUNED, and FAIL
with a recorded reason (the config itself failed: NaN loss, out of memory, an exception).
Trials that ended because their worker went away (Ctrl-C, kill -9) do not count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Refresh <output>/report.html after this many finished trials, and not sooner than this many
# seconds after the last refresh: a report of a large study takes a good part of a second to
# build, which would dominate a stream of short (packed, GPU) trials.
REPORT_EVERY = 5
REPORT_MIN_SECONDS = 30.0


@dataclass
class RunOutcome:
    """What ``search run`` reports at the end."""

    study_name: str
    storage: str  # password masked
    output_dir: Path
    counts: dict[str, int]
    pareto: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    stopped_by_timeout: bool = False
    report: Path | None = None


def counts_toward_budget(trial: Any) -> bool:
    """True for trials that ended on their own (see the module docstring)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


def report_due(finished_since: int, last: float) -> bool:
    """Time to refresh the report (see :data:`REPORT_EVERY`)."""
    return finished_since >= REPORT_EVERY and time.monotonic() - last >= REPORT_MIN_SECONDS


def write_report_safely(study: Any, out: Path, note: Any = print) -> Path | None:
    """Write ``<out>/report.html``; a failure (e.g. plotly missing on a GPU host, where reports
    are built later from the copied storage) is a note, never the end of the study."""
    try:
        from peftsearch.reports.html import write_report

        return Path(write_report(study, out / "report.html"))
    except Exception as exc:
        note(
            f"report not written ({type(exc).__name__}: {exc}); "
            "rebuild it later with `search report`"
        )
        return None
