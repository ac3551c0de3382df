"""Which trial to ship: the best, the knee of the front, or the best under a parameter budget."""

from __future__ import annotations

import math
from typing import Any

from peftsearch.reports.trials import front_trials

PICKS = ("knee", "best", "max-params")


def _front(study: Any) -> list[Any]:
    front = sorted(front_trials(study), key=lambda t: (t.values[1], -t.values[0]))
    if not front:
        raise ValueError(f"study {study.study_name!r} has no completed trial to pick from")
    return front


def knee_index(points: list[tuple[float, float]]) -> int:
    """Index of the knee of a front given as (trainable params, metric), fewest params first.

    Params are taken on a log scale; both axes are scaled to [0, 1]; the knee is the point
    farthest above the straight line from the smallest to the most accurate trial (the
    "Kneedle" idea). Fronts of one or two points: the most accurate one.
    """
    if len(points) <= 2:
        return max(range(len(points)), key=lambda i: (points[i][1], -points[i][0]))
    xs = [math.log10(max(p[0], 1)) for p in points]
    ys = [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0 or y1 == y0:
        return max(range(len(points)), key=lambda i: (ys[i], -xs[i]))
    nx = [(x - x0) / (x1 - x0) for x in xs]
    ny = [(y - y0) / (y1 - y0) for y in ys]
    # The line from the first point (fewest params) to the last (most params, best metric).
    ax, ay, bx, by = nx[0], ny[0], nx[-1], ny[-1]

    def above(i: int) -> float:
        return (bx - ax) * (ny[i] - ay) - (by - ay) * (nx[i] - ax)

    return max(range(len(points)), key=lambda i: (above(i), ny[i]))


def pick_trial(study: Any, how: str, max_params: int | None = None) -> Any:
    """The FrozenTrial chosen by ``how`` (one of :data:`PICKS`) among the Pareto trials.

    A trial confirmed on other seeds (``search confirm``) counts with its confirmed mean
    instead of its single search score; the front's members stay the search's.

    Raises:
        ValueError: unknown ``how``, no completed trial, or none within ``max_params``.
    """
    from peftsearch.reports.confirmed import confirmations

    front = _front(study)
    confirmed = confirmations(study)

    def score(t: Any) -> float:
        c = confirmed.get(t.number)
        return c.mean if c is not None else float(t.values[0])

    if how == "best":
        return max(front, key=lambda t: (score(t), -t.values[1]))
    if how == "knee":
        return front[knee_index([(t.values[1], score(t)) for t in front])]
    if how == "max-params":
        if max_params is None:
            raise ValueError("--pick max-params needs a parameter budget P")
        within = [t for t in front if t.values[1] <= max_params]
        if not within:
            raise ValueError(
                f"no Pareto trial has <= {max_params:,} trainable parameters; the smallest "
                f"has {int(front[0].values[1]):,}"
            )
        return max(within, key=lambda t: (score(t), -t.values[1]))
    raise ValueError(f"unknown pick {how!r}; valid: {', '.join(PICKS)}")
