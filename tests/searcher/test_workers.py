"""Many workers on one study: exact budget, journal storage on one host, PostgreSQL for many.

The PostgreSQL tests need ``PEFTSEARCH_TEST_POSTGRES_URL`` (``eval "$(tests/pg.sh start)"``
makes a throwaway cluster); without it they are skipped, except in CI, where they fail.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from peftsearch.errors import SpaceError, UserError
from peftsearch.searcher import counts_toward_budget, open_study, run_study
from peftsearch.searcher.storage import Admission, resolve_url
from peftsearch.searcher.study import _Silent, run_trials
from peftsearch.searcher.workers import run_workers
from peftsearch.spaces import load_space
from tests.conftest import run_cli
from tests.searcher.test_crash import (
    SLOW_PARAMS,
    assert_no_duplicate_runs,
    figures,
    start_cli,
    trials_of,
    wait_for_running,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("PEFTSEARCH_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI needs PostgreSQL: PEFTSEARCH_TEST_POSTGRES_URL is not set")
        pytest.skip('no PostgreSQL: eval "$(tests/pg.sh start)" to run these')
    return url


# -- a fast synthetic objective: the runner interface without a model -----------------------


@dataclass
class _Result:
    metric: float
    trainable_params: int
    attrs: dict[str, Any] = field(default_factory=dict)


class _Splits:
    record = {"source": "synthetic", "sha256": "0" * 64, "split": {}, "rows": {"train": [0]}}

    def summary(self) -> dict[str, int]:
        return {"train": 1}


class FastRunner:
    """Sleeps a little and scores the params by a formula (picklable: workers build one)."""

    seconds = 0.3

    def __init__(self, space: Any) -> None:
        self.splits, self.base_params = _Splits(), 10_000

    def setup(self) -> None:
        pass

    def run(self, params: dict[str, Any], on_step: Any = None) -> _Result:
        time.sleep(self.seconds)
        size = 100 * (1 + params["lora_r"]) + 10 * params["prompt_length"]
        metric = 0.5 + 0.1 * (params["lora_r"] > 0) + params["learning_rate"]
        return _Result(metric, size, {"trainable_pct": 100 * size / self.base_params})


class InstantRunner(FastRunner):
    seconds = 0.0


class BadDataRunner(FastRunner):
    def setup(self) -> None:
        raise SpaceError("space.yaml", "data.label_column", "no such column", "lable")


def _fast_space(write_space, n_trials: int, **study: Any) -> Any:
    return load_space(write_space(study={"n_trials": n_trials, "seed": 0, **study}))


def _assert_exact(space: Any, n_trials: int) -> list[Any]:
    trials = open_study(space, create=False).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n_trials
    assert [t.number for t in trials] == list(range(n_trials))
    return trials


# -- one host: journal storage -------------------------------------------------------------


def test_three_workers_share_one_journal_study_and_run_exactly_n_trials(write_space) -> None:
    space = _fast_space(write_space, 12)
    outcome = run_workers(space, workers=3, show_progress=False, runner_factory=FastRunner)
    assert outcome.counts == {"complete": 12} and not outcome.interrupted
    journal = space.output_dir / "study.journal"
    assert outcome.storage == str(journal.resolve())
    assert journal.is_file() and not (space.output_dir / "study.db").exists()
    trials = _assert_exact(load_space(space.file), 12)  # found again without --storage
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) >= 2  # they did share it
    assert (space.output_dir / "pareto.csv").is_file()
    # A later run resumes the same journal study, with one worker or several.
    more = run_study(load_space(space.file, {"study.n_trials": 14}), InstantRunner(space), False)
    assert more.counts == {"complete": 14}
    assert resolve_url(load_space(space.file)).startswith("journal://")


def test_budget_is_exact_when_many_workers_race_for_the_last_slots(write_space) -> None:
    """Eight workers (threads, each with its own storage connection) start at once on 10
    instant trials: counting and asking under the admission lock leaves no room for two
    workers to take the same last slot."""
    space = _fast_space(write_space, 10)
    space.study.storage = f"journal://{(space.output_dir / 'race.journal').resolve()}"
    space.output_dir.mkdir(parents=True)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            run_trials(space, InstantRunner(space), lambda done: _nullcontext(), warn=print)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    _assert_exact(space, 10)


def test_a_worker_whose_parent_died_starts_no_new_trial(write_space) -> None:
    """Workers ask ``keep_going`` (is my parent alive?) before each trial: False stops like a
    Ctrl-C. Without it, a worker that finished a trial before its 1-s watcher noticed the
    parent's death took the retry its sibling had just queued, and was interrupted in it."""
    space = _fast_space(write_space, 5)
    space.output_dir.mkdir(parents=True)
    answers = iter([True, True, False])
    _, outcome = run_trials(
        space,
        InstantRunner(space),
        lambda done: _nullcontext(),
        warn=print,
        keep_going=lambda: next(answers),
    )
    assert outcome.interrupted
    trials = open_study(space, create=False).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2


