"""Prompt templates: only ``{column}`` slots for declared text columns; rendering never formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import space_dict

from peftsearch.errors import SpaceError
from peftsearch.spaces import load_space, render, template_text
from peftsearch.spaces._templates import check_template, template_fields


@pytest.fixture
def write_templates(tmp_path: Path, sentiment_csv: Path):
    """Write the conftest space with other ``templates`` and ``data`` keys; return its path."""
    model = tmp_path / "model"
    model.mkdir()

    def write(templates: dict[str, Any], **data: Any) -> Path:
        raw = space_dict(model, sentiment_csv, tmp_path / "out", templates=templates)
        raw["data"].update(data)
        raw.pop("params")  # its template choices name the default templates
        path = tmp_path / "space.yaml"
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        return path

    return write


REJECTED = [
    ("{text.__class__}", "attribute or index access is not allowed"),
    ("{text[0]}", "attribute or index access is not allowed"),
    ("{text!r}", "conversions and format specs are not allowed"),
    ("{text:>99999}", "conversions and format specs are not allowed"),
    ("{text:{text}}", "conversions and format specs are not allowed"),
    ("{}", "positional slot {} is not allowed; name a column: {text}"),
    ("{0}", "positional slot {0} is not allowed"),
    ("{0.__class__}", "attribute or index access"),
    ("{label}", "slot {label} is not a declared text column (declared: text)"),
    ("{ text}", "is not a declared text column"),
    ("review: {text", "template does not parse"),
    ("review: text}", "template does not parse"),
    ("no slot at all", "template has no text slot; add one of {text}"),
    ("{{text}}", "template has no text slot"),  # escaped braces are literal, not a slot
    (["{text}", "no slot"], "each segment of a pair template needs a text slot"),
    (["{text}", "{text}", "{text}"], "a template is one string, or a list of two"),
    ([], "a template is one string, or a list of two"),
]


@pytest.mark.parametrize(("template", "fragment"), REJECTED, ids=[str(t) for t, _ in REJECTED])
def test_rejected_at_validation(write_templates, template: Any, fragment: str) -> None:
    path = write_templates({"plain": "{text}", "bad": template})
    with pytest.raises(SpaceError) as info:
        load_space(path)
    err = info.value
    assert err.key == "templates.bad"
    assert str(err).startswith(f"{path}: templates.bad: ")
    assert fragment in str(err)
    with pytest.raises(ValueError, match="."):  # the checker itself agrees
        check_template(template, ["text"])


def test_literal_braces_render_as_braces(write_templates) -> None:
    path = write_templates({"braces": "{{x}} {text} {{{text}}}", "json": '{{"review": "{text}"}}'})
    space = load_space(path)
    assert render(space.templates["braces"], {"text": "hi"}) == "{x} hi {hi}"
    assert render(space.templates["json"], {"text": "hi"}) == '{"review": "hi"}'


def test_pair_templates_for_two_text_columns(write_templates) -> None:
    templates = {
        "pair": ["premise: {premise}", "hypothesis: {hypothesis}"],
        "joined": "{premise} ? {hypothesis}",
        "swapped": ["{hypothesis}", "{premise}"],
    }
    path = write_templates(templates, text_columns=["premise", "hypothesis"])
    space = load_space(path)
    row = {"premise": "A cat sat.", "hypothesis": "A cat is sitting.", "label": "pos"}
    assert render(space.templates["pair"], row) == (
        "premise: A cat sat.",
        "hypothesis: A cat is sitting.",
    )
    assert render(space.templates["joined"], row) == "A cat sat. ? A cat is sitting."
    assert render(space.templates["swapped"], row) == ("A cat is sitting.", "A cat sat.")
    assert (
        template_text(space.templates["pair"]) == "premise: {premise} ||| hypothesis: {hypothesis}"
    )


def test_pair_columns_not_usable_from_a_one_column_space(write_templates) -> None:
    path = write_templates({"pair": ["{text}", "{other}"]})
    with pytest.raises(SpaceError, match=r"templates\.pair: slot \{other\} is not a declared"):
        load_space(path)


def test_template_fields_in_order() -> None:
    assert template_fields("{b} and {a} then {b}", ["a", "b"]) == ["b", "a", "b"]
    assert template_fields("{{a}} only", ["a"]) == []


class _Tricky:
    """``str.format`` would call ``__format__``; plain concatenation calls ``__str__``."""

    def __format__(self, spec: str) -> str:
        return "FORMATTED"

    def __str__(self) -> str:
        return "plain"


@pytest.mark.parametrize(
    "value",
    ["{text}", "{0.__class__}", "{text.__class__.__mro__}", "{{x}} and }{", "{}", "%s %(text)s"],
)
def test_render_inserts_values_verbatim(value: str) -> None:
    assert render("say {text}!", {"text": value}) == f"say {value}!"
    assert render(["{text}", "[{text}]"], {"text": value}) == (value, f"[{value}]")


def test_render_never_calls_format() -> None:
    assert render("<{text}>", {"text": _Tricky()}) == "<plain>"
    assert render("<{text}>", {"text": None}) == "<>"  # str.format would give "<None>"
    assert render("<{text}>", {"text": 3}) == "<3>"


def test_template_text() -> None:
    assert template_text("Review: {text}") == "Review: {text}"
    assert template_text(["{a}", "{b}"]) == "{a} ||| {b}"
