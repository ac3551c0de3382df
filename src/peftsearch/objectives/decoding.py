"""Packed greedy decoding: every trial of a pack writes its answers in the same batches.

Each round takes the next chunk of every trial's rows (longest prompts first), lays them out
as training does (:func:`~peftsearch.objectives.layout.pack_inputs`: each trial's soft prompt
in front of its rows, left padding for a causal LM) and hands the packed embeddings to the
base model's own ``generate`` (greedy, the KV cache). The engine's hooks stay on for the whole
call, so every forward of it, the prompt's and each new token's, applies each row's own
trial's adapters: what a trial writes does not depend on what it was packed with
(``tests/objectives/test_generate.py`` checks it against the trial alone, on a tiny causal LM
and a tiny T5). peft's mixed-adapter ``generate(adapter_names=...)`` would do the same for
LoRA alone, not for soft prompts or the engine's stacked tensors.
"""

from __future__ import annotations

from typing import Any

import torch

from peftsearch.objectives.data import Encoded
from peftsearch.objectives.layout import pack_inputs
from peftsearch.objectives.slots import Slot


def decode(
    engine: Any, slots: list[Slot], data_of: dict[Any, Encoded], max_new_tokens: int
) -> dict[Any, list[str]]:
    """What each of ``slots`` writes for every row of its data (``data_of[key]``: its
    ``prompt`` rows when it has them), in row order, cut at the first EOS, special tokens
    dropped, stripped. The slots must hold stack rows (``evaluate`` places them)."""
    tokenizer = engine.tokenizer
    if tokenizer is None:
        raise RuntimeError("decoding needs the engine's tokenizer")
    prompts = {key: d.prompt if d.prompt is not None else d for key, d in data_of.items()}
    chunks = {}
    for s in slots:
        size = max(32, 2 * s.cfg.batch_size)
        chunks[s.key] = torch.argsort(prompts[s.key].lengths, descending=True).split(size)
    written: dict[Any, list[torch.Tensor]] = {s.key: [] for s in slots}
    rounds = max(len(c) for c in chunks.values())
    for i in range(rounds):
        parts = []
        for s in slots:
            if i < len(chunks[s.key]):
                idx = chunks[s.key][i]
                parts.append(([(s, len(idx))], engine._batch(prompts[s.key], idx)))
        out = _generate(engine, parts, max_new_tokens, tokenizer)
        sizes = [n for segs, _ in parts for _, n in segs]
        for (segs, _), rows in zip(parts, out.split(sizes), strict=True):
            written[segs[0][0].key].extend(rows)
    texts: dict[Any, list[str]] = {}
    for s in slots:
        order = torch.cat(list(chunks[s.key])).tolist()
        ids = [_until_eos(t, tokenizer.eos_token_id) for t in written[s.key]]
        decoded = tokenizer.batch_decode(ids, skip_special_tokens=True)
        ordered = [""] * len(order)
        for row, text in zip(order, decoded, strict=True):
            ordered[row] = text.strip()
        texts[s.key] = ordered
    return texts


def _generate(engine: Any, parts: list[Any], max_new_tokens: int, tokenizer: Any) -> Any:
    """The new tokens of every row of ``parts`` ([rows, new], EOS-padded), the hooks on."""
    kwargs, _, _ = pack_inputs(engine, parts, training=False)
    for name in engine.task.reads:
        kwargs.pop(name, None)
    try:
        with torch.no_grad():
            out = engine.base.generate(
                **kwargs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
    finally:
        engine.rows.clear()
    if engine.lm_kind == "seq2seq":
        return out[:, 1:]  # the decoder's start token first
    return out  # given embeddings only, a causal LM's generate returns the new tokens


def _until_eos(ids: torch.Tensor, eos: int | None) -> list[int]:
    """``ids`` up to (not including) the first EOS."""
    row = ids.tolist()
    return row[: row.index(eos)] if eos is not None and eos in row else row
