"""The packed engine's forward hooks on the frozen base model, and the rows they act on.

The base model never changes: every hook does nothing unless a packed forward is in flight
(:attr:`Rows.segments` non-empty). During one, the batch is the rows of several trials, each
trial's rows contiguous (a *segment*), and :class:`Rows` says which stacked row
(:class:`~peftsearch.objectives.stack.Stack`) each batch row belongs to. Each hook then does its
work for all trials in a fixed number of tensor ops, whatever the number of trials. Each
adapter's own hooks live in its module (``objectives/adapters/``: LoRA's two ``bmm``, the head's
``vmap``), the LM's prediction-point hook in ``objectives/tasks/verbalize.py``; here are what
they share:

- Dropout (the base's hidden-state dropout layers and LoRA's): each trial's masks must not
  depend on what it is packed with. A mask element is a hash of (trial seed, trial step, site,
  row of the trial's batch, position, feature), see :func:`keep_mask`: one mask for the whole
  batch in ~15 elementwise ops, instead of one ``bernoulli_`` per trial per site from per-trial
  generators (16 trials x 6 sites = 96 draws per step on the suite's tiny BERT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

M32 = 0xFFFFFFFF


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply rounds, the shape of Wellons' lowbias32) on
    int64 tensors holding values below 2**32. Multipliers are below 2**31, so no product
    overflows int64 and every shift is a logical one."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & M32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & M32
    return x ^ (x >> 16)


def row_keys(seeds: torch.Tensor, steps: torch.Tensor, row_in_trial: torch.Tensor) -> torch.Tensor:
    """Each batch row's dropout key from its trial's seed and step and its row number in the
    trial's own batch (int64 in [0, 2**32))."""
    x = _mix(((seeds & M32) * 0x1E3779B9 + 0x632BE5AB) & M32)
    x = _mix((x ^ (steps * 0x27D4EB2F & M32)) & M32)
    return _mix((x ^ (row_in_trial * 0x165667B1 & M32)) & M32)


_TABLES: dict[tuple[int, str], torch.Tensor] = {}


def _feature_codes(n: int, device: Any) -> torch.Tensor:
    """A fixed random int32 per feature index (the same in every process and on every device)."""
    key = (n, str(device))
    if key not in _TABLES:
        gen = torch.Generator().manual_seed(0x5EED)
        _TABLES[key] = torch.randint(-(2**31), 2**31, (n,), generator=gen, dtype=torch.int64).to(
            device=device, dtype=torch.int32
        )
    return _TABLES[key]


