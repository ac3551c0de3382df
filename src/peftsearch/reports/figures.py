"""The data behind the HTML report, computed from a study alone: plain values, no plotly.

:func:`compute_report` returns one :class:`ReportData`; each field is what one section of
``peftsearch.reports.html`` draws. The computations live in :mod:`peftsearch.reports.data`,
one module per theme; every public name of theirs is re-exported here. Nothing here escapes
text: that is the renderer's job.

Conventions: the metric is maximized and trainable parameters are minimized (the study's
directions); only COMPLETE trials have values, so only they appear as points.

Successive halving (``peftsearch.searcher.pruners``) writes on each trial a ``rungs`` list (what
it scored at each rung it reached); a trial it stopped is PRUNED, without values, with a
``pruned_at`` record. A repeated configuration (``duplicate_of``) was not trained: it carries an
earlier trial's result, so per-template statistics and importances leave it out (it would count
twice), as the front does. Studies from before pruning have none of these attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from peftsearch.reports.confirmed import confirmations, full_confirmations, full_epochs
from peftsearch.reports.data.facts import NO_REASON, STATES, Summary, summary
from peftsearch.reports.data.front import ParetoInfo, ParetoPoint, pareto_info
from peftsearch.reports.data.history import (
    History,
    LossCurve,
    StepsHistory,
    history,
    hypervolume_2d,
    hypervolume_by_steps,
    loss_curves,
)
from peftsearch.reports.data.importances import FEW_TRIALS, Importances, importances
from peftsearch.reports.data.pruning import (
    ComputeSaved,
    PruningInfo,
    RungScore,
    RungSummary,
    StepCurve,
    StoppedTrial,
    compute_saved,
    pruning_info,
    step_curves,
)
from peftsearch.reports.data.templates import (
    FEW_PER_TEMPLATE,
    TemplateMetrics,
    method_metrics,
    template_metrics,
)
from peftsearch.reports.data.zero_shot import found_words, written_examples, zero_shot_rows
from peftsearch.reports.pareto import pareto_rows

if TYPE_CHECKING:
    import optuna

__all__ = [
    "FEW_PER_TEMPLATE",
    "FEW_TRIALS",
    "NO_REASON",
    "STATES",
    "ComputeSaved",
    "History",
    "Importances",
    "LossCurve",
    "ParetoInfo",
    "ParetoPoint",
    "PruningInfo",
    "ReportData",
    "RungScore",
    "RungSummary",
    "StepCurve",
    "StepsHistory",
    "StoppedTrial",
    "Summary",
    "TemplateMetrics",
    "compute_report",
    "compute_saved",
    "found_words",
    "history",
    "hypervolume_2d",
    "hypervolume_by_steps",
    "importances",
    "loss_curves",
    "pareto_info",
    "pruning_info",
    "step_curves",
    "summary",
    "template_metrics",
    "method_metrics",
    "written_examples",
    "zero_shot_rows",
]


@dataclass(frozen=True)
class ReportData:
    """Everything the HTML report shows: one field per figure or table, plain values."""

    summary: Summary
    pareto: ParetoInfo
    templates: list[TemplateMetrics]
    importances: list[Importances]
    history: History
    curves: list[LossCurve]
    table: list[dict[str, Any]] = field(default_factory=list)  # pareto.pareto_rows
    zero_shot: list[dict[str, Any]] = field(default_factory=list)  # zero_shot_rows
    found_words: dict[str, Any] = field(default_factory=dict)  # verbalizers.auto
    pruning: PruningInfo = field(
        default_factory=lambda: PruningInfo([], [], 0, 0, ComputeSaved(0, 0, 0, None, 0))
    )
    step_curves: list[StepCurve] = field(default_factory=list)
    steps_history: StepsHistory = field(default_factory=lambda: StepsHistory([], [], (0.0, 1.0)))
    confirmed: list[Any] = field(default_factory=list)  # reports.confirmed.Confirmed
    full_confirmed: list[Any] = field(default_factory=list)  # reports.confirmed.FullConfirmed
    methods: list[TemplateMetrics] = field(default_factory=list)  # method_metrics
    examples: list[dict[str, Any]] = field(default_factory=list)  # written_examples


def compute_report(study: optuna.Study) -> ReportData:
    """Everything the HTML report shows, from ``study`` and its stored attributes.

    Args:
        study: the search's study (any storage; its URL is never read).

    Returns:
        The :class:`ReportData` that :func:`peftsearch.reports.html.render` draws.
    """
    return ReportData(
        summary=summary(study),
        pareto=pareto_info(study),
        templates=template_metrics(study),
        methods=method_metrics(study),
        importances=importances(study),
        history=history(study),
        curves=loss_curves(study),
        table=pareto_rows(study),
        zero_shot=zero_shot_rows(study),
        found_words=found_words(study),
        examples=written_examples(study),
        pruning=pruning_info(study),
        step_curves=step_curves(study),
        steps_history=hypervolume_by_steps(study),
        confirmed=sorted(confirmations(study).values(), key=lambda c: (c.trainable, c.trial)),
        full_confirmed=[
            f
            for epochs in full_epochs(study)
            for f in sorted(
                full_confirmations(study, epochs).values(), key=lambda c: (c.trainable, c.trial)
            )
        ],
    )
