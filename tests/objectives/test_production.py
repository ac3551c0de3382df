"""`search train` and `search predict`: exported tiny trials trained on the full train split,
saved so that plain transformers + peft code (no peftsearch) loads them and predicts the same."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from peftsearch.errors import UserError
from peftsearch.objectives import production, saving
from peftsearch.objectives.production import predict, train_exported
from peftsearch.reports.export import export_trial
from peftsearch.searcher import open_study, run_study
from peftsearch.spaces import load_space
from tests.conftest import run_cli, space_dict

KINDS = ["head", "lora", "prompt", "lora+prompt", "ia3", "ia3+prompt", "dora+prompt"]
# A high learning rate and LoRA scale, so that each adapter moves the predictions visibly.
ENQUEUE = [
    {"template": "review", "adapter": "lora", "prompt_length": 0, "lora_r": 0},
    {"template": "plain", "adapter": "lora", "prompt_length": 0, "lora_r": 2},
    {"template": "review", "adapter": "lora", "prompt_length": 2, "lora_r": 0},
    {"template": "review", "adapter": "lora", "prompt_length": 2, "lora_r": 4},
    {"template": "plain", "adapter": "ia3", "prompt_length": 0, "lora_r": 2},
    {"template": "review", "adapter": "ia3", "prompt_length": 2, "lora_r": 0},
    {"template": "review", "adapter": "dora", "prompt_length": 2, "lora_r": 2},
]
ENQUEUE = [{**e, "learning_rate": 0.2} for e in ENQUEUE]
TEXTS = [
    "the film was good",
    "a dull and boring plot",
    "lovely cast {text} and {{ braces }}",  # braces in the input are text, not slots
    "awful " * 60,  # longer than max_length: truncated the same way
]
pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN_ROWS, TEST_ROWS = 320, 40  # 400 rows, 10 % test and 10 % validation


# A plain script: peftsearch cannot be imported; it loads each directory the way its README
# documents, classifies one text at a time (no padding), and also runs the shipped load.py.
PLAIN = r"""
import json, runpy, sys
sys.modules["peftsearch"] = None  # any `import peftsearch` now fails
import torch
from pathlib import Path
from peft import PeftConfig, PeftModel, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TEXTS = json.loads(sys.argv[1])

def load(d, with_lora=True):
    info = json.load(open(f"{d}/inference.json"))
    tokenizer = AutoTokenizer.from_pretrained(d)
    if info["kind"] == "head":
        model = AutoModelForSequenceClassification.from_pretrained(d)
    else:
        torch.manual_seed(info["seed"])
        model = AutoModelForSequenceClassification.from_pretrained(
            info["base_model"], num_labels=len(info["labels"]))
        # an adapter beneath the soft prompt (lora/, ia3/): its own peft config, injected
        for sub in sorted(Path(d).iterdir()) if with_lora else []:
            if (sub / "adapter_config.json").exists():
                model = inject_adapter_in_model(PeftConfig.from_pretrained(str(sub)), model)
                set_peft_model_state_dict(model, load_file(f"{sub}/adapter_model.safetensors"))
        model = PeftModel.from_pretrained(model, d)
    return model.eval(), tokenizer, info

def classify(model, tokenizer, info, texts):
    out = []
    for raw in texts:
        text = info["template"].format(**{info["text_columns"][0]: raw})
        enc = tokenizer(text, truncation=True, max_length=info["max_length"], return_tensors="pt")
        with torch.no_grad():
            p = model(**enc).logits.softmax(-1)[0].tolist()
        best = max(range(len(p)), key=p.__getitem__)
        out.append({"text": raw, "label": info["labels"][best],
                    "scores": dict(zip(info["labels"], p))})
    return out

result = {}
for d in sys.argv[2:]:
    row = result[d] = {"plain": classify(*load(d), TEXTS)}
    if json.load(open(f"{d}/inference.json"))["kind"].endswith("+prompt"):
        row["without_lora"] = classify(*load(d, with_lora=False), TEXTS)
    shipped = runpy.run_path(f"{d}/load.py")
    model, tokenizer, info = shipped["load_model"](d, "cpu")
    row["load_py"] = shipped["predict_texts"](model, tokenizer, info, TEXTS)
