"""Non-dominated priority of trials at a rung, and the MO-ASHA stop rule built on it.

Plain numpy, no optuna: the pruner wraps these pure functions, so they can be tested on hand
examples. Every objective is minimized. The ideas follow syne-tune's MO-ASHA
(``syne_tune/optimizer/schedulers/multiobjective/moasha.py``,
``multiobjective_priority.py``, ``non_dominated_priority.py``; Salinas et al., "A
multi-objective perspective on jointly tuning hardware and hyperparameters", NAS workshop at
ICLR 2021):

* trials at a rung are sorted front by front (non-dominated sort), and inside a front by an
  epsilon-net (greedy farthest-point order, Clarkson 2005) instead of NSGA-II's crowding
  distance, so the first few picks spread over the whole front;
* a trial continues when its place in that order is in the top ``1 / reduction`` share.

Where this module differs from syne-tune on purpose:

* ``epsilon_net`` normalizes every column to [0, 1] before measuring distances (syne-tune
  uses raw values, so an objective with a large scale, such as a parameter count, would
  decide the spread alone) and breaks every tie deterministically (lowest row index).
* ``non_dominated_priority`` returns the rank of each row. syne-tune's
  ``NonDominatedPriority`` returns the flattened *order* (row indices, best first), which
  ``_Bracket.on_result`` in ``moasha.py`` then reads as if it were per-row priorities (it
  takes entry ``[-1]``, i.e. the row index of the worst trial, rather than the rank of the
  new trial, which is row ``-1``). In the version read, ``compute_epsilon_net`` likewise
  returns ranks that ``nondominated_sort`` uses as an order. Those mix-ups are not copied.
* ``stop_at_rung`` keeps exactly ``max(1, ceil(n / reduction))`` trials and waits for
  ``min_trials`` arrivals; see its docstring.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "epsilon_net",
    "non_dominated_priority",
    "nondominated_sort",
    "pareto_mask",
    "rung_points",
    "stop_at_rung",
]

# Two epsilon-net distances closer than this (in normalized units, at most sqrt(m)) are a tie,
# so float noise in symmetric layouts cannot decide between points; ties go to the lowest row.
_TIE_TOL = 1e-12
# Metric values closer than this (relative, absolute below 1) count as equal in rung_points.
_EQUAL_RTOL = 1e-9


def _as_points(points: npt.ArrayLike, *, finite: bool = False) -> npt.NDArray[np.float64]:
    """Validate ``points`` as a float [n, m] array.

    Args:
        points: Array-like of shape [n, m].
        finite: Reject infinities as well as NaN.

    Returns:
        The points as a float64 array.

    Raises:
        ValueError: If the array is not 2-D or holds NaN (or infinities when ``finite``).
    """
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D array [n, m], got shape {arr.shape}")
    if finite and not np.isfinite(arr).all():
        raise ValueError("points must be finite")
    if np.isnan(arr).any():
        raise ValueError("points must not contain NaN")
    return arr


def pareto_mask(points: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Mark the non-dominated rows of ``points`` (every column minimized).

    Row ``a`` dominates row ``b`` when ``a <= b`` in every column and ``a < b`` in at least
    one. Identical rows therefore do not dominate each other: duplicates of a front point are
    all on the front.

    Args:
        points: Array [n, m] of objective values, lower is better; no NaN.

    Returns:
        Boolean array [n], True for the rows no other row dominates.

    Raises:
        ValueError: If ``points`` is not 2-D or contains NaN.
    """
    pts = _as_points(points)
    if pts.shape[0] == 0:
        return np.zeros(0, dtype=np.bool_)
    # dominates[i, j]: row i dominates row j.
    le = (pts[:, None, :] <= pts[None, :, :]).all(axis=-1)
    lt = (pts[:, None, :] < pts[None, :, :]).any(axis=-1)
    dominated = (le & lt).any(axis=0)
    return np.asarray(~dominated, dtype=np.bool_)


