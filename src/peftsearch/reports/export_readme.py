"""The ``README.md`` of a ``search export`` directory: why this trial (its place on the Pareto
front and any confirmations), its configuration, how to train it, the files beside it, and how
``training_args.json`` and ``optimizer.json`` map onto ``transformers.Trainer``.

:func:`_readme` assembles the sections below in the order they appear in the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftsearch.objectives import adapters
from peftsearch.reports.confirmed import confirmations, full_confirmations, full_epochs
from peftsearch.reports.export_settings import optimizer_groups, peft_configs, verbalizer_words
from peftsearch.reports.select import pick_trial
from peftsearch.reports.trials import front_trials

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


def _front_place(near: dict[str, Any], metric: str) -> str:
    """Whether the trial is on the Pareto front (and which picks it is), or what dominates it."""
    if near["on_front"]:
        names = {"knee": "its knee", "best": "its most accurate trial"}
        picks = " and ".join(names[p] for p in near["picks"])
        where = f"It is on the Pareto front of {near['front_size']} trials"
        return where + (f", {picks}." if picks else ".")
    dom = near["dominated_by"]
    return "It is not on the Pareto front" + (
        f": trial {dom['trial']} has {metric} {dom['metric']:.4f} with {dom['params']:,} "
        "parameters."
        if dom
        else "."
    )


def _confirmed(study: Any, trial: Any, metric: str) -> str:
    """What ``search confirm`` measured of the trial: at the full budget (per number of
    epochs), and on more seeds at the search budget; empty if it never ran on this trial."""
    text = ""
    for epochs in full_epochs(study):
        full = full_confirmations(study, epochs).get(trial.number)
        if full is None:
            continue
        (vm, vs), (tm, ts) = full.validation_mean_std, full.test_mean_std
        passes = "its own epochs" if epochs is None else f"{epochs} epochs"
        text += (
            f" At the full budget (`search confirm --budget full`, {passes}, {full.n} seed(s)): "
            f"validation {metric} {vm:.4f} +- {vs:.4f}, test {tm:.4f} +- {ts:.4f}."
        )
    mine = confirmations(study).get(trial.number)
    if mine is not None:
        text += (
            f" `search confirm` trained it on {mine.n - 1} more seed(s): {metric} "
            f"{mine.mean:.4f} +- {mine.std:.4f} over {mine.n} runs (the search's one: "
            f"{mine.search:.4f}); the picks rank confirmed trials by that mean."
        )
    return text


def _why_this_trial(study: Any, trial: Any, near: dict[str, Any], metric: str) -> list[str]:
    """The title, the trial's metric and size with its place on the front, and the table of
    it beside its Pareto neighbours."""
    me = _row(trial)
    pct = f" ({me['pct']:.3f}% of the base model)" if me["pct"] is not None else ""
    where = _front_place(near, metric) + _confirmed(study, trial, metric)
    return [
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
    ]


def _adapter_phrase(params: dict[str, Any], lm_kind: str | None) -> str:
    """What the trial trains, in the words of each of its adapters."""
    phrases = [a.describe(params) for a in adapters.used(params) if a.in_kind]
    if not phrases:
        if lm_kind:
            return "none: the untrained LM scores the label words (the zero-shot model)"
        return "none: a linear probe (only the classification head trains)"
    return ", plus ".join(phrases)


def _prompt_lines(study: Any, trial: Any, params: dict[str, Any]) -> list[str]:
    """The README's lines on the trial's label words (found by the model or written) and
    its few-shot demonstrations."""
    lines = []
    name = params.get("verbalizer")
    if name:
        space = study.user_attrs.get("space") or {}
        words = verbalizer_words(study, space, params)
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


def _rates(params: dict[str, Any]) -> str:
    """The peak learning rate of each part, as ``lora 0.01, head 0.02``."""
    return ", ".join(f"{g['part']} {g['lr']:.4g}" for g in optimizer_groups(params)["groups"])


def _configuration(
    study: Any, trial: Any, params: dict[str, Any], template: Any, lm_kind: str | None
) -> list[str]:
    """The adapter, the template, the label words and demonstrations, and the other
    hyperparameters."""
    template_shown = json.dumps(template, ensure_ascii=False)
    return [
        "## Configuration",
        "",
        f"- adapter: {_adapter_phrase(params, lm_kind)}",
        f"- template `{params['template']}`: `{template_shown}`",
        *_prompt_lines(study, trial, params),
        "- learning rates: " + _rates(params) + f"; batch size {params['batch_size']}, "
        f"epochs {params['epochs']}, max_steps {params['max_steps']}, weight decay "
        f"{params['weight_decay']}, warmup ratio {params['warmup_ratio']}, LoRA dropout "
        f"{params['lora_dropout']}, target modules {params['target_modules'] or 'peft default'}",
    ]


def _train_it(to: Path, metric: str, sizes: dict[str, int]) -> list[str]:
    """The command that trains the trial for production, and what it trains on and writes."""
    return [
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
    ]


def _adapter_files(params: dict[str, Any], lm_kind: str | None) -> list[str]:
    """The README lines of the peft config files (the top one and those beneath it)."""
    configs = peft_configs(params, "", lm_kind)
    if not configs:
        what = "the zero-shot model" if lm_kind else "a linear probe"
        return [f"- no `adapter_config.json`: {what} has no peft adapter."]
    top = type(configs[""]).__name__
    inner = {d: c for d, c in configs.items() if d}
    if not inner:
        return [f"- `adapter_config.json`: peft's `{top}` (`{top}.from_pretrained(dir)`)."]
    outer = next(a for a in adapters.used(params) if a.outer)
    lines = [
        f"- `adapter_config.json`: peft's `{top}` of the {outer.label}, the outer "
        f"`PeftModel` (`{top}.from_pretrained(dir)`)."
    ]
    for d, config in inner.items():
        name, label = type(config).__name__, adapters.get(d).label
        lines.append(
            f"- `{d}/adapter_config.json`: peft's `{name}` of the {label} injected beneath it "
            f"(`{name}.from_pretrained(dir / '{d}')`). peft has no single config for both: "
            f"{label} goes in with `inject_adapter_in_model`, then `get_peft_model` adds the "
            f"{outer.name}."
        )
    return lines


def _files(params: dict[str, Any], lm_kind: str | None) -> list[str]:
    """Each file of the export directory and what it holds."""
    return [
        "## Files",
        "",
        "- `config.yaml`: a complete space file, every hyperparameter fixed (the input of "
        "`search train`).",
        *_adapter_files(params, lm_kind),
        "- `training_args.json`: the same hyperparameters as `transformers.TrainingArguments` "
        "fields: `TrainingArguments(output_dir=..., **json.load(open('training_args.json')))`.",
        "- `optimizer.json`: the peak learning rate of each part (LoRA, soft prompt, head); "
        "`training_args.json`'s `learning_rate` is the LoRA rate.",
        "- `export.json`: provenance (study, trial, values, the data's sha256).",
        "- `README.md`: this file.",
    ]


def _training_notes(params: dict[str, Any], targs: dict[str, Any]) -> list[str]:
    """How ``training_args.json`` differs from peftsearch's loop, and the code that trains
    with ``transformers.Trainer`` and the per-part learning rates of ``optimizer.json``."""
    return [
        "## Notes on training_args.json",
        "",
        "- peftsearch's loop is AdamW with linear warmup and decay and gradient-norm clipping "
        "at 1.0, as below. On CUDA it autocasts to bf16 (set `bf16: true` there); on CPU it runs "
        "fp32. `bf16` is false in the file because `TrainingArguments` refuses it without a GPU.",
        f"- `warmup_steps: {targs['warmup_steps']}`: transformers 5 has no `warmup_ratio`; a "
        "float below 1 is the ratio of the total steps.",
        "- weight decay skips biases and LayerNorm weights in both.",
        "- Each part has its own peak learning rate (`optimizer.json`: "
        + _rates(params)
        + "); `TrainingArguments` holds one. To train with `transformers.Trainer` as "
        "peftsearch does, pass the groups as the optimizer (the linear schedule scales each "
        "group's own rate):",
        "",
        OPTIMIZER_SNIPPET,
    ]


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
    """The README: its sections, a blank line between each, ending in a newline."""
    sections = [
        _why_this_trial(study, trial, near, metric),
        _configuration(study, trial, params, template, lm_kind),
        _train_it(to, metric, sizes),
        _files(params, lm_kind),
        _training_notes(params, targs),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"
