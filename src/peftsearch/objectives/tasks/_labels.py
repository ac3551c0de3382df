"""What a row's answer is when it is a class: the data side shared by both label tasks
(:mod:`.classify`, :mod:`.verbalize`).

The answer column becomes a class id (``label``: the position of its name in ``data.labels``;
integer or boolean columns are taken as ids), splits keep the class proportions
(``Dataset.train_test_split(stratify_by_column=...)``), demonstrations are drawn per class,
and the metric compares predicted ids with these ids. A task whose answer is text (generation)
implements the same :class:`~peftsearch.objectives.tasks._base.Task` methods its own way.

Imports pandas and datasets on first use only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peftsearch.errors import SpaceError
from peftsearch.objectives.tasks._base import Task


class Labelled(Task):
    """Base of the tasks whose answer is one of ``data.labels``."""

    def target_columns(self, spec: Any) -> dict[str, str]:
        return {spec.label_column: "data.label_column"}

    def clean(self, df: Any, spec: Any, file: str, split: str) -> Any:
        """``df`` with ``label`` the class id of its answer; a row whose answer is not a
        declared label is refused (or dropped with ``data.drop_unlisted_labels``)."""
        import pandas as pd

        raw = df[spec.label_column]
        if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_integer_dtype(raw):
            as_int = raw.astype("int64")
            ids = as_int.where(as_int.between(0, len(spec.labels) - 1))
        else:
            ids = raw.astype(str).map({name: i for i, name in enumerate(spec.labels)})
        unlisted = ids.isna()
        if unlisted.any():
            if not spec.drop_unlisted_labels:
                values = sorted(map(str, raw[unlisted].unique()))[:5]
                raise SpaceError(
                    file,
                    "data.labels",
                    f"{int(unlisted.sum())} {split} rows have labels not among the declared "
                    f"labels {spec.labels}: {', '.join(values)}; list them or set "
                    "drop_unlisted_labels: true",
                )
            if unlisted.all():
                values = sorted(map(str, raw.unique()))[:5]
                raise SpaceError(
                    file,
                    "data.labels",
                    f"the {split} split is empty after filtering: drop_unlisted_labels dropped "
                    f"all {len(df)} rows, whose labels ({', '.join(values)}) are not declared",
                    list(spec.labels),
                )
            df, ids = df[~unlisted], ids[~unlisted]
        return df.drop(columns=[spec.label_column]).assign(label=ids.astype("int64"))

    def split(self, df: Any, size: float | int, seed: int, spec: Any) -> tuple[Any, Any]:
        """``(rest, part)`` with ``part`` of ``size`` rows (or that fraction), class
        proportions kept.

        Raises:
            ValueError: too few rows of a class to stratify.
        """
        import datasets

        ds = datasets.Dataset.from_pandas(df, preserve_index=False)
        ds = ds.cast_column("label", datasets.ClassLabel(names=list(spec.labels)))
        try:
            parts = ds.train_test_split(test_size=size, stratify_by_column="label", seed=seed)
        except ValueError as exc:
            raise ValueError(f"cannot make a stratified split: {exc}") from None
        return parts["train"].to_pandas(), parts["test"].to_pandas()

    def record(self, spec: Any) -> dict[str, Any]:
        return {"labels": list(spec.labels)}

    def encode(self, df: Any, template: Any, tokenizer: Any, space: Any, demos: str = "") -> Any:
        """The rendered rows, each at most ``model.max_length`` tokens (the texts are cut,
        never the template's words), and their class ids; for a masked LM the ``{mask}``
        column of each row (see :func:`peftsearch.objectives.data.encode`)."""
        import torch

        from peftsearch.objectives.data import encode

        return encode(
            df,
            template,
            tokenizer,
            space.model.max_length,
            list(space.data.text_columns),
            mask=space.lm_kind == "masked",
            truncation=space.data.truncation,
            demos=demos,
            targets=torch.tensor(df["label"].to_numpy(), dtype=torch.long),
        )

    def references(self, df: Any) -> list[Any]:
        return df["label"].tolist()

    def demo_rows(self, train: Any, k: int, seed: int, spec: Any) -> Any:
        """``k`` rows of each class (fewer when a class has fewer), drawn with ``seed``, in
        a shuffled order so that no class is always last."""
        import numpy as np

        if k <= 0:
            return train.iloc[:0]
        rng = np.random.default_rng(seed)
        chosen: list[int] = []
        for label in range(len(spec.labels)):
            where = np.flatnonzero(train["label"].to_numpy() == label)
            chosen.extend(rng.choice(where, size=min(k, len(where)), replace=False).tolist())
        order = rng.permutation(len(chosen))
        return train.iloc[[chosen[i] for i in order]]

    def demo_answer(self, space: Any, params: Any) -> Callable[[dict[str, Any]], str]:
        """The label's name after each demonstration (the verbalizer says its first word)."""
        labels = list(space.data.labels)
        return lambda row: f" {labels[int(row['label'])]}"

    def check_metric(self, metric: Any, spec: Any, file: str) -> None:
        """Score a toy prediction (every class once) so bad ``metric_kwargs`` fail before
        any training."""
        from peftsearch.errors import SpaceError
        from peftsearch.objectives.metrics import TEXT_METRICS, check_metric

        objectives = spec.objectives
        if objectives.metric in TEXT_METRICS:
            raise SpaceError(
                file,
                "objectives.metric",
                "scores generated text against reference text; this task predicts classes "
                "(use accuracy, f1, precision, recall or matthews_correlation)",
                objectives.metric,
            )
        check_metric(
            metric, objectives.metric, objectives.metric_kwargs, len(spec.data.labels), file
        )
