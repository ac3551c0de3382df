"""Few-shot demonstrations in the prompt (LM-BFF, Gao et al. 2021): a template's ``{demos}``
slot holds ``n_demos`` train rows (per class, for the label tasks), each worded by the same
template with its answer filled in, before the row's own text. Which rows and what answer
are the task's (``Task.demo_rows``, ``Task.demo_answer``); the wording is here.

The demonstrations are drawn once, with the study's seed, from the train split only (never
the validation or test rows), and are the same for every row: the token cache stays one
tensor per template and demonstration set, and a saved model predicts with the very text it
was trained with (``inference.json`` holds it). LM-BFF samples demonstrations per example
and ensembles them at test time; one fixed set is cheaper and reproducible. A row shown as a
demonstration is not also trained on (:func:`without`): its prompt would hold its own answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from peftsearch.spaces import render

SLOT = "demos"
SEPARATOR = "\n\n"  # between demonstrations, and between the last one and the row


def without(train: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    """``train`` less the demonstration ``rows`` (``row`` numbers): trained on, such a row
    would see itself with its answer in its own prompt and teach the model to copy."""
    if not rows:
        return train
    return train[~train["row"].isin(rows)]


def text(
    template: Any,
    rows: pd.DataFrame,
    text_columns: list[str],
    answer: Callable[[dict[str, Any]], str],
    tokenizer: Any,
    max_length: int,
    masked: bool,
) -> str:
    """The ``{demos}`` text: each row worded by ``template`` (its ``{demos}`` slot empty)
    with its ``answer`` at the prediction point (in ``{mask}`` for a masked LM, after
    the template's end otherwise), each followed by :data:`SEPARATOR`. Each row's text is
    first cut to an equal share of ``max_length`` (``max_length // (len(rows) + 1)``
    tokens), so that one long row cannot take the room of the others and the row itself."""
    if rows.empty:
        return ""
    share = max(1, max_length // (len(rows) + 1))
    parts = []
    for row in rows.to_dict("records"):
        values: dict[str, Any] = {SLOT: ""}
        for column in text_columns:
            value = str(row[column])
            offsets = tokenizer(value, add_special_tokens=False, return_offsets_mapping=True)[
                "offset_mapping"
            ]
            values[column] = value[: offsets[share - 1][1]] if len(offsets) > share else value
        word = answer(row)
        if masked:
            values["mask"] = word.strip()
            worded = render(template, values)
        else:
            worded = f"{render(template, values)}{word}"
        parts.append(str(worded).strip() + SEPARATOR)
    return "".join(parts)


def for_params(
    space: Any, params: dict[str, Any], train: pd.DataFrame, tokenizer: Any
) -> tuple[str, list[int]]:
    """What the ``{demos}`` slot of ``params``' template holds ("" for none: ``n_demos`` 0, or
    a template without the slot) and the ``row`` numbers of the train rows it shows. The
    search's trials, ``search confirm`` and ``search train`` all draw them here, from the
    whole train split with the study's seed, so they show the same demonstrations."""
    from peftsearch.objectives import tasks
    from peftsearch.spaces import DEMOS, has_slot

    template = space.templates[params["template"]]
    k = int(params.get("n_demos") or 0)
    if not k or not has_slot(template, DEMOS):
        return "", []
    task = tasks.get(space.task_name)
    rows = task.demo_rows(train, k, space.study.seed, space.data)
    worded = text(
        template,
        rows,
        list(space.data.text_columns),
        task.demo_answer(space, params),
        tokenizer,
        space.model.max_length,
        space.lm_kind == "masked",
    )
    return worded, rows["row"].tolist()
