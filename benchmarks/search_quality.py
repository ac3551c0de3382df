"""Search quality: the old search, random search and the new default, by hypervolume against
cumulative training steps.

For each space file and each sampler seed, three fresh studies, one after the other in this
process (each its own ``TrialRunner``, so each reloads the model), each from a copy of the space
file with a method's settings written over it (``WORK/<space>/<method>-s<seed>.yaml``, output
``WORK/<space>/<method>-s<seed>/``):

- ``old_tpe``: the tool as it was before the default space, pruning and coverage came:
  ``study.sampler: tpe``, ``pruner: none``, ``coverage: false``, and ``params`` replaced by the
  old space: template (all of the file's), prompt_length {0, 4, 8, 16, 32}, lora_r
  {0, 1, 2, 4, 8, 16, 32}, learning_rate log-uniform [1e-5, 5e-3] (one rate for every part),
  prompt_init random, epochs 1, batch_size 16, lora_alpha 16. The file's ``study.enqueue`` is
  kept only with ``--old-enqueue`` (default: dropped, so no method gets a hand-picked warm start).
- ``random``: the new default space (the file's ``params:`` dropped: DEFAULT_PARAMS),
  ``sampler: random``, ``pruner: none``, ``coverage: false``, run in chunks (the same study
  resumed with a larger ``study.n_trials``) until its cumulative training steps reach twice the
  mean total steps of this space's ``old_tpe`` runs. Safety cap: ``--random-max-trials``
  (default 20 x n_trials), or a chunk that trains no step; ``stopped_by`` says which.
- ``new``: the new default: no ``params:``, ``sampler: tpe``, ``pruner: moasha`` (its defaults),
  ``coverage: true``, as many trials as ``old_tpe``.

Every method: ``study.seed`` = the seed, ``study.enqueue`` dropped (but see above),
``study.timeout`` / ``study.storage`` / ``study.sampler_kwargs`` cleared (a fresh sqlite study in
the run's folder), ``data.train_size`` / ``data.eval_size`` from the flags when given. Relative
model and data paths are resolved against the original file, so the copies mean the same.

Per run, every finished trial (COMPLETE, PRUNED; failed ones only in the state counts, as in
``figures.hypervolume_by_steps``) in completion order (datetime_complete, then number): state,
metric (values[0], or the score it was stopped with: pruned_at.metric), trainable params,
``train_steps`` (0 for a repeat: ``duplicate_of``), cumulative steps and the hypervolume so far.
Hypervolume: of the COMPLETE non-repeat trials' (metric, log10 trainable params),
``peftsearch.reports.figures.hypervolume_2d``, up to the reference of ``figures.history``
(metric min(0, lowest seen), params max(base model, largest seen)) taken over all runs of the
space, so that runs compare. The curve comes from
``figures.hypervolume_by_steps`` when that exists and agrees (same reference, same steps);
otherwise from the same computation here (``hv_source`` says which).

Also per run: the majority-class rate of the trial eval subsample (``runner.splits.trial_eval``),
trials that learned (metric > majority + 0.02) and trials within 0.02 of the majority (both over
the trained trials with a metric: COMPLETE and PRUNED, repeats left out; meaningful for
accuracy), the Pareto front (``reports.trials.front_trials``): size and parameter span in
decades, best metric, total steps, wall seconds.

Summary per space and method: mean and std over seeds of final hypervolume, best metric, total
steps; goal 1: steps ``new`` needs to reach ``old_tpe``'s final hypervolume of the same seed
(linear interpolation on new's curve from (0 steps, 0)), as a fraction of that old_tpe run's
total steps (goal <= 1/3; null = never reached); goal 2: ``new``'s final hypervolume against
``random``'s (which had 2x old_tpe's steps) of the same seed (goal: new higher).

Output: a markdown table on stdout (for benchmarks/RESULTS.md), everything in ``--out`` (JSON),
and with ``--html`` a self-contained plotly page (hypervolume vs cumulative steps, one line per
method x seed, one subplot per space).

    python benchmarks/search_quality.py benchmarks/space_rt_cpu.yaml --seeds 0 1 2 --n-trials 8 \\
        --train-size 256 --eval-size 128 --threads 2 \\
        --out benchmarks/results/search-quality-2026-11-23.json \\
        --html benchmarks/results/search-quality-2026-11-23.html
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import shutil
import statistics
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import yaml

try:
    import peftsearch  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from peftsearch.reports.figures import hypervolume_2d
from peftsearch.spaces import load_space

METHODS = ("old_tpe", "random", "new")
LEARNED_MARGIN = 0.02  # "learned": metric > majority + this; "near majority": within it
GOAL_STEP_FRACTION = 1 / 3
FINISHED = ("COMPLETE", "PRUNED")  # as figures.hypervolume_by_steps: failed trials left out

# The search space of the tool before DEFAULT_PARAMS (template: added per file, all of its).
OLD_PARAMS: dict[str, Any] = {
    "prompt_length": {"type": "categorical", "choices": [0, 4, 8, 16, 32]},
    "lora_r": {"type": "categorical", "choices": [0, 1, 2, 4, 8, 16, 32]},
    "learning_rate": {"type": "float", "low": 1.0e-5, "high": 5.0e-3, "log": True},
    "prompt_init": "random",
    "epochs": 1,
    "batch_size": 16,
    "lora_alpha": 16,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spaces", nargs="+", metavar="SPACE", help="space files")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="default: 0 1 2")
    p.add_argument(
        "--n-trials", type=int, default=None, help="old_tpe and new (default: each space's own)"
    )
    p.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="default: all three"
    )
    p.add_argument(
        "--out", default=None, help="JSON (default: benchmarks/results/search-quality-<date>.json)"
    )
    p.add_argument("--html", default=None, help="also write this plotly HTML page")
    p.add_argument(
        "--work-dir",
        default=None,
        help="studies go here (default: runs/search-quality-<timestamp>)",
    )
    p.add_argument("--force", action="store_true", help="delete earlier runs in --work-dir")
    p.add_argument("--train-size", type=int, default=None, help="override data.train_size")
    p.add_argument("--eval-size", type=int, default=None, help="override data.eval_size")
    p.add_argument(
        "--old-enqueue", action="store_true", help="old_tpe keeps the file's study.enqueue"
    )
    p.add_argument(
        "--random-max-trials",
        type=int,
        default=None,
        help="safety cap of the random runs (default: 20 x n_trials)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)"
    )
    args = p.parse_args(argv)
    if "random" in args.methods and "old_tpe" not in args.methods:
        p.error("random's step budget comes from old_tpe: --methods needs old_tpe with random")
    if args.n_trials is not None and args.n_trials < 1:
        p.error("--n-trials must be >= 1")
    return args


# -- the space copies ---------------------------------------------------------------------------


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """``load_space``'s override rule: make missing parents, set the leaf."""
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[leaf] = value


