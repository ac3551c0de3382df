"""The data behind the HTML report, computed from a study alone: plain values, no plotly.

:func:`compute_report` returns one :class:`ReportData`; each field is what one figure or table of
``peftsearch.reports.html`` draws. Nothing here escapes text: that is the renderer's job.

Conventions: the metric is maximized and trainable parameters are minimized (the study's
directions); only COMPLETE trials have values, so only they appear as points.

Successive halving (``peftsearch.searcher.pruners``) writes on each trial a ``rungs`` list (what
it scored at each rung it reached); a trial it stopped is PRUNED, without values, with a
``pruned_at`` record. A repeated configuration (``duplicate_of``) was not trained: it carries an
earlier trial's result, so per-template statistics and importances leave it out (it would count
twice), as the front does. Studies from before pruning have none of these attributes.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from peftsearch.reports.confirmed import confirmations, full_confirmations, full_epochs
from peftsearch.reports.pareto import pareto_rows
from peftsearch.reports.select import pick_trial
from peftsearch.reports.trials import DUPLICATE_ATTR, front_trials, trial_params

if TYPE_CHECKING:
    import optuna

# The trial states a summary counts, in display order (Optuna's TrialState names, lower case).
STATES = ("complete", "pruned", "fail", "running", "waiting")
# Below this many complete trials, importances come with a warning that they are a rough hint.
FEW_TRIALS = 20
# A template with fewer COMPLETE trials than this, or more stopped early than completed, is
# marked "too few / too short to judge".
FEW_PER_TEMPLATE = 3
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
    trials: list[int]  # its COMPLETE trials, repeats left out
    metrics: list[float]
    stopped: list[int]  # its trials stopped early by successive halving, repeats left out
    note: str  # "too few / too short to judge: ..." when the evidence is thin; else ""


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


class StepsHistory(NamedTuple):
    """Hypervolume against the training steps spent (see :func:`hypervolume_by_steps`)."""

    steps: list[int]  # cumulative training steps after each finished trial, completion order
    hypervolume: list[float]  # hypervolume of the COMPLETE non-repeat front at that point
    reference: tuple[float, float]  # the same reference point as History's


class RungScore(NamedTuple):
    """What one trial scored at one rung of successive halving."""

    rung: int
    step: int
    metric: float
    peers: int | None  # how many other trials it was ranked against (None: not recorded)
    stopped: bool  # this rung stopped it
    protected: bool = False  # ranked low enough to stop, kept on as a coverage trial


class StoppedTrial(NamedTuple):
    """A trial successive halving stopped early (PRUNED, not a repeat)."""

    trial: int
    template: str | None
    prompt_length: Any
    lora_r: Any
    learning_rate: Any
    params: int | None  # trainable parameters
    rung: int | None  # the rung that stopped it
    step: int | None  # stopped at this training step ...
    of: int | None  # ... of this many planned
    metric: float | None  # its score at that rung
    peers: int | None  # the trials it was ranked against there
    rungs: list[RungScore]  # every rung it reached, in order
    coverage: bool  # one of the coverage trials run first
    config: dict[str, Any]


class RungSummary(NamedTuple):
    """One rung over every finished trial that reached it (repeats left out)."""

    rung: int
    reached: int  # trials scored at this rung
    stopped: int  # of which stopped there
    steps: tuple[int, int]  # (fewest, most) training steps at which trials reached it
    metrics: list[float]  # their scores there, ascending
    median: float
    protected: int = 0  # of which ranked low enough to stop but kept (coverage trials)


class ComputeSaved(NamedTuple):
    """Training steps run against the steps the same trials would have run unpruned."""

    trials: int  # finished trials that recorded their steps (repeats left out: they ran none)
    steps_run: int
    steps_planned: int  # sum of planned_steps: every trial trained to its end
    ratio: float | None  # steps_run / steps_planned, None without planned steps
    saved: int  # steps_planned - steps_run


class PruningInfo(NamedTuple):
    stopped: list[StoppedTrial]  # by trial number
    rungs: list[RungSummary]  # by rung
    with_rungs: int  # finished non-repeat trials with rung records (0: pruning off or old study)
    repeats: int  # PRUNED repeats of a stopped configuration (not trained, not listed)
    compute: ComputeSaved


class StepCurve(NamedTuple):
    """A trial's metric against its training steps: its rungs, then its end if it completed."""

    trial: int
    template: str
    steps: list[int]
    metrics: list[float]
    stopped: bool  # ends at the rung that stopped it
    pareto: bool
    params: int | None  # trainable parameters
    config: dict[str, Any]


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
    found_words: dict[str, Any] = field(default_factory=dict)  # verbalizers.auto
    pruning: PruningInfo = field(
        default_factory=lambda: PruningInfo([], [], 0, 0, ComputeSaved(0, 0, 0, None, 0))
    )
    step_curves: list[StepCurve] = field(default_factory=list)
    steps_history: StepsHistory = field(default_factory=lambda: StepsHistory([], [], (0.0, 1.0)))
    confirmed: list[Any] = field(default_factory=list)  # reports.confirmed.Confirmed
    full_confirmed: list[Any] = field(default_factory=list)  # reports.confirmed.FullConfirmed


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: t.number)


