"""The study loop against real SQLite: end to end, resume, failures, interruption, dead workers."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from peftsearch.objectives.runner import TrialRunner
from peftsearch.searcher import counts_toward_budget, open_study, run_study, storage
from peftsearch.spaces import load_space
from tests.conftest import run_cli

ATTRS = {
    "template_text",
    "trainable_params",
    "trainable_pct",
    "train_seconds",
    "eval_seconds",
    "train_loss_curve",
    "eval_loss",
    "peak_gpu_memory_bytes",
    "seed",
    "versions",
}


def _trials(space_path: Path) -> list[optuna.trial.FrozenTrial]:
    return open_study(load_space(space_path), create=False).get_trials()


def test_cli_run_end_to_end(write_space) -> None:
    path = write_space()
    out = path.parent / "out"
    proc = run_cli("run", str(path), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    trials = _trials(path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t in trials:
        assert len(t.values) == 2
        assert 0.0 <= t.values[0] <= 1.0
        assert t.values[1] == t.user_attrs["trainable_params"] > 0
        assert set(t.user_attrs) >= ATTRS, ATTRS - set(t.user_attrs)
        assert all(math.isfinite(x) for x in t.user_attrs["train_loss_curve"])
        assert set(t.params) == {"template", "prompt_length", "lora_r", "learning_rate"}
    study = open_study(load_space(path), create=False)
    front = {t.number for t in study.best_trials}
    with (out / "pareto.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {int(r["trial"]) for r in rows} == front
    assert "Pareto front" in proc.stdout and str(out / "pareto.csv") in proc.stdout
    split = json.loads((out / "splits.json").read_text())
    assert set(split["rows"]) >= {"train", "validation", "test", "trial_train", "trial_eval"}
    assert study.user_attrs["fixed_params"]["batch_size"] == 16


def test_resume_runs_only_the_missing_trials(write_space) -> None:
    path = write_space()
    assert run_cli("run", str(path), "--no-progress").returncode == 0
    first = [(t.number, t.params, t.values) for t in _trials(path)]
    proc = run_cli("run", str(path), "--no-progress", "--n-trials", "5")
    assert proc.returncode == 0, proc.stderr
    trials = _trials(path)
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    assert [(t.number, t.params, t.values) for t in trials[:3]] == first
    again = run_cli("run", str(path), "--no-progress", "--n-trials", "5")
    assert again.returncode == 0 and len(_trials(path)) == 5


def test_same_seed_same_study(tmp_path, write_space) -> None:
    a = write_space("a.yaml", output=str(tmp_path / "a"))
    b = write_space("b.yaml", output=str(tmp_path / "b"))
    outcomes = [run_study(load_space(p), show_progress=False) for p in (a, b)]
    assert all(o.counts == {"complete": 3} for o in outcomes)
    ta, tb = _trials(a), _trials(b)
    assert [(t.params, t.values) for t in ta] == [(t.params, t.values) for t in tb]


class _Flaky(TrialRunner):
    """A real runner that raises ``exc`` on the call numbered ``fail_on`` (0-based)."""

    def __init__(self, space, fail_on: int, exc: BaseException) -> None:
        super().__init__(space)
        self.calls, self.fail_on, self.exc = 0, fail_on, exc

    def run(self, params, on_step=None):
        self.calls += 1
        if self.calls - 1 == self.fail_on:
            raise self.exc
        return super().run(params, on_step)


def test_a_failing_trial_is_recorded_and_the_study_goes_on(write_space) -> None:
    space = load_space(write_space())
    outcome = run_study(space, _Flaky(space, 1, RuntimeError("boom: bad things")), False)
    trials = _trials(space.file)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["fail_reason"] == "RuntimeError: boom: bad things"
    assert "Traceback" in trials[1].user_attrs["fail_traceback"]
    assert outcome.counts == {"complete": 2, "fail": 1}
    assert all(counts_toward_budget(t) for t in trials)


def test_interrupted_trial_is_not_counted_and_reruns_on_resume(write_space) -> None:
    space = load_space(write_space())
    outcome = run_study(space, _Flaky(space, 1, KeyboardInterrupt()), False)
    assert outcome.interrupted
    trials = _trials(space.file)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["interrupted"] is True
    assert not counts_toward_budget(trials[1])
    outcome = run_study(space, show_progress=False)
    trials = _trials(space.file)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 3 and not outcome.interrupted
    retry = trials[2]
    assert retry.user_attrs["retry_of"] == 1 and retry.params == trials[1].params


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_dead_workers_trial_is_failed_retried_and_not_lost(
    write_space, monkeypatch, kind
) -> None:
    """kill -9 leaves a RUNNING trial with no heartbeat; the next run fails and retries it."""
    monkeypatch.setattr(storage, "GRACE_SECONDS", 1)
    monkeypatch.setattr(storage, "HEARTBEAT_SECONDS", 1)
    space = load_space(write_space())
    space.output_dir.mkdir(parents=True)
    if kind == "journal":  # the storage of `search run --workers N`, found without --storage
        (space.output_dir / storage.JOURNAL_NAME).touch()
        assert storage.resolve_url(space).startswith("journal://")
    study = open_study(space)
    choices = optuna.distributions.CategoricalDistribution(["plain", "review"])
    zombie = study.ask({"template": choices})
    study._storage.record_heartbeat(zombie._trial_id)  # it beat once, then its process died
    time.sleep(2.5)
    run_study(space, show_progress=False)
    trials = _trials(space.file)
    assert trials[0].state == TrialState.FAIL and not counts_toward_budget(trials[0])
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params["template"] == zombie.params["template"]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


def test_bad_storage_url_is_a_user_error_without_password(write_space) -> None:
    path = write_space()
    proc = run_cli("run", str(path), "--storage", "postgresql://me:s3cret-pw@127.0.0.1:1/db")
    assert proc.returncode == 2
    assert "s3cret-pw" not in proc.stdout + proc.stderr
    assert "***" in proc.stderr and "study.storage" in proc.stderr


def test_mask_url() -> None:
    assert storage.mask_url("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert storage.mask_url("sqlite:///x/study.db") == "sqlite:///x/study.db"
    assert storage.display_url("journal:///x/study.journal") == "/x/study.journal"


def test_heartbeat_settings_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("PEFTSEARCH_HEARTBEAT_SECONDS", "2")
    assert storage._env_seconds("PEFTSEARCH_HEARTBEAT_SECONDS", 10) == 2
    monkeypatch.setenv("PEFTSEARCH_HEARTBEAT_SECONDS", "soon")
    with pytest.raises(ValueError, match="PEFTSEARCH_HEARTBEAT_SECONDS.*whole number"):
        storage._env_seconds("PEFTSEARCH_HEARTBEAT_SECONDS", 10)
    monkeypatch.delenv("PEFTSEARCH_HEARTBEAT_SECONDS")
    assert storage._env_seconds("PEFTSEARCH_HEARTBEAT_SECONDS", 10) == 10


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random", "grid"])
def test_every_sampler_runs(write_space, sampler) -> None:
    params = {
        "template": {"type": "categorical", "choices": ["plain", "review"]},
        "lora_r": {"type": "categorical", "choices": [0, 2]},
        "learning_rate": 1e-2,
    }
    space = load_space(write_space(params=params, study={"n_trials": 2, "sampler": sampler}))
    outcome = run_study(space, show_progress=False)
    assert outcome.counts == {"complete": 2}
    assert type(open_study(space, create=False).sampler).__name__ != ""  # study reloads


def test_changed_space_or_split_warns_on_resume(write_space, capsys) -> None:
    path = write_space(study={"n_trials": 1})
    run_study(load_space(path), show_progress=False)
    assert "differ" not in capsys.readouterr().err
    run_study(load_space(path, {"study.n_trials": 2}), show_progress=False)
    assert "differ" not in capsys.readouterr().err  # a bigger budget is not a change
    space = load_space(path, {"study.n_trials": 3, "params.batch_size": 8, "data.split.seed": 1})
    run_study(space, show_progress=False)
    err = capsys.readouterr().err
    assert "params differ from the search space" in err
    assert "data split differs" in err


def test_timeout_stops_starting_new_trials(write_space) -> None:
    space = load_space(write_space(study={"n_trials": 50, "timeout": 1e-9}))
    outcome = run_study(space, show_progress=False)
    assert outcome.stopped_by_timeout
    assert outcome.counts == {}  # the budget was spent before the first trial could start
    assert (space.output_dir / "pareto.csv").exists()


def test_the_objectives_have_their_names_in_the_storage(write_space) -> None:
    """optuna-dashboard and `optuna.load_study` show the metric's name and
    "trainable_params", not "Objective 0 / 1"."""
    space = load_space(write_space(objectives={"metric": "f1", "metric_kwargs": {"pos_label": 1}}))
    storage.sqlite_path(storage.resolve_url(space)).parent.mkdir(parents=True)
    study = open_study(space)
    assert study.metric_names == ["f1", "trainable_params"]
    again = optuna.load_study(study_name=space.study_name, storage=storage.resolve_url(space))
    assert again.metric_names == ["f1", "trainable_params"]
