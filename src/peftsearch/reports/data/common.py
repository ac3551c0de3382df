"""Trial selections and attribute readers shared by the report's data modules.

Only COMPLETE trials have values; a repeated configuration (``duplicate_of``) was not trained
and carries an earlier trial's result, so the "trained" selections leave it out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from peftsearch.reports.trials import DUPLICATE_ATTR, trial_params

if TYPE_CHECKING:
    import optuna


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The COMPLETE trials, by number (repeats included)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: t.number)


def is_repeat(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` repeated an earlier configuration (and was not trained)."""
    return DUPLICATE_ATTR in trial.user_attrs


def trained(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The COMPLETE trials that trained (repeats of an earlier configuration left out)."""
    return [t for t in complete(study) if not is_repeat(t)]


def stopped(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The PRUNED trials that trained (stopped early), by number; repeats left out."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    return sorted((t for t in trials if not is_repeat(t)), key=lambda t: t.number)


def as_int(value: Any) -> int | None:
    """An int user attribute, or None (missing, or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value)


def config(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """Every parameter of ``trial`` (searched and fixed), and its template text if recorded."""
    out: dict[str, Any] = dict(trial_params(study, trial))
    if "template_text" in trial.user_attrs:
        out["template_text"] = trial.user_attrs["template_text"]
    return out
