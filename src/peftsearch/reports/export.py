"""``search export``: one trial of a study, written as a directory that needs no study.

The directory holds:

- ``config.yaml``: a valid space file (``load_space`` accepts it) with every hyperparameter fixed
  to the trial's values, the one template it used, absolute model and data paths, the seed and
  the data split. ``search train config.yaml`` trains it for production; ``search run
  config.yaml`` re-runs the trial itself (same subsample, same metric on CPU).
- ``adapter_config.json``: peft's own config of the adapter (``LoraConfig`` or
  ``PromptTuningConfig``; ``.from_pretrained(dir)`` reads it). With LoRA and a soft prompt
  together, peft has no single config: the soft prompt (the outer ``PeftModel``) is the top
  ``adapter_config.json`` and the LoRA injected beneath it is ``lora/adapter_config.json``, the
  same layout ``search train`` saves the trained model in. A linear probe (neither) has no adapter
  and so no adapter config.
- ``training_args.json``: the same hyperparameters as ``transformers.TrainingArguments`` fields,
  checked by constructing one.
- ``export.json``: provenance (study, trial, values, the data's sha256) for ``search train``.
- ``README.md``: why this trial (its place on the Pareto front) and the command to train it.

Everything is written into a temporary directory beside the target and renamed into place, so a
failure leaves no half-written export.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from peftsearch import __version__
from peftsearch.errors import UserError
from peftsearch.reports.trials import front_trials, trial_params
from peftsearch.spaces import has_mask_slot, template_text

KINDS = {
    (False, False): "head",
    (True, False): "lora",
    (False, True): "prompt",
    (True, True): "lora+prompt",
}


def kind_of(params: dict[str, Any]) -> str:
    """``head`` (a linear probe), ``lora``, ``prompt`` or ``lora+prompt``."""
    return KINDS[(params["lora_r"] > 0, params["prompt_length"] > 0)]


def _find_trial(study: Any, number: int) -> Any:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        have = f"trials 0 to {len(trials) - 1}" if trials else "no trials"
        raise UserError(f"study {study.study_name!r} has no trial {number} ({have})")
    trial = match[0]
    if trial.state != TrialState.COMPLETE:
        why = trial.user_attrs.get("fail_reason") or trial.user_attrs.get("fail_note")
        raise UserError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name}"
            + (f" ({why})" if why else "")
            + "; only a COMPLETE trial can be exported"
        )
    return trial


def _template(space: dict[str, Any], trial: Any, name: str) -> Any:
    """The template the trial rendered: the study's, unless the trial recorded other text."""
    stored = space["templates"].get(name)
    ran = trial.user_attrs.get("template_text")
    if stored is not None and (ran is None or template_text(stored) == ran):
        return stored
    if ran is None:
        raise UserError(f"trial {trial.number}: template {name!r} is not recorded in the study")
    pair = len(space["data"]["text_columns"]) == 2 and " ||| " in ran
    return ran.split(" ||| ", 1) if pair else ran


