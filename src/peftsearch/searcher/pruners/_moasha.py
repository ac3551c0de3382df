"""MO-ASHA on an Optuna storage: rung bookkeeping apart from how a rung is ranked.

Optuna has no multi-objective pruning (optuna#3450: ``trial.report`` / ``should_prune`` raise in
a study with two directions), so rungs are ours. A trial that reaches a rung stores what it
scored there in its ``rungs`` user attribute (one storage write), then is ranked against every
trial of the study that reached the same rung: running ones, completed ones (they passed
every rung) and stopped ones. Trials that failed or were interrupted are left out: their retry
reaches the rung again. Because the decision reads the storage, it is the same for trials of
one pack, of several ``--workers`` and of several hosts on PostgreSQL, and after a resume.

The ranking (``_priority.py``) is syne-tune's ``NonDominatedPriority``: non-dominated sorting of
(metric, trainable parameters) with an epsilon-net tie-break, here with eval loss breaking ties
of equal metric (early in training many trials sit at the majority class).

A stopped trial is told PRUNED without intermediate values. What Optuna 5's TPE does with it
(``optuna/samplers/_tpe/sampler.py``): ``_split_trials`` puts COMPLETE trials into the "good"
group first (non-dominated rank, hypervolume tie-break), and PRUNED trials fill it only when
fewer than ``n_below`` trials completed; ``_get_pruned_trial_score`` reads
``study.direction`` only when a pruned trial has intermediate values, which would raise in a
two-objective study, so none are stored. Stopped trials therefore land in the "bad" group:
TPE learns to avoid their region (``tests/searcher/test_pruner.py`` checks that).
"""

from __future__ import annotations

import math
from typing import Any

from peftsearch.searcher.pruners._priority import stop_at_rung

RUNGS_ATTR = "rungs"  # user attr: [{rung, step, fraction, metric, eval_loss, trainable_params}]
PRUNED_ATTR = "pruned_at"  # user attr of a stopped trial: {"rung", "step", "of"}


def rung_entries(trial: Any) -> list[dict[str, Any]]:
    """What ``trial`` scored at each rung it reached."""
    return list(trial.user_attrs.get(RUNGS_ATTR) or [])


class MOASHA:
    """Decides, at a rung, whether a trial goes on (see the module docstring).

    Args:
        reduction: keep the top ``1 / reduction`` of the trials at each rung.
        min_trials: no decision at a rung fewer trials have reached (too little evidence);
            default ``ceil(reduction)``.
    """

    def __init__(self, reduction: float, min_trials: int | None = None) -> None:
        self.reduction = reduction
        self.min_trials = min_trials if min_trials is not None else math.ceil(reduction)

    def decide(
        self,
        study: Any,
        trial: Any,
        rung: int,
        step: int,
        metric: float,
        eval_loss: float,
        trainable: int,
        fraction: float | None = None,
        protect: bool = False,
    ) -> bool:
        """Record the trial's rung score on it and return True when it should stop
        (never when ``protect``: it is ranked and recorded, and goes on)."""
        from peftsearch.searcher.storage import set_user_attrs

        entry = {
            "rung": rung,
            "step": step,
            "fraction": fraction,
            "metric": metric,
            "eval_loss": eval_loss if math.isfinite(eval_loss) else None,
            "trainable_params": trainable,
        }
        # Recorded before the peers are read: a trial deciding at the same moment elsewhere
        # sees this one (each sees the other, never neither).
        mine = [e for e in _own_entries(study, trial) if e.get("rung") != rung] + [entry]
        set_user_attrs(study, trial, {RUNGS_ATTR: mine})
        metrics, losses, params = [], [], []
        for other in rung_peers(study, rung, exclude=trial.number):
            metrics.append(other[0])
            losses.append(other[1])
            params.append(other[2])
        metrics.append(metric)
        losses.append(eval_loss if math.isfinite(eval_loss) else math.nan)
        params.append(trainable)
        stop = bool(
            stop_at_rung(
                len(metrics) - 1,
                metrics,
                losses,
                params,
                self.reduction,
                maximize=True,
                min_trials=self.min_trials,
            )
        )
        if protect and stop:
            entry["protected"] = True
            stop = False
        entry.update({"peers": len(metrics) - 1, "stopped": stop})
        set_user_attrs(study, trial, {RUNGS_ATTR: mine})
        return stop


def _own_entries(study: Any, trial: Any) -> list[dict[str, Any]]:
    frozen = study._storage.get_trial(trial._trial_id)
    return rung_entries(frozen)


def rung_peers(study: Any, rung: int, exclude: int | None = None) -> list[tuple[float, float, int]]:
    """``(metric, eval_loss, trainable params)`` of every other trial that reached ``rung``
    (running, complete or pruned)."""
    from optuna.trial import TrialState

    keep = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    out = []
    for t in study.get_trials(deepcopy=False, states=keep):
        if t.number == exclude:
            continue
        for e in rung_entries(t):
            if e.get("rung") == rung:
                loss = e.get("eval_loss")
                params = int(e.get("trainable_params") or 0)
                out.append((float(e["metric"]), math.nan if loss is None else float(loss), params))
    return out
