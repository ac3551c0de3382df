"""The worker loop: ask Optuna for a trial, run it, tell the result, until the budget is met.

Budget: ``study.n_trials`` counts trials that *ended on their own*: COMPLETE, PRUNED, and FAIL
with a recorded reason (the config itself failed: NaN loss, out of memory, an exception).
Trials that ended because their worker went away (Ctrl-C, kill -9) do not count; their
parameters are enqueued again and run first. So re-running the same command resumes the study
and runs only what is missing, and a killed run loses nothing.

Many workers (processes on one host, or ``search run`` on several hosts sharing a PostgreSQL
storage) run this same loop on one study and together run exactly ``n_trials`` trials that
count: see :func:`run_trials` for how a worker takes a slot of the budget.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TypeVar

from peftsearch.errors import SpaceError, TrialFailed, UserError
from peftsearch.searcher import storage as storage_mod
from peftsearch.searcher.artifacts import (
    upload_study_artifacts,
    upload_trial_artifacts,
    write_dashboard_note,
)
from peftsearch.searcher.progress import StudyProgress
from peftsearch.searcher.samplers import make_sampler
from peftsearch.searcher.storage import (
    Admission,
    display_url,
    journal_path,
    mask_url,
    open_storage,
    resolve_url,
    set_user_attrs,
    sqlite_path,
)
from peftsearch.searcher.suggest import coverage_configs, fixed_params, suggest
from peftsearch.spaces import Space

# Refresh <output>/report.html after this many finished trials, and not sooner than this many
# seconds after the last refresh: a report of a large study takes a good part of a second to
# build, which would dominate a stream of short (packed, GPU) trials.
REPORT_EVERY = 5
REPORT_MIN_SECONDS = 30.0
DIRECTIONS: list[Literal["maximize", "minimize"]] = ["maximize", "minimize"]  # metric, params
INTERRUPTED = "interrupted"  # user attr on a trial stopped by Ctrl-C
WAIT_SECONDS = 2.0  # budget taken by running trials: look again this often (or every half beat)
# `study.pack: auto` on a GPU. Not measured on a GPU yet: chosen from issue 5's H100 numbers
# (the LoRA step runs 106k tokens/s at batch 32 and 2.4M at batch 4,096, so 16 trials of batch
# 32 in one batch of 512 rows are still far from saturating it). Out of memory halves it.
AUTO_PACK_CUDA = 16


@dataclass
class RunOutcome:
    """What ``search run`` reports at the end."""

    study_name: str
    storage: str  # password masked
    output_dir: Path
    counts: dict[str, int]
    pareto: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    stopped_by_timeout: bool = False
    report: Path | None = None


def report_due(finished_since: int, last: float) -> bool:
    """Time to refresh the report (see :data:`REPORT_EVERY`)."""
    return finished_since >= REPORT_EVERY and time.monotonic() - last >= REPORT_MIN_SECONDS


def counts_toward_budget(trial: Any) -> bool:
    """True for trials that ended on their own (see the module docstring)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


def front_summary(trials: list[Any]) -> tuple[float | None, int]:
    """Best metric and Pareto-front size of the COMPLETE trials (maximize the first value,
    minimize the second), for the live display. ``study.best_trials`` gives the same front but
    deep-copies every trial each time: 5 ms per finished trial at 20 trials, growing with the
    study. A sweep by metric, highest first: a trial is on the front when no trial of a higher
    metric has as few parameters and none of its own metric has fewer."""
    from optuna.trial import TrialState

    points = sorted(
        (-t.values[0], t.values[1]) for t in trials if t.state == TrialState.COMPLETE and t.values
    )
    front, best_above, i = 0, math.inf, 0
    while i < len(points):
        j = i
        while j < len(points) and points[j][0] == points[i][0]:
            j += 1
        fewest = points[i][1]  # sorted: the group's smallest parameter count comes first
        if fewest < best_above:
            front += sum(1 for _, p in points[i:j] if p == fewest)
            best_above = fewest
        i = j
    return (-points[0][0] if points else None), front


