"""Samplers by name: a registry, so an unknown name lists the valid ones.

Default ``tpe``: multivariate TPE models the joint effect of template x prompt length x rank x
learning rate (they interact) from few trials, handles categorical choices natively, supports
two objectives, and with ``constant_liar`` stays sensible when several workers ask at once.
NSGA-II is the classic multi-objective alternative but needs several generations of
``population_size`` trials; random and grid are the baselines users compare against.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from peftsearch.errors import SpaceError
from peftsearch.searcher.suggest import conditional
from peftsearch.spaces import CategoricalDist, FloatDist, IntDist, Space


def _tpe(space: Space, seed: int, kwargs: dict[str, Any]) -> Any:
    import optuna

    # A conditional space (a searched `adapter`: each method asks its own parameters; a
    # searched `target_modules` beside rank 0): `group` lets multivariate TPE model the
    # parameters asked together, apart from the trials that never asked them (optuna's advice
    # for define-by-run spaces).
    group = conditional(space)
    with warnings.catch_warnings():  # `group` is experimental in optuna; chosen on purpose
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            **{
                "multivariate": True,
                "constant_liar": True,
                "seed": seed,
                **({"group": True} if group else {}),
                **kwargs,
            }
        )


def _nsga2(space: Space, seed: int, kwargs: dict[str, Any]) -> Any:
    import optuna

    # optuna's default population (50) never gets past generation 0 in a small study; scale it
    # so that about three generations fit the budget, within [8, 50].
    population = min(50, max(8, space.study.n_trials // 3))
    return optuna.samplers.NSGAIISampler(**{"population_size": population, "seed": seed, **kwargs})


def _random(space: Space, seed: int, kwargs: dict[str, Any]) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(**{"seed": seed, **kwargs})


def grid_space(space: Space) -> dict[str, list[Any]]:
    """The finite grid of a space; float ranges have none unless stepped."""
    grid: dict[str, list[Any]] = {}
    for name, spec in space.search_params().items():
        if isinstance(spec, CategoricalDist):
            grid[name] = [_choice(c) for c in spec.choices]
        elif isinstance(spec, IntDist):
            grid[name] = list(range(spec.low, spec.high + 1, spec.step))
        elif isinstance(spec, FloatDist):
            if spec.step is None:
                raise SpaceError(
                    str(space.file),
                    f"params.{name}",
                    "the grid sampler needs finite choices: give `step` or use type: categorical",
                )
            n = int(round((spec.high - spec.low) / spec.step))
            grid[name] = [spec.low + i * spec.step for i in range(n + 1)]
    return grid


def _grid(space: Space, seed: int, kwargs: dict[str, Any]) -> Any:
    import optuna

    return optuna.samplers.GridSampler(grid_space(space), **{"seed": seed, **kwargs})


def _choice(value: Any) -> Any:
    """Optuna stores categorical choices as scalars; a module list becomes 'a,b'."""
    return ",".join(value) if isinstance(value, list) else value


SEED_STRIDE = 1_000_003  # a prime: distinct study seeds never share a sampler seed below it

SAMPLERS: dict[str, Callable[[Space, int, dict[str, Any]], Any]] = {
    "tpe": _tpe,
    "nsga2": _nsga2,
    "random": _random,
    "grid": _grid,
}


def make_sampler(space: Space, n_existing: int = 0) -> Any:
    """Build the space's sampler.

    The seed is offset by the number of trials already in the study: a resumed study with the
    same seed would otherwise replay the first run's random start-up suggestions as duplicates.
    Study seeds are spread apart first (``seed * SEED_STRIDE``): with a plain ``seed + n``, the
    study of seed 1 drew at its trial 0 what the study of seed 0 drew at its trial 1, and so
    on, so studies of consecutive seeds were the same suggestions shifted by one (seen in the
    search-quality benchmark). Seed 0 keeps its old sequence.

    Raises:
        SpaceError: unknown sampler name or bad ``sampler_kwargs``.
    """
    name = space.study.sampler
    if name not in SAMPLERS:
        raise SpaceError(
            str(space.file), "study.sampler", f"unknown sampler; valid: {', '.join(SAMPLERS)}", name
        )
    try:
        seed = (space.study.seed * SEED_STRIDE + n_existing) % 2**32
        return SAMPLERS[name](space, seed, dict(space.study.sampler_kwargs))
    except TypeError as exc:
        raise SpaceError(str(space.file), "study.sampler_kwargs", str(exc)) from None
