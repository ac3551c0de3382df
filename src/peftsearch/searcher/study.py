"""``search run``: run (or resume) a study until the budget is met, then write its results.

Budget: ``study.n_trials`` counts trials that *ended on their own*: COMPLETE, PRUNED, and FAIL
with a recorded reason (the config itself failed: NaN loss, out of memory, an exception).
Trials that ended because their worker went away (Ctrl-C, kill -9) do not count; their
parameters are enqueued again and run first. So re-running the same command resumes the study
and runs only what is missing, and a killed run loses nothing.

Many workers (processes on one host, or ``search run`` on several hosts sharing a PostgreSQL
storage) run this same loop on one study and together run exactly ``n_trials`` trials that
count: see :mod:`peftsearch.searcher._optimize` for how a worker takes a slot of the budget.

The pieces live beside this module, as Optuna keeps ``study/_optimize.py`` and
``study/_tell.py`` apart from ``study.py``: the ask/tell loop (:mod:`._optimize`), telling a
trial's end (:mod:`._tell`), opening the study (:mod:`.opening`), what a study records once
(:mod:`.records`), the lines shown (:mod:`.lines`), packs and the pruner (:mod:`.packs`),
Ctrl-C (:mod:`.sigint`), and what a runner must offer (:mod:`._runner`). The names other
modules imported from here stay importable from here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from peftsearch.searcher._optimize import _quiet_optuna, run_trials
from peftsearch.searcher._runner import Runner
from peftsearch.searcher.artifacts import upload_study_artifacts, write_dashboard_note
from peftsearch.searcher.lines import _Silent, finished_line, front_summary, state_counts
from peftsearch.searcher.opening import check_storage, open_study
from peftsearch.searcher.outcome import (
    RunOutcome,
    counts_toward_budget,
    report_due,
    write_report_safely,
)
from peftsearch.searcher.packs import pack_size
from peftsearch.searcher.progress import StudyProgress
from peftsearch.searcher.records import demo_counts, found_words
from peftsearch.searcher.sigint import Sigint
from peftsearch.spaces import Space

__all__ = [  # and the names other modules imported from here before the split
    "RunOutcome",
    "Sigint",
    "_Silent",
    "_quiet_optuna",
    "check_storage",
    "counts_toward_budget",
    "demo_counts",
    "finish",
    "finished_line",
    "found_words",
    "front_summary",
    "open_study",
    "pack_size",
    "report_due",
    "run_study",
    "run_trials",
    "state_counts",
    "write_report_safely",
]


def finish(
    study: Any, outcome: RunOutcome, note: Callable[[str], None] | None = None
) -> RunOutcome:
    """Fill the outcome's counts and front; write ``pareto.csv`` and the report."""
    from peftsearch.reports import pareto_rows, write_csv

    outcome.counts = state_counts(study.get_trials(deepcopy=False))
    outcome.pareto = pareto_rows(study)
    write_csv(outcome.pareto, outcome.output_dir / "pareto.csv")
    outcome.report = write_report_safely(
        study, outcome.output_dir, note or (lambda m: print(m, file=sys.stderr))
    )
    return outcome


def run_study(space: Space, runner: Runner | None = None, show_progress: bool = True) -> RunOutcome:
    """Run (or resume) the study of ``space`` until ``study.n_trials`` trials have ended.

    This process is one worker; others (``search run`` elsewhere on the same storage, or
    :func:`peftsearch.searcher.workers.run_workers`) may share the study.

    Args:
        space: a validated space.
        runner: anything with ``setup()``, ``splits``, ``base_params`` and
            ``run(params, on_step) -> TrialResult`` (see :class:`~._runner.Runner`);
            default: a :class:`TrialRunner`.
        show_progress: draw the live display (off in tests).

    Raises:
        UserError: bad data, model, output directory or storage; raised before any file is made.
    """
    if runner is None:
        from peftsearch.objectives.runner import TrialRunner

        runner = TrialRunner(space)
    n_trials, metric = space.study.n_trials, space.objectives.metric
    study, outcome = run_trials(
        space, runner, lambda done: StudyProgress(n_trials, done, metric, show_progress)
    )
    outcome = finish(study, outcome)
    upload_study_artifacts(study, space, outcome.report)
    write_dashboard_note(study, space)
    return outcome
