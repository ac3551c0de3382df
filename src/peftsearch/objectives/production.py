"""``search train`` and ``search predict``: an exported trial, trained for production and used.

:func:`train_exported` reads the ``config.yaml`` that ``search export`` wrote, makes the same
split the search made (same seed, so the test rows are the ones the search never touched), trains
the configuration on the FULL train split with the search's own build and train loop, scores the
test split, and saves a directory that plain ``transformers`` + ``peft`` code loads, no peftsearch
import needed. The saved layout, by adapter:

==============  ==================================================================================
kind            files (besides the tokenizer, ``inference.json``, ``training.json``, ``load.py``)
==============  ==================================================================================
``lora``        ``adapter_config.json`` + ``adapter_model.safetensors``: a peft LoRA adapter (its
                ``modules_to_save`` hold the trained classification head)
``prompt``      the same for a peft prompt-tuning adapter (soft prompt + head)
``lora+prompt`` the top directory is the outer prompt-tuning adapter (soft prompt + head);
                ``lora/`` holds the LoRA injected beneath it, in peft's format
                (``LoraConfig`` + ``get_peft_model_state_dict`` weights)
``head``        a whole ``transformers`` model (base + trained head): a linear probe has no adapter
==============  ==================================================================================

Loading (:func:`load_model`, in :mod:`peftsearch.objectives.load`, which is copied verbatim as
``load.py`` into the saved directory): base model
-> for ``lora+prompt``, ``inject_adapter_in_model(LoraConfig.from_pretrained(dir/lora))`` and
``set_peft_model_state_dict`` -> ``PeftModel.from_pretrained(base, dir)``. :func:`load_model`,
:func:`predict_texts` and :func:`label_scores` import nothing of peftsearch, so ``load.py`` is
that module's file verbatim, and :func:`predict` runs exactly the code a user's script runs.

Verbalizer heads (``model.head: verbalizer``) train with the search's own engine (one slot: the
same loop, dropout and label-word scoring as its trials) and are saved in the same layout, as
peft adapters of the base LM with task type ``CAUSAL_LM`` (causal) or ``FEATURE_EXTRACTION``
(masked), no head in them; ``head`` there is the zero-shot model (no adapter, nothing saved but
the tokenizer and ``inference.json``). :func:`label_scores` does the scoring at prediction. Every
save is loaded back the plain way and must predict what the trained model predicts on up to 16
test rows (probability gap at most 1e-4), or nothing is written.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftsearch.errors import TrialFailed, UserError
from peftsearch.objectives.checkpoint import DEFAULT_EVERY, Checkpoint
from peftsearch.objectives.load import label_scores, load_model, predict_texts
from peftsearch.objectives.model_card import readme

FORMAT = "peftsearch-model/1"


# -- training -------------------------------------------------------------------------------------


def _fixed_params(space: Any) -> dict[str, Any]:
    from peftsearch.spaces import CategoricalDist, FloatDist, IntDist

    params = space.search_params()
    for name, spec in params.items():
        if isinstance(spec, CategoricalDist | FloatDist | IntDist):
            raise UserError(
                f"{space.file}: params.{name}: `search train` needs fixed values, this is a "
                "distribution; write a config with `search export` (or fix it by hand)"
            )
    modules = params.get("target_modules")
    if isinstance(modules, str):
        params["target_modules"] = [m.strip() for m in modules.split(",") if m.strip()]
    return params


def _check_provenance(config: Path, record: dict[str, Any]) -> None:
    """Warn when the data differ from what the exported study searched on."""
    path = config.parent / "export.json"
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8")).get("data") or {}
    except (OSError, ValueError):
        return
    want, have = data.get("sha256"), record.get("sha256")
    sizes = data.get("sizes") or {}
    if (want and have and want != have) or (
        sizes and sizes.get("test") not in (None, record["sizes"]["test"])
    ):
        print(
            f"warning: {config}: the data differ from those the study searched on "
            "(sha256 or split sizes changed); the test split may hold rows the search saw",
            file=sys.stderr,
        )


def train_exported(
    config: Path,
    epochs: int | None = None,
    to: Path | None = None,
    quiet: bool = False,
    checkpoint_every: int = DEFAULT_EVERY,
) -> dict[str, Any]:
    """Train an exported configuration on the full train split; score it on the test split.

    Args:
        config: the ``config.yaml`` of ``search export`` (any space file with fixed params).
        epochs: passes over the full train split instead of the config's (clears max_steps).
        to: where to save; default ``model/`` beside the config. It must not exist yet.
        quiet: no step progress on stderr.
        checkpoint_every: write a checkpoint every N steps (and on Ctrl-C) beside ``to``
            (``model.checkpoint/``), resumed by the same call; 0: none. Both heads: a
            verbalizer head's checkpoint is the search engine's snapshot of its one slot.

    Returns:
        metric name, test metric, validation metric, row counts, steps, seconds, saved path.

    Raises:
        UserError: a bad config, a searched (not fixed) parameter, data or model problems, or
            ``to`` already exists.
    """
    from peftsearch.objectives.data import load_splits
    from peftsearch.objectives.metrics import check_metric, load_metric, score
    from peftsearch.objectives.model import pick_device
    from peftsearch.objectives.runner import versions
    from peftsearch.reports.export import kind_of
    from peftsearch.spaces import load_space, template_text

    if checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be 0 (none) or more, got {checkpoint_every}")
    script = load_py()  # now, before a long training run: the source file can change later
    config = Path(config).expanduser().resolve()
    overrides = {"params.epochs": epochs, "params.max_steps": None} if epochs is not None else {}
    space = load_space(config, overrides)
    params = _fixed_params(space)
    file = str(space.file)
    target = Path(to).expanduser().resolve() if to is not None else config.parent / "model"
    if target.exists():
        raise UserError(f"{target} already exists; remove it or choose another --to")
    template = space.templates[params["template"]]
    labels, seed = list(space.data.labels), space.study.seed
    objectives = space.objectives
    metric = load_metric(objectives.metric, file)
    check_metric(metric, objectives.metric, objectives.metric_kwargs, len(labels), file)

    splits = load_splits(space)
    _check_provenance(config, splits.record)
    device = pick_device(space.model.device)
    kind = kind_of(params)
    info: dict[str, Any] = {
        "format": FORMAT,
        "kind": kind,
        "head": space.model.head,
        "base_model": space.model.path,
        "dtype": space.model.dtype,
        "trust_remote_code": space.model.trust_remote_code,
        "seed": seed,
        "labels": labels,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "template": template,
        "text_columns": list(space.data.text_columns),
        "max_length": space.model.max_length,
        "truncation": space.data.truncation,  # only a text is cut, never the template's words
    }
    probe = [_as_text(r, space.data.text_columns) for r in splits.test.head(16).to_dict("records")]
    identity = {
        "params": params,
        "train_rows": len(splits.train),
        "data_sha256": splits.record["sha256"],
    }
    ck = Checkpoint.beside(target, config, identity, checkpoint_every) if checkpoint_every else None
    progress = None if quiet else TrainProgress()
    try:
        if space.lm_kind is None:
            trained = _train_classifier(space, params, splits, device, progress, info, probe, ck)
        else:
            trained = _train_verbalizer(space, params, splits, device, progress, info, probe, ck)
    except TrialFailed as exc:  # a non-finite loss, out of memory
        raise UserError(f"{config}: training failed: {exc}") from None
    finally:
        if progress is not None:
            progress.close()
    info.update(trained.info)
    scores = {
        split: score(
            metric,
            objectives.metric,
            preds,
            getattr(splits, split)["label"].tolist(),
            **objectives.metric_kwargs,
        )
        for split, preds in trained.predictions.items()
    }
    cfg, stats = trained.cfg, trained.stats
    name = objectives.metric
    summary: dict[str, Any] = {
        "metric": name,
        f"test_{name}": round(scores["test"], 6),
        f"validation_{name}": round(scores["validation"], 6),
        "test_rows": len(splits.test),
        "train_rows": len(splits.train) - len(info.get("demo_rows", [])),
        **({"epochs": cfg.epochs} if cfg.max_steps is None else {"max_steps": cfg.max_steps}),
        "train_steps": stats.steps,
        "trainable_params": trained.trainable,
        "train_seconds": round(stats.seconds, 2),
    }
    record = {
        **summary,
        "params": params,
        "template_text": template_text(template),
        "base_params": trained.base_params,
        "device": str(device),
        "data": {
            "source": splits.record["source"],
            "sha256": splits.record["sha256"],
            "split": splits.record["split"],
            "sizes": splits.summary(),
            "rows": {k: splits.record["rows"][k] for k in ("train", "validation", "test")},
        },
        "config": str(config),
        "versions": versions(),
        "trained_at": time.time(),
    }
    _save(trained, info, record, target, probe, str(device), script)
    if ck is not None:
        ck.remove()  # the model is saved: nothing to resume
    summary["saved"] = str(target)
    return summary


def _prompt_inputs(
    space: Any, params: dict[str, Any], splits: Any, tokenizer: Any, info: dict[str, Any]
) -> dict[str, Any]:
    """``encode``'s keyword arguments for this configuration: the truncation side and the
    ``{demos}`` text, drawn as the search's trials draw it; both go into ``info``
    (``inference.json``), so a saved model predicts on the layout it was trained on."""
    from peftsearch.objectives import demos

    text, rows = demos.for_params(space, params, splits.train, tokenizer)
    info["demos"] = text
    if rows:
        info["demo_rows"] = rows
    return {"truncation": space.data.truncation, "demos": text}


def _trained_rows(splits: Any, info: dict[str, Any]) -> Any:
    """The train split less the rows shown as demonstrations (as in the search's trials)."""
    from peftsearch.objectives import demos

    return demos.without(splits.train, info.get("demo_rows", []))


@dataclass
class _Trained:
    """A trained configuration, whichever head: what :func:`train_exported` reports and saves."""

    tokenizer: Any
    cfg: Any  # TrainConfig
    stats: Any  # TrainStats
    trainable: int
    base_params: int
    predictions: dict[str, list[int]]  # validation and test, argmax per row
    write: Callable[[Path], None]  # writes the trained weights into a directory
    want: list[dict[str, Any]]  # the trained model's own predictions of the probe texts
    info: dict[str, Any] = field(default_factory=dict)  # what inference.json adds for this head


class TrainProgress:
    """``search train``'s progress on stderr: a rich bar (step, train loss, elapsed, ETA) on a
    terminal; otherwise (a log file, CI) one line per tenth of the run with the same fields."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None
        self._start = time.perf_counter()
        self._first: int | None = None  # the first step this process ran (after a resume)

    def __call__(self, step: int, total: int, loss: float | None = None) -> None:
        if not total:  # nothing trains (zero-shot)
            return
        if self._first is None:
            self._first, self._start = step - 1, time.perf_counter()
        if sys.stderr.isatty():
            self._rich(step, total, loss)
            return
        every = max(1, total // 10)
        if step % every == 0 or step == total:
            done = step - self._first
            spent = time.perf_counter() - self._start
            eta = spent / done * (total - step) if done else 0.0
            shown = "-" if loss is None else f"{loss:.4f}"
            print(
                f"step {step}/{total}  loss {shown}  {spent:.0f} s, about {eta:.0f} s left",
                file=sys.stderr,
                flush=True,
            )

    def _rich(self, step: int, total: int, loss: float | None) -> None:
        from peftsearch.logs import step_bar

        if self._bar is None:
            self._bar = step_bar("training", "loss {task.fields[loss]}")
            self._bar.start()
            self._task = self._bar.add_task("train", total=total, completed=step - 1, loss="-")
        shown = "-" if loss is None else f"{loss:.4f}"
        self._bar.update(self._task, completed=step, loss=shown)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _frozen_base(space: Any, device: Any) -> tuple[Any, Any, int]:
    """The base model (a classifier, or the LM for a verbalizer head) on ``device``, frozen,
    with its tokenizer and parameter count."""
    from peftsearch.objectives.model import count_params, load_base

    seed, file = space.study.seed, str(space.file)
    base, tokenizer = load_base(space.model, len(space.data.labels), seed, file, space.lm_kind)
    base.to(device)
    base.requires_grad_(False)
    return base, tokenizer, count_params(base, trainable=False)


def _train_classifier(
    space: Any,
    params: dict[str, Any],
    splits: Any,
    device: Any,
    on_step: Callable[..., None] | None,
    info: dict[str, Any],
    probe: list[str],
    checkpoint: Checkpoint | None = None,
) -> _Trained:
    """A new classification head: peft's own model (:func:`~peftsearch.objectives.model.build`)
    trained by the plain loop; tests check that it trains as the search's engine does."""
    import torch

    from peftsearch.objectives.data import encode
    from peftsearch.objectives.model import (
        PeftPlan,
        build,
        count_params,
        lead_token,
        vocab_prompt,
    )
    from peftsearch.objectives.train import TrainConfig, evaluate_model, train
    from peftsearch.reports.export import kind_of

    seed = space.study.seed
    template = space.templates[params["template"]]
    base, tokenizer, base_params = _frozen_base(space, device)
    torch.manual_seed(seed)  # as TrialRunner: adapter init and dropout follow the seed
    plan = PeftPlan.from_params(params)
    model = build(base, plan)  # a copy: the base can go
    del base
    trainable = count_params(model)
    model.to(device)
    cols = (tokenizer, space.model.max_length, space.data.text_columns)
    how = _prompt_inputs(space, params, splits, tokenizer, info)
    train_data = encode(_trained_rows(splits, info), template, *cols, **how)
    if plan.prompt_length and plan.prompt_init == "vocab":  # as the engine starts a prompt
        (weight,) = [p for n, p in model.named_parameters() if "prompt_encoder" in n]
        gen = torch.Generator().manual_seed(seed)
        rows = vocab_prompt(
            model.get_input_embeddings().weight,
            train_data,
            set(tokenizer.all_special_ids),
            plan.prompt_length,
            gen,
            lead_token(train_data),
        )
        with torch.no_grad():
            weight.copy_(rows.to(weight.dtype))
    cfg = TrainConfig.from_params(params, seed)
    left = tokenizer.padding_side == "left"
    stats = train(model, train_data, cfg, device, left, on_step, checkpoint)
    del train_data
    predictions = {}
    for split in ("validation", "test"):
        enc = encode(getattr(splits, split), template, *cols, **how)
        result = evaluate_model(model, enc, device, max(64, 2 * cfg.batch_size), left)
        predictions[split] = result.predictions

    def write(into: Path) -> None:
        kind = kind_of(params)
        if kind == "head":
            labels = list(space.data.labels)
            model.config.id2label = dict(enumerate(labels))
            model.config.label2id = {n: i for i, n in enumerate(labels)}
        model.save_pretrained(into)  # the outer PeftModel (adapter + head), or the probe
        if kind == "lora+prompt":
            _save_injected_lora(model, into / "lora", space.model.path)

    want = predict_texts(model, tokenizer, info, probe)
    return _Trained(tokenizer, cfg, stats, trainable, base_params, predictions, write, want)


def _train_verbalizer(
    space: Any,
    params: dict[str, Any],
    splits: Any,
    device: Any,
    on_step: Callable[..., None] | None,
    info: dict[str, Any],
    probe: list[str],
    checkpoint: Checkpoint | None = None,
) -> _Trained:
    """The LM's own head scores label words: trained by the search's engine with one slot
    (the same loop, dropout and scoring as its trials), then written as plain peft adapters.
    ``checkpoint``: the engine's :meth:`~PackedEngine.snapshot` of the slot, written and
    resumed as the classifier's loop does (every N steps, on Ctrl-C)."""
    from peftsearch.errors import SpaceError
    from peftsearch.objectives import checkpoint as ckpt
    from peftsearch.objectives.data import TemplateTooLong, encode, label_token_ids
    from peftsearch.objectives.packed import PackedEngine

    file, seed = str(space.file), space.study.seed
    labels = list(space.data.labels)
    base, tokenizer, base_params = _frozen_base(space, device)
    name = params["verbalizer"]
    template = space.templates[params["template"]]
    cols = (tokenizer, space.model.max_length, space.data.text_columns)
    masked = space.lm_kind == "masked"
    words = label_token_ids(
        tokenizer, space.data.labels, space.verbalizers[name], file, f"verbalizers.{name}"
    )
    how = _prompt_inputs(space, params, splits, tokenizer, info)
    try:
        data = {
            split: encode(getattr(splits, split), template, *cols, mask=masked, **how)
            for split in ("validation", "test")
        }
        data["train"] = encode(_trained_rows(splits, info), template, *cols, mask=masked, **how)
    except TemplateTooLong as exc:
        raise SpaceError(file, f"templates.{params['template']}", str(exc)) from None
    left = tokenizer.padding_side == "left"
    special = set(tokenizer.all_special_ids)
    engine = PackedEngine(base, device, left, lm_kind=space.lm_kind, special_ids=special)
    try:
        slot = engine.add("train", params, data["train"], data["validation"], seed, words)
        state = checkpoint.load() if checkpoint is not None else None
        if checkpoint is not None and state is not None:
            engine.resume(slot.key, state)
            checkpoint.say(
                f"resuming from step {slot.step} of {slot.total} ({checkpoint.state_file})"
            )
        with ckpt.interrupts_at_step_end(checkpoint is not None) as stop:
            while not (finished := engine.step()):
                step, total = slot.step, slot.total
                if checkpoint is not None and (step % checkpoint.every == 0 or stop):
                    checkpoint.save(engine.snapshot(slot.key))
                if checkpoint is not None and stop:
                    checkpoint.say(
                        f"\ninterrupted at step {step} of {total}; checkpoint saved to "
                        f"{checkpoint.state_file}: the same command resumes from there"
                    )
                    raise KeyboardInterrupt
                if on_step is not None:
                    on_step(step, total, slot.curve[-1] if slot.curve else None)
        (done,) = finished
        if done.error is not None:
            raise done.error
        assert done.stats is not None and done.result is not None
        if on_step is not None:
            on_step(done.stats.steps, done.stats.steps)
        slot.eval_data = data["test"]
        test = engine.evaluate([slot])[slot.key]
        want = _engine_predictions(engine, slot, probe, info, template, cols, masked, how)
    finally:
        engine.close()  # hooks off: the base model is plain again
    predictions = {"validation": done.result.predictions, "test": test.predictions}

    def write(into: Path) -> None:
        _save_lm_adapters(base, slot, space.lm_kind, space.model.path, into)

    extra = {
        "lm_kind": space.lm_kind,
        "padding_side": tokenizer.padding_side,
        "verbalizer": name,
        "label_words": {label: space.verbalizers[name][label] for label in labels},
        "label_token_ids": words,
        "prompt_length": slot.prompt_length,
    }
    return _Trained(
        tokenizer,
        slot.cfg,
        done.stats,
        slot.trainable,
        base_params,
        predictions,
        write,
        want,
        extra,
    )


def _engine_predictions(
    engine: Any,
    slot: Any,
    texts: list[str],
    info: dict[str, Any],
    template: Any,
    cols: tuple[Any, int, list[str]],
    masked: bool,
    how: dict[str, Any],
) -> list[dict[str, Any]]:
    """What the engine's trained slot predicts for ``texts`` (``predict_texts`` rows)."""
    import pandas as pd

    from peftsearch.objectives.data import encode

    if not texts:
        return []
    labels, columns = info["labels"], info["text_columns"]
    rows = [dict(zip(columns, t.split("\t", 1), strict=True)) for t in texts]
    data = encode(pd.DataFrame(rows).assign(label=0), template, *cols, mask=masked, **how)
    probs = engine.class_scores(slot, data).softmax(-1).tolist()
    return [
        {
            "text": t,
            "label": labels[max(range(len(labels)), key=p.__getitem__)],
            "scores": dict(zip(labels, p, strict=True)),
        }
        for t, p in zip(texts, probs, strict=True)
    ]


def _save_lm_adapters(base: Any, slot: Any, lm_kind: str, base_model: str, into: Path) -> None:
    """A verbalizer slot's LoRA and soft prompt as peft adapters on ``base`` (modified in
    place: it is not needed after training), in the classifier layout: the top directory holds
    the outer adapter, ``lora/`` the LoRA beneath a soft prompt."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, inject_adapter_in_model

    from peftsearch.objectives.model import prompt_config

    task = TaskType.CAUSAL_LM if lm_kind == "causal" else TaskType.FEATURE_EXTRACTION
    plan = slot.plan
    model: Any = base
    layers: Any = base
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns about the second modification; expected
        if slot.lora:
            lora = LoraConfig(
                task_type=task,
                r=plan.lora_r,
                lora_alpha=plan.lora_alpha,  # type: ignore[arg-type]  # a float in peft
                lora_dropout=plan.lora_dropout,
                target_modules=sorted(slot.lora),  # the exact layers the engine trained
            )
            if slot.prompt is None:
                model = get_peft_model(base, lora)
                layers = model.get_base_model()
            else:
                model = layers = inject_adapter_in_model(lora, base)
            with torch.no_grad():
                for name, (a, b) in slot.lora.items():
                    layer = layers.get_submodule(name)
                    layer.lora_A["default"].weight.copy_(a)
                    layer.lora_B["default"].weight.copy_(b)
        if slot.prompt is not None:
            config = prompt_config(base.config, task, slot.prompt_length)
            model = get_peft_model(model, config)
            with torch.no_grad():
                model.prompt_encoder["default"].embedding.weight.copy_(slot.prompt)
    if slot.lora or slot.prompt is not None:
        model.peft_config["default"].base_model_name_or_path = base_model
        model.save_pretrained(into)
        if slot.lora and slot.prompt is not None:
            _save_injected_lora(model, into / "lora", base_model)


def _as_text(row: dict[str, Any], columns: list[str]) -> str:
    return "\t".join(str(row[c]) for c in columns)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _save(
    trained: _Trained,
    info: dict[str, Any],
    record: dict[str, Any],
    to: Path,
    probe: list[str],
    device: str,
    script: str,
) -> None:
    """Save into a temp dir beside ``to``, check that it reloads to the same predictions, and
    rename it into place."""
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=to.parent, prefix=f".{to.name}.", suffix=".tmp"))
    try:
        trained.write(tmp)
        trained.tokenizer.save_pretrained(tmp)
        (tmp / "inference.json").write_text(json.dumps(info, indent=2) + "\n", "utf-8")
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n", "utf-8")
        (tmp / "load.py").write_text(script, encoding="utf-8")
        (tmp / "README.md").write_text(readme(info, record), encoding="utf-8")
        _check_reload(trained.want, tmp, probe, device)
        mask = _umask()
        for path in tmp.rglob("*"):  # safetensors writes 0600; give every file the same mode
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it 0700
        os.rename(tmp, to)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_injected_lora(model: Any, lora_dir: Path, base_model: str) -> None:
    """The LoRA beneath the soft prompt, in peft's own format (config + adapter weights)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    inner = model.base_model  # the transformers model with LoRA layers injected
    lora_config = copy.deepcopy(inner.peft_config["default"])
    lora_config.base_model_name_or_path = base_model
    lora_config.inference_mode = True
    lora_dir.mkdir()
    lora_config.save_pretrained(str(lora_dir))
    state = get_peft_model_state_dict(inner, adapter_name="default")
    # The head belongs to the outer adapter (modules_to_save); only LoRA tensors go here.
    weights = {k: v.detach().cpu().contiguous() for k, v in state.items() if "lora_" in k}
    if not weights:
        raise RuntimeError("no LoRA weights found beneath the soft prompt")
    save_file(weights, str(lora_dir / "adapter_model.safetensors"), metadata={"format": "pt"})


def _check_reload(want: list[dict[str, Any]], saved: Path, probe: list[str], device: str) -> None:
    """The saved directory, loaded the plain way, must predict ``want``: what the trained
    model predicts for the ``probe`` texts."""
    if not probe:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations inside peft
        again, again_tok, again_info = load_model(saved, device)
    got = predict_texts(again, again_tok, again_info, probe)
    worst = max(
        abs(a["scores"][k] - b["scores"][k])
        for a, b in zip(want, got, strict=True)
        for k in a["scores"]
    )
    if worst > 1e-4:
        raise RuntimeError(
            f"the saved model does not reproduce the trained one (max probability gap {worst:.2e})"
        )


# -- what is written beside the weights ------------------------------------------------------------


def load_py() -> str:
    """``load.py``: the module :mod:`peftsearch.objectives.load` verbatim (:func:`load_model`,
    :func:`predict_texts`, :func:`label_scores` and a command line).

    The file can differ from the running code if peftsearch was reinstalled or edited since it
    was imported. So the text is compiled, and each function must have the running
    function's bytecode.

    Raises:
        RuntimeError: the file on disk no longer matches the running code.
    """
    text = _load_py_text()
    defined: dict[str, Any] = {}
    try:  # defines the functions (and imports json, sys, pathlib, typing); runs nothing else
        exec(compile(text, "load.py", "exec"), defined)
    except SyntaxError as exc:
        raise RuntimeError(f"cannot write load.py: its source does not parse: {exc}") from None
    for f in (load_model, predict_texts, label_scores):
        again = defined.get(f.__name__)
        if again is None or again.__code__.co_code != f.__code__.co_code:
            raise RuntimeError(
                f"cannot write load.py: {__file__} changed since peftsearch was imported "
                "(reinstalled or edited?); run the command again"
            )
    return text


def _load_py_text() -> str:
    from peftsearch.objectives import load

    return Path(load.__file__).read_text(encoding="utf-8")


# -- prediction -----------------------------------------------------------------------------------


def predict(model_dir: Path, texts: list[str]) -> list[dict[str, Any]]:
    """Classify ``texts`` with a model saved by :func:`train_exported`.

    Returns:
        One dict per text: ``text``, ``label`` (the most probable), ``scores`` (softmax
        probability by label name).

    Raises:
        UserError: not a directory saved by ``search train``, or a text that does not fit the
            template (two text columns need a tab between them).
    """
    model_dir = Path(model_dir).expanduser()
    info_file = model_dir / "inference.json"
    if not info_file.is_file():
        raise UserError(f"{model_dir}: not a model saved by `search train` (no inference.json)")
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{info_file}: not valid JSON: {exc}") from None
    if info.get("format") != FORMAT:
        raise UserError(f"{info_file}: unknown format {info.get('format')!r}; want {FORMAT}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations inside peft
        model, tokenizer, info = load_model(model_dir)
    try:
        return predict_texts(model, tokenizer, info, list(texts))
    except ValueError as exc:
        raise UserError(str(exc)) from None
