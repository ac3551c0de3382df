"""What successive halving did (``peftsearch.searcher.pruners``): the trials it stopped, each
rung's scores, the compute it saved (:func:`pruning_info`) and each trial's metric against its
training steps (:func:`step_curves`).

The pruner writes on each trial a ``rungs`` list (what it scored at each rung it reached); a
trial it stopped is PRUNED, without values, with a ``pruned_at`` record. Studies from before
pruning have none of these attributes.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any, NamedTuple

from peftsearch.objectives import adapters
from peftsearch.reports.data import common
from peftsearch.reports.trials import front_trials

if TYPE_CHECKING:
    import optuna


class RungScore(NamedTuple):
    """What one trial scored at one rung of successive halving."""

    rung: int
    step: int
    metric: float
    peers: int | None  # how many other trials it was ranked against (None: not recorded)
    stopped: bool  # this rung stopped it
    protected: bool = False  # ranked low enough to stop, kept on as a coverage trial


class StoppedTrial(NamedTuple):
    """A trial successive halving stopped early (PRUNED, not a repeat)."""

    trial: int
    template: str | None
    sizes: dict[str, Any]  # each adapter's size parameter (prompt_length, lora_r, ...)
    rates: dict[str, float]  # each adapter it trained -> its learning rate
    params: int | None  # trainable parameters
    rung: int | None  # the rung that stopped it
    step: int | None  # stopped at this training step ...
    of: int | None  # ... of this many planned
    metric: float | None  # its score at that rung
    peers: int | None  # the trials it was ranked against there
    rungs: list[RungScore]  # every rung it reached, in order
    coverage: bool  # one of the coverage trials run first
    config: dict[str, Any]


class RungSummary(NamedTuple):
    """One rung over every finished trial that reached it (repeats left out)."""

    rung: int
    reached: int  # trials scored at this rung
    stopped: int  # of which stopped there
    steps: tuple[int, int]  # (fewest, most) training steps at which trials reached it
    metrics: list[float]  # their scores there, ascending
    median: float
    protected: int = 0  # of which ranked low enough to stop but kept (coverage trials)


class ComputeSaved(NamedTuple):
    """Training steps run against the steps the same trials would have run unpruned."""

    trials: int  # finished trials that recorded their steps (repeats left out: they ran none)
    steps_run: int
    steps_planned: int  # sum of planned_steps: every trial trained to its end
    ratio: float | None  # steps_run / steps_planned, None without planned steps
    saved: int  # steps_planned - steps_run


class PruningInfo(NamedTuple):
    stopped: list[StoppedTrial]  # by trial number
    rungs: list[RungSummary]  # by rung
    with_rungs: int  # finished non-repeat trials with rung records (0: pruning off or old study)
    repeats: int  # PRUNED repeats of a stopped configuration (not trained, not listed)
    compute: ComputeSaved


class StepCurve(NamedTuple):
    """A trial's metric against its training steps: its rungs, then its end if it completed."""

    trial: int
    template: str
    steps: list[int]
    metrics: list[float]
    stopped: bool  # ends at the rung that stopped it
    pareto: bool
    params: int | None  # trainable parameters
    config: dict[str, Any]


