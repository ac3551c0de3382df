"""The report's compute layer on studies with known values: nothing is drawn here."""

from __future__ import annotations

import itertools
import math
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from peftsearch.reports import figures
from peftsearch.reports.pareto import pareto_rows
from peftsearch.reports.select import pick_trial
from peftsearch.spaces import RULES

optuna.logging.set_verbosity(optuna.logging.WARNING)

DISTS = {
    "template": CategoricalDistribution(["plain", "review", "nli"]),
    "lora_r": CategoricalDistribution([0, 4, 8]),
    "learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
}
SPACE_ATTRS: dict[str, Any] = {
    "metric": "f1",
    "model": "pkg://some_model/model",
    "base_params": 100_000,
    "fixed_params": {"prompt_length": 0, "epochs": 2, "batch_size": 8, "max_steps": None},
    "search_space": {
        "template": {"type": "categorical", "choices": ["review", "plain", "nli"]},
        "lora_r": {"type": "categorical", "choices": [0, 4, 8]},
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "prompt_length": 0,
        "epochs": 2,
        "batch_size": 8,
        "max_steps": None,
    },
    "data": {
        "source": "/data/reviews.csv",
        "sha256": "ab" * 32,
        "sizes": {
            "train": 800,
            "validation": 100,
            "test": 100,
            "trial_train": 400,
            "trial_eval": 90,
        },
        "split": {"validation": 0.1, "test": 0.1, "seed": 0},
        "labels": ["neg", "pos"],
    },
    "space": {
        "study": {
            "name": "s",
            "storage": "postgresql://user:hunter2@db/optuna",
            "sampler": "nsga2",
            "sampler_kwargs": {"population_size": 8},
            "seed": 3,
            "n_trials": 40,
            "timeout": None,
            "enqueue": [],
        }
    },
}
# (metric, params, template): the front is {A, B, D}; C is dominated by B, E by D.
POINTS = [
    (0.60, 800, "plain"),  # A, trial 0
    (0.75, 5_000, "review"),  # B, trial 1
    (0.70, 9_000, "plain"),  # C, trial 2
    (0.80, 70_000, "nli"),  # D, trial 3
    (0.80, 90_000, "review"),  # E, trial 4
]


def _add(study: optuna.Study, metric: float, params: int, template: str, **attrs: Any) -> None:
    n = len(study.trials)
    study.add_trial(
        create_trial(
            values=[metric, params],
            distributions=DISTS,
            params={
                "template": template,
                "lora_r": 4 if params > 1000 else 0,
                "learning_rate": 1e-3,
            },
            user_attrs={
                "template_text": f"{template}: {{text}}",
                "trainable_pct": params / 1000,
                "trial_seconds": 10.0 + n,
                **attrs,
            },
        )
    )


def _study(points: list[tuple[float, int, str]] = POINTS, attrs: bool = True) -> optuna.Study:
    study = optuna.create_study(study_name="known", directions=["maximize", "minimize"])
    if attrs:
        for key, value in SPACE_ATTRS.items():
            study.set_user_attr(key, value)
    for metric, params, template in points:
        _add(study, metric, params, template)
    return study


def test_every_complete_trial_is_a_point_with_its_dominated_flag() -> None:
    study = _study()
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "OOM"}))
    info = figures.pareto_info(study)
    assert [p.trial for p in info.points] == [0, 1, 2, 3, 4]  # the failed trial 5 is not a point
    assert [p.dominated for p in info.points] == [False, False, True, False, True]
    assert [(p.metric, p.params, p.template) for p in info.points] == POINTS
    b = info.points[1]
    assert b.pct == 5.0 and b.lora_r == 4 and b.learning_rate == 1e-3
    assert b.prompt_length == 0  # a fixed parameter, from the study's fixed_params
    expected = {
        "template": "review",
        "lora_r": 4,
        "learning_rate": 1e-3,
        "prompt_length": 0,
        "epochs": 2,
        "batch_size": 8,
        "max_steps": None,
        "template_text": "review: {text}",
    }
    assert {k: b.config[k] for k in expected} == expected
    assert set(b.config) == {*RULES, "template_text"}  # every parameter, defaults included


def test_front_is_a_step_line_sorted_by_params_and_the_knee_is_the_select_knee() -> None:
    study = _study()
    info = figures.pareto_info(study)
    assert info.front == [(800, 0.60), (5_000, 0.75), (70_000, 0.80)]
    # Worked by hand: log10 params 2.90, 3.70, 4.85 scale to x 0, 0.41, 1; the metric to y 0,
    # 0.75, 1; B is the farthest above the line from A to D (0.75 - 0.41 = 0.34).
    assert info.knee == 1 == pick_trial(study, "knee").number


