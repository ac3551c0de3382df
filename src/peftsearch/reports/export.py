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

The README's text is built in :mod:`peftsearch.reports.export_readme`, and the peft and
transformers settings (``peft_configs``, ``training_args``, ``optimizer_groups``) in
:mod:`peftsearch.reports.export_settings`; both are importable from here as before.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from peftsearch import __version__
from peftsearch.errors import UserError
from peftsearch.objectives import adapters
from peftsearch.objectives.trial import TrialConfig
from peftsearch.reports.export_readme import OPTIMIZER_SNIPPET, _readme, neighbours
from peftsearch.reports.export_settings import (
    generator_kind,
    optimizer_groups,
    peft_configs,
    training_args,
    verbalizer_words,
)
from peftsearch.reports.trials import front_trials, trial_params
from peftsearch.spaces import has_mask_slot, template_text

__all__ = [
    "OPTIMIZER_SNIPPET",
    "export_trial",
    "front_trials",
    "neighbours",
    "optimizer_groups",
    "peft_configs",
    "trial_params",
    "training_args",
]


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
            {"verbalizers": {params["verbalizer"]: verbalizer_words(study, space, params)}}
            if params.get("verbalizer")
            else {}
        ),
        "params": adapters.own_params(params),
        "objectives": space["objectives"],
        "study": {
            "name": f"{study.study_name}-trial-{trial.number}",
            "seed": space["study"]["seed"],
            "n_trials": 1,
        },
        "output": "rerun",
        **({"task": space["task"]} if space.get("task") else {}),
        **({"generation": space["generation"]} if _generates(space) else {}),
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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _generates(space: dict[str, Any]) -> bool:
    return bool(space["model"].get("head") == "generator" and space.get("generation"))


def _lm_kind(space: dict[str, Any], template: Any) -> str | None:
    """None (a classifier head), or for a verbalizer head ``masked`` when the template has a
    ``{mask}`` slot, else ``causal`` (as ``Space.lm_kind``); for a generator ``seq2seq`` or
    ``causal``, as the model's config says."""
    head = space["model"].get("head", "classifier")
    if head == "generator":
        return generator_kind(space["model"])
    if head != "verbalizer":
        return None
    return "masked" if has_mask_slot(template) else "causal"


def _provenance(
    study: Any,
    trial: Any,
    params: TrialConfig,
    template: Any,
    metric: str,
    data_attr: dict[str, Any],
) -> dict[str, Any]:
    """The content of ``export.json``: the study, the trial and its values, the data's
    provenance and the versions, for ``search train``."""
    return {
        "study": study.study_name,
        "trial": trial.number,
        "metric": metric,
        "value": trial.values[0],
        "trainable_params": int(trial.values[1]),
        "trainable_pct": trial.user_attrs.get("trainable_pct"),
        "base_params": study.user_attrs.get("base_params"),
        "kind": params.kind,
        "params": dict(params),
        "template_text": template_text(template),
        "data": data_attr,
        "versions": trial.user_attrs.get("versions"),
        "peftsearch": __version__,
        "exported_at": time.time(),
    }


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
    configs = peft_configs(params, str(space["model"]["path"]), lm_kind, space.get("task"))
    readme = _readme(
        study, trial, params, template, neighbours(study, trial), targs, to, metric, sizes, lm_kind
    )
    provenance = _provenance(study, trial, params, template, metric, data_attr)
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
