"""Turn the space's entries into Optuna suggestions and a trial's full parameter dict."""

from __future__ import annotations

from typing import Any

from peftsearch.spaces import CategoricalDist, FloatDist, IntDist, Space


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    """Ask ``trial`` for every distribution of ``space``; fixed entries pass through.

    Returns a dict with every parameter a trial needs, concrete values only.
    """
    params: dict[str, Any] = {}
    for name, spec in space.search_params().items():
        if isinstance(spec, FloatDist):
            value: Any = trial.suggest_float(
                name, spec.low, spec.high, log=spec.log, step=spec.step
            )
        elif isinstance(spec, IntDist):
            value = trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, CategoricalDist):
            choices = [",".join(c) if isinstance(c, list) else c for c in spec.choices]
            value = trial.suggest_categorical(name, choices)
        else:
            value = spec
        params[name] = value
    modules = params.get("target_modules")
    if isinstance(modules, str):
        params["target_modules"] = [m.strip() for m in modules.split(",") if m.strip()]
    return params


def fixed_params(space: Space) -> dict[str, Any]:
    """The entries that are not searched (stored once on the study)."""
    return {
        n: s
        for n, s in space.search_params().items()
        if not isinstance(s, FloatDist | IntDist | CategoricalDist)
    }