def test_ties_on_the_front_are_both_optimal_and_the_step_line_has_them_once() -> None:
    study = _study([(0.5, 100, "plain"), (0.5, 100, "review"), (0.4, 300, "plain")])
    info = figures.pareto_info(study)
    assert [p.dominated for p in info.points] == [False, False, True]
    assert info.front == [(100, 0.5)]
    assert info.knee == 0


def test_pct_falls_back_to_the_base_params() -> None:
    study = _study([])
    study.set_user_attr("base_params", 2000)
    study.add_trial(create_trial(values=[0.5, 500], distributions=DISTS, params=_params()))
    assert figures.pareto_info(study).points[0].pct == 25.0


def _params(template: str = "plain", lora_r: int = 0, lr: float = 1e-3) -> dict[str, Any]:
    return {"template": template, "lora_r": lora_r, "learning_rate": lr}


def test_template_metrics_group_trials_in_search_space_order() -> None:
    groups = figures.template_metrics(_study())
    assert [g.template for g in groups] == ["review", "plain", "nli"]  # the choices' order
    assert [(g.trials, g.metrics) for g in groups] == [
        ([1, 4], [0.75, 0.80]),
        ([0, 2], [0.60, 0.70]),
        ([3], [0.80]),
    ]
    assert groups[0].text == "review: {text}"


