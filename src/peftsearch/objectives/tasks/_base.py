"""What a task kind is: how a trial's model is asked for an answer, scored and trained.

A task decides what the base model is (a sequence classifier with a new head, or a language
model whose own head scores label words), what the packed engine's forward returns for each
row (:meth:`Task.scores`), the loss on those scores, and what a prediction is. The engine's
core (slots, the stack, the row layout, rungs) is the same for every task; a new task (text
generation next) is one more module and one :func:`~peftsearch.objectives.tasks.register`
call. ``docs/ARCHITECTURE.md`` has the checklist.

No torch at import time.
"""

from __future__ import annotations

from typing import Any, ClassVar

from peftsearch.spaces import Rule


class Task:
    """Base of every task kind.

    Attributes:
        name: the task's name (``classify``, ``verbalize``).
        head: the ``model.head`` it runs on (``classifier``: a sequence classifier with a new
            head; ``verbalizer``: a language model and its own head).
        rules: its own searchable parameters (the verbalizer's choice).
        defaults: head kind -> the training settings of its default space.
        peft_task_type: the name of peft's ``TaskType`` its adapters are saved with (per
            ``lm_kind`` where it depends on the model).
    """

    name: ClassVar[str] = ""
    head: ClassVar[str] = ""
    rules: ClassVar[dict[str, Rule]] = {}
    defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def peft_task_type(self, lm_kind: str | None) -> Any:
        """peft's ``TaskType`` for this task's adapters."""
        raise NotImplementedError

    # -- the packed engine ----------------------------------------------------------------------

    def head_modules(self, base: Any) -> tuple[dict[str, Any], set[str]]:
        """The base model's head modules a trial trains a copy of (none: nothing of the base
        trains), and the top-level module names no adapter may target."""
        raise NotImplementedError

    def attach(self, engine: Any) -> None:
        """Register the task's own hooks on the base once (an LM's prediction point)."""

    def check_slot(self, slot: Any, label_tokens: Any) -> None:
        """Take what a slot of this task needs besides its adapters (label words)."""

    def scores(self, engine: Any, kwargs: dict[str, Any], positions: Any) -> Any:
        """``[rows, classes]`` scores of the packed batch ``kwargs`` (``engine.rows`` says
        whose rows are whose); what the loss and the predictions read."""
        raise NotImplementedError

    def loss(self, scores: Any, labels: Any) -> Any:
        """Per-row loss (float32, unreduced)."""
        import torch.nn.functional as F

        return F.cross_entropy(scores.float(), labels, reduction="none")

    def predict(self, scores: Any) -> Any:
        """Per-row predictions of ``scores`` (a tensor on the scores' device)."""
        return scores.argmax(-1)

    # -- outside the engine (``search train`` of a classifier: a plain loop on a peft model) ----

    def train_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """The mean loss of a built model on ``batch`` (its ``labels`` included)."""
        return model(**batch).loss
