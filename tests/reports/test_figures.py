"""The report's compute layer on studies with known values: nothing is drawn here."""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from peftsearch.reports import figures
from peftsearch.reports.data import pruning as data_pruning
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
    assert b.pct == 5.0 and b.sizes["lora_r"] == 4 and b.method == "lora"
    assert b.rates == {"lora": 1e-3, "head": 1e-3}  # the head follows learning_rate
    assert info.points[0].method == "none" and info.points[0].rates == {"head": 1e-3}
    assert b.sizes["prompt_length"] == 0  # a fixed parameter, from the study's fixed_params
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


def test_method_metrics_group_trials_by_method_and_placement() -> None:
    """The per-method twin of the per-template view: LoRA by where it goes, IA3, and `none`
    (head and/or prompt only) last; stopped trials counted apart."""
    dists = {
        "adapter": CategoricalDistribution(["lora", "ia3", "none"]),
        "lora_r": CategoricalDistribution([0, 4]),
        "target_modules": CategoricalDistribution(["default", "all-linear"]),
    }
    study = optuna.create_study(directions=["maximize", "minimize"])
    rows = [
        (0.7, 10, {"adapter": "none"}, TrialState.COMPLETE),
        (0.8, 90, {"adapter": "lora", "lora_r": 4, "target_modules": "all-linear"}, None),
        (0.75, 30, {"adapter": "lora", "lora_r": 4, "target_modules": "default"}, None),
        (0.76, 20, {"adapter": "ia3"}, None),
        (0.5, 30, {"adapter": "lora", "lora_r": 4, "target_modules": "default"}, "pruned"),
        (0.72, 30, {"adapter": "lora", "lora_r": 0}, None),  # rank 0: no method trains
    ]
    for metric, size, params, state in rows:
        d = {k: dists[k] for k in params}
        if state == "pruned":
            study.add_trial(create_trial(state=TrialState.PRUNED, params=params, distributions=d))
        else:
            study.add_trial(create_trial(values=[metric, size], params=params, distributions=d))
    got = [(g.name, g.trials, g.stopped) for g in figures.method_metrics(study)]
    assert got == [
        ("lora", [2], [4]),
        ("lora all-linear", [1], []),
        ("ia3", [3], []),
        ("none", [0, 5], []),
    ]
    assert [p.method for p in figures.pareto_info(study).points] == [
        "none",
        "lora all-linear",
        "lora",
        "ia3",
        "none",
    ]


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
    assert set(metric.values) == {"template", "lora_r", "learning_rate"}
    assert math.isclose(sum(metric.values.values()), 1.0)
    assert list(metric.values.values()) == sorted(metric.values.values(), reverse=True)
    assert metric.note == ""  # 27 trials: no small-study caveat
    # The count is set by the adapter's size alone: the template and the rate, which cannot
    # change it, are not ranked for it (PED-ANOVA ranked a rate first on the demo).
    assert params.values == {"lora_r": 1.0}
    assert params.note.startswith("only the parameters that set the count (lora_r)")
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
    assert set(params.values) == {"lora_r"}  # what sets the count (learning_rate never varied)
    assert "rough hint" in params.note
    assert set(metric.values) == set()

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


# --- successive halving: stopped trials, rungs, steps ------------------------------------------

T0 = datetime(2026, 1, 1, 12, 0, 0)


def _rung(rung: int, step: int, metric: float, peers: int, stopped: bool = False) -> dict:
    return {
        "rung": rung,
        "step": step,
        "fraction": None,
        "metric": metric,
        "eval_loss": 0.5,
        "trainable_params": 0,
        "peers": peers,
        "stopped": stopped,
    }


def _finished(
    study: optuna.Study,
    state: TrialState,
    template: str,
    lora_r: int,
    minute: int | None,
    values: list[float] | None = None,
    **attrs: Any,
) -> None:
    """One finished trial with its full ``params`` attribute, completed at T0 + minute."""
    params = _params(template, lora_r)
    full = {**{name: rule.default for name, rule in RULES.items()}, **params, "prompt_length": 0}
    trial = create_trial(
        state=state,
        values=values,
        distributions=DISTS,
        params=params,
        user_attrs={"params": full, "template_text": f"{template}: {{text}}", **attrs},
    )
    trial.datetime_complete = None if minute is None else T0 + timedelta(minutes=minute)
    study.add_trial(trial)


