"""Slot-only truncation (issue 14, part 1; work in progress): the text is cut, never the
template's own words or its {mask}."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from peftsearch.objectives.load import fit_row
from tests.conftest import FILLER, NEGATIVE, POSITIVE


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _long_rows(n: int = 40, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    words = POSITIVE + NEGATIVE + FILLER
    return [{"text": " ".join(rng.choices(words, k=rng.randint(5, 60)))} for _ in range(n)]


@pytest.mark.parametrize("side", ["tail", "head", "middle"])
def test_the_template_words_survive_on_every_row(tokenizer, side: str) -> None:
    template = "review : {text} verdict ?"
    suffix = tokenizer("verdict ?", add_special_tokens=False)["input_ids"]
    prefix = tokenizer("review :", add_special_tokens=False)["input_ids"]
    cut = 0
    for row in _long_rows():
        fitted = fit_row(template, row, ["text"], tokenizer, 16, side)
        ids = tokenizer(template.format(**fitted))["input_ids"]
        assert len(ids) <= 16
        assert ids[1 : 1 + len(prefix)] == prefix  # after [CLS]
        assert ids[-1 - len(suffix) : -1] == suffix  # before [SEP]
        original, kept = row["text"].split(), fitted["text"].split()
        if kept != original:
            cut += 1
            assert len(ids) == 16  # whole tokens only, as many as fit
            if side == "tail":
                assert original[: len(kept)] == kept
            elif side == "head":
                assert original[len(original) - len(kept) :] == kept
            else:
                half = (len(kept) + 1) // 2
                assert original[:half] == kept[:half]
                assert original[len(original) - (len(kept) - half) :] == kept[half:]
    assert cut > 10  # the rows were long enough to need it


def test_a_mask_after_the_text_survives(tokenizer) -> None:
    template = "{text} verdict {mask}"
    for row in _long_rows():
        fitted = fit_row(template, {**row, "mask": "[MASK]"}, ["text"], tokenizer, 12)
        ids = tokenizer(template.format(**fitted))["input_ids"]
        assert tokenizer.mask_token_id in ids and len(ids) <= 12


def test_words_that_alone_exceed_max_length_are_refused(tokenizer) -> None:
    with pytest.raises(ValueError, match="template's own words take"):
        fit_row("review : verdict ? " * 5 + "{text}", {"text": "good film"}, ["text"], tokenizer, 8)


def test_a_pair_cuts_its_longer_text_first(tokenizer) -> None:
    template = ("premise : {a}", "{b} says ?")
    row = {"a": " ".join(["good"] * 30), "b": "bad film"}
    fitted = fit_row(template, row, ["a", "b"], tokenizer, 16)
    assert fitted["b"] == "bad film" and fitted["a"].split() == ["good"] * len(fitted["a"].split())
    ids = tokenizer(*[s.format(**fitted) for s in template])["input_ids"]
    assert len(ids) == 16


def test_the_demonstrations_are_cut_before_the_text(tokenizer) -> None:
    template = "{demos}review : {text} verdict ?"
    demos = "good film verdict ? good\n\nbad film verdict ? bad\n\n"
    row = {"text": "the plot was dull and the cast was flat", "demos": demos}
    full = len(tokenizer(template.format(**row))["input_ids"])
    fitted = fit_row(template, row, ["text"], tokenizer, full - 3, first=("demos",))
    assert fitted["text"] == row["text"]  # the row's own text is whole
    assert demos.startswith(fitted["demos"]) and len(fitted["demos"]) < len(demos)
    # Once the demonstrations are gone, the text is cut.
    without = len(tokenizer(template.format(text=row["text"], demos=""))["input_ids"])
    fitted = fit_row(template, row, ["text"], tokenizer, without - 2, first=("demos",))
    assert fitted["demos"] == "" and row["text"].startswith(fitted["text"])


def _long_frame(n: int = 40):
    import pandas as pd

    return pd.DataFrame(_long_rows(n)).assign(label=[i % 2 for i in range(n)])


@pytest.mark.parametrize("side", ["tail", "head", "middle"])
@pytest.mark.parametrize("masked", [False, True])
def test_every_encoded_row_keeps_the_template_words_and_its_mask(tokenizer, side, masked) -> None:
    """What the search trains on: encode(), every row at most max_length, every row holding
    the template's words before and after the text (and its [MASK])."""
    from peftsearch.objectives.data import encode

    template = "review : {text} verdict {mask} ?" if masked else "review : {text} verdict ?"
    df = _long_frame()
    enc = encode(df, template, tokenizer, 16, ["text"], mask=masked, truncation=side)
    suffix = tokenizer("verdict [MASK] ?" if masked else "verdict ?", add_special_tokens=False)[
        "input_ids"
    ]
    prefix = tokenizer("review :", add_special_tokens=False)["input_ids"]
    assert enc.input_ids.shape[1] <= 16
    cut = 0
    for ids, n, text in zip(enc.input_ids, enc.lengths, df["text"], strict=True):
        ids = ids[: int(n)].tolist()
        assert ids[1 : 1 + len(prefix)] == prefix and ids[-1 - len(suffix) : -1] == suffix
        cut += len(tokenizer(text)["input_ids"]) + len(prefix) + len(suffix) > 16
    assert cut > 10
    if masked:  # the mask position is the [MASK] token's, on every row
        rows = torch_rows(enc.input_ids, enc.positions)
        assert (rows == tokenizer.mask_token_id).all()


def torch_rows(ids, positions):
    import torch

    return ids[torch.arange(len(ids)), positions]


@pytest.mark.parametrize("side", ["tail", "middle"])
def test_load_py_predicts_on_the_token_ids_the_search_trained_on(tokenizer, side) -> None:
    """A saved model predicts on the same token layout it was trained on: the ids that
    load.py's predict_texts hands the model equal encode()'s, row for row, long rows and
    demonstrations included."""
    from types import SimpleNamespace

    import torch

    from peftsearch.objectives.data import encode
    from peftsearch.objectives.load import predict_texts

    template = "{demos}review : {text} verdict ?"
    demos = "good film verdict ? pos\n\nbad film verdict ? neg\n\n"
    df = _long_frame()
    enc = encode(df, template, tokenizer, 24, ["text"], truncation=side, demos=demos)

    class Capture(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[list[int]] = []

        def forward(self, input_ids, attention_mask, **_: object):
            for ids, m in zip(input_ids, attention_mask, strict=True):
                self.seen.append(ids[m.bool()].tolist())
            return SimpleNamespace(logits=torch.zeros(len(input_ids), 2))

    model = Capture()
    info = {
        "text_columns": ["text"],
        "template": template,
        "labels": ["neg", "pos"],
        "max_length": 24,
        "truncation": side,
        "demos": demos,
    }
    predict_texts(model, tokenizer, info, df["text"].tolist(), batch_size=7)
    want = [ids[: int(n)].tolist() for ids, n in zip(enc.input_ids, enc.lengths, strict=True)]
    assert model.seen == want
    assert sum(len(x) == 24 for x in want) > 10  # long rows were among them
