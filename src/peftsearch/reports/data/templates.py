"""The metric per prompt template (:func:`template_metrics`) and per adapter method
(:func:`method_metrics`): each group's COMPLETE trials, those stopped early, and a note when
that is too little evidence to judge it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from peftsearch.objectives import adapters
from peftsearch.reports.data import common

if TYPE_CHECKING:
    import optuna

# A template with fewer COMPLETE trials than this, or more stopped early than completed, is
# marked "too few / too short to judge".
FEW_PER_TEMPLATE = 3


class TemplateMetrics(NamedTuple):
    """One group's trials: a template's (:func:`template_metrics`) or a method's
    (:func:`method_metrics`)."""

    name: str  # the template's name, or the method label (adapters.method_of)
    text: str | None  # the template text (from the trials), None if not recorded or a method
    trials: list[int]  # its COMPLETE trials, repeats left out
    metrics: list[float]
    stopped: list[int]  # its trials stopped early by successive halving, repeats left out
    note: str  # "too few / too short to judge: ..." when the evidence is thin; else ""

    @property
    def template(self) -> str:
        """The template's name (a template group's ``name``)."""
        return self.name


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
    spec = study.user_attrs.get("search_space", {}).get("template")
    order = [str(c) for c in spec.get("choices", [])] if isinstance(spec, dict) else []

    def template(config: dict[str, Any]) -> str | None:
        value = config.get("template")
        return None if value is None else str(value)

    return _grouped(study, template, order, texts=True)


def method_metrics(study: optuna.Study) -> list[TemplateMetrics]:
    """The same grouped by adapter method and placement (``lora``, ``lora all-linear``,
    ``ia3``, ``none``: :func:`peftsearch.objectives.adapters.method_of`), the registry's
    methods first, ``none`` last."""
    order = [m for m in adapters.ADAPTERS if adapters.ADAPTERS[m].method]

    def rank(name: str) -> tuple[int, str]:
        head = name.split(" ")[0]
        return (order.index(head) if head in order else len(order) + 1, name)

    groups = _grouped(study, adapters.method_of, [], texts=False)
    return sorted(groups, key=lambda g: rank(g.name))


def _grouped(
    study: optuna.Study,
    key: Callable[[dict[str, Any]], str | None],
    order: list[str],
    texts: bool,
) -> list[TemplateMetrics]:
    """The trained and stopped trials grouped by ``key`` of their config (None: not
    attributed), ``order`` first, then by name; ``texts``: keep the template text."""
    groups: dict[str, TemplateMetrics] = {}

    def group_of(t: optuna.trial.FrozenTrial, name: str) -> TemplateMetrics:
        group = groups.setdefault(name, TemplateMetrics(name, None, [], [], [], ""))
        if texts and group.text is None and "template_text" in t.user_attrs:
            group = groups[name] = group._replace(text=str(t.user_attrs["template_text"]))
        return group

    for t in common.trained(study):
        name = key(common.config(study, t))
        if name is not None:
            group = group_of(t, name)
            group.trials.append(t.number)
            group.metrics.append(t.values[0])
    for t in common.stopped(study):
        name = key(common.config(study, t))
        if name is not None:
            group_of(t, name).stopped.append(t.number)
    rank = {name: i for i, name in enumerate(order)}
    return sorted(
        (g._replace(note=_thin_note(len(g.trials), len(g.stopped))) for g in groups.values()),
        key=lambda g: (rank.get(g.name, len(rank)), g.name),
    )
