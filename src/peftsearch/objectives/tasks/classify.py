"""Classification with a new head (``model.head: classifier``): the base is a sequence
classifier, each trial trains its own copy of the head (see the ``head`` adapter), the scores
are the head's logits, the loss cross-entropy, a prediction the argmax class. Its data is
:class:`~peftsearch.objectives.tasks._labels.Labelled`'s; an untrained random head has no
zero-shot score."""

from __future__ import annotations

from typing import Any

from peftsearch.objectives.tasks._labels import Labelled


class Classify(Labelled):
    name = "classify"
    head = "classifier"
    defaults = {"classifier": {"epochs": 2, "batch_size": 16, "warmup_ratio": 0.06}}

    def peft_task_type(self, lm_kind: str | None) -> Any:
        from peft import TaskType

        return TaskType.SEQ_CLS

    def train(self, space: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        from peftsearch.objectives.production_heads import train_classifier

        return train_classifier(space, params, *args, **kwargs)

    def head_modules(self, base: Any) -> tuple[dict[str, Any], set[str]]:
        from peftsearch.objectives.model import head_names

        heads = head_names(base)
        return {name: getattr(base, name) for name in sorted(heads)}, heads

    def scores(self, engine: Any, kwargs: dict[str, Any], positions: Any) -> Any:
        return engine.base(**kwargs).logits