def _rung_scores(trial: optuna.trial.FrozenTrial) -> list[RungScore]:
    """The trial's ``rungs`` records, in rung order (entries missing a number are skipped)."""
    out = []
    for e in trial.user_attrs.get("rungs") or []:
        if not isinstance(e, dict):
            continue
        rung, step = common.as_int(e.get("rung")), common.as_int(e.get("step"))
        metric = e.get("metric")
        if rung is None or step is None or not isinstance(metric, int | float):
            continue
        peers, stopped = common.as_int(e.get("peers")), bool(e.get("stopped"))
        out.append(RungScore(rung, step, float(metric), peers, stopped, bool(e.get("protected"))))
    return sorted(out, key=lambda r: (r.rung, r.step))


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The COMPLETE and PRUNED trials that trained, by number."""
    return sorted([*common.trained(study), *common.stopped(study)], key=lambda t: t.number)


def compute_saved(study: optuna.Study) -> ComputeSaved:
    """Training steps run by the finished non-repeat trials against the steps they planned.

    Counts COMPLETE and PRUNED trials that recorded ``train_steps``; a trial's planned steps
    are its ``planned_steps``, else its ``pruned_at`` ``of``, else its ``train_steps``.
    """
    run = planned = n = 0
    for t in _finished(study):
        done = common.as_int(t.user_attrs.get("train_steps"))
        if done is None:
            continue
        at = t.user_attrs.get("pruned_at")
        of = common.as_int(at.get("of")) if isinstance(at, dict) else None
        plan = common.as_int(t.user_attrs.get("planned_steps")) or of or done
        n, run, planned = n + 1, run + done, planned + max(plan, done)
    return ComputeSaved(n, run, planned, run / planned if planned else None, planned - run)


def _stopped_trial(study: optuna.Study, t: optuna.trial.FrozenTrial) -> StoppedTrial:
    """A PRUNED trial with where it stopped: its ``pruned_at`` record, else its rungs."""
    config = common.config(study, t)
    rungs = _rung_scores(t)
    at = t.user_attrs.get("pruned_at")
    at = at if isinstance(at, dict) else {}
    rung = common.as_int(at.get("rung"))
    here = next((r for r in rungs if r.stopped), None)
    if here is None:
        here = next((r for r in rungs if r.rung == rung), rungs[-1] if rungs else None)
    metric = at.get("metric")
    if not isinstance(metric, int | float):
        metric = here.metric if here else None
    template = config.get("template")
    return StoppedTrial(
        trial=t.number,
        template=None if template is None else str(template),
        sizes=adapters.sizes(config),
        rates=adapters.trained_rates(config),
        params=common.as_int(t.user_attrs.get("trainable_params")),
        rung=rung if rung is not None else (here.rung if here else None),
        step=common.as_int(at.get("step")) or common.as_int(t.user_attrs.get("train_steps")),
        of=common.as_int(at.get("of")) or common.as_int(t.user_attrs.get("planned_steps")),
        metric=None if metric is None else float(metric),
        peers=here.peers if here else None,
        rungs=rungs,
        coverage=bool(t.user_attrs.get("coverage")),
        config=config,
    )


def _rung_summaries(study: optuna.Study) -> tuple[list[RungSummary], int]:
    """Each rung over the finished non-repeat trials, and how many of them have rung records."""
    by_rung: dict[int, list[RungScore]] = {}
    with_rungs = 0
    for t in [*common.trained(study), *common.stopped(study)]:
        scores = _rung_scores(t)
        with_rungs += bool(scores)
        for r in scores:
            by_rung.setdefault(r.rung, []).append(r)
    summaries = [
        RungSummary(
            rung=rung,
            reached=len(rs),
            stopped=sum(r.stopped for r in rs),
            steps=(min(r.step for r in rs), max(r.step for r in rs)),
            metrics=sorted(r.metric for r in rs),
            median=statistics.median(r.metric for r in rs),
            protected=sum(r.protected for r in rs),
        )
        for rung, rs in sorted(by_rung.items())
    ]
    return summaries, with_rungs


def pruning_info(study: optuna.Study) -> PruningInfo:
    """The trials successive halving stopped, each rung's scores and the compute it saved.

    Args:
        study: the search's study (with or without pruning).

    Returns:
        The stopped trials by number, the rungs in order, how many finished trials have rung
        records, how many PRUNED repeats were not trained, and :func:`compute_saved`.
    """
    from optuna.trial import TrialState

    stopped = [_stopped_trial(study, t) for t in common.stopped(study)]
    summaries, with_rungs = _rung_summaries(study)
    repeats = sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        if common.is_repeat(t)
    )
    return PruningInfo(stopped, summaries, with_rungs, repeats, compute_saved(study))


def step_curves(study: optuna.Study) -> list[StepCurve]:
    """Metric against training steps for every non-repeat trial with rung records, by number:
    through its rungs' (step, metric), then, for a COMPLETE trial, its (``train_steps``, final
    metric) when it recorded its steps; a stopped trial ends at its last rung."""
    front = {t.number for t in front_trials(study)}
    curves = []
    for t in _finished(study):
        rungs = _rung_scores(t)
        if not rungs:
            continue
        steps = [r.step for r in rungs]
        metrics = [r.metric for r in rungs]
        done = t.values is not None
        end = common.as_int(t.user_attrs.get("train_steps"))
        if done and end is not None:
            steps.append(end)
            metrics.append(t.values[0])
        params = int(t.values[1]) if done else common.as_int(t.user_attrs.get("trainable_params"))
        config = common.config(study, t)
        curves.append(
            StepCurve(
                trial=t.number,
                template=str(config.get("template")),
                steps=steps,
                metrics=metrics,
                stopped=not done,
                pareto=t.number in front,
                params=params,
                config=config,
            )
        )
    return curves
