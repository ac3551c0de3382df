"""A packed trial's training state, saved and restored between two steps: how ``search train``
of a verbalizer head (one slot of the engine) checkpoints and resumes bit for bit on CPU."""

from __future__ import annotations

import time
from typing import Any

import torch


def snapshot(engine: Any, key: Any) -> dict[str, Any]:
    """An active trial's whole training state between two steps: its tensors and AdamW
    moments (its corner of each field), the step, the optimizer's step count, the loss
    not yet in the curve, and the curve. The data order and the dropout masks are
    functions of the seed and the step, so :func:`resume` continues bit-exactly (CPU)."""
    slot = next(s for s in engine.active if s.key == key)
    stack = engine.stack
    assert stack is not None and slot.row is not None
    row = slot.row
    shapes = {n: tuple(t.shape) for n, t in slot.tensors.items()}

    def corner(block: torch.Tensor, name: str) -> torch.Tensor:
        cut = tuple(slice(0, n) for n in shapes[name])
        return stack.view_of(block, name)[row][cut].detach().cpu().clone()

    return {
        "step": slot.step,
        "tensors": {n: corner(stack.data, n) for n in shapes},
        "m": {n: corner(stack.m, n) for n in shapes},
        "v": {n: corner(stack.v, n) for n in shapes},
        "adam_steps": stack.steps[row].detach().cpu().clone(),
        "loss_sum": stack.loss_sum[row].detach().cpu().clone(),
        "loss_steps": slot.loss_steps,
        "curve": list(slot.curve),
    }


def resume(engine: Any, key: Any, state: dict[str, Any]) -> None:
    """A queued trial joins now at ``state`` (a :func:`snapshot` of the same trial: same
    params, data and seed) instead of at step 0."""
    slot = next(s for s in engine.waiting if s.key == key)
    engine.waiting.remove(slot)
    slot.started = time.perf_counter()
    engine.active.append(slot)
    engine._place([slot], live=True)
    stack, row = engine.stack, slot.row
    assert stack is not None and row is not None
    with torch.no_grad():
        for block, part in ((stack.data, "tensors"), (stack.m, "m"), (stack.v, "v")):
            for name, value in state[part].items():
                cut = tuple(slice(0, n) for n in value.shape)
                stack.view_of(block, name)[row][cut] = value.to(engine.device)
        stack.steps[row] = state["adam_steps"].to(engine.device)
        stack.loss_sum[row] = state["loss_sum"].to(engine.device)
    slot.step, slot.loss_steps = int(state["step"]), int(state["loss_steps"])
    slot.curve = list(state["curve"])
    assert slot.order is not None
    for _ in range(slot.step):  # the data order is the seed's: replay it to the step
        next(slot.order)