def _halving_study() -> optuna.Study:
    """Trials 0, 2, 7 completed (7 before pruning: no rungs); 1 and 3 stopped by successive
    halving; 4 repeats 2 and 5 repeats 1 (neither trained); 6 failed. Completion order:
    0, 1, 3, 2, 4, 5, 7."""
    C, P = TrialState.COMPLETE, TrialState.PRUNED
    study = _study([])
    steps = {"train_steps": 100, "planned_steps": 100}
    r01 = [_rung(0, 25, 0.5, 0), _rung(1, 75, 0.55, 0)]
    _finished(study, C, "plain", 0, 1, [0.6, 800], rungs=r01, coverage=True, **steps)
    stop1 = {"rung": 0, "step": 25, "of": 100, "metric": 0.3}
    _finished(
        study,
        P,
        "review",
        4,
        2,
        rungs=[_rung(0, 25, 0.3, 1, stopped=True)],
        pruned_at=stop1,
        train_steps=25,
        planned_steps=100,
        trainable_params=5_000,
    )
    r2 = [_rung(0, 25, 0.7, 2), _rung(1, 75, 0.72, 1)]
    _finished(study, C, "review", 4, 4, [0.75, 5_000], rungs=r2, **steps)
    _finished(
        study,
        P,
        "nli",
        8,
        3,
        rungs=[_rung(0, 20, 0.6, 2), _rung(1, 60, 0.62, 2, stopped=True)],
        pruned_at={"rung": 1, "step": 60, "of": 80, "metric": 0.62},
        train_steps=60,
        planned_steps=80,
        trainable_params=70_000,
    )
    repeat = {"train_steps": 0, "planned_steps": 0}
    _finished(study, C, "review", 4, 5, [0.75, 5_000], duplicate_of=2, **repeat)
    _finished(study, P, "review", 4, 6, duplicate_of=1, pruned_at=stop1, **repeat)
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "OOM"}))
    _finished(study, C, "plain", 0, 7, [0.7, 900], **steps)
    return study


def test_stopped_trials_carry_the_rung_that_stopped_them() -> None:
    info = figures.pruning_info(_halving_study())
    assert [s.trial for s in info.stopped] == [1, 3]  # not the repeat 5 nor the failed 6
    one, three = info.stopped
    assert (one.template, one.sizes, one.params) == (
        "review",
        {"prompt_length": 0, "lora_r": 4},
        5_000,
    )
    assert (one.rung, one.step, one.of, one.metric, one.peers) == (0, 25, 100, 0.3, 1)
    assert (three.template, three.rung, three.step, three.of) == ("nli", 1, 60, 80)
    assert (three.metric, three.peers) == (0.62, 2)
    assert three.rungs == [
        figures.RungScore(0, 20, 0.6, 2, False),
        figures.RungScore(1, 60, 0.62, 2, True),
    ]
    assert not one.coverage and three.config["lora_r"] == 8
    assert info.repeats == 1  # trial 5, a repeat of the stopped trial 1
    assert info.with_rungs == 4  # trials 0, 1, 2, 3; trial 7 ran before pruning


def test_each_rung_counts_the_trials_that_reached_it_and_those_it_stopped() -> None:
    rung0, rung1 = figures.pruning_info(_halving_study()).rungs
    assert rung0 == figures.RungSummary(0, 4, 1, (20, 25), [0.3, 0.5, 0.6, 0.7], 0.55)
    assert rung1 == figures.RungSummary(1, 3, 1, (60, 75), [0.55, 0.62, 0.72], 0.62)


def test_compute_saved_sums_steps_run_against_steps_planned() -> None:
    saved = figures.compute_saved(_halving_study())
    # Trained trials 0, 2, 7 ran 100 of 100 each; 1 ran 25 of 100, 3 ran 60 of 80; repeats none.
    assert saved == figures.ComputeSaved(5, 385, 480, pytest.approx(385 / 480), 95)