def _factorial_study() -> optuna.Study:
    """27 trials: the metric is high only with template nli, and low only with lr 1e-4;
    trainable parameters follow lora_r alone."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("metric", "accuracy")
    for tmpl, r, lr in itertools.product(["plain", "review", "nli"], [0, 4, 8], [1e-4, 1e-3, 1e-2]):
        metric = 0.9 if tmpl == "nli" else (0.1 if lr == 1e-4 else 0.5)
        study.add_trial(
            create_trial(
                values=[metric, 100 + 1000 * r], distributions=DISTS, params=_params(tmpl, r, lr)
            )
        )
    return study


def test_importances_per_objective_name_the_deciding_parameter() -> None:
    metric, params = figures.importances(_factorial_study())
    assert metric.objective == "accuracy (maximized)"
    assert params.objective == "trainable parameters (minimized)"
    for imp in (metric, params):
        assert set(imp.values) == {"template", "lora_r", "learning_rate"}
        assert math.isclose(sum(imp.values.values()), 1.0)
        assert list(imp.values.values()) == sorted(imp.values.values(), reverse=True)
        assert imp.note == ""  # 27 trials: no small-study caveat
    # The metric is maximized: reaching its *top* takes template nli. (Taken as "lower is
    # better", as PED-ANOVA does by default, it would name learning_rate instead.)
    assert next(iter(metric.values)) == "template" and metric.values["template"] > 0.9
    assert next(iter(params.values)) == "lora_r" and params.values["lora_r"] > 0.9


def test_importances_explain_why_they_are_empty() -> None:
    one = figures.importances(_study(POINTS[:1]))
    assert [i.values for i in one] == [{}, {}]
    assert all("at least 2 completed trials" in i.note for i in one)

    same_metric = _study([(0.5, 100, "plain"), (0.5, 9_000, "review")])
    metric, params = figures.importances(same_metric)
    assert metric.values == {} and "same value (0.5)" in metric.note
    assert set(params.values) == {"template", "lora_r"}  # learning_rate never varied
    assert "rough hint" in params.note

    study = optuna.create_study(directions=["maximize", "minimize"])
    for m in (0.1, 0.2):
        study.add_trial(create_trial(values=[m, 100 + m], distributions=DISTS, params=_params()))
    assert all("no searched parameter" in i.note for i in figures.importances(study))


def test_hypervolume_2d_worked_by_hand() -> None:
    ref = (0.0, 5.0)  # metric 0, 10^5 params
    # A: metric 0.6 at 10^3 params (2 decades below the reference); B: 0.8 at 10^4 (1 decade).
    # Union of [0,2]x[0,0.6] and [0,1]x[0,0.8]: 1.2 + 1 x 0.2 = 1.4.
    assert figures.hypervolume_2d([(0.6, 3.0), (0.8, 4.0)], ref) == pytest.approx(1.4)
    assert figures.hypervolume_2d([(0.8, 4.0), (0.6, 3.0), (0.5, 3.5)], ref) == pytest.approx(1.4)
    assert figures.hypervolume_2d([(-0.1, 3.0), (0.9, 5.0), (0.9, 6.0)], ref) == 0.0
    assert figures.hypervolume_2d([], ref) == 0.0


def test_history_has_best_so_far_and_hypervolume_per_complete_trial() -> None:
    study = _study([(0.6, 1_000, "plain")])
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "x"}))
    for metric, params in [(0.5, 10_000), (0.8, 10_000), (0.9, 100_000)]:
        _add(study, metric, params, "review")
    h = figures.history(study)
    assert h.trials == [0, 2, 3, 4]
    assert h.metric == [0.6, 0.5, 0.8, 0.9]
    assert h.best_metric == [0.6, 0.6, 0.8, 0.9]
    assert h.reference == (0.0, 100_000.0)
    # 0.6 x 2 decades; trial 2 is dominated; trial 3 adds 1 decade x 0.2; trial 4 trains as
    # many parameters as the base model and adds nothing.
    assert h.hypervolume == pytest.approx([1.2, 1.2, 1.4, 1.4])


def test_history_reference_covers_negative_metrics_and_params_above_the_base() -> None:
    study = _study([(-0.5, 10, "plain"), (0.5, 1_000_000, "plain")])
    h = figures.history(study)
    assert h.reference == (-0.5, 1_000_000.0)
    assert h.hypervolume == pytest.approx([0.0, 0.0])  # each sits on the reference on one axis


def test_loss_curves_have_steps_and_the_pareto_flag() -> None:
    study = _study([])
    # 12 steps logged every 5: points close at steps 5, 10 and the last one, 12.
    curve = {"train_loss_curve": [0.7, 0.5, 0.4], "train_loss_curve_every": 5, "train_steps": 12}
    _add(study, 0.6, 800, "plain", **curve)
    _add(study, 0.5, 900, "review", train_loss_curve=[0.9, 0.8])  # every defaults to 1
    _add(study, 0.9, 5000, "nli")  # no curve recorded: left out
    curves = figures.loss_curves(study)
    assert [(c.trial, c.template, c.steps, c.losses, c.pareto) for c in curves] == [
        (0, "plain", [5, 10, 12], [0.7, 0.5, 0.4], True),
        (1, "review", [1, 2], [0.9, 0.8], False),
    ]


def test_summary_counts_failures_compute_and_never_the_storage() -> None:
    study = _study()
    fails = [
        {"fail_reason": "CUDA out of memory"},
        {"fail_reason": "train loss is nan at step 3 of 10; stopped"},
        {"fail_reason": "CUDA out of memory", "trial_seconds": 2.5},
        {"interrupted": True, "fail_note": "interrupted by the user (Ctrl-C); re-run resumes it"},
        {},
    ]
    for attrs in fails:
        study.add_trial(create_trial(state=TrialState.FAIL, user_attrs=attrs))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"trial_seconds": 1.0}))
    study.enqueue_trial({"template": "plain"})
    study.enqueue_trial({"template": "nli"})
    study.ask()  # takes the first waiting trial: RUNNING
    s = figures.summary(study)
    assert s.study_name == "known" and s.metric == "f1"
    assert s.counts == {"complete": 5, "pruned": 1, "fail": 5, "running": 1, "waiting": 1}
    assert s.failures == [
        ("CUDA out of memory", 2),
        ("interrupted by the user (Ctrl-C); re-run resumes it", 1),
        (figures.NO_REASON, 1),
        ("train loss is nan at step 3 of 10; stopped", 1),
    ]
    assert s.compute_seconds == pytest.approx(10 + 11 + 12 + 13 + 14 + 2.5 + 1.0)
    assert s.sampler == {
        "sampler": "nsga2",
        "sampler_kwargs": {"population_size": 8},
        "seed": 3,
        "n_trials": 40,
        "timeout": None,
    }
    assert "hunter2" not in repr(s)
    assert s.budget == {
        "train rows": 400,
        "eval rows": 90,
        "epochs": 2,
        "batch size": 8,
        "max steps": None,
    }
    assert set(s.search_space) == {"template", "lora_r", "learning_rate"}
    assert s.model == "pkg://some_model/model" and s.data_source == "/data/reviews.csv"
    assert s.split_sizes["trial_train"] == 400 and s.labels == ["neg", "pos"]
    assert s.base_params == 100_000


def test_summary_groups_versions_and_devices_and_marks_searched_budget() -> None:
    study = _study([])
    study.set_user_attr("search_space", {"epochs": {"type": "int", "low": 1, "high": 3}})
    old, new = {"torch": "2.12"}, {"torch": "2.13"}
    for v, device in [(old, "cpu"), (new, "cuda:0"), (old, "cpu")]:
        _add(study, 0.5, 100, "plain", versions=v, device=device)
    s = figures.summary(study)
    assert s.versions == [(old, [0, 2]), (new, [1])]
    assert s.devices == ["cpu", "cuda:0"]
    assert s.budget["epochs"] == "searched"


def test_a_study_without_attributes_or_complete_trials_still_computes() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "boom"}))
    data = figures.compute_report(study)
    assert data.pareto == figures.ParetoInfo([], [], None)
    assert data.templates == [] and data.curves == [] and data.table == []
    assert data.history.trials == [] and data.history.hypervolume == []
    assert all(i.values == {} for i in data.importances)
    assert data.summary.counts["fail"] == 1 and data.summary.failures == [("boom", 1)]
    assert data.summary.model is None and data.summary.sampler == {}


def test_compute_report_table_is_the_pareto_rows() -> None:
    study = _study()
    assert figures.compute_report(study).table == pareto_rows(study)
