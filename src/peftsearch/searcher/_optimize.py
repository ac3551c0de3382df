"""The worker loop: ask Optuna for a trial, run it, tell the result, until the budget is met.

Admission, or how ``n_trials`` stays exact with any number of workers: a worker takes a slot
of the budget by holding the study's :class:`~peftsearch.searcher.storage.Admission` lock while
it counts the trials that count or are RUNNING and, only if that is below ``n_trials``, calls
``study.ask()``, which creates (or takes from the queue) a RUNNING trial before the lock is let
go. So ``counting + running <= n_trials`` holds at every moment for the whole study, and
counting trials only come from running ones: no overshoot. A slot comes back only when a
running trial ends without counting (Ctrl-C, a dead worker found by its heartbeat), and its
retry is queued; a worker that finds every slot taken by running trials waits and looks again,
so the retry of a trial whose worker died still runs in this run. Queued (WAITING) trials take
no slot: ``ask()`` hands them out first. Why a lock rather than "ask, then check my trial
number": a trial that turns out to be over the budget already exists and would have to be told
FAIL or PRUNED, which either pollutes the study with trials that never ran or counts toward the
budget; Optuna has no way to discard a trial. The lock is held for a count and a sample, never
for a trial.

The sampler is rebuilt before each ask with the seed offset by the number of trials so far:
workers that start together would otherwise draw the same random start-up configs.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from peftsearch.searcher import storage as storage_mod
from peftsearch.searcher._runner import Pack, Runner
from peftsearch.searcher._tell import (
    Repeat,
    _Flight,
    _requeue_interrupted,
    _tell,
    find_repeat,
    retry_attrs,
)
from peftsearch.searcher.artifacts import upload_study_artifacts
from peftsearch.searcher.lines import Display, _summary, front_summary
from peftsearch.searcher.opening import _prepare_output, check_storage, open_study
from peftsearch.searcher.outcome import (
    RunOutcome,
    counts_toward_budget,
    report_due,
    write_report_safely,
)
from peftsearch.searcher.packs import make_pack, make_pruner
from peftsearch.searcher.records import _record_study, _record_zero_shot, _warn, found_words
from peftsearch.searcher.samplers import make_sampler
from peftsearch.searcher.sigint import INTERRUPTED, Sigint, _DeferSigint
from peftsearch.searcher.storage import (
    Admission,
    display_url,
    mask_url,
    resolve_url,
    set_user_attrs,
)
from peftsearch.searcher.suggest import coverage_configs, suggest
from peftsearch.spaces import Space

WAIT_SECONDS = 2.0  # budget taken by running trials: look again this often (or every half beat)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # We run heartbeats ourselves around each trial (below), which is what optimize() does.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def run_trials(
    space: Space,
    runner: Runner,
    make_display: Callable[[int], AbstractContextManager[Any]],
    *,
    warn: Callable[[str], None] = _warn,
    on_ready: Callable[[], None] | None = None,
    worker: dict[str, Any] | None = None,
    refresh_report: bool = True,
    keep_going: Callable[[], bool] | None = None,
) -> tuple[Any, RunOutcome]:
    """One worker: set up, then take trials until the study's budget is met (a slot of the
    budget at a time: see the module docstring).

    Args:
        space: a validated space; its storage is ``resolve_url(space)``.
        runner: ``setup()``, ``splits``, ``base_params``, ``run(params, on_step)``: see
            :class:`~peftsearch.searcher._runner.Runner`.
        make_display: called with the number of trials already done; gives a context that
            yields a :class:`StudyProgress` or another :class:`~.lines.Display`.
        warn: where warnings go (a worker process sends them to its parent).
        on_ready: called once the study is open and recorded, before the first trial.
        worker: stored on each trial as the ``worker`` user attr (with host and pid).
        refresh_report: rewrite ``<output>/report.html`` every few trials of this worker.
        keep_going: asked before each new trial; False stops like a Ctrl-C (a worker whose
            parent died must not start a trial its watcher would interrupt a second later).

    Returns:
        The study and an outcome whose counts and front are not filled yet.
    """
    study, space, out = _open(space, runner, warn)
    url = resolve_url(space)
    n_trials = space.study.n_trials
    outcome = RunOutcome(space.study_name, display_url(url), out, {})
    me = {"host": socket.gethostname(), "pid": os.getpid(), **(worker or {})}
    admission = Admission(url, space.study_name)
    try:
        with admission():
            trials = _admit(study, space, runner, out, warn)
        zero_shot = _record_zero_shot(study, space, runner)  # not under the lock: it scores
        if not admission.exact:
            warn(
                f"{mask_url(url)}: no lock across processes for this database; with several "
                "workers the study may run a few trials more than n_trials (exact on "
                "PostgreSQL, SQLite and journal files)"
            )
        done = sum(map(counts_toward_budget, trials))
        if on_ready is not None:
            on_ready()
        with make_display(min(done, n_trials)) as display:
            for line in zero_shot:
                display.note(line)
            if done:
                display.note(
                    f"resuming study {space.study_name!r}: {done} of {n_trials} trials done"
                )
            with Sigint():
                _Loop(
                    space,
                    runner,
                    display,
                    study,
                    outcome,
                    admission,
                    me,
                    refresh_report,
                    keep_going,
                ).run()
    finally:
        admission.close()
    return study, outcome


def _open(space: Space, runner: Runner, warn: Callable[[str], None]) -> tuple[Any, Space, Path]:
    """Check everything that can be wrong before any file exists, then open the study.
    Returns it, the space (with the found label words) and the output directory."""
    _quiet_optuna()
    make_sampler(space)  # a bad sampler name or kwargs fails here, before any file exists
    runner.setup()  # data and model problems surface here, before any file exists
    check_storage(space)  # and storage problems
    out = _prepare_output(space)
    study = open_study(space)
    space = found_words(study, space, runner, warn)  # verbalizers.auto: found once, stored
    return study, space, out


def _admit(
    study: Any, space: Space, runner: Runner, out: Path, warn: Callable[[str], None]
) -> list[Any]:
    """Under the admission lock: queue a new study's first trials, fail the trials of dead
    workers, queue again the interrupted ones, record the study. Returns its trials."""
    from optuna.storages import fail_stale_trials

    if not study.trials:
        _enqueue_first(study, space)
    fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    _requeue_interrupted(study, trials)
    _record_study(study, space, runner, out, warn)
    return trials


def _enqueue_first(study: Any, space: Space) -> None:
    """``study.enqueue``, then (``study.coverage``) a config per size class."""
    for config in space.study.enqueue:
        study.enqueue_trial(
            {k: (",".join(v) if isinstance(v, list) else v) for k, v in config.items()},
            user_attrs={"enqueued": True},
        )
    if space.study.coverage:
        # At most half the budget: the sampler must still get its turn.
        room = max(0, space.study.n_trials // 2 - len(space.study.enqueue))
        for config in coverage_configs(space)[:room]:
            study.enqueue_trial(config, user_attrs={"coverage": True})


def _start(space: Space, pack: Pack, display: Display, trial: Any, me: dict[str, Any]) -> Any:
    """Suggest a trial's parameters and put it in the pack. Returns None, a :class:`Repeat`
    (nothing to train), or the exception of a configuration that cannot even be built (a bad
    target module, say): it fails at once."""
    params = suggest(trial, space)
    set_user_attrs(trial.study, trial, {"params": params, "worker": me})  # fixed ones too
    earlier = find_repeat(trial.study, params)
    if earlier is not None:
        return Repeat(earlier)
    display.trial_started(trial.number, _summary(params))
    try:
        pack.add(trial.number, params)
    except Exception as exc:
        return exc
    return None


class _Loop:
    """Keep the pack full: take budget slots while it has room, step it, tell what finishes.

    Each turn: ask for trials while the pack has room (:meth:`_fill`), train the pack a
    little, tell the trials that ended (:meth:`_told`); with nothing in flight, end the loop
    or wait for a slot (:meth:`_idle`). A Ctrl-C anywhere marks the trials in flight
    interrupted and queues them again (:meth:`_interrupt`).
    """

    def __init__(
        self,
        space: Space,
        runner: Runner,
        display: Display,
        study: Any,
        outcome: RunOutcome,
        admission: Admission,
        me: dict[str, Any],
        refresh_report: bool,
        keep_going: Callable[[], bool] | None = None,
    ) -> None:
        self.space, self.display, self.study, self.outcome = space, display, study, outcome
        self.admission, self.me = admission, me
        self.refresh_report = refresh_report  # rewrite the report every few trials
        self.keep_going = keep_going  # False: stop like a Ctrl-C
        self.n_trials = space.study.n_trials
        self.start = time.monotonic()
        self.since_report, self.last_report = 0, time.monotonic()
        self.told_waiting = False
        self.running = 0  # trials RUNNING in the study at the last look
        self.flights: dict[int, _Flight] = {}
        self.pruner = make_pruner(space, runner)
        on_rung = self._on_rung if self.pruner is not None else None
        self.pack = make_pack(space, runner, display, on_rung)
        self.retry_at = 0.0  # the pack has room but the budget had none: look again then

    def run(self) -> None:
        """Turn until the budget is met, the timeout passes, or Ctrl-C."""
        try:
            while self._turn():
                pass
        except KeyboardInterrupt:  # while asking, suggesting or training: these are RUNNING
            self._interrupt()
        finally:
            for flight in self.flights.values():
                flight.beat.join()

    def _turn(self) -> bool:
        """One turn; False when the loop is over."""
        Sigint.check()
        ended, stop = self._fill()  # (trial number, TrialResult or exception)
        if stop == "interrupt":
            raise KeyboardInterrupt
        if len(self.pack):
            ended += self.pack.step()
            Sigint.check()  # pressed during the step but swallowed there: stop now
        if ended:
            self.retry_at = 0.0  # a slot of the budget may have come back
        for number, result in ended:
            self._told(number, result)
        for number, step, total in self.pack.progress():
            self.display.trial_step(number, step, total)
        if self.flights or ended:
            return True
        return self._idle(stop)

    def _fill(self) -> tuple[list[tuple[int, Any]], str | None]:
        """Ask for trials while the pack has room. Returns the trials that ended at once (an
        exception, or a :class:`Repeat`: told, not trained) and why no trial was asked:
        "done", "timeout", "waiting", "interrupt" (None: the pack is full)."""
        ended: list[tuple[int, Any]] = []
        # Asking takes the storage lock and reads every trial: not once per training step.
        if self.flights and time.monotonic() < self.retry_at:
            return ended, None
        while len(self.flights) < self.pack.capacity:
            if self.keep_going is not None and not self.keep_going():
                return ended, "interrupt"
            trial, stop = self._ask()
            if stop is not None:
                self.retry_at = time.monotonic() + WAIT_SECONDS
                return ended, stop
            self.told_waiting = False
            failed = _start(self.space, self.pack, self.display, trial, self.me)
            if failed is not None:
                ended.append((trial.number, failed))
        return ended, None

    def _ask(self) -> tuple[Any, str | None]:
        """Take a slot of the budget if one is free: the new trial (beating, in flight), or
        None and why not. Under the lock, Ctrl-C held back: a trial is asked and beating, or
        not asked; a Ctrl-C held back is "interrupt"."""
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        trial, timeout = None, self.space.study.timeout
        with _DeferSigint() as held, self.admission():
            fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            done = sum(map(counts_toward_budget, trials))
            self.running = sum(t.state == TrialState.RUNNING for t in trials)
            timed_out = timeout is not None and time.monotonic() - self.start > timeout
            if done < self.n_trials and not timed_out and done + self.running < self.n_trials:
                trial = self._take(len(trials))
        if held.caught:
            return trial, "interrupt"
        if trial is None:
            return None, "done" if done >= self.n_trials else "timeout" if timed_out else "waiting"
        return trial, None

    def _take(self, n_existing: int) -> Any:
        """``study.ask()`` with a sampler seeded past the trials so far; its heartbeat starts."""
        from optuna.storages._heartbeat import get_heartbeat_thread  # ask/tell has no public one

        self.study.sampler = make_sampler(self.space, n_existing=n_existing)
        trial = self.study.ask()
        beat = get_heartbeat_thread(trial._trial_id, self.study._storage)
        beat.start()
        self.flights[trial.number] = _Flight(trial, beat, time.perf_counter())
        return trial

    def _told(self, number: int, result: Any) -> None:
        """Tell a trial that ended, show it, and refresh the report when it is due."""
        frozen, line = _tell(self.space, self.study, self.flights.pop(number), result, self.display)
        trials = self.study.get_trials(deepcopy=False)
        top, front = front_summary(trials)
        done = min(sum(map(counts_toward_budget, trials)), self.n_trials)
        self.display.trial_finished(line, done, top, front, number)
        self.since_report += 1
        if self.refresh_report and report_due(self.since_report, self.last_report):
            report = write_report_safely(self.study, self.outcome.output_dir, self.display.note)
            upload_study_artifacts(self.study, self.space, report, self.display.note)
            self.since_report, self.last_report = 0, time.monotonic()
        if frozen is None:  # Ctrl-C came while the result was being stored (whole): stop
            raise KeyboardInterrupt

    def _idle(self, stop: str | None) -> bool:
        """Nothing in flight and no trial asked: the loop is over ("done", "timeout"), or
        every slot is held by a running trial (maybe a dead one): wait a little."""
        if stop == "done":
            return False
        if stop == "timeout":
            self.display.note(
                f"timeout of {self.space.study.timeout:g} s reached; no new trial started"
            )
            self.outcome.stopped_by_timeout = True
            return False
        if not self.told_waiting:
            self.display.note(
                f"waiting: {self.running} trial(s) running elsewhere hold the rest of the "
                f"budget (a dead worker's trial runs again after "
                f"{storage_mod.GRACE_SECONDS} s without heartbeat)"
            )
            self.told_waiting = True
        time.sleep(min(storage_mod.HEARTBEAT_SECONDS / 2, WAIT_SECONDS))
        return True

    def _on_rung(
        self, number: int, rung: int, step: int, metric: float, loss: float, n: int
    ) -> bool:
        """The pruner's decision on a trial at a rung: True stops it."""
        trial = self.flights[number].trial
        # A coverage trial is the study's evidence for its size class: it is ranked (a peer
        # of later trials) but always goes on.
        protect = bool(self.study._storage.get_trial(trial._trial_id).user_attrs.get("coverage"))
        with _DeferSigint():  # the rung record is written whole
            stop = bool(
                self.pruner.decide(self.study, trial, rung, step, metric, loss, n, protect=protect)
            )
        Sigint.check()  # a Ctrl-C held back while the record was written
        return stop

    def _interrupt(self) -> None:
        """Ctrl-C: the trials in flight are told FAIL, marked interrupted and queued again."""
        from optuna.trial import TrialState

        self.pack.clear()
        with _DeferSigint():  # a second Ctrl-C must not cut the marking in half
            for number, flight in sorted(self.flights.items()):
                trial = flight.trial
                trial.set_user_attr(INTERRUPTED, True)
                trial.set_user_attr(
                    "fail_note", "interrupted by the user (Ctrl-C); re-run resumes it"
                )
                with self.admission():  # with the lock: a starting worker may requeue it too
                    self.study.tell(trial, state=TrialState.FAIL)
                    frozen_now = self.study._storage.get_trial(trial._trial_id)
                    self.study.enqueue_trial(trial.params, user_attrs=retry_attrs(frozen_now))
                self.display.note(f"trial {number} interrupted; it will run again on resume")
        self.outcome.interrupted = True
