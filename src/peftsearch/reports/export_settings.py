"""A trial's hyperparameters in the terms of the libraries ``search export`` writes them for:
peft configs (:func:`peft_configs`), ``transformers.TrainingArguments`` fields
(:func:`training_args`), the AdamW parameter groups (:func:`optimizer_groups`), and the label
words of its verbalizer (:func:`verbalizer_words`). Used by :mod:`peftsearch.reports.export`
(the files) and :mod:`peftsearch.reports.export_readme` (the README that describes them)."""

from __future__ import annotations

import math
from typing import Any

from peftsearch.errors import UserError
from peftsearch.objectives import adapters


def peft_configs(
    params: dict[str, Any], base: str, lm_kind: str | None = None, task: str | None = None
) -> dict[str, Any]:
    """peft configs the trial's adapters are built from, by sub-directory ('' = the top).

    The composition of :func:`peftsearch.objectives.adapters.peft_configs` (with both LoRA and
    a soft prompt the prompt is the outer model, the top, and LoRA the injected part, ``lora``).
    ``lm_kind`` (``causal`` / ``masked``, verbalizer heads; ``causal`` / ``seq2seq``, the
    ``task`` generate) sets the task type ``search train`` saves with.
    """
    from peftsearch.objectives import tasks

    owner = tasks.get(task) if task else tasks.for_lm_kind(lm_kind)
    out = adapters.peft_configs(params, owner.peft_task_type(lm_kind))
    for config in out.values():
        config.base_model_name_or_path = base
    return out


def generator_kind(model: dict[str, Any]) -> str:
    """``seq2seq`` when the model's config says it is an encoder-decoder, else ``causal``
    (also when the config cannot be read here: ``search train`` reads it again)."""
    from pathlib import Path

    from transformers import AutoConfig

    where, kwargs = str(model["path"]), {"trust_remote_code": bool(model.get("trust_remote_code"))}
    if where.endswith(".gguf"):
        return "causal"  # transformers reads GGUF files of decoder-only models only
    try:
        config = AutoConfig.from_pretrained(str(Path(where)), **kwargs)
    except (OSError, ValueError):
        return "causal"
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def training_args(params: dict[str, Any], seed: int, train_rows: int | None) -> dict[str, Any]:
    """The hyperparameters as ``transformers.TrainingArguments`` fields, checked by building one.

    Our loop's warmup is ``warmup_ratio`` of the steps; transformers 5 takes a ratio as a float
    ``warmup_steps`` below 1, so a ratio of exactly 1 becomes the step count of the full train
    split. bf16 stays off here (TrainingArguments refuses it without a GPU); see the README.
    """
    from transformers import TrainingArguments

    ratio = float(params["warmup_ratio"])
    warmup: float = ratio
    if ratio >= 1:
        steps = params["max_steps"]
        if steps is None:
            per_epoch = math.ceil((train_rows or params["batch_size"]) / params["batch_size"])
            steps = per_epoch * params["epochs"]
        warmup = int(steps)
    fields: dict[str, Any] = {
        "learning_rate": float(params["learning_rate"]),
        "per_device_train_batch_size": params["batch_size"],
        "num_train_epochs": float(params["epochs"]),
        "max_steps": params["max_steps"] if params["max_steps"] is not None else -1,
        "weight_decay": float(params["weight_decay"]),
        "warmup_steps": warmup,
        "lr_scheduler_type": "linear",
        "max_grad_norm": 1.0,
        "optim": "adamw_torch",
        "seed": seed,
        "bf16": False,
    }
    built = TrainingArguments(**fields)  # a renamed or removed field fails here
    out = {}
    for name in fields:
        value = getattr(built, name)
        out[name] = getattr(value, "value", value)  # enums (scheduler, optimizer) as strings
    return out


def optimizer_groups(params: dict[str, Any]) -> dict[str, Any]:
    """The AdamW parameter groups of the trial: one peak learning rate per part (what
    ``TrainingArguments`` cannot hold: it has one ``learning_rate``), with the rule that
    assigns a peft model's parameter to its part by name."""
    from peftsearch.objectives.train import TrainConfig

    cfg = TrainConfig.from_params(params, 0)
    parts = [p for a in adapters.used(params) if a.name != "head" for p in a.parts] + ["head"]
    return {
        "groups": [{"part": part, "lr": cfg.rate(part)} for part in parts],
        "part_of_parameter": {
            "lora_B": "name contains 'lora_B' (LoRA+: loraplus_lr_ratio times lora's rate)",
            "lora": "name contains 'lora_' (any other LoRA parameter)",
            "prompt": "name contains 'prompt_encoder'",
            "head": "any other trainable parameter (the classification head)",
        },
        "weight_decay": float(params["weight_decay"]),
        "weight_decay_applies_to": "parameters with 2 or more dimensions",
    }


def verbalizer_words(
    study: Any, space: dict[str, Any], params: dict[str, Any]
) -> dict[str, list[str]]:
    """The label words of the trial's verbalizer: written in the space, or found by the model
    for its template (the ``auto_verbalizers`` study attribute)."""
    name, template = params["verbalizer"], params["template"]
    if name in space.get("verbalizers", {}):
        return dict(space["verbalizers"][name])
    found = (study.user_attrs.get("auto_verbalizers") or {}).get("words", {})
    if name not in found.get(template, {}):
        raise UserError(f"verbalizer {name!r} under template {template!r} is not in the study")
    return dict(found[template][name])