def _config_yaml(
    study: Any, trial: Any, space: dict[str, Any], params: dict[str, Any], template: Any, to: Path
) -> str:
    metric = space["objectives"]["metric"]
    data = space["data"]
    config = {
        "model": space["model"],
        "data": data,
        "templates": {params["template"]: template},
        **(
            {"verbalizers": {params["verbalizer"]: _words(study, space, params)}}
            if params.get("verbalizer")
            else {}
        ),
        "params": params,
        "objectives": space["objectives"],
        "study": {
            "name": f"{study.study_name}-trial-{trial.number}",
            "seed": space["study"]["seed"],
            "n_trials": 1,
        },
        "output": "rerun",
    }
    sizes = study.user_attrs.get("data", {}).get("sizes", {})
    evaluated = sizes.get("trial_eval") or data.get("eval_size") or "all validation"
    pct = trial.user_attrs.get("trainable_pct")
    pct_text = f" ({pct:.3f}% of the base model)" if pct is not None else ""
    header = [
        f"peftsearch {__version__} export of trial {trial.number} of study {study.study_name!r}",
        f"exported {time.strftime('%Y-%m-%d %H:%M:%S')}",
        f"{metric}: {trial.values[0]:.6g} on the search's validation subsample ({evaluated} rows)",
        f"trainable parameters: {int(trial.values[1]):,}{pct_text}",
        "",
        "A complete space file: every hyperparameter is fixed to the trial's value and the one",
        "template is the trial's. Model and data paths are absolute; data.split (fractions and",
        "seed) makes the same train/validation/test rows as in the search.",
        "",
        "data.train_size and data.eval_size are the SEARCH budget: each trial trained on",
        "train_size rows and was scored on eval_size validation rows. Production training",
        "ignores them: `search train` trains on the FULL train split (params.epochs passes over",
        "it; max_steps, if set, still caps the steps) and evaluates on the TEST split, which the",
        "search never touched. The learning rates are the trial's, tuned at the search budget;",
        "the warm-up and linear decay stretch over the whole run. `search confirm SPACE --budget",
        f"full --trials {trial.number}` checks them at the full budget on other seeds (validation",
        "and test), and with --epochs E other passes; then `search train --epochs E`.",
        "",
        f"Train it:           search train {to / 'config.yaml'}",
        "Re-run the trial:   search run config.yaml  (same subsample and seed: same metric on CPU;",
        "                    writes ./rerun beside this file)",
    ]
    text = "".join(f"# {' '.join(line.splitlines())}".rstrip() + "\n" for line in header) + "\n"
    return text + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def peft_configs(params: dict[str, Any], base: str, lm_kind: str | None = None) -> dict[str, Any]:
    """peft configs the trial's adapters are built from, by sub-directory ('' = the top).

    The same arguments as :func:`peftsearch.objectives.model.build`; with both adapters the soft
    prompt is the outer model (top) and LoRA the injected part (``lora``). ``lm_kind``
    (``causal`` / ``masked``, verbalizer heads) sets the task type ``search train`` saves with.
    """
    from peft import LoraConfig, PromptTuningConfig, TaskType

    task = {
        None: TaskType.SEQ_CLS,
        "causal": TaskType.CAUSAL_LM,
        "masked": TaskType.FEATURE_EXTRACTION,
    }[lm_kind]
    out: dict[str, Any] = {}
    if params["lora_r"] > 0:
        out["lora" if params["prompt_length"] > 0 else ""] = LoraConfig(
            task_type=task,
            r=params["lora_r"],
            lora_alpha=params["lora_alpha"],
            lora_dropout=params["lora_dropout"],
            target_modules=params["target_modules"],
            base_model_name_or_path=base,
        )
    if params["prompt_length"] > 0:
        out[""] = PromptTuningConfig(
            task_type=task,
            num_virtual_tokens=params["prompt_length"],
            base_model_name_or_path=base,
        )
    return out


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
    parts = []
    if params["lora_r"]:
        parts.append("lora")
    if params["prompt_length"]:
        parts.append("prompt")
    parts.append("head")
    return {
        "groups": [{"part": part, "lr": cfg.rate(part)} for part in parts],
        "part_of_parameter": {
            "lora": "name contains 'lora_'",
            "prompt": "name contains 'prompt_encoder'",
            "head": "any other trainable parameter (the classification head)",
        },
        "weight_decay": float(params["weight_decay"]),
        "weight_decay_applies_to": "parameters with 2 or more dimensions",
    }


OPTIMIZER_SNIPPET = """```python
import json, torch
from transformers import Trainer, TrainingArguments

args = TrainingArguments(output_dir="out", **json.load(open("training_args.json")))
spec = json.load(open("optimizer.json"))
part = lambda n: "lora" if "lora_" in n else "prompt" if "prompt_encoder" in n else "head"
groups = []
for g in spec["groups"]:
    ps = [p for n, p in model.named_parameters() if p.requires_grad and part(n) == g["part"]]
    for decay in (True, False):  # weight decay on matrices only, as peftsearch
        chosen = [p for p in ps if (p.ndim >= 2) == decay]
        if chosen:
            groups.append({"params": chosen, "lr": g["lr"],
                           "weight_decay": spec["weight_decay"] if decay else 0.0})
opt = torch.optim.AdamW(groups)
trainer = Trainer(model=model, args=args, optimizers=(opt, None))  # Trainer adds the schedule
```"""


def _row(t: Any) -> dict[str, Any]:
    return {
        "trial": t.number,
        "metric": t.values[0],
        "params": int(t.values[1]),
        "pct": t.user_attrs.get("trainable_pct"),
    }