def _is_repeat(trial: optuna.trial.FrozenTrial) -> bool:
    return DUPLICATE_ATTR in trial.user_attrs


def _trained(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The COMPLETE trials that trained (repeats of an earlier configuration left out)."""
    return [t for t in _complete(study) if not _is_repeat(t)]


def _stopped(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The PRUNED trials that trained (stopped early), by number; repeats left out."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    return sorted((t for t in trials if not _is_repeat(t)), key=lambda t: t.number)


def _int(value: Any) -> int | None:
    """An int user attribute, or None (missing, or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value)


def _rung_scores(trial: optuna.trial.FrozenTrial) -> list[RungScore]:
    """The trial's ``rungs`` records, in rung order (entries missing a number are skipped)."""
    out = []
    for e in trial.user_attrs.get("rungs") or []:
        if not isinstance(e, dict):
            continue
        rung, step, metric = _int(e.get("rung")), _int(e.get("step")), e.get("metric")
        if rung is None or step is None or not isinstance(metric, int | float):
            continue
        peers, stopped = _int(e.get("peers")), bool(e.get("stopped"))
        out.append(RungScore(rung, step, float(metric), peers, stopped, bool(e.get("protected"))))
    return sorted(out, key=lambda r: (r.rung, r.step))


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
    for t in _trained(study):  # a repeat would be a second point on its original
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


def _thin_note(completed: int, stopped: int) -> str:
    """Why a template's evidence is too thin to judge it, or ""."""
    few = completed < FEW_PER_TEMPLATE
    short = stopped > completed
    if not (few or short):
        return ""
    reasons = []
    if few:
        reasons.append(f"{completed} completed trial{'' if completed == 1 else 's'}")
    if short:
        reasons.append(f"{stopped} of {completed + stopped} stopped early")
    label = "too few / too short" if few and short else "too few" if few else "too short"
    return f"{label} to judge: {', '.join(reasons)}"


def template_metrics(study: optuna.Study) -> list[TemplateMetrics]:
    """The metric of every COMPLETE trial, grouped by template (search-space order first),
    with the trials stopped early and a note when a template has too little evidence.

    Repeats are left out. A stopped trial without a recorded template is not attributed.
    """
    groups: dict[str, TemplateMetrics] = {}

    def group_of(t: optuna.trial.FrozenTrial, name: str) -> TemplateMetrics:
        group = groups.setdefault(name, TemplateMetrics(name, None, [], [], [], ""))
        if group.text is None and "template_text" in t.user_attrs:
            group = groups[name] = group._replace(text=str(t.user_attrs["template_text"]))
        return group

    for t in _trained(study):
        group = group_of(t, str(_config(study, t).get("template")))
        group.trials.append(t.number)
        group.metrics.append(t.values[0])
    for t in _stopped(study):
        template = _config(study, t).get("template")
        if template is not None:
            group_of(t, str(template)).stopped.append(t.number)
    spec = study.user_attrs.get("search_space", {}).get("template")
    order = [str(c) for c in spec.get("choices", [])] if isinstance(spec, dict) else []
    rank = {name: i for i, name in enumerate(order)}
    return sorted(
        (g._replace(note=_thin_note(len(g.trials), len(g.stopped))) for g in groups.values()),
        key=lambda g: (rank.get(g.template, len(rank)), g.template),
    )


def _importance_for(
    study: optuna.Study,
    trials: list[optuna.trial.FrozenTrial],
    index: int,
    label: str,
    left_out: str = "",
) -> Importances:
    """``study`` holds exactly ``trials`` (the COMPLETE non-repeat ones); ``left_out`` says
    which trials were not used ("" when none)."""
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
    return Importances(label, dict(result), "; ".join(x for x in (few, left_out) if x))


def importances(study: optuna.Study) -> list[Importances]:
    """Parameter importances for each objective (metric first, then trainable parameters).

    Computed on the COMPLETE trials only, repeats left out (a repeat carries an earlier
    trial's values and would count twice): they are copied into an in-memory study, since
    Optuna's evaluators read every COMPLETE trial of the study they are given. The note says
    how many trials stopped early are not used.
    """
    import optuna

    trials = _trained(study)
    stopped = len(_stopped(study))
    repeats = sum(1 for t in _complete(study) if _is_repeat(t))
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
        _importance_for(own, trials, 0, f"{metric} (maximized)", "; ".join(left_out)),
        _importance_for(own, trials, 1, "trainable parameters (minimized)", "; ".join(left_out)),
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


def _reference(study: optuna.Study) -> tuple[float, float]:
    """(metric, trainable params) of the hypervolume reference point: see :func:`history`."""
    trials = _complete(study)
    metrics = [t.values[0] for t in trials]
    params = [max(t.values[1], 1.0) for t in trials]
    base = study.user_attrs.get("base_params") or 0
    return (min([0.0, *metrics]), float(max([base, *params, 1.0])))


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
    reference = _reference(study)
    ref = (reference[0], math.log10(reference[1]))
    best: list[float] = []
    volume: list[float] = []
    for i, m in enumerate(metrics):
        best.append(m if not best else max(best[-1], m))
        seen = [(metrics[j], math.log10(params[j])) for j in range(i + 1)]
        volume.append(hypervolume_2d(seen, ref))
    return History([t.number for t in trials], metrics, best, volume, reference)


def hypervolume_by_steps(study: optuna.Study) -> StepsHistory:
    """Hypervolume of the front against the training steps spent to find it.

    The finished trials (COMPLETE and PRUNED) in completion order (``datetime_complete``, then
    trial number; a trial without a completion time last): after each, the cumulative
    ``train_steps`` user attribute (a stopped trial counts the steps it ran, a repeat 0, a
    trial that did not record its steps 0) and the hypervolume of the COMPLETE non-repeat
    trials so far, with :func:`history`'s reference point and units (metric x decades).
    Failed trials are left out. Plain Python: works on any study, e.g. one loaded from storage.
    """
    from optuna.trial import TrialState

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))

    def order(t: optuna.trial.FrozenTrial) -> tuple[bool, datetime, int]:
        done = t.datetime_complete
        return (done is None, done or datetime.min, t.number)

    reference = _reference(study)
    ref = (reference[0], math.log10(reference[1]))
    seen: list[tuple[float, float]] = []
    steps: list[int] = []
    volume: list[float] = []
    total = 0
    for t in sorted(finished, key=order):
        total += max(0, _int(t.user_attrs.get("train_steps")) or 0)
        if t.state == TrialState.COMPLETE and not _is_repeat(t):
            seen.append((t.values[0], math.log10(max(t.values[1], 1.0))))
            volume.append(hypervolume_2d(seen, ref))
        else:
            volume.append(volume[-1] if volume else 0.0)
        steps.append(total)
    return StepsHistory(steps, volume, reference)


