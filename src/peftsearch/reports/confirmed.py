"""Confirmed trials (``search confirm``), read from the study's storage: each trial's search
score beside the metric of every extra seed, their mean and spread, and how well the search's
ranking predicted the confirmed one; and the full-budget runs (``--budget full``: the whole
train split, scored on the whole validation and the test split). Written by
:mod:`peftsearch.searcher.confirm`."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

PREFIX = "confirm:"
FULL_PREFIX = "confirm-full"  # + ":" (the trial's own epochs) or "-e<E>:" (--epochs E)


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


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class FullConfirmed:
    """A trial trained at the full budget on extra seeds: validation and test metric per seed.
    Unlike :class:`Confirmed`, the search's run is not one of them (another budget)."""

    trial: int
    search: float
    trainable: int
    epochs: int | None  # the --epochs of these runs; None: the trial's own
    validation: dict[int, float]  # seed -> metric on the whole validation split
    test: dict[int, float]  # seed -> metric on the test split
    seconds: float  # training seconds, all runs together

    @property
    def n(self) -> int:
        return len(self.validation)

    @property
    def validation_mean_std(self) -> tuple[float, float]:
        return _mean_std(list(self.validation.values()))

    @property
    def test_mean_std(self) -> tuple[float, float]:
        return _mean_std(list(self.test.values()))


def full_prefix(epochs: int | None = None) -> str:
    return f"{FULL_PREFIX}:" if epochs is None else f"{FULL_PREFIX}-e{epochs}:"


def confirm_key(trial: int, seed: int, budget: str = "search", epochs: int | None = None) -> str:
    """The study user attribute of one confirming run."""
    prefix = PREFIX if budget == "search" else full_prefix(epochs)
    return f"{prefix}{trial}:{seed}"


def _stored_runs(study: Any, prefix: str) -> list[tuple[Any, dict[int, dict[str, Any]]]]:
    """The runs stored under ``prefix`` that scored, per trial that has values:
    ``(frozen trial, {seed: stored dict})``. A failed run is stored (not retried) but has no
    score, so it is left out."""
    runs: dict[int, dict[int, dict[str, Any]]] = {}
    for key, value in study.user_attrs.items():
        if not key.startswith(prefix) or not isinstance(value, dict) or "error" in value:
            continue
        trial, seed = (int(x) for x in key[len(prefix) :].split(":"))
        runs.setdefault(trial, {})[seed] = value
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    return [
        (trials[n], by_seed)
        for n, by_seed in runs.items()
        if n in trials and trials[n].values is not None
    ]


def confirmations(study: Any) -> dict[int, Confirmed]:
    """Every trial with at least one confirming run, read from the storage. The mean and std
    count the search's own run too (seed ``study.seed``): n = 1 + extra seeds."""
    out = {}
    for t, by_seed in _stored_runs(study, PREFIX):
        metrics = {s: float(v["metric"]) for s, v in by_seed.items()}
        out[t.number] = Confirmed(t.number, float(t.values[0]), int(t.values[1]), metrics)
    return out


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Rank correlation (average ranks for ties); None under three points or a constant."""
    import pandas as pd

    if len(xs) < 3:
        return None
    value = pd.Series(xs).rank().corr(pd.Series(ys).rank())
    return None if value != value else float(value)  # NaN: one side is constant


def full_confirmations(study: Any, epochs: int | None = None) -> dict[int, FullConfirmed]:
    """Every trial with at least one full-budget run (of ``epochs``; None: the trials' own
    epochs) that scored, read from the storage."""
    out = {}
    for t, by_seed in _stored_runs(study, full_prefix(epochs)):
        out[t.number] = FullConfirmed(
            t.number,
            float(t.values[0]),
            int(t.values[1]),
            epochs,
            {s: float(v["metric"]) for s, v in by_seed.items()},
            {s: float(v["test_metric"]) for s, v in by_seed.items()},
            sum(float(v.get("train_seconds") or 0.0) for v in by_seed.values()),
        )
    return out


def full_epochs(study: Any) -> list[int | None]:
    """The epochs settings that have full-budget runs stored (None: the trials' own)."""
    found: set[int | None] = set()
    for key in study.user_attrs:
        if key.startswith(f"{FULL_PREFIX}:"):
            found.add(None)
        elif key.startswith(f"{FULL_PREFIX}-e"):
            found.add(int(key[len(FULL_PREFIX) + 2 :].split(":")[0]))
    return sorted(found, key=lambda e: -1 if e is None else e)