class _nullcontext:
    def __enter__(self) -> _Silent:
        return _Silent()

    def __exit__(self, *exc: Any) -> None:
        pass


def test_admission_lock_excludes_other_processes_and_threads(tmp_path) -> None:
    url = f"journal://{tmp_path / 'x.journal'}"
    inside, overlaps = [0], [0]

    def take() -> None:
        for _ in range(20):
            with Admission(url, "s")():
                inside[0] += 1
                overlaps[0] = max(overlaps[0], inside[0])
                time.sleep(0.001)
                inside[0] -= 1

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps[0] == 1
    assert Admission("mysql://u:p@h/db", "s").exact is False  # said, not hidden


def test_sqlite_is_refused_for_several_workers_with_what_to_use(write_space) -> None:
    space = _fast_space(write_space, 1)
    run_study(space, InstantRunner(space), show_progress=False)  # a study in study.db
    with pytest.raises(UserError, match="--workers 1") as err:
        run_workers(load_space(space.file), workers=2, runner_factory=InstantRunner)
    assert "SQLite" in str(err.value) and "postgresql://" in str(err.value)
    db = space.output_dir / "other.db"
    with pytest.raises(UserError, match="journal://") as err:
        run_workers(
            load_space(space.file, {"study.storage": f"sqlite:///{db}"}),
            workers=2,
            runner_factory=InstantRunner,
        )
    assert "postgresql://" in str(err.value) and not db.exists()


def test_bad_input_in_workers_is_one_error_and_creates_nothing(write_space, capsys) -> None:
    bad = load_space(write_space(study={"n_trials": 2, "sampler": "nope"}))
    with pytest.raises(UserError, match="study.sampler"):  # found once, by the parent
        run_workers(bad, workers=2, runner_factory=InstantRunner)
    assert not bad.output_dir.exists()
    space = _fast_space(write_space, 2)
    with pytest.raises(UserError, match="data.label_column: no such column"):  # by workers
        run_workers(space, workers=2, show_progress=False, runner_factory=BadDataRunner)
    assert not space.output_dir.exists()
    assert "no such column" not in capsys.readouterr().err  # said once: the error raised


class _DeclaredDead(InstantRunner):
    """Its first trial is declared dead by "another worker" while it runs (as when its
    heartbeats cannot reach the database for the grace period)."""

    def __init__(self, space: Any) -> None:
        super().__init__(space)
        self.space, self.first = space, True

    def run(self, params: dict[str, Any], on_step: Any = None) -> _Result:
        if self.first:
            self.first = False
            other = open_study(self.space, create=False)
            (mine,) = other.get_trials(states=(TrialState.RUNNING,))
            other._storage.set_trial_state_values(mine._trial_id, TrialState.FAIL)
            other._storage.get_heartbeat_stale_trial_callback()(other, other.trials[mine.number])
        return super().run(params, on_step)


