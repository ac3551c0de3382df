"""The data behind the HTML report, computed from a study alone: plain values, no plotly.

:func:`compute_report` returns one :class:`ReportData`; each field is what one figure or table of
``peftsearch.reports.html`` draws. Nothing here escapes text: that is the renderer's job.

Conventions: the metric is maximized and trainable parameters are minimized (the study's
directions); only COMPLETE trials have values, so only they appear as points.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from peftsearch.reports.pareto import pareto_rows
from peftsearch.reports.select import pick_trial
from peftsearch.reports.trials import front_trials, trial_params

if TYPE_CHECKING:
    import optuna

# The trial states a summary counts, in display order (Optuna's TrialState names, lower case).
STATES = ("complete", "pruned", "fail", "running", "waiting")
# Below this many complete trials, importances come with a warning that they are a rough hint.
FEW_TRIALS = 20
NO_REASON = "no reason recorded (the worker stopped: killed, or its heartbeat was lost)"


class ParetoPoint(NamedTuple):
    """One COMPLETE trial as a point of the metric-vs-parameters plot."""

    trial: int
    metric: float
    params: int  # trainable parameters
    pct: float | None  # trainable parameters as % of the base model
    template: str
    prompt_length: Any
    lora_r: Any
    learning_rate: Any
    config: dict[str, Any]  # every parameter of the trial (searched and fixed), template text
    dominated: bool


class ParetoInfo(NamedTuple):
    points: list[ParetoPoint]  # every COMPLETE trial, by trial number
    front: list[tuple[int, float]]  # (params, metric) of the front, fewest params first, unique
    knee: int | None  # trial number of the knee (peftsearch.reports.select), None without trials


class TemplateMetrics(NamedTuple):
    template: str
    text: str | None  # the template text (from the trials), None if not recorded
    trials: list[int]
    metrics: list[float]


class Importances(NamedTuple):
    objective: str  # "accuracy (maximized)", "trainable parameters (minimized)"
    values: dict[str, float]  # parameter -> importance (sum 1), most important first; or empty
    note: str  # why ``values`` is empty, or a caveat; "" when there is nothing to say


class History(NamedTuple):
    trials: list[int]  # COMPLETE trial numbers, ascending
    metric: list[float]  # each trial's metric
    best_metric: list[float]  # best metric so far
    hypervolume: list[float]  # hypervolume of the front so far (see :func:`hypervolume_2d`)
    reference: tuple[float, float]  # (metric, trainable params) of the reference point


class LossCurve(NamedTuple):
    trial: int
    template: str
    steps: list[int]  # training step of each point
    losses: list[float]  # train loss averaged over the steps since the previous point
    pareto: bool


@dataclass(frozen=True)
class Summary:
    study_name: str
    metric: str
    model: str | None
    data_source: str | None
    data_sha256: str | None
    split_sizes: dict[str, int]  # train/validation/test and the per-trial subsamples
    split: dict[str, Any]  # fractions and seed of the stratified split
    labels: list[str]
    base_params: int | None
    budget: dict[str, Any]  # what one trial costs: rows, epochs, batch size, max steps
    sampler: dict[str, Any]  # name, kwargs, seed, n_trials, timeout (never the storage)
    search_space: dict[str, Any]  # searched parameters as Optuna-style dicts
    counts: dict[str, int]  # every state of STATES, 0 included
    failures: list[tuple[str, int]]  # distinct failure reasons with their counts, most first
    compute_seconds: float  # sum of trial_seconds over all trials
    devices: list[str]
    versions: list[tuple[dict[str, str], list[int]]]  # distinct version sets and their trials


@dataclass(frozen=True)
class ReportData:
    summary: Summary
    pareto: ParetoInfo
    templates: list[TemplateMetrics]
    importances: list[Importances]
    history: History
    curves: list[LossCurve]
    table: list[dict[str, Any]] = field(default_factory=list)  # pareto.pareto_rows
    zero_shot: list[dict[str, Any]] = field(default_factory=list)  # zero_shot_rows


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: t.number)


def _config(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    config: dict[str, Any] = trial_params(study, trial)
    if "template_text" in trial.user_attrs:
        config["template_text"] = trial.user_attrs["template_text"]
    return config


def pareto_info(study: optuna.Study) -> ParetoInfo:
    """Every COMPLETE trial as a point, which are dominated, the front and its knee."""
    base = study.user_attrs.get("base_params")
    front_numbers = {t.number for t in front_trials(study)}
    points = []
    for t in _complete(study):
        config = _config(study, t)
        params = int(t.values[1])
        pct = t.user_attrs.get("trainable_pct")
        if pct is None and base:
            pct = 100.0 * params / base
        points.append(
            ParetoPoint(
                trial=t.number,
                metric=t.values[0],
                params=params,
                pct=pct,
                template=str(config.get("template")),
                prompt_length=config.get("prompt_length"),
                lora_r=config.get("lora_r"),
                learning_rate=config.get("learning_rate"),
                config=config,
                dominated=t.number not in front_numbers,
            )
        )
    front = sorted({(p.params, p.metric) for p in points if not p.dominated})
    knee = pick_trial(study, "knee").number if front else None
    return ParetoInfo(points, front, knee)


def template_metrics(study: optuna.Study) -> list[TemplateMetrics]:
    """The metric of every COMPLETE trial, grouped by template (search-space order first)."""
    groups: dict[str, TemplateMetrics] = {}
    for t in _complete(study):
        name = str(_config(study, t).get("template"))
        group = groups.setdefault(name, TemplateMetrics(name, None, [], []))
        if group.text is None and "template_text" in t.user_attrs:
            group = groups[name] = group._replace(text=str(t.user_attrs["template_text"]))
        group.trials.append(t.number)
        group.metrics.append(t.values[0])
    spec = study.user_attrs.get("search_space", {}).get("template")
    order = [str(c) for c in spec.get("choices", [])] if isinstance(spec, dict) else []
    rank = {name: i for i, name in enumerate(order)}
    return sorted(groups.values(), key=lambda g: (rank.get(g.template, len(rank)), g.template))


def _importance_for(
    study: optuna.Study, trials: list[optuna.trial.FrozenTrial], index: int, label: str
) -> Importances:
    import optuna

    values = [t.values[index] for t in trials]
    if len(trials) < 2:
        return Importances(label, {}, "needs at least 2 completed trials")
    if len(set(values)) < 2:
        return Importances(
            label,
            {},
            f"every completed trial has the same value ({values[0]:g}): nothing to explain",
        )
    varied = sorted(
        name
        for name in {n for t in trials for n in t.params}
        if len({repr(t.params.get(name)) for t in trials}) > 1
    )
    if not varied:
        return Importances(label, {}, "no searched parameter took more than one value")
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
        return Importances(label, {}, f"could not be computed: {type(exc).__name__}: {exc}")
    note = ""
    if len(trials) < FEW_TRIALS:
        note = f"only {len(trials)} completed trials: a rough hint, not a ranking"
    return Importances(label, dict(result), note)


def importances(study: optuna.Study) -> list[Importances]:
    """Parameter importances for each objective (metric first, then trainable parameters)."""
    trials = _complete(study)
    metric = study.user_attrs.get("metric", "metric")
    return [
        _importance_for(study, trials, 0, f"{metric} (maximized)"),
        _importance_for(study, trials, 1, "trainable parameters (minimized)"),
    ]


def hypervolume_2d(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (metric, log10 params) up to ``reference``.

    Written here because Optuna's hypervolume code is private (``optuna._hypervolume``), and in
    two dimensions it is a sweep: turn both axes into gains over the reference (metric above it,
    decades of parameters below it), sort by parameter gain, largest first, and add the strips
    between consecutive gains, each as tall as the best metric gain seen so far. Points no
    better than the reference on either axis add nothing.
    """
    ref_metric, ref_log_params = reference
    gains = sorted(
        ((ref_log_params - lp, m - ref_metric) for m, lp in points),
        reverse=True,
    )
    gains = [(x, y) for x, y in gains if x > 0 and y > 0]
    area, best_y = 0.0, 0.0
    for i, (x, y) in enumerate(gains):
        best_y = max(best_y, y)
        next_x = gains[i + 1][0] if i + 1 < len(gains) else 0.0
        area += (x - next_x) * best_y
    return area


