"""How many trials train together (``study.pack``), the pack they train in, and the pruner
that may stop them at a rung."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peftsearch.errors import UserError
from peftsearch.searcher._runner import Pack, RungHook, Runner, packs, prunes
from peftsearch.searcher.sigint import Sigint
from peftsearch.spaces import Space

# `study.pack: auto` on a GPU. Not measured on a GPU yet: chosen from issue 5's H100 numbers
# (the LoRA step runs 106k tokens/s at batch 32 and 2.4M at batch 4,096, so 16 trials of batch
# 32 in one batch of 512 rows are still far from saturating it). Out of memory halves it.
AUTO_PACK_CUDA = 16


def pack_size(space: Space) -> int:
    """``study.pack`` as a number: ``auto`` is :data:`AUTO_PACK_CUDA` on a GPU, 1 on CPU."""
    pack = space.study.pack
    if pack != "auto":
        return int(pack)
    from peftsearch.objectives.model import pick_device

    return AUTO_PACK_CUDA if pick_device(space.model.device).type == "cuda" else 1


class SequentialPack:
    """A pack of one, for any runner with ``run(params, on_step)``: each ``step`` runs the
    queued trial whole. Used when ``study.pack`` is 1."""

    capacity = 1

    def __init__(
        self,
        runner: Runner,
        on_step: Callable[[Any, int, int], None],
        on_rung: RungHook | None = None,
    ) -> None:
        self.runner, self.on_step, self.on_rung = runner, on_step, on_rung
        self._queue: list[tuple[Any, dict[str, Any]]] = []

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: Any, params: dict[str, Any]) -> None:
        self._queue.append((key, params))

    def step(self) -> list[tuple[Any, Any]]:
        key, params = self._queue[0]
        kwargs: dict[str, Any] = {}
        if self.on_rung is not None:
            on_rung = self.on_rung
            kwargs["on_rung"] = lambda *a: on_rung(key, *a)

        def on_step(step: int, total: int) -> None:
            self.on_step(key, step, total)
            Sigint.check()  # a whole trial runs in here: a swallowed Ctrl-C stops it

        try:
            result: Any = self.runner.run(params, on_step=on_step, **kwargs)
        except Exception as exc:
            result = exc
        finally:
            self._queue.pop(0)
        return [(key, result)]

    def progress(self) -> list[tuple[Any, int, int]]:
        return []  # reported through on_step while a trial runs

    def clear(self) -> None:
        self._queue.clear()


def make_pack(space: Space, runner: Runner, display: Any, on_rung: RungHook | None = None) -> Pack:
    """``study.pack`` trials at a time through ``runner.pack``, or one at a time.
    ``on_rung(number, rung, step, metric, eval_loss, trainable)``: the pruner's decision."""
    size = pack_size(space)
    if size > 1:
        if not packs(runner):
            raise UserError(f"{space.file}: study.pack: this runner trains one trial at a time")
        return runner.pack(size, on_rung) if on_rung is not None else runner.pack(size)
    return SequentialPack(runner, display.trial_step, on_rung)


def make_pruner(space: Space, runner: Runner) -> Any:
    """The study's MO-ASHA, or None (``study.pruner: none``, or a runner without rungs)."""
    spec = space.study.pruner
    if spec.type == "none" or not prunes(runner):
        return None
    from peftsearch.searcher.pruners import MOASHA

    return MOASHA(spec.reduction, spec.min_trials)