def method_raw(
    raw: dict[str, Any], method: str, seed: int, n_trials: int, args: argparse.Namespace
) -> dict[str, Any]:
    """The space file's sections with ``method``'s settings written over them."""
    out = copy.deepcopy(raw)
    enqueue = (out.get("study") or {}).get("enqueue") or []
    common: dict[str, Any] = {
        "study.seed": seed,
        "study.n_trials": n_trials,
        "study.timeout": None,
        "study.storage": None,
        "study.sampler_kwargs": {},
        "study.enqueue": enqueue if (method == "old_tpe" and args.old_enqueue) else [],
        "study.pruner": "moasha" if method == "new" else "none",
        "study.coverage": method == "new",
        "study.sampler": "random" if method == "random" else "tpe",
    }
    if args.train_size is not None:
        common["data.train_size"] = args.train_size
    if args.eval_size is not None:
        common["data.eval_size"] = args.eval_size
    for key, value in common.items():
        _set(out, key, value)
    if method == "old_tpe":
        templates = list((raw.get("templates") or {}).keys())
        out["params"] = {
            "template": {"type": "categorical", "choices": templates},
            **copy.deepcopy(OLD_PARAMS),
        }
    else:
        out.pop("params", None)  # the default space (DEFAULT_PARAMS)
    return out


