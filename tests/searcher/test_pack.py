"""`study.pack`: the study loop keeps several trials in one batched engine, asks for them
together, tells each as it finishes, and loses none to Ctrl-C. Plus the per-trial bookkeeping
made cheap for short trials (one upsert for all attributes, the front without deep copies)."""

from __future__ import annotations

import os
import random
import signal
import time

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState, create_trial

from peftsearch.searcher import counts_toward_budget, open_study, run_study
from peftsearch.searcher import outcome as outcome_mod
from peftsearch.searcher import packs as packs_mod
from peftsearch.searcher.progress import StudyProgress
from peftsearch.searcher.storage import open_storage, set_user_attrs
from peftsearch.searcher.study import front_summary, pack_size, report_due
from peftsearch.spaces import load_space
from tests.conftest import run_cli
from tests.searcher.test_crash import (
    SLOW_PARAMS,
    assert_no_duplicate_runs,
    figures,
    start_cli,
    trials_of,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _study(space):
    return [(t.number, t.state, t.params, t.values) for t in open_study(space, create=False).trials]


def test_a_packed_study_equals_the_unpacked_one(write_space) -> None:
    """Same seed: the same trials (asked together, sampled as if one by one) with the same
    results, and exactly n_trials of them."""
    packed = load_space(write_space("packed.yaml", study={"n_trials": 5, "seed": 0, "pack": 3}))
    alone = load_space(write_space("alone.yaml", study={"n_trials": 5, "seed": 0, "pack": 1}))
    assert pack_size(packed) == 3 and pack_size(alone) == 1
    out = run_study(packed, show_progress=False)
    run_study(alone, show_progress=False)
    assert out.counts == {"complete": 5}
    got, want = _study(packed), _study(alone)
    assert [g[:3] for g in got] == [w[:3] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g[3][1] == w[3][1]  # trainable parameters
        assert g[3][0] == pytest.approx(w[3][0], abs=1e-9)  # the metric
    trials = open_study(packed, create=False).trials
    sizes = [t.user_attrs["pack_size"] for t in trials]
    assert max(sizes) > 1  # they really trained together
    assert all(t.user_attrs["pack_size"] == 1 for t in open_study(alone, create=False).trials)


def test_two_workers_each_with_a_pack_run_exactly_n_trials(write_space) -> None:
    from peftsearch.searcher.workers import run_workers

    # Trials of 1-2 s: with instant ones, a worker that loads its model first can
    # take the whole budget before the other is ready (seen once in a combined run).
    space = load_space(write_space(params=SLOW_PARAMS, study={"n_trials": 6, "seed": 0, "pack": 2}))
    outcome = run_workers(space, workers=2, show_progress=False)
    assert outcome.counts == {"complete": 6}
    trials = open_study(space, create=False).trials
    seen = [(t.number, t.user_attrs["worker"]["pid"], t.user_attrs["pack_size"]) for t in trials]
    assert len({pid for _, pid, _ in seen}) == 2, seen
    assert max(size for _, _, size in seen) == 2, seen


def test_auto_is_one_trial_at_a_time_on_cpu(write_space) -> None:
    space = load_space(write_space())  # no study.pack: auto
    assert space.study.pack == "auto"
    assert pack_size(space) == 1  # the tiny space runs on CPU here
    space.model.device = "cuda"
    assert pack_size(space) == packs_mod.AUTO_PACK_CUDA


def test_pack_flag_overrides_the_space_file(write_space) -> None:
    path = write_space(study={"n_trials": 2, "seed": 0, "pack": 1})
    ran = run_cli("run", str(path), "--no-progress", "--pack", "2")
    assert ran.returncode == 0, ran.stderr
    trials = open_study(load_space(path), create=False).trials
    assert [t.user_attrs["pack_size"] for t in trials] == [2, 2]
    bad = run_cli("run", str(path), "--pack", "0")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        f"error: {path}: study.pack: must be a whole number from 1 to 256, or auto (got 0)"
    )


def test_ctrl_c_of_a_packed_run_marks_every_trial_in_flight_and_resumes(write_space) -> None:
    path = write_space(params=SLOW_PARAMS, study={"n_trials": 5, "seed": 0, "pack": 3})
    space = load_space(path)
    proc = start_cli("run", str(path), "--no-progress")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # trials 3 and 4 train together after the first three
        trials = trials_of(space)
        if (
            sum(t.state == TrialState.COMPLETE for t in trials) == 3
            and sum(t.state == TrialState.RUNNING and "params" in t.user_attrs for t in trials) == 2
        ):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    before = trials_of(space)
    marked = [t for t in before if t.user_attrs.get("interrupted")]
    assert [t.number for t in marked] == [3, 4], err
    assert all(t.state == TrialState.FAIL and not counts_toward_budget(t) for t in marked)
    assert not [t for t in before if t.state == TrialState.RUNNING]
    queued = [t for t in before if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs["retry_of"] for t in queued) == [3, 4]

    again = run_cli("run", str(path), "--no-progress")
    assert again.returncode == 0, again.stderr
    trials = trials_of(space)
    for m in marked:
        (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == m.number]
        assert retry.state == TrialState.COMPLETE and retry.params == m.params
    assert sum(map(counts_toward_budget, trials)) == 5
    assert_no_duplicate_runs(trials)
    got = figures(trials, before)
    print(f"\nCtrl-C of `search run --pack 3` with two trials in flight, then re-run: {got}")
    assert got == {"started": 7, "completed": 5, "retried": 2, "lost": 0}


# -- bookkeeping --------------------------------------------------------------------------------


def test_front_summary_is_optunas_front() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(0)
    for _ in range(200):
        study = optuna.create_study(directions=["maximize", "minimize"])
        for _ in range(rng.randint(0, 25)):  # few distinct values: many ties and duplicates
            metric, params = rng.choice([0.5, 0.6, 0.7, 0.8]), rng.choice([10, 20, 30, 40])
            study.add_trial(create_trial(values=[metric, params]))
        if rng.random() < 0.5:
            study.add_trial(create_trial(state=TrialState.FAIL))
        best = study.best_trials
        expected = (max((t.values[0] for t in best), default=None), len(best))
        assert front_summary(study.trials) == expected


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_set_user_attrs_writes_them_all_and_refuses_finished_trials(tmp_path, kind) -> None:
    urls = {
        "sqlite": f"sqlite:///{tmp_path / 'a.db'}",
        "journal": f"journal:///{tmp_path / 'a.journal'}",
        "postgresql": os.environ.get("PEFTSEARCH_TEST_POSTGRES_URL"),
    }
    url = urls[kind]
    if url is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs PostgreSQL: PEFTSEARCH_TEST_POSTGRES_URL is not set")
        pytest.skip('no PostgreSQL: eval "$(tests/pg.sh start)" to run these')
    study = optuna.create_study(
        storage=open_storage(url),
        directions=["maximize", "minimize"],
        study_name=f"attrs-{tmp_path.name}",
    )
    trial = study.ask()
    trial.set_user_attr("kept", 1)
    trial.set_user_attr("replaced", "old")
    attrs = {"replaced": "new", "curve": [0.5, 0.25], "nested": {"a": None}, "n": 3}
    set_user_attrs(study, trial, attrs)
    assert study.trials[0].user_attrs == {"kept": 1, **attrs}
    set_user_attrs(study, trial, {})  # nothing to write: fine
    study.tell(trial, [0.5, 10])
    with pytest.raises(UpdateFinishedTrialError):
        set_user_attrs(study, trial, {"late": 1})


def test_report_refresh_waits_for_trials_and_time(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(outcome_mod.time, "monotonic", lambda: now[0])
    last = 1000.0 - outcome_mod.REPORT_MIN_SECONDS
    assert report_due(outcome_mod.REPORT_EVERY, last)
    assert not report_due(outcome_mod.REPORT_EVERY - 1, last)  # too few trials
    assert not report_due(100, now[0] - 1)  # too soon


def test_the_display_has_a_bar_per_trial_in_flight() -> None:
    prog = StudyProgress(total=4, done=0, metric="accuracy", enabled=False)
    with prog:
        prog.trial_started(0, "plain | r 2")
        prog.trial_started(1, "review | r 4")
        prog.trial_step(0, 3, 10)
        prog.trial_step(1, 5, 20)
        bars = {t.description: (t.completed, t.total) for t in prog._progress.tasks}
        assert bars["trial 0"] == (3, 10) and bars["trial 1"] == (5, 20)
        prog.trial_finished("trial 0: done", 1, 0.7, 1, 0)
        assert [t.description for t in prog._progress.tasks] == ["trials", "trial 1"]
        assert prog._progress.tasks[0].completed == 1