def state_counts(trials: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
    return out


def _write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _prepare_output(space: Space) -> Path:
    out = space.output_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise SpaceError(
            str(space.file), "output", f"cannot write there: {exc.strerror}", str(out)
        ) from None
    return out


def open_study(space: Space, create: bool = True) -> Any:
    """Create or load the space's study in its storage (no files are made when ``create`` is
    False and the study is missing: that raises UserError)."""
    import optuna

    url = resolve_url(space)
    journal = journal_path(url)
    if not create and journal is not None and not journal.is_file():
        raise UserError(
            f"{space.file}: no study {space.study_name!r}: {journal} does not exist; "
            "run `search run` first"
        )
    lock = None
    try:
        # Opening an RDB storage creates Optuna's tables if they are missing: workers starting
        # together on a fresh database (or `search report` while `search run` starts) would
        # all create them at once.
        lock = Admission(url, None)
        with lock():
            if not create:
                return optuna.load_study(study_name=space.study_name, storage=open_storage(url))
            study = optuna.create_study(
                study_name=space.study_name,
                storage=open_storage(url),
                directions=DIRECTIONS,
                load_if_exists=True,
            )
            names = [space.objectives.metric, "trainable_params"]
            if study.metric_names != names:  # optuna-dashboard shows these, not "Objective 0"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names(names)
            return study
    except KeyError:
        raise UserError(
            f"{space.file}: no study {space.study_name!r} in {mask_url(url)}; "
            "run `search run` first"
        ) from None
    except Exception as exc:  # sqlalchemy/driver errors: say what, never show the password
        raise _storage_error(space, url, exc) from None
    finally:
        if lock is not None:
            lock.close()


def _storage_error(space: Space, url: str, exc: BaseException) -> UserError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password:
        msg = msg.replace(str(password), "***")
    return UserError(f"{space.file}: study.storage: cannot open {mask_url(url)}: {msg}")


def check_storage(space: Space) -> None:
    """Fail on a storage that cannot be reached, before any file or study is made: a database
    server must answer, and a SQLite or journal file outside the output directory must have
    its directory."""
    url = resolve_url(space)
    path = journal_path(url) or sqlite_path(url)
    if path is not None:
        folder, out = path.parent.resolve(), space.output_dir.resolve()
        if folder != out and out not in folder.parents and not folder.is_dir():
            raise _storage_error(space, url, FileNotFoundError(f"no directory {folder}"))
        return
    if url.startswith("sqlite"):
        return  # in memory
    try:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        sqlalchemy.create_engine(url, poolclass=NullPool).connect().close()
    except Exception as exc:
        raise _storage_error(space, url, exc) from None


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


def _record_study(
    study: Any, space: Space, runner: Any, out: Path, warn: Callable[[str], None] = _warn
) -> None:
    """Study-level attributes (once), the split record, and a warning if the space changed."""
    searched = {
        k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v)
        for k, v in space.search_params().items()
    }
    attrs = study.user_attrs
    if "search_space" in attrs and attrs["search_space"] != json.loads(json.dumps(searched)):
        warn(
            f"{space.file}: params differ from the search space this study started "
            "with; its earlier trials stay, so compare them with care"
        )
    if "search_space" not in attrs:
        splits = runner.splits
        study.set_user_attr("search_space", searched)
        study.set_user_attr("fixed_params", fixed_params(space))
        study.set_user_attr("metric", space.objectives.metric)
        study.set_user_attr("model", space.model.path)
        study.set_user_attr(
            "data",
            {
                "source": splits.record["source"],
                "sha256": splits.record["sha256"],
                "sizes": splits.summary(),
                "split": splits.record["split"],
                "labels": list(space.data.labels),
            },
        )
        study.set_user_attr("base_params", runner.base_params)
        dump = space.model_dump(mode="json", exclude={"params"})
        if dump["study"].get("storage"):  # readable by anyone with the database: no password
            dump["study"]["storage"] = mask_url(dump["study"]["storage"])
        study.set_user_attr("space", {**dump, "params": searched})
    record = out / "splits.json"
    if not record.exists():
        _write_json_atomic(record, runner.splits.record)
    elif json.loads(record.read_text(encoding="utf-8")).get("rows") != runner.splits.record["rows"]:
        warn(
            f"{space.file}: the data split differs from the one recorded in {record}; "
            "earlier trials were scored on other rows"
        )