def neighbours(study: Any, trial: Any) -> dict[str, Any]:
    """The trial's place on the Pareto front: the next smaller and next larger Pareto trials,
    whether it is on the front, a trial dominating it if not, and which picks it equals."""
    from peftsearch.reports.select import pick_trial

    front = sorted(front_trials(study), key=lambda t: (t.values[1], -t.values[0], t.number))
    numbers = [t.number for t in front]
    on_front = trial.number in numbers
    params, metric = trial.values[1], trial.values[0]
    if on_front:
        i = numbers.index(trial.number)
        smaller = front[i - 1] if i > 0 else None
        larger = front[i + 1] if i + 1 < len(front) else None
    else:
        below = [t for t in front if t.values[1] <= params]
        above = [t for t in front if t.values[1] > params]
        smaller = below[-1] if below else None
        larger = above[0] if above else None
    dominated_by = None
    if not on_front:
        better = [t for t in front if t.values[0] >= metric and t.values[1] <= params]
        dominated_by = _row(max(better, key=lambda t: t.values[0])) if better else None
    picks = [how for how in ("knee", "best") if pick_trial(study, how).number == trial.number]
    return {
        "on_front": on_front,
        "front_size": len(front),
        "smaller": _row(smaller) if smaller else None,
        "larger": _row(larger) if larger else None,
        "dominated_by": dominated_by,
        "picks": picks,
    }


def _fmt(row: dict[str, Any] | None, metric: str, what: str) -> str:
    if row is None:
        return f"| {what} | none | | | |"
    pct = f"{row['pct']:.3f}%" if row["pct"] is not None else ""
    return f"| {what} | {row['trial']} | {row['metric']:.4f} | {row['params']:,} | {pct} |"


def _words(study: Any, space: dict[str, Any], params: dict[str, Any]) -> dict[str, list[str]]:
    """The label words of the trial's verbalizer: written in the space, or found by the model
    for its template (the ``auto_verbalizers`` study attribute)."""
    name, template = params["verbalizer"], params["template"]
    if name in space.get("verbalizers", {}):
        return dict(space["verbalizers"][name])
    found = (study.user_attrs.get("auto_verbalizers") or {}).get("words", {})
    if name not in found.get(template, {}):
        raise UserError(f"verbalizer {name!r} under template {template!r} is not in the study")
    return dict(found[template][name])


def _prompt_lines(study: Any, trial: Any, params: dict[str, Any]) -> list[str]:
    """The README's lines on the trial's label words (found by the model or written) and
    its few-shot demonstrations."""
    lines = []
    name = params.get("verbalizer")
    if name:
        space = study.user_attrs.get("space") or {}
        words = _words(study, space, params)
        found = name not in space.get("verbalizers", {})
        shown = "; ".join(f"{label}: {', '.join(map(repr, w))}" for label, w in words.items())
        origin = "found by the model (`verbalizers: {auto: ...}`)" if found else "written"
        lines.append(f"- verbalizer `{name}`, {origin}: {shown}")
    rows = trial.user_attrs.get("demo_rows")
    if rows:
        lines.append(
            f"- demonstrations: {params.get('n_demos')} per class in `{{demos}}`, train rows "
            f"{', '.join(map(str, rows))} (drawn with the study's seed; `search train` "
            "draws the same and saves their text in `inference.json`)"
        )
    return lines


