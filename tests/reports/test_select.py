"""Picking the trial to ship: best, knee, best under a parameter budget."""

from __future__ import annotations

import optuna
import pytest

from peftsearch.reports.select import knee_index, pick_trial


def _study(points: list[tuple[float, int]]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for metric, params in points:
        study.add_trial(optuna.trial.create_trial(values=[metric, params]))
    return study


# A front with an obvious knee at 10k params: +0.2 for 10x params, then +0.01 for 100x more.
FRONT = [(0.60, 1_000), (0.80, 10_000), (0.81, 1_000_000)]


def test_knee_is_the_elbow_of_the_front() -> None:
    assert knee_index([(p, m) for m, p in FRONT]) == 1
    assert pick_trial(_study(FRONT), "knee").values == [0.80, 10_000]


def test_knee_ignores_dominated_trials() -> None:
    study = _study([*FRONT, (0.70, 20_000), (0.5, 5_000_000)])
    assert pick_trial(study, "knee").values == [0.80, 10_000]


def test_small_fronts_pick_the_most_accurate() -> None:
    assert knee_index([(100, 0.5)]) == 0
    assert knee_index([(100, 0.5), (1000, 0.7)]) == 1
    assert knee_index([(100, 0.7), (1000, 0.7), (10_000, 0.7)]) == 0  # flat: fewest params


def test_best_and_budget() -> None:
    study = _study(FRONT)
    assert pick_trial(study, "best").values == [0.81, 1_000_000]
    assert pick_trial(study, "max-params", 50_000).values == [0.80, 10_000]
    assert pick_trial(study, "max-params", 10_000).values == [0.80, 10_000]
    with pytest.raises(ValueError, match="smallest has 1,000"):
        pick_trial(study, "max-params", 999)
    with pytest.raises(ValueError, match="needs a parameter budget"):
        pick_trial(study, "max-params")
    with pytest.raises(ValueError, match="valid: knee, best, max-params"):
        pick_trial(study, "median")


def test_empty_study_has_nothing_to_pick() -> None:
    with pytest.raises(ValueError, match="no completed trial"):
        pick_trial(_study([]), "best")
