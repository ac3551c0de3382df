"""model.head verbalizer: the pretrained LM head scores each label's words, on a tiny Llama
(causal: at the template's end) and a tiny BERT masked LM (at {mask})."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from peftsearch.errors import SpaceError
from peftsearch.objectives.runner import TrialRunner
from peftsearch.objectives.train import batch_rows
from peftsearch.searcher import open_study, run_study
from peftsearch.spaces import load_space
from tests.conftest import HIDDEN, LAYERS, plain_study, space_dict
from tests.objectives.test_runner import params

VERBALIZERS = {
    "plain": {"neg": [" bad"], "pos": [" good"]},
    "swapped": {"neg": [" good"], "pos": [" bad"]},
    "multi": {"neg": [" awful", " bad"], "pos": [" very good"]},  # "very good": 2 tokens
}
TEMPLATES = {
    "causal": {"plain": "{text} it was", "review": "review : {text} verdict"},
    "masked": {"plain": "{text} it was {mask}", "review": "review : {text} verdict {mask}"},
}


def write(folder: Path, model: Path, data: Path, kind: str, **over: Any) -> Path:
    raw = space_dict(model, data, folder / "out")
    raw["model"].update(device="cpu", head="verbalizer")
    raw["templates"] = TEMPLATES[kind]
    raw["verbalizers"] = VERBALIZERS
    raw["params"]["verbalizer"] = {"type": "categorical", "choices": list(VERBALIZERS)}
    raw["study"] = {"n_trials": 3, "seed": 0}
    raw.update(over)
    plain_study(raw)
    path = folder / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


KINDS = ["causal", "masked", "distilbert"]  # distilbert: a masked LM whose head is 3 modules
# peft has no default LoRA targets for DistilBERT: its query and value layers, named.
TARGETS = {"distilbert": {"target_modules": ["q_lin", "v_lin"]}}


@pytest.fixture(scope="module")
def runners(
    tmp_path_factory,
    tiny_llama: Path,
    tiny_mlm: Path,
    tiny_distilbert_mlm: Path,
    sentiment_csv: Path,
):
    folder = tmp_path_factory.mktemp("verbalizer")
    out = {}
    models = {"causal": tiny_llama, "masked": tiny_mlm, "distilbert": tiny_distilbert_mlm}
    for kind, model in models.items():
        lm = "causal" if kind == "causal" else "masked"
        sub = folder / kind
        sub.mkdir()
        # (a space must name them, or the runner refuses it before any file: see
        # test_bad_input.py::test_a_target_set_that_matches_nothing)
        space = write(sub, model, sentiment_csv, lm)
        if kind in TARGETS:
            raw = yaml.safe_load(space.read_text(encoding="utf-8"))
            raw["params"].update(TARGETS[kind])
            space.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        r = TrialRunner(load_space(space))
        r.setup()
        out[kind] = r
    return out


def vparams(**over: Any) -> dict[str, Any]:
    return params(verbalizer="plain", **over)


@pytest.mark.parametrize("kind", KINDS)
def test_class_scores_are_the_mean_log_probability_of_each_words_first_token(runners, kind) -> None:
    runner = runners[kind]
    engine = runner.engine
    data = runner.encoded("plain")[1]
    tokens = runner.label_tokens("multi")
    slot = engine.add("s", vparams(lora_r=0, prompt_length=0), data, data, 0, tokens, queue=False)
    batch = batch_rows(data, torch.arange(8), runner._device, engine.left_pad)
    with torch.no_grad():
        scores = engine._forward([(slot, batch)])
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if kind == "causal":  # left padded: the last column is every row's prediction point
            assert runner._tokenizer.padding_side == "left"
            kwargs["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            logits = runner._base(**kwargs).logits[:, -1]
        else:
            if "token_type_ids" in batch:
                kwargs["token_type_ids"] = batch["token_type_ids"]
            logits = runner._base(**kwargs).logits[torch.arange(8), batch["positions"]]
            mask_id = runner._tokenizer.mask_token_id
            assert (batch["input_ids"][torch.arange(8), batch["positions"]] == mask_id).all()
    logp = torch.log_softmax(logits.float(), -1)
    tok = runner._tokenizer.convert_tokens_to_ids
    expected = torch.stack(
        [(logp[:, tok("awful")] + logp[:, tok("bad")]) / 2, logp[:, tok("very")]], -1
    )
    assert tokens == [[tok("awful"), tok("bad")], [tok("very")]]
    assert torch.allclose(scores, expected, atol=1e-5)


def test_a_planted_label_word_decides_the_class(tmp_path, tiny_mlm, sentiment_csv) -> None:
    runner = TrialRunner(load_space(write(tmp_path, tiny_mlm, sentiment_csv, "masked")))
    runner.setup()
    bias = runner._base.cls.predictions.bias
    tok = runner._tokenizer.convert_tokens_to_ids
    with torch.no_grad():
        bias[tok("good")] += 50.0  # the LM now says "good" at every [MASK]
    data = runner.encoded("plain")[1]
    engine, n = runner.engine, len(data)
    p = vparams(lora_r=0, prompt_length=0)
    plain = engine.score_untrained(p, data, runner.label_tokens("plain")).predictions
    swapped = engine.score_untrained(p, data, runner.label_tokens("swapped")).predictions
    assert plain == [1] * n  # pos = good
    assert swapped == [0] * n  # neg = good
    with torch.no_grad():
        bias[tok("good")] -= 50.0
        bias[tok("very")] += 50.0  # the first token of the two-token word " very good"
    multi = engine.score_untrained(p, data, runner.label_tokens("multi")).predictions
    assert multi == [1] * n


@pytest.mark.parametrize("kind", KINDS)
def test_training_moves_the_scores(runners, kind) -> None:
    runner = runners[kind]
    data = runner.encoded("plain")[1]
    p = vparams(lora_r=4, prompt_length=2, learning_rate=5e-2, epochs=8, **TARGETS.get(kind, {}))
    p["prompt_init"] = "random"  # N(0, 1) rows: the tiny LMs' own embeddings are N(0, 0.02)
    before = runner.engine.score_untrained(p, data, runner.label_tokens("plain"))
    after = runner.run(p)
    assert after.attrs["eval_loss"] < before.loss - 0.01, (after.attrs["eval_loss"], before.loss)
    assert math.isfinite(after.attrs["eval_loss"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("lora_r", "prompt_length"), [(2, 0), (0, 3), (4, 2)])
def test_only_adapters_train(runners, kind, lora_r, prompt_length) -> None:
    """LoRA on the default targets (q_proj + v_proj, query + value, q_lin + v_lin) and the
    prompt: no head (nothing of DistilBERT's three head modules either)."""
    p = vparams(lora_r=lora_r, prompt_length=prompt_length, max_steps=2, **TARGETS.get(kind, {}))
    result = runners[kind].run(p)
    assert result.trainable_params == 2 * LAYERS * lora_r * (HIDDEN + HIDDEN) + (
        prompt_length * HIDDEN
    )


def test_packed_verbalizer_trials_equal_the_trials_alone(runners) -> None:
    runner = runners["causal"]
    trials = [
        vparams(template="plain", lora_r=2, prompt_length=0, learning_rate=2e-2),
        params(template="review", verbalizer="multi", lora_r=0, prompt_length=3, batch_size=8),
        params(template="plain", verbalizer="swapped", lora_r=4, prompt_length=2, max_steps=5),
    ]
    alone = [runner.run(p) for p in trials]
    pack = runner.pack(3)
    for i, p in enumerate(trials):
        pack.add(i, p)
    got: dict[int, Any] = {}
    while len(pack):
        got.update(dict(pack.step()))
    runner.pack(1)
    for i in range(3):
        assert got[i].metric == alone[i].metric
        assert got[i].attrs["eval_loss"] == pytest.approx(alone[i].attrs["eval_loss"], rel=1e-4)


def test_words_that_start_alike_are_refused(tmp_path, tiny_llama, sentiment_csv) -> None:
    bad = {"neg": [" very bad"], "pos": [" very good"]}
    path = write(tmp_path, tiny_llama, sentiment_csv, "causal", verbalizers={"v": bad})
    raw = yaml.safe_load(path.read_text())
    raw["params"]["verbalizer"] = "v"
    path.write_text(yaml.safe_dump(raw))
    runner = TrialRunner(load_space(path))
    with pytest.raises(SpaceError, match="start with the same token 'very'"):
        runner.label_tokens("v")


def test_a_study_stores_zero_shot_scores_and_runs_verbalizer_trials(
    tmp_path, tiny_llama, sentiment_csv
) -> None:
    space = load_space(write(tmp_path, tiny_llama, sentiment_csv, "causal"))
    outcome = run_study(space, show_progress=False)
    assert outcome.counts == {"complete": 3}
    study = open_study(space, create=False)
    zero = study.user_attrs["zero_shot"]
    assert set(zero) == {"plain", "review"}
    assert all(set(v) == set(VERBALIZERS) for v in zero.values())
    assert all(0.0 <= x <= 1.0 for v in zero.values() for x in v.values())
    # plain and swapped predict opposite classes everywhere: their accuracies sum to 1
    for by_v in zero.values():
        assert by_v["plain"] + by_v["swapped"] == pytest.approx(1.0)
    for t in study.trials:
        assert t.user_attrs["params"]["verbalizer"] in VERBALIZERS
        assert t.params["verbalizer"] in VERBALIZERS
    # The front names each trial's verbalizer (pareto.csv and the report's table).
    import pandas as pd

    front = pd.read_csv(space.output_dir / "pareto.csv")
    by_number = {t.number: t.params["verbalizer"] for t in study.trials}
    assert len(front) and list(front["verbalizer"]) == [by_number[n] for n in front["trial"]]
    html = (space.output_dir / "report.html").read_text(encoding="utf-8")
    table = html.split('<table id="pareto-table">', 1)[1].split("</table>", 1)[0]
    assert "<th>verbalizer</th>" in table


def test_the_report_shows_zero_shot_against_trained(tmp_path, tiny_llama, sentiment_csv) -> None:
    from peftsearch.reports.figures import zero_shot_rows
    from peftsearch.reports.html import write_report

    space = load_space(write(tmp_path, tiny_llama, sentiment_csv, "causal"))
    run_study(space, show_progress=False)
    study = open_study(space, create=False)
    rows = zero_shot_rows(study)
    assert len(rows) == 2 * 3  # templates x verbalizers
    zero = study.user_attrs["zero_shot"]
    for r in rows:
        assert r["zero_shot"] == zero[r["template"]][r["verbalizer"]]
        same = [
            t
            for t in study.trials
            if t.values
            and t.values[1] > 0
            and (t.params["template"], t.params["verbalizer"]) == (r["template"], r["verbalizer"])
        ]
        if same:
            assert r["best_trained"] == max(t.values[0] for t in same)
            assert r["gain"] == pytest.approx(r["best_trained"] - r["zero_shot"])
        else:
            assert r["best_trained"] is None and r["gain"] is None
    html = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    assert '<table id="zero-shot">' in html and "zero-shot accuracy" in html
    # The figure: one bar per pair for zero-shot, one for the best trained trial.
    call = re.search(r'Plotly\.newPlot\(\s*"fig-zero-shot",\s*', html)
    assert call is not None
    traces, _ = json.JSONDecoder().raw_decode(html[call.end() :])
    assert [t["name"] for t in traces] == ["zero-shot", "best trained"]
    assert traces[0]["y"] == [r["zero_shot"] for r in rows]
    assert traces[1]["y"] == [r["best_trained"] for r in rows]


def test_export_keeps_the_verbalizer(tmp_path, tiny_llama, sentiment_csv) -> None:
    """(`search train` of the export: test_production_verbalizer.py.)"""
    from peftsearch.reports.export import export_trial

    enqueue = [
        {"verbalizer": "multi", "lora_r": 2, "prompt_length": 0},
        {"verbalizer": "plain", "lora_r": 0, "prompt_length": 0},  # the zero-shot model
    ]
    path = write(
        tmp_path, tiny_llama, sentiment_csv, "causal", study={"n_trials": 2, "enqueue": enqueue}
    )
    space = load_space(path)
    run_study(space, show_progress=False)
    study = open_study(space, create=False)
    lora, zero = (export_trial(study, n, tmp_path / f"exp{n}") for n in (0, 1))
    exported = load_space(lora / "config.yaml")
    assert exported.model.head == "verbalizer"
    assert exported.verbalizers == {"multi": VERBALIZERS["multi"]}
    assert exported.search_params()["verbalizer"] == "multi"
    config = json.loads((lora / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["task_type"] == "CAUSAL_LM"  # the LM's task type, not SEQ_CLS
    readme = (zero / "README.md").read_text(encoding="utf-8")
    assert "the zero-shot model" in readme and "linear probe" not in readme
    assert not (zero / "adapter_config.json").exists()