def found_words(
    study: Any, space: Space, runner: Any | None = None, warn: Callable[[str], None] = _warn
) -> Space:
    """``verbalizers: {auto: ...}``: ``space`` with the found verbalizers' words, found once
    per study by ``runner`` and stored as the ``auto_verbalizers`` study attribute (several
    workers that find them at once find the same words: the search is deterministic).
    Without a runner, the stored words only (an error when there are none yet)."""
    if space.auto_verbalizers is None:
        return space
    stored = study.user_attrs.get("auto_verbalizers")
    if stored is None:
        if runner is None or not hasattr(runner, "find_label_words"):
            raise UserError(
                f"study {space.study_name!r} holds no found label words yet "
                "(verbalizers.auto): `search run` finds them first"
            )
        stored = {**runner.find_label_words(), "config": space.auto_verbalizers.model_dump()}
        study.set_user_attr("auto_verbalizers", stored)
    elif stored.get("config", space.auto_verbalizers.model_dump()) != (
        space.auto_verbalizers.model_dump()
    ):
        warn(
            f"{space.file}: verbalizers.auto differs from the one this study found its words "
            f"with ({stored['config']}); the stored words stay"
        )
    space = space.with_words(stored["words"])
    if runner is not None:
        runner.space = space
    return space


def demo_counts(space: Space) -> list[int]:
    """The demonstration counts per class (above 0) that the space searches or fixes."""
    from peftsearch.spaces import CategoricalDist, IntDist

    spec = space.search_params().get("n_demos") or 0
    if isinstance(spec, CategoricalDist):
        values: Any = spec.choices
    elif isinstance(spec, IntDist):
        values = range(spec.low, spec.high + 1, spec.step)
    else:
        values = [spec]
    return sorted({int(v) for v in values if v})


def _record_zero_shot(study: Any, space: Space, runner: Any) -> list[str]:
    """model.head verbalizer: score every template x verbalizer untrained, once per study
    (stored as the ``zero_shot`` study attribute), so the report can show what training adds;
    with demonstrations searched (``n_demos``), also with each searched count per class
    (``zero_shot_demos``: {count: {template: {verbalizer: score}}}).
    Returns lines to show (none when already stored)."""
    if space.lm_kind is None or not hasattr(runner, "zero_shot"):
        return []
    if study.user_attrs.get("zero_shot"):
        return []
    metric = space.objectives.metric
    lines = []
    counts = demo_counts(space)
    by_count: dict[str, Any] = {}
    for k in counts:
        by_count[str(k)] = runner.zero_shot(k)
        lines += [
            f"zero-shot {metric} with {k} demonstration(s) per class: template {t} x "
            f"verbalizer {v}: {value:.4f}"
            for t, by_v in by_count[str(k)].items()
            for v, value in by_v.items()
        ]
    scores = runner.zero_shot()
    if by_count:
        study.set_user_attr("zero_shot_demos", by_count)
    study.set_user_attr("zero_shot", scores)
    return [
        f"zero-shot {metric} (no training): template {t} x verbalizer {v}: {value:.4f}"
        for t, by_v in scores.items()
        for v, value in by_v.items()
    ] + lines


def write_report_safely(study: Any, out: Path, note: Any = print) -> Path | None:
    """Write ``<out>/report.html``; a failure (e.g. plotly missing on a GPU host, where reports
    are built later from the copied storage) is a note, never the end of the study."""
    try:
        from peftsearch.reports.html import write_report

        return Path(write_report(study, out / "report.html"))
    except Exception as exc:
        note(
            f"report not written ({type(exc).__name__}: {exc}); "
            "rebuild it later with `search report`"
        )
        return None


def _summary(params: dict[str, Any]) -> str:
    def rate(name: str) -> str:
        value = params.get(name)
        if value is None and name != "learning_rate":
            value = params.get("learning_rate")  # unset: the part follows learning_rate
        return f"{value:.2e}" if isinstance(value, int | float) else str(value)

    lrs = []
    if params.get("lora_r"):
        lrs.append(f"lora {rate('learning_rate')}")
    if params.get("prompt_length"):
        lrs.append(f"prompt {rate('prompt_learning_rate')}")
    if params.get("head_learning_rate") is not None or not lrs:
        lrs.append(f"head {rate('head_learning_rate')}")
    if all(params.get(n) is None for n in ("head_learning_rate", "prompt_learning_rate")):
        lrs = [rate("learning_rate")]  # one rate for every part (spaces before issue 11)
    verbalizer = f" x {params['verbalizer']}" if params.get("verbalizer") else ""
    return (
        f"{params.get('template')}{verbalizer} | prompt {params.get('prompt_length')} | "
        f"r {params.get('lora_r')} | lr {', '.join(lrs)}"
    )


