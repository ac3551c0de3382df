"""Few-shot demonstrations in the prompt (LM-BFF, Gao et al. 2021): a template's ``{demos}``
slot holds ``n_demos`` labelled train rows per class, each worded by the same template with
its answer filled in, before the row's own text.

The demonstrations are drawn once, with the study's seed, from the train split only (never
the validation or test rows), and are the same for every row: the token cache stays one
tensor per template and demonstration set, and a saved model predicts with the very text it
was trained with (``inference.json`` holds it). LM-BFF samples demonstrations per example
and ensembles them at test time; one fixed set is cheaper and reproducible. A row shown as a
demonstration is not also trained on (:func:`without`): its prompt would hold its own answer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from peftsearch.spaces import render

SLOT = "demos"
SEPARATOR = "\n\n"  # between demonstrations, and between the last one and the row


def pick(train: pd.DataFrame, k: int, seed: int, n_labels: int) -> pd.DataFrame:
    """``k`` rows of each class from ``train`` (fewer when a class has fewer), drawn with
    ``seed``, in a shuffled order so that no class is always last."""
    if k <= 0:
        return train.iloc[:0]
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in range(n_labels):
        where = np.flatnonzero(train["label"].to_numpy() == label)
        chosen.extend(rng.choice(where, size=min(k, len(where)), replace=False).tolist())
    order = rng.permutation(len(chosen))
    return train.iloc[[chosen[i] for i in order]]


def without(train: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    """``train`` less the demonstration ``rows`` (``row`` numbers): trained on, such a row
    would see itself with its answer in its own prompt and teach the model to copy."""
    if not rows:
        return train
    return train[~train["row"].isin(rows)]


def answers(space: Any, verbalizer: str | None, template: str) -> list[str]:
    """What follows each class's demonstration: the verbalizer's first label word (the word
    the model is trained to predict), or with a classifier head the label's name."""
    labels = list(space.data.labels)
    if space.lm_kind is not None and verbalizer is not None:
        words = space.words(verbalizer, template)
        return [words[label][0] for label in labels]
    return [f" {label}" for label in labels]


def text(
    template: Any,
    rows: pd.DataFrame,
    text_columns: list[str],
    answer: list[str],
    tokenizer: Any,
    max_length: int,
    masked: bool,
) -> str:
    """The ``{demos}`` text: each row worded by ``template`` (its ``{demos}`` slot empty)
    with its class's answer at the prediction point (in ``{mask}`` for a masked LM, after
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
        word = answer[int(row["label"])]
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
    from peftsearch.spaces import DEMOS, has_slot

    template = space.templates[params["template"]]
    k = int(params.get("n_demos") or 0)
    if not k or not has_slot(template, DEMOS):
        return "", []
    verbalizer = params.get("verbalizer") if space.lm_kind is not None else None
    rows = pick(train, k, space.study.seed, len(space.data.labels))
    worded = text(
        template,
        rows,
        list(space.data.text_columns),
        answers(space, verbalizer, params["template"]),
        tokenizer,
        space.model.max_length,
        space.lm_kind == "masked",
    )
    return worded, rows["row"].tolist()
