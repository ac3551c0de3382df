"""Non-dominated priority and the MO-ASHA stop rule (peftsearch.searcher.pruners._priority)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from peftsearch.searcher.pruners._priority import (
    epsilon_net,
    non_dominated_priority,
    nondominated_sort,
    pareto_mask,
    rung_points,
    stop_at_rung,
)


def _stopped(metric, loss, params, reduction, **kw) -> list[bool]:
    """stop_at_rung for every row, as if each were the trial being decided."""
    return [stop_at_rung(i, metric, loss, params, reduction, **kw) for i in range(len(metric))]


# --- pareto_mask / nondominated_sort -----------------------------------------------------------


def test_pareto_mask_hand_example_with_duplicates():
    points = np.array([[1, 3], [2, 2], [1, 3], [2, 3], [3, 1], [3, 3]], dtype=float)
    mask = pareto_mask(points)
    assert mask.dtype == np.bool_
    # [1, 3] twice: identical rows do not dominate each other, both stay on the front.
    assert mask.tolist() == [True, True, True, False, True, False]


def test_pareto_mask_equal_in_one_column_is_dominated():
    # [1, 2] <= [1, 3] everywhere and < in column 1: dominated despite the equal column 0.
    assert pareto_mask(np.array([[1.0, 2.0], [1.0, 3.0]])).tolist() == [True, False]


def test_pareto_mask_empty_and_nan():
    assert pareto_mask(np.zeros((0, 2))).tolist() == []
    with pytest.raises(ValueError, match="NaN"):
        pareto_mask(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="2-D"):
        pareto_mask(np.array([1.0, 2.0]))


def test_nondominated_sort_hand_example():
    points = np.array([[1, 4], [2, 2], [4, 1], [2, 4], [3, 3], [4, 4], [5, 5], [3, 2]], dtype=float)
    # front 0: [1,4] [2,2] [4,1]; front 1: [2,4] [3,2]; then [3,3], [4,4], [5,5] one by one.
    assert nondominated_sort(points).tolist() == [0, 0, 0, 1, 2, 3, 4, 1]


def test_nondominated_sort_duplicates_share_a_front():
    points = np.array([[2, 2], [1, 1], [2, 2], [1, 1]], dtype=float)
    assert nondominated_sort(points).tolist() == [1, 0, 1, 0]


# --- epsilon_net -------------------------------------------------------------------------------


def test_epsilon_net_on_a_line_extreme_far_end_then_middle():
    # Rows on the segment (0, 1) - (1, 0): start at the smallest first column, then the far
    # end, then the point farthest from both (the middle), then the rest.
    points = np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [0.25, 0.75]])
    assert epsilon_net(points).tolist() == [2, 1, 0, 3]


def test_epsilon_net_normalizes_columns():
    # Column 0 spans 1000, column 1 spans 1. In raw units row 1 is farthest from the two
    # extremes (500 vs 400); normalized, row 2 is (0.64 vs 0.5).
    points = np.array([[0.0, 1.0], [500.0, 0.99], [600.0, 0.5], [1000.0, 0.0]])
    assert epsilon_net(points).tolist() == [0, 3, 2, 1]
    # Rescaling a column changes nothing.
    assert epsilon_net(points * np.array([1e-3, 1e6])).tolist() == [0, 3, 2, 1]


def test_epsilon_net_ties_and_constant_column():
    # Seed: smallest first column, ties by the second column.
    assert epsilon_net(np.array([[0.0, 5.0], [0.0, 3.0], [1.0, 3.0]]))[0] == 1
    # Constant column 1 adds nothing: a 1-D spread 0, 4, then 2 (ties go to the lowest row).
    points = np.array([[0.0, 7.0], [1.0, 7.0], [2.0, 7.0], [3.0, 7.0], [4.0, 7.0]])
    assert epsilon_net(points).tolist() == [0, 4, 2, 1, 3]
    # Exact duplicates come last; a single point and no points are fine.
    assert epsilon_net(np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])).tolist() == [0, 1, 2]
    assert epsilon_net(np.array([[3.0, 3.0]])).tolist() == [0]
    assert epsilon_net(np.zeros((0, 2))).tolist() == []
    with pytest.raises(ValueError, match="finite"):
        epsilon_net(np.array([[0.0, np.inf]]))


# --- non_dominated_priority --------------------------------------------------------------------


def test_non_dominated_priority_hand_example():
    points = np.array([[1, 4], [2, 2], [4, 1], [2, 4], [3, 3], [4, 4], [5, 5], [3, 2]], dtype=float)
    # Front 0 by epsilon-net: [1,4] (seed), [4,1] (far end), [2,2]; front 1: [2,4], [3,2].
    assert non_dominated_priority(points).tolist() == [0, 2, 1, 3, 5, 6, 7, 4]


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_priority_is_a_front_consistent_permutation(seed):
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 6, size=(30, 3)).astype(float)  # many duplicates and ties
    ranks = non_dominated_priority(points)
    assert sorted(ranks.tolist()) == list(range(30))
    fronts = nondominated_sort(points)
    for a in range(30):
        for b in range(30):
            if fronts[a] < fronts[b]:
                assert ranks[a] < ranks[b]
    # Deterministic.
    assert non_dominated_priority(points).tolist() == ranks.tolist()


# --- rung_points -------------------------------------------------------------------------------


def test_rung_points_values():
    pts = rung_points([0.8, 0.8, 0.6, np.nan], [0.5, 0.3, 0.1, 0.2], [0, 9, 99, 999])
    # value = -metric; gap 0.2; equal metric 0.8: loss 0.3 first (+0), loss 0.5 (+0.2/2 * 1/2);
    # NaN metric one gap beyond the worst finite value (-0.6 + 0.2).
    np.testing.assert_allclose(pts[:, 0], [-0.75, -0.8, -0.6, -0.4])
    np.testing.assert_allclose(pts[:, 1], [0.0, 1.0, 2.0, 3.0])


def test_rung_points_tie_break_is_lexicographic():
    metric = [0.5, 0.5, 0.5, 0.51, 0.5, 0.49]
    loss = [np.nan, 0.2, 0.1, 9.0, 0.2, 0.0]
    col0 = rung_points(metric, loss, [1] * 6)[:, 0]
    # Better metric first whatever the loss; at equal metric lower loss first, NaN loss last.
    assert np.argsort(col0, kind="stable").tolist() == [3, 2, 1, 4, 0, 5]
    assert col0[1] == col0[4]  # equal metric and equal loss: equal
    assert col0[0] < col0[5]  # NaN loss at 0.5 still beats any loss at 0.49


def test_rung_points_minimize_and_validation():
    col0 = rung_points([0.3, 0.1, 0.2], [1.0, 1.0, 1.0], [1, 1, 1], maximize=False)[:, 0]
    assert np.argsort(col0).tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="one length"):
        rung_points([0.1, 0.2], [0.1], [1, 2])
    with pytest.raises(ValueError, match="params"):
        rung_points([0.1], [0.1], [-1])
    assert rung_points([], [], []).shape == (0, 2)


# --- stop_at_rung ------------------------------------------------------------------------------


def test_equal_metric_lower_loss_ranks_better():
    # Same metric, same params: only the loss differs, and it decides.
    assert _stopped([0.7, 0.7], [0.4, 0.2], [10, 10], reduction=2) == [True, False]
    assert _stopped([0.7, 0.7], [0.2, 0.4], [10, 10], reduction=2) == [False, True]


def test_majority_metric_lowest_losses_continue():
    # Every trial predicts the majority class (same accuracy): keep the 3 lowest losses.
    loss = [0.69, 0.61, 0.72, 0.55, 0.70, 0.58, 0.66, 0.80, 0.64]
    stopped = _stopped([0.5] * 9, loss, [1000] * 9, reduction=3)
    assert [i for i, s in enumerate(stopped) if not s] == [1, 3, 5]


def test_better_metric_beats_lower_loss():
    metric = [0.5, 0.9, 0.5, 0.5, 0.9, 0.5, 0.5, 0.5, 0.5]
    loss = [0.30, 0.90, 0.20, 0.40, 0.95, 0.50, 0.60, 0.70, 0.80]
    stopped = _stopped(metric, loss, [1000] * 9, reduction=3)
    # Both 0.9 trials (despite their higher loss), then the lowest-loss majority trial.
    assert [i for i, s in enumerate(stopped) if not s] == [1, 2, 4]


def test_tiny_params_trial_on_the_front_is_kept():
    metric = [0.90, 0.88, 0.87, 0.86, 0.85, 0.84, 0.83, 0.82, 0.40]
    loss = [1.0] * 9
    params = [2e6, 2e6, 2e6, 2e6, 2e6, 2e6, 2e6, 2e6, 5e3]
    stopped = _stopped(metric, loss, params, reduction=3)
    # The worst metric by far, but the fewest parameters: an extreme of front 0, picked second.
    assert stopped[8] is False
    assert [i for i, s in enumerate(stopped) if not s] == [0, 1, 8]
    # The same trial with as many parameters as the rest is dominated and stops.
    assert stop_at_rung(8, metric, loss, [2e6] * 9, reduction=3) is True


def test_min_trials_guard():
    metric, loss, params = [0.9, 0.1], [0.1, 5.0], [10, 10]
    # reduction 3: nobody stops before ceil(3) = 3 trials reached the rung.
    assert _stopped(metric, loss, params, reduction=3) == [False, False]
    # reduction 2.5: ceil(2.5) = 3 too.
    assert _stopped(metric, loss, params, reduction=2.5) == [False, False]
    # An explicit lower bound lets the second arrival stop already.
    assert _stopped(metric, loss, params, reduction=3, min_trials=2) == [False, True]
    # With three trials the default guard is met.
    assert _stopped([0.9, 0.1, 0.5], [0.1, 5.0, 1.0], [10] * 3, reduction=3) == [
        False,
        True,
        True,
    ]
    # A higher guard holds back longer.
    assert not any(_stopped([0.9, 0.1, 0.5], [0.1] * 3, [10] * 3, reduction=3, min_trials=4))


def test_reduction_three_with_nine_trials_keeps_three():
    # Front 0: rows 0-3 (metric up, params up); rows 4-8 are dominated.
    metric = [0.90, 0.85, 0.70, 0.60, 0.50, 0.55, 0.40, 0.58, 0.30]
    params = [1e6, 1e5, 1e4, 1e3, 1e6, 1e5, 1e4, 1e3, 2e6]
    stopped = _stopped(metric, [1.0] * 9, params, reduction=3)
    # Best metric (seed), fewest params (far end), then the front point farthest from both.
    assert [i for i, s in enumerate(stopped) if not s] == [0, 2, 3]


@pytest.mark.parametrize(("n", "reduction"), [(9, 3), (10, 3), (8, 2), (7, 3.5), (30, 3), (4, 4)])
def test_kept_count_is_ceil_n_over_reduction(n, reduction):
    rng = np.random.default_rng(n)
    metric = rng.random(n).round(2)
    loss = rng.random(n)
    params = rng.choice([1e3, 1e4, 1e5, 1e6], size=n)
    kept = n - sum(_stopped(metric, loss, params, reduction))
    assert kept == max(1, math.ceil(n / reduction))


def test_non_maximize_metric_is_minimized():
    metric = [0.9, 0.2, 0.5, 0.7, 0.3, 0.8, 0.6, 0.4, 0.1]  # e.g. eval loss as the metric
    loss, params = [1.0] * 9, [100] * 9
    kept_min = [i for i, s in enumerate(_stopped(metric, loss, params, 3, maximize=False)) if not s]
    kept_max = [i for i, s in enumerate(_stopped(metric, loss, params, 3)) if not s]
    assert kept_min == [1, 4, 8]  # 0.2, 0.3, 0.1
    assert kept_max == [0, 3, 5]  # 0.9, 0.7, 0.8


def test_nan_metric_stops_first():
    metric = [0.6, np.nan, 0.5, 0.4]
    stopped = _stopped(metric, [0.1, 0.0, 0.2, 0.3], [10] * 4, reduction=2)
    assert stopped == [False, True, False, True]


def test_stop_at_rung_validation():
    with pytest.raises(ValueError, match="reduction"):
        stop_at_rung(0, [0.5], [0.1], [1], reduction=1.0)
    with pytest.raises(ValueError, match="out of range"):
        stop_at_rung(2, [0.5, 0.6], [0.1, 0.1], [1, 1], reduction=2)
    with pytest.raises(ValueError, match="min_trials"):
        stop_at_rung(0, [0.5], [0.1], [1], reduction=2, min_trials=-1)


def test_rung_points_float_noise_counts_as_equal_metric():
    # 0.1 + 0.2 != 0.3 in floats; the loss still decides between them.
    col0 = rung_points([0.1 + 0.2, 0.3, 0.2], [0.5, 0.4, 0.0], [1, 1, 1])[:, 0]
    assert np.argsort(col0).tolist() == [1, 0, 2]
    assert col0[1] < col0[0] < col0[2]
