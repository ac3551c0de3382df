"""Prompt templates: named strings with ``{column}`` slots for declared text columns only.

A template is parsed with :class:`string.Formatter` and rendered by concatenating literals and
column values ourselves, so no attribute access, indexing, conversion or format spec can run:
``{text.__class__}``, ``{text[0]}``, ``{text!r}`` and ``{text:>99999}`` are rejected up front.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

_FORMATTER = string.Formatter()

# A template is one string, or two for text-pair tasks (segment A, segment B).
Template = str | list[str]


MASK = "mask"  # the slot where a masked LM predicts the label word (model.head: verbalizer)
DEMOS = "demos"  # the slot of the few-shot demonstrations (params.n_demos per class)


def template_fields(text: str, allowed: Sequence[str]) -> list[str]:
    """Return the slots of ``text`` in order, checking each against ``allowed``.

    Raises:
        ValueError: a slot that is not a declared column, uses attribute/index access, a
            conversion or a format spec, or a template that does not parse.
    """
    try:
        parts = list(_FORMATTER.parse(text))
    except ValueError as exc:  # "Single '}' encountered", "unmatched '{'", ...
        raise ValueError(
            f"template does not parse: {exc}; write literal braces as {{{{ }}}}"
        ) from exc
    fields = []
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field == "" or field.isdigit():
            raise ValueError(
                f"positional slot {{{field}}} is not allowed; name a column: "
                + ", ".join(f"{{{c}}}" for c in allowed)
            )
        if any(ch in field for ch in ".["):
            raise ValueError(f"slot {{{field}}}: attribute or index access is not allowed")
        if conversion or spec:
            raise ValueError(f"slot {{{field}}}: conversions and format specs are not allowed")
        if field == MASK and field not in allowed:
            raise ValueError(
                "slot {mask} needs model.head: verbalizer (a masked LM predicts there)"
            )
        if field not in allowed:
            columns = [a for a in allowed if a not in (MASK, DEMOS)]
            raise ValueError(
                f"slot {{{field}}} is not a declared text column (declared: {', '.join(columns)})"
            )
        fields.append(field)
    return fields


def check_template(
    template: Template, text_columns: Sequence[str], mask_slot: bool = False
) -> None:
    """Validate a template (or a pair of them) for ``text_columns``; with ``mask_slot``, one
    ``{mask}`` slot is allowed too (checked against the model when it is loaded).

    Raises:
        ValueError: bad slots, the wrong number of segments, or no text slot at all.
    """
    segments = [template] if isinstance(template, str) else list(template)
    if not 1 <= len(segments) <= 2:
        raise ValueError("a template is one string, or a list of two for text pairs")
    special = [MASK] if mask_slot and MASK not in text_columns else []
    demos = [DEMOS] if DEMOS not in text_columns else []
    found: list[str] = []
    masks = n_demos = 0
    for seg in segments:
        fields = template_fields(seg, [*text_columns, *special, *demos])
        masks += sum(f in special for f in fields)
        n_demos += sum(f in demos for f in fields)
        texts = [f for f in fields if f in text_columns]
        if not texts and len(segments) > 1:
            raise ValueError("each segment of a pair template needs a text slot")
        found.extend(texts)
    if masks > 1:
        raise ValueError("{mask} may appear once")
    if n_demos > 1:
        raise ValueError("{demos} may appear once")
    if n_demos and len(segments) > 1:
        raise ValueError("{demos} works in one-string templates only, not in text pairs")
    if not found:
        raise ValueError(
            "template has no text slot; add one of " + ", ".join(f"{{{c}}}" for c in text_columns)
        )


def has_mask_slot(template: Template) -> bool:
    """True when the template has a ``{mask}`` slot (escaped ``{{mask}}`` is literal text)."""
    return has_slot(template, MASK)


def has_slot(template: Template, slot: str) -> bool:
    """True when the template has a ``{slot}`` slot (escaped ``{{slot}}`` is literal text)."""
    segments = [template] if isinstance(template, str) else list(template)
    try:
        return any(f == slot for seg in segments for _, f, _, _ in _FORMATTER.parse(seg))
    except ValueError:  # does not parse: check_template says why
        return False


def render(template: Template, row: Mapping[str, object]) -> str | tuple[str, str]:
    """Fill a validated template from ``row``: plain concatenation, no ``str.format``."""

    def one(seg: str) -> str:
        out = []
        for literal, field, _, _ in _FORMATTER.parse(seg):
            out.append(literal)
            if field is not None:
                value = row.get(field, "") if field == DEMOS else row[field]
                out.append("" if value is None else str(value))
        return "".join(out)

    if isinstance(template, str):
        return one(template)
    first, second = template
    return one(first), one(second)


def template_text(template: Template) -> str:
    """One string for display and storage; pair segments joined by `` ||| ``."""
    return template if isinstance(template, str) else " ||| ".join(template)
