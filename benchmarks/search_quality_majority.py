"""Re-score a search_quality.py result with the hypervolume reference at the majority-class
score instead of 0: with reference 0 a trial stuck at the majority class (0.58 accuracy on
Rotten Tomatoes) already earns most of the volume, which hides whether trials learned.

    python benchmarks/search_quality_majority.py RESULT.json [RESULT.json ...]

Prints, per space and method, the final HV (mean ± std over seeds) and the two goal checks of
issue 11 under that reference. The majority score per run is the one search_quality.py
recorded (``numbers.majority_rate``: the eval subsample's largest class share); for a metric whose
trivial score is not the class share (F1 of a rare class: 0), pass ``--trivial 0``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

from peftsearch.reports.figures import hypervolume_2d


def curve(run: dict, ref_metric: float, ref_log_params: float) -> list[tuple[int, float]]:
    seen, out = [], []
    for t in run["trials"]:
        if t["state"] == "COMPLETE" and t.get("duplicate_of") is None:
            seen.append((t["metric"], math.log10(max(t["trainable_params"], 1))))
        out.append((t["cumulative_steps"], hypervolume_2d(seen, (ref_metric, ref_log_params))))
    return out


def reach(points: list[tuple[int, float]], target: float) -> int | None:
    for steps, hv in points:
        if hv >= target - 1e-12:
            return steps
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+")
    ap.add_argument("--trivial", type=float, default=None, help="the trivial metric value")
    args = ap.parse_args()
    for path in args.results:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        for space in data["spaces"]:
            ref_params = math.log10(space["reference"][1])
            curves: dict[tuple[str, int], list[tuple[int, float]]] = {}
            for run in space["runs"]:
                trivial = args.trivial
                if trivial is None:
                    trivial = run["numbers"]["majority_rate"]
                curves[(run["method"], run["seed"])] = curve(run, trivial, ref_params)
            print(
                f"### {space['name']}: reference (trivial metric, {space['reference'][1]:,} params)"
            )
            print("| method | final HV | per seed |\n|---|---:|---|")
            methods = sorted({m for m, _ in curves}, key=["old_tpe", "random", "new"].index)
            for m in methods:
                finals = [
                    c[-1][1] if c else 0.0 for (mm, _), c in sorted(curves.items()) if mm == m
                ]
                sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
                per = ", ".join(f"{v:.4f}" for v in finals)
                print(f"| {m} | {statistics.mean(finals):.4f} ± {sd:.4f} | {per} |")
            marks = [50, 100, 200, 300, 400]
            print("\nHV (this reference) after N cumulative training steps, mean over seeds:\n")
            print("| method | " + " | ".join(f"{n} steps" for n in marks) + " |")
            print("|---|" + "---:|" * len(marks))
            for m in methods:
                row = []
                runs = [c for (mm, _), c in sorted(curves.items()) if mm == m and c]
                longest = max((c[-1][0] for c in runs), default=0)
                for n in marks:
                    # A run that ended before n keeps its final HV; "-" past every run's end.
                    vals = [max([hv for st, hv in c if st <= n], default=0.0) for c in runs]
                    if n > longest:
                        vals = []
                    row.append(f"{statistics.mean(vals):.4f}" if vals else "-")
                print(f"| {m} | " + " | ".join(row) + " |")
            print()
            for (m, seed), c in sorted(curves.items()):
                if m != "new":
                    continue
                old = curves.get(("old_tpe", seed)) or [(0, 0.0)]
                rnd = curves.get(("random", seed)) or [(0, 0.0)]
                got = reach(c, old[-1][1])
                frac = "never" if got is None else f"{got / max(1, old[-1][0]):.2f}"
                print(
                    f"- seed {seed}: new reaches old_tpe's final HV ({old[-1][1]:.4f}) at "
                    f"{frac} of old_tpe's steps; new {c[-1][1]:.4f} vs random {rnd[-1][1]:.4f}"
                )
            print()


if __name__ == "__main__":
    main()
