"""MO-ASHA in a study: rung records in the storage, decisions across handles and runs, pruned
trials told PRUNED, an unstopped trial unchanged by its rung evaluations, TPE steered by stopped
trials, coverage trials first and repeats not trained again."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from peftsearch.objectives.runner import TrialRunner
from peftsearch.searcher.pruners import MOASHA, RUNGS_ATTR
from peftsearch.searcher.study import open_study, run_study
from peftsearch.searcher.suggest import coverage_configs
from peftsearch.spaces import load_space
from tests.objectives.test_runner import params, write_space_file

PRUNER = {"type": "moasha", "min_fraction": 0.25, "reduction": 3, "min_trials": 2}


def _rung_trial(metric: float, loss: float, n: int, state: TrialState) -> Any:
    entry = {"rung": 0, "step": 5, "metric": metric, "eval_loss": loss, "trainable_params": n}
    values = [metric, n] if state == TrialState.COMPLETE else None
    return create_trial(state=state, values=values, user_attrs={RUNGS_ATTR: [entry]})


def _study(storage: Any = None, name: str = "s") -> Any:
    return optuna.create_study(
        study_name=name, storage=storage, directions=["maximize", "minimize"], load_if_exists=True
    )


# --- decisions from the storage ------------------------------------------------------------------


def test_a_trial_is_ranked_against_every_trial_that_reached_the_rung() -> None:
    study = _study()
    # Four peers with 1,000 params: two good (kept and complete), two at the majority class.
    for metric, loss, state in [
        (0.80, 0.4, TrialState.COMPLETE),
        (0.78, 0.5, TrialState.PRUNED),
        (0.58, 0.69, TrialState.PRUNED),
        (0.58, 0.70, TrialState.COMPLETE),
    ]:
        study.add_trial(_rung_trial(metric, loss, 1000, state))
    # A failed trial's rung record does not count: its retry reaches the rung again.
    study.add_trial(_rung_trial(0.99, 0.01, 10, TrialState.FAIL))
    pruner = MOASHA(reduction=3, min_trials=2)
    weak = study.ask()
    assert pruner.decide(study, weak, 0, 5, 0.58, 0.71, 1000) is True  # 5 at the rung: keep 2
    strong = study.ask()
    assert pruner.decide(study, strong, 0, 5, 0.81, 0.3, 1000) is False
    # The small one is never dominated on parameters: kept at the majority class.
    small = study.ask()
    assert pruner.decide(study, small, 0, 5, 0.58, 0.69, 50) is False
    rec = study.get_trials()[-1].user_attrs[RUNGS_ATTR]
    # small saw 4 peers + weak + strong (running trials that reached the rung count too)
    assert rec == [
        {
            "rung": 0,
            "step": 5,
            "fraction": None,
            "metric": 0.58,
            "eval_loss": 0.69,
            "trainable_params": 50,
            "peers": 6,
            "stopped": False,
        }
    ]


def test_ties_at_the_majority_class_are_broken_by_eval_loss() -> None:
    study = _study()
    for loss in (0.60, 0.65, 0.70):
        study.add_trial(_rung_trial(0.578, loss, 5000, TrialState.PRUNED))
    pruner = MOASHA(reduction=2, min_trials=2)
    lower = study.ask()
    assert pruner.decide(study, lower, 0, 5, 0.578, 0.50, 5000) is False
    higher = study.ask()
    assert pruner.decide(study, higher, 0, 5, 0.578, 0.68, 5000) is True


def test_decisions_hold_across_processes_sharing_a_storage(tmp_path: Path) -> None:
    """Two handles on one SQLite file (two workers, or two hosts on PostgreSQL): a rung
    recorded through one is a peer of a trial deciding through the other."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    one, two = _study(url), _study(url)
    pruner = MOASHA(reduction=2, min_trials=2)
    first = one.ask()
    assert pruner.decide(one, first, 0, 5, 0.9, 0.2, 100) is False  # alone: no evidence yet
    second = two.ask()
    assert pruner.decide(two, second, 0, 5, 0.6, 0.6, 100) is True
    (entry,) = optuna.load_study(study_name="s", storage=url).trials[1].user_attrs[RUNGS_ATTR]
    assert entry["peers"] == 1 and entry["stopped"] is True


def test_the_min_trials_guard_stops_nobody_early() -> None:
    study = _study()
    study.add_trial(_rung_trial(0.9, 0.1, 10, TrialState.COMPLETE))
    trial = study.ask()
    assert MOASHA(reduction=3).decide(study, trial, 0, 5, 0.1, 2.0, 10**6) is False  # 2 < 3


# --- TPE learns from stopped trials ----------------------------------------------------------


