"""Every packed trial's trainable tensors in one ``[rows, D]`` block, and one AdamW step for all.

Row ``i`` is one trial (a slot of :class:`~peftsearch.objectives.packed.PackedEngine`); its
``D`` columns hold all of the trial's tensors, laid out the same in every row: LoRA A and B of
each target layer at the pack's largest rank, the soft prompt at the pack's longest, and the
head's parameters. The forward pass sees them as *fields*: per tensor a leaf
``Parameter [rows, *shape]`` that is a view of the block, whose ``.grad`` is a view of one
gradient block. So one backward leaves every trial's gradient in one ``[rows, D]`` tensor, and
grad-norm clipping, the warmup/decay schedule and AdamW are some 30 tensor ops whatever the
number of trials or layers (HFTA's fused optimizer, Wang et al., MLSys 2021: per-model rates as
tensors broadcast over stacked parameters). Before this, each trial ran its own
``torch.optim.AdamW``, ``clip_grad_norm_`` and scheduler: 11.4x the ops per step at 16 trials
as at one (benchmarks/RESULTS.md, issue 12).

Why not ``torch.optim.AdamW`` on the block: its learning rate, weight decay and step count are
per parameter group, here they are per row (each trial has its own rates, schedule and age).

Padding is exact. A trial of rank ``r`` in a block of rank ``R > r``: rows ``r..R`` of its A and
columns ``r..R`` of its B start at zero, so their gradients are zero (B's columns multiply A's
zero rows' output, A's rows are multiplied by B's zero columns), AdamW's moments stay zero, and
so does the update (``0 / (sqrt(0) + eps)``) and the decay (``0 * wd``). Prompt rows past a
trial's length, and the tensors of layers it does not adapt, are never read: zero gradient.
``tests/objectives/test_stack.py`` checks each step against ``torch.optim.AdamW``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

# The learning-rate parts of a stack built without naming them: the built-in adapters (the
# engine passes the registry's, ``peftsearch.objectives.adapters.parts()``). A column's
# learning rate is its row's rate for its part.
PARTS = ("lora", "prompt", "head")
BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.AdamW's defaults (what Trainer uses)

# The fields are non-contiguous views of the block and so are their grads (by design: one
# gradient block); autograd says so once per field. Nothing is wrong, nothing is copied.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout")


@dataclass(frozen=True)
class Field:
    """One stacked tensor: ``shape`` per row, the ``part`` whose rate it trains at, and whether
    weight decay applies (matrices only, as Trainer and ``param_groups``)."""

    shape: tuple[int, ...]
    part: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def decay(self) -> bool:
        return len(self.shape) >= 2


class Stack:
    """The block, its AdamW moments and each row's settings (rates, schedule, clip norm)."""

    def __init__(
        self,
        fields: dict[str, Field],
        rows: int,
        device: Any,
        parts: tuple[str, ...] = PARTS,
    ) -> None:
        self.specs = dict(fields)
        self.parts = tuple(parts)
        self.rows, self.device = rows, device
        self.offsets: dict[str, int] = {}
        d = 0
        for name, f in self.specs.items():
            self.offsets[name] = d
            d += f.size
        self.width = d
        z = lambda: torch.zeros(rows, max(1, d), device=device)  # noqa: E731
        self.data, self.grad, self.m, self.v = z(), z(), z(), z()
        self.fields: dict[str, torch.nn.Parameter] = {}
        for name, f in self.specs.items():
            cols = slice(self.offsets[name], self.offsets[name] + f.size)
            param = torch.nn.Parameter(self.data[:, cols].view(rows, *f.shape))
            param.grad = self.grad[:, cols].view(rows, *f.shape)
            self.fields[name] = param
        part = torch.zeros(max(1, d), dtype=torch.long)
        decay = torch.zeros(max(1, d))
        for name, f in self.specs.items():
            cols = slice(self.offsets[name], self.offsets[name] + f.size)
            part[cols] = self.parts.index(f.part)
            decay[cols] = float(f.decay)
        self.part_cols, self.decay_cols = part.to(device), decay.to(device)
        # Per row: peak rate of each part, weight decay, warmup and total steps, steps done,
        # max grad norm, and whether the row trains (a free or evaluation-only row does not).
        self.rates = torch.zeros(rows, len(self.parts), device=device)
        self.weight_decay = torch.zeros(rows, device=device)
        self.warmup = torch.zeros(rows, device=device)
        self.total = torch.ones(rows, device=device)
        self.steps = torch.zeros(rows, device=device)
        self.max_norm = torch.ones(rows, device=device)
        self.live = torch.zeros(rows, device=device)
        self.loss_sum = torch.zeros(rows, device=device)  # train loss since each row's last read

    # -- rows ------------------------------------------------------------------------------------

    def resized(self, fields: dict[str, Field], rows: int) -> Stack:
        """A stack with ``fields`` (a superset: larger shapes, more tensors) and ``rows`` rows,
        holding this one's values, moments and settings where they overlap; zero elsewhere."""
        new = Stack(fields, rows, self.device, self.parts)
        n = min(rows, self.rows)
        with torch.no_grad():
            for name, f in self.specs.items():
                if name not in new.specs:
                    continue
                cut = (slice(0, n), *(slice(0, s) for s in f.shape))
                for src, dst in ((self.data, new.data), (self.m, new.m), (self.v, new.v)):
                    dst_view = new.view_of(dst, name)
                    dst_view[cut] = self.view_of(src, name)[:n]
            for attr in (
                "rates",
                "weight_decay",
                "warmup",
                "total",
                "steps",
                "max_norm",
                "live",
                "loss_sum",
            ):
                getattr(new, attr)[:n] = getattr(self, attr)[:n]
        return new

    def view_of(self, block: torch.Tensor, name: str) -> torch.Tensor:
        f, off = self.specs[name], self.offsets[name]
        return block[:, off : off + f.size].view(self.rows, *f.shape)

    def place(
        self,
        row: int,
        values: dict[str, torch.Tensor],
        rates: dict[str, float],
        weight_decay: float,
        warmup: int,
        total: int,
        max_norm: float,
        live: bool,
    ) -> None:
        """Row ``row`` becomes a new trial: its tensors (each into the top-left corner of its
        field), zero moments, zero steps, its settings. ``live`` False: evaluation only."""
        with torch.no_grad():
            for block in (self.data, self.m, self.v):
                block[row].zero_()
            for name, value in values.items():
                corner = tuple(slice(0, s) for s in value.shape)
                self.fields[name].data[row][corner] = value.to(self.device)
            self.rates[row] = torch.tensor([rates.get(p, 0.0) if live else 0.0 for p in self.parts])
            self.weight_decay[row] = weight_decay
            self.warmup[row], self.total[row], self.steps[row] = warmup, total, 0
            self.max_norm[row], self.live[row], self.loss_sum[row] = max_norm, float(live), 0

    def read(self, row: int, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A copy of one trial's tensor (its corner of the field)."""
        corner = tuple(slice(0, s) for s in shape)
        return self.fields[name].detach()[row][corner].clone()

    def free(self, row: int) -> None:
        self.live[row] = 0
        self.rates[row] = 0

    # -- the optimizer step ----------------------------------------------------------------------

    def step(self) -> None:
        """Clip each live row's gradient to its max norm, then one AdamW step per live row at
        its scheduled rates (``get_linear_schedule_with_warmup``'s factor at the row's step
        count, as a scheduler stepped after each optimizer step)."""
        b1, b2 = BETAS
        with torch.no_grad():
            g = self.grad
            norm = torch.linalg.vector_norm(g, dim=1)
            coef = (self.max_norm / (norm + 1e-6)).clamp(max=1.0)  # clip_grad_norm_'s rule
            g.mul_(coef.unsqueeze(1))
            s, w, t = self.steps, self.warmup, self.total
            factor = torch.where(
                s < w, s / w.clamp(min=1), ((t - s) / (t - w).clamp(min=1)).clamp(min=0)
            )
            self.steps.add_(self.live)
            lr = self.rates.index_select(1, self.part_cols) * (factor * self.live).unsqueeze(1)
            self.data.mul_(1 - lr * self.weight_decay.unsqueeze(1) * self.decay_cols)
            self.m.lerp_(g, 1 - b1)
            self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
            n = self.steps.clamp(min=1).unsqueeze(1)
            bias1, bias2 = 1 - b1**n, (1 - b2**n).sqrt()
            denom = (self.v.sqrt() / bias2).add_(EPS)
            self.data.addcdiv_(self.m * (lr / bias1), denom, value=-1.0)

    def zero_grad(self) -> None:
        self.grad.zero_()
