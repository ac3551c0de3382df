"""A toy task written outside ``src/``: classification with label smoothing (Szegedy et al.
2016): the target puts ``1 - eps`` on the label and ``eps`` spread over all classes. It is here
to prove the task room: this file and one ``register`` call are all a task needs."""

from __future__ import annotations

from typing import Any

from peftsearch.objectives.tasks import Classify

EPS = 0.2


class Smoothed(Classify):
    name = "smooth"
    head = "classifier"
    defaults: dict[str, dict[str, Any]] = {}  # the classifier's default space

    def __init__(self) -> None:
        self.rows = {"engine": 0, "loop": 0}  # rows each path computed this loss on

    def loss(self, scores: Any, labels: Any) -> Any:
        import torch.nn.functional as F

        self.rows["engine"] += len(labels)
        return F.cross_entropy(scores.float(), labels, reduction="none", label_smoothing=EPS)

    def train_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        self.rows["loop"] += len(batch["labels"])
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits.float()
        return F.cross_entropy(logits, batch["labels"], label_smoothing=EPS)
