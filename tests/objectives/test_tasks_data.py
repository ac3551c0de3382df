"""The data a task owns: what a row's answer is (clean), how rows split, the targets the loss
reads and the references the metric reads, which rows are shown as demonstrations and what
answer follows them. ``load_splits`` and the runner go through the space's task for all of
these: a task that answers differently changes them without touching ``data.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from peftsearch.errors import SpaceError
from peftsearch.objectives import demos, tasks
from peftsearch.objectives.data import load_splits
from peftsearch.objectives.tasks import Classify
from peftsearch.spaces import _params, load_space


@pytest.fixture
def space(write_space):
    return load_space(write_space())


def test_labels_become_class_ids_by_name_or_by_id(space) -> None:
    task, spec = tasks.get("classify"), space.data
    by_name = pd.DataFrame({"text": ["a", "b", "c"], "label": ["pos", "neg", "pos"]})
    assert task.clean(by_name, spec, "s.yaml", "train")["label"].tolist() == [1, 0, 1]
    by_id = pd.DataFrame({"text": ["a", "b"], "label": [0, 1]})
    assert task.clean(by_id, spec, "s.yaml", "train")["label"].tolist() == [0, 1]
    unlisted = pd.DataFrame({"text": ["a", "b"], "label": ["pos", "meh"]})
    with pytest.raises(SpaceError, match="1 train rows have labels not among") as info:
        task.clean(unlisted, spec, "s.yaml", "train")
    assert info.value.key == "data.labels"


def test_a_label_split_keeps_the_class_proportions(space) -> None:
    task = tasks.get("classify")
    df = pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": [0] * 80 + [1] * 20})
    rest, part = task.split(df, 0.2, 0, space.data)
    assert len(part) == 20 and part["label"].tolist().count(1) == 4
    assert sorted(rest["text"].tolist() + part["text"].tolist()) == sorted(df["text"])
    with pytest.raises(ValueError, match="cannot make a stratified split"):
        task.split(df.iloc[78:81], 0.5, 0, space.data)


def test_targets_and_references_are_the_class_ids(space) -> None:
    from transformers import AutoTokenizer

    df = pd.DataFrame({"text": ["good", "bad film"], "label": [1, 0]})
    task = tasks.get("classify")
    tokenizer = AutoTokenizer.from_pretrained(space.model.path)
    enc = task.encode(df, "{text}", tokenizer, space)
    assert enc.labels.dtype == torch.long and enc.labels.tolist() == [1, 0]
    assert enc.input_ids[1].tolist()[: int(enc.lengths[1])] == tokenizer("bad film")["input_ids"]
    assert task.references(df) == [1, 0]


def test_demonstrations_are_drawn_per_class_and_answered_by_label_or_word(space) -> None:
    df = pd.DataFrame({"text": [f"t{i}" for i in range(30)], "label": [0] * 20 + [1] * 10})
    rows = tasks.get("classify").demo_rows(df, 3, 0, space.data)
    assert sorted(rows["label"].tolist()) == [0, 0, 0, 1, 1, 1]
    again = tasks.get("classify").demo_rows(df, 3, 0, space.data)
    assert rows["text"].tolist() == again["text"].tolist()  # fixed by the seed
    answer = tasks.get("classify").demo_answer(space, {"template": "plain"})
    assert [answer(r) for r in rows.to_dict("records")[:1]] == [
        f" {space.data.labels[int(rows['label'].iloc[0])]}"
    ]


class _Lenient(Classify):
    """A label task with a different answer and split: labels in any letter case, and a
    random (unstratified) split that takes the last rows."""

    name = "lenient"
    defaults: dict[str, dict[str, Any]] = {}

    def clean(self, df: Any, spec: Any, file: str, split: str) -> Any:
        df = df.assign(**{spec.label_column: df[spec.label_column].astype(str).str.lower()})
        return super().clean(df, spec, file, split)

    def split(self, df: Any, size: float | int, seed: int, spec: Any) -> tuple[Any, Any]:
        n = size if isinstance(size, int) else round(size * len(df))
        return df.iloc[: len(df) - n], df.iloc[len(df) - n :]

    def record(self, spec: Any) -> dict[str, Any]:
        return {**super().record(spec), "split_by": "last rows"}


@pytest.fixture
def lenient():
    saved = (dict(tasks.TASKS), dict(_params.TASKS))
    yield tasks.register(_Lenient())
    tasks.TASKS.clear()
    tasks.TASKS.update(saved[0])
    _params.TASKS.clear()
    _params.TASKS.update(saved[1])


def test_load_splits_cleans_and_splits_by_the_spaces_task(
    lenient, write_space, tmp_path: Path
) -> None:
    data = tmp_path / "upper.csv"
    n = 60
    pd.DataFrame(
        {"text": [f"row {i}" for i in range(n)], "label": ["POS", "Neg"] * (n // 2)}
    ).to_csv(data, index=False)
    section = {"path": str(data), "text_columns": ["text"], "labels": ["neg", "pos"]}
    with pytest.raises(SpaceError, match="labels not among"):
        load_splits(load_space(write_space(data=section)))
    splits = load_splits(load_space(write_space(data=section, task="lenient")))
    # the last 10 % of the cleaned rows are the test split, the 10 % before them validation
    assert splits.test["row"].tolist() == list(range(54, 60))
    assert splits.validation["row"].tolist() == list(range(48, 54))
    assert set(splits.train["label"]) == {0, 1}
    assert splits.record["split_by"] == "last rows" and splits.record["labels"] == ["neg", "pos"]
    json.dumps(splits.record)  # splits.json is written from it


def test_the_demo_text_is_worded_with_the_tasks_answer(space) -> None:
    from transformers import AutoTokenizer

    train = pd.DataFrame({"text": ["nice", "awful"], "label": [1, 0], "row": [0, 1]})
    text = demos.text(
        "{demos}{text} :",
        train,
        ["text"],
        lambda row: f" <{row['label']}>",
        AutoTokenizer.from_pretrained(space.model.path),
        64,
        masked=False,
    )
    assert text == "nice : <1>\n\nawful : <0>\n\n"