def compute_saved(study: optuna.Study) -> ComputeSaved:
    """Training steps run by the finished non-repeat trials against the steps they planned.

    Counts COMPLETE and PRUNED trials that recorded ``train_steps``; a trial's planned steps
    are its ``planned_steps``, else its ``pruned_at`` ``of``, else its ``train_steps``.
    """
    run = planned = n = 0
    for t in sorted([*_trained(study), *_stopped(study)], key=lambda t: t.number):
        done = _int(t.user_attrs.get("train_steps"))
        if done is None:
            continue
        at = t.user_attrs.get("pruned_at")
        of = _int(at.get("of")) if isinstance(at, dict) else None
        plan = _int(t.user_attrs.get("planned_steps")) or of or done
        n, run, planned = n + 1, run + done, planned + max(plan, done)
    return ComputeSaved(n, run, planned, run / planned if planned else None, planned - run)


def pruning_info(study: optuna.Study) -> PruningInfo:
    """The trials successive halving stopped, each rung's scores and the compute it saved."""
    from optuna.trial import TrialState

    stopped = []
    for t in _stopped(study):
        config = _config(study, t)
        rungs = _rung_scores(t)
        at = t.user_attrs.get("pruned_at")
        at = at if isinstance(at, dict) else {}
        rung = _int(at.get("rung"))
        here = next((r for r in rungs if r.stopped), None)
        if here is None:
            here = next((r for r in rungs if r.rung == rung), rungs[-1] if rungs else None)
        metric = at.get("metric")
        if not isinstance(metric, int | float):
            metric = here.metric if here else None
        template = config.get("template")
        stopped.append(
            StoppedTrial(
                trial=t.number,
                template=None if template is None else str(template),
                prompt_length=config.get("prompt_length"),
                lora_r=config.get("lora_r"),
                learning_rate=config.get("learning_rate"),
                params=_int(t.user_attrs.get("trainable_params")),
                rung=rung if rung is not None else (here.rung if here else None),
                step=_int(at.get("step")) or _int(t.user_attrs.get("train_steps")),
                of=_int(at.get("of")) or _int(t.user_attrs.get("planned_steps")),
                metric=None if metric is None else float(metric),
                peers=here.peers if here else None,
                rungs=rungs,
                coverage=bool(t.user_attrs.get("coverage")),
                config=config,
            )
        )
    by_rung: dict[int, list[RungScore]] = {}
    with_rungs = 0
    for t in [*_trained(study), *_stopped(study)]:
        scores = _rung_scores(t)
        with_rungs += bool(scores)
        for r in scores:
            by_rung.setdefault(r.rung, []).append(r)
    summaries = [
        RungSummary(
            rung=rung,
            reached=len(rs),
            stopped=sum(r.stopped for r in rs),
            steps=(min(r.step for r in rs), max(r.step for r in rs)),
            metrics=sorted(r.metric for r in rs),
            median=statistics.median(r.metric for r in rs),
            protected=sum(r.protected for r in rs),
        )
        for rung, rs in sorted(by_rung.items())
    ]
    repeats = sum(
        1 for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if _is_repeat(t)
    )
    return PruningInfo(stopped, summaries, with_rungs, repeats, compute_saved(study))


