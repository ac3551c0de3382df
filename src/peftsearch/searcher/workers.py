"""``search run --workers N [--devices 0,1,...]``: several worker processes of one study.

Each worker is a spawned process that loads the model once and runs the same loop as a single
``search run`` (:func:`peftsearch.searcher._optimize.run_trials`); the study's admission lock
keeps the budget exact across them, and across workers on other hosts sharing the storage. The
parent runs no trial: it shows the study as the storage tells it, forwards Ctrl-C, and at the
end writes ``pareto.csv`` and the report once.

Storage: SQLite is not safe for several processes writing at once, so with no storage given a
parallel run keeps its study in Optuna's journal file ``<output>/study.journal`` (found again
by later ``search run``, ``report`` and ``export`` of the same space); an existing SQLite study
is refused with what to do instead. PostgreSQL is used as given.

Workers sit in their own process group: a Ctrl-C at the terminal reaches the parent alone,
which sends each worker one SIGINT, so each marks its running trial interrupted exactly once.
A worker whose parent dies (kill -9) interrupts itself the same way.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from peftsearch.errors import UserError
from peftsearch.reports.trials import front_trials
from peftsearch.searcher._optimize import _quiet_optuna, run_trials
from peftsearch.searcher.artifacts import upload_study_artifacts, write_dashboard_note
from peftsearch.searcher.lines import _Silent, finished_line
from peftsearch.searcher.opening import check_storage, open_study
from peftsearch.searcher.outcome import (
    RunOutcome,
    counts_toward_budget,
    report_due,
    write_report_safely,
)
from peftsearch.searcher.progress import StudyProgress
from peftsearch.searcher.samplers import make_sampler
from peftsearch.searcher.sigint import Sigint
from peftsearch.searcher.storage import (
    default_journal_url,
    display_url,
    journal_path,
    mask_url,
    resolve_url,
    sqlite_path,
)
from peftsearch.searcher.study import finish
from peftsearch.spaces import Space

POLL_SECONDS = 1.0  # the parent reads the study this often
SHUTDOWN_SECONDS = 120  # after Ctrl-C, how long workers get to mark their trials
EXIT_INTERRUPTED = 130


class WorkersFailed(UserError):
    """Workers ended before the budget was met (crashed, killed); printed as one line."""

    exit_code = 1


def parallel_storage(space: Space) -> str:
    """The storage URL for several worker processes of ``space``'s study.

    Raises:
        UserError: the study is (or is asked to be) in SQLite.
    """
    url = resolve_url(space)
    if journal_path(url) is not None or not url.startswith("sqlite"):
        return url
    journal = default_journal_url(space)
    if space.study.storage:
        raise UserError(
            f"{space.file}: study.storage: SQLite ({mask_url(url)}) is not safe for several "
            f"worker processes; use --storage {journal} (one host) or "
            "--storage postgresql://... (several hosts), or --workers 1"
        )
    db = sqlite_path(url)
    if db is not None and _sqlite_has_study(db, space.study_name):
        raise UserError(
            f"{space.file}: study {space.study_name!r} is in SQLite ({db}), which is not safe "
            "for several worker processes; resume it with --workers 1, or start the parallel "
            "run in another --output, or give --storage postgresql://..."
        )
    return journal


def _sqlite_has_study(db: Path, name: str) -> bool:
    if not db.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchall()
    except sqlite3.Error:  # not an Optuna database, or no studies table yet
        return False
    return bool(rows)


def _gpus(devices: Sequence[str]) -> list[str]:
    """Physical GPU ids for CUDA_VISIBLE_DEVICES, from ids as this process sees them."""
    if not devices:
        return []
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise UserError(f"--devices {','.join(devices)}: no CUDA device is visible here")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = (
        [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(count)]
    )
    out = []
    for d in devices:
        if not d.isdigit() or int(d) >= count:
            raise UserError(f"--devices: no CUDA device {d!r} (visible: 0..{count - 1})")
        out.append(physical[int(d)])
    return out


def _worker_main(
    index: int,
    space: Space,
    gpu: str | None,
    threads: int,
    runner_factory: Callable[[Space], Any] | None,
    events: Any,
) -> None:
    """A worker process: its own process group, one model, the study loop, an exit code."""
    os.setpgrp()  # the terminal's Ctrl-C goes to the parent, which forwards it once
    parent = os.getppid()

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)  # orphaned: stop like a Ctrl-C

    threading.Thread(target=watch_parent, daemon=True).start()
    worker: dict[str, Any] = {"index": index}
    # CPU threads shared out between the workers (torch reads this when it starts).
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before torch starts: one GPU, seen as 0
        space.model.device = "cuda:0"
        worker["gpu"] = gpu
    code = 0
    try:
        if runner_factory is None:
            from peftsearch.logs import quiet_libraries
            from peftsearch.objectives.runner import TrialRunner

            quiet_libraries()
            runner: Any = TrialRunner(space)
        else:
            runner = runner_factory(space)
        from contextlib import nullcontext

        _, outcome = run_trials(
            space,
            runner,
            lambda done: nullcontext(_Silent()),
            warn=lambda line: events.put(("warn", index, line)),
            on_ready=lambda: events.put(("ready", index, "")),
            worker=worker,
            refresh_report=False,
            keep_going=lambda: os.getppid() == parent,
        )
        if outcome.interrupted:
            code = EXIT_INTERRUPTED
        elif outcome.stopped_by_timeout:
            events.put(("timeout", index, ""))
    except UserError as exc:
        events.put(("error", index, str(exc)))
        code = exc.exit_code
    except KeyboardInterrupt:  # before the study loop: nothing of ours is running
        code = EXIT_INTERRUPTED
    events.close()
    if os.getppid() == parent:
        events.join_thread()  # deliver what is queued
    else:
        events.cancel_join_thread()  # nobody reads it any more
    sys.exit(code)


class _Parent:
    """What the parent knows: worker events, the trials it has shown, the display."""

    def __init__(self, space: Space, url: str, prog: StudyProgress, started: float) -> None:
        self.space, self.url, self.prog, self.started = space, url, prog, started
        self.study: Any = None
        self.shown: set[int] = set()
        self.warned: set[str] = set()
        self.errors: list[str] = []
        self.ready = 0
        self.timeouts = 0
        self.finished, self.last_report = 0, time.monotonic()  # since the last report

    def drain(self, events: Any) -> None:
        while True:
            try:
                kind, index, text = events.get_nowait()
            except queue.Empty:
                return
            if kind == "ready":
                self.ready += 1
            elif kind == "timeout":
                self.timeouts += 1
            elif kind == "warn" and text not in self.warned:
                self.warned.add(text)
                self.prog.note(f"warning: {text}")
            elif kind == "error":  # shown at the end: once, and only if others ran
                self.errors.append(f"worker {index}: {text}")

    def poll(self) -> None:
        """Show trials that finished since the last look; refresh the report now and then."""
        from optuna.trial import TrialState

        metric = self.space.objectives.metric
        n_trials = self.space.study.n_trials
        if self.study is None:
            if not self.ready:
                return
            self.study = open_study(self.space, create=False)
            earlier = [
                t
                for t in self.study.get_trials(deepcopy=False)
                if counts_toward_budget(t) and t.datetime_start.timestamp() < self.started
            ]
            if earlier:
                self.prog.note(
                    f"resuming study {self.space.study_name!r}: {len(earlier)} of {n_trials} "
                    "trials done"
                )
        trials = self.study.get_trials(deepcopy=False)
        new = [
            t
            for t in trials
            if t.state.is_finished()
            and t.number not in self.shown
            and t.datetime_start is not None
            and t.datetime_start.timestamp() >= self.started
        ]
        if not new:
            return
        best = front_trials(self.study)
        top = max((t.values[0] for t in best), default=None)
        done = min(sum(map(counts_toward_budget, trials)), n_trials)
        for t in sorted(new, key=lambda t: t.datetime_complete or t.datetime_start):
            self.shown.add(t.number)
            self.prog.trial_finished(finished_line(t, metric), done, top, len(best))
            if t.state != TrialState.FAIL or "fail_reason" in t.user_attrs:
                self.finished += 1
                if report_due(self.finished, self.last_report):
                    write_report_safely(self.study, self.space.output_dir, self.prog.note)
                    self.finished, self.last_report = 0, time.monotonic()


def _interrupt(procs: list[Any], prog: StudyProgress) -> None:
    """One SIGINT to each worker, then wait for them to mark their trials; a second Ctrl-C
    (or the wait running out) kills them: their trials then come back by heartbeat."""
    alive = [p for p in procs if p.is_alive()]
    prog.note(f"interrupting {len(alive)} worker(s); their running trials are marked and requeued")
    for p in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGINT)
    deadline = time.monotonic() + SHUTDOWN_SECONDS
    try:
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()


def run_workers(
    space: Space,
    workers: int,
    devices: Sequence[str] = (),
    show_progress: bool = True,
    runner_factory: Callable[[Space], Any] | None = None,
) -> RunOutcome:
    """Run (or resume) the study of ``space`` with ``workers`` processes on this host.

    Args:
        space: a validated space.
        workers: how many worker processes.
        devices: GPU ids (as this process sees them); worker ``i`` gets ``devices[i % len]``.
        show_progress: draw the study's live display.
        runner_factory: builds each worker's runner from the space (picklable; default
            :class:`~peftsearch.objectives.runner.TrialRunner`).

    Raises:
        UserError: bad input (also one found by a worker before any trial ran).
        WorkersFailed: every worker stopped before the budget was met.
    """
    import multiprocessing

    _quiet_optuna()
    make_sampler(space)  # a bad sampler fails once, here, not once per worker
    url = parallel_storage(space)
    gpus = _gpus(devices)
    child = space.model_copy(deep=True)
    child.study.storage = url
    check_storage(child)  # an unreachable database fails once, here
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: safe with CUDA
    events = ctx.Queue()
    procs = _processes(ctx, child, workers, gpus, runner_factory, events)
    n_trials, metric = space.study.n_trials, space.objectives.metric
    outcome = RunOutcome(space.study_name, display_url(url), space.output_dir, {})
    started = time.time() - 1.0
    with StudyProgress(n_trials, 0, metric, show_progress) as prog:
        where = f" on GPUs {','.join(gpus)}" if gpus else ""
        prog.note(f"{workers} workers{where}; study {space.study_name!r} in {display_url(url)}")
        parent = _Parent(child, url, prog, started)
        _supervise(procs, parent, events, outcome)
        codes = _wrap_up(procs, parent, outcome)
    study = parent.study or open_study(child, create=False)
    finish(study, outcome)
    upload_study_artifacts(study, space, outcome.report)
    write_dashboard_note(study, space)
    done = sum(map(counts_toward_budget, study.get_trials(deepcopy=False)))
    if done < n_trials and not outcome.interrupted and not outcome.stopped_by_timeout:
        raise WorkersFailed(
            f"the workers stopped with {done} of {n_trials} trials done (exit codes {codes}); "
            "run the same command again to resume"
        )
    return outcome


def _processes(
    ctx: Any,
    child: Space,
    workers: int,
    gpus: list[str],
    runner_factory: Callable[[Space], Any] | None,
    events: Any,
) -> list[Any]:
    """The worker processes (not started), the CPU threads shared out between them."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    return [
        ctx.Process(
            target=_worker_main,
            args=(i, child, gpus[i % len(gpus)] if gpus else None, threads, runner_factory, events),
            name=f"peftsearch-worker-{i}",
        )
        for i in range(workers)
    ]


