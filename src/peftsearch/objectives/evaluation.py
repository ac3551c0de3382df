"""Evaluation in the packed engine: every slot's eval (or test) rows in the same batches, the
task's scores, loss and predictions per slot."""

from __future__ import annotations

import time
from typing import Any

import torch

from peftsearch.objectives.data import Encoded
from peftsearch.objectives.slots import Part, Slot
from peftsearch.objectives.train import EvalResult, autocast


def class_scores(engine: Any, slot: Slot, data: Encoded, batch_size: int = 64) -> torch.Tensor:
    """The class scores (what the cross-entropy sees) of ``slot`` on every row of
    ``data``, in row order, on the CPU; in the model's own dtype, no bf16 autocast (what
    a plain load of the saved adapters computes)."""
    out = []
    with torch.no_grad():
        for idx in torch.arange(len(data)).split(batch_size):
            batch = engine._batch(data, idx)
            out.append(engine._forward([(slot, batch)]).float().cpu())
    return torch.cat(out)


def evaluate(engine: Any, slots: list[Slot], split: str = "eval") -> dict[Any, EvalResult]:
    """Predictions (argmax; written text for a task that decodes) and mean loss of each slot
    on its eval data (``split`` "test": its ``test_data``), all slots in the same batches,
    each in sorted-length chunks of its eval batch size."""
    start = time.perf_counter()
    data_of: dict[Any, Encoded] = {}
    for s in slots:
        data = s.eval_data if split == "eval" else s.test_data
        if data is None:
            raise ValueError(f"slot {s.key!r} has no {split} data")
        data_of[s.key] = data
    chunks = {}
    for s in slots:
        size = max(64, 2 * s.cfg.batch_size)
        chunks[s.key] = torch.argsort(data_of[s.key].lengths, descending=True).split(size)
    preds: dict[Any, list[Any]] = {s.key: [] for s in slots}
    texts: dict[Any, list[str]] = {}
    loss_sum = {s.key: 0.0 for s in slots}
    sums: list[tuple[list[Slot], torch.Tensor]] = []
    rounds = max(len(c) for c in chunks.values())
    temp = [s for s in slots if s.row is None]
    engine._place(temp, live=False)
    try:
        with torch.no_grad(), autocast(engine.device):
            for i in range(rounds):
                parts: list[Part] = []
                for s in slots:
                    if i < len(chunks[s.key]):
                        b = engine._batch(data_of[s.key], chunks[s.key][i])
                        parts.append(([(s, len(chunks[s.key][i]))], b))
                logits, (seg, counts, _) = engine._forward_parts(parts, training=False)
                logits = logits.float()
                labels = torch.cat([b["labels"] for _, b in parts])
                ce = engine.task.loss(logits, labels).double()
                per = torch.zeros(len(parts), dtype=torch.float64, device=ce.device)
                sums.append(([seg_[0][0] for seg_, _ in parts], per.index_add_(0, seg, ce)))
                picked = (
                    engine.task.predict(logits).cpu().split([len(p[1]["labels"]) for p in parts])
                )
                for (segs_, _), pr in zip(parts, picked, strict=True):
                    preds[segs_[0][0].key].append(pr)
        if engine.task.decodes:  # what each trial writes, all trials in the same batches
            from peftsearch.objectives.decoding import decode

            texts = decode(engine, slots, data_of, engine.max_new_tokens)
    finally:
        for s in temp:
            engine._release(s, keep=False)
    for owners, per in sums:  # one host sync per round, after all rounds ran
        for s, value in zip(owners, per.tolist(), strict=True):
            loss_sum[s.key] += value
    seconds = time.perf_counter() - start
    out = {}
    for s in slots:
        order = torch.cat(list(chunks[s.key]))
        ordered = torch.empty(len(data_of[s.key]), dtype=torch.long)
        ordered[order] = torch.cat(preds[s.key])
        loss = loss_sum[s.key] / max(1, len(data_of[s.key]))
        predictions = texts[s.key] if engine.task.decodes else ordered.tolist()
        out[s.key] = EvalResult(predictions, loss, seconds)
    return out
