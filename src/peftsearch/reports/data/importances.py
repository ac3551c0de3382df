"""Parameter importances per objective (:func:`importances`): Optuna's PED-ANOVA on the
COMPLETE trials that trained, with a note saying why a result is empty or only a hint."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, NamedTuple

from peftsearch.objectives import adapters
from peftsearch.reports.data import common

if TYPE_CHECKING:
    import optuna

# Below this many complete trials, importances come with a warning that they are a rough hint.
FEW_TRIALS = 20


class Importances(NamedTuple):
    objective: str  # "accuracy (maximized)", "trainable parameters (minimized)"
    values: dict[str, float]  # parameter -> importance (sum 1), most important first; or empty
    note: str  # why ``values`` is empty, or a caveat; "" when there is nothing to say


def _importance_for(
    study: optuna.Study,
    trials: list[optuna.trial.FrozenTrial],
    index: int,
    label: str,
    left_out: str = "",
    only: list[str] | None = None,
) -> Importances:
    """``study`` holds exactly ``trials`` (the COMPLETE non-repeat ones); ``left_out`` says
    which trials were not used ("" when none); ``only``: the parameters that can move this
    objective (None: every searched one)."""
    import optuna

    def empty(why: str) -> Importances:
        return Importances(label, {}, "; ".join(x for x in (why, left_out) if x))

    values = [t.values[index] for t in trials]
    if len(trials) < 2:
        return empty("needs at least 2 completed trials")
    if len(set(values)) < 2:
        return empty(
            f"every completed trial has the same value ({values[0]:g}): nothing to explain"
        )
    varied = sorted(
        name
        for name in {n for t in trials for n in t.params}
        if len({repr(t.params.get(name)) for t in trials}) > 1
    )
    if only is not None:
        varied = [n for n in varied if n in only]
        if not varied:
            return empty(
                "no searched parameter that sets the count varied "
                f"({', '.join(only)}): learning rates and templates cannot change it"
            )
    if not varied:
        return empty("no searched parameter took more than one value")
    # PED-ANOVA (Optuna's default, and the only evaluator that needs no scikit-learn) asks
    # which parameters it takes to reach the *lowest* target values, so the maximized metric
    # is negated. Its default top 10% holds a single trial in a small study; Optuna's docs
    # advise at least 5 trials in it, so the quantile grows to 5/n (at most one half).
    quantile = min(0.5, max(0.1, 5 / len(trials)))
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    sign = -1.0 if index == 0 else 1.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = optuna.importance.get_param_importances(
                study,
                evaluator=evaluator,
                params=varied,
                target=lambda t: sign * t.values[index],
            )
    except Exception as exc:  # a report must never fail on a statistic
        return empty(f"could not be computed: {type(exc).__name__}: {exc}")
    few = ""
    if len(trials) < FEW_TRIALS:
        few = f"only {len(trials)} completed trials: a rough hint, not a ranking"
    scope = ""
    if only is not None:
        scope = (
            f"only the parameters that set the count ({', '.join(varied)}); learning rates "
            "and templates cannot change it"
        )
    notes = (scope, few, left_out)
    return Importances(label, dict(result), "; ".join(x for x in notes if x))


def _left_out(study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> str:
    """Which trials the importances do not use: those stopped early, repeats ("" if none)."""
    stopped = len(common.stopped(study))
    repeats = sum(1 for t in common.complete(study) if common.is_repeat(t))
    left_out = []
    if stopped:
        left_out.append(
            f"computed on the {len(trials)} COMPLETE trials only: the {stopped} "
            f"trial{' was' if stopped == 1 else 's were'} stopped early by successive halving "
            "(no final score) and left out"
        )
    if repeats:
        left_out.append(
            f"{repeats} repeated configuration{'' if repeats == 1 else 's'} counted once"
        )
    return "; ".join(left_out)


def importances(study: optuna.Study) -> list[Importances]:
    """Parameter importances for each objective (metric first, then trainable parameters).

    Computed on the COMPLETE trials only, repeats left out (a repeat carries an earlier
    trial's values and would count twice): they are copied into an in-memory study, since
    Optuna's evaluators read every COMPLETE trial of the study they are given. The note says
    how many trials stopped early are not used.

    Args:
        study: the search's study.

    Returns:
        Two :class:`Importances`: the metric's (maximized), then trainable parameters'.
    """
    import optuna

    trials = common.trained(study)
    left_out = _left_out(study, trials)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        own = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(), directions=study.directions
        )
        own.add_trials(trials)
    except Exception:  # a report must never fail on a statistic (repeats then count twice)
        own = study
    finally:
        optuna.logging.set_verbosity(verbosity)
    metric = study.user_attrs.get("metric", "metric")
    return [
        _importance_for(own, trials, 0, f"{metric} (maximized)", left_out),
        _importance_for(
            own,
            trials,
            1,
            "trainable parameters (minimized)",
            left_out,
            only=adapters.shape_params(),
        ),
    ]