def _readme(
    study: Any,
    trial: Any,
    params: dict[str, Any],
    template: Any,
    near: dict[str, Any],
    targs: dict[str, Any],
    to: Path,
    metric: str,
    sizes: dict[str, int],
    lm_kind: str | None = None,
) -> str:
    kind = kind_of(params)
    me = _row(trial)
    pct = f" ({me['pct']:.3f}% of the base model)" if me["pct"] is not None else ""
    if near["on_front"]:
        names = {"knee": "its knee", "best": "its most accurate trial"}
        picks = " and ".join(names[p] for p in near["picks"])
        where = f"It is on the Pareto front of {near['front_size']} trials"
        where += f", {picks}." if picks else "."
    else:
        dom = near["dominated_by"]
        where = "It is not on the Pareto front" + (
            f": trial {dom['trial']} has {metric} {dom['metric']:.4f} with {dom['params']:,} "
            "parameters."
            if dom
            else "."
        )
    from peftsearch.reports.confirmed import confirmations, full_confirmations, full_epochs

    for epochs in full_epochs(study):
        full = full_confirmations(study, epochs).get(trial.number)
        if full is None:
            continue
        (vm, vs), (tm, ts) = full.validation_mean_std, full.test_mean_std
        passes = "its own epochs" if epochs is None else f"{epochs} epochs"
        where += (
            f" At the full budget (`search confirm --budget full`, {passes}, {full.n} seed(s)): "
            f"validation {metric} {vm:.4f} +- {vs:.4f}, test {tm:.4f} +- {ts:.4f}."
        )
    mine = confirmations(study).get(trial.number)
    if mine is not None:
        where += (
            f" `search confirm` trained it on {mine.n - 1} more seed(s): {metric} "
            f"{mine.mean:.4f} +- {mine.std:.4f} over {mine.n} runs (the search's one: "
            f"{mine.search:.4f}); the picks rank confirmed trials by that mean."
        )
    adapter = {
        "head": "none: the untrained LM scores the label words (the zero-shot model)"
        if lm_kind
        else "none: a linear probe (only the classification head trains)",
        "lora": f"LoRA r={params['lora_r']}, alpha={params['lora_alpha']}",
        "prompt": f"a soft prompt of {params['prompt_length']} virtual tokens",
        "lora+prompt": f"LoRA r={params['lora_r']}, alpha={params['lora_alpha']}, plus a soft "
        f"prompt of {params['prompt_length']} virtual tokens",
    }[kind]
    files = [
        "- `config.yaml`: a complete space file, every hyperparameter fixed (the input of "
        "`search train`).",
    ]
    if kind == "lora+prompt":
        files += [
            "- `adapter_config.json`: peft's `PromptTuningConfig` of the soft prompt, the outer "
            "`PeftModel` (`PromptTuningConfig.from_pretrained(dir)`).",
            "- `lora/adapter_config.json`: peft's `LoraConfig` of the LoRA injected beneath it "
            "(`LoraConfig.from_pretrained(dir / 'lora')`). peft has no single config for both: "
            "LoRA goes in with `inject_adapter_in_model`, then `get_peft_model` adds the prompt.",
        ]
    elif kind == "head":
        what = "the zero-shot model" if lm_kind else "a linear probe"
        files.append(f"- no `adapter_config.json`: {what} has no peft adapter.")
    else:
        name = "LoraConfig" if kind == "lora" else "PromptTuningConfig"
        files.append(f"- `adapter_config.json`: peft's `{name}` (`{name}.from_pretrained(dir)`).")
    files += [
        "- `training_args.json`: the same hyperparameters as `transformers.TrainingArguments` "
        "fields: `TrainingArguments(output_dir=..., **json.load(open('training_args.json')))`.",
        "- `optimizer.json`: the peak learning rate of each part (LoRA, soft prompt, head); "
        "`training_args.json`'s `learning_rate` is the LoRA rate.",
        "- `export.json`: provenance (study, trial, values, the data's sha256).",
    ]
    template_shown = json.dumps(template, ensure_ascii=False)
    lines = [
        f"# Trial {trial.number} of study `{study.study_name}`",
        "",
        f"**{metric} {me['metric']:.4f}** on the search's validation subsample, with "
        f"**{me['params']:,} trainable parameters**{pct}. {where}",
        "",
        "| | trial | " + metric + " | trainable params | % of base |",
        "|---|---|---|---|---|",
        _fmt(near["smaller"], metric, "next smaller Pareto trial"),
        _fmt(me, metric, "**this trial**"),
        _fmt(near["larger"], metric, "next larger Pareto trial"),
        "",
        "## Configuration",
        "",
        f"- adapter: {adapter}",
        f"- template `{params['template']}`: `{template_shown}`",
        *_prompt_lines(study, trial, params),
        "- learning rates: "
        + ", ".join(f"{g['part']} {g['lr']:.4g}" for g in optimizer_groups(params)["groups"])
        + f"; batch size {params['batch_size']}, "
        f"epochs {params['epochs']}, max_steps {params['max_steps']}, weight decay "
        f"{params['weight_decay']}, warmup ratio {params['warmup_ratio']}, LoRA dropout "
        f"{params['lora_dropout']}, target modules {params['target_modules'] or 'peft default'}",
        "",
        "## Train it",
        "",
        "```bash",
        f"search train {to / 'config.yaml'}",
        "```",
        "",
        f"This trains on the full train split ({sizes.get('train', '?')} rows; the search "
        f"trained on {sizes.get('trial_train', '?')}) and reports {metric} on the test split "
        f"({sizes.get('test', '?')} rows), which the search never saw; the model goes to "
        "`model/` beside the config (`--to DIR` elsewhere, `--epochs N` to train longer).",
        "`search predict model --text '...'` uses it; `model/load.py` shows the plain "
        "transformers + peft code that loads it.",
        "",
        "## Files",
        "",
        *files,
        "- `README.md`: this file.",
        "",
        "## Notes on training_args.json",
        "",
        "- peftsearch's loop is AdamW with linear warmup and decay and gradient-norm clipping "
        "at 1.0, as below. On CUDA it autocasts to bf16 (set `bf16: true` there); on CPU it runs "
        "fp32. `bf16` is false in the file because `TrainingArguments` refuses it without a GPU.",
        f"- `warmup_steps: {targs['warmup_steps']}`: transformers 5 has no `warmup_ratio`; a "
        "float below 1 is the ratio of the total steps.",
        "- weight decay skips biases and LayerNorm weights in both.",
        "- Each part has its own peak learning rate (`optimizer.json`: "
        + ", ".join(f"{g['part']} {g['lr']:.4g}" for g in optimizer_groups(params)["groups"])
        + "); `TrainingArguments` holds one. To train with `transformers.Trainer` as "
        "peftsearch does, pass the groups as the optimizer (the linear schedule scales each "
        "group's own rate):",
        "",
        OPTIMIZER_SNIPPET,
        "",
    ]
    return "\n".join(lines)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _lm_kind(space: dict[str, Any], template: Any) -> str | None:
    """None (a classifier head), or for a verbalizer head ``masked`` when the template has a
    ``{mask}`` slot, else ``causal`` (as ``Space.lm_kind``)."""
    if space["model"].get("head", "classifier") != "verbalizer":
        return None
    return "masked" if has_mask_slot(template) else "causal"


