"""The Pareto plot's data: every COMPLETE trial as a point, which are dominated, the front
and its knee (:func:`pareto_info`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from peftsearch.objectives import adapters
from peftsearch.reports.data import common
from peftsearch.reports.select import pick_trial
from peftsearch.reports.trials import front_trials

if TYPE_CHECKING:
    import optuna


class ParetoPoint(NamedTuple):
    """One COMPLETE trial as a point of the metric-vs-parameters plot."""

    trial: int
    metric: float
    params: int  # trainable parameters
    pct: float | None  # trainable parameters as % of the base model
    template: str
    sizes: dict[str, Any]  # each adapter's size parameter (prompt_length, lora_r, ...)
    method: str  # the weight method and where (adapters.method_of: "lora all-linear", "none")
    rates: dict[str, float]  # each adapter it trains -> its learning rate
    config: dict[str, Any]  # every parameter of the trial (searched and fixed), template text
    dominated: bool


class ParetoInfo(NamedTuple):
    points: list[ParetoPoint]  # every COMPLETE trial, by trial number
    front: list[tuple[int, float]]  # (params, metric) of the front, fewest params first, unique
    knee: int | None  # trial number of the knee (peftsearch.reports.select), None without trials


def pareto_info(study: optuna.Study) -> ParetoInfo:
    """Every COMPLETE trial as a point, which are dominated, the front and its knee.

    Args:
        study: the search's study (metric maximized, trainable parameters minimized).

    Returns:
        The points by trial number (repeats left out: a repeat would be a second point on its
        original), the front's (params, metric) steps and the knee's trial number.
    """
    base = study.user_attrs.get("base_params")
    front_numbers = {t.number for t in front_trials(study)}
    points = []
    for t in common.trained(study):
        config = common.config(study, t)
        params = int(t.values[1])
        pct = t.user_attrs.get("trainable_pct")
        if pct is None and base:
            pct = 100.0 * params / base
        points.append(
            ParetoPoint(
                trial=t.number,
                metric=t.values[0],
                params=params,
                pct=pct,
                template=str(config.get("template")),
                sizes=adapters.sizes(config),
                method=adapters.method_of(config),
                rates=adapters.trained_rates(config),
                config=config,
                dominated=t.number not in front_numbers,
            )
        )
    front = sorted({(p.params, p.metric) for p in points if not p.dominated})
    knee = pick_trial(study, "knee").number if front else None
    return ParetoInfo(points, front, knee)
