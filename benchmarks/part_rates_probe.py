"""Train a list of configurations on a space file and print one JSON line each: issue 11's
per-part learning-rate and soft-prompt-init measurements (benchmarks/RESULTS.md).

    python benchmarks/part_rates_probe.py SPACE CONFIGS.json

CONFIGS.json is a JSON list of parameter dicts; each is laid over RULES' defaults and the
space's fixed parameters and trained alone (the search's own engine, the space's seed).
"""

from __future__ import annotations

import json
import sys
import time

from peftsearch.objectives.runner import TrialRunner
from peftsearch.spaces import RULES, load_space


def main() -> None:
    space = load_space(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8") as f:
        configs = json.load(f)
    runner = TrialRunner(space)
    base = {n: r.default for n, r in RULES.items()}
    base.update({k: v for k, v in space.search_params().items() if not hasattr(v, "type")})
    for c in configs:
        t = time.time()
        r = runner.run({**base, **c})
        row = {
            **c,
            "metric": round(r.metric, 4),
            "params": r.trainable_params,
            "eval_loss": round(r.attrs["eval_loss"], 4),
            "s": round(time.time() - t, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