def step_curves(study: optuna.Study) -> list[StepCurve]:
    """Metric against training steps for every non-repeat trial with rung records, by number:
    through its rungs' (step, metric), then, for a COMPLETE trial, its (``train_steps``, final
    metric) when it recorded its steps; a stopped trial ends at its last rung."""
    front = {t.number for t in front_trials(study)}
    curves = []
    for t in sorted([*_trained(study), *_stopped(study)], key=lambda t: t.number):
        rungs = _rung_scores(t)
        if not rungs:
            continue
        steps = [r.step for r in rungs]
        metrics = [r.metric for r in rungs]
        done = t.values is not None
        end = _int(t.user_attrs.get("train_steps"))
        if done and end is not None:
            steps.append(end)
            metrics.append(t.values[0])
        params = int(t.values[1]) if done else _int(t.user_attrs.get("trainable_params"))
        config = _config(study, t)
        curves.append(
            StepCurve(
                trial=t.number,
                template=str(config.get("template")),
                steps=steps,
                metrics=metrics,
                stopped=not done,
                pareto=t.number in front,
                params=params,
                config=config,
            )
        )
    return curves


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
    """model.head verbalizer: per template x verbalizer (x demonstrations per class, when
    searched), the untrained model's metric (the ``zero_shot`` and ``zero_shot_demos`` study
    attributes), the best trained trial's with the same prompt and what training added."""
    zero = {0: study.user_attrs.get("zero_shot") or {}}
    for k, scores in (study.user_attrs.get("zero_shot_demos") or {}).items():
        zero[int(k)] = scores
    best: dict[tuple[str, str, int], tuple[float, int]] = {}
    for t in _complete(study):
        config = _config(study, t)
        demos = int(config.get("n_demos") or 0) if "demo_rows" in t.user_attrs else 0
        key = (str(config.get("template")), str(config.get("verbalizer")), demos)
        if t.values[1] > 0 and (key not in best or t.values[0] > best[key][0]):
            best[key] = (t.values[0], t.number)
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
        found_words=found_words(study),
        pruning=pruning_info(study),
        step_curves=step_curves(study),
        steps_history=hypervolume_by_steps(study),
        confirmed=sorted(confirmations(study).values(), key=lambda c: (c.trainable, c.trial)),
        full_confirmed=[
            f
            for epochs in full_epochs(study)
            for f in sorted(
                full_confirmations(study, epochs).values(), key=lambda c: (c.trainable, c.trial)
            )
        ],
    )