def _tpe_choices(told_as: TrialState) -> list[str]:
    """What TPE suggests after 4 trials of 'a' that were stopped (or failed) and 4 completed
    trials of 'b'."""
    study = _study()
    dist = {"x": CategoricalDistribution(["a", "b"])}
    for i in range(4):
        study.add_trial(create_trial(state=told_as, params={"x": "a"}, distributions=dist))
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                params={"x": "b"},
                distributions=dist,
                values=[0.6 + 0.05 * i, 1000 - 100 * i],
            )
        )
    study.sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=4, multivariate=True)
    out = []
    for _ in range(30):
        trial = study.ask()
        out.append(trial.suggest_categorical("x", ["a", "b"]))
        study.tell(trial, state=TrialState.FAIL)  # ignored by TPE: the history stays the same
    return out


def test_stopped_trials_steer_tpe_away_from_their_region() -> None:
    pruned = _tpe_choices(TrialState.PRUNED).count("a")
    failed = _tpe_choices(TrialState.FAIL).count("a")  # FAIL: TPE knows nothing of 'a'
    assert pruned < failed / 2, (pruned, failed)
    assert pruned <= 5


# --- in a real study --------------------------------------------------------------------------


@pytest.fixture
def space_file(tmp_path: Path, tiny_model: Path, sentiment_csv: Path) -> Path:
    return write_space_file(
        tmp_path,
        tiny_model,
        sentiment_csv,
        study={"n_trials": 8, "seed": 0, "pruner": PRUNER, "coverage": False},
    )


def test_a_study_stops_trials_at_rungs_and_records_why(space_file: Path, one_thread) -> None:
    space = load_space(space_file)
    outcome = run_study(space, show_progress=False)
    trials = open_study(space, create=False).trials
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len(trials) == 8
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [t.user_attrs.get(RUNGS_ATTR) for t in trials]
    assert outcome.counts.get("pruned") == len(pruned)
    for t in pruned:
        at = t.user_attrs["pruned_at"]
        rungs = t.user_attrs[RUNGS_ATTR]
        assert rungs[-1]["stopped"] is True and all(not e["stopped"] for e in rungs[:-1])
        assert at["step"] == rungs[-1]["step"] == t.user_attrs["train_steps"] < at["of"]
        assert at["of"] == t.user_attrs["planned_steps"] == 10  # 160 rows / 16, 1 epoch
        assert rungs[-1]["peers"] + 1 >= PRUNER["min_trials"]
        assert t.values is None and t.intermediate_values == {}
    for t in trials:
        if t.state == TrialState.COMPLETE:  # passed every rung: 0.25 and 0.75 of 10 steps
            assert [e["step"] for e in t.user_attrs[RUNGS_ATTR]] == [2, 8]
            assert t.user_attrs["train_steps"] == t.user_attrs["planned_steps"] == 10