def history(study: optuna.Study) -> History:
    """Best metric so far and hypervolume so far, trial by trial (COMPLETE trials).

    The hypervolume is measured on (metric, log10 trainable params): parameter counts span
    decades, so a log scale weighs halving 1,000 params like halving 1,000,000. Its reference
    point is metric 0 (or the lowest metric seen, if negative: MCC can be) and the base model's
    parameter count (or the largest count seen, if larger): a trial that scores nothing, or
    trains as many weights as full fine-tuning, adds no volume. Units: metric x decades.
    """
    trials = _complete(study)
    metrics = [t.values[0] for t in trials]
    params = [max(t.values[1], 1.0) for t in trials]
    base = study.user_attrs.get("base_params") or 0
    reference = (min([0.0, *metrics]), float(max([base, *params, 1.0])))
    ref = (reference[0], math.log10(reference[1]))
    best: list[float] = []
    volume: list[float] = []
    for i, m in enumerate(metrics):
        best.append(m if not best else max(best[-1], m))
        seen = [(metrics[j], math.log10(params[j])) for j in range(i + 1)]
        volume.append(hypervolume_2d(seen, ref))
    return History([t.number for t in trials], metrics, best, volume, reference)


def loss_curves(study: optuna.Study) -> list[LossCurve]:
    """The train-loss curve of each COMPLETE trial that recorded one, with its Pareto flag."""
    front = {t.number for t in front_trials(study)}
    curves = []
    for t in _complete(study):
        losses = [float(x) for x in t.user_attrs.get("train_loss_curve") or []]
        if not losses:
            continue
        every = int(t.user_attrs.get("train_loss_curve_every") or 1)
        steps = [(i + 1) * every for i in range(len(losses))]
        total = t.user_attrs.get("train_steps")  # the last point closes at the last step
        if isinstance(total, int) and steps[-1] - every < total <= steps[-1]:
            steps[-1] = total
        template = str(_config(study, t).get("template"))
        curves.append(LossCurve(t.number, template, steps, losses, t.number in front))
    return curves


