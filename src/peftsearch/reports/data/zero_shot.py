"""model.head verbalizer: the untrained model's scores beside the best trained trial's
(:func:`zero_shot_rows`), and the label words the model found (:func:`found_words`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftsearch.reports.data import common

if TYPE_CHECKING:
    import optuna


def _best_trained(study: optuna.Study) -> dict[tuple[str, str, int], tuple[float, int]]:
    """(template, verbalizer, demos per class) -> (metric, trial) of the best trained trial."""
    best: dict[tuple[str, str, int], tuple[float, int]] = {}
    for t in common.complete(study):
        config = common.config(study, t)
        demos = int(config.get("n_demos") or 0) if "demo_rows" in t.user_attrs else 0
        key = (str(config.get("template")), str(config.get("verbalizer")), demos)
        if t.values[1] > 0 and (key not in best or t.values[0] > best[key][0]):
            best[key] = (t.values[0], t.number)
    return best


def zero_shot_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """model.head verbalizer: per template x verbalizer (x demonstrations per class, when
    searched), the untrained model's metric (the ``zero_shot`` and ``zero_shot_demos`` study
    attributes), the best trained trial's with the same prompt and what training added.

    Args:
        study: the search's study.

    Returns:
        One dict per scored prompt: template, verbalizer, demos, zero_shot, best_trained,
        best_trial and gain (the last three None without a trained trial for that prompt).
    """
    zero = {0: study.user_attrs.get("zero_shot") or {}}
    for k, scores in (study.user_attrs.get("zero_shot_demos") or {}).items():
        zero[int(k)] = scores
    best = _best_trained(study)
    rows = []
    for demos, by_template in sorted(zero.items()):
        for template, by_verbalizer in by_template.items():
            for verbalizer, value in by_verbalizer.items():
                trained = best.get((template, verbalizer, demos))
                rows.append(
                    {
                        "template": template,
                        "verbalizer": verbalizer,
                        "demos": demos,
                        "zero_shot": float(value),
                        "best_trained": None if trained is None else trained[0],
                        "best_trial": None if trained is None else trained[1],
                        "gain": None if trained is None else trained[0] - float(value),
                    }
                )
    return rows


def found_words(study: optuna.Study) -> dict[str, Any]:
    """``verbalizers: {auto: ...}``: the found verbalizers and each class's 10 best words
    (the ``auto_verbalizers`` study attribute), or {}."""
    return study.user_attrs.get("auto_verbalizers") or {}


def written_examples(study: optuna.Study) -> list[dict[str, Any]]:
    """task generate: for each trial of the Pareto front (fewest parameters first), the first
    validation rows it was scored on, each with its input texts, the reference, what the
    trial wrote, and what the untrained model wrote under the same template (the
    ``zero_shot_examples`` study attribute).

    Returns:
        One dict per front trial: trial, template, trainable, metric, rows (input,
        reference, output, zero_shot); [] when no trial stored examples.
    """
    untrained = study.user_attrs.get("zero_shot_examples") or {}
    front = [t for t in common.complete(study) if t.user_attrs.get("examples")]
    best = {t.number for t in study.best_trials} if front else set()
    out = []
    for t in sorted((t for t in front if t.number in best), key=lambda t: (t.values[1], t.number)):
        template = str(common.config(study, t).get("template"))
        zero = untrained.get(template) or []
        rows = [
            {**row, "zero_shot": zero[i]["output"] if i < len(zero) else None}
            for i, row in enumerate(t.user_attrs["examples"])
        ]
        out.append(
            {
                "trial": t.number,
                "template": template,
                "trainable": int(t.values[1]),
                "metric": float(t.values[0]),
                "rows": rows,
            }
        )
    return out
