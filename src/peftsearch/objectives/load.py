"""Load and run a model saved by `search train`: transformers + peft only, no peftsearch.

    python load.py 'a text to classify' 'another one'      # JSON lines

or, in Python:

    from load import load_model, predict_texts
    model, tokenizer, info = load_model('path/to/this/dir')
    predict_texts(model, tokenizer, info, ['a text'])

This file is ``peftsearch/objectives/load.py``, copied verbatim into every directory that
``search train`` saves; ``search predict`` runs these same functions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def load_model(model_dir: str | Path, device: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Load a model saved by ``search train``: returns (model in eval mode, tokenizer, info)."""
    import torch
    from peft import LoraConfig, PeftModel, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    model_dir = Path(model_dir)
    info = json.loads((model_dir / "inference.json").read_text(encoding="utf-8"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = info["dtype"] if info["dtype"] == "auto" else getattr(torch, info["dtype"])
    remote, kind = info["trust_remote_code"], info["kind"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote)
    if info.get("head") == "verbalizer":  # the base LM's own head scores the label words
        auto = AutoModelForMaskedLM if info["lm_kind"] == "masked" else AutoModelForCausalLM
        where, extra = info["base_model"], {}
        if where.endswith(".gguf"):  # transformers dequantizes a GGUF file to plain weights
            where, extra = str(Path(where).parent), {"gguf_file": Path(where).name}
        model: Any = auto.from_pretrained(where, dtype=dtype, trust_remote_code=remote, **extra)
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer = None
        tokenizer.padding_side = tokenizer.truncation_side = info["padding_side"]
    elif kind == "head":  # a linear probe: the whole model was saved
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
    if kind == "lora+prompt":  # LoRA beneath the soft prompt: inject it, load it
        lora_dir = model_dir / "lora"
        model = inject_adapter_in_model(LoraConfig.from_pretrained(str(lora_dir)), model)
        weights = load_file(lora_dir / "adapter_model.safetensors")
        result: Any = set_peft_model_state_dict(model, weights)
        missing = [k for k in result.missing_keys if "lora_" in k]
        if result.unexpected_keys or missing:
            bad = (result.unexpected_keys + missing)[:3]
            raise ValueError(f"the LoRA weights in {lora_dir} do not fit the model: {bad}")
    if kind != "head":
        model = PeftModel.from_pretrained(model, model_dir)
    model.to(device)
    model.eval()
    return model, tokenizer, info


def predict_texts(
    model: Any, tokenizer: Any, info: dict[str, Any], texts: list[str], batch_size: int = 64
) -> list[dict[str, Any]]:
    """Render the template on each text and classify: [{text, label, scores {label: prob}}].

    With two text columns (a pair template), each text holds both, separated by a tab.
    """
    import torch

    columns, template, labels = info["text_columns"], info["template"], info["labels"]
    masked = info.get("lm_kind") == "masked"
    rendered: list[Any] = []
    for text in texts:
        values = text.split("\t", 1) if len(columns) == 2 else [text]
        if len(values) != len(columns):
            raise ValueError(f"{text!r}: give both {' and '.join(columns)}, separated by a tab")
        row = dict(zip(columns, values, strict=True))
        if masked:  # the {mask} slot: where a masked LM predicts the label word
            row["mask"] = tokenizer.mask_token
        # Validated templates hold {column} (and {mask}) slots only: str.format renders them.
        if isinstance(template, str):
            rendered.append(template.format(**row))
        else:
            rendered.append(tuple(segment.format(**row) for segment in template))
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
