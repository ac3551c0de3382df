"""task generate: a tiny Llama (causal), a tiny T5 and a tiny BART (encoder-decoders) learn to
write each row's reference; rows, the teacher-forced loss against the model's own, packed
decoding against each trial alone, and a whole study."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from peftsearch.objectives.runner import TrialRunner
from peftsearch.searcher import open_study, run_study
from peftsearch.spaces import load_space
from tests.objectives.test_runner import params

KINDS = ["causal", "t5", "bart"]
TEMPLATES = {"qa": "review : {question} verdict", "plain": "{question} ?"}


def gen_space(folder: Path, model: Path, data: Path, **over: Any) -> dict[str, Any]:
    """A small generation space (tiny model, the pairs csv); ``over`` replaces sections."""
    raw: dict[str, Any] = {
        "task": "generate",
        "model": {"path": str(model), "max_length": 32, "device": "cpu"},
        "data": {
            "path": str(data),
            "text_columns": ["question"],
            "target_column": "answer",
            "train_size": 120,
            "eval_size": 30,
        },
        "templates": TEMPLATES,
        "generation": {"max_new_tokens": 4},
        "objectives": {"metric": "exact_match"},
        "params": {
            "template": {"type": "categorical", "choices": list(TEMPLATES)},
            "lora_r": {"type": "categorical", "choices": [0, 2, 4]},
            "prompt_length": {"type": "categorical", "choices": [0, 2]},
            "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            "batch_size": 16,
        },
        "study": {"n_trials": 3, "seed": 0, "pruner": "none", "coverage": False},
        "output": str(folder / "out"),
    }
    raw.update(over)
    return raw


def write(folder: Path, raw: dict[str, Any], name: str = "space.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runners(tmp_path_factory, tiny_llama, tiny_t5, tiny_bart, pairs_csv) -> dict[str, TrialRunner]:
    folder = tmp_path_factory.mktemp("generate")
    models = {"causal": tiny_llama, "t5": tiny_t5, "bart": tiny_bart}
    out = {}
    for kind, model in models.items():
        path = write(folder / kind, gen_space(folder / kind, model, pairs_csv))
        runner = TrialRunner(load_space(path))
        runner.setup()
        out[kind] = runner
    return out


def gparams(**over: Any) -> dict[str, Any]:
    return params(**{"template": "qa", "lora_r": 0, "prompt_length": 0, **over})


def test_a_causal_row_is_the_template_then_the_reference_and_eos(runners) -> None:
    runner = runners["causal"]
    tok = runner._tokenizer
    train, held = runner.encoded("qa")
    df = runner.splits.trial_train
    row = 3
    prompt = tok("review : " + df["question"].iloc[row] + " verdict")["input_ids"]
    answer = tok(" " + df["target"].iloc[row], add_special_tokens=False)["input_ids"]
    want = [*prompt, *answer, tok.eos_token_id]
    got = train.input_ids[row][train.attention_mask[row].bool()].tolist()
    assert got == want
    assert int(train.labels[row]) == len(answer) + 1
    assert train.targets[row, : len(answer) + 1].tolist() == [*answer, tok.eos_token_id]
    # decoding starts from the template alone
    assert train.prompt is not None
    assert train.prompt.input_ids[row][train.prompt.attention_mask[row].bool()].tolist() == prompt
    assert held.prompt is not None and len(held.prompt) == len(held)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_an_encoder_decoder_row_is_the_template_and_the_reference_its_labels(runners, kind) -> None:
    runner = runners[kind]
    tok = runner._tokenizer
    train, _ = runner.encoded("qa")
    df = runner.splits.trial_train
    prompt = tok("review : " + df["question"].iloc[0] + " verdict")["input_ids"]
    target = tok(text_target=df["target"].iloc[0])["input_ids"]
    assert train.input_ids[0][train.attention_mask[0].bool()].tolist() == prompt
    assert train.targets[0, : len(target)].tolist() == target
    assert int(train.labels[0]) == len(target)
    assert train.prompt is None


@pytest.mark.parametrize("kind", KINDS)
def test_the_untrained_loss_is_the_model_own_loss(runners, kind) -> None:
    """The engine's per-row loss (LM head on the reference positions only) equals the
    model's own mean token cross-entropy with labels on the reference."""
    runner = runners[kind]
    engine = runner.engine
    _, held = runner.encoded("qa")
    result = engine.score_untrained(gparams(), held, None)
    base, losses = runner._base, []
    with torch.no_grad():
        for i in range(len(held)):
            n = int(held.labels[i])
            target = held.targets[i : i + 1, :n]
            if kind == "causal":
                mask = held.attention_mask[i].bool()
                ids = held.input_ids[i][mask].unsqueeze(0)
                labels = ids.clone()
                labels[:, : ids.shape[1] - n] = -100
                losses.append(float(base(input_ids=ids, labels=labels).loss))
            else:
                mask = held.attention_mask[i].bool()
                ids = held.input_ids[i][mask].unsqueeze(0)
                losses.append(float(base(input_ids=ids, labels=target).loss))
    assert result.loss == pytest.approx(sum(losses) / len(losses), rel=1e-4)


