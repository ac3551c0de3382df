"""Does the packed engine's dropout cost accuracy against peft's? Paired runs on CPU.

The packed engine draws every dropout mask per trial, so that a trial's result does not depend
on its neighbours in the batch (see src/peftsearch/objectives/packed.py): the base model's
dropout layers apply with the trial's own generator, and attention-probability dropout (inside
SDPA, from the global generator) is off. This runs the same configurations both ways on the
real MiniLM and Rotten Tomatoes rows of a space file: peftsearch's engine, and peft's model from
`build()` trained by the plain loop in `train()` with `model.train()` (all of MiniLM's dropout
on, as HF Trainer would have it). Same rows, same order, same seed, same schedule.

    .venv/bin/python benchmarks/dropout_cpu.py [--space examples/rotten_tomatoes.yaml]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

CONFIGS = [  # (template, lora_r, learning_rate): rates high enough to learn in 63 steps
    ("plain", 8, 3e-3),
    ("review", 2, 4e-3),
    ("verdict", 16, 2e-3),
    ("plain", 32, 4e-3),
    ("review", 8, 5e-3),
    ("verdict", 2, 3e-3),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", type=Path, default=Path("examples/rotten_tomatoes.yaml"))
    args = ap.parse_args()

    import torch

    from peftsearch.objectives.metrics import score
    from peftsearch.objectives.model import PeftPlan, build
    from peftsearch.objectives.runner import TrialRunner
    from peftsearch.objectives.train import TrainConfig, evaluate_model, train
    from peftsearch.searcher.suggest import fixed_params
    from peftsearch.spaces import RULES, load_space

    space = load_space(args.space, {"output": "/tmp/dropout-cpu"})
    runner = TrialRunner(space)
    runner.setup()
    device = torch.device("cpu")
    rows = []
    for template, r, lr in CONFIGS:
        params = {name: rule.default for name, rule in RULES.items()}
        params.update(fixed_params(space))
        params.update(template=template, lora_r=r, learning_rate=lr, prompt_length=0)
        t0 = time.perf_counter()
        ours = runner.run(params).metric
        t1 = time.perf_counter()
        torch.manual_seed(space.study.seed)
        model = build(runner._base, PeftPlan.from_params(params))
        train_data, eval_data = runner.encoded(template)
        train(model, train_data, TrainConfig.from_params(params, space.study.seed), device)
        preds = evaluate_model(model, eval_data, device).predictions
        theirs = score(runner._metric, "accuracy", preds, eval_data.labels.tolist())
        t2 = time.perf_counter()
        rows.append((template, r, lr, ours, theirs))
        print(
            f"{template:8s} r {r:3d} lr {lr:.0e}: peftsearch engine {ours:.4f} [{t1 - t0:.1f} s] "
            f"| peft, model.train() {theirs:.4f} [{t2 - t1:.1f} s]",
            flush=True,
        )
    off = [r[3] for r in rows]
    on = [r[4] for r in rows]
    diff = statistics.mean(a - b for a, b in zip(off, on, strict=True))
    print(
        f"median engine {statistics.median(off):.4f} peft {statistics.median(on):.4f}; "
        f"best engine {max(off):.4f} peft {max(on):.4f}; "
        f"mean difference (engine - peft) {diff:+.4f}"
    )


if __name__ == "__main__":
    main()
