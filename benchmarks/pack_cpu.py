"""Packing on CPU: the same trials alone and packed by K, on one space file's model and rows.

Prints the wall time of the trials run one after another (`TrialRunner.run`) and packed
(`TrialRunner.pack(K)`), the ratio, and each trial's metric both ways (they must agree: a
packed trial is the trial alone).

    .venv/bin/python benchmarks/pack_cpu.py --space benchmarks/space_rt_cpu.yaml --pack 2,4
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

TRIALS = [  # (template, lora_r, learning_rate)
    ("plain", 8, 2e-3),
    ("review", 2, 1e-3),
    ("verdict", 32, 4e-3),
    ("plain", 1, 3e-4),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", type=Path, default=Path("benchmarks/space_rt_cpu.yaml"))
    ap.add_argument("--pack", default="2,4", help="comma list of pack sizes")
    ap.add_argument("--copies", type=int, default=1, help="run each of the 4 trials N times")
    args = ap.parse_args()

    import torch

    from peftsearch.objectives.runner import TrialRunner
    from peftsearch.searcher.suggest import fixed_params
    from peftsearch.spaces import RULES, load_space

    space = load_space(args.space, {"output": "/tmp/pack-cpu"})
    runner = TrialRunner(space)
    runner.setup()
    trials: list[dict[str, Any]] = []
    for template, r, lr in TRIALS * args.copies:
        if template not in space.templates:
            template = next(iter(space.templates))
        p = {name: rule.default for name, rule in RULES.items()}
        p.update(fixed_params(space))
        p.update(template=template, lora_r=r, learning_rate=lr, prompt_length=0)
        trials.append(p)
    for p in trials:
        runner.encoded(p["template"])
    runner.run(trials[0])  # warm-up
    t0 = time.perf_counter()
    alone = [runner.run(p) for p in trials]
    t_alone = time.perf_counter() - t0
    print(
        f"{len(trials)} trials one after another: {t_alone:.2f} s (torch threads "
        f"{torch.get_num_threads()})"
    )

    for size in [int(x) for x in args.pack.split(",")]:
        pack = runner.pack(size)
        out: dict[int, Any] = {}
        t0 = time.perf_counter()
        for i, p in enumerate(trials):
            pack.add(i, p)
        while len(pack):
            for key, result in pack.step():
                out[key] = result
        t_pack = time.perf_counter() - t0
        same = all(out[i].metric == alone[i].metric for i in range(len(trials)))
        print(
            f"pack {size}: {t_pack:.2f} s, {t_alone / t_pack:.2f}x the trials alone; "
            f"metrics packed {[round(out[i].metric, 4) for i in range(len(trials))]} "
            f"alone {[round(a.metric, 4) for a in alone]} -> {'same' if same else 'DIFFERENT'}"
        )
    runner.pack(1)


if __name__ == "__main__":
    main()
