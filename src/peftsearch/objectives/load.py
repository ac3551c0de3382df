"""Load and run a model saved by `search train`: transformers + peft only, no peftsearch.

    python load.py 'a text to classify' 'another one'      # JSON lines
    python load.py 'a question to answer'                  # a generator: {"text", "output"}

or, in Python:

    from load import load_model, predict_texts
    model, tokenizer, info = load_model('path/to/this/dir')
    predict_texts(model, tokenizer, info, ['a text'])

This file is ``peftsearch/objectives/load.py``, copied verbatim into every directory that
``search train`` saves; ``search predict`` runs these same functions.
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path
from typing import Any


def load_model(model_dir: str | Path, device: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Load a model saved by ``search train``: returns (model in eval mode, tokenizer, info)."""
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    model_dir = Path(model_dir)
    info = json.loads((model_dir / "inference.json").read_text(encoding="utf-8"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = info["dtype"] if info["dtype"] == "auto" else getattr(torch, info["dtype"])
    remote = info["trust_remote_code"]
    top = (model_dir / "adapter_config.json").is_file()  # a peft adapter (else a whole model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote)
    if info.get("head") in ("verbalizer", "generator"):  # the base LM and its own head
        autos = {"masked": AutoModelForMaskedLM, "seq2seq": AutoModelForSeq2SeqLM}
        auto = autos.get(info["lm_kind"], AutoModelForCausalLM)
        where: str = info["base_model"]
        extra: dict[str, Any] = {"trust_remote_code": remote}
        if where.endswith(".gguf"):  # transformers dequantizes a GGUF file to plain weights
            where, extra["gguf_file"] = str(Path(where).parent), Path(where).name
        model: Any = auto.from_pretrained(where, dtype=dtype, **extra)
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer = None
        tokenizer.padding_side = tokenizer.truncation_side = info["padding_side"]
    elif not top:  # no adapter (a linear probe): the whole model was saved
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, dtype=dtype, trust_remote_code=remote
        )
    else:
        torch.manual_seed(info["seed"])  # weights the base checkpoint lacks: as in training
        labels = info["labels"]
        model = AutoModelForSequenceClassification.from_pretrained(
            info["base_model"],
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            dtype=dtype,
            trust_remote_code=remote,
        )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    for inner in sorted(model_dir.iterdir()):  # adapters beneath the top one (LoRA/ ...)
        if (inner / "adapter_config.json").is_file():
            model = _inject(model, inner, PeftConfig.from_pretrained(str(inner)))
    if top:
        model = PeftModel.from_pretrained(model, model_dir)
    model.to(device)
    model.eval()
    return model, tokenizer, info


def _inject(model: Any, where: Path, config: Any) -> Any:
    """An adapter saved beneath the top one (peft has no single config for LoRA beneath a soft
    prompt): inject its layers into ``model`` and load its weights."""
    from peft import inject_adapter_in_model, set_peft_model_state_dict
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
    from safetensors.torch import load_file

    model = inject_adapter_in_model(config, model)
    weights = load_file(where / "adapter_model.safetensors")
    result: Any = set_peft_model_state_dict(model, weights)
    prefix = PEFT_TYPE_TO_PREFIX_MAPPING[config.peft_type]
    missing = [k for k in result.missing_keys if prefix in k]
    if result.unexpected_keys or missing:
        bad = (result.unexpected_keys + missing)[:3]
        raise ValueError(f"the adapter weights in {where} do not fit the model: {bad}")
    return model


TRUNCATION_SIDES = ("tail", "head", "middle")


def _render(template: Any, row: dict[str, Any]) -> Any:
    # Validated templates hold {column} (and {mask}) slots only: str.format renders them.
    if isinstance(template, str):
        return template.format(**row)
    return tuple(segment.format(**row) for segment in template)


def _lengths(tokenizer: Any, rendered: list[Any]) -> list[int]:
    if rendered and isinstance(rendered[0], tuple):
        first, second = zip(*rendered, strict=True)
        args: tuple[Any, ...] = (list(first), list(second))
    else:
        args = (rendered,)
    return tokenizer(*args, truncation=False, return_length=True, verbose=False)["length"]


def fit_rows(
    template: Any,
    rows: list[dict[str, Any]],
    text_columns: list[str],
    tokenizer: Any,
    max_length: int,
    side: str = "tail",
    first: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """``rows`` with their text columns shortened, by whole tokens, so that ``template``
    rendered on each is at most ``max_length`` tokens; the template's own words, its
    ``{mask}`` and its ends are never cut. ``side``: which part of a long text goes
    (``tail``: its end, keeping the start; ``head``: its start; ``middle``: its middle).
    The columns in ``first`` (the few-shot demonstrations) are cut before the row's own
    text, from their end; then the longest text column (in tokens) is cut first. A cut can
    tokenize differently at its edge, so a row's length is measured again after each cut
    (a fast tokenizer's offsets say where each token of the text ends). Rows are cut
    together, one tokenizer call per step (one at a time was 40 % slower on SMS spam).

    Raises:
        ValueError: the template's own words (and special tokens) alone exceed
            ``max_length``, or ``side`` is unknown.
    """
    if side not in TRUNCATION_SIDES:
        raise ValueError(f"truncation side must be one of {TRUNCATION_SIDES}, got {side!r}")
    segments = [template] if isinstance(template, str) else template
    slots = {f for seg in segments for _, f, _, _ in string.Formatter().parse(seg) if f}
    first = tuple(c for c in first if c in slots)
    columns = [c for c in text_columns if c in slots]
    rows = list(rows)
    lengths = _lengths(tokenizer, [_render(template, r) for r in rows])
    todo = [i for i, n in enumerate(lengths) if n > max_length]
    for _ in range(16):
        if not todo:
            return rows
        cuts: dict[int, tuple[str, str]] = {}  # row -> (column, side)
        for i in todo:
            row = rows[i]
            demo = next((c for c in first if row.get(c)), None)
            if demo is not None:
                cuts[i] = (demo, "tail")
        wanted = [(i, c) for i in todo for c in ([cuts[i][0]] if i in cuts else columns)]
        offsets = tokenizer(
            [str(rows[i][c]) for i, c in wanted],
            add_special_tokens=False,
            return_offsets_mapping=True,
            verbose=False,
        )["offset_mapping"]
        spans = dict(zip(wanted, offsets, strict=True))
        for i in todo:
            row = dict(rows[i])
            if i not in cuts:
                cuts[i] = (max(columns, key=lambda c: len(spans[i, c])), side)
            name, how = cuts[i]
            text, cut = str(row[name]), spans[i, name]
            if not cut:
                empty = _lengths(
                    tokenizer, [_render(template, {**row, **dict.fromkeys([*columns, *first], "")})]
                )[0]
                raise ValueError(
                    f"the template's own words take {empty} tokens, more than max_length "
                    f"{max_length}: no text fits"
                )
            keep = max(0, len(cut) - max(1, lengths[i] - max_length))
            if keep == 0:
                row[name] = ""
            elif how == "tail":
                row[name] = text[: cut[keep - 1][1]]
            elif how == "head":
                row[name] = text[cut[len(cut) - keep][0] :]
            else:
                front, back = (keep + 1) // 2, keep // 2
                end = text[cut[len(cut) - back][0] :] if back else ""
                row[name] = f"{text[: cut[front - 1][1]]} {end}".rstrip()
            rows[i] = row
        again = _lengths(tokenizer, [_render(template, rows[i]) for i in todo])
        for i, n in zip(todo, again, strict=True):
            lengths[i] = n
        todo = [i for i in todo if lengths[i] > max_length]
    if todo:
        raise ValueError(f"could not fit a row into max_length {max_length} tokens")
    return rows


def fit_row(
    template: Any,
    row: dict[str, Any],
    text_columns: list[str],
    tokenizer: Any,
    max_length: int,
    side: str = "tail",
    first: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One row of :func:`fit_rows`."""
    return fit_rows(template, [row], text_columns, tokenizer, max_length, side, first)[0]


def predict_texts(
    model: Any, tokenizer: Any, info: dict[str, Any], texts: list[str], batch_size: int = 64
) -> list[dict[str, Any]]:
    """Render the template on each text and classify: [{text, label, scores {label: prob}}]
    (a generator: [{text, output}], see :func:`generate_texts`).

    With two text columns (a pair template), each text holds both, separated by a tab.
    """
    import torch

    if info.get("head") == "generator":
        return generate_texts(model, tokenizer, info, texts, batch_size)
    columns, template, labels = info["text_columns"], info["template"], info["labels"]
    masked = info.get("lm_kind") == "masked"
    rows: list[dict[str, Any]] = []
    for text in texts:
        values = text.split("\t", 1) if len(columns) == 2 else [text]
        if len(values) != len(columns):
            raise ValueError(f"{text!r}: give both {' and '.join(columns)}, separated by a tab")
        row = dict(zip(columns, values, strict=True))
        row["demos"] = info.get("demos", "")  # the {demos} slot: fixed when it was trained
        if masked:  # the {mask} slot: where a masked LM predicts the label word
            row["mask"] = tokenizer.mask_token
        rows.append(row)
    # As in training: a long text is cut, never the template's words or its {mask}.
    side = info.get("truncation", "tail")
    rows = fit_rows(template, rows, columns, tokenizer, info["max_length"], side, ("demos",))
    rendered = [_render(template, row) for row in rows]
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(rendered), batch_size):
        chunk = rendered[start : start + batch_size]
        pair = bool(chunk) and isinstance(chunk[0], tuple)
        args = ([a for a, _ in chunk], [b for _, b in chunk]) if pair else (chunk,)
        enc = tokenizer(
            *args,
            truncation=True,
            max_length=info["max_length"],
            padding=True,
            return_tensors="pt",
        )
        enc = {k: v.to(device) for k, v in enc.items()}
        with torch.no_grad():
            if info.get("head") == "verbalizer":
                logits = label_scores(model, tokenizer, info, enc)
            else:
                logits = model(**enc).logits
        probs = logits.float().softmax(-1).cpu().tolist()
        for text, p in zip(texts[start : start + batch_size], probs, strict=True):
            best = max(range(len(labels)), key=lambda i: p[i])
            out.append(
                {"text": text, "label": labels[best], "scores": dict(zip(labels, p, strict=True))}
            )
    return out


def generate_texts(
    model: Any, tokenizer: Any, info: dict[str, Any], texts: list[str], batch_size: int = 32
) -> list[dict[str, Any]]:
    """A generator (``task: generate``): render the template on each text (cut to
    ``prompt_max_length`` tokens, never the template's words) and write the answer greedily,
    at most ``max_new_tokens`` tokens, up to the first EOS: [{text, output}]."""
    import torch

    columns, template = info["text_columns"], info["template"]
    rows = []
    for text in texts:
        values = text.split("\t", 1) if len(columns) == 2 else [text]
        if len(values) != len(columns):
            raise ValueError(f"{text!r}: give both {' and '.join(columns)}, separated by a tab")
        rows.append({**dict(zip(columns, values, strict=True)), "demos": info.get("demos", "")})
    side, room = info.get("truncation", "tail"), info["prompt_max_length"]
    rows = fit_rows(template, rows, columns, tokenizer, room, side, ("demos",))
    rendered = [_render(template, row) for row in rows]
    device = next(model.parameters()).device
    eos, out = tokenizer.eos_token_id, []
    for start in range(0, len(rendered), batch_size):
        chunk = rendered[start : start + batch_size]
        enc = tokenizer(chunk, truncation=True, max_length=room, padding=True, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        greedy = {
            "max_new_tokens": info["max_new_tokens"],
            "do_sample": False,
            "num_beams": 1,
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "eos_token_id": eos,
            "pad_token_id": tokenizer.pad_token_id,
        }
        with torch.no_grad():
            if info["lm_kind"] == "causal" and info.get("prompt_length"):
                new = _prompted_generate(model, enc, greedy)
            else:  # a causal LM returns the prompt, then the new tokens; an encoder-decoder
                ids = model.generate(**enc, **greedy)  # its start token, then the new tokens
                cut = 1 if info["lm_kind"] == "seq2seq" else enc["input_ids"].shape[1]
                new = ids[:, cut:]
        for text, row in zip(texts[start : start + batch_size], new.tolist(), strict=True):
            row = row[: row.index(eos)] if eos in row else row
            output = tokenizer.decode(row, skip_special_tokens=True).strip()
            out.append({"text": text, "output": output})
    return out


def _prompted_generate(model: Any, enc: dict[str, Any], greedy: dict[str, Any]) -> Any:
    """The new tokens a causal LM with a soft prompt writes, its rows laid out as in training:
    ``[padding, prompt, tokens]``, positions counted from each row's first real column.
    (peft's own ``generate`` puts the prompt before the padding and ignores position ids, so
    a left-padded row's positions shift by its padding.) The LM beneath the prompt, with any
    LoRA injected into it, writes from these embeddings."""
    import torch

    lm = model.get_base_model()
    ids, mask = enc["input_ids"], enc["attention_mask"]
    prompt = model.get_prompt(batch_size=len(ids)).to(lm.dtype)  # [rows, k, hidden]
    tokens = lm.get_input_embeddings()(ids)
    k, width = prompt.shape[1], ids.shape[1]
    rows, masks = [], []
    for i in range(len(ids)):
        pad = width - int(mask[i].sum())  # left padding
        rows.append(torch.cat([tokens[i, :pad], prompt[i], tokens[i, pad:]]))
        masks.append(torch.cat([mask[i, :pad], mask.new_ones(k), mask[i, pad:]]))
    embeds, mask = torch.stack(rows), torch.stack(masks)
    return lm.generate(inputs_embeds=embeds, attention_mask=mask, **greedy)  # new tokens only


def label_scores(model: Any, tokenizer: Any, info: dict[str, Any], enc: dict[str, Any]) -> Any:
    """Verbalizer head: each label's score is the mean, over its words, of the LM's
    log-probability of the word's first token at the prediction point (after the template's
    end for a causal LM, at the mask token for a masked LM). The soft prompt goes in front of
    the tokens; positions count real tokens only, so left padding does not shift them."""
    import torch
    from peft import PeftModel

    lm: Any = model.get_base_model() if isinstance(model, PeftModel) else model  # LoRA inside
    ids, mask = enc["input_ids"], enc["attention_mask"]
    types = enc.get("token_type_ids")
    n, k = ids.shape[0], info["prompt_length"]
    embeds = lm.get_input_embeddings()(ids)
    if k:
        embeds = torch.cat([model.get_prompt(batch_size=n).to(embeds.dtype), embeds], 1)
        mask = torch.cat([mask.new_ones(n, k), mask], 1)
        if types is not None:
            types = torch.cat([types.new_zeros(n, k), types], 1)
    kwargs = {"inputs_embeds": embeds, "attention_mask": mask}
    if types is not None:
        kwargs["token_type_ids"] = types
    rows = torch.arange(n, device=ids.device)
    if info["lm_kind"] == "causal":
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        left = tokenizer.padding_side == "left"
        cols = torch.full_like(rows, mask.shape[1] - 1) if left else mask.sum(-1) - 1
    else:
        hits = ids == tokenizer.mask_token_id
        cut = int((~hits.any(1)).sum())
        if cut:
            raise ValueError(
                f"max_length {info['max_length']} cuts the template's {{mask}} slot off "
                f"{cut} text(s): shorten them"
            )
        cols = hits.int().argmax(1) + k

    def pick(module: Any, args: Any, out: Any) -> Any:
        """The backbone's output at the prediction points only: the LM's own head (whatever
        its modules) then runs on [rows, 1, hidden]. (The engine's ``narrow_to``, written
        out here because load.py imports nothing of peftsearch.)"""
        first = out[0][rows, cols].unsqueeze(1)
        if isinstance(out, tuple):
            return (first, *out[1:])
        out.last_hidden_state = first
        return out

    hook = lm.base_model.register_forward_hook(pick)  # base_model: the transformer, no head
    try:
        logits = lm(**kwargs).logits[:, 0]
    finally:
        hook.remove()
    logp = torch.log_softmax(logits.float(), -1)
    return torch.stack(
        [logp[:, words].mean(-1) for words in info["label_token_ids"]], -1
    )  # [rows, labels]


if __name__ == "__main__":
    from transformers.utils import logging

    logging.set_verbosity_error()
    model, tokenizer, info = load_model(Path(__file__).resolve().parent)
    for row in predict_texts(model, tokenizer, info, sys.argv[1:]):
        print(json.dumps(row, ensure_ascii=False))
