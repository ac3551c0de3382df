"""Checkpoints of a ``search train`` run, so that a crash or Ctrl-C loses minutes, not the run.

A checkpoint is one file, ``state.pt``, in a directory beside the model's target
(``model.checkpoint/`` for ``model/``): the trainable tensors, AdamW's and the schedule's
state, the loss curve so far, the step, and torch's random state (dropout). The data order is
not stored: it is a function of the seed, replayed up to the step. Resuming from it continues
exactly where the run was (on CPU the final weights are bit-identical to a run never
stopped; tested). It is written every ``every`` steps and on Ctrl-C, atomically (a temp file
renamed), and removed once the model is saved. ``meta.json`` holds what the run was (config
file hash, parameters, epochs, train rows): a checkpoint of another run is refused, not
silently continued.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftsearch.errors import UserError

DEFAULT_EVERY = 100  # steps; MiniLM on 2 CPU cores: about 50 s of training


@dataclass
class Checkpoint:
    """Where a run's checkpoint lives, what run it belongs to, and how often it is written."""

    folder: Path
    identity: dict[str, Any]
    every: int = DEFAULT_EVERY

    @classmethod
    def beside(cls, target: Path, config: Path, identity: dict[str, Any], every: int) -> Checkpoint:
        digest = hashlib.sha256(config.read_bytes()).hexdigest()
        return cls(
            target.with_name(target.name + ".checkpoint"),
            {"config_sha256": digest, **identity},
            every,
        )

    @property
    def state_file(self) -> Path:
        return self.folder / "state.pt"

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none. A checkpoint of another run (other
        config, parameters or data) raises: the user decides what to do with it."""
        import torch

        if not self.state_file.is_file():
            return None
        meta = json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
        if meta != json.loads(json.dumps(self.identity)):
            raise UserError(
                f"{self.folder} holds a checkpoint of another run (its config, parameters or "
                "data differ); remove it to start over"
            )
        return torch.load(self.state_file, map_location="cpu", weights_only=False)

    def save(self, state: dict[str, Any]) -> None:
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "meta.json").write_text(json.dumps(self.identity, indent=2), "utf-8")
        tmp = self.state_file.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.state_file)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


class _Stop:
    """True once Ctrl-C was pressed (see :func:`interrupts_at_step_end`)."""

    def __init__(self) -> None:
        self.hit = False

    def __bool__(self) -> bool:
        return self.hit


@contextlib.contextmanager
def interrupts_at_step_end(enabled: bool) -> Iterator[_Stop]:
    """While training with a checkpoint, Ctrl-C only sets a flag: the loop finishes the step
    it is in (a state saved mid-update would not resume), saves, and raises
    KeyboardInterrupt itself. A second Ctrl-C interrupts at once."""
    stop = _Stop()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.hit:
            raise KeyboardInterrupt
        stop.hit = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def train_state(
    model: Any, opt: Any, sched: Any, step: int, curve: list[float], pending: list[Any]
) -> dict[str, Any]:
    """What resuming at ``step`` needs (see the module docstring)."""
    import torch

    return {
        "step": step,
        "trainable": {
            n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad
        },
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "curve": list(curve),
        "pending": [float(x) for x in pending],
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore(state: dict[str, Any], model: Any, opt: Any, sched: Any) -> None:
    import torch

    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            named[name].copy_(value.to(named[name].device))
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
