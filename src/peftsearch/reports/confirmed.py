"""Confirmed trials (``search confirm``), read from the study's storage: each trial's search
score beside the metric of every extra seed, their mean and spread, and how well the search's
ranking predicted the confirmed one. Written by :mod:`peftsearch.searcher.confirm`."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

PREFIX = "confirm:"


@dataclass(frozen=True)
class Confirmed:
    """A trial's confirmation: its search score and the metric of each extra seed."""

    trial: int
    search: float
    trainable: int
    runs: dict[int, float]  # seed -> metric

    @property
    def mean(self) -> float:
        return statistics.fmean([self.search, *self.runs.values()])

    @property
    def std(self) -> float:
        values = [self.search, *self.runs.values()]
        return statistics.stdev(values) if len(values) > 1 else 0.0

    @property
    def n(self) -> int:
        return 1 + len(self.runs)


def confirm_key(trial: int, seed: int) -> str:
    return f"{PREFIX}{trial}:{seed}"


def confirmations(study: Any) -> dict[int, Confirmed]:
    """Every trial with at least one confirming run, read from the storage. The mean and std
    count the search's own run too (seed ``study.seed``): n = 1 + extra seeds."""
    runs: dict[int, dict[int, float]] = {}
    for key, value in study.user_attrs.items():
        if not key.startswith(PREFIX) or not isinstance(value, dict) or "error" in value:
            continue  # a failed run is stored (not retried) but has no score
        trial, seed = (int(x) for x in key[len(PREFIX) :].split(":"))
        runs.setdefault(trial, {})[seed] = float(value["metric"])
    out = {}
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, by_seed in runs.items():
        t = trials.get(number)
        if t is None or t.values is None:
            continue
        out[number] = Confirmed(number, float(t.values[0]), int(t.values[1]), by_seed)
    return out


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Rank correlation (average ranks for ties); None under three points or a constant."""
    import pandas as pd

    if len(xs) < 3:
        return None
    value = pd.Series(xs).rank().corr(pd.Series(ys).rank())
    return None if value != value else float(value)  # NaN: one side is constant