def test_a_result_that_comes_after_its_trial_was_declared_dead_is_not_counted_twice(
    write_space, capsys
) -> None:
    space = _fast_space(write_space, 3)
    outcome = run_study(space, _DeclaredDead(space), show_progress=False)
    assert outcome.counts == {"fail": 1, "complete": 3}
    trials = open_study(space, create=False).get_trials()
    assert trials[0].state == TrialState.FAIL and not counts_toward_budget(trials[0])
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params
    assert sum(map(counts_toward_budget, trials)) == 3
    assert "declared dead" in capsys.readouterr().err


# -- many hosts: PostgreSQL ----------------------------------------------------------------


def _pg_space(write_space, url: str, n_trials: int, **sections: Any) -> Path:
    name = f"t{uuid.uuid4().hex[:10]}"  # one database, a fresh study per test
    return write_space(
        study={"n_trials": n_trials, "seed": 0, "storage": url, "name": name}, **sections
    )


def test_three_workers_on_postgres_run_exactly_n_trials(write_space, postgres_url) -> None:
    space = load_space(_pg_space(write_space, postgres_url, 12))
    outcome = run_workers(space, workers=3, show_progress=False, runner_factory=FastRunner)
    assert outcome.counts == {"complete": 12}
    trials = _assert_exact(space, 12)
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) >= 2
    assert "***" in outcome.storage and _password(postgres_url) not in outcome.storage


def test_separate_runs_on_postgres_join_one_study(write_space, postgres_url) -> None:
    """Two `search run` started apart (as on two machines) share the study and its budget."""
    path = _pg_space(write_space, postgres_url, 6)
    space = load_space(path)
    runs = [
        threading.Thread(target=run_study, args=(load_space(path), FastRunner(space), False))
        for _ in range(2)
    ]
    for t in runs:
        t.start()
    for t in runs:
        t.join(60)
    _assert_exact(space, 6)


