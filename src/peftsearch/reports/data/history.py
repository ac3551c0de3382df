"""How the search progressed: best metric and hypervolume so far, trial by trial
(:func:`history`) and against the training steps spent (:func:`hypervolume_by_steps`), and
each trial's train-loss curve (:func:`loss_curves`).

The hypervolume is measured on (metric, log10 trainable params) by :func:`hypervolume_2d`,
plain Python (the benchmarks use it too).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from peftsearch.reports.data import common
from peftsearch.reports.trials import front_trials

if TYPE_CHECKING:
    import optuna


class History(NamedTuple):
    trials: list[int]  # COMPLETE trial numbers, ascending
    metric: list[float]  # each trial's metric
    best_metric: list[float]  # best metric so far
    hypervolume: list[float]  # hypervolume of the front so far (see :func:`hypervolume_2d`)
    reference: tuple[float, float]  # (metric, trainable params) of the reference point


class StepsHistory(NamedTuple):
    """Hypervolume against the training steps spent (see :func:`hypervolume_by_steps`)."""

    steps: list[int]  # cumulative training steps after each finished trial, completion order
    hypervolume: list[float]  # hypervolume of the COMPLETE non-repeat front at that point
    reference: tuple[float, float]  # the same reference point as History's


class LossCurve(NamedTuple):
    trial: int
    template: str
    steps: list[int]  # training step of each point
    losses: list[float]  # train loss averaged over the steps since the previous point
    pareto: bool


def hypervolume_2d(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (metric, log10 params) up to ``reference``.

    Written here because Optuna's hypervolume code is private (``optuna._hypervolume``), and in
    two dimensions it is a sweep: turn both axes into gains over the reference (metric above it,
    decades of parameters below it), sort by parameter gain, largest first, and add the strips
    between consecutive gains, each as tall as the best metric gain seen so far. Points no
    better than the reference on either axis add nothing.
    """
    ref_metric, ref_log_params = reference
    gains = sorted(
        ((ref_log_params - lp, m - ref_metric) for m, lp in points),
        reverse=True,
    )
    gains = [(x, y) for x, y in gains if x > 0 and y > 0]
    area, best_y = 0.0, 0.0
    for i, (x, y) in enumerate(gains):
        best_y = max(best_y, y)
        next_x = gains[i + 1][0] if i + 1 < len(gains) else 0.0
        area += (x - next_x) * best_y
    return area


def _reference(study: optuna.Study) -> tuple[float, float]:
    """(metric, trainable params) of the hypervolume reference point: see :func:`history`."""
    trials = common.complete(study)
    metrics = [t.values[0] for t in trials]
    params = [max(t.values[1], 1.0) for t in trials]
    base = study.user_attrs.get("base_params") or 0
    return (min([0.0, *metrics]), float(max([base, *params, 1.0])))


def history(study: optuna.Study) -> History:
    """Best metric so far and hypervolume so far, trial by trial (COMPLETE trials).

    The hypervolume is measured on (metric, log10 trainable params): parameter counts span
    decades, so a log scale weighs halving 1,000 params like halving 1,000,000. Its reference
    point is metric 0 (or the lowest metric seen, if negative: MCC can be) and the base model's
    parameter count (or the largest count seen, if larger): a trial that scores nothing, or
    trains as many weights as full fine-tuning, adds no volume. Units: metric x decades.
    """
    trials = common.complete(study)
    metrics = [t.values[0] for t in trials]
    params = [max(t.values[1], 1.0) for t in trials]
    reference = _reference(study)
    ref = (reference[0], math.log10(reference[1]))
    best: list[float] = []
    volume: list[float] = []
    for i, m in enumerate(metrics):
        best.append(m if not best else max(best[-1], m))
        seen = [(metrics[j], math.log10(params[j])) for j in range(i + 1)]
        volume.append(hypervolume_2d(seen, ref))
    return History([t.number for t in trials], metrics, best, volume, reference)


def hypervolume_by_steps(study: optuna.Study) -> StepsHistory:
    """Hypervolume of the front against the training steps spent to find it.

    The finished trials (COMPLETE and PRUNED) in completion order (``datetime_complete``, then
    trial number; a trial without a completion time last): after each, the cumulative
    ``train_steps`` user attribute (a stopped trial counts the steps it ran, a repeat 0, a
    trial that did not record its steps 0) and the hypervolume of the COMPLETE non-repeat
    trials so far, with :func:`history`'s reference point and units (metric x decades).
    Failed trials are left out. Plain Python: works on any study, e.g. one loaded from storage.
    """
    from optuna.trial import TrialState

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))

    def order(t: optuna.trial.FrozenTrial) -> tuple[bool, datetime, int]:
        done = t.datetime_complete
        return (done is None, done or datetime.min, t.number)

    reference = _reference(study)
    ref = (reference[0], math.log10(reference[1]))
    seen: list[tuple[float, float]] = []
    steps: list[int] = []
    volume: list[float] = []
    total = 0
    for t in sorted(finished, key=order):
        total += max(0, common.as_int(t.user_attrs.get("train_steps")) or 0)
        if t.state == TrialState.COMPLETE and not common.is_repeat(t):
            seen.append((t.values[0], math.log10(max(t.values[1], 1.0))))
            volume.append(hypervolume_2d(seen, ref))
        else:
            volume.append(volume[-1] if volume else 0.0)
        steps.append(total)
    return StepsHistory(steps, volume, reference)


def loss_curves(study: optuna.Study) -> list[LossCurve]:
    """The train-loss curve of each COMPLETE trial that recorded one, with its Pareto flag."""
    front = {t.number for t in front_trials(study)}
    curves = []
    for t in common.complete(study):
        losses = [float(x) for x in t.user_attrs.get("train_loss_curve") or []]
        if not losses:
            continue
        every = int(t.user_attrs.get("train_loss_curve_every") or 1)
        steps = [(i + 1) * every for i in range(len(losses))]
        total = t.user_attrs.get("train_steps")  # the last point closes at the last step
        if isinstance(total, int) and steps[-1] - every < total <= steps[-1]:
            steps[-1] = total
        template = str(common.config(study, t).get("template"))
        curves.append(LossCurve(t.number, template, steps, losses, t.number in front))
    return curves