def _budget(attrs: dict[str, Any]) -> dict[str, Any]:
    sizes = attrs.get("data", {}).get("sizes", {})
    fixed = attrs.get("fixed_params", {})
    searched = attrs.get("search_space", {})

    def setting(name: str) -> Any:
        spec = searched.get(name)
        if isinstance(spec, dict) and "type" in spec:
            return "searched"
        return fixed.get(name, spec)

    return {
        "train rows": sizes.get("trial_train"),
        "eval rows": sizes.get("trial_eval"),
        "epochs": setting("epochs"),
        "batch size": setting("batch_size"),
        "max steps": setting("max_steps"),
    }


def _failure_reason(t: optuna.trial.FrozenTrial) -> str:
    attrs = t.user_attrs
    return str(attrs.get("fail_reason") or attrs.get("fail_note") or NO_REASON)


def summary(study: optuna.Study) -> Summary:
    """Study-level facts: model, data, budget, sampler, trial counts, failures, compute."""
    from optuna.trial import TrialState

    attrs = study.user_attrs
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    counts = {s: 0 for s in STATES}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    failures = Counter(_failure_reason(t) for t in trials if t.state == TrialState.FAIL)
    data = attrs.get("data", {})
    study_spec = attrs.get("space", {}).get("study", {})
    sampler = {
        k: study_spec[k]
        for k in ("sampler", "sampler_kwargs", "seed", "n_trials", "timeout")
        if k in study_spec
    }
    versions: dict[str, tuple[dict[str, str], list[int]]] = {}
    for t in trials:
        v = t.user_attrs.get("versions")
        if isinstance(v, dict):
            versions.setdefault(repr(sorted(v.items())), (v, []))[1].append(t.number)
    seconds = sum(float(t.user_attrs.get("trial_seconds") or 0.0) for t in trials)
    devices = sorted({str(t.user_attrs["device"]) for t in trials if "device" in t.user_attrs})
    return Summary(
        study_name=study.study_name,
        metric=str(attrs.get("metric", "metric")),
        model=attrs.get("model"),
        data_source=data.get("source"),
        data_sha256=data.get("sha256"),
        split_sizes=dict(data.get("sizes", {})),
        split=dict(data.get("split", {})),
        labels=[str(x) for x in data.get("labels", [])],
        base_params=attrs.get("base_params"),
        budget=_budget(attrs),
        sampler=sampler,
        search_space={
            k: v
            for k, v in attrs.get("search_space", {}).items()
            if isinstance(v, dict) and "type" in v
        },
        counts=counts,
        failures=sorted(failures.items(), key=lambda kv: (-kv[1], kv[0])),
        compute_seconds=seconds,
        devices=devices,
        versions=list(versions.values()),
    )


def zero_shot_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """model.head verbalizer: per template x verbalizer, the untrained model's metric (the
    ``zero_shot`` study attribute), the best trained trial's and what training added."""
    zero = study.user_attrs.get("zero_shot") or {}
    best: dict[tuple[str, str], tuple[float, int]] = {}
    for t in _complete(study):
        config = _config(study, t)
        key = (str(config.get("template")), str(config.get("verbalizer")))
        if t.values[1] > 0 and (key not in best or t.values[0] > best[key][0]):
            best[key] = (t.values[0], t.number)
    rows = []
    for template, by_verbalizer in zero.items():
        for verbalizer, value in by_verbalizer.items():
            trained = best.get((template, verbalizer))
            rows.append(
                {
                    "template": template,
                    "verbalizer": verbalizer,
                    "zero_shot": float(value),
                    "best_trained": None if trained is None else trained[0],
                    "best_trial": None if trained is None else trained[1],
                    "gain": None if trained is None else trained[0] - float(value),
                }
            )
    return rows


def compute_report(study: optuna.Study) -> ReportData:
    """Everything the HTML report shows, from ``study`` and its stored attributes."""
    return ReportData(
        summary=summary(study),
        pareto=pareto_info(study),
        templates=template_metrics(study),
        importances=importances(study),
        history=history(study),
        curves=loss_curves(study),
        table=pareto_rows(study),
        zero_shot=zero_shot_rows(study),
    )
