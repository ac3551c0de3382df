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