def _supervise(procs: list[Any], parent: _Parent, events: Any, outcome: RunOutcome) -> None:
    """Start the workers and show the study until they end; on Ctrl-C, interrupt them."""
    from multiprocessing.connection import wait

    try:
        with Sigint():  # a Ctrl-C swallowed in a storage finalizer is acted on next turn
            for p in procs:
                p.start()
            while any(p.is_alive() for p in procs):
                Sigint.check()
                parent.drain(events)
                parent.poll()
                wait([p.sentinel for p in procs if p.is_alive()], POLL_SECONDS)
    except KeyboardInterrupt:
        outcome.interrupted = True
        _interrupt(procs, parent.prog)
    finally:
        for p in procs:
            if p.is_alive():  # an error in the parent itself: leave nothing behind
                p.kill()
            if p.pid is not None:
                p.join()
    parent.drain(events)


def _wrap_up(procs: list[Any], parent: _Parent, outcome: RunOutcome) -> list[int | None]:
    """After the workers ended: raise if none reached the study, else show the last trials
    and how each worker ended. Returns their exit codes."""
    prog = parent.prog
    codes = [p.exitcode for p in procs]
    if not parent.ready:  # no worker got as far as the study: report why, create nothing
        if parent.errors:
            raise UserError(parent.errors[0].split(": ", 1)[1])
        if outcome.interrupted:
            raise KeyboardInterrupt
        raise WorkersFailed(f"no worker started (exit codes {codes}); see the errors above")
    for line in dict.fromkeys(parent.errors):  # some workers failed, others ran
        prog.note(f"error: {line}")
    parent.poll()
    for i, code in enumerate(codes):
        if code is not None and code < 0:
            prog.note(
                f"worker {i} stopped early (signal {-code}); a trial it was running is "
                "retried once its heartbeat is missed"
            )
        elif code not in (0, EXIT_INTERRUPTED, None):
            prog.note(f"worker {i} stopped early (exit code {code})")
    if any(code == EXIT_INTERRUPTED for code in codes):
        outcome.interrupted = True
    outcome.stopped_by_timeout = parent.timeouts > 0
    return codes
