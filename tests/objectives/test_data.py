"""Loading, cleaning, splitting and tokenizing the data of a space."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from peftsearch.errors import SpaceError
from peftsearch.objectives.data import encode, load_splits
from peftsearch.spaces import load_space
from tests.conftest import FILLER, NEGATIVE, POSITIVE, space_dict

LABELS = ["neg", "pos"]


def _data(path: Path | str | None = None, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"text_columns": ["text"], "label_column": "label", "labels": LABELS}
    if path is not None:
        data["path"] = str(path)
    data.update(over)
    return data


@pytest.fixture
def write_space(tmp_path: Path, tiny_model: Path, sentiment_csv: Path):
    """Like conftest's ``write_space``, which cannot take ``data=``: ``space_dict`` already has a
    positional parameter of that name, so ``write_space(data=...)`` raises TypeError."""

    def write(name: str = "space.yaml", **sections: Any) -> Path:
        space = space_dict(tiny_model, sentiment_csv, tmp_path / "out")
        space.update(sections)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(space, sort_keys=False), encoding="utf-8")
        return path

    return write


def _space(
    write_space,
    data: dict[str, Any],
    templates: dict[str, Any] | None = None,
    name: str = "space.yaml",
):
    """A space over ``data`` (a whole data section); templates default to the first column."""
    if templates is None:
        templates = {"plain": "{" + data["text_columns"][0] + "}"}
    return load_space(write_space(name, data=data, templates=templates, params={}))


def _frame(n: int = 200, seed: int = 0, pos_share: float = 0.5) -> pd.DataFrame:
    """Unique texts, labels 'neg'/'pos' with the given share of 'pos' (exact up to rounding)."""
    import random

    rng = random.Random(seed)
    n_pos = round(n * pos_share)
    labels = ["pos"] * n_pos + ["neg"] * (n - n_pos)
    rng.shuffle(labels)
    texts = [
        " ".join(rng.sample(FILLER, 3) + [rng.choice(POSITIVE if lab == "pos" else NEGATIVE)])
        + f" {i}"
        for i, lab in enumerate(labels)
    ]
    return pd.DataFrame({"text": texts, "label": labels})


def _rows(splits) -> dict[str, list[int]]:
    return {
        k: df["row"].tolist()
        for k, df in (
            ("train", splits.train),
            ("validation", splits.validation),
            ("test", splits.test),
        )
    }


# --- splits made from one file -----------------------------------------------------------------


def test_splits_are_disjoint_and_cover_every_row(write_space, sentiment_csv: Path) -> None:
    splits = load_splits(load_space(write_space()))
    original = pd.read_csv(sentiment_csv)
    rows = _rows(splits)
    sets = {k: set(v) for k, v in rows.items()}
    assert all(len(sets[k]) == len(rows[k]) for k in rows)  # no row twice within a split
    assert not sets["train"] & sets["validation"]
    assert not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    assert sets["train"] | sets["validation"] | sets["test"] == set(range(len(original)))
    # 10 % validation and 10 % test by default
    assert len(rows["test"]) == 40 and len(rows["validation"]) == 40 and len(rows["train"]) == 320
    assert splits.record["made_by_split"] == ["test", "validation"]


def test_rows_point_back_to_the_source(write_space, sentiment_csv: Path) -> None:
    splits = load_splits(load_space(write_space()))
    original = pd.read_csv(sentiment_csv)
    for df in (splits.train, splits.validation, splits.test, splits.trial_train, splits.trial_eval):
        src = original.iloc[df["row"].tolist()]
        assert df["text"].tolist() == src["text"].tolist()
        assert df["label"].tolist() == [LABELS.index(x) for x in src["label"]]
        assert set(df.columns) == {"text", "label", "row"}


def test_splits_are_stratified(write_space, sentiment_csv: Path) -> None:
    splits = load_splits(load_space(write_space()))
    share = (pd.read_csv(sentiment_csv)["label"] == "pos").mean()
    assert 0.45 < share < 0.65  # the fixture is unbalanced enough to notice a broken stratify
    for df in (splits.train, splits.validation, splits.test, splits.trial_train, splits.trial_eval):
        assert abs(df["label"].mean() - share) <= 0.03


def test_same_seed_same_rows_other_seed_other_rows(
    write_space, tiny_model, sentiment_csv, tmp_path
) -> None:
    a = load_splits(load_space(write_space("a.yaml")))
    b = load_splits(load_space(write_space("b.yaml")))
    assert a.record["rows"] == b.record["rows"]
    data = space_dict(tiny_model, sentiment_csv, tmp_path)["data"]
    c = load_splits(load_space(write_space("c.yaml", data={**data, "split": {"seed": 1}})))
    assert c.record["rows"]["test"] != a.record["rows"]["test"]
    assert set(c.record["rows"]["test"]) != set(a.record["rows"]["test"])
    assert c.record["split"]["seed"] == 1


def test_split_fractions(write_space, tiny_model, sentiment_csv, tmp_path) -> None:
    data = space_dict(tiny_model, sentiment_csv, tmp_path)["data"]
    data["split"] = {"validation": 0.2, "test": 0.25}
    splits = load_splits(load_space(write_space(data=data)))
    assert splits.summary()["test"] == 100  # 25 % of 400
    assert splits.summary()["validation"] == 80  # 20 % of 400
    assert splits.summary()["train"] == 220


def test_trial_subsamples(write_space, tiny_model, sentiment_csv, tmp_path) -> None:
    data = space_dict(tiny_model, sentiment_csv, tmp_path)["data"]
    data.update(train_size=100, eval_size=20)
    splits = load_splits(load_space(write_space(data=data)))
    assert len(splits.trial_train) == 100
    assert len(splits.trial_eval) == 20
    assert set(splits.trial_train["row"]) <= set(splits.train["row"])
    assert set(splits.trial_eval["row"]) <= set(splits.validation["row"])
    assert splits.trial_train["row"].is_unique and splits.trial_eval["row"].is_unique
    # the same seed gives the same subsample
    again = load_splits(load_space(write_space("again.yaml", data=data)))
    assert again.trial_train["row"].tolist() == splits.trial_train["row"].tolist()
    assert again.trial_eval["row"].tolist() == splits.trial_eval["row"].tolist()


def test_subsample_larger_than_split_takes_all(
    write_space, tiny_model, sentiment_csv, tmp_path
) -> None:
    data = space_dict(tiny_model, sentiment_csv, tmp_path)["data"]
    data.update(train_size=10_000, eval_size=10_000)
    splits = load_splits(load_space(write_space(data=data)))
    assert splits.trial_train["row"].tolist() == splits.train["row"].tolist()
    assert splits.trial_eval["row"].tolist() == splits.validation["row"].tolist()
    del data["train_size"], data["eval_size"]
    splits = load_splits(load_space(write_space("none.yaml", data=data)))
    assert len(splits.trial_train) == len(splits.train) == 320


def test_record(write_space, sentiment_csv: Path) -> None:
    splits = load_splits(load_space(write_space()))
    rec = splits.record
    assert rec["source"] == str(sentiment_csv)
    assert rec["sha256"] == hashlib.sha256(sentiment_csv.read_bytes()).hexdigest()
    assert rec["labels"] == LABELS
    assert rec["split"] == {"validation": 0.1, "test": 0.1, "seed": 0}
    assert set(rec["rows"]) == {"train", "validation", "test", "trial_train", "trial_eval"}
    assert rec["rows"]["train"] == splits.train["row"].tolist()
    assert rec["rows"]["validation"] == splits.validation["row"].tolist()
    assert rec["rows"]["test"] == splits.test["row"].tolist()
    assert rec["rows"]["trial_train"] == splits.trial_train["row"].tolist()
    assert rec["rows"]["trial_eval"] == splits.trial_eval["row"].tolist()
    assert (
        rec["sizes"]
        == splits.summary()
        == {
            "train": 320,
            "validation": 40,
            "test": 40,
            "trial_train": 160,
            "trial_eval": 40,
        }
    )
    import json

    json.dumps(rec)  # splits.json is written from it


# --- labels and cleaning -------------------------------------------------------------------------


def test_integer_labels(write_space, tmp_path: Path) -> None:
    df = _frame(100)
    df["label"] = (df["label"] == "pos").astype(int)
    path = tmp_path / "ints.csv"
    df.to_csv(path, index=False)
    splits = load_splits(_space(write_space, _data(path)))
    assert sum(splits.summary()[k] for k in ("train", "validation", "test")) == 100
    for part in (splits.train, splits.validation, splits.test):
        assert part["label"].tolist() == df["label"].iloc[part["row"].tolist()].tolist()


def test_boolean_labels(write_space, tmp_path: Path) -> None:
    df = _frame(60)
    df["label"] = df["label"] == "pos"
    path = tmp_path / "bools.parquet"
    df.to_parquet(path)
    splits = load_splits(_space(write_space, _data(path)))
    for part in (splits.train, splits.validation, splits.test):
        assert part["label"].tolist() == df["label"].iloc[part["row"].tolist()].astype(int).tolist()


def test_unlisted_labels_are_an_error(write_space, tmp_path: Path) -> None:
    df = _frame(100)
    df.loc[[3, 10, 11], "label"] = "meh"
    path = tmp_path / "meh.csv"
    df.to_csv(path, index=False)
    with pytest.raises(SpaceError) as info:
        load_splits(_space(write_space, _data(path)))
    assert info.value.key == "data.labels"
    assert "meh" in str(info.value) and "3 train rows" in str(info.value)
    assert "drop_unlisted_labels" in str(info.value)


def test_integer_label_out_of_range_is_unlisted(write_space, tmp_path: Path) -> None:
    df = _frame(60)
    df["label"] = (df["label"] == "pos").astype(int)
    df.loc[5, "label"] = 2
    path = tmp_path / "ints.csv"
    df.to_csv(path, index=False)
    with pytest.raises(SpaceError) as info:
        load_splits(_space(write_space, _data(path)))
    assert info.value.key == "data.labels"


def test_drop_unlisted_labels(write_space, tmp_path: Path) -> None:
    df = _frame(100)
    bad = [3, 10, 11, 50]
    df.loc[bad, "label"] = "meh"
    path = tmp_path / "meh.csv"
    df.to_csv(path, index=False)
    splits = load_splits(_space(write_space, _data(path, drop_unlisted_labels=True)))
    kept = df.drop(index=bad).reset_index(drop=True)
    everything = pd.concat([splits.train, splits.validation, splits.test])
    assert len(everything) == 96
    assert sorted(everything["row"]) == list(range(96))  # rows index the cleaned table
    assert not set(everything["text"]) & set(df.loc[bad, "text"])
    for part in (splits.train, splits.validation, splits.test):
        src = kept.iloc[part["row"].tolist()]
        assert part["text"].tolist() == src["text"].tolist()
        assert part["label"].tolist() == [LABELS.index(x) for x in src["label"]]


def test_drop_duplicates(write_space, tmp_path: Path) -> None:
    df = _frame(100)
    dupes = df.iloc[[0, 1, 2, 0, 5]].copy()
    dupes["label"] = ["pos", "pos", "neg", "neg", "pos"]  # repeated text, maybe another label
    df2 = pd.concat([df, dupes], ignore_index=True)
    path = tmp_path / "dupes.csv"
    df2.to_csv(path, index=False)

    kept = load_splits(_space(write_space, _data(path), name="keep.yaml"))
    assert sum(len(p) for p in (kept.train, kept.validation, kept.test)) == 105

    splits = load_splits(_space(write_space, _data(path, drop_duplicates=True)))
    everything = pd.concat([splits.train, splits.validation, splits.test])
    assert len(everything) == 100
    assert everything["text"].is_unique
    # the first occurrence wins: texts and labels are exactly those of the original 100 rows
    by_text = dict(zip(everything["text"], everything["label"], strict=True))
    assert by_text == {t: LABELS.index(lab) for t, lab in zip(df["text"], df["label"], strict=True)}


def test_rows_with_missing_text_are_dropped(write_space, tmp_path: Path) -> None:
    df = _frame(60)
    df.loc[[4, 7], "text"] = None
    path = tmp_path / "gaps.csv"
    df.to_csv(path, index=False)
    splits = load_splits(_space(write_space, _data(path)))
    everything = pd.concat([splits.train, splits.validation, splits.test])
    assert len(everything) == 58
    assert everything["text"].notna().all()


def test_empty_texts_are_dropped_from_jsonl(write_space, tmp_path: Path) -> None:
    df = _frame(60)
    df.loc[[4, 7], "text"] = ""
    path = tmp_path / "empty.jsonl"
    df.to_json(path, orient="records", lines=True)
    splits = load_splits(_space(write_space, _data(path)))
    everything = pd.concat([splits.train, splits.validation, splits.test])
    assert (everything["text"].str.strip() != "").all()


def test_missing_text_column(write_space, tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    _frame(40).to_csv(path, index=False)
    with pytest.raises(SpaceError) as info:
        load_splits(_space(write_space, _data(path, text_columns=["review"])))
    assert info.value.key == "data.text_columns"
    msg = str(info.value)
    assert "'review'" in msg and "columns: text, label" in msg


def test_missing_label_column(write_space, tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    _frame(40).to_csv(path, index=False)
    with pytest.raises(SpaceError) as info:
        load_splits(_space(write_space, _data(path, label_column="sentiment")))
    assert info.value.key == "data.label_column"
    assert "'sentiment'" in str(info.value) and "text, label" in str(info.value)


def test_unknown_file_type(write_space, tmp_path: Path) -> None:
    path = tmp_path / "d.xlsx"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(SpaceError) as info:
        load_splits(_space(write_space, _data(path)))
    assert info.value.key == "data.path"


def test_too_few_rows_to_stratify(write_space, tmp_path: Path) -> None:
    df = pd.DataFrame({"text": [f"t {i}" for i in range(6)], "label": ["pos"] * 5 + ["neg"]})
    path = tmp_path / "tiny.csv"
    df.to_csv(path, index=False)
    with pytest.raises(SpaceError) as info:
        load_splits(_space(write_space, _data(path)))
    assert info.value.key == "data.split"


# --- other formats, given splits -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".tsv"])
def test_other_formats(write_space, tmp_path: Path, suffix: str) -> None:
    df = _frame(100)
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, sep="\t", index=False)
    splits = load_splits(_space(write_space, _data(path)))
    assert (
        splits.summary()["train"] + splits.summary()["validation"] + splits.summary()["test"] == 100
    )
    for part in (splits.train, splits.validation, splits.test):
        src = df.iloc[part["row"].tolist()]
        assert part["text"].tolist() == src["text"].tolist()
        assert part["label"].tolist() == [LABELS.index(x) for x in src["label"]]
    assert splits.record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_given_files_are_used_as_given(write_space, tmp_path: Path) -> None:
    frames = {
        "train": _frame(80, seed=1),
        "validation": _frame(30, seed=2),
        "test": _frame(20, seed=3),
    }
    files = {}
    for name, df in frames.items():
        files[name] = str(tmp_path / f"{name}.csv")
        df.to_csv(files[name], index=False)
    splits = load_splits(_space(write_space, _data(files=files)))
    assert splits.record["made_by_split"] == []
    assert splits.record["source"] == files["train"]
    assert splits.record["sha256"] == hashlib.sha256(Path(files["train"]).read_bytes()).hexdigest()
    for name, df in frames.items():
        part = getattr(splits, name)
        assert part["text"].tolist() == df["text"].tolist()  # all rows, in file order
        assert part["label"].tolist() == [LABELS.index(x) for x in df["label"]]
        assert part["row"].tolist() == list(range(len(df)))
    assert splits.summary() == {
        "train": 80,
        "validation": 30,
        "test": 20,
        "trial_train": 80,
        "trial_eval": 30,
    }


def test_given_train_and_validation_only_makes_test(write_space, tmp_path: Path) -> None:
    train, validation = _frame(100, seed=1), _frame(30, seed=2)
    train.to_csv(tmp_path / "train.csv", index=False)
    validation.to_csv(tmp_path / "validation.csv", index=False)
    files = {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "validation.csv")}
    splits = load_splits(_space(write_space, _data(files=files)))
    assert splits.record["made_by_split"] == ["test"]
    assert splits.validation["text"].tolist() == validation["text"].tolist()
    assert len(splits.test) == 10 and len(splits.train) == 90
    assert not set(splits.test["row"]) & set(splits.train["row"])


# --- encode --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import BertTokenizer

    # From the vocab file: on transformers 5 the tokenizer that conftest's make_tiny_model saves
    # knows only the 5 special tokens (its ``vocab_file=`` argument is ignored), so every word
    # would be [UNK] and these checks would compare runs of [UNK].
    tok = BertTokenizer(vocab=str(tiny_model / "vocab.txt"), do_lower_case=True)
    assert tok.convert_ids_to_tokens(tok("dull plot")["input_ids"]) == [
        "[CLS]",
        "dull",
        "plot",
        "[SEP]",
    ]
    return tok


def test_encode_pads_to_the_longest_row(tokenizer) -> None:
    df = pd.DataFrame(
        {
            "text": ["good", "the film was very boring and flat", "a fine story"],
            "label": [1, 0, 1],
        }
    )
    enc = encode(df, "review : {text}", tokenizer, 64, ["text"])
    alone = [tokenizer("review : " + t)["input_ids"] for t in df["text"]]
    lengths = [len(ids) for ids in alone]
    assert len(enc) == 3
    assert enc.input_ids.shape == (3, max(lengths))
    assert enc.lengths.tolist() == lengths
    assert enc.lengths.tolist() == enc.attention_mask.sum(1).tolist()
    for i, ids in enumerate(alone):  # right padding: the row, then pad tokens
        assert enc.input_ids[i, : lengths[i]].tolist() == ids
        assert (enc.input_ids[i, lengths[i] :] == tokenizer.pad_token_id).all()
        assert enc.attention_mask[i].tolist() == [1] * lengths[i] + [0] * (
            max(lengths) - lengths[i]
        )
    assert enc.labels is None  # the inputs alone: the task adds its targets (Task.encode)
    assert enc.token_type_ids is not None and int(enc.token_type_ids.sum()) == 0


def test_encode_truncates_to_max_length(tokenizer) -> None:
    df = pd.DataFrame({"text": [" ".join(["good"] * 50), "bad"], "label": [1, 0]})
    enc = encode(df, "{text}", tokenizer, 12, ["text"])
    assert enc.input_ids.shape == (2, 12)
    assert enc.lengths.tolist() == [12, 3]
    assert enc.input_ids[0, -1].item() == tokenizer.sep_token_id


def test_encode_pair_template(tokenizer) -> None:
    df = pd.DataFrame(
        {
            "premise": ["the film was good", "a plot"],
            "hypothesis": ["it was fun", "the cast was very dull and flat"],
            "label": [1, 0],
        }
    )
    enc = encode(
        df, ["premise : {premise}", "{hypothesis}"], tokenizer, 64, ["premise", "hypothesis"]
    )
    assert enc.token_type_ids is not None
    for i, row in df.iterrows():
        first = tokenizer("premise : " + row["premise"])["input_ids"]  # [CLS] ... [SEP]
        second = tokenizer(row["hypothesis"], add_special_tokens=False)["input_ids"] + [
            tokenizer.sep_token_id
        ]
        n = len(first) + len(second)
        assert enc.lengths[i].item() == n
        assert enc.input_ids[i, :n].tolist() == first + second
        # segment B (its tokens and final [SEP]) carries type 1
        assert enc.token_type_ids[i, :n].tolist() == [0] * len(first) + [1] * len(second)
    assert int(enc.token_type_ids.sum()) > 0


def test_encode_pair_data_through_load_splits(write_space, tmp_path: Path, tokenizer) -> None:
    df = _frame(60)
    df["hypothesis"] = ["it was " + w.split()[0] for w in df["text"]]
    path = tmp_path / "pairs.csv"
    df.to_csv(path, index=False)
    space = _space(
        write_space,
        _data(path, text_columns=["text", "hypothesis"]),
        templates={"pair": ["{text}", "{hypothesis}"]},
    )
    splits = load_splits(space)
    assert set(splits.train.columns) == {"text", "hypothesis", "label", "row"}
    enc = encode(splits.trial_train, space.templates["pair"], tokenizer, 32, ["text", "hypothesis"])
    assert (enc.token_type_ids.sum(1) > 0).all()