def _trials() -> list[dict[str, Any]]:
    """Four trials of different adapters, trained hard enough that what they write differs."""
    return [
        gparams(lora_r=2, learning_rate=5e-2, max_steps=6),
        gparams(template="plain", prompt_length=2, learning_rate=5e-2, max_steps=4),
        gparams(lora_r=4, prompt_length=2, learning_rate=3e-2, batch_size=8, max_steps=5),
        gparams(adapter="ia3", ia3_learning_rate=0.3, max_steps=6),
    ]


@pytest.mark.parametrize("kind", ["causal", "t5"])
def test_packed_decoding_writes_what_each_trial_writes_alone(runners, kind) -> None:
    runner = runners[kind]
    trials = _trials()
    alone = [runner.run(p) for p in trials]
    pack = runner.pack(4)
    for i, p in enumerate(trials):
        pack.add(i, p)
    got: dict[int, Any] = {}
    while len(pack):
        got.update(dict(pack.step()))
    runner.pack(1)
    for i in range(4):
        written = [e["output"] for e in got[i].attrs["examples"]]
        assert written == [e["output"] for e in alone[i].attrs["examples"]]
        assert got[i].metric == alone[i].metric
        assert got[i].attrs["pack_size"] > 1
    # The adapters matter: the trials do not all write the same.
    outputs = {tuple(e["output"] for e in r.attrs["examples"]) for r in alone}
    assert len(outputs) > 1


def test_every_row_is_decoded_alike_packed_or_alone(runners) -> None:
    """All held rows, not only the stored examples: the engine's decode of two slots at
    once equals each slot's decode alone."""
    runner = runners["causal"]
    engine = runner.engine
    _, held = runner.encoded("qa")
    slots = [
        engine.add(("d", i), gparams(lora_r=2), held, held, seed, None, queue=False)
        for i, seed in enumerate((1, 2))
    ]
    for s in slots:  # B starts at 0: give it values so that the adapters change the output
        for name, t in s.tensors.items():
            if name.endswith(".B"):
                torch.nn.init.normal_(t.data, std=0.5, generator=torch.Generator().manual_seed(7))
    both = engine.evaluate(slots)
    one = [engine.evaluate([s])[s.key] for s in slots]
    for s, alone in zip(slots, one, strict=True):
        assert both[s.key].predictions == alone.predictions
        assert both[s.key].loss == pytest.approx(alone.loss, rel=1e-5)
    assert both[slots[0].key].predictions != both[slots[1].key].predictions