assert all(m is None or not m.startswith("peftsearch") for m in sys.modules if m != "peftsearch")
print(json.dumps(result))
"""


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]], tol: float = 1e-5) -> None:
    assert [r["text"] for r in a] == [r["text"] for r in b]
    assert [r["label"] for r in a] == [r["label"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x["scores"].keys() == y["scores"].keys()
        for k in x["scores"]:
            assert abs(x["scores"][k] - y["scores"][k]) <= tol, (x, y)


def _gap(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    return max(abs(x["scores"]["pos"] - y["scores"]["pos"]) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model: Path, sentiment_csv: Path) -> dict[str, Any]:
    """A real tiny study, one trial per kind exported and trained (lora through the CLI)."""
    root = tmp_path_factory.mktemp("production")
    raw = space_dict(
        tiny_model,
        sentiment_csv,
        root / "out",
        study={"name": "prod", "n_trials": len(ENQUEUE), "seed": 1, "enqueue": ENQUEUE},
    )
    raw["params"]["adapter"] = {"type": "categorical", "choices": ["lora", "ia3", "dora"]}
    raw["params"]["learning_rate"] = {"type": "float", "low": 1e-3, "high": 0.3, "log": True}
    raw["params"]["lora_alpha"] = 64
    space_file = root / "space.yaml"
    space_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    run_study(load_space(space_file), show_progress=False)
    study = open_study(load_space(space_file), create=False)
    out: dict[str, Any] = {"root": root, "space": space_file, "study": study, "results": {}}
    for number, kind in enumerate(KINDS):
        export = export_trial(study, number, root / f"export_{number}")
        if kind == "lora":
            proc = run_cli("train", str(export / "config.yaml"), "--epochs", "2")
            out["cli_train"] = proc
            assert proc.returncode == 0, proc.stderr
            lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
            out["results"][kind] = lines
        else:
            out["results"][kind] = train_exported(export / "config.yaml", quiet=True)
        out[kind] = export / "model"
    return out


def test_train_reports_the_test_split(trained) -> None:
    for kind in ("head", "prompt", "lora+prompt"):
        result = trained["results"][kind]
        assert result["metric"] == "accuracy"
        assert 0.0 <= result["test_accuracy"] <= 1.0 and 0.0 <= result["validation_accuracy"] <= 1
        assert (result["test_rows"], result["train_rows"]) == (TEST_ROWS, TRAIN_ROWS)
        assert result["train_steps"] == math.ceil(TRAIN_ROWS / 16)  # full split, one epoch
        assert result["saved"] == str(trained[kind])
    record = json.loads((trained["prompt"] / "training.json").read_text(encoding="utf-8"))
    assert record["test_accuracy"] == trained["results"]["prompt"]["test_accuracy"]
    assert record["params"]["learning_rate"] == 0.2 and record["params"]["lora_alpha"] == 64


def test_cli_train_prints_the_result_and_overrides_epochs(trained) -> None:
    lines = trained["results"]["lora"]
    assert lines["metric"] == "accuracy" and 0.0 <= float(lines["test_accuracy"]) <= 1.0
    assert lines["test_rows"] == str(TEST_ROWS) and lines["train_rows"] == str(TRAIN_ROWS)
    assert lines["epochs"] == "2" and lines["train_steps"] == str(2 * math.ceil(TRAIN_ROWS / 16))
    assert Path(lines["saved"]) == trained["lora"]
    assert "step 40/40" in trained["cli_train"].stderr  # progress goes to stderr


def test_the_test_split_is_the_one_the_search_never_saw(trained) -> None:
    split = json.loads((trained["root"] / "out" / "splits.json").read_text(encoding="utf-8"))
    for kind in KINDS:
        rows = json.loads((trained[kind] / "training.json").read_text(encoding="utf-8"))["data"]
        assert rows["rows"]["test"] == split["rows"]["test"]
        assert rows["rows"]["train"] == split["rows"]["train"]
        assert rows["sha256"] == split["sha256"]
    seen = set(split["rows"]["trial_train"]) | set(split["rows"]["trial_eval"])
    assert len(split["rows"]["test"]) == TEST_ROWS and not seen & set(split["rows"]["test"])


def test_saved_layout(trained) -> None:
    for kind in KINDS:
        names = {p.name for p in trained[kind].iterdir()}
        assert {"inference.json", "training.json", "load.py", "README.md"} <= names
        assert "tokenizer_config.json" in names
        info = json.loads((trained[kind] / "inference.json").read_text(encoding="utf-8"))
        assert info["kind"] == kind and info["id2label"] == {"0": "neg", "1": "pos"}
        assert info["template"] == ("{text}" if kind in ("lora", "ia3") else "review : {text}")
        assert info["text_columns"] == ["text"]
        assert ("adapter_config.json" in names) == (kind != "head")
        assert ("lora" in names) == (kind == "lora+prompt")
        assert ("ia3" in names) == (kind == "ia3+prompt")
        assert ("dora" in names) == (kind == "dora+prompt")
        readme = (trained[kind] / "README.md").read_text(encoding="utf-8")
        assert f"## Layout ({kind})" in readme
        assert ("PeftModel.from_pretrained" in readme) == (kind != "head")
    lora = trained["lora+prompt"] / "lora"
    assert sorted(p.name for p in lora.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    from safetensors.torch import load_file

    top = load_file(str(trained["lora+prompt"] / "adapter_model.safetensors"))
    beneath = load_file(str(lora / "adapter_model.safetensors"))
    assert any("prompt" in k for k in top) and any("classifier" in k for k in top)
    assert beneath and all("lora_" in k for k in beneath)
    assert len(beneath) == 2 * 2 * 2  # A and B for query and value in 2 layers
    ia3 = json.loads((trained["ia3+prompt"] / "ia3" / "adapter_config.json").read_text())
    assert ia3["peft_type"] == "IA3" and "key" in str(ia3["target_modules"])
    vectors = load_file(str(trained["ia3+prompt"] / "ia3" / "adapter_model.safetensors"))
    assert vectors and all("ia3_l" in k for k in vectors)
    assert len(vectors) == 2 * 4  # key, value and both output.dense in 2 layers
    dora = json.loads((trained["dora+prompt"] / "dora" / "adapter_config.json").read_text())
    assert dora["peft_type"] == "LORA" and dora["use_dora"] is True
    magnitudes = load_file(str(trained["dora+prompt"] / "dora" / "adapter_model.safetensors"))
    assert sum("lora_magnitude_vector" in k for k in magnitudes) == 2 * 2  # query, value x 2
    card = (trained["ia3+prompt"] / "README.md").read_text(encoding="utf-8")
    assert "IA3Config.from_pretrained" in card and "`ia3/` the IA3 beneath it" in card


def run_plain(script: str, texts: list[str], dirs: list[str]) -> dict[str, Any]:
    """Run a plain-stack script (peftsearch unimportable) on ``dirs``: its last stdout line."""
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(texts), *dirs],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"},
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def test_plain_transformers_peft_code_predicts_what_predict_does(trained) -> None:
    dirs = [str(trained[kind]) for kind in KINDS]
    plain = run_plain(PLAIN, TEXTS, dirs)
    ours = {d: predict(Path(d), TEXTS) for d in dirs}
    for d in dirs:
        _same(plain[d]["plain"], ours[d])
        _same(plain[d]["load_py"], ours[d])
        assert all(set(r) == {"text", "label", "scores"} for r in ours[d])
        assert all(abs(sum(r["scores"].values()) - 1) < 1e-5 for r in ours[d])
    # Each model is its own: the adapters moved the predictions, well beyond the tolerance.
    assert min(_gap(ours[a], ours[b]) for a in dirs for b in dirs if a < b) > 1e-3
    for kind in ("lora+prompt", "ia3+prompt", "dora+prompt"):  # the part beneath matters
        both = str(trained[kind])
        assert _gap(plain[both]["without_lora"], ours[both]) > 1e-3


def test_load_py_imports_only_the_plain_stack(trained) -> None:
    import ast

    tree = ast.parse((trained["lora+prompt"] / "load.py").read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    allowed = {"__future__", "json", "string", "sys", "pathlib", "typing"}
    assert roots - allowed == {"torch", "peft", "safetensors", "transformers"}


def test_cli_predict_prints_json_lines(trained) -> None:
    model_dir = trained["lora+prompt"]
    proc = run_cli("predict", str(model_dir), "--text", TEXTS[0], "--text", TEXTS[1])
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    _same(rows, predict(model_dir, TEXTS[:2]))
    assert all(r["label"] in ("neg", "pos") and set(r["scores"]) == {"neg", "pos"} for r in rows)


def test_user_errors(trained, tmp_path) -> None:
    with pytest.raises(UserError, match="not a model saved by `search train`"):
        predict(tmp_path, ["text"])
    with pytest.raises(UserError, match=r"params\.template: `search train` needs fixed values"):
        train_exported(trained["space"])  # the search's own space: distributions
    config = trained["lora"].parent / "config.yaml"
    with pytest.raises(UserError, match="already exists"):
        train_exported(config)  # model/ is there from the fixture; nothing is trained
    with pytest.raises(UserError, match=r"params\.epochs"):
        train_exported(config, epochs=0, to=tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_changed_data_is_warned_about(tmp_path, capsys) -> None:
    (tmp_path / "export.json").write_text(json.dumps({"data": {"sha256": "abc"}}))
    record = {"sha256": "def", "sizes": {"test": 40}}
    production._check_provenance(tmp_path / "config.yaml", record)
    assert "the data differ" in capsys.readouterr().err
    record["sha256"] = "abc"
    production._check_provenance(tmp_path / "config.yaml", record)
    assert capsys.readouterr().err == ""


def test_load_py_refuses_a_source_that_is_not_the_running_code(monkeypatch) -> None:
    """load.py is read from the module's file, which a reinstall or edit during a long run
    can change: what is written must compile to the running functions."""
    good = saving._load_py_text()
    assert production.load_py() == good
    edited = good.replace("truncation=True", "truncation=False")
    assert edited != good
    monkeypatch.setattr(saving, "_load_py_text", lambda: edited)
    with pytest.raises(RuntimeError, match="changed since peftsearch was imported"):
        production.load_py()
    monkeypatch.setattr(
        saving, "_load_py_text", lambda: good + "\nfrom __future__ import annotations\n"
    )
    with pytest.raises(RuntimeError, match="does not parse"):
        production.load_py()
