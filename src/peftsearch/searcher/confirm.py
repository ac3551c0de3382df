"""``search confirm``: the chosen trials (default: the Pareto front) trained again on other seeds.

The search ranks trials on one seed and a few hundred validation rows; three runs of the same
configuration on the demo differed by 0.026 (issue 13). Confirming re-trains each chosen
trial's exact configuration with ``--seeds`` new seeds (the study seed + 1, + 2, ...: adapter
init, data order and dropout all change; the data split and the validation rows do not) at
the search's own budget, through the same engine (packed by ``study.pack``).

Each run's result is a study user attribute ``confirm:<trial>:<seed>`` (metric, eval loss,
steps, seconds), written as soon as it finishes: a killed confirm loses only the runs in
flight, the same command runs only what is missing, and every worker and host that opens the
storage sees the results (report, export, optuna-dashboard).

``--budget full`` trains each chosen trial and seed as ``search train`` would: the trial's
configuration and learning rates, ``params.epochs`` passes (or ``--epochs``) over the WHOLE
train split with the warm-up and linear decay stretched over the whole run, no rungs; it scores
the whole validation split and then the test split. Those runs are stored under
``confirm-full:<trial>:<seed>`` (``confirm-full-e<E>:...`` with ``--epochs E``), validation
and test metric, and shown beside the search-budget ones. The picks do not use them: a test
score must not choose the model, and a validation score at another budget is not comparable
with the other trials' search scores. They are the check that the rates tuned at the search
budget still hold at the production budget, which the search itself never trains at.
"""

from __future__ import annotations

import sys
from typing import Any

from peftsearch.errors import UserError
from peftsearch.reports.confirmed import (
    confirm_key,
    confirmations,
    full_confirmations,
)
from peftsearch.searcher.opening import open_study
from peftsearch.searcher.packs import pack_size
from peftsearch.searcher.records import found_words
from peftsearch.spaces import Space


def _chosen(study: Any, trials: str) -> list[Any]:
    from optuna.trial import TrialState

    from peftsearch.reports.trials import DUPLICATE_ATTR, front_trials

    if trials == "front":
        chosen = sorted(front_trials(study), key=lambda t: t.number)
        if not chosen:
            raise UserError(f"study {study.study_name!r} has no completed trial to confirm")
        return chosen
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    out = []
    for part in trials.split(","):
        try:
            number = int(part)
        except ValueError:
            raise UserError(f"--trials: {part!r} is not a trial number (or use 'front')") from None
        t = by_number.get(number)
        if t is None or t.state != TrialState.COMPLETE or DUPLICATE_ATTR in t.user_attrs:
            raise UserError(f"--trials: trial {number} is not a completed, trained trial")
        out.append(t)
    return out


def run_confirm(
    space: Space,
    trials: str = "front",
    seeds: int = 3,
    show_progress: bool = True,
    budget: str = "search",
    epochs: int | None = None,
) -> dict[int, Any]:
    """Train each chosen trial on ``seeds`` extra seeds (skipping runs already stored) and
    store each result on the study as it finishes; returns the confirmations of the chosen
    (:class:`~peftsearch.reports.confirmed.Confirmed` at the search budget,
    :class:`~peftsearch.reports.confirmed.FullConfirmed` at the full one).

    ``epochs`` (full budget only): passes over the train split instead of each trial's own
    ``params.epochs`` (its ``max_steps`` cleared), stored with each run; runs of another
    ``epochs`` are other runs."""
    from peftsearch.searcher.artifacts import write_dashboard_note

    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    if budget not in ("search", "full"):
        raise UserError(f"--budget must be 'search' or 'full', got {budget!r}")
    if epochs is not None and (budget != "full" or epochs < 1):
        raise UserError(f"--epochs {epochs}: only with --budget full, and at least 1")
    study = open_study(space, create=False)
    space = found_words(study, space)  # verbalizers.auto: the words the search found
    chosen = _chosen(study, trials)
    todo = _todo(study, space, chosen, seeds, budget, epochs)
    if todo:
        _Confirm(study, space, chosen, budget, epochs).run(todo, show_progress)
    write_dashboard_note(study, space)  # the dashboard's note shows the confirmed means
    if budget == "full":
        full = full_confirmations(study, epochs)
        return {t.number: full[t.number] for t in chosen if t.number in full}
    found = confirmations(study)
    return {t.number: found[t.number] for t in chosen if t.number in found}