def resolved_raw(space_file: Path) -> dict[str, Any]:
    """The file's YAML with model and data paths as ``load_space`` resolves them (absolute), so
    a copy in another folder means the same files."""
    raw = yaml.safe_load(space_file.read_text(encoding="utf-8"))
    space = load_space(space_file)
    raw["model"]["path"] = space.model.path
    if space.data.path is not None:
        raw["data"]["path"] = space.data.path
    if space.data.files is not None:
        for split in ("train", "validation", "test"):
            value = getattr(space.data.files, split)
            if value:
                raw["data"]["files"][split] = value
    return raw


# -- running ------------------------------------------------------------------------------------


def _load(path: Path, n_trials: int | None = None) -> Any:
    return load_space(path, {"study.n_trials": n_trials} if n_trials else None)


def execute(
    yaml_path: Path, step_budget: float | None = None, max_trials: int | None = None
) -> dict[str, Any]:
    """Run one fresh study (resumed in chunks while ``step_budget`` is not met); its numbers."""
    from peftsearch.objectives.runner import TrialRunner
    from peftsearch.searcher.study import counts_toward_budget, open_study, run_study

    space = _load(yaml_path)
    runner = TrialRunner(space)  # kept across the chunks of this run: the same study
    t0 = time.perf_counter()
    run_study(space, runner=runner, show_progress=False)
    # A study resumed (not by main, which starts each afresh) may hold more than n_trials.
    counted = sum(map(counts_toward_budget, open_study(space, create=False).get_trials()))
    n, chunks, stopped_by = max(space.study.n_trials, counted), 1, "n_trials"
    if step_budget is not None:
        assert max_trials is not None
        stopped_by = "budget"
        while True:
            study = open_study(space, create=False)
            rows = trial_rows(study)
            steps = sum(r["train_steps"] for r in rows)
            if steps >= step_budget:
                break
            if n >= max_trials:
                stopped_by = "cap"
                break
            trained = [r["train_steps"] for r in rows if r["train_steps"] > 0]
            if not trained:
                stopped_by = "no_progress"
                break
            per_trial = statistics.fmean(trained)
            more = max(1, math.ceil((step_budget - steps) / per_trial))
            n = min(max_trials, n + more)
            space = _load(yaml_path, n)
            before = steps
            run_study(space, runner=runner, show_progress=False)
            chunks += 1
            after = sum(r["train_steps"] for r in trial_rows(open_study(space, create=False)))
            if after == before:
                stopped_by = "no_progress"
                break
    wall = time.perf_counter() - t0
    study = open_study(space, create=False)
    labels = runner.splits.trial_eval["label"]
    majority = float(labels.value_counts(normalize=True).max()) if len(labels) else None
    return {
        "study": study,
        "wall_s": wall,
        "n_trials": n,
        "chunks": chunks,
        "stopped_by": stopped_by,
        "majority_rate": majority,
        "eval_rows": int(len(labels)),
        "metric_name": space.objectives.metric,
    }


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """The finished trials (COMPLETE, PRUNED) in completion order, with cumulative steps."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED]
    far = datetime.max.replace(tzinfo=None)
    trials.sort(key=lambda t: ((t.datetime_complete or far).replace(tzinfo=None), t.number))
    rows, total = [], 0
    for t in trials:
        a = t.user_attrs
        metric = None
        if t.state.name == "COMPLETE" and t.values:
            metric, params = float(t.values[0]), t.values[1]
        else:
            pruned = a.get("pruned_at") or {}
            if pruned.get("metric") is not None:
                metric = float(pruned["metric"])
            params = a.get("trainable_params")
        steps = 0 if "duplicate_of" in a else int(a.get("train_steps") or 0)
        total += steps
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "metric": metric,
                "trainable_params": int(params) if params is not None else None,
                "train_steps": steps,
                "cumulative_steps": total,
                "duplicate_of": a.get("duplicate_of"),
                "coverage": bool(a.get("coverage")),
                "params": a.get("params"),
            }
        )
    return rows


# -- hypervolume by steps -----------------------------------------------------------------------


class Curve(NamedTuple):
    steps: list[int]
    hypervolume: list[float]
    reference: tuple[float, float]  # (metric, trainable params)


def reference_of(studies: list[Any]) -> tuple[float, float]:
    """``figures.history``'s reference over several studies: metric min(0, lowest), params
    max(base params, largest count, 1)."""
    metrics, params = [0.0], [1.0]
    for study in studies:
        params.append(float(study.user_attrs.get("base_params") or 0))
        for t in study.get_trials(deepcopy=False):
            if t.state.name == "COMPLETE" and t.values:
                metrics.append(float(t.values[0]))
                params.append(max(float(t.values[1]), 1.0))
    return min(metrics), max(params)


def local_curve(rows: list[dict[str, Any]], reference: tuple[float, float]) -> Curve:
    ref = (reference[0], math.log10(reference[1]))
    points: list[tuple[float, float]] = []
    steps, volume = [], []
    for r in rows:
        if r["state"] == "COMPLETE" and r["metric"] is not None and r["duplicate_of"] is None:
            points.append((r["metric"], math.log10(max(r["trainable_params"] or 0, 1))))
        steps.append(r["cumulative_steps"])
        volume.append(hypervolume_2d(points, ref) if points else 0.0)
    return Curve(steps, volume, reference)


def library_curve(study: Any) -> Any:
    try:
        from peftsearch.reports.figures import hypervolume_by_steps  # type: ignore[attr-defined]
    except ImportError:
        return None
    try:
        return hypervolume_by_steps(study)
    except Exception as exc:  # a library still being written: say so, use the local one
        print(f"warning: hypervolume_by_steps failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def _same_reference(lib: Any, reference: tuple[float, float]) -> bool:
    m, p = float(lib[0]), float(lib[1])
    same_p = math.isclose(p, reference[1], rel_tol=1e-9) or math.isclose(
        p, math.log10(reference[1]), rel_tol=1e-9
    )
    return math.isclose(m, reference[0], abs_tol=1e-12) and same_p


def curve_for(
    study: Any, rows: list[dict[str, Any]], reference: tuple[float, float]
) -> tuple[Curve, str]:
    """The library's curve if it exists and agrees with this run's steps and reference."""
    mine = local_curve(rows, reference)
    lib = library_curve(study)
    if lib is None:
        return mine, "local (no figures.hypervolume_by_steps)"
    steps, volume = [int(s) for s in lib.steps], [float(v) for v in lib.hypervolume]
    if not _same_reference(lib.reference, reference):
        return mine, f"local (library reference {tuple(lib.reference)} is not the space's)"
    if steps != mine.steps:
        return mine, "local (library steps differ from the trials' train_steps)"
    return Curve(steps, volume, reference), "figures.hypervolume_by_steps"


def steps_to_reach(curve: Curve, target: float) -> float | None:
    """First cumulative step count at which ``curve`` reaches ``target`` (linear between the
    points, from (0, 0)); None if it never does."""
    if target <= 0:
        return 0.0
    prev_s, prev_v = 0.0, 0.0
    for s, v in zip(curve.steps, curve.hypervolume, strict=True):
        if v >= target:
            if v == prev_v:
                return float(s)
            return prev_s + (target - prev_v) / (v - prev_v) * (s - prev_s)
        prev_s, prev_v = float(s), v
    return None


# -- per run numbers ----------------------------------------------------------------------------


def run_numbers(run: dict[str, Any], rows: list[dict[str, Any]], curve: Curve) -> dict[str, Any]:
    from peftsearch.reports.trials import front_trials

    study = run["study"]
    majority = run["majority_rate"]
    trained = [r for r in rows if r["metric"] is not None and r["duplicate_of"] is None]
    trained = [r for r in trained if r["state"] in ("COMPLETE", "PRUNED")]
    learned = near = None
    if majority is not None:
        learned = sum(r["metric"] > majority + LEARNED_MARGIN for r in trained)
        near = sum(abs(r["metric"] - majority) <= LEARNED_MARGIN for r in trained)
    front = front_trials(study)
    counts = [max(int(t.values[1]), 1) for t in front]
    complete = [r["metric"] for r in rows if r["state"] == "COMPLETE" and r["metric"] is not None]
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    return {
        "n_trials": run["n_trials"],
        "chunks": run["chunks"],
        "stopped_by": run["stopped_by"],
        "states": states,
        "repeats": sum(r["duplicate_of"] is not None for r in rows),
        "wall_s": round(run["wall_s"], 3),
        "metric": run["metric_name"],
        "majority_rate": majority,
        "eval_rows": run["eval_rows"],
        "trained_with_metric": len(trained),
        "learned": learned,
        "near_majority": near,
        "front_size": len(front),
        "front_params": sorted(counts),
        "front_span_decades": (math.log10(max(counts) / min(counts)) if counts else None),
        "best_metric": max(complete) if complete else None,
        "total_steps": rows[-1]["cumulative_steps"] if rows else 0,
        "final_hypervolume": curve.hypervolume[-1] if curve.hypervolume else 0.0,
        "base_params": study.user_attrs.get("base_params"),
    }


# -- summary ------------------------------------------------------------------------------------


def mean_std(values: list[float | None]) -> dict[str, Any]:
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": statistics.fmean(xs),
        "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "n": len(xs),
    }


def summarize(space_result: dict[str, Any]) -> dict[str, Any]:
    runs = space_result["runs"]
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["method"], {})[r["seed"]] = r
    methods: dict[str, Any] = {}
    for method, seeds in by.items():
        rs = list(seeds.values())
        methods[method] = {
            key: mean_std([r["numbers"][key] for r in rs])
            for key in (
                "final_hypervolume",
                "best_metric",
                "total_steps",
                "learned",
                "near_majority",
                "front_size",
                "front_span_decades",
                "wall_s",
            )
        }
    goal1: dict[str, Any] = {"goal": f"<= {GOAL_STEP_FRACTION:.4f}", "per_seed": {}}
    goal2: dict[str, Any] = {"goal": "new > random", "per_seed": {}}
    old, new, rnd = by.get("old_tpe", {}), by.get("new", {}), by.get("random", {})
    for seed in sorted(set(old) & set(new)):
        target = old[seed]["numbers"]["final_hypervolume"]
        total = old[seed]["numbers"]["total_steps"]
        c = new[seed]["curve"]
        reach = steps_to_reach(Curve(c["steps"], c["hypervolume"], tuple(c["reference"])), target)
        frac = reach / total if reach is not None and total else None
        goal1["per_seed"][str(seed)] = {
            "old_final_hypervolume": target,
            "old_total_steps": total,
            "new_steps_to_reach": reach,
            "fraction": frac,
            "met": frac is not None and frac <= GOAL_STEP_FRACTION,
        }
    for seed in sorted(set(rnd) & set(new)):
        a, b = new[seed]["numbers"], rnd[seed]["numbers"]
        goal2["per_seed"][str(seed)] = {
            "new_final_hypervolume": a["final_hypervolume"],
            "random_final_hypervolume": b["final_hypervolume"],
            "random_total_steps": b["total_steps"],
            "new_total_steps": a["total_steps"],
            "met": a["final_hypervolume"] > b["final_hypervolume"],
        }
    for goal in (goal1, goal2):
        per = goal["per_seed"].values()
        goal["met_seeds"] = sum(bool(x["met"]) for x in per)
        goal["seeds"] = len(goal["per_seed"])
    fracs = [x["fraction"] for x in goal1["per_seed"].values()]
    goal1["fraction"] = mean_std(fracs)
    goal1["never_reached"] = sum(f is None for f in fracs)
    return {"methods": methods, "goal_steps_to_old_hv": goal1, "goal_new_beats_random": goal2}


def _pm(stat: dict[str, Any], spec: str) -> str:
    if stat.get("mean") is None:
        return "-"
    return f"{format(stat['mean'], spec)} ± {format(stat['std'], spec)}"


def markdown(results: dict[str, Any]) -> str:
    seeds = " ".join(map(str, results["seeds"]))
    lines = [
        f"## Search quality ({results['started']}, seeds {seeds})",
        "",
        "Mean ± std over seeds. HV: hypervolume of (metric, log10 trainable params) up to the "
        "space's reference (metric x decades). Learned: trials with metric > majority + "
        f"{LEARNED_MARGIN}; near majority: within {LEARNED_MARGIN} of it (trained trials, "
        "COMPLETE and PRUNED).",
    ]
    for s in results["spaces"]:
        ref = s["reference"]
        sizes = f"train {s['train_size']} / eval {s['eval_size']} rows"
        lines += [
            "",
            f"### {s['name']} (`{s['file']}`): {sizes}, {s['n_trials']} trials "
            f"(old_tpe, new), reference ({ref[0]:g}, {ref[1]:,.0f} params)",
            "",
            "| method | final HV | best metric | total steps | learned | near majority "
            "| front size | front span (decades) | wall s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for method, m in s["summary"]["methods"].items():
            lines.append(
                f"| {method} | {_pm(m['final_hypervolume'], '.4f')} | "
                f"{_pm(m['best_metric'], '.4f')} | {_pm(m['total_steps'], ',.0f')} | "
                f"{_pm(m['learned'], '.1f')} | {_pm(m['near_majority'], '.1f')} | "
                f"{_pm(m['front_size'], '.1f')} | {_pm(m['front_span_decades'], '.2f')} | "
                f"{_pm(m['wall_s'], '.0f')} |"
            )
        g1, g2 = s["summary"]["goal_steps_to_old_hv"], s["summary"]["goal_new_beats_random"]
        if g1["seeds"]:
            per = ", ".join(
                f"seed {k}: " + ("never" if v["fraction"] is None else f"{v['fraction']:.2f}")
                for k, v in g1["per_seed"].items()
            )
            lines += [
                "",
                f"- Goal 1, steps `new` needs to reach `old_tpe`'s final HV / old_tpe's steps "
                f"(goal <= 1/3): {per}; met on {g1['met_seeds']} of {g1['seeds']} seeds.",
            ]
        if g2["seeds"]:
            per = ", ".join(
                f"seed {k}: {v['new_final_hypervolume']:.4f} vs {v['random_final_hypervolume']:.4f}"
                for k, v in g2["per_seed"].items()
            )
            lines.append(
                f"- Goal 2, `new`'s final HV vs `random`'s with 2x old_tpe's steps (goal: new "
                f"higher): {per}; met on {g2['met_seeds']} of {g2['seeds']} seeds."
            )
    return "\n".join(lines)


def write_html(results: dict[str, Any], path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    spaces = results["spaces"]
    fig = make_subplots(
        rows=len(spaces),
        cols=1,
        subplot_titles=[s["name"] for s in spaces],
        vertical_spacing=0.12 if len(spaces) > 1 else 0.1,
    )
    colors = {"old_tpe": "#636efa", "random": "#7f7f7f", "new": "#ef553b"}
    dashes = ["solid", "dash", "dot", "dashdot", "longdash"]
    for i, s in enumerate(spaces, start=1):
        for r in s["runs"]:
            c = r["curve"]
            fig.add_trace(
                go.Scatter(
                    x=[0, *c["steps"]],
                    y=[0.0, *c["hypervolume"]],
                    mode="lines+markers",
                    line={
                        "color": colors.get(r["method"]),
                        "dash": dashes[results["seeds"].index(r["seed"]) % len(dashes)],
                        "shape": "hv",
                    },
                    name=f"{r['method']} seed {r['seed']}",
                    legendgroup=r["method"],
                    showlegend=i == 1,
                ),
                row=i,
                col=1,
            )
        fig.update_xaxes(title_text="cumulative training steps", row=i, col=1)
        fig.update_yaxes(title_text="hypervolume (metric x decades)", row=i, col=1)
    fig.update_layout(
        title=f"Search quality: hypervolume vs training steps ({results['started']})",
        height=420 * len(spaces) + 80,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)


# -- main ---------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "space"


def run_space(space_file: Path, name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    raw = resolved_raw(space_file)
    base = load_space(space_file)
    n_trials = args.n_trials or base.study.n_trials
    max_random = args.random_max_trials or 20 * n_trials
    folder = work / name
    runs: list[dict[str, Any]] = []
    studies: dict[tuple[str, int], tuple[Any, list[dict[str, Any]]]] = {}
    order = [m for m in METHODS if m in args.methods]  # old_tpe first: random's budget
    old_steps: list[int] = []
    for method in order:
        budget = 2 * statistics.fmean(old_steps) if method == "random" and old_steps else None
        for seed in args.seeds:
            tag = f"{method}-s{seed}"
            out_dir = folder / tag
            if out_dir.exists() and any(out_dir.iterdir()):
                if not args.force:
                    raise SystemExit(f"{out_dir} is not empty; pick another --work-dir or --force")
                shutil.rmtree(out_dir)
            spec = method_raw(raw, method, seed, n_trials, args)
            spec["output"] = str(out_dir)
            _set(spec, "study.name", f"{name}-{tag}")
            folder.mkdir(parents=True, exist_ok=True)
            yaml_path = folder / f"{tag}.yaml"
            yaml_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
            print(
                f"=== {name} {tag}"
                + (f" (step budget {budget:,.0f})" if budget is not None else ""),
                flush=True,
            )
            run = execute(yaml_path, budget, max_random if budget is not None else None)
            rows = trial_rows(run["study"])
            studies[(method, seed)] = (run["study"], rows)
            if method == "old_tpe":
                old_steps.append(rows[-1]["cumulative_steps"] if rows else 0)
            runs.append(
                {
                    "method": method,
                    "seed": seed,
                    "space_file": str(yaml_path),
                    "output": str(out_dir),
                    "run": run,
                    "step_budget": budget,
                }
            )
            print(
                f"=== {name} {tag}: {len(rows)} trials, "
                f"{rows[-1]['cumulative_steps'] if rows else 0:,} steps, "
                f"{run['wall_s']:.1f} s",
                flush=True,
            )
    reference = reference_of([s for s, _ in studies.values()])
    out_runs = []
    for r in runs:
        study, rows = studies[(r["method"], r["seed"])]
        curve, source = curve_for(study, rows, reference)
        for row, hv in zip(rows, curve.hypervolume, strict=True):
            row["hypervolume"] = hv
        run = r.pop("run")
        out_runs.append(
            {
                **r,
                "study_name": study.study_name,
                "numbers": run_numbers(run, rows, curve),
                "hv_source": source,
                "curve": {
                    "steps": curve.steps,
                    "hypervolume": curve.hypervolume,
                    "reference": list(curve.reference),
                },
                "trials": rows,
            }
        )
    d = base.data
    result = {
        "name": name,
        "file": str(space_file),
        "n_trials": n_trials,
        "train_size": args.train_size if args.train_size is not None else d.train_size,
        "eval_size": args.eval_size if args.eval_size is not None else d.eval_size,
        "random_max_trials": max_random,
        "reference": list(reference),
        "runs": out_runs,
    }
    result["summary"] = summarize(result)
    return result


def machine() -> dict[str, Any]:
    import os
    from importlib.metadata import PackageNotFoundError, version

    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        pass
    for name in ("peftsearch", "torch", "transformers", "peft", "optuna"):
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = "not installed"
    return info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    stamp = datetime.now(timezone.utc)
    started = stamp.isoformat(timespec="seconds")
    out = Path(args.out or f"benchmarks/results/search-quality-{date.today().isoformat()}.json")
    work = Path(args.work_dir or f"runs/search-quality-{stamp.strftime('%Y%m%d-%H%M%S')}")
    work = work.resolve()
    names: list[str] = []
    spaces = []
    for file in args.spaces:
        path = Path(file).resolve()
        name = _slug(path.stem)
        while name in names:
            name += "_"
        names.append(name)
        spaces.append(run_space(path, name, work, args))
    results = {
        "started": started,
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "seeds": list(args.seeds),
        "methods": [m for m in METHODS if m in args.methods],
        "old_enqueue": args.old_enqueue,
        "work_dir": str(work),
        "old_params": OLD_PARAMS,
        "learned_margin": LEARNED_MARGIN,
        "machine": machine(),
        "spaces": spaces,
    }
    text = markdown(results)
    print("\n" + text, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {out}", flush=True)
    if args.html:
        write_html(results, Path(args.html))
        print(f"wrote {args.html}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
