"""The README.md written beside a model that ``search train`` saved: what it is, how it scored,
how to load it with plain transformers + peft (and with the shipped ``load.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# The layout of an adapter kind this card has no words for (one registered later): load.py
# loads whatever peft's configs and the saved weights describe.
_OTHER_LAYOUT = (
    "the files `load.py` reads: a peft adapter (`adapter_config.json`, "
    "`adapter_model.safetensors`) with any adapter saved beneath it in a sub-directory of its "
    "name, or, without `adapter_config.json`, a whole transformers model (`config.json`, "
    "`model.safetensors`) holding every trained parameter."
)

_BASE = """\
torch.manual_seed(info["seed"])
base = AutoModelForSequenceClassification.from_pretrained(
    info["base_model"], num_labels=len(info["labels"]))
"""


def _snippet(kind: str) -> str:
    """The plain transformers + peft lines that load a classifier of ``kind``."""
    if kind == "head":
        return (
            "model = AutoModelForSequenceClassification.from_pretrained(DIR)  # base + trained head"
        )
    split = _split(kind)
    if split is None:
        return "model, tokenizer, info = load_model(DIR)  # load.py, beside this"
    outer, inner = split
    if inner is None:  # the soft prompt alone
        return (
            _BASE + "model = PeftModel.from_pretrained(base, DIR)  # soft prompt + the trained head"
        )
    if outer is None:
        return (
            _BASE + f"model = PeftModel.from_pretrained(base, DIR)  # {inner.label} + the "
            "trained head (modules_to_save)"
        )
    return _BASE + (
        f"# 1. the {inner.label} beneath the soft prompt (peft has no single config for both)\n"
        f'base = inject_adapter_in_model({inner.config_class}.from_pretrained(f"{{DIR}}/'
        f'{inner.name}"), base)\n'
        f'set_peft_model_state_dict(base, load_file(f"{{DIR}}/{inner.name}/'
        'adapter_model.safetensors"))\n'
        "# 2. the soft prompt and the trained head, the outer PeftModel\n"
        "model = PeftModel.from_pretrained(base, DIR)"
    )


def _split(kind: str) -> tuple[Any, Any] | None:
    """A kind's outer adapter (the soft prompt) and the one beneath it (or alone), each None
    where absent; None for a kind of other shape (the card then says what load.py reads)."""
    from peftsearch.objectives import adapters

    try:
        used = [adapters.get(n) for n in kind.split("+")]
    except KeyError:
        return None
    outer = [a for a in used if a.outer]
    inner = [a for a in used if not a.outer]
    if len(outer) > 1 or len(inner) > 1:
        return None
    return (outer[0] if outer else None), (inner[0] if inner else None)


def _config_class(kind: str) -> str:
    """The peft config class the snippet imports (the injected adapter's; LoRA's otherwise)."""
    split = _split(kind)
    inner = split[1] if split is not None else None
    return str(inner.config_class) if inner is not None and inner.config_class else "LoraConfig"


def _describe(
    kind: str, head: str, prompt: str, alone: Callable[[Any], str], both: Callable[[Any], str]
) -> str:
    """The layout sentence of ``kind``: ``head`` (no adapter), ``prompt`` (the soft prompt
    alone), ``alone(adapter)`` (one adapter at the top) or ``both(adapter)`` (it beneath the
    soft prompt); any other shape: what load.py reads."""
    if kind == "head":
        return head
    split = _split(kind)
    if split is None:
        return _OTHER_LAYOUT
    outer, inner = split
    if inner is None:
        return prompt
    return alone(inner) if outer is None else both(inner)


def _layout(kind: str) -> str:
    """What a classifier's saved directory holds, for its ``kind``."""
    return _describe(
        kind,
        "a whole transformers model (`config.json`, `model.safetensors`): the base with "
        "its trained classification head; a linear probe has no adapter.",
        "a peft prompt-tuning adapter (`adapter_config.json`, `adapter_model.safetensors`): "
        "the soft prompt and, as `modules_to_save`, the trained classification head.",
        lambda a: (
            f"a peft {a.label} adapter (`adapter_config.json`, "
            "`adapter_model.safetensors`); the trained classification head is in it as "
            "`modules_to_save`."
        ),
        lambda a: (
            f"two peft adapters. peft has no single config for {a.label} and a soft "
            f"prompt together; training injected {a.label} into the base "
            "(`inject_adapter_in_model`) and wrapped that with a prompt-tuning `PeftModel`. So the "
            "top directory is the outer prompt-tuning adapter (`adapter_config.json`, "
            "`adapter_model.safetensors`: soft prompt + trained head), and "
            f"`{a.name}/` the {a.label} beneath it (`adapter_config.json`: its "
            f"`{a.config_class}`; `adapter_model.safetensors`: `get_peft_model_state_dict` of the "
            "injected model)."
        ),
    )


def _layout_verbalizer(kind: str, task: str) -> str:
    """What a verbalizer's saved directory holds, for its ``kind``."""
    return _describe(
        kind,
        "no adapter: the base LM untrained, with the template and verbalizer below "
        "(the zero-shot model; nothing was trained).",
        "a peft prompt-tuning adapter (`adapter_config.json` with task type "
        f"{task}, `adapter_model.safetensors`: the soft prompt).",
        lambda a: (
            f"a peft {a.label} adapter (`adapter_config.json` with task type {task}, "
            "`adapter_model.safetensors`)."
        ),
        lambda a: (
            "two peft adapters (peft has no single config for both): the top directory "
            f"is the prompt-tuning adapter (the soft prompt), `{a.name}/` the {a.label} injected "
            "beneath it (`inject_adapter_in_model`, then `get_peft_model` adds the prompt)."
        ),
    )