def finished_line(trial: Any, metric: str) -> str:
    """One line for a finished trial (the same whether this process or another ran it)."""
    from optuna.trial import TrialState

    attrs = trial.user_attrs
    summary = _summary(attrs.get("params") or trial.params)
    if "duplicate_of" in attrs:
        return (
            f"trial {trial.number}: the configuration of trial {attrs['duplicate_of']} again "
            f"(same seed): not trained, its result repeated | {summary}"
        )
    if trial.state == TrialState.COMPLETE:
        seconds = attrs.get("trial_seconds")
        return (
            f"trial {trial.number}: {metric} {trial.values[0]:.4f} | "
            f"{int(trial.values[1]):,} params ({attrs.get('trainable_pct', 0):.3f}%) | "
            f"{summary}" + (f" | {seconds:.1f} s" if isinstance(seconds, int | float) else "")
        )
    if trial.state == TrialState.PRUNED and attrs.get("pruned_at"):
        at = attrs["pruned_at"]
        return (
            f"trial {trial.number}: stopped at step {at.get('step')} of {at.get('of')} "
            f"({metric} {at.get('metric', float('nan')):.4f} there; ranked low at rung "
            f"{at.get('rung')}) | {int(attrs.get('trainable_params', 0)):,} params | {summary}"
        )
    if "fail_reason" in attrs:
        return f"trial {trial.number} FAILED ({summary}): {attrs['fail_reason']}"
    if attrs.get(INTERRUPTED):
        return f"trial {trial.number} interrupted; it will run again"
    if trial.state == TrialState.FAIL:
        return f"trial {trial.number}: its worker stopped beating; it will run again"
    return f"trial {trial.number}: {trial.state.name.lower()}"


def retry_attrs(trial: Any) -> dict[str, Any]:
    """The user attributes of a trial's retry: which trial it repeats, and its coverage mark
    (a coverage trial's retry is still one)."""
    out: dict[str, Any] = {"retry_of": trial.number}
    if trial.user_attrs.get("coverage"):
        out["coverage"] = True
    return out


def _requeue_interrupted(study: Any, trials: list[Any]) -> None:
    """Enqueue again each interrupted trial that has no retry yet (under the admission lock,
    so two workers starting together do not both enqueue it)."""
    from optuna.trial import TrialState

    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED) and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs=retry_attrs(t))


_Guard = TypeVar("_Guard", bound="_OnSigint")


class _OnSigint:
    """Installs ``self._handler`` for SIGINT while inside; only the main thread receives
    signals, so elsewhere this installs nothing."""

    _old: Any = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        raise NotImplementedError

    def __enter__(self: _Guard) -> _Guard:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


class Sigint(_OnSigint):
    """Ctrl-C that cannot be lost while trials run.

    Python's default handler raises KeyboardInterrupt wherever the main thread happens to be;
    when that is a finalizer or weakref callback (sqlalchemy's connection pool runs some),
    Python prints "Exception ignored" and the run goes on: seen in CI, where a Ctrl-C'd
    ``search run`` finished its budget and exited 0. This handler raises the same way, at once,
    and also remembers the press (``seen``, for the process: :class:`_DeferSigint` records its
    presses there too), so :meth:`check`, called by the loop at every step and turn, raises it
    again if it was swallowed. Leaving forgets the press: it was raised by then.
    """

    seen = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        Sigint.seen = True
        raise KeyboardInterrupt

    @staticmethod
    def check() -> None:
        if Sigint.seen:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            Sigint.seen = False
        super().__exit__(*exc)


class _DeferSigint(_OnSigint):
    """Hold Ctrl-C back over a few storage writes that must not be cut in half.

    Inside, a first SIGINT only sets ``caught`` (and :attr:`Sigint.seen`); the caller acts on
    it afterwards (a second one raises as usual).
    """

    def __init__(self) -> None:
        self.caught = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.caught:  # pressed again: the user insists (a hung database, say)
            raise KeyboardInterrupt
        self.caught = Sigint.seen = True