def _as_int32(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) as the int32 of the same bits."""
    return (x - (x >= 2**31).long() * 2**32).to(torch.int32)


def keep_mask(
    shape: tuple[int, ...],
    keys: torch.Tensor,
    site: int,
    coords: torch.Tensor | None,
    p: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Inverted-dropout multipliers (0 or ``1 / (1 - p)``) for a tensor of ``shape`` whose
    dim 0 is the batch rows.

    ``keys``: each row's key (:func:`row_keys`); ``site``: which dropout call of the model;
    ``coords``: for ``[rows, width, ...]`` tensors, each column's position counted so that
    padding does not move it (the engine counts from the first real column, or from the last
    with left padding); ``p``: each row's drop probability. Element ``(r, c, f)`` is kept
    when 24 bits of ``hash(key_r, site, coord_c, f)`` are at least ``p_r * 2**24``: the mask
    of a trial's rows is a function of that trial alone.

    The hash: a full 32-bit mix of (row key, site, column) on the small ``[rows, width]``
    tensor, then per element that value XOR a fixed random code of the feature, multiply,
    xorshift, multiply in int32 (products wrap, as two's complement integers do on CPU and
    GPU): 8 elementwise ops per element, the mask's multiply included. Measured on a
    MiniLM-sized ``[32, 64, 384]`` tensor, 2 CPU cores, best of 7 x 20 calls: 1.8 ms; one
    ``bernoulli_`` of that size (which would be one per trial) took 4.9-5.5 ms in an earlier
    run on the same machine (not interleaved with this one; the VM's timings vary).
    ``tests/objectives/test_hooks.py`` checks the keep rate, independence and the bits."""
    n = shape[0]
    site_key = _mix((keys ^ (site * 0x45EBCA77 & M32)) & M32)  # [n]
    if coords is not None and len(shape) >= 3:
        cells = _mix((site_key.view(n, 1) ^ (coords.view(1, -1) * 0x42B2AE3D & M32)) & M32)
        feats = math.prod(shape[2:])
        view = (n, shape[1], feats)
    else:
        cells = site_key.view(n, 1)
        feats = math.prod(shape[1:])
        view = (n, 1, feats)
        cells = cells.view(n, 1)
    h = _as_int32(cells).view(view[0], view[1], 1) ^ _feature_codes(feats, keys.device)
    # In place: a fresh full-size temporary per op costs page faults on CPU (4x slower on a
    # MiniLM-sized mask, measured: 7.2 ms against 1.8 ms).
    h.mul_(0x7FEB352D)
    h.bitwise_xor_(h >> 15)  # arithmetic shift: bit 31 becomes 0; the multiply mixes it back
    h.mul_(0x5BD1E995)
    h.bitwise_right_shift_(8)  # the top 24 bits, as a signed number in [-2**23, 2**23)
    threshold = ((p * 2**24).round() - 2**23).to(torch.int32).view(n, 1, 1)
    scale = (1.0 / (1.0 - p)).to(dtype).view(n, *[1] * (len(shape) - 1))
    return h.ge_(threshold).view(shape) * scale


@dataclass
class Rows:
    """The batch of the packed forward now in flight: which trial owns which rows."""

    segments: list[tuple[Any, int]] = field(default_factory=list)  # (slot, rows), in order
    stack: Any = None  # the Stack whose rows the slots hold
    slot_rows: torch.Tensor | None = None  # [N] the stacked row of each batch row
    present: torch.Tensor | None = None  # [S] the stacked row of each segment
    seg: torch.Tensor | None = None  # [N] the segment of each batch row
    dst: torch.Tensor | None = None  # [N] each batch row's place in a [S, n_max] layout
    n_max: int = 0
    equal: bool = True  # every segment has n_max rows (no re-layout needed for the head)
    keys: torch.Tensor | None = None  # [N] dropout keys (training only)
    coords: torch.Tensor | None = None  # [width] padding-free column positions
    width: int = 0
    training: bool = False
    pick: tuple[torch.Tensor, torch.Tensor] | None = None  # LM heads: (rows, cols)
    calls: dict[int, int] = field(default_factory=dict)  # dropout calls per site in this pass
    extra: dict[str, Any] = field(default_factory=dict)  # each adapter's per-row values

    def clear(self) -> None:
        self.segments, self.stack, self.calls, self.extra = [], None, {}, {}

    def dropout(self, x: torch.Tensor, site: int, p: torch.Tensor) -> torch.Tensor:
        """``x`` (batch rows first) with each row's trial's own dropout mask at ``site``."""
        call = self.calls.get(site, 0)
        self.calls[site] = call + 1
        coords = self.coords if x.dim() >= 3 and x.shape[1] == self.width else None
        mask = keep_mask(tuple(x.shape), self.keys, site * 64 + call, coords, p, x.dtype)  # type: ignore[arg-type]
        return x * mask


def dropout_hook(rows: Rows, site: int) -> Any:
    """A base dropout layer (an identity: the base runs in eval mode) with each trial's masks."""

    def hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
        if not rows.training or not rows.segments or module.p == 0:
            return None
        p = torch.full((args[0].shape[0],), float(module.p), device=args[0].device)
        return rows.dropout(args[0], site, p)

    return hook