@pytest.mark.parametrize("kind", KINDS)
def test_training_lowers_the_loss_and_a_rung_decodes(runners, kind) -> None:
    runner = runners[kind]
    seen: list[tuple[int, float, float]] = []

    def on_rung(rung: int, step: int, metric: float, loss: float, trainable: int) -> bool:
        seen.append((step, metric, loss))
        return False

    p = gparams(lora_r=4, prompt_length=2, learning_rate=3e-2, epochs=3)
    total = runner.total_steps(p)
    runner.space.study.pruner.type = "moasha"
    try:
        result = runner.run(p, on_rung=on_rung)
    finally:
        runner.space.study.pruner.type = "none"
    assert [s for s, _, _ in seen] == [total // 2]
    curve = result.attrs["train_loss_curve"]
    assert curve[-1] < curve[0]
    assert 0.0 <= result.metric <= 1.0
    assert len(result.attrs["examples"]) == 5
    assert all(isinstance(e["output"], str) for e in result.attrs["examples"])


def test_a_study_stores_zero_shot_outputs_and_written_examples(
    tmp_path, tiny_llama, pairs_csv
) -> None:
    import pandas as pd

    data = pd.read_csv(pairs_csv)  # user text with markup: the report must escape it
    data["question"] = "<i> " + data["question"]
    marked = tmp_path / "marked.csv"
    data.to_csv(marked, index=False)
    space = load_space(write(tmp_path, gen_space(tmp_path, tiny_llama, marked)))
    outcome = run_study(space, show_progress=False)
    assert outcome.counts == {"complete": 3}
    study = open_study(space, create=False)
    zero = study.user_attrs["zero_shot"]
    assert set(zero) == set(TEMPLATES)
    assert all(0.0 <= v["None"] <= 1.0 for v in zero.values())
    examples = study.user_attrs["zero_shot_examples"]
    assert set(examples) == set(TEMPLATES) and len(examples["qa"]) == 5
    for t in study.trials:
        shown = t.user_attrs["examples"]
        assert len(shown) == 5 and {"input", "reference", "output"} <= set(shown[0])
        assert 0.0 <= t.values[0] <= 1.0
    record = json.loads((space.output_dir / "splits.json").read_text(encoding="utf-8"))
    assert record["target_column"] == "answer" and record["split_kind"] == "random"
    rows = record["rows"]
    assert not set(rows["test"]) & (set(rows["train"]) | set(rows["validation"]))
    html = (space.output_dir / "report.html").read_text(encoding="utf-8")
    front = [t.number for t in study.best_trials]
    for number in front:
        table = html.split(f'id="examples-{number}"', 1)[1].split("</table>", 1)[0]
        assert table.count("&lt;i&gt;") == 5 and "<i>" not in table
        assert "<th>untrained writes</th>" in table
    zero_table = html.split('<table id="zero-shot">', 1)[1].split("</table>", 1)[0]
    assert "<th>verbalizer</th>" not in zero_table and "None" not in zero_table


def test_demos_hold_train_rows_with_their_references(runners) -> None:
    """``{demos}``: k random train rows, each worded by the template and followed by its
    reference; the rows shown are not trained on."""
    runner = runners["causal"]
    runner.space.templates["shots"] = "{demos}review : {question} verdict"
    try:
        p = gparams(template="shots", n_demos=2)
        text, rows = runner.demos(p)
        train = runner.splits.train.set_index("row")
        assert len(rows) == 2
        for row in rows:
            worded = f"review : {train.loc[row, 'question']} verdict {train.loc[row, 'target']}"
            assert worded in text
        trained, _ = runner.encoded(p)
        assert len(trained) == len(runner.splits.trial_train) - len(
            set(rows) & set(runner.splits.trial_train["row"])
        )
    finally:
        del runner.space.templates["shots"]


def test_confirm_at_the_full_budget_scores_the_test_split(tmp_path, tiny_t5, pairs_csv) -> None:
    from peftsearch.reports.confirmed import full_prefix
    from peftsearch.searcher.confirm import run_confirm

    raw = gen_space(tmp_path, tiny_t5, pairs_csv)
    raw["params"]["max_steps"] = 3
    raw["study"]["n_trials"] = 2
    space = load_space(write(tmp_path, raw))
    run_study(space, show_progress=False)
    done = run_confirm(space, trials="0", seeds=1, show_progress=False, budget="full")
    study = open_study(space, create=False)
    assert list(done) == [0]
    (run,) = [v for k, v in study.user_attrs.items() if k.startswith(f"{full_prefix()}0:")]
    from peftsearch.objectives.data import load_splits

    splits = load_splits(space)  # the whole validation and test splits, not the subsamples
    assert 0.0 <= run["test_metric"] <= 1.0 and run["test_rows"] == len(splits.test)
    assert run["eval_rows"] == len(splits.validation) > 30 and run["test_loss"] > 0
