"""The packed engine's forward hooks on the frozen base model, and the rows they act on.

The base model never changes: every hook does nothing unless a packed forward is in flight
(:attr:`Rows.segments` non-empty). During one, the batch is the rows of several trials, each
trial's rows contiguous (a *segment*), and :class:`Rows` says which stacked row
(:class:`~peftsearch.objectives.stack.Stack`) each batch row belongs to. Each hook then does its
work for all trials in a fixed number of tensor ops, whatever the number of trials:

- LoRA on a target linear layer: every row gathers its trial's A and B (``[rows, r, in]``) and
  two ``bmm`` add ``B(A(dropout(x))) * alpha / r``; trials of lower rank are zero-padded.
- The classifier head: ``torch.func.vmap`` over the trials of ``functional_call`` of one copy of
  the head with each trial's stacked parameters (any head module: BERT's linear, RoBERTa's
  dense + out_proj), on the rows laid out ``[trials, rows, ...]``.
- Dropout (the base's hidden-state dropout layers and LoRA's): each trial's masks must not
  depend on what it is packed with. A mask element is a hash of (trial seed, trial step, site,
  row of the trial's batch, position, feature), see :func:`keep_mask`: one mask for the whole
  batch in ~15 elementwise ops, instead of one ``bernoulli_`` per trial per site from per-trial
  generators (16 trials x 6 sites = 96 draws per step on the suite's tiny BERT).
- LM heads: a hook on the backbone cuts its output to each row's prediction point.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import torch

M32 = 0xFFFFFFFF


def lm_head_names(base: Any) -> set[str]:
    """The language model's head: every top-level child besides the backbone (``lm_head`` of
    Llama and RoBERTa, ``cls`` of BERT, DistilBERT's ``vocab_transform`` / ``vocab_layer_norm``
    / ``vocab_projector``, ModernBERT's ``head`` and ``decoder``). LoRA never targets them."""
    backbone = base.base_model
    return {n for n, m in base.named_children() if m is not backbone}


def narrow_to(out: Any, rows: torch.Tensor, cols: torch.Tensor) -> Any:
    """A backbone's output with its sequence output cut to one position per row (``[n, 1,
    hidden]``): what follows in the model (its LM head: position-wise layers, a tied
    decoder, logit soft-capping) then runs on the prediction points only."""
    first = out[0][rows, cols].unsqueeze(1)
    if isinstance(out, tuple):
        return (first, *out[1:])
    out.last_hidden_state = first  # a ModelOutput keeps its fields and tuple view in step
    return out


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


def prompt_columns(
    prompts: torch.Tensor, slot_rows: torch.Tensor, start: torch.Tensor, width: int, left: bool
) -> torch.Tensor:
    """``[rows, width, hidden]``: each batch row's trial's soft prompt from column ``start`` of
    the row on (0 with right padding), what lies outside the prompt being don't-care.

    ``prompts[slot_rows[:, None], j - start]`` would say the same, but its backward (an
    accumulating ``index_put_``) sums in a thread-dependent order on CPU: the same trial gave
    0.574 and 0.586 on two runs of the demo's prompt-16 trial. ``index_select`` and ``gather``
    (whose backward adds serially along the gathered dim) give the same bits every run."""
    per_row = prompts.index_select(0, slot_rows)  # [rows, P, hidden]
    n, p, h = per_row.shape
    if not left:  # start is 0: columns 0..P-1 are the prompt
        if p >= width:
            return per_row[:, :width]
        return torch.nn.functional.pad(per_row, (0, 0, 0, width - p))
    at = (torch.arange(width, device=per_row.device) - start).clamp(0, p - 1)  # [rows, width]
    return per_row.gather(1, at.unsqueeze(-1).expand(n, width, h))


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
    scaling: torch.Tensor | None = None  # [N] LoRA alpha / r of each row's trial
    seg_scaling: torch.Tensor | None = None  # [S] the same per segment
    lora_p: torch.Tensor | None = None  # [N] LoRA dropout of each row's trial
    lora_names: set[str] = field(default_factory=set)  # layers some trial in the batch adapts
    keys: torch.Tensor | None = None  # [N] dropout keys (training only)
    coords: torch.Tensor | None = None  # [width] padding-free column positions
    width: int = 0
    training: bool = False
    pick: tuple[torch.Tensor, torch.Tensor] | None = None  # LM heads: (rows, cols)
    calls: dict[int, int] = field(default_factory=dict)  # dropout calls per site in this pass

    def clear(self) -> None:
        self.segments, self.stack, self.calls = [], None, {}

    def dropout(self, x: torch.Tensor, site: int, p: torch.Tensor) -> torch.Tensor:
        """``x`` (batch rows first) with each row's trial's own dropout mask at ``site``."""
        call = self.calls.get(site, 0)
        self.calls[site] = call + 1
        coords = self.coords if x.dim() >= 3 and x.shape[1] == self.width else None
        mask = keep_mask(tuple(x.shape), self.keys, site * 64 + call, coords, p, x.dtype)  # type: ignore[arg-type]
        return x * mask


