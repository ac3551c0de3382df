"""The metric per prompt template (:func:`template_metrics`): each template's COMPLETE trials,
those stopped early, and a note when that is too little evidence to judge it."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from peftsearch.reports.data import common

if TYPE_CHECKING:
    import optuna

# A template with fewer COMPLETE trials than this, or more stopped early than completed, is
# marked "too few / too short to judge".
FEW_PER_TEMPLATE = 3


class TemplateMetrics(NamedTuple):
    template: str
    text: str | None  # the template text (from the trials), None if not recorded
    trials: list[int]  # its COMPLETE trials, repeats left out
    metrics: list[float]
    stopped: list[int]  # its trials stopped early by successive halving, repeats left out
    note: str  # "too few / too short to judge: ..." when the evidence is thin; else ""


def _thin_note(completed: int, stopped: int) -> str:
    """Why a template's evidence is too thin to judge it, or ""."""
    few = completed < FEW_PER_TEMPLATE
    short = stopped > completed
    if not (few or short):
        return ""
    reasons = []
    if few:
        reasons.append(f"{completed} completed trial{'' if completed == 1 else 's'}")
    if short:
        reasons.append(f"{stopped} of {completed + stopped} stopped early")
    label = "too few / too short" if few and short else "too few" if few else "too short"
    return f"{label} to judge: {', '.join(reasons)}"


def template_metrics(study: optuna.Study) -> list[TemplateMetrics]:
    """The metric of every COMPLETE trial, grouped by template (search-space order first),
    with the trials stopped early and a note when a template has too little evidence.

    Repeats are left out. A stopped trial without a recorded template is not attributed.

    Args:
        study: the search's study.

    Returns:
        One :class:`TemplateMetrics` per template: search-space order first, then by name.
    """
    groups: dict[str, TemplateMetrics] = {}

    def group_of(t: optuna.trial.FrozenTrial, name: str) -> TemplateMetrics:
        group = groups.setdefault(name, TemplateMetrics(name, None, [], [], [], ""))
        if group.text is None and "template_text" in t.user_attrs:
            group = groups[name] = group._replace(text=str(t.user_attrs["template_text"]))
        return group

    for t in common.trained(study):
        group = group_of(t, str(common.config(study, t).get("template")))
        group.trials.append(t.number)
        group.metrics.append(t.values[0])
    for t in common.stopped(study):
        template = common.config(study, t).get("template")
        if template is not None:
            group_of(t, str(template)).stopped.append(t.number)
    spec = study.user_attrs.get("search_space", {}).get("template")
    order = [str(c) for c in spec.get("choices", [])] if isinstance(spec, dict) else []
    rank = {name: i for i, name in enumerate(order)}
    return sorted(
        (g._replace(note=_thin_note(len(g.trials), len(g.stopped))) for g in groups.values()),
        key=lambda g: (rank.get(g.template, len(rank)), g.template),
    )
