"""Zero-shot accuracy of SmolLM2-135M on Rotten Tomatoes (200 validation rows) per template x
verbalizer: hand-written vs found label words (verbalizers.auto), and 0 vs 1 vs 2
demonstrations per class ({demos}). Issue 14, parts 2 and 3.

    .venv/bin/python benchmarks/prompt_search_smollm2.py [SPACE] > out.json
"""

from __future__ import annotations

import json
import sys
import time

from peftsearch.logs import quiet_libraries
from peftsearch.objectives.runner import TrialRunner
from peftsearch.spaces import load_space


def main(path: str = "benchmarks/space_smollm2_prompts.yaml") -> None:
    quiet_libraries()
    space = load_space(path)
    runner = TrialRunner(space)
    t0 = time.perf_counter()
    runner.setup()
    print(f"setup {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    t0 = time.perf_counter()
    found = runner.find_label_words()
    out: dict = {"label_search_seconds": round(time.perf_counter() - t0, 1), "found": found}
    print(json.dumps(found["words"]), f"{out['label_search_seconds']} s", file=sys.stderr)
    runner.space = space.with_words(found["words"])
    for k in (0, 1, 2):
        if k == 1:
            # With demonstrations, the best hand-written and the best found verbalizer of the
            # zero-shot table only (a pass with 2 per class costs ~9x one without on 2 cores).
            zero = out["zero_shot_0"]
            best = {
                group: max(
                    (v for v in zero["review"] if (v.startswith("auto-")) == (group == "auto")),
                    key=lambda v: max(zero[t][v] for t in zero),
                )
                for group in ("auto", "written")
            }
            out["demos_verbalizers"] = sorted(best.values())
        t0 = time.perf_counter()
        scores = runner.zero_shot(k, out.get("demos_verbalizers"))
        out[f"zero_shot_{k}"] = scores
        out[f"zero_shot_{k}_seconds"] = round(time.perf_counter() - t0, 1)
        print(k, json.dumps(scores), out[f"zero_shot_{k}_seconds"], "s", file=sys.stderr)
        if k == 0:
            demo_text = runner.demos(
                {"template": "review", "verbalizer": "polarity", "n_demos": 1}
            )[0]
            out["example_demos"] = demo_text
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
