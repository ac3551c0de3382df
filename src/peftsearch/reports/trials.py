"""Every parameter a trial ran with, read back from the study."""

from __future__ import annotations

from typing import Any

from peftsearch.objectives.trial import TrialConfig
from peftsearch.spaces import RULES


def trial_params(study: Any, trial: Any) -> TrialConfig:
    """The trial's full parameters: its ``params`` user attribute (stored since 0.1.0 by
    ``search run``), else RULES defaults < the study's fixed params < the searched ones."""
    stored = trial.user_attrs.get("params")
    if isinstance(stored, dict):
        params = {name: rule.default for name, rule in RULES.items()} | stored
        if "prompt_init" not in stored:  # stored before prompt_init existed: N(0, 1) rows
            params["prompt_init"] = "random"
    else:
        params = {name: rule.default for name, rule in RULES.items()}
        params.update(study.user_attrs.get("fixed_params", {}))
        params.update(trial.params)
    # Searched lists (target_modules) are stored comma-joined: from_values splits them.
    return TrialConfig.from_values({name: params[name] for name in RULES})


DUPLICATE_ATTR = "duplicate_of"  # a repeat of an earlier trial's configuration: not trained


def front_trials(study: Any) -> list[Any]:
    """The Pareto-optimal COMPLETE trials (``study.best_trials``) without repeats: a trial
    that repeated an earlier configuration carries its values and ``duplicate_of``."""
    return [t for t in study.best_trials if DUPLICATE_ATTR not in t.user_attrs]
