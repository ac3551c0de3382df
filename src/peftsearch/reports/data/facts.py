"""Study-level facts for the report's summary and failures (:func:`summary`): model, data,
budget, sampler, trial counts, failure reasons, compute, devices and versions. Never the
storage URL."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

# The trial states a summary counts, in display order (Optuna's TrialState names, lower case).
STATES = ("complete", "pruned", "fail", "running", "waiting")
NO_REASON = "no reason recorded (the worker stopped: killed, or its heartbeat was lost)"


@dataclass(frozen=True)
class Summary:
    study_name: str
    metric: str
    model: str | None
    data_source: str | None
    data_sha256: str | None
    split_sizes: dict[str, int]  # train/validation/test and the per-trial subsamples
    split: dict[str, Any]  # fractions and seed of the stratified split
    labels: list[str]
    base_params: int | None
    budget: dict[str, Any]  # what one trial costs: rows, epochs, batch size, max steps
    sampler: dict[str, Any]  # name, kwargs, seed, n_trials, timeout (never the storage)
    search_space: dict[str, Any]  # searched parameters as Optuna-style dicts
    counts: dict[str, int]  # every state of STATES, 0 included
    failures: list[tuple[str, int]]  # distinct failure reasons with their counts, most first
    compute_seconds: float  # sum of trial_seconds over all trials
    devices: list[str]
    versions: list[tuple[dict[str, str], list[int]]]  # distinct version sets and their trials


def _budget(attrs: dict[str, Any]) -> dict[str, Any]:
    sizes = attrs.get("data", {}).get("sizes", {})
    fixed = attrs.get("fixed_params", {})
    searched = attrs.get("search_space", {})

    def setting(name: str) -> Any:
        spec = searched.get(name)
        if isinstance(spec, dict) and "type" in spec:
            return "searched"
        return fixed.get(name, spec)

    return {
        "train rows": sizes.get("trial_train"),
        "eval rows": sizes.get("trial_eval"),
        "epochs": setting("epochs"),
        "batch size": setting("batch_size"),
        "max steps": setting("max_steps"),
    }


def _failure_reason(t: optuna.trial.FrozenTrial) -> str:
    attrs = t.user_attrs
    return str(attrs.get("fail_reason") or attrs.get("fail_note") or NO_REASON)


def _versions(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[dict[str, str], list[int]]]:
    """The distinct ``versions`` user attributes, each with the trials that recorded it."""
    versions: dict[str, tuple[dict[str, str], list[int]]] = {}
    for t in trials:
        v = t.user_attrs.get("versions")
        if isinstance(v, dict):
            versions.setdefault(repr(sorted(v.items())), (v, []))[1].append(t.number)
    return list(versions.values())


def summary(study: optuna.Study) -> Summary:
    """Study-level facts: model, data, budget, sampler, trial counts, failures, compute.

    Args:
        study: the search's study; its ``space`` attribute's storage is never read.

    Returns:
        The :class:`Summary`: plain values, nothing escaped.
    """
    from optuna.trial import TrialState

    attrs = study.user_attrs
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    counts = {s: 0 for s in STATES}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    failures = Counter(_failure_reason(t) for t in trials if t.state == TrialState.FAIL)
    data = attrs.get("data", {})
    study_spec = attrs.get("space", {}).get("study", {})
    sampler = {
        k: study_spec[k]
        for k in ("sampler", "sampler_kwargs", "seed", "n_trials", "timeout")
        if k in study_spec
    }
    seconds = sum(float(t.user_attrs.get("trial_seconds") or 0.0) for t in trials)
    devices = sorted({str(t.user_attrs["device"]) for t in trials if "device" in t.user_attrs})
    return Summary(
        study_name=study.study_name,
        metric=str(attrs.get("metric", "metric")),
        model=attrs.get("model"),
        data_source=data.get("source"),
        data_sha256=data.get("sha256"),
        split_sizes=dict(data.get("sizes", {})),
        split=dict(data.get("split", {})),
        labels=[str(x) for x in data.get("labels", [])],
        base_params=attrs.get("base_params"),
        budget=_budget(attrs),
        sampler=sampler,
        search_space={
            k: v
            for k, v in attrs.get("search_space", {}).items()
            if isinstance(v, dict) and "type" in v
        },
        counts=counts,
        failures=sorted(failures.items(), key=lambda kv: (-kv[1], kv[0])),
        compute_seconds=seconds,
        devices=devices,
        versions=_versions(trials),
    )
