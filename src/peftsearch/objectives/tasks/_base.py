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

from collections.abc import Callable
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
    # A prediction is written text, decoded by the engine (:meth:`decode_batch`), not the
    # argmax of :meth:`scores`.
    decodes: ClassVar[bool] = False
    # Batch columns besides the model's inputs that :meth:`scores` reads from its kwargs
    # (the packed rows' values, concatenated; 2-D ones right padded).
    reads: ClassVar[tuple[str, ...]] = ()

    def peft_task_type(self, lm_kind: str | None) -> Any:
        """peft's ``TaskType`` for this task's adapters."""
        raise NotImplementedError

    # -- data: what a row's answer is, how rows split, what the metric compares -------------
    # (``data.py`` loads the file and cleans the texts; pandas frames in, one row per example)

    def target_columns(self, spec: Any) -> dict[str, str]:
        """The source columns the answer is read from (checked to exist, besides the texts),
        each with the space key that names it (for the error)."""
        raise NotImplementedError

    def clean(self, df: Any, spec: Any, file: str, split: str) -> Any:
        """``df`` (texts cleaned) with its answer in the form the task trains on; rows
        without a usable answer refused (SpaceError naming the key) or dropped."""
        raise NotImplementedError

    def split(self, df: Any, size: float | int, seed: int, spec: Any) -> tuple[Any, Any]:
        """``(rest, part)``, ``part`` of ``size`` rows (or that fraction), fixed by ``seed``.

        Raises:
            ValueError: the rows cannot be split so (the message says why).
        """
        raise NotImplementedError

    def record(self, spec: Any) -> dict[str, Any]:
        """What ``splits.json`` records of the answers besides the rows (the label names)."""
        return {}

    def encode(self, df: Any, template: Any, tokenizer: Any, space: Any, demos: str = "") -> Any:
        """``df``'s rows as model inputs under ``template`` (its ``{demos}`` slot holding
        ``demos``) with their targets: an :class:`~peftsearch.objectives.data.Encoded`.

        Raises:
            TemplateTooLong: the template's own words do not fit ``model.max_length``.
        """
        raise NotImplementedError

    def references(self, df: Any) -> list[Any]:
        """The answers of ``df``'s rows as the metric's references."""
        raise NotImplementedError

    def demo_rows(self, train: Any, k: int, seed: int, spec: Any) -> Any:
        """The train rows shown as ``{demos}`` (``n_demos`` = ``k``), drawn with ``seed``."""
        raise NotImplementedError

    def demo_answer(self, space: Any, params: Any) -> Callable[[dict[str, Any]], str]:
        """What follows a demonstration row's worded text: its answer, as the trained
        trial is asked to give it."""
        raise NotImplementedError

    def check_metric(self, metric: Any, spec: Any, file: str) -> None:
        """Fail before training when the metric cannot score this task's answers (bad
        ``metric_kwargs``): SpaceError naming the key."""

    def examples(self, held: Any, predictions: list[Any], k: int = 5) -> list[Any]:
        """A few held rows with their prediction, stored with a trial (none by default)."""
        return []

    def zero_shot(self, runner: Any, n_demos: int, verbalizers: Any) -> dict[str, Any]:
        """The untrained model's metric per template (and per verbalizer): what training
        adds. ``{}`` where an untrained model has nothing to say (a new random head)."""
        return {}

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

    # -- ``search train``: production training of one configuration -------------------------

    def train(
        self,
        space: Any,
        params: Any,
        splits: Any,
        device: Any,
        on_step: Any,
        info: dict[str, Any],
        probe: list[str],
        checkpoint: Any = None,
    ) -> Any:
        """Train ``params`` on the whole train split and save nothing yet: a
        :class:`~peftsearch.objectives.production_heads.Trained` (the model, its scores on
        the validation and test splits, ``probe``'s predictions). ``info`` is
        ``inference.json``, which the task completes with what prediction needs."""
        raise NotImplementedError

    def train_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """The mean loss of a built model on ``batch`` (its ``labels`` included)."""
        return model(**batch).loss