def test_two_workers_tiny_model_on_postgres_and_no_password_anywhere(
    write_space, postgres_url
) -> None:
    path = _pg_space(write_space, postgres_url, 4)
    proc = run_cli("run", str(path), "--no-progress", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    space = load_space(path)
    trials = _assert_exact(space, 4)
    # Which worker takes which trial is the scheduler's business: a tiny-model trial takes well
    # under a second, so one worker can finish all four before the other has imported torch (seen
    # once in CI). Sharing is asserted by the FastRunner and SIGKILL tests; here only that the
    # two workers at most took them.
    assert 1 <= len({t.user_attrs["worker"]["pid"] for t in trials}) <= 2
    password = _password(postgres_url)
    texts = [proc.stdout, proc.stderr]
    for name in ("pareto.csv", "report.html", "splits.json"):
        texts.append((space.output_dir / name).read_text(encoding="utf-8"))
    texts.append(repr(open_study(space, create=False).user_attrs))
    assert "***" in proc.stdout
    assert not [t[:200] for t in texts if password in t]


def test_sigkill_of_one_postgres_worker_is_retried_and_nothing_lost(
    write_space, postgres_url
) -> None:
    path = _pg_space(write_space, postgres_url, 4, params=SLOW_PARAMS)
    space = load_space(path)
    proc = start_cli("run", str(path), "--no-progress", "--workers", "2")
    victim = wait_for_running(space, proc, timeout=90)
    pid = victim.user_attrs["worker"]["pid"]
    os.kill(pid, signal.SIGKILL)
    before = trials_of(space)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped early (signal 9)" in err
    trials = trials_of(space)
    dead = next(t for t in trials if t.number == victim.number)
    assert dead.state == TrialState.FAIL and not counts_toward_budget(dead)
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == dead.params
    assert sum(map(counts_toward_budget, trials)) == 4
    assert_no_duplicate_runs(trials)
    got = figures(trials, before)
    print(f"\nSIGKILL of one of 2 workers on PostgreSQL (the other finishes): {got}")
    assert got == {"started": 5, "completed": 4, "retried": 1, "lost": 0}
    assert _password(postgres_url) not in out + err


def _password(url: str) -> str:
    from sqlalchemy.engine import make_url

    password = make_url(url).password
    assert password
    return str(password)


def _press_ctrl_c_in_a_finalizer() -> None:
    """SIGINT sent from a ``__del__``: Python's handler runs between its next bytecodes, so a
    KeyboardInterrupt raised there is printed as "Exception ignored" and dropped."""

    class _Finalizer:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs in here
                pass

    _Finalizer()  # dropped at once: __del__ runs now


class _SwallowedCtrlC(InstantRunner):
    """Presses Ctrl-C at step 2 of the first trial from inside a finalizer, where Python's
    default handler raises KeyboardInterrupt into ``__del__`` and only prints "Exception
    ignored" (what sqlalchemy's pool finalizers did to a CI run: the run went on to exit 0)."""

    pressed = False

    def run(self, params: dict[str, Any], on_step: Any = None) -> _Result:
        for step in range(1, 6):
            if step == 2 and not _SwallowedCtrlC.pressed:
                _SwallowedCtrlC.pressed = True
                _press_ctrl_c_in_a_finalizer()
            if on_step is not None:
                on_step(step, 5)
        return super().run(params, on_step)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_swallowed_by_a_finalizer_still_stops_the_run(write_space) -> None:
    space = _fast_space(write_space, 3)
    _SwallowedCtrlC.pressed = False
    outcome = run_study(space, _SwallowedCtrlC(space), show_progress=False)
    assert _SwallowedCtrlC.pressed
    assert outcome.interrupted
    trials = open_study(space, create=False).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["interrupted"] is True


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_swallowed_in_the_parent_still_stops_the_workers(write_space, monkeypatch) -> None:
    """The parent of `--workers` polls the storage too: a Ctrl-C lost in a finalizer there
    still reaches the workers, which mark their running trials."""
    import peftsearch.searcher.workers as workers_mod

    space = _fast_space(write_space, 40)
    polls = {"n": 0}
    real_poll = workers_mod._Parent.poll

    def poll(self: Any) -> None:
        real_poll(self)
        if self.ready:
            polls["n"] += 1
            if polls["n"] == 3:
                _press_ctrl_c_in_a_finalizer()

    monkeypatch.setattr(workers_mod._Parent, "poll", poll)
    outcome = run_workers(space, workers=2, show_progress=False, runner_factory=FastRunner)
    assert polls["n"] >= 3 and outcome.interrupted
    trials = open_study(space, create=False).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) < 40
    assert not [t for t in trials if t.state == TrialState.RUNNING]


class _RungRunner(InstantRunner):
    supports_rungs = True

    def run(self, params: dict[str, Any], on_step: Any = None, on_rung: Any = None) -> _Result:
        for rung in range(3):
            if on_rung is not None and on_rung(rung, 5 * (rung + 1), 0.6, 0.5, 100):
                break
        return super().run(params, on_step)


def test_a_ctrl_c_while_a_rung_is_recorded_stops_the_run(write_space, monkeypatch) -> None:
    """The pruner's record is written with Ctrl-C held back; the press is acted on after it."""
    from peftsearch.searcher.pruners import MOASHA

    space = _fast_space(write_space, 3, pruner={"type": "moasha"})
    real_decide, calls = MOASHA.decide, []

    def decide(self: Any, *args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # held back by the deferral
        return real_decide(self, *args, **kwargs)

    monkeypatch.setattr(MOASHA, "decide", decide)
    outcome = run_study(space, _RungRunner(space), show_progress=False)
    assert outcome.interrupted and len(calls) == 2
    trials = open_study(space, create=False).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["interrupted"] is True