class _Silent:
    """The display of a worker process: its parent shows the study, read from the storage."""

    def trial_started(self, number: int, summary: str) -> None:
        pass

    def trial_step(self, number: int, step: int, total: int) -> None:
        pass

    def trial_finished(
        self, line: str, done: int | None, best: float | None, front: int | None, number: Any = None
    ) -> None:
        pass

    def note(self, line: str) -> None:
        pass


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # We run heartbeats ourselves around each trial (below), which is what optimize() does.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def run_trials(
    space: Space,
    runner: Any,
    make_display: Callable[[int], AbstractContextManager[Any]],
    *,
    warn: Callable[[str], None] = _warn,
    on_ready: Callable[[], None] | None = None,
    worker: dict[str, Any] | None = None,
    refresh_report: bool = True,
    keep_going: Callable[[], bool] | None = None,
) -> tuple[Any, RunOutcome]:
    """One worker: set up, then take trials until the study's budget is met.

    Admission, or how ``n_trials`` stays exact with any number of workers: a worker takes a
    slot of the budget by holding the study's :class:`~peftsearch.searcher.storage.Admission`
    lock while it counts the trials that count or are RUNNING and, only if that is below
    ``n_trials``, calls ``study.ask()``, which creates (or takes from the queue) a RUNNING
    trial before the lock is let go. So ``counting + running <= n_trials`` holds at every
    moment for the whole study, and counting trials only come from running ones: no overshoot.
    A slot comes back only when a running trial ends without counting (Ctrl-C, a dead worker
    found by its heartbeat), and its retry is queued; a worker that finds every slot taken by
    running trials waits and looks again, so the retry of a trial whose worker died still runs
    in this run. Queued (WAITING) trials take no slot: ``ask()`` hands them out first.
    Why a lock rather than "ask, then check my trial number": a trial that turns out to be
    over the budget already exists and would have to be told FAIL or PRUNED, which either
    pollutes the study with trials that never ran or counts toward the budget; Optuna has no
    way to discard a trial. The lock is held for a count and a sample, never for a trial.

    The sampler is rebuilt before each ask with the seed offset by the number of trials so
    far: workers that start together would otherwise draw the same random start-up configs.

    Args:
        space: a validated space; its storage is ``resolve_url(space)``.
        runner: ``setup()``, ``splits``, ``base_params``, ``run(params, on_step)``.
        make_display: called with the number of trials already done; gives a context that
            yields a :class:`StudyProgress` or anything with its four methods.
        warn: where warnings go (a worker process sends them to its parent).
        on_ready: called once the study is open and recorded, before the first trial.
        worker: stored on each trial as the ``worker`` user attr (with host and pid).
        refresh_report: rewrite ``<output>/report.html`` every few trials of this worker.
        keep_going: asked before each new trial; False stops like a Ctrl-C (a worker whose
            parent died must not start a trial its watcher would interrupt a second later).

    Returns:
        The study and an outcome whose counts and front are not filled yet.
    """
    from optuna.storages import fail_stale_trials

    _quiet_optuna()
    make_sampler(space)  # a bad sampler name or kwargs fails here, before any file exists
    runner.setup()  # data and model problems surface here, before any file exists
    check_storage(space)  # and storage problems
    out = _prepare_output(space)
    study = open_study(space)
    space = found_words(study, space, runner, warn)  # verbalizers.auto: found once, stored
    url = resolve_url(space)
    n_trials = space.study.n_trials
    outcome = RunOutcome(space.study_name, display_url(url), out, {})
    me = {"host": socket.gethostname(), "pid": os.getpid(), **(worker or {})}
    admission = Admission(url, space.study_name)
    try:
        with admission():
            if not study.trials:
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
            fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            _requeue_interrupted(study, trials)
            _record_study(study, space, runner, out, warn)
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
                _loop(
                    space,
                    runner,
                    display,
                    study,
                    outcome,
                    admission,
                    me,
                    refresh_report,
                    keep_going,
                )
    finally:
        admission.close()
    return study, outcome


class SequentialPack:
    """A pack of one, for any runner with ``run(params, on_step)``: each ``step`` runs the
    queued trial whole. Used when ``study.pack`` is 1."""

    capacity = 1

    def __init__(
        self,
        runner: Any,
        on_step: Callable[[Any, int, int], None],
        on_rung: Callable[..., bool] | None = None,
    ) -> None:
        self.runner, self.on_step, self.on_rung = runner, on_step, on_rung
        self._queue: list[tuple[Any, dict[str, Any]]] = []

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: Any, params: dict[str, Any]) -> None:
        self._queue.append((key, params))

    def step(self) -> list[tuple[Any, Any]]:
        key, params = self._queue[0]
        kwargs: dict[str, Any] = {}
        if self.on_rung is not None:
            on_rung = self.on_rung
            kwargs["on_rung"] = lambda *a: on_rung(key, *a)

        def on_step(step: int, total: int) -> None:
            self.on_step(key, step, total)
            Sigint.check()  # a whole trial runs in here: a swallowed Ctrl-C stops it

        try:
            result: Any = self.runner.run(params, on_step=on_step, **kwargs)
        except Exception as exc:
            result = exc
        finally:
            self._queue.pop(0)
        return [(key, result)]

    def progress(self) -> list[tuple[Any, int, int]]:
        return []  # reported through on_step while a trial runs

    def clear(self) -> None:
        self._queue.clear()


