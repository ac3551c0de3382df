"""Non-training overhead of a tiny-model trial on CPU (issue 5's CPU figure).

Runs `run_study` on the test suite's tiny BERT (hidden 16, 2 layers, built from a config) and
synthetic data, then splits each trial's wall time (ask to tell, as stored in `trial_seconds`)
into training (the optimizer steps), evaluation, and the rest: suggest, building the adapters,
scoring, storing attributes and artifacts, telling Optuna. Also reports the study's wall time
against the sum of trial times (the loop between trials: admission lock, sampler, reports).

    .venv/bin/python benchmarks/overhead_cpu.py [--n-trials 30] [--out DIR]      # test-suite trial
    .venv/bin/python benchmarks/overhead_cpu.py --rows 6000 --train-size 4000 --eval-size 1000 \
        --batch-size 32 --max-length 64                                      # issue 5's trial shape
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import make_sentiment_csv, make_tiny_model, space_dict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-trials", type=int, default=30)
    ap.add_argument("--rows", type=int, default=400, help="rows of synthetic data")
    ap.add_argument("--train-size", type=int, default=160)
    ap.add_argument("--eval-size", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # as the test suite does; tiny matmuls only lose with threads
    from peftsearch.searcher import open_study, run_study
    from peftsearch.spaces import load_space

    work = args.out or Path(tempfile.mkdtemp(prefix="overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    model = make_tiny_model(work / "tiny")
    data = make_sentiment_csv(work / "data.csv", n=args.rows)
    space = space_dict(model, data, work / "out", study={"n_trials": args.n_trials, "seed": 0})
    space["model"].update(device="cpu", max_length=args.max_length)
    space["data"].update(train_size=args.train_size, eval_size=args.eval_size)
    space["params"]["batch_size"] = args.batch_size
    path = work / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False), encoding="utf-8")
    s = load_space(path)
    t0 = time.perf_counter()
    run_study(s, show_progress=False)
    wall = time.perf_counter() - t0
    trials = [t for t in open_study(s, create=False).get_trials() if t.values]
    rows = []
    for t in trials:
        a = t.user_attrs
        rows.append((a["trial_seconds"], a["train_seconds"], a["eval_seconds"]))
    total = sum(r[0] for r in rows)
    train = sum(r[1] for r in rows)
    evals = sum(r[2] for r in rows)
    other = [(r[0] - r[1] - r[2]) / r[0] for r in rows]
    print(f"{len(rows)} complete trials of {args.n_trials}; study wall {wall:.2f} s")
    print(
        f"median trial {statistics.median(r[0] for r in rows) * 1000:.1f} ms, "
        f"train {statistics.median(r[1] for r in rows) * 1000:.1f} ms, "
        f"eval {statistics.median(r[2] for r in rows) * 1000:.1f} ms"
    )
    print(
        f"share of trial time: train {train / total:.1%}, eval {evals / total:.1%}, "
        f"other {(total - train - evals) / total:.1%} "
        f"(median per trial {statistics.median(other):.1%})"
    )
    print(f"outside training (eval + other) {(total - train) / total:.1%} of trial time")
    print(
        f"between trials (setup, lock, sampler, reports): {(wall - total) / wall:.1%} of study wall"
    )
    print(f"study wall outside training: {(wall - train) / wall:.1%}")
    span = (
        max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    ).total_seconds()
    print(
        f"first trial start to last trial end: {span:.2f} s, outside training "
        f"{(span - train) / span:.1%} (the rest of the study wall is one-time setup: imports, "
        "model and data loading, the final report)"
    )


if __name__ == "__main__":
    main()
