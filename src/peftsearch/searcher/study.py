"""The worker loop: ask Optuna for a trial, run it, tell the result, until the budget is met.

Budget: ``study.n_trials`` counts trials that *ended on their own*: COMPLETE, PRUNED, and FAIL
with a recorded reason (the config itself failed: NaN loss, out of memory, an exception).
Trials that ended because their worker went away (Ctrl-C, kill -9) do not count; their
parameters are enqueued again and run first. So re-running the same command resumes the study
and runs only what is missing, and a killed run loses nothing.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from peftsearch.errors import SpaceError, TrialFailed, UserError
from peftsearch.searcher.progress import StudyProgress
from peftsearch.searcher.samplers import make_sampler
from peftsearch.searcher.storage import HEARTBEAT_SECONDS, mask_url, open_storage
from peftsearch.searcher.suggest import fixed_params, suggest
from peftsearch.spaces import Space

REPORT_EVERY = 5  # refresh <output>/report.html after every this many finished trials
DIRECTIONS: list[Literal["maximize", "minimize"]] = ["maximize", "minimize"]  # metric, params
INTERRUPTED = "interrupted"  # user attr on a trial stopped by Ctrl-C


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


def counts_toward_budget(trial: Any) -> bool:
    """True for trials that ended on their own (see the module docstring)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


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

    url = space.storage_url
    try:
        storage = open_storage(url)
        if not create:
            return optuna.load_study(study_name=space.study_name, storage=storage)
        return optuna.create_study(
            study_name=space.study_name,
            storage=storage,
            directions=DIRECTIONS,
            load_if_exists=True,
        )
    except KeyError:
        raise UserError(
            f"{space.file}: no study {space.study_name!r} in {mask_url(url)}; "
            "run `search run` first"
        ) from None
    except Exception as exc:  # sqlalchemy/driver errors: say what, never show the password
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        from sqlalchemy.engine import make_url

        try:
            password = make_url(url).password
        except Exception:
            password = None
        if password:
            msg = msg.replace(str(password), "***")
        raise UserError(
            f"{space.file}: study.storage: cannot open {mask_url(url)}: {msg}"
        ) from None