def test_compute_saved_falls_back_to_pruned_at_and_handles_old_studies() -> None:
    study = _study()  # no train_steps anywhere: nothing to count
    assert figures.compute_saved(study) == figures.ComputeSaved(0, 0, 0, None, 0)
    at = {"rung": 0, "step": 10, "of": 40, "metric": 0.1}
    _finished(study, TrialState.PRUNED, "nli", 0, 1, pruned_at=at, train_steps=10)
    assert figures.compute_saved(study) == figures.ComputeSaved(1, 10, 40, 0.25, 30)


def test_step_curves_run_through_the_rungs_to_the_end_or_the_stop() -> None:
    curves = figures.step_curves(_halving_study())
    assert [(c.trial, c.steps, c.metrics, c.stopped, c.pareto) for c in curves] == [
        (0, [25, 75, 100], [0.5, 0.55, 0.6], False, True),
        (1, [25], [0.3], True, False),
        (2, [25, 75, 100], [0.7, 0.72, 0.75], False, True),
        (3, [20, 60], [0.6, 0.62], True, False),
    ]  # 4 and 5 are repeats, 7 has no rungs
    assert [c.params for c in curves] == [800, 5_000, 5_000, 70_000]
    assert curves[3].template == "nli" and curves[3].config["learning_rate"] == 1e-3


def test_hypervolume_by_steps_follows_completion_order_and_counts_every_step() -> None:
    study = _halving_study()
    h = figures.hypervolume_by_steps(study)
    # Completion order 0, 1, 3, 2, 4, 5, 7: trial 3 finished before trial 2.
    assert h.steps == [100, 125, 185, 285, 285, 285, 385]
    assert h.reference == figures.history(study).reference == (0.0, 100_000.0)
    a = (5 - math.log10(800)) * 0.6
    b = a + (5 - math.log10(5_000)) * (0.75 - 0.6)
    c = b + (5 - math.log10(900)) * (0.7 - 0.6) - (5 - math.log10(5_000)) * (0.7 - 0.6)
    assert h.hypervolume == pytest.approx([a, a, a, b, b, b, c])
    assert h.hypervolume[-1] == pytest.approx(figures.history(study).hypervolume[-1])


def test_hypervolume_by_steps_on_a_stored_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    stored = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    stored.set_user_attr("base_params", 100_000)
    stored.add_trials(_halving_study().trials)
    loaded = optuna.load_study(study_name="s", storage=url)
    h = figures.hypervolume_by_steps(loaded)
    assert h.steps == [100, 125, 185, 285, 285, 285, 385]
    assert len(h.hypervolume) == 7 and h.hypervolume[-1] > h.hypervolume[0] > 0


def test_hypervolume_by_steps_without_recorded_steps_or_trials() -> None:
    empty = optuna.create_study(directions=["maximize", "minimize"])
    assert figures.hypervolume_by_steps(empty) == figures.StepsHistory([], [], (0.0, 1.0))
    study = _study(POINTS[:2])
    h = figures.hypervolume_by_steps(study)
    assert h.steps == [0, 0]  # trials from before steps were recorded: 0 each
    a = (5 - math.log10(800)) * 0.6
    b = a + (5 - math.log10(5_000)) * (0.75 - 0.6)
    assert h.hypervolume == pytest.approx([a, b]) == figures.history(study).hypervolume


def test_templates_leave_repeats_out_and_say_when_evidence_is_thin() -> None:
    groups = figures.template_metrics(_halving_study())
    rows = [(g.template, g.trials, g.metrics, g.stopped, g.note) for g in groups]
    assert rows == [
        ("review", [2], [0.75], [1], "too few to judge: 1 completed trial"),
        ("plain", [0, 7], [0.6, 0.7], [], "too few to judge: 2 completed trials"),
        (
            "nli",
            [],
            [],
            [3],
            "too few / too short to judge: 0 completed trials, 1 of 1 stopped early",
        ),
    ]