def lora_hook(rows: Rows, name: str) -> Any:
    """Adds every row's trial's LoRA delta to a target layer's output."""
    a_name, b_name = f"lora.{name}.A", f"lora.{name}.B"
    site = 1_000_000 + zlib.crc32(name.encode()) % 1_000_000  # fixed across processes

    def hook(module: Any, args: tuple[Any, ...], out: torch.Tensor) -> Any:
        if not rows.segments or name not in rows.lora_names:
            return None
        fields = rows.stack.fields
        x = args[0]
        if rows.training and rows.lora_p is not None:
            x = rows.dropout(x, site, rows.lora_p)
        if rows.equal:  # [trials, rows x width, in] against each trial's A, B: one bmm each
            a = fields[a_name].index_select(0, rows.present)
            b = fields[b_name].index_select(0, rows.present)
            scaling = rows.seg_scaling.view(-1, 1, 1)  # type: ignore[union-attr]
            xs = x.reshape(len(rows.segments), -1, x.shape[-1]).to(a.dtype)
        else:  # each row gathers its trial's A [R, in] and B [out, R]
            a = fields[a_name].index_select(0, rows.slot_rows)
            b = fields[b_name].index_select(0, rows.slot_rows)
            scaling = rows.scaling.view(-1, 1, 1)  # type: ignore[union-attr]
            xs = x.reshape(x.shape[0], -1, x.shape[-1]).to(a.dtype)
        delta = torch.bmm(torch.bmm(xs, a.transpose(1, 2)), b.transpose(1, 2)) * scaling
        return out + delta.view(out.shape).to(out.dtype)

    return hook


def head_hook(rows: Rows, name: str, template: torch.nn.Module, pnames: list[str]) -> Any:
    """Replaces a head module's output: each trial's rows through its own head parameters."""
    from torch.func import functional_call, vmap

    fields = [f"head.{name}.{p}" for p in pnames]

    def one(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(template, params, (x,))

    batched = vmap(one)

    def hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
        if not rows.segments:
            return None
        if len(args) != 1 or not torch.is_tensor(args[0]):
            raise RuntimeError(f"head module {name!r} takes {len(args)} inputs; packing needs one")
        x = args[0]
        stacked = rows.stack.fields
        params = {
            p: stacked[f].index_select(0, rows.present) for p, f in zip(pnames, fields, strict=True)
        }
        s, n = len(rows.segments), rows.n_max
        if rows.equal:
            xp = x.view(s, n, *x.shape[1:])
        else:
            assert rows.dst is not None
            xp = x.new_zeros(s * n, *x.shape[1:]).index_copy(0, rows.dst, x)
            xp = xp.view(s, n, *x.shape[1:])
        y = batched(params, xp)
        y = y.reshape(s * n, *y.shape[2:])
        return y if rows.dst is None or rows.equal else y.index_select(0, rows.dst)

    return hook


def dropout_hook(rows: Rows, site: int) -> Any:
    """A base dropout layer (an identity: the base runs in eval mode) with each trial's masks."""

    def hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
        if not rows.training or not rows.segments or module.p == 0:
            return None
        p = torch.full((args[0].shape[0],), float(module.p), device=args[0].device)
        return rows.dropout(args[0], site, p)

    return hook


def pick_hook(rows: Rows) -> Any:
    def hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
        """The backbone's output at each row's prediction point only (LM heads)."""
        if rows.pick is None:
            return None
        return narrow_to(out, *rows.pick)

    return hook