def _record_study(study: Any, space: Space, runner: Any, out: Path) -> None:
    """Study-level attributes (once), the split record, and a warning if the space changed."""
    searched = {
        k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v)
        for k, v in space.search_params().items()
    }
    attrs = study.user_attrs
    if "search_space" in attrs and attrs["search_space"] != json.loads(json.dumps(searched)):
        print(
            f"warning: {space.file}: params differ from the search space this study started "
            "with; its earlier trials stay, so compare them with care",
            file=sys.stderr,
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
        print(
            f"warning: {space.file}: the data split differs from the one recorded in {record}; "
            "earlier trials were scored on other rows",
            file=sys.stderr,
        )


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
    return (
        f"{params['template']} | prompt {params['prompt_length']} | r {params['lora_r']} | "
        f"lr {params['learning_rate']:.2e}"
    )


def _requeue_interrupted(study: Any, trials: list[Any]) -> None:
    """Enqueue again each interrupted trial that has no retry yet."""
    from optuna.trial import TrialState

    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED) and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def run_study(space: Space, runner: Any = None, show_progress: bool = True) -> RunOutcome:
    """Run (or resume) the study of ``space`` until ``study.n_trials`` trials have ended.

    Args:
        space: a validated space.
        runner: anything with ``setup()``, ``splits``, ``base_params`` and
            ``run(params, on_step) -> TrialResult``; default: a :class:`TrialRunner`.
        show_progress: draw the live display (off in tests).

    Raises:
        UserError: bad data, model, output directory or storage; raised before any file is made.
    """
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import get_heartbeat_thread  # ask/tell has no public one
    from optuna.trial import TrialState

    from peftsearch.reports import pareto_rows, write_csv

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # We run heartbeats ourselves around each trial (below), which is what optimize() does.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    if runner is None:
        from peftsearch.objectives.runner import TrialRunner

        runner = TrialRunner(space)
    make_sampler(space)  # a bad sampler name or kwargs fails here, before any file exists
    runner.setup()  # data and model problems surface here, before any file exists
    out = _prepare_output(space)
    study = open_study(space)
    study.sampler = make_sampler(space, n_existing=len(study.trials))
    if not study.trials:
        for config in space.study.enqueue:
            study.enqueue_trial(
                {k: (",".join(v) if isinstance(v, list) else v) for k, v in config.items()},
                user_attrs={"enqueued": True},
            )
    _record_study(study, space, runner, out)
    n_trials, metric = space.study.n_trials, space.objectives.metric
    outcome = RunOutcome(space.study_name, mask_url(space.storage_url), out, {})
    start = time.monotonic()
    fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    _requeue_interrupted(study, trials)
    done = sum(map(counts_toward_budget, trials))
    finished_here = 0
    with StudyProgress(n_trials, min(done, n_trials), metric, show_progress) as prog:
        if done:
            prog.note(f"resuming study {space.study_name!r}: {done} of {n_trials} trials done")
        while True:
            fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            done = sum(map(counts_toward_budget, trials))
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if done >= n_trials:
                break
            if space.study.timeout is not None and time.monotonic() - start > space.study.timeout:
                prog.note(f"timeout of {space.study.timeout:g} s reached; no new trial started")
                outcome.stopped_by_timeout = True
                break
            if done + running >= n_trials:  # other workers are finishing the budget
                time.sleep(HEARTBEAT_SECONDS / 2)
                continue
            trial = study.ask()
            params = suggest(trial, space)
            trial.set_user_attr("params", params)  # all of them, fixed ones too
            prog.trial_started(trial.number, _summary(params))
            t0 = time.perf_counter()
            reason = None
            try:
                with get_heartbeat_thread(trial._trial_id, study._storage):
                    result = runner.run(params, on_step=prog.step)
            except KeyboardInterrupt:
                trial.set_user_attr(INTERRUPTED, True)
                trial.set_user_attr(
                    "fail_note", "interrupted by the user (Ctrl-C); re-run resumes it"
                )
                study.tell(trial, state=TrialState.FAIL)
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                outcome.interrupted = True
                prog.note(f"trial {trial.number} interrupted; it will run again on resume")
                break
            except TrialFailed as exc:
                reason = str(exc)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                trial.set_user_attr("fail_traceback", traceback.format_exc()[-4000:])
            seconds = time.perf_counter() - t0
            trial.set_user_attr("trial_seconds", round(seconds, 3))
            if reason is not None:
                trial.set_user_attr("fail_reason", reason)
                study.tell(trial, state=TrialState.FAIL)
                line = f"trial {trial.number} FAILED ({_summary(params)}): {reason}"
            else:
                for key, value in result.attrs.items():
                    trial.set_user_attr(key, value)
                study.tell(trial, [result.metric, result.trainable_params])
                line = (
                    f"trial {trial.number}: {metric} {result.metric:.4f} | "
                    f"{result.trainable_params:,} params "
                    f"({result.attrs.get('trainable_pct', 0):.3f}%) | {_summary(params)} | "
                    f"{seconds:.1f} s"
                )
            best = study.best_trials
            top = max((t.values[0] for t in best), default=None)
            prog.trial_finished(line, min(done + 1, n_trials), top, len(best))
            finished_here += 1
            if finished_here % REPORT_EVERY == 0:
                write_report_safely(study, out, prog.note)
    trials = study.get_trials(deepcopy=False)
    outcome.counts = state_counts(trials)
    outcome.pareto = pareto_rows(study)
    write_csv(outcome.pareto, out / "pareto.csv")
    outcome.report = write_report_safely(study, out, lambda m: print(m, file=sys.stderr))
    return outcome
