"""What a run shows: one line per trial, the study's best metric and front size, its counts;
and the display that shows them (:class:`~peftsearch.searcher.progress.StudyProgress`, or
:class:`_Silent` in a worker process)."""

from __future__ import annotations

import math
from typing import Any, Protocol

from peftsearch.objectives import adapters
from peftsearch.searcher.sigint import INTERRUPTED


class Display(Protocol):
    """Where the worker loop reports (:class:`~peftsearch.searcher.progress.StudyProgress`)."""

    def trial_started(self, number: int, summary: str) -> None: ...

    def trial_step(self, number: int, step: int, total: int) -> None: ...

    def trial_finished(
        self, line: str, done: int, best: float | None, front: int, number: Any = None
    ) -> None: ...

    def note(self, line: str) -> None: ...


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


def _summary(params: dict[str, Any], trains: bool = True) -> str:
    """``template [x verbalizer] | prompt K | r R | lr ...`` (``| ia3`` for a method without
    a size): each adapter's size
    (:attr:`Adapter.size_param`, named by its :attr:`Adapter.short`) and the rate of each part
    the trial trains (the head's when it has its own, or when nothing else trains);
    ``trains`` False (a language model with no adapter): ``untrained``."""

    def rate(name: str | None) -> str:
        value = params.get(name) if name else None
        if value is None and name != "learning_rate":
            value = params.get("learning_rate")  # unset: the part follows learning_rate
        return f"{value:.2e}" if isinstance(value, int | float) else str(value)

    lrs: list[str] = []
    for a in adapters.ADAPTERS.values():
        own = a.rate_param not in (None, "learning_rate") and params.get(a.rate_param) is not None
        if (a.in_kind and a.used(params)) or (not a.in_kind and (own or not lrs)):
            lrs.append(f"{a.name} {rate(a.rate_param)}")
    own_rates = [a.rate_param for a in adapters.ADAPTERS.values() if a.rate_param]
    if all(params.get(n) is None for n in own_rates if n != "learning_rate"):
        lrs = [rate("learning_rate")]  # one rate for every part (spaces before issue 11)
    verbalizer = f" x {params['verbalizer']}" if params.get("verbalizer") else ""
    method = params.get("adapter", "lora")  # the weight adapter (`adapter`)
    # each adapter's size, but not another method's (the lora_r of an IA3 trial means nothing);
    # a method without a size by its name
    short = {a.size_param: a.short or a.name for a in adapters.ADAPTERS.values() if a.size_param}
    shown = [f"{short[n]} {v}" for n, v in adapters.sizes(params).items() if v is not None]
    shown += [
        a.short or a.name
        for a in adapters.ADAPTERS.values()
        if a.method and not a.size_param and a.name == method
    ]
    shown += [w for a in adapters.used(params) if a.method and (w := a.where(params))]
    rates = f"lr {', '.join(lrs)}" if trains else "untrained"
    return f"{params.get('template')}{verbalizer} | {' | '.join(shown)} | {rates}"


def finished_line(trial: Any, metric: str) -> str:
    """One line for a finished trial (the same whether this process or another ran it)."""
    from optuna.trial import TrialState

    attrs = trial.user_attrs
    summary = _summary(attrs.get("params") or trial.params, attrs.get("trainable_params") != 0)
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