def make_pack(
    space: Space, runner: Any, display: Any, on_rung: Callable[..., bool] | None = None
) -> Any:
    """``study.pack`` trials at a time through ``runner.pack``, or one at a time.
    ``on_rung(number, rung, step, metric, eval_loss, trainable)``: the pruner's decision."""
    size = pack_size(space)
    if size > 1:
        if not hasattr(runner, "pack"):
            raise UserError(f"{space.file}: study.pack: this runner trains one trial at a time")
        return runner.pack(size, on_rung) if on_rung is not None else runner.pack(size)
    return SequentialPack(runner, display.trial_step, on_rung)


def make_pruner(space: Space, runner: Any) -> Any:
    """The study's MO-ASHA, or None (``study.pruner: none``, or a runner without rungs)."""
    spec = space.study.pruner
    if spec.type == "none" or not getattr(runner, "supports_rungs", False):
        return None
    from peftsearch.searcher.pruners import MOASHA

    return MOASHA(spec.reduction, spec.min_trials)


def pack_size(space: Space) -> int:
    """``study.pack`` as a number: ``auto`` is :data:`AUTO_PACK_CUDA` on a GPU, 1 on CPU."""
    pack = space.study.pack
    if pack != "auto":
        return int(pack)
    from peftsearch.objectives.model import pick_device

    return AUTO_PACK_CUDA if pick_device(space.model.device).type == "cuda" else 1


@dataclass
class _Flight:
    """A trial this worker asked for and has not told yet."""

    trial: Any
    beat: Any
    t0: float