def _todo(
    study: Any, space: Space, chosen: list[Any], seeds: int, budget: str, epochs: int | None
) -> list[tuple[int, int]]:
    """The (trial, seed) runs not stored yet; says how many are."""
    have = set(study.user_attrs)
    base = space.study.seed
    todo = [
        (t.number, base + i)
        for t in chosen
        for i in range(1, seeds + 1)
        if confirm_key(t.number, base + i, budget, epochs) not in have
    ]
    done_before = len(chosen) * seeds - len(todo)
    if done_before:
        print(f"{done_before} run(s) already stored: not run again", file=sys.stderr)
    return todo


class _Confirm:
    """The runs of one ``search confirm``: trained in a pack, each stored as it finishes."""

    def __init__(
        self, study: Any, space: Space, chosen: list[Any], budget: str, epochs: int | None
    ) -> None:
        from peftsearch.reports.trials import trial_params

        self.study, self.space, self.budget, self.epochs = study, space, budget, epochs
        self.params_of: dict[int, dict[str, Any]] = {
            t.number: trial_params(study, t) for t in chosen
        }
        if epochs is not None:
            self.params_of = {
                n: {**p, "epochs": epochs, "max_steps": None} for n, p in self.params_of.items()
            }

    def run(self, todo: list[tuple[int, int]], show_progress: bool) -> None:
        """Train the ``todo`` runs, with a bar of training steps."""
        from peftsearch.logs import step_bar
        from peftsearch.objectives.runner import TrialRunner

        runner = TrialRunner(self.space, self.budget)
        runner.setup()
        pack = runner.pack(pack_size(self.space))
        queue = list(todo)
        # The bar counts training steps (a full-budget run is minutes on a CPU), the runs
        # finished beside it.
        planned = {(n, sd): runner.total_steps(self.params_of[n]) for n, sd in todo}
        seen = dict.fromkeys(planned, 0)
        bar = step_bar(
            "confirming" if self.budget == "search" else "confirming (full budget)",
            "steps, {task.fields[runs]}/" + f"{len(todo)} runs",
            disable=not show_progress,
        )
        with bar:
            task = bar.add_task("confirm", total=sum(planned.values()), runs=0)
            finished = 0
            while queue or len(pack):
                while queue and len(pack) < pack.capacity:
                    number, seed = queue.pop(0)
                    pack.add((number, seed), self.params_of[number], seed)
                ended = pack.step()
                for run, step, _ in pack.progress():
                    bar.advance(task, step - seen[run])
                    seen[run] = step
                for run, _ in ended:  # its steps all count, whether it finished or failed
                    bar.advance(task, planned[run] - seen[run])
                    seen[run] = planned[run]
                finished += len(ended)
                bar.update(task, runs=finished)
                for (number, seed), result in ended:
                    self._store(number, seed, result)

    def _store(self, number: int, seed: int, result: Any) -> None:
        """One run's result (or failure) as the study attribute of its key."""
        if isinstance(result, BaseException):
            print(f"trial {number} seed {seed} failed: {result}", file=sys.stderr)
            value: dict[str, Any] = {"metric": float("nan"), "error": str(result)}
        else:
            value = {
                "metric": result.metric,
                "eval_loss": result.attrs.get("eval_loss"),
                "train_steps": result.attrs.get("train_steps"),
                "train_seconds": result.attrs.get("train_seconds"),
            }
            if self.budget == "full":
                value.update(
                    test_metric=result.attrs["test_metric"],
                    test_loss=result.attrs["test_loss"],
                    eval_rows=result.attrs["eval_rows"],
                    test_rows=result.attrs["test_rows"],
                    epochs=self.params_of[number]["epochs"],
                )
        self.study.set_user_attr(confirm_key(number, seed, self.budget, self.epochs), value)
