"""`search export` / `search train` / `search predict` of generation trials (tiny Llama, T5 and
BART): trained by the search's engine, saved as plain peft adapters on the base model, and
loaded by ``load.py`` (transformers + peft only) that writes the same text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peftsearch.objectives.data import load_splits
from peftsearch.objectives.metrics import load_metric, score
from peftsearch.objectives.production import predict, train_exported
from peftsearch.reports.export import export_trial
from peftsearch.searcher import open_study, run_study
from peftsearch.spaces import load_space
from tests.conftest import run_cli
from tests.objectives.test_generate import gen_space, write
from tests.objectives.test_production import run_plain

pytestmark = pytest.mark.usefixtures("one_thread")
KINDS = ["lora", "prompt+lora", "ia3"]
ENQUEUE = [
    {"template": "qa", "lora_r": 4, "prompt_length": 0, "learning_rate": 0.03},
    {"template": "plain", "lora_r": 2, "prompt_length": 2, "learning_rate": 0.03},
    {"template": "qa", "lora_r": 0, "prompt_length": 0, "adapter": "ia3"},
]
TEXTS = ["the film was good", "a dull and boring plot", "lovely cast " * 20]

# peftsearch blocked: the shipped load.py writes the answers.
PLAIN = r"""
import json, runpy, sys
sys.modules["peftsearch"] = None
TEXTS = json.loads(sys.argv[1])
result = {}
for d in sys.argv[2:]:
    shipped = runpy.run_path(f"{d}/load.py")
    model, tokenizer, info = shipped["load_model"](d, "cpu")
    result[d] = shipped["predict_texts"](model, tokenizer, info, TEXTS)
print(json.dumps(result))
"""


@pytest.fixture(scope="module", params=["causal", "t5", "bart"])
def trained(request, tmp_path_factory, tiny_llama, tiny_t5, tiny_bart, pairs_csv) -> dict[str, Any]:
    """A tiny generation study, each of its trials exported and trained (the causal LoRA
    one by the command line)."""
    model = {"causal": tiny_llama, "t5": tiny_t5, "bart": tiny_bart}[request.param]
    root = tmp_path_factory.mktemp(f"gen_production_{request.param}")
    raw = gen_space(root, model, pairs_csv)
    raw["params"]["adapter"] = {"type": "categorical", "choices": ["lora", "ia3"]}
    raw["params"]["max_steps"] = 12
    enqueue = [{"adapter": "lora", **e} for e in ENQUEUE]
    raw["study"] = {**raw["study"], "n_trials": len(KINDS), "seed": 1, "enqueue": enqueue}
    space_file = write(root, raw)
    run_study(load_space(space_file), show_progress=False)
    study = open_study(load_space(space_file), create=False)
    out: dict[str, Any] = {"kind": request.param, "root": root, "results": {}}
    for number, kind in enumerate(KINDS):
        export = export_trial(study, number, root / f"export_{number}")
        if kind == "lora" and request.param == "causal":
            proc = run_cli("train", str(export / "config.yaml"))
            assert proc.returncode == 0, proc.stderr
            out["cli_train"] = proc
            result = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
        else:
            result = train_exported(export / "config.yaml", quiet=True)
        out["results"][kind] = result
        out[kind] = export / "model"
    return out


def test_the_reported_test_score_is_what_the_saved_model_writes(trained) -> None:
    model_dir = trained["prompt+lora"]
    space = load_space(model_dir.parent / "config.yaml")
    test = load_splits(space).test
    written = [r["output"] for r in predict(model_dir, test["question"].tolist())]
    metric = load_metric("exact_match")
    again = score(metric, "exact_match", written, test["target"].tolist())
    assert trained["results"]["prompt+lora"]["test_exact_match"] == pytest.approx(again, abs=1e-6)
    info = json.loads((model_dir / "inference.json").read_text(encoding="utf-8"))
    assert info["head"] == "generator" and info["max_new_tokens"] == 4
    assert info["lm_kind"] == ("causal" if trained["kind"] == "causal" else "seq2seq")


def test_load_py_without_peftsearch_writes_what_predict_writes(trained) -> None:
    dirs = [str(trained[kind]) for kind in KINDS]
    plain = run_plain(PLAIN, TEXTS, dirs)
    ours = {d: predict(Path(d), TEXTS) for d in dirs}
    for d in dirs:
        assert plain[d] == ours[d]
        assert [r["text"] for r in ours[d]] == TEXTS
        assert all(isinstance(r["output"], str) for r in ours[d])


def test_cli_train_reports_and_predict_prints_the_written_text(trained) -> None:
    if trained["kind"] != "causal":
        pytest.skip("the command line runs once, on the causal study")
    lines = trained["results"]["lora"]
    assert lines["metric"] == "exact_match" and lines["train_steps"] == "12"
    proc = run_cli("predict", str(trained["lora"]), "--text", TEXTS[0], "--text", TEXTS[1])
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows == predict(trained["lora"], TEXTS[:2])