def nondominated_sort(points: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Assign each row its non-dominated front.

    Front 0 is the Pareto front of all rows, front 1 the Pareto front of the rows left after
    removing front 0, and so on.

    Args:
        points: Array [n, m] of objective values, lower is better; no NaN.

    Returns:
        Int array [n] with the front index of each row.

    Raises:
        ValueError: If ``points`` is not 2-D or contains NaN.
    """
    pts = _as_points(points)
    n = pts.shape[0]
    fronts = np.full(n, -1, dtype=np.intp)
    remaining = np.arange(n)
    front = 0
    while remaining.size:
        mask = pareto_mask(pts[remaining])
        if not mask.any():  # cannot happen for NaN-free points; never loop forever
            raise RuntimeError("no non-dominated row among the remaining points")
        fronts[remaining[mask]] = front
        remaining = remaining[~mask]
        front += 1
    return fronts


def epsilon_net(points: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Order the points of one front so that each prefix spreads over the front.

    Every column is min-max normalized to [0, 1] (a constant column becomes 0, so it adds
    nothing to distances). The first point is the one with the smallest first column (ties by
    the second column, and so on, then by row index); each next point is the remaining one
    farthest (Euclidean, normalized units) from the closest already chosen point. Ties go to
    the lowest row index. On a two-objective front the second pick is therefore the opposite
    extreme (best in the last column); exact duplicates come after every distinct point.

    syne-tune's ``compute_epsilon_net`` (``non_dominated_priority.py``) is the same greedy
    farthest-point rule on raw values, seeded by the argmin of one column or at random.

    Args:
        points: Array [n, m] of finite objective values.

    Returns:
        Int array [n], a permutation of ``range(n)``: the rows in pick order.

    Raises:
        ValueError: If ``points`` is not 2-D or is not finite.
    """
    pts = _as_points(points, finite=True)
    n, m = pts.shape
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    lo = pts.min(axis=0)
    span = pts.max(axis=0) - lo
    norm = np.zeros_like(pts)
    varies = span > 0
    norm[:, varies] = (pts[:, varies] - lo[varies]) / span[varies]

    # np.lexsort sorts by its last key first: column 0, then column 1, ..., then row index.
    keys = [np.arange(n)] + [pts[:, j] for j in reversed(range(m))]
    seed = int(np.lexsort(keys)[0])

    order = [seed]
    chosen = np.zeros(n, dtype=np.bool_)
    chosen[seed] = True
    min_dist = np.linalg.norm(norm - norm[seed], axis=1)
    for _ in range(n - 1):
        candidates = np.flatnonzero(~chosen)
        dist = min_dist[candidates]
        pick = int(candidates[np.flatnonzero(dist >= dist.max() - _TIE_TOL)[0]])
        order.append(pick)
        chosen[pick] = True
        min_dist = np.minimum(min_dist, np.linalg.norm(norm - norm[pick], axis=1))
    return np.asarray(order, dtype=np.intp)


def non_dominated_priority(points: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Rank rows by front, and inside a front by :func:`epsilon_net` order.

    Args:
        points: Array [n, m] of finite objective values, lower is better.

    Returns:
        Int array [n] with the rank of each row (0 is best), a permutation of ``range(n)``.
        (syne-tune's ``NonDominatedPriority`` returns the inverse, the order of the rows.)

    Raises:
        ValueError: If ``points`` is not 2-D or is not finite.
    """
    pts = _as_points(points, finite=True)
    n = pts.shape[0]
    ranks = np.empty(n, dtype=np.intp)
    if n == 0:
        return ranks
    fronts = nondominated_sort(pts)
    start = 0
    for front in range(int(fronts.max()) + 1):
        members = np.flatnonzero(fronts == front)
        ordered = members[epsilon_net(pts[members])]
        ranks[ordered] = np.arange(start, start + ordered.size)
        start += ordered.size
    return ranks


def _dense_rank(values: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
    """Dense rank of ``values`` (0 for the smallest, equal values share a rank)."""
    _, inverse = np.unique(values, return_inverse=True)
    return np.asarray(inverse, dtype=np.intp).reshape(values.shape)


def rung_points(
    metric: npt.ArrayLike,
    loss: npt.ArrayLike,
    params: npt.ArrayLike,
    maximize: bool = True,
) -> npt.NDArray[np.float64]:
    """Build the [n, 2] minimization points that rank trials at a rung.

    Column 0 is the metric, turned to "lower is better" (negated when ``maximize``), plus a
    tie-break by eval loss among trials of EQUAL metric (equal up to a relative 1e-9, so float
    noise such as ``0.1 + 0.2`` vs ``0.3`` is equal too): inside a group of equal metric, the
    trials get offsets ``delta / 2 * r / k`` where ``r`` is the dense rank of their loss in
    the group (lowest loss first, NaN loss last, as if +inf), ``k`` the number of distinct
    losses in the group, and ``delta`` the smallest gap between two distinct metric values
    (1.0 when there is only one). The offset stays below half a gap, so column 0 orders trials
    lexicographically by (metric, loss), which is what dominance sees, while keeping metric
    differences on their own scale, so epsilon-net distances stay meaningful (a dense rank
    of ``(metric, loss)`` would give the same dominance but make a 0.001 metric gap as wide
    as a 0.2 one). A non-finite metric (NaN, a crashed eval) counts worst: it is placed one
    gap beyond the worst finite value, and the loss still orders such trials among
    themselves. Equal metric and equal loss give equal column 0.

    Column 1 is ``log10(params + 1)``: fewer trainable parameters is better, and the log
    keeps a rank-4 vs rank-8 LoRA from being a rounding error next to a full fine-tune.

    Args:
        metric: Shape [n], the rung metric of each trial (e.g. accuracy).
        loss: Shape [n], eval loss of each trial; NaN allowed (counts worst).
        params: Shape [n], trainable parameter counts, finite and >= 0.
        maximize: Whether a larger metric is better; if False the metric is minimized.

    Returns:
        Float array [n, 2] of finite values; every column is minimized.

    Raises:
        ValueError: If the inputs are not 1-D of one length, or ``params`` is negative or
            not finite.
    """
    met = np.asarray(metric, dtype=np.float64)
    los = np.asarray(loss, dtype=np.float64)
    par = np.asarray(params, dtype=np.float64)
    if met.ndim != 1 or los.shape != met.shape or par.shape != met.shape:
        raise ValueError(
            "metric, loss and params must be 1-D of one length, got shapes "
            f"{met.shape}, {los.shape}, {par.shape}"
        )
    if not np.isfinite(par).all() or (par < 0).any():
        raise ValueError("params must be finite and >= 0")
    n = met.size
    out = np.zeros((n, 2), dtype=np.float64)
    if n == 0:
        return out

    value = -met if maximize else met.copy()
    finite = np.isfinite(value)
    distinct = np.unique(value[finite])  # sorted
    if distinct.size:
        # Values within float noise of each other are one metric value (the group's best):
        # otherwise a 1e-17 gap would make the loss offsets below vanish in rounding.
        breaks = np.diff(distinct) > _EQUAL_RTOL * np.maximum(1.0, np.abs(distinct[1:]))
        group_of = np.concatenate([[0], np.cumsum(breaks)])
        levels = distinct[np.concatenate([[True], breaks])]
        value[finite] = levels[group_of[np.searchsorted(distinct, value[finite])]]
    else:
        levels = distinct
    delta = float(np.diff(levels).min()) if levels.size > 1 else 1.0
    value[~finite] = float(levels[-1]) + delta if levels.size else 0.0

    loss_key = np.where(np.isnan(los), np.inf, los)
    col0 = value.copy()
    for group_value in np.unique(value):
        group = np.flatnonzero(value == group_value)
        ranks = _dense_rank(loss_key[group])
        k = int(ranks.max()) + 1
        col0[group] = group_value + (delta / 2.0) * ranks / k
    out[:, 0] = col0
    out[:, 1] = np.log10(par + 1.0)
    return out


def stop_at_rung(
    index: int,
    metric: npt.ArrayLike,
    loss: npt.ArrayLike,
    params: npt.ArrayLike,
    reduction: float,
    maximize: bool = True,
    min_trials: int | None = None,
) -> bool:
    """Decide whether the trial at row ``index`` stops at this rung.

    The rows are all trials that reached the rung, the trial itself included. They are ranked
    by ``non_dominated_priority(rung_points(metric, loss, params, maximize))`` and the trial
    continues when its rank is below ``max(1, ceil(n / reduction))``: exactly that many of the
    ``n`` trials would continue if they were all judged now. While fewer than ``min_trials``
    trials have reached the rung (default ``ceil(reduction)``), nobody stops.

    On a front the epsilon-net picks the best-metric trial first and the fewest-parameters
    trial second, so whenever two or more trials continue, both extremes of the front do.

    syne-tune (``moasha.py``, ``_Bracket.on_result``) decides when a trial reaches a rung,
    among the trials recorded there before it plus itself: the first trial always continues;
    otherwise it stops when ``rank / n > 1 / reduction_factor``, i.e. continues when the
    0-based rank is ``<= n / reduction_factor`` (4 of 9 for factor 3, and the second arrival
    can already stop). Here the bound is strict with ceil, so a full rung keeps
    ``ceil(n / reduction)`` (3 of 9), and the ``min_trials`` guard replaces "first one
    continues". (As noted in the module docstring, syne-tune's code as written reads the
    priority of the wrong row; this follows its stated intent.)

    Args:
        index: Row of the trial being decided.
        metric: Shape [n], rung metric of every trial at the rung.
        loss: Shape [n], eval loss (tie-break among equal metric; NaN counts worst).
        params: Shape [n], trainable parameter counts.
        reduction: Reduction factor, > 1 (keep the top ``1 / reduction``).
        maximize: Whether a larger metric is better.
        min_trials: Trials needed at the rung before anyone stops; default
            ``ceil(reduction)``.

    Returns:
        True when the trial should stop, False when it continues.

    Raises:
        ValueError: If ``reduction <= 1``, ``min_trials`` is negative, ``index`` is out of
            range, or the arrays are inconsistent (see :func:`rung_points`).
    """
    if not reduction > 1:
        raise ValueError(f"reduction must be > 1, got {reduction}")
    if min_trials is None:
        min_trials = math.ceil(reduction)
    if min_trials < 0:
        raise ValueError(f"min_trials must be >= 0, got {min_trials}")
    points = rung_points(metric, loss, params, maximize=maximize)
    n = points.shape[0]
    if not 0 <= index < n:
        raise ValueError(f"index {index} out of range for {n} trials")
    if n < min_trials:
        return False
    # The slack keeps float error (n / reduction = 3.0000000000000004) from adding a slot.
    keep = max(1, math.ceil(n / reduction - 1e-9))
    rank = int(non_dominated_priority(points)[index])
    return bool(rank >= keep)