def export_trial(study: Any, number: int, to: Path) -> Path:
    """Write trial ``number`` of ``study`` to the directory ``to`` (which must not exist).

    Returns:
        ``to``, absolute.

    Raises:
        UserError: no such trial, a trial that is not COMPLETE, a study without the recorded
            space, or ``to`` already exists.
    """
    to = Path(to).expanduser().resolve()
    trial = _find_trial(study, number)
    space = study.user_attrs.get("space")
    if not isinstance(space, dict):
        raise UserError(
            f"study {study.study_name!r} has no recorded space (made by an older peftsearch?); "
            "cannot export"
        )
    if to.exists():
        raise UserError(f"{to} already exists; remove it or choose another --to")
    params = trial_params(study, trial)
    template = _template(space, trial, params["template"])
    metric = str(space["objectives"]["metric"])
    data_attr = study.user_attrs.get("data", {})
    sizes = data_attr.get("sizes", {})
    seed = int(space["study"]["seed"])
    config_text = _config_yaml(study, trial, space, params, template, to)
    targs = training_args(params, seed, sizes.get("train"))
    lm_kind = _lm_kind(space, template)
    configs = peft_configs(params, str(space["model"]["path"]), lm_kind)
    readme = _readme(
        study, trial, params, template, neighbours(study, trial), targs, to, metric, sizes, lm_kind
    )
    provenance = {
        "study": study.study_name,
        "trial": trial.number,
        "metric": metric,
        "value": trial.values[0],
        "trainable_params": int(trial.values[1]),
        "trainable_pct": trial.user_attrs.get("trainable_pct"),
        "base_params": study.user_attrs.get("base_params"),
        "kind": kind_of(params),
        "params": params,
        "template_text": template_text(template),
        "data": data_attr,
        "versions": trial.user_attrs.get("versions"),
        "peftsearch": __version__,
        "exported_at": time.time(),
    }
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=to.parent, prefix=f".{to.name}.", suffix=".tmp"))
    try:
        (tmp / "config.yaml").write_text(config_text, encoding="utf-8")
        for sub, cfg in configs.items():
            (tmp / sub).mkdir(exist_ok=True)
            cfg.save_pretrained(str(tmp / sub))
        (tmp / "training_args.json").write_text(json.dumps(targs, indent=2) + "\n", "utf-8")
        groups = optimizer_groups(params)
        (tmp / "optimizer.json").write_text(json.dumps(groups, indent=2) + "\n", "utf-8")
        (tmp / "export.json").write_text(json.dumps(provenance, indent=2) + "\n", "utf-8")
        (tmp / "README.md").write_text(readme, encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a plain mkdir would not
        os.rename(tmp, to)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return to
