"""Few-shot demonstrations (issue 14, part 2): a template's {demos} slot holds n_demos train
rows per class, worded by the same template with their answer; never validation or test rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from peftsearch.errors import SpaceError
from peftsearch.objectives import demos
from peftsearch.objectives.runner import TrialRunner
from peftsearch.searcher import open_study, run_study
from peftsearch.spaces import load_space
from tests.objectives.test_runner import params
from tests.objectives.test_verbalizer import write

TEMPLATES = {"plain": "{text} it was", "shots": "{demos}review : {text} verdict"}


def _space(folder: Path, model: Path, data: Path, **over):
    folder.mkdir(parents=True, exist_ok=True)
    path = write(folder, model, data, "causal", templates=TEMPLATES)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["params"]["template"] = {"type": "categorical", "choices": list(TEMPLATES)}
    raw["params"]["n_demos"] = {"type": "categorical", "choices": [0, 1, 2]}
    raw["model"]["max_length"] = 64
    for key, value in over.items():
        raw[key] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_space(path)


@pytest.fixture(scope="module")
def runner(tmp_path_factory, tiny_llama: Path, sentiment_csv: Path) -> TrialRunner:
    r = TrialRunner(_space(tmp_path_factory.mktemp("demos"), tiny_llama, sentiment_csv))
    r.setup()
    return r


def test_demonstrations_come_from_train_rows_only_k_per_class(runner) -> None:
    splits = runner.splits
    held = set(splits.validation["row"]) | set(splits.test["row"])
    train = splits.train.set_index("row")
    for k in (1, 2, 5):
        text, rows = runner.demos(params(template="shots", verbalizer="plain", n_demos=k))
        assert len(rows) == 2 * k and len(set(rows)) == 2 * k
        assert not set(rows) & held and set(rows) <= set(train.index)
        assert sorted(train.loc[rows, "label"].tolist()) == [0] * k + [1] * k
        # Each is worded by the template with its class's first label word, in order.
        parts = text.split(demos.SEPARATOR)[:-1]
        assert len(parts) == 2 * k and text.endswith(demos.SEPARATOR)
        share = 64 // (2 * k + 1)  # each demonstration's text: at most this many tokens
        tok = runner._tokenizer
        for part, row in zip(parts, rows, strict=True):
            answer = " bad" if train.loc[row, "label"] == 0 else " good"
            whole = str(train.loc[row, "text"])
            shown = part.removeprefix("review : ").removesuffix(f" verdict{answer}")
            assert part == f"review : {shown} verdict{answer}"
            n = len(tok(whole, add_special_tokens=False)["input_ids"])
            assert shown == whole if n <= share else whole.startswith(shown)
            assert len(tok(shown, add_special_tokens=False)["input_ids"]) == min(n, share)


def test_the_same_seed_draws_the_same_demonstrations_another_seed_others(
    runner, tmp_path, tiny_llama, sentiment_csv
) -> None:
    p = params(template="shots", verbalizer="plain", n_demos=2)
    again = TrialRunner(_space(tmp_path / "a", tiny_llama, sentiment_csv))
    assert again.demos(p) == runner.demos(p)
    raw_seed = _space(tmp_path / "b", tiny_llama, sentiment_csv, study={"n_trials": 3, "seed": 1})
    assert TrialRunner(raw_seed).demos(p)[1] != runner.demos(p)[1]


def test_no_demonstrations_for_zero_or_a_template_without_the_slot(runner) -> None:
    assert runner.demos(params(template="shots", verbalizer="plain", n_demos=0)) == ("", [])
    assert runner.demos(params(template="plain", verbalizer="plain", n_demos=2)) == ("", [])
    with_none = runner.encoded(params(template="shots", verbalizer="plain", n_demos=0))[1]
    with_two = runner.encoded(params(template="shots", verbalizer="plain", n_demos=2))[1]
    assert with_two.lengths.min() > with_none.lengths.max() - 64  # a cache entry of its own
    assert (with_two.lengths > with_none.lengths).all()
    assert (with_two.lengths <= 64).all()


def test_a_search_stores_demonstration_rows_and_zero_shot_per_count(
    tmp_path, tiny_llama, sentiment_csv
) -> None:
    space = _space(tmp_path, tiny_llama, sentiment_csv)
    run_study(space, show_progress=False)
    study = open_study(space, create=False)
    zero = study.user_attrs["zero_shot"]
    by_count = study.user_attrs["zero_shot_demos"]
    assert set(zero) == set(TEMPLATES) and set(by_count) == {"1", "2"}
    assert set(by_count["1"]) == {"shots"}  # only the template with the slot
    runner = TrialRunner(space)
    runner.setup()
    want = runner.zero_shot(2)
    assert by_count["2"] == want
    from peftsearch.reports.figures import compute_report, zero_shot_rows
    from peftsearch.reports.html import render

    rows = zero_shot_rows(study)
    assert {(r["template"], r["demos"]) for r in rows} == {
        ("plain", 0),
        ("shots", 0),
        ("shots", 1),
        ("shots", 2),
    }
    page = render(compute_report(study))
    assert "<th>demos / class</th>" in page.split('<table id="zero-shot">', 1)[1].split("</tr>")[0]
    for t in study.trials:
        shown = t.params.get("n_demos", 0) and t.params["template"] == "shots"
        assert ("demo_rows" in t.user_attrs) == bool(shown), t.params
        if shown:
            assert len(t.user_attrs["demo_rows"]) == 2 * t.params["n_demos"]


def test_n_demos_needs_a_template_with_the_slot(tmp_path, tiny_llama, sentiment_csv) -> None:
    with pytest.raises(SpaceError, match=r"params.n_demos: n_demos > 0 needs a template"):
        _space(tmp_path, tiny_llama, sentiment_csv, templates={"plain": "{text} it was"})
    with pytest.raises(SpaceError, match=r"\{demos\} may appear once"):
        _space(tmp_path, tiny_llama, sentiment_csv, templates={"x": "{demos}{text}{demos}"})


def test_validate_names_the_demonstrations(tmp_path, tiny_llama, sentiment_csv) -> None:
    from tests.conftest import run_cli

    space = _space(tmp_path, tiny_llama, sentiment_csv)
    proc = run_cli("validate", str(space.file), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "demonstrations: 1, 2 per class (n_demos) in the {demos} slot of shots;" in proc.stdout


def test_rows_shown_as_demonstrations_are_not_trained_on(runner) -> None:
    """A demonstration row trained on would see its own answer in its prompt."""
    p0 = params(template="shots", verbalizer="plain", n_demos=0)
    p2 = params(template="shots", verbalizer="plain", n_demos=2)
    _, rows = runner.demos(p2)
    trial_train = runner.splits.trial_train
    shown = set(rows) & set(trial_train["row"])  # drawn from the whole train split
    assert shown  # some would have been trained on
    without, with_all = runner.encoded(p2)[0], runner.encoded(p0)[0]
    assert len(without) == len(with_all) - len(shown)
    kept = trial_train[~trial_train["row"].isin(rows)]
    assert without.labels.tolist() == kept["label"].tolist()


def test_search_train_leaves_the_demonstration_rows_out(
    tmp_path, tiny_llama, sentiment_csv, monkeypatch
) -> None:
    from peftsearch.objectives import data, production

    space = _space(tmp_path, tiny_llama, sentiment_csv)
    raw = yaml.safe_load(space.file.read_text(encoding="utf-8"))
    raw["params"].update(template="shots", verbalizer="plain", n_demos=1, lora_r=0, prompt_length=0)
    raw["params"]["learning_rate"] = 0.01
    raw["params"]["epochs"] = 1
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    seen: list[list[int]] = []
    real = data.encode

    def encode(df, *args, **kwargs):
        if "row" in df:  # the splits (not the probe texts)
            seen.append(df["row"].tolist())
        return real(df, *args, **kwargs)

    monkeypatch.setattr(data, "encode", encode)
    result = production.train_exported(config, to=tmp_path / "model", quiet=True)
    info = json.loads((tmp_path / "model" / "inference.json").read_text(encoding="utf-8"))
    rows = info["demo_rows"]
    assert len(rows) == 2 and info["demos"].count(demos.SEPARATOR) == 2
    splits = TrialRunner(load_space(config)).splits
    trained = [s for s in seen if set(s) <= set(splits.train["row"]) and len(s) > 50]
    assert trained == [[r for r in splits.train["row"] if r not in rows]]
    assert result["train_rows"] == len(splits.train) - 2
