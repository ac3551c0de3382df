"""Crash safety for real: `search run` in a subprocess, killed (SIGKILL) or interrupted (SIGINT)
while a trial is RUNNING, then run again. Nothing completed is lost or run twice, the dead
trial is retried, and the budget comes out exact.

Trials are made slow enough to catch mid-trial with ordinary parameters (several epochs on the
tiny model), and the heartbeat is shortened through the documented environment variables.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from peftsearch.errors import UserError
from peftsearch.searcher import counts_toward_budget, open_study
from peftsearch.searcher.storage import resolve_url, sqlite_path
from peftsearch.spaces import load_space
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

FAST_HEARTBEAT = {"PEFTSEARCH_HEARTBEAT_SECONDS": "1", "PEFTSEARCH_GRACE_SECONDS": "3"}
SLOW_PARAMS = {  # about 1.5 s a trial on the tiny model: long enough to be caught running
    "template": {"type": "categorical", "choices": ["plain", "review"]},
    "lora_r": {"type": "categorical", "choices": [0, 2, 4]},
    "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
    "epochs": 60,
    "batch_size": 16,
}
# One CPU thread per process: the tiny model trains fastest that way, and trial times stay
# steady on a busy machine (torch's default, a thread per core, fights other processes).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def start_cli(*args: str) -> subprocess.Popen:
    """``search ARGS`` in the background (the real entry point), output captured."""
    env = {**os.environ, **FAST_HEARTBEAT, **ONE_THREAD}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.Popen(
        [sys.executable, "-m", "peftsearch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def trials_of(space: Any) -> list[optuna.trial.FrozenTrial]:
    """The study's trials as the storage has them now ([] before the study exists)."""
    db = sqlite_path(resolve_url(space))
    if db is not None and not db.exists():
        return []  # opening would create the file before the run does
    try:
        return open_study(space, create=False).get_trials()
    except UserError:
        return []


def wait_for_running(space: Any, proc: subprocess.Popen, timeout: float = 60) -> Any:
    """Poll the storage until, after at least one completed trial, a trial has been RUNNING
    for half a second (so it is well into training); returns that trial."""
    deadline = time.monotonic() + timeout
    seen: dict[int, float] = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        trials = trials_of(space)
        if any(t.state == TrialState.COMPLETE for t in trials):
            for t in trials:
                if t.state == TrialState.RUNNING and "params" in t.user_attrs:
                    seen.setdefault(t.number, time.monotonic())
                    if time.monotonic() - seen[t.number] > 0.5:
                        return t
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no trial caught running: {proc.communicate()}")


def figures(trials: list[Any], before: list[Any]) -> dict[str, int]:
    """started (every trial that ran), completed, retried (trials re-running a dead or
    interrupted one), lost (trials complete before the crash and not complete after)."""
    now = {t.number: t for t in trials}
    lost = [
        b.number
        for b in before
        if b.state == TrialState.COMPLETE
        and (
            now.get(b.number) is None
            or now[b.number].state != TrialState.COMPLETE
            or now[b.number].values != b.values
        )
    ]
    return {
        "started": sum(t.state != TrialState.WAITING for t in trials),
        "completed": sum(t.state == TrialState.COMPLETE for t in trials),
        "retried": sum(
            "failed_trial" in t.system_attrs or "retry_of" in t.user_attrs for t in trials
        ),
        "lost": len(lost),
    }


def assert_no_duplicate_runs(trials: list[Any]) -> None:
    """Each dead or interrupted trial is re-run by exactly one counting trial."""
    origins = [
        t.system_attrs.get("failed_trial", t.user_attrs.get("retry_of"))
        for t in trials
        if counts_toward_budget(t)
    ]
    origins = [o for o in origins if o is not None]
    assert len(origins) == len(set(origins)), origins