def test_a_template_mostly_stopped_early_is_too_short_to_judge() -> None:
    study = _study([(0.5 + i / 100, 100 + i, "plain") for i in range(3)])
    _add(study, 0.7, 100, "review")
    for i in range(3):
        _add(study, 0.6 + i / 100, 200 + i, "nli")
    at = {"rung": 0, "step": 5, "of": 20, "metric": 0.1}
    for minute in range(4):
        _finished(study, TrialState.PRUNED, "plain", 0, minute, pruned_at=at, train_steps=5)
    _finished(study, TrialState.PRUNED, "nli", 0, 9, pruned_at=at, train_steps=5)
    notes = {g.template: g.note for g in figures.template_metrics(study)}
    assert notes == {
        "plain": "too short to judge: 4 of 7 stopped early",
        "review": "too few to judge: 1 completed trial",
        "nli": "",  # 3 completed, 1 stopped
    }


def test_importances_use_complete_non_repeat_trials_and_say_what_was_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[list[list[float]]] = []
    real = optuna.importance.get_param_importances

    def spy(study: optuna.Study, **kwargs: Any) -> Any:
        seen.append([list(t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))])
        return real(study, **kwargs)

    monkeypatch.setattr(optuna.importance, "get_param_importances", spy)
    metric, params = figures.importances(_halving_study())
    # Trials 0, 2, 7 only: not the repeat 4 (a copy of 2), nor the stopped 1 and 3.
    assert seen == [[[0.6, 800], [0.75, 5_000], [0.7, 900]]] * 2
    for imp in (metric, params):
        assert "only 3 completed trials: a rough hint" in imp.note
        assert "computed on the 3 COMPLETE trials only" in imp.note
        assert "the 2 trials were stopped early by successive halving" in imp.note
        assert "1 repeated configuration counted once" in imp.note
    assert set(metric.values) == {"template", "lora_r"}


def test_importances_note_nothing_extra_without_pruned_trials_or_repeats() -> None:
    metric, _ = figures.importances(_study(POINTS[:1]))
    assert metric.note == "needs at least 2 completed trials"


def test_an_old_study_without_rung_records_still_reports_its_pruned_trials() -> None:
    study = _study()
    study.add_trial(create_trial(state=TrialState.PRUNED))  # no attributes at all
    data = figures.compute_report(study)
    assert data.pruning.with_rungs == 0 and data.pruning.rungs == []
    [bare] = data.pruning.stopped
    assert (bare.trial, bare.template, bare.rung, bare.step, bare.metric) == (
        5,
        None,
        None,
        None,
        None,
    )
    assert bare.rungs == [] and bare.params is None
    assert data.step_curves == []
    assert data.steps_history.steps == [0] * 6
    assert [g.stopped for g in data.templates] == [[], [], []]  # no template to attribute it to


def test_compute_report_carries_the_pruning_data() -> None:
    study = _halving_study()
    data = figures.compute_report(study)
    assert data.pruning == figures.pruning_info(study)
    assert data.step_curves == figures.step_curves(study)
    assert data.steps_history == figures.hypervolume_by_steps(study)


def test_a_coverage_trial_kept_at_a_rung_is_counted_as_protected() -> None:
    study = _study([])
    kept = {**_rung(0, 25, 0.2, 2), "protected": True}
    steps = {"train_steps": 100, "planned_steps": 100}
    _finished(study, TrialState.COMPLETE, "plain", 0, 1, [0.4, 50], rungs=[kept], coverage=True,
              **steps)  # fmt: skip
    _finished(study, TrialState.COMPLETE, "nli", 4, 2, [0.6, 900], rungs=[_rung(0, 25, 0.5, 1)],
              **steps)  # fmt: skip
    [curve, _] = figures.step_curves(study)
    assert curve.steps == [25, 100]
    [rung] = figures.pruning_info(study).rungs
    assert (rung.reached, rung.stopped, rung.protected) == (2, 0, 1)
    assert [r.protected for r in data_pruning._rung_scores(study.trials[0])] == [True]
