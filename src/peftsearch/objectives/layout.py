"""The packed batch: several trials' rows laid out as one input to the frozen base model.

Layout of a packed row: ``[prefix, tokens, padding]`` (right padding) or ``[padding, prefix,
tokens]`` (left padding), so a row's real columns do not move with the pack's width. The
prefix is the virtual tokens an adapter puts in front of a slot's rows (the soft prompt's
``k`` rows, attention 1, token type 0), at most one adapter's. :func:`pack_inputs` also sets
up :class:`~peftsearch.objectives.hooks.Rows` for the hooks: which stacked row, segment and
place in ``[segments, n_max]`` each batch row has, its dropout key, and each adapter's own
per-row values (:meth:`~peftsearch.objectives.adapters.Adapter.prepare`). Every per-row
quantity is a tensor op, not a loop over slots.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from peftsearch.objectives import adapters
from peftsearch.objectives import hooks as H

COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "positions")


def _concat(batches: list[dict[str, Any]], width: int, left: bool) -> dict[str, Any]:
    """The batches' columns side by side, each padded to ``width`` on the padding side."""
    cols: dict[str, Any] = {}
    for col in COLUMNS:
        if col not in batches[0]:
            continue
        if len(batches) == 1:
            cols[col] = batches[0][col]
            continue
        pieces = []
        for b in batches:
            pad = width - int(b["input_ids"].shape[1])
            if col == "positions":
                pieces.append(b[col] + pad if left else b[col])
            elif pad:
                pieces.append(F.pad(b[col], (pad, 0) if left else (0, pad)))
            else:
                pieces.append(b[col])
        cols[col] = torch.cat(pieces)
    return cols


def _read(batches: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, Any]:
    """The task's own columns (:attr:`Task.reads`) of the batches, concatenated (2-D ones
    right padded to the widest with zeros)."""
    out: dict[str, Any] = {}
    for name in names:
        if name not in batches[0]:
            continue
        pieces = [b[name] for b in batches]
        if pieces[0].dim() == 2:
            wide = max(int(p.shape[1]) for p in pieces)
            pieces = [F.pad(p, (0, wide - int(p.shape[1]))) for p in pieces]
        out[name] = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
    return out


def _prefix_adapter() -> Any:
    """The adapter that puts virtual tokens in front of the rows (None: none registered)."""
    found = [
        a
        for a in adapters.ADAPTERS.values()
        if type(a).virtual_tokens is not adapters.Adapter.virtual_tokens
    ]
    if len(found) > 1:
        raise RuntimeError(f"two adapters put tokens in front of a row: {found}")
    return found[0] if found else None


def pack_inputs(engine: Any, parts: list[Any], training: bool) -> tuple[dict[str, Any], Any, Any]:
    """The packed batch of ``parts`` (each: the slots owning its consecutive rows, and its
    batch) as keyword arguments of the base model (``inputs_embeds``, mask, token types, and
    the columns the task reads besides: :attr:`Task.reads`),
    each row's prediction column (masked LMs), and ``(segment of each row, rows per segment,
    stacked row per segment)``; :attr:`engine.rows` is set up for the hooks."""
    dev, left = engine.device, engine.left_pad
    segs = [seg for segs, _ in parts for seg in segs]
    batches = [b for _, b in parts]
    wd = max(int(b["input_ids"].shape[1]) for b in batches)
    cols = _concat(batches, wd, left)
    lengths = (
        torch.cat([b["lengths"] for b in batches]) if len(batches) > 1 else batches[0]["lengths"]
    )
    counts = torch.tensor([n for _, n in segs])
    prefix = _prefix_adapter()
    ks = torch.tensor([prefix.virtual_tokens(s) if prefix else 0 for s, _ in segs])
    k_rows = ks.repeat_interleave(counts)
    n_rows = int(counts.sum())
    width = int((k_rows + lengths).max()) if n_rows else wd
    ids, mask = cols["input_ids"], cols["attention_mask"]
    types, positions = cols.get("token_type_ids"), cols.get("positions")
    stack = engine.stack
    assert stack is not None
    present = torch.tensor([s.row for s, _ in segs])
    slot_rows = present.repeat_interleave(counts).to(dev)
    j = torch.arange(width, device=dev)
    if int(ks.max()) > 0:
        k = k_rows.to(dev).unsqueeze(1)
        length = lengths.to(dev).unsqueeze(1)
        if left:  # [padding, prefix, tokens]; the data rows are left padded to wd
            start = width - length - k
            src = j - (width - wd)
            in_tok = j >= width - length
        else:  # [prefix, tokens, padding]
            start = torch.zeros_like(k)
            src = j - k
            in_tok = (j >= k) & (j < k + length)
        in_prefix = (j >= start) & (j < start + k)
        src = src.clamp(0, wd - 1).expand(n_rows, width)
        ids = ids.gather(1, src)
        if types is not None:
            types = torch.where(in_tok, types.gather(1, src), 0)
        mask = (in_tok | in_prefix).to(mask.dtype)
        if positions is not None:
            positions = positions + (width - wd if left else k_rows.to(dev))
        embeds = engine.embed(ids)
        placed = prefix.columns(stack.fields[prefix.name], slot_rows, start, width, left)
        embeds = torch.where(in_prefix.unsqueeze(-1), placed.to(embeds.dtype), embeds)
    else:
        embeds = engine.embed(ids)
    kwargs: dict[str, Any] = {"inputs_embeds": embeds, "attention_mask": mask}
    if types is not None:
        kwargs["token_type_ids"] = types
    kwargs.update(_read(batches, engine.task.reads))
    r = _set_rows(engine, segs, counts, slot_rows, present, width, j, training)
    return kwargs, positions, (r.seg, counts.to(dev), r.present)


def _set_rows(
    engine: Any,
    segs: list[tuple[Any, int]],
    counts: torch.Tensor,
    slot_rows: torch.Tensor,
    present: torch.Tensor,
    width: int,
    j: torch.Tensor,
    training: bool,
) -> H.Rows:
    """:attr:`engine.rows` for this batch: each batch row's stacked row, segment and place in
    ``[segments, n_max]``, its dropout key, and each adapter's per-row values."""
    dev = engine.device
    n_rows = int(counts.sum())
    seg = torch.arange(len(segs)).repeat_interleave(counts)
    first = (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
    row_in = torch.arange(n_rows) - first
    n_max = int(counts.max())
    r = engine.rows
    r.segments, r.stack, r.training, r.width = segs, engine.stack, training, width
    r.slot_rows, r.present = slot_rows, present.to(dev)
    r.seg, r.n_max = seg.to(dev), n_max
    r.equal = bool((counts == n_max).all())
    r.dst = (seg * n_max + row_in).to(dev)
    r.coords = (width - 1 - j) if engine.left_pad else j
    r.keys = None
    for adapter in adapters.ADAPTERS.values():
        adapter.prepare(engine, r, segs)
    if training:
        seeds = torch.tensor([s.cfg.seed for s, _ in segs]).repeat_interleave(counts)
        steps = torch.tensor([s.step for s, _ in segs]).repeat_interleave(counts)
        r.keys = H.row_keys(seeds, steps, row_in).to(dev)
    return r
