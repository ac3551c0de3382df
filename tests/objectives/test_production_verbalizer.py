"""`search train` / `search predict` of verbalizer-head trials (tiny Llama and tiny BERT masked
LM): trained by the search's engine, saved as plain peft adapters on the base LM, and loaded by
transformers + peft code that scores the label words exactly as training did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from peftsearch.objectives import saving
from peftsearch.objectives.data import load_splits
from peftsearch.objectives.production import predict, train_exported
from peftsearch.reports.export import export_trial
from peftsearch.searcher import open_study, run_study
from peftsearch.spaces import load_space
from tests.conftest import HIDDEN, LAYERS, run_cli
from tests.objectives.test_production import _gap, _same, run_plain
from tests.objectives.test_verbalizer import VERBALIZERS, write

KINDS = ["head", "lora", "prompt", "lora+prompt", "ia3", "ia3+prompt", "dora", "dora+prompt"]
LR = 0.03  # the top of the tiny space's range: each adapter moves the scores visibly
ENQUEUE = [
    {"template": "review", "verbalizer": "plain", "prompt_length": 0, "lora_r": 0},
    {"template": "plain", "verbalizer": "multi", "prompt_length": 0, "lora_r": 2},
    {"template": "review", "verbalizer": "plain", "prompt_length": 2, "lora_r": 0},
    {"template": "review", "verbalizer": "multi", "prompt_length": 2, "lora_r": 4},
    {"template": "plain", "verbalizer": "plain", "prompt_length": 0, "adapter": "ia3"},
    {"template": "review", "verbalizer": "multi", "prompt_length": 2, "adapter": "ia3"},
    # DoRA and IA3 move a tiny masked LM little in 20 steps: each pair differs in its
    # template or verbalizer too, so that every saved model is visibly its own
    {"template": "review", "verbalizer": "multi", "prompt_length": 0, "adapter": "dora"},
    {"template": "plain", "verbalizer": "plain", "prompt_length": 2, "adapter": "dora"},
]
ENQUEUE = [{"adapter": "lora", "lora_r": 0, **e} for e in ENQUEUE]
for dora in ENQUEUE[6:]:
    dora["lora_r"] = 2 if dora["prompt_length"] == 0 else 4
# IA3 on each layer (peft's layers; the tiny models' intermediate size is 2 x hidden): Llama's
# k_proj and v_proj outputs (hidden each) and down_proj's input (2 hidden); BERT's key and
# value outputs and the inputs of both output.dense (hidden, 2 hidden).
IA3 = {"causal": LAYERS * 4 * HIDDEN, "masked": LAYERS * 5 * HIDDEN}
TEXTS = ["the film was good", "a dull and boring plot", "lovely cast {text}", "awful " * 60]
LONG = TEXTS[-1]  # longer than max_length: its end is cut, never the template's words
pytestmark = pytest.mark.usefixtures("one_thread")

# peftsearch blocked: the shipped load.py, and peft's own forward on one text at a time (no
# padding, so its position numbering equals training's) with the label words scored by hand.
PLAIN = r"""
import json, runpy, sys
sys.modules["peftsearch"] = None
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

TEXTS = json.loads(sys.argv[1])
result = {}
for d in sys.argv[2:]:
    shipped = runpy.run_path(f"{d}/load.py")
    model, tokenizer, info = shipped["load_model"](d, "cpu")
    row = result[d] = {"load_py": shipped["predict_texts"](model, tokenizer, info, TEXTS)}
    if info["kind"] in ("lora", "prompt", "ia3", "dora"):
        auto = AutoModelForCausalLM if info["lm_kind"] == "causal" else AutoModelForMaskedLM
        peft_model = PeftModel.from_pretrained(auto.from_pretrained(info["base_model"]), d).eval()
        tok = AutoTokenizer.from_pretrained(d)
        rows = []
        for raw in TEXTS:
            fields = {info["text_columns"][0]: raw, "mask": tok.mask_token}
            fields = shipped["fit_row"](info["template"], fields, info["text_columns"], tok,
                                        info["max_length"], info["truncation"])
            enc = tok(info["template"].format(**fields), truncation=True,
                      max_length=info["max_length"], return_tensors="pt")
            with torch.no_grad():
                logits = peft_model(**enc).logits[0]
            if info["lm_kind"] == "causal":
                col = -1
            else:
                k = info["prompt_length"]
                col = int((enc["input_ids"][0] == tok.mask_token_id).nonzero()[0]) + k
            logp = logits[col].log_softmax(-1)
            s = torch.stack([logp[w].mean() for w in info["label_token_ids"]]).softmax(-1)
            best = int(s.argmax())
            rows.append({"text": raw, "label": info["labels"][best],
                         "scores": dict(zip(info["labels"], s.tolist()))})
        row["peft_forward"] = rows
