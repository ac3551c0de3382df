"""Packed decoding against each trial decoding alone (task generate, issue 25).

Four trials of different adapters (LoRA r 2, LoRA r 8, a 20-token soft prompt, IA3) on the
shipped SmolLM2-135M-Instruct, each trained a few steps so that their adapters change what
they write, then the validation rows decoded greedily (KV cache) two ways, interleaved and
repeated: all four in one batch (``engine.evaluate`` of the four slots) and each slot alone.
Prints whether every trial wrote the same text both ways, and the seconds per trial.

    python benchmarks/decode_pack_cpu.py examples/math_qa_smollm2.yaml [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from peftsearch.objectives.runner import TrialRunner
from peftsearch.spaces import RULES, load_space

TRIALS = [
    {"lora_r": 2, "learning_rate": 1e-3},
    {"lora_r": 8, "learning_rate": 1e-3},
    {"prompt_length": 20, "prompt_learning_rate": 3e-2},
    {"adapter": "ia3", "ia3_learning_rate": 3e-2},
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("space")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args()
    runner = TrialRunner(load_space(args.space))
    runner.setup()
    engine = runner.engine
    defaults = {n: r.default for n, r in RULES.items()}
    template = next(iter(runner.space.templates))
    train, held = runner.encoded(template)
    trained = []
    for i, over in enumerate(TRIALS):  # each trained a few steps: adapters that matter
        params = {**defaults, "template": template, "batch_size": 8, "max_steps": args.steps}
        params.update(over)
        slot = engine.add(("t", i), params, train, held, 0)
        while len(engine):
            for done in engine.step():
                assert done.error is None, done.error
        trained.append(slot)  # leaving the engine put its trained values in its own tensors
    packed_s, alone_s = [], []
    same = True
    for _ in range(args.repeats):
        t = time.perf_counter()
        both = engine.evaluate(trained)
        packed_s.append(time.perf_counter() - t)
        total = 0.0
        for s in trained:
            t = time.perf_counter()
            one = engine.evaluate([s])[s.key]
            total += time.perf_counter() - t
            same = same and one.predictions == both[s.key].predictions
        alone_s.append(total)
    distinct = len({tuple(both[s.key].predictions) for s in trained})
    print(
        json.dumps(
            {
                "rows": len(held),
                "max_new_tokens": runner.space.generation.max_new_tokens,
                "threads": torch.get_num_threads(),
                "identical_outputs": same,
                "distinct_trial_outputs": distinct,
                "packed_seconds_per_trial": round(statistics.median(packed_s) / len(trained), 2),
                "alone_seconds_per_trial": round(statistics.median(alone_s) / len(trained), 2),
                "packed_runs": [round(x, 2) for x in packed_s],
                "alone_runs": [round(x, 2) for x in alone_s],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