def _loop(
    space: Space,
    runner: Any,
    display: Any,
    study: Any,
    outcome: RunOutcome,
    admission: Admission,
    me: dict[str, Any],
    refresh_report: bool,
    keep_going: Callable[[], bool] | None = None,
) -> None:
    """Keep the pack full: take budget slots while it has room, step it, tell what finishes."""
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import get_heartbeat_thread  # ask/tell has no public one
    from optuna.trial import TrialState

    n_trials = space.study.n_trials
    start = time.monotonic()
    since_report, last_report = 0, time.monotonic()
    told_waiting = False
    flights: dict[int, _Flight] = {}
    pruner = make_pruner(space, runner)

    def on_rung(number: int, rung: int, step: int, metric: float, loss: float, n: int) -> bool:
        trial = flights[number].trial
        # A coverage trial is the study's evidence for its size class: it is ranked (a peer
        # of later trials) but always goes on.
        protect = bool(study._storage.get_trial(trial._trial_id).user_attrs.get("coverage"))
        with _DeferSigint():  # the rung record is written whole
            stop = bool(pruner.decide(study, trial, rung, step, metric, loss, n, protect=protect))
        Sigint.check()  # a Ctrl-C held back while the record was written
        return stop

    pack = make_pack(space, runner, display, on_rung if pruner is not None else None)
    retry_at = 0.0  # the pack has room but the budget had none: look again then (or sooner)
    try:
        while True:
            Sigint.check()
            ended: list[tuple[int, Any]] = []  # (trial number, TrialResult or exception)
            stop = None  # why no trial was asked: "done", "timeout", "waiting", "interrupt"
            # Asking takes the storage lock and reads every trial: not once per training step.
            may_ask = not flights or time.monotonic() >= retry_at
            while may_ask and len(flights) < pack.capacity:
                if keep_going is not None and not keep_going():
                    stop = "interrupt"
                    break
                trial = None
                # Under the lock, Ctrl-C held back: a trial is asked and beating, or not asked.
                with _DeferSigint() as held, admission():
                    fail_stale_trials(study)
                    trials = study.get_trials(deepcopy=False)
                    done = sum(map(counts_toward_budget, trials))
                    running = sum(t.state == TrialState.RUNNING for t in trials)
                    timed_out = (
                        space.study.timeout is not None
                        and time.monotonic() - start > space.study.timeout
                    )
                    if done < n_trials and not timed_out and done + running < n_trials:
                        study.sampler = make_sampler(space, n_existing=len(trials))
                        trial = study.ask()
                        beat = get_heartbeat_thread(trial._trial_id, study._storage)
                        beat.start()
                        flights[trial.number] = _Flight(trial, beat, time.perf_counter())
                if held.caught:
                    stop = "interrupt"
                elif trial is None:
                    stop = "done" if done >= n_trials else "timeout" if timed_out else "waiting"
                if stop is not None:
                    retry_at = time.monotonic() + WAIT_SECONDS
                    break
                assert trial is not None
                told_waiting = False
                failed = _start(space, pack, display, trial, me)
                if failed is not None:  # an exception, or a Repeat: told below, not trained
                    ended.append((trial.number, failed))
            if stop == "interrupt":
                raise KeyboardInterrupt
            if len(pack):
                ended += pack.step()
                Sigint.check()  # pressed during the step but swallowed there: stop now
            if ended:
                retry_at = 0.0  # a slot of the budget may have come back
            for number, result in ended:
                flight = flights.pop(number)
                frozen, line = _tell(space, study, flight, result, display)
                trials = study.get_trials(deepcopy=False)
                top, front = front_summary(trials)
                done = min(sum(map(counts_toward_budget, trials)), n_trials)
                display.trial_finished(line, done, top, front, number)
                since_report += 1
                if refresh_report and report_due(since_report, last_report):
                    report = write_report_safely(study, outcome.output_dir, display.note)
                    upload_study_artifacts(study, space, report, display.note)
                    since_report, last_report = 0, time.monotonic()
                if frozen is None:  # Ctrl-C came while the result was being stored: it is
                    raise KeyboardInterrupt
            for number, step, total in pack.progress():
                display.trial_step(number, step, total)
            if not flights and not ended:
                if stop == "done":
                    break
                if stop == "timeout":
                    display.note(
                        f"timeout of {space.study.timeout:g} s reached; no new trial started"
                    )
                    outcome.stopped_by_timeout = True
                    break
                if not told_waiting:  # every slot is held by a running trial, maybe a dead one
                    display.note(
                        f"waiting: {running} trial(s) running elsewhere hold the rest of the "
                        f"budget (a dead worker's trial runs again after "
                        f"{storage_mod.GRACE_SECONDS} s without heartbeat)"
                    )
                    told_waiting = True
                time.sleep(min(storage_mod.HEARTBEAT_SECONDS / 2, WAIT_SECONDS))
    except KeyboardInterrupt:  # while asking, suggesting or training: these trials are RUNNING
        pack.clear()
        with _DeferSigint():  # a second Ctrl-C must not cut the marking in half
            for number, flight in sorted(flights.items()):
                trial = flight.trial
                trial.set_user_attr(INTERRUPTED, True)
                trial.set_user_attr(
                    "fail_note", "interrupted by the user (Ctrl-C); re-run resumes it"
                )
                with admission():  # with the lock: a starting worker may requeue it too
                    study.tell(trial, state=TrialState.FAIL)
                    frozen_now = study._storage.get_trial(trial._trial_id)
                    study.enqueue_trial(trial.params, user_attrs=retry_attrs(frozen_now))
                display.note(f"trial {number} interrupted; it will run again on resume")
        outcome.interrupted = True
    finally:
        for flight in flights.values():
            flight.beat.join()


@dataclass
class Repeat:
    """A trial whose configuration an earlier trial already ran with the same seed: it is not
    trained again; it is told the earlier trial's values and state, with ``duplicate_of``."""

    of: Any  # the earlier FrozenTrial


def find_repeat(study: Any, params: dict[str, Any]) -> Any:
    """The earliest COMPLETE or PRUNED trial of ``study`` that ran exactly ``params`` (its own
    full ``params`` attribute), or None. Every trial trains with the study's seed, so the same
    parameters give the same result."""
    from optuna.trial import TrialState

    want = json.dumps(params, sort_keys=True, default=str)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        stored = t.user_attrs.get("params")
        if stored is None or "duplicate_of" in t.user_attrs:
            continue
        if json.dumps(stored, sort_keys=True, default=str) == want:
            return t
    return None


def _start(space: Space, pack: Any, display: Any, trial: Any, me: dict[str, Any]) -> Any:
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