# Both READMEs (classifier and verbalizer) open their "Use it" section with these lines.
_USE_IT = [
    "## Use it",
    "",
    "```bash",
    "search predict DIR --text 'some text'     # with peftsearch",
    "python DIR/load.py 'some text'            # transformers + peft only",
    "```",
    "",
]


def readme(info: dict[str, Any], record: dict[str, Any]) -> str:
    if info.get("head") == "verbalizer":
        return _readme_verbalizer(info, record)
    kind, name = info["kind"], record["metric"]
    layout = _layout(kind)
    template = json.dumps(info["template"], ensure_ascii=False)
    column = info["text_columns"][0]
    render = (
        f'text = info["template"].format({column}=raw_text)'
        if isinstance(info["template"], str)
        else "first, second = (s.format(**row) for s in info['template'])  # row: both columns"
    )
    return "\n".join(
        [
            "# A model trained by `search train`",
            "",
            f"{name} on the test split: **{record[f'test_{name}']:.4f}** ({record['test_rows']} "
            f"rows the search never saw); validation {record[f'validation_{name}']:.4f}. Trained "
            f"on the full train split ({record['train_rows']} rows, {record['train_steps']} "
            f"steps), {record['trainable_params']:,} trainable parameters.",
            "",
            f"Base model: `{info['base_model']}`. Labels: {', '.join(info['labels'])}. "
            f"Template: `{template}`, rendered on the input text before tokenizing.",
            "",
            f"## Layout ({kind})",
            "",
            f"This directory is {layout} Beside it: the tokenizer; `inference.json` (base "
            "model, labels as `id2label`, template, text columns, max_length, seed); "
            "`training.json` (test and validation scores, hyperparameters, the row numbers of "
            "the train/validation/test splits); `load.py` (the loading code below, runnable).",
            "",
            *_USE_IT,
            "Plain transformers + peft, no peftsearch:",
            "",
            "```python",
            "import json, torch",
            f"from peft import {_config_class(kind)}, PeftModel, inject_adapter_in_model, "
            "set_peft_model_state_dict",
            "from safetensors.torch import load_file",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            'DIR = "path/to/this/dir"',
            'info = json.load(open(f"{DIR}/inference.json"))',
            "tokenizer = AutoTokenizer.from_pretrained(DIR)",
            _snippet(kind),
            "model.eval()",
            "",
            "raw_text = 'some text'",
            render,
            'enc = tokenizer(text, truncation=True, max_length=info["max_length"], '
            'return_tensors="pt")',
            "with torch.no_grad():",
            "    probs = model(**enc).logits.softmax(-1)[0]",
            'print(info["labels"][int(probs.argmax())], probs.tolist())',
            "```",
            "",
            "`torch.manual_seed(seed)` before loading the base makes any weight its checkpoint "
            "lacks (besides the head, which is saved) start as it did in training.",
            "",
        ]
    )


def _readme_verbalizer(info: dict[str, Any], record: dict[str, Any]) -> str:
    kind, name, lm = info["kind"], record["metric"], info["lm_kind"]
    task = "CAUSAL_LM" if lm == "causal" else "FEATURE_EXTRACTION"
    auto = "AutoModelForCausalLM" if lm == "causal" else "AutoModelForMaskedLM"
    layout = _layout_verbalizer(kind, task)
    words = "; ".join(
        f"{label}: {', '.join(json.dumps(w, ensure_ascii=False) for w in ws)}"
        for label, ws in info["label_words"].items()
    )
    where = "after the template's end" if lm == "causal" else "at the `{mask}` slot"
    template = json.dumps(info["template"], ensure_ascii=False)
    return "\n".join(
        [
            "# A prompt-based model trained by `search train` (verbalizer head)",
            "",
            f"{name} on the test split: **{record[f'test_{name}']:.4f}** ({record['test_rows']} "
            f"rows the search never saw); validation {record[f'validation_{name}']:.4f}. Trained "
            f"on the full train split ({record['train_rows']} rows, {record['train_steps']} "
            f"steps), {record['trainable_params']:,} trainable parameters; no classification "
            "head: the base model's own LM head predicts.",
            "",
            f"Base model: `{info['base_model']}` ({lm} LM). Template: `{template}`. Verbalizer "
            f"`{info['verbalizer']}`: {words}. A label's score is the mean, over its words, of "
            f"the LM's log-probability of the word's first token {where}; the label "
            "probabilities are the softmax of those scores (what training's cross-entropy saw).",
            "",
            f"## Layout ({kind})",
            "",
            f"This directory is {layout} Beside it: the tokenizer; `inference.json` (base model, "
            "labels, template, the label words and their first-token ids, soft-prompt length, "
            "padding side); `training.json` (scores, hyperparameters, the row numbers of the "
            "splits); `load.py` (the loading and scoring code, runnable).",
            "",
            *_USE_IT,
            "In Python, with transformers + peft only:",
            "",
            "```python",
            "import runpy",
            'load = runpy.run_path("DIR/load.py")',
            'model, tokenizer, info = load["load_model"]("DIR")',
            'print(load["predict_texts"](model, tokenizer, info, ["some text"]))',
            "```",
            "",
            f"`load_model` loads the base with `{auto}` and the adapters with "
            "`PeftModel.from_pretrained` (LoRA beneath a soft prompt with "
            "`inject_adapter_in_model` + `set_peft_model_state_dict`); `label_scores` puts the "
            "soft prompt in front of the tokens and counts positions over real tokens only, as "
            "training did. peft's own prompt-tuning forward numbers positions from the first "
            "column, padding included, so with left padding it scores batches a little "
            "differently: use `label_scores`, or one text at a time.",
            "",
        ]
    )
