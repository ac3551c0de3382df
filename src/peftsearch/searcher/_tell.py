"""Telling Optuna how a trial ended (a result, a failure, a repeat of an earlier trial, a
trial stopped at a rung), and queueing again the trials that Ctrl-C stopped."""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from typing import Any

from peftsearch.errors import TrialFailed
from peftsearch.searcher import storage as storage_mod
from peftsearch.searcher.artifacts import upload_trial_artifacts
from peftsearch.searcher.lines import Display, finished_line
from peftsearch.searcher.sigint import INTERRUPTED, _DeferSigint
from peftsearch.searcher.storage import set_user_attrs
from peftsearch.spaces import Space

# A repeat is told the earlier trial's values and these of its attributes.
_REPEATED_ATTRS = ("trainable_params", "trainable_pct", "base_params", "template_text")


@dataclass
class _Flight:
    """A trial this worker asked for and has not told yet."""

    trial: Any
    beat: Any
    t0: float


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


def _tell(
    space: Space, study: Any, flight: _Flight, result: Any, display: Display
) -> tuple[Any, str]:
    """Store a trial's result or failure and tell Optuna; stop its heartbeat.

    Returns the told trial (None if Ctrl-C came while it was being told) and its line.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    trial = flight.trial
    failure = _failure(result)
    with _DeferSigint() as held:  # the result is stored whole, or (if killed) not at all
        try:
            seconds = {"trial_seconds": round(time.perf_counter() - flight.t0, 3)}
            frozen = _store(space, study, trial, result, failure, seconds, display)
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


def _failure(result: Any) -> tuple[str | None, str]:
    """Why a trial failed (None: it did not) and the traceback of an unexpected exception."""
    if isinstance(result, TrialFailed):
        return str(result), ""
    if isinstance(result, BaseException):
        text = str(result).splitlines()[0] if str(result) else ""
        tb = "".join(traceback.format_exception(result))[-4000:]
        return f"{type(result).__name__}: {text}", tb
    return None, ""


def _store(
    space: Space,
    study: Any,
    trial: Any,
    result: Any,
    failure: tuple[str | None, str],
    seconds: dict[str, Any],
    display: Display,
) -> Any:
    """The trial's attributes, then ``study.tell``; returns the told (frozen) trial."""
    from optuna.trial import TrialState

    reason, tb = failure
    if reason is not None:
        tb_attr = {"fail_traceback": tb} if tb else {}
        set_user_attrs(study, trial, {**seconds, **tb_attr, "fail_reason": reason})
        return study.tell(trial, state=TrialState.FAIL)
    if isinstance(result, Repeat):
        return _tell_repeat(study, trial, result.of, seconds)
    if getattr(result, "pruned", False):
        return _tell_pruned(study, trial, result, seconds)
    set_user_attrs(study, trial, {**seconds, **result.attrs})
    # Before tell: Optuna refuses to attach anything to a finished trial.
    upload_trial_artifacts(
        study, trial, space, [result.metric, result.trainable_params], display.note
    )
    return study.tell(trial, [result.metric, result.trainable_params])


def _tell_repeat(study: Any, trial: Any, of: Any, seconds: dict[str, Any]) -> Any:
    """A repeat: the earlier trial's values (or its PRUNED state), not trained again."""
    from optuna.trial import TrialState

    attrs = {k: of.user_attrs[k] for k in _REPEATED_ATTRS if k in of.user_attrs}
    attrs.update({**seconds, "duplicate_of": of.number, "train_steps": 0, "planned_steps": 0})
    if "pruned_at" in of.user_attrs:
        attrs["pruned_at"] = of.user_attrs["pruned_at"]
    set_user_attrs(study, trial, attrs)
    if of.state == TrialState.COMPLETE:
        return study.tell(trial, list(of.values))
    return study.tell(trial, state=TrialState.PRUNED)


def _tell_pruned(study: Any, trial: Any, result: Any, seconds: dict[str, Any]) -> Any:
    """A trial stopped at a rung: PRUNED, with where it stopped (``pruned_at``)."""
    from optuna.trial import TrialState

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
    return study.tell(trial, state=TrialState.PRUNED)