def test_kill_9_mid_trial_is_retried_and_nothing_is_lost(write_space, monkeypatch) -> None:
    path = write_space(params=SLOW_PARAMS, study={"n_trials": 3, "seed": 0})
    space = load_space(path)
    proc = start_cli("run", str(path), "--no-progress")
    victim = wait_for_running(space, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = trials_of(space)
    assert proc.returncode == -signal.SIGKILL
    assert [t.number for t in before if t.state == TrialState.RUNNING] == [victim.number]

    for key, value in FAST_HEARTBEAT.items():
        monkeypatch.setenv(key, value)
    again = run_cli("run", str(path), "--no-progress")
    assert again.returncode == 0, again.stderr
    trials = trials_of(space)
    dead = next(t for t in trials if t.number == victim.number)
    assert dead.state == TrialState.FAIL and not counts_toward_budget(dead)
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == dead.params
    assert sum(map(counts_toward_budget, trials)) == 3
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert_no_duplicate_runs(trials)
    got = figures(trials, before)
    print(f"\nkill -9 of `search run` mid-trial, then re-run: {got}")
    assert got == {"started": 4, "completed": 3, "retried": 1, "lost": 0}


def test_ctrl_c_mid_trial_exits_130_marks_the_trial_and_resumes(write_space) -> None:
    path = write_space(params=SLOW_PARAMS, study={"n_trials": 3, "seed": 0})
    space = load_space(path)
    proc = start_cli("run", str(path), "--no-progress")
    victim = wait_for_running(space, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "resume" in err
    before = trials_of(space)
    marked = next(t for t in before if t.number == victim.number)
    assert marked.state == TrialState.FAIL and marked.user_attrs["interrupted"] is True
    assert not counts_toward_budget(marked)
    assert not [t for t in before if t.state == TrialState.RUNNING]  # the storage is consistent
    queued = [t for t in before if t.state == TrialState.WAITING]
    assert [t.user_attrs["retry_of"] for t in queued] == [victim.number]
    assert (space.output_dir / "pareto.csv").exists()

    again = run_cli("run", str(path), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    trials = trials_of(space)
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.params == marked.params
    assert sum(map(counts_toward_budget, trials)) == 3
    assert_no_duplicate_runs(trials)
    got = figures(trials, before)
    print(f"\nCtrl-C of `search run` mid-trial, then re-run: {got}")
    assert got == {"started": 4, "completed": 3, "retried": 1, "lost": 0}


def test_ctrl_c_stops_parallel_workers_cleanly(write_space) -> None:
    """`--workers 2` (journal storage): one Ctrl-C to the parent; every running trial is
    marked, nothing stays RUNNING, exit 130; the same command finishes the budget."""
    path = write_space(params=SLOW_PARAMS, study={"n_trials": 3, "seed": 0})
    space = load_space(path)
    proc = start_cli("run", str(path), "--no-progress", "--workers", "2")
    wait_for_running(space, proc, timeout=90)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    before = trials_of(space)
    assert not [t for t in before if t.state == TrialState.RUNNING]
    marked = [t for t in before if t.user_attrs.get("interrupted")]
    assert marked and all(t.state == TrialState.FAIL for t in marked)
    assert (space.output_dir / "study.journal").exists()
    assert not (space.output_dir / "study.db").exists()

    again = run_cli("run", str(path), "--no-progress", "--workers", "2")
    assert again.returncode == 0, again.stderr
    assert "2 workers" in again.stderr and "resuming" in again.stderr
    assert "optuna-dashboard" in again.stdout and "study.journal" in again.stdout
    assert (space.output_dir / "report.html").is_file()
    trials = trials_of(space)
    assert sum(map(counts_toward_budget, trials)) == 3
    assert_no_duplicate_runs(trials)
    got = figures(trials, before)
    print(f"\nCtrl-C of `search run --workers 2`, then re-run: {got}")
    assert got["lost"] == 0 and got["completed"] == 3 and got["retried"] == len(marked)


@pytest.mark.parametrize("signum", [signal.SIGKILL])
def test_workers_of_a_killed_parent_stop_and_mark_their_trials(write_space, signum) -> None:
    """kill -9 of the `--workers` parent: its workers notice, mark their trials interrupted
    and exit; the next run resumes them."""
    path = write_space(params=SLOW_PARAMS, study={"n_trials": 3, "seed": 0})
    space = load_space(path)
    proc = start_cli("run", str(path), "--no-progress", "--workers", "2")
    wait_for_running(space, proc, timeout=90)
    running = [t for t in trials_of(space) if t.state == TrialState.RUNNING]
    pids = {t.user_attrs["worker"]["pid"] for t in running}
    proc.send_signal(signum)
    proc.communicate(timeout=60)  # the workers hold its output pipes until they exit
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids), "workers outlived their parent"
    trials = trials_of(space)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # A trial they were running finished in the second a worker takes to notice, or was
    # marked interrupted and queued again; nothing was left for the heartbeat to find.
    stopped = {t.number: t for t in trials if t.state == TrialState.FAIL}
    assert all(t.user_attrs.get("interrupted") for t in stopped.values())
    queued = [t.user_attrs.get("retry_of") for t in trials if t.state == TrialState.WAITING]
    assert sorted(queued) == sorted(stopped)
    for r in running:
        assert r.number in stopped or trials[r.number].state == TrialState.COMPLETE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