print(json.dumps(result))
"""


@pytest.fixture(scope="module", params=["causal", "masked", "distilbert"])
def trained(
    request,
    tmp_path_factory,
    tiny_llama: Path,
    tiny_mlm: Path,
    tiny_distilbert_mlm: Path,
    sentiment_csv: Path,
):
    """A tiny verbalizer study; one trial per adapter kind exported and trained. distilbert:
    a masked LM whose LM head is three modules."""
    lm = "causal" if request.param == "causal" else "masked"
    root = tmp_path_factory.mktemp(f"production_{request.param}")
    models = {"causal": tiny_llama, "masked": tiny_mlm, "distilbert": tiny_distilbert_mlm}
    model = models[request.param]
    # peft has no IA3 layers for DistilBERT: its study has the LoRA and prompt kinds only
    kinds = KINDS[:4] if request.param == "distilbert" else KINDS
    enqueue = [{**e, "learning_rate": LR} for e in ENQUEUE[: len(kinds)]]
    study_cfg = {"name": "v", "n_trials": len(kinds), "seed": 1, "enqueue": enqueue}
    space_file = write(root, model, sentiment_csv, lm, study=study_cfg)
    raw = yaml.safe_load(space_file.read_text(encoding="utf-8"))
    # The tiny random LMs' embeddings are N(0, 0.02): a prompt copied from them barely moves
    # the scores in 20 steps, N(0, 1) rows do (what this test needs: visibly different models).
    raw["params"]["prompt_init"] = "random"
    raw["params"]["adapter"] = {"type": "categorical", "choices": ["lora", "ia3", "dora"]}
    if request.param == "distilbert":  # peft has no default LoRA targets for it
        raw["params"]["target_modules"] = ["q_lin", "v_lin"]
    space_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    run_study(load_space(space_file), show_progress=False)
    study = open_study(load_space(space_file), create=False)
    out: dict[str, Any] = {
        "lm": lm,
        "root": root,
        "space": space_file,
        "results": {},
        "kinds": kinds,
    }
    for number, kind in enumerate(kinds):
        export = export_trial(study, number, root / f"export_{number}")
        if kind == "lora" and lm == "causal":
            proc = run_cli("train", str(export / "config.yaml"))
            assert proc.returncode == 0, proc.stderr
            out["cli_train"] = proc
            result = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
        else:
            result = train_exported(export / "config.yaml", quiet=True)
        out["results"][kind] = result
        out[kind] = export / "model"
    return out


def _splits(trained: dict[str, Any]) -> Any:
    return load_splits(load_space(trained["lora"].parent / "config.yaml"))


def test_reported_scores_are_what_the_saved_model_predicts(trained) -> None:
    """The engine's validation and test accuracy, recomputed through `search predict` (the
    plain-loaded model) on every row of those splits."""
    splits = _splits(trained)
    for kind in trained["kinds"]:
        result = trained["results"][kind]
        for split in ("validation", "test"):
            df = getattr(splits, split)
            rows = predict(trained[kind], df["text"].tolist())
            labels = ["neg", "pos"]
            hits = sum(r["label"] == labels[y] for r, y in zip(rows, df["label"], strict=True))
            assert float(result[f"{split}_accuracy"]) == pytest.approx(hits / len(df), abs=1e-6)
    if trained["lm"] == "causal":  # the tiny Llama learns the planted words in 20 steps
        assert float(trained["results"]["lora+prompt"]["test_accuracy"]) >= 0.7
        assert float(trained["results"]["head"]["test_accuracy"]) == 0.5


def test_saved_layout_and_trainable_counts(trained) -> None:
    from safetensors.torch import load_file

    task = "CAUSAL_LM" if trained["lm"] == "causal" else "FEATURE_EXTRACTION"
    for kind in trained["kinds"]:
        d = trained[kind]
        names = {p.name for p in d.iterdir()}
        assert {"inference.json", "training.json", "load.py", "README.md"} <= names
        info = json.loads((d / "inference.json").read_text(encoding="utf-8"))
        assert (info["kind"], info["head"], info["lm_kind"]) == (kind, "verbalizer", trained["lm"])
        words = VERBALIZERS[info["verbalizer"]]
        assert info["label_words"] == {label: words[label] for label in ("neg", "pos")}
        assert info["padding_side"] == ("left" if trained["lm"] == "causal" else "right")
        assert ("adapter_config.json" in names) == (kind != "head")
        assert ("lora" in names) == (kind == "lora+prompt")
        assert ("ia3" in names) == (kind == "ia3+prompt")
        assert ("dora" in names) == (kind == "dora+prompt")
        assert "model.safetensors" not in names  # the base LM is not copied
        saved = 0
        for sub in ("", "lora", "ia3", "dora"):
            if (d / sub / "adapter_config.json").is_file():
                config = json.loads((d / sub / "adapter_config.json").read_text())
                assert config["task_type"] == task
                tensors = load_file(d / sub / "adapter_model.safetensors")
                saved += sum(t.numel() for t in tensors.values())
        trainable = int(trained["results"][kind]["trainable_params"])
        assert saved == trainable  # every trained weight is saved, and nothing else
        # Hand counts: LoRA r x (in + out) on query/value (BERT) or q_proj/v_proj (Llama, as
        # many key/value heads as heads: hidden -> hidden) of each layer; the prompt 2 x
        # hidden; no head.
        r, k = {
            "head": (0, 0),
            "lora": (2, 0),
            "prompt": (0, 2),
            "lora+prompt": (4, 2),
            "dora": (2, 0),
            "dora+prompt": (4, 2),
        }.get(kind, (0, 2 if kind.endswith("prompt") else 0))
        ia3 = IA3[trained["lm"]] if kind.startswith("ia3") else 0
        magnitude = LAYERS * 2 * HIDDEN if kind.startswith("dora") else 0  # per output unit
        assert trainable == r * LAYERS * 2 * (HIDDEN + HIDDEN) + k * HIDDEN + ia3 + magnitude
        readme = (d / "README.md").read_text(encoding="utf-8")
        assert f"## Layout ({kind})" in readme and "verbalizer head" in readme


def test_plain_stack_predicts_what_predict_does(trained) -> None:
    dirs = [str(trained[kind]) for kind in trained["kinds"]]
    texts = TEXTS if trained["lm"] == "causal" else TEXTS[:-1]
    plain = run_plain(PLAIN, texts, dirs)
    ours = {d: predict(Path(d), texts) for d in dirs}
    for d in dirs:
        _same(plain[d]["load_py"], ours[d])
        if "peft_forward" in plain[d]:  # peft's own forward, one text at a time
            _same(plain[d]["peft_forward"], ours[d], tol=1e-4)
    assert {d for d in dirs if "peft_forward" in plain[d]} == {
        dirs[1],
        dirs[2],
        *dirs[4:5],
        *dirs[6:7],
    }
    # Each model is its own: the adapters moved the scores, well beyond the tolerance.
    gaps = {(a, b): _gap(ours[a], ours[b]) for a in dirs for b in dirs if a < b}
    short = {(a.split("/")[-2], b.split("/")[-2]): round(g, 5) for (a, b), g in gaps.items()}
    assert min(gaps.values()) > 1e-3, sorted(short.items(), key=lambda kv: kv[1])[:3]


def test_zero_shot_trains_nothing_and_says_no_steps(trained, capsys) -> None:
    to = trained["root"] / "zero_again"
    result = train_exported(trained["head"].parent / "config.yaml", to=to)
    assert result["train_steps"] == 0 and result["trainable_params"] == 0
    assert result["test_accuracy"] == trained["results"]["head"]["test_accuracy"]
    assert "step" not in capsys.readouterr().err


def test_cli_train_and_predict(trained) -> None:
    if trained["lm"] != "causal":
        pytest.skip("the CLI runs once, on the causal study")
    lines = trained["results"]["lora"]
    assert lines["metric"] == "accuracy" and lines["train_steps"] == "20"
    assert "step 20/20" in trained["cli_train"].stderr
    proc = run_cli("predict", str(trained["lora"]), "--text", TEXTS[0], "--text", TEXTS[1])
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    _same(rows, predict(trained["lora"], TEXTS[:2]))


def test_a_text_too_long_keeps_the_mask_slot(trained) -> None:
    """A text longer than max_length is cut, the template's {mask} kept: it predicts (it was
    refused before slot-only truncation), and scores as the same text cut by hand does."""
    if trained["lm"] != "masked":
        pytest.skip("the {mask} slot is a masked LM's")
    rows = predict(trained["lora"], [TEXTS[0], LONG])
    info = json.loads((trained["lora"] / "inference.json").read_text(encoding="utf-8"))
    assert info["truncation"] == "tail"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained["lora"])
    empty = tok(info["template"].format(text="", mask=tok.mask_token))["input_ids"]
    assert len(tok("awful", add_special_tokens=False)["input_ids"]) == 1
    kept = " ".join(LONG.split()[: info["max_length"] - len(empty)])  # one token a word
    same = predict(trained["lora"], [kept])[0]
    assert rows[1]["scores"] == pytest.approx(same["scores"], abs=1e-6)


def test_a_save_that_does_not_reproduce_the_model_is_refused(trained, monkeypatch) -> None:
    """The reload check compares the plain-loaded model with the engine's own scores: LoRA
    saved wrong (B zero: the untrained model, which predicts visibly differently, see above)
    fails it, and nothing is left behind."""
    original = saving.save_lm_adapters

    def untrained_lora(base: Any, slot: Any, *args: Any) -> None:
        import torch

        with torch.no_grad():
            for _, b in slot.lora.values():
                b.zero_()
        original(base, slot, *args)

    monkeypatch.setattr(saving, "save_lm_adapters", untrained_lora)
    config = trained["lora"].parent / "config.yaml"
    to = trained["root"] / "broken"
    with pytest.raises(RuntimeError, match="does not reproduce the trained one"):
        train_exported(config, to=to, quiet=True)
    assert not to.exists()
    assert not [p for p in to.parent.iterdir() if p.name.startswith(".broken")]


def test_a_crashed_verbalizer_run_resumes_to_the_same_model(
    trained, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The engine's snapshot of its one slot is the checkpoint: LoRA beneath a soft prompt
    (every kind of trained tensor), crashed at step 13, resumed from step 10, bit for bit."""
    if trained["lm"] != "causal" or "distilbert" in str(trained["root"]):
        pytest.skip("one LM is enough: the checkpoint is the engine's, whatever the model")
    from peftsearch.objectives.packed import PackedEngine
    from tests.objectives.test_checkpoint import _same_model

    config = trained["lora+prompt"].parent / "config.yaml"
    ref = train_exported(config, epochs=2, to=tmp_path / "ref", quiet=True, checkpoint_every=5)
    assert not (tmp_path / "ref.checkpoint").exists()
    real, calls = PackedEngine._optimizer_step, []

    def crash_at_step_13(self: Any, active: Any) -> Any:
        calls.append(1)
        if len(calls) == 13:
            raise RuntimeError("simulated crash")
        return real(self, active)

    monkeypatch.setattr(PackedEngine, "_optimizer_step", crash_at_step_13)
    target = tmp_path / "model"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_exported(config, epochs=2, to=target, quiet=True, checkpoint_every=5)
    assert (tmp_path / "model.checkpoint" / "state.pt").is_file() and not target.exists()
    monkeypatch.undo()
    capsys.readouterr()
    again = train_exported(config, epochs=2, to=target, quiet=True, checkpoint_every=5)
    total = ref["train_steps"]
    assert f"resuming from step 10 of {total}" in capsys.readouterr().err and total > 13
    assert again["test_accuracy"] == ref["test_accuracy"]
    _same_model(target, tmp_path / "ref")
    assert not (tmp_path / "model.checkpoint").exists()