def _tell(space: Space, study: Any, flight: _Flight, result: Any, display: Any) -> tuple[Any, str]:
    """Store a trial's result or failure and tell Optuna; stop its heartbeat.

    Returns the told trial (None if Ctrl-C came while it was being told) and its line.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    trial = flight.trial
    reason, tb = None, ""
    if isinstance(result, TrialFailed):
        reason = str(result)
    elif isinstance(result, BaseException):
        text = str(result).splitlines()[0] if str(result) else ""
        reason = f"{type(result).__name__}: {text}"
        tb = "".join(traceback.format_exception(result))[-4000:]
    with _DeferSigint() as held:  # the result is stored whole, or (if killed) not at all
        try:
            seconds = {"trial_seconds": round(time.perf_counter() - flight.t0, 3)}
            if reason is not None:
                tb_attr = {"fail_traceback": tb} if tb else {}
                set_user_attrs(study, trial, {**seconds, **tb_attr, "fail_reason": reason})
                frozen = study.tell(trial, state=TrialState.FAIL)
            elif isinstance(result, Repeat):
                of = result.of
                keep = ("trainable_params", "trainable_pct", "base_params", "template_text")
                attrs = {k: of.user_attrs[k] for k in keep if k in of.user_attrs}
                attrs.update(
                    {**seconds, "duplicate_of": of.number, "train_steps": 0, "planned_steps": 0}
                )
                if "pruned_at" in of.user_attrs:
                    attrs["pruned_at"] = of.user_attrs["pruned_at"]
                set_user_attrs(study, trial, attrs)
                if of.state == TrialState.COMPLETE:
                    frozen = study.tell(trial, list(of.values))
                else:
                    frozen = study.tell(trial, state=TrialState.PRUNED)
            elif getattr(result, "pruned", False):
                rungs = study._storage.get_trial(trial._trial_id).user_attrs.get("rungs") or []
                stopped = {
                    "rung": rungs[-1]["rung"] if rungs else None,
                    "step": result.attrs.get("train_steps"),
                    "of": result.attrs.get("planned_steps"),
                    "metric": result.metric,
                }
                attrs = {**seconds, **result.attrs, "pruned_at": stopped}
                set_user_attrs(study, trial, attrs)
                # No values and no intermediate values: see peftsearch.searcher.pruners.
                frozen = study.tell(trial, state=TrialState.PRUNED)
            else:
                set_user_attrs(study, trial, {**seconds, **result.attrs})
                # Before tell: Optuna refuses to attach anything to a finished trial.
                upload_trial_artifacts(
                    study, trial, space, [result.metric, result.trainable_params], display.note
                )
                frozen = study.tell(trial, [result.metric, result.trainable_params])
            line = finished_line(frozen, space.objectives.metric)
        except UpdateFinishedTrialError:
            # Its heartbeats did not reach the storage for the grace period (a network
            # outage, a paused process), so another worker declared it dead and queued a
            # retry. The retry owns the slot now: this result is dropped, not counted twice.
            frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
            line = (
                f"trial {trial.number}: finished after it was declared dead (no heartbeat for "
                f"{storage_mod.GRACE_SECONDS} s); its retry runs it again"
            )
        finally:
            flight.beat.join()
    return (None if held.caught else frozen), line


def finish(
    study: Any, outcome: RunOutcome, note: Callable[[str], None] | None = None
) -> RunOutcome:
    """Fill the outcome's counts and front; write ``pareto.csv`` and the report."""
    from peftsearch.reports import pareto_rows, write_csv

    outcome.counts = state_counts(study.get_trials(deepcopy=False))
    outcome.pareto = pareto_rows(study)
    write_csv(outcome.pareto, outcome.output_dir / "pareto.csv")
    outcome.report = write_report_safely(
        study, outcome.output_dir, note or (lambda m: print(m, file=sys.stderr))
    )
    return outcome


def run_study(space: Space, runner: Any = None, show_progress: bool = True) -> RunOutcome:
    """Run (or resume) the study of ``space`` until ``study.n_trials`` trials have ended.

    This process is one worker; others (``search run`` elsewhere on the same storage, or
    :func:`peftsearch.searcher.workers.run_workers`) may share the study.

    Args:
        space: a validated space.
        runner: anything with ``setup()``, ``splits``, ``base_params`` and
            ``run(params, on_step) -> TrialResult``; default: a :class:`TrialRunner`.
        show_progress: draw the live display (off in tests).

    Raises:
        UserError: bad data, model, output directory or storage; raised before any file is made.
    """
    if runner is None:
        from peftsearch.objectives.runner import TrialRunner

        runner = TrialRunner(space)
    n_trials, metric = space.study.n_trials, space.objectives.metric
    study, outcome = run_trials(
        space, runner, lambda done: StudyProgress(n_trials, done, metric, show_progress)
    )
    outcome = finish(study, outcome)
    upload_study_artifacts(study, space, outcome.report)
    write_dashboard_note(study, space)
    return outcome
