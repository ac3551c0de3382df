"""The packed engine's bookkeeping: a trial inside it (:class:`Slot`), a trial that left it
(:class:`Finished`), and how a batch says whose rows are whose (:data:`Part`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from peftsearch.objectives import adapters
from peftsearch.objectives.data import Encoded
from peftsearch.objectives.train import EvalResult, TrainConfig, TrainStats


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


@dataclass(eq=False)
class Slot:
    """One trial inside the engine: its adapters' tensors, settings and progress."""

    key: Any
    params: dict[str, Any]
    cfg: TrainConfig
    train_data: Encoded
    eval_data: Encoded
    # Its tensors by field name in the stack (``<adapter>`` or ``<adapter>.<...>``), in
    # registry order, and what each adapter keeps for its hooks (by adapter name).
    tensors: dict[str, torch.nn.Parameter] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    trainable: int = 0
    row: int | None = None  # its row of the engine's Stack while it is in there
    order: Iterator[Any] | None = None
    step: int = 0
    total: int = 0
    log_every: int = 1
    loss_steps: int = 0  # steps whose loss is summed in the stack and not yet in ``curve``
    curve: list[float] = field(default_factory=list)
    started: float = 0.0
    train_seconds: float = 0.0
    pack_sizes: list[int] = field(default_factory=list)
    label_words: list[list[int]] | None = None  # verbalizer: each class's first-token ids
    rung_steps: list[int] = field(default_factory=list)  # evaluate (and maybe stop) there
    test_data: Encoded | None = (
        None  # also scored when it finishes (``search confirm --budget full``)
    )

    @property
    def prompt_length(self) -> int:
        return sum(a.virtual_tokens(self) for a in adapters.ADAPTERS.values())

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.tensors.values())

    def parts(self) -> dict[str, list[torch.nn.Parameter]]:
        """The trainable tensors by part (each adapter trains at its own learning rate)."""
        out: dict[str, list[torch.nn.Parameter]] = {name: [] for name in adapters.parts()}
        for name, t in self.tensors.items():
            out[adapters.field_part(name)].append(t)
        return out

    # The built-in adapters' tensors by their old names (production saving and tests).

    @property
    def lora(self) -> dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]]:
        layers = (self.state.get("lora") or {}).get("layers", [])
        return {n: (self.tensors[f"lora.{n}.A"], self.tensors[f"lora.{n}.B"]) for n in layers}

    @property
    def prompt(self) -> torch.nn.Parameter | None:
        return self.tensors.get("prompt")

    @property
    def head(self) -> torch.nn.ModuleDict:
        return self.state.get("head", torch.nn.ModuleDict())


@dataclass
class Finished:
    """A slot that left the engine: trained and evaluated, or failed with ``error``."""

    key: Any
    trainable: int
    stats: TrainStats | None = None
    result: EvalResult | None = None
    error: BaseException | None = None
    pack_size: float = 1.0  # mean number of trials trained together with this one (itself too)
    pruned: bool = False  # stopped at its last rung: ``result`` is that rung's evaluation
    planned_steps: int = 0  # the steps it would have trained to the end
    test_result: EvalResult | None = None  # on the slot's ``test_data``, when it has some


Part = tuple[list[tuple[Slot, int]], dict[str, Any]]  # slots owning consecutive rows, batch
