"""Per-trial host work of the packed engine: aten ops and wall time of one packed step, by K.

The CPU proxy of issue 12. The test suite's tiny BERT (hidden 16, 2 layers, dropout 0.1) makes
the model's own compute ~0, so what is left is the work done once per trial per step (LoRA
matmuls, prompt, head, loss, dropout masks, clipping, AdamW, schedule). On a GPU each such op is
a kernel launch plus Python; if ops per step do not grow with K, neither does the host's share.

For each K: K trials (mixed ranks, prompt lengths, templates, learning rates, LoRA dropout) are
added to one engine, 5 steps run to warm up, then 3 x 10 steps are timed, and 5 more are
profiled with ``torch.profiler`` (every ``aten::`` event, nested ones included, divided by the
steps). No trial finishes or reaches a rung in the window (max_steps 10,000), so nothing but
training is measured. The K values are measured in 3 rounds, interleaved, and each K's time is
its fastest 10-step run: the 2-core VM this was written on is shared, and single runs of the
same K varied by 2.6x. Beside each K: the base model's own forward + backward on the rows
of K trials (16 rows each, no hooks, no trial tensors), the part of a step that is the model's
work, which grows with the rows whatever the engine does.

    .venv/bin/python benchmarks/pack_ops.py --k 1,4,16,64 [--json out.json] [--mix methods]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WARMUP, TIMED, REPEATS, ROUNDS, PROFILED = 5, 10, 3, 3, 5


MIX = "lora"  # --mix methods: the trials also cycle through the adapter methods


def trial(i: int) -> dict[str, Any]:
    """The i-th trial of the mix: rank, prompt, template, rates and dropout vary with i; with
    ``--mix methods`` also the method (LoRA, DoRA, IA3, none) and LoRA's placement and
    options (peft's default targets, every attention projection, all-linear; rsLoRA)."""
    from tests.objectives.test_runner import params

    extra: dict[str, Any] = {}
    if MIX == "methods":
        extra = {
            "adapter": ("lora", "dora", "ia3", "lora", "none", "dora")[i % 6],
            "target_modules": ("default", "attention", "all-linear")[i % 3],
            "use_rslora": bool(i % 2),
        }
    return params(
        template=("plain", "review")[i % 2],
        lora_r=(1, 2, 4, 8, 0, 16)[i % 6] or (2 if extra else 0),
        prompt_length=(0, 4, 0, 2)[i % 4],
        learning_rate=1e-3 * (1 + i % 5),
        head_learning_rate=1e-2 * (1 + i % 3),
        lora_dropout=(0.0, 0.1)[i % 2],
        batch_size=16,
        max_steps=10_000,
        **extra,
    )


def base_floor(runner: Any, k: int) -> float:
    """ms of the frozen base's own forward + backward on the rows K trials bring (16 each, the
    train rows' width), no hooks active and no dropout: the model work no engine can avoid."""
    import torch

    data = runner.encoded("plain")[0]
    idx = torch.arange(16 * k) % len(data)
    width = int(data.lengths.max())
    ids, mask = data.input_ids[idx][:, :width], data.attention_mask[idx][:, :width]
    base = runner._base
    best = math.inf
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(TIMED):
            embeds = base.get_input_embeddings()(ids).detach().requires_grad_(True)
            base(inputs_embeds=embeds, attention_mask=mask).logits.float().sum().backward()
        best = min(best, (time.perf_counter() - t0) / TIMED * 1000)
    return best


def measure(runner: Any, k: int) -> dict[str, float]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    engine = runner.engine
    engine.clear()
    engine.capacity = k
    for i in range(k):
        runner.add(("ops", k, i), trial(i))
    for _ in range(WARMUP):
        assert not engine.step(), "a trial left during warm-up"
    ms = math.inf
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(TIMED):
            assert not engine.step(), "a trial left while timed"
        ms = min(ms, (time.perf_counter() - t0) / TIMED * 1000)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(PROFILED):
            engine.step()
    ops = sum(1 for e in prof.events() if e.name.startswith("aten::")) / PROFILED
    engine.clear()
    floor = base_floor(runner, k)
    return {
        "floor_ms": floor,
        "k": k,
        "ms_per_step": ms,
        "ms_per_trial_step": ms / k,
        "aten_ops_per_step": ops,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", default="1,4,16,64", help="comma list of pack sizes")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--mix", choices=("lora", "methods"), default="lora", help="the trials")
    args = ap.parse_args()
    global MIX
    MIX = args.mix
    sys.path.insert(0, str(ROOT))

    from peftsearch.objectives.runner import TrialRunner
    from peftsearch.spaces import load_space
    from tests.conftest import make_sentiment_csv, make_tiny_model
    from tests.objectives.test_runner import write_space_file

    tmp = Path(tempfile.mkdtemp(prefix="pack-ops-"))
    model = make_tiny_model(tmp / "model")
    data = make_sentiment_csv(tmp / "sentiment.csv")
    runner = TrialRunner(load_space(write_space_file(tmp, model, data)))
    runner.setup()
    ks = [int(k) for k in args.k.split(",")]
    best: dict[int, dict[str, float]] = {}
    for _ in range(ROUNDS):
        for k in ks:
            row = measure(runner, k)
            if k not in best or row["ms_per_step"] < best[k]["ms_per_step"]:
                best[k] = row
    rows = [best[k] for k in ks]
    first = rows[0]
    print(
        "| K | ms per packed step | ms per trial-step | aten ops per step "
        "| ops / K=1 | time / K=1 | base fwd+bwd ms | its time / K=1 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['k']} | {r['ms_per_step']:.1f} | {r['ms_per_trial_step']:.2f} | "
            f"{r['aten_ops_per_step']:,.0f} | "
            f"{r['aten_ops_per_step'] / first['aten_ops_per_step']:.2f}x | "
            f"{r['ms_per_step'] / first['ms_per_step']:.2f}x | {r['floor_ms']:.1f} | "
            f"{r['floor_ms'] / first['floor_ms']:.2f}x |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