def test_rung_evaluations_do_not_change_a_trial_that_goes_on(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    space = load_space(
        write_space_file(tmp_path, tiny_model, sentiment_csv, study={"pruner": PRUNER})
    )
    runner = TrialRunner(space)
    p = params(lora_r=2, prompt_length=2, learning_rate=2e-2, epochs=2, lora_dropout=0.1)
    seen: list[tuple[int, int]] = []

    def keep(rung: int, step: int, metric: float, loss: float, n: int) -> bool:
        seen.append((rung, step))
        assert 0 <= metric <= 1 and math.isfinite(loss) and n > 0
        return False

    judged = runner.run(p, on_rung=keep)
    plain = runner.run(p)
    assert seen == [(0, 5), (1, 15)]  # 0.25 and 0.75 of 20 steps
    assert judged.metric == plain.metric
    assert judged.attrs["train_loss_curve"] == plain.attrs["train_loss_curve"]
    assert judged.attrs["eval_loss"] == pytest.approx(plain.attrs["eval_loss"], abs=1e-9)
    stopped = runner.run(p, on_rung=lambda rung, *a: rung == 1)
    assert stopped.pruned and stopped.attrs["train_steps"] == 15
    assert stopped.attrs["planned_steps"] == 20


def test_a_pruned_slot_of_a_pack_is_refilled_and_the_budget_is_exact(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, one_thread
) -> None:
    path = write_space_file(
        tmp_path,
        tiny_model,
        sentiment_csv,
        study={"n_trials": 7, "seed": 3, "pack": 3, "pruner": PRUNER, "coverage": False},
    )
    space = load_space(path)
    run_study(space, show_progress=False)
    trials = open_study(space, create=False).trials
    states = [t.state for t in trials]
    assert len(trials) == 7 and TrialState.PRUNED in states
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
    # A resumed run with a larger budget judges new trials against the first run's rungs.
    space2 = load_space(path, {"study.n_trials": 9})
    run_study(space2, show_progress=False)
    later = open_study(space2, create=False).trials[7:]
    assert len(later) == 2
    assert all(t.user_attrs[RUNGS_ATTR][0]["peers"] >= 7 for t in later)


# --- coverage and repeats -------------------------------------------------------------------


def test_coverage_spans_the_size_classes_of_the_space(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    space = load_space(write_space_file(tmp_path, tiny_model, sentiment_csv))
    configs = coverage_configs(space)
    sizes = [(c["lora_r"], c["prompt_length"]) for c in configs]
    assert sizes == [(2, 0), (4, 0), (0, 0), (0, 2)]
    assert [c["template"] for c in configs] == ["plain", "review", "plain", "review"]
    # Three templates and ranks 1..16: a LoRA trial per template, then the head and a prompt.
    three = load_space(
        write_space_file(
            tmp_path,
            tiny_model,
            sentiment_csv,
            name="three.yaml",
            templates={"a": "{text}", "b": "b: {text}", "c": "c: {text}"},
            params={
                "lora_r": {"type": "categorical", "choices": [0, 1, 2, 4, 8, 16]},
                "prompt_length": {"type": "categorical", "choices": [0, 4, 16]},
            },
        )
    )
    got = [(c["template"], c["lora_r"], c["prompt_length"]) for c in coverage_configs(three)]
    assert got == [("a", 1, 0), ("b", 16, 0), ("c", 4, 0), ("a", 0, 0), ("b", 0, 16)]
    lr = math.sqrt(1e-3 * 3e-2)
    assert all(c["learning_rate"] == pytest.approx(lr) for c in configs)


def test_the_first_trials_of_a_study_are_the_coverage_trials_and_repeats_are_not_trained(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, one_thread
) -> None:
    path = write_space_file(
        tmp_path,
        tiny_model,
        sentiment_csv,
        params={"template": "plain", "lora_r": {"type": "categorical", "choices": [0, 2]}},
        study={"n_trials": 6, "seed": 0, "pruner": "none", "coverage": True},
    )
    space = load_space(path)
    run_study(space, show_progress=False)
    trials = open_study(space, create=False).trials
    assert [t.params["lora_r"] for t in trials[:2]] == [2, 0]  # LoRA first, then the head
    assert all(t.user_attrs.get("coverage") for t in trials[:2])
    # Only two configurations exist: every later trial repeats one and trains nothing.
    for t in trials[2:]:
        of = trials[t.user_attrs["duplicate_of"]]
        assert t.params == of.params and t.values == of.values
        assert t.user_attrs["train_steps"] == 0 and "train_loss_curve" not in t.user_attrs
    from peftsearch.reports.trials import front_trials

    front = front_trials(open_study(space, create=False))
    assert all("duplicate_of" not in t.user_attrs for t in front) and front


def test_a_protected_trial_is_ranked_but_goes_on() -> None:
    study = _study()
    for loss in (0.3, 0.4, 0.5):
        study.add_trial(_rung_trial(0.9, loss, 10, TrialState.COMPLETE))
    trial = study.ask()
    pruner = MOASHA(reduction=3)
    assert pruner.decide(study, trial, 0, 5, 0.5, 0.7, 1000, protect=True) is False
    (entry,) = study.get_trials()[-1].user_attrs[RUNGS_ATTR]
    assert entry["protected"] is True and entry["stopped"] is False
    other = study.ask()
    assert pruner.decide(study, other, 0, 5, 0.5, 0.7, 1000) is True  # the same, unprotected


def test_coverage_trials_are_ranked_but_never_stopped_in_a_study(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, one_thread
) -> None:
    harsh = {"type": "moasha", "min_fraction": 0.25, "reduction": 100, "min_trials": 1}
    path = write_space_file(
        tmp_path,
        tiny_model,
        sentiment_csv,
        study={"n_trials": 8, "seed": 0, "pruner": harsh, "coverage": True},
    )
    space = load_space(path)
    run_study(space, show_progress=False)
    trials = open_study(space, create=False).trials
    cover = [t for t in trials if t.user_attrs.get("coverage")]
    assert len(cover) == 4 and all(t.state == TrialState.COMPLETE for t in cover)
    # Only the top trial of each rung would go on: coverage trials were kept anyway...
    assert any(e.get("protected") for t in cover for e in t.user_attrs[RUNGS_ATTR])
    # ...and the sampler's trials were judged as usual.
    assert any(t.state == TrialState.PRUNED for t in trials if not t.user_attrs.get("coverage"))


def test_studies_of_consecutive_seeds_do_not_share_suggestions(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    """The sampler seed is the study seed spread apart plus the trials so far: study 1's
    first random draw is not study 0's second (which a plain seed + n gave)."""
    from peftsearch.searcher.samplers import make_sampler

    path = write_space_file(tmp_path, tiny_model, sentiment_csv, study={"sampler": "random"})

    def draws(seed: int, n_existing: int) -> list[float]:
        space = load_space(path, {"study.seed": seed})
        study = _study()
        study.sampler = make_sampler(space, n_existing)
        return [study.ask().suggest_float("x", 0, 1) for _ in range(3)]

    assert draws(1, 0) != draws(0, 1)
    assert draws(0, 1) == draws(0, 1)  # still deterministic


def test_a_searched_method_is_a_conditional_space_and_coverage_spans_the_methods(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, one_thread
) -> None:
    """`adapter` searched: each method's parameters are asked only in its own trials
    (define-by-run), the coverage trials try every method once, TPE groups the subspaces."""
    path = write_space_file(
        tmp_path,
        tiny_model,
        sentiment_csv,
        params={
            "template": "plain",
            "adapter": {"type": "categorical", "choices": ["lora", "ia3", "none"]},
            "lora_r": {"type": "categorical", "choices": [2, 4]},
            "use_rslora": {"type": "categorical", "choices": [False, True]},
            "ia3_learning_rate": {"type": "float", "low": 1e-2, "high": 1e-1, "log": True},
            "prompt_length": 0,
            "learning_rate": 1e-2,
        },
        study={"n_trials": 8, "seed": 0, "pruner": "none", "coverage": True},
    )
    space = load_space(path)
    configs = coverage_configs(space)
    assert [(c["adapter"], c.get("lora_r")) for c in configs] == [
        ("lora", 2),
        ("lora", 4),
        ("ia3", None),
        ("none", None),  # the head alone: lora_r has no 0 to stand for it
    ]
    assert configs[2]["ia3_learning_rate"] == pytest.approx(math.sqrt(1e-2 * 1e-1))
    run_study(space, show_progress=False)
    study = open_study(space, create=False)
    from peftsearch.searcher import make_sampler

    assert make_sampler(space)._group  # TPE models each method's parameters as a group
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    for t in trials:
        method = t.params["adapter"]
        asked = set(t.params) - {"adapter"}
        if method == "lora":
            assert asked == {"lora_r", "use_rslora"}
        elif method == "ia3":
            assert asked == {"ia3_learning_rate"}
        else:
            assert asked == set()
    methods = [t.params["adapter"] for t in trials]
    assert methods[:4] == ["lora", "lora", "ia3", "none"]  # coverage: half the budget
    ia3 = next(t for t in trials if t.params["adapter"] == "ia3")
    assert ia3.values[1] == 2 * 5 * 16 + 34  # IA3 vectors (see test_packed) + the head


def test_coverage_spans_the_placements_and_rank_0_asks_none(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, one_thread
) -> None:
    """`target_modules` searched beside `lora_r` with a 0: the coverage trials put the
    smallest rank on the first placement and the largest on the last; a rank-0 trial (no LoRA)
    is not asked where LoRA goes; TPE groups the conditional parameters."""
    path = write_space_file(
        tmp_path,
        tiny_model,
        sentiment_csv,
        params={
            "template": "plain",
            "lora_r": {"type": "categorical", "choices": [0, 1, 2, 4]},
            "target_modules": {"type": "categorical", "choices": ["default", "all-linear"]},
            "prompt_length": 0,
            "learning_rate": 1e-2,
        },
        study={"n_trials": 6, "seed": 0, "pruner": "none", "coverage": True},
    )
    space = load_space(path)
    configs = coverage_configs(space)
    assert [(c["lora_r"], c.get("target_modules")) for c in configs] == [
        (1, "default"),
        (4, "all-linear"),
        (0, None),  # the head alone: nothing to place
    ]
    from peftsearch.searcher import make_sampler
    from peftsearch.searcher.suggest import conditional

    assert conditional(space) and make_sampler(space)._group
    fixed_r = load_space(path, {"params.lora_r": 2})
    assert not conditional(fixed_r) and coverage_configs(fixed_r) == []
    run_study(space, show_progress=False)
    trials = [t for t in open_study(space, create=False).trials if t.values]
    assert all(("target_modules" in t.params) == (t.params["lora_r"] > 0) for t in trials)
    size = {(t.params["lora_r"], t.params.get("target_modules")): t.values[1] for t in trials}
    # all-linear adapts more layers than query/value: more than 4x r 1's LoRA parameters
    head = size[(0, None)]
    assert size[(4, "all-linear")] - head > 4 * (size[(1, "default")] - head)
