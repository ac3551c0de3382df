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

Each head's training is in :mod:`peftsearch.objectives.production_heads`; the saved directory
is written by :mod:`peftsearch.objectives.saving`.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftsearch.errors import TrialFailed, UserError
from peftsearch.objectives import saving, tasks
from peftsearch.objectives.checkpoint import DEFAULT_EVERY, Checkpoint
from peftsearch.objectives.load import load_model, predict_texts
from peftsearch.objectives.production_heads import Trained
from peftsearch.objectives.saving import load_py
from peftsearch.objectives.trial import TrialConfig

FORMAT = "peftsearch-model/1"


# -- training -------------------------------------------------------------------------------------


def _fixed_params(space: Any) -> TrialConfig:
    from peftsearch.spaces import CategoricalDist, FloatDist, IntDist

    params = space.search_params()
    for name, spec in params.items():
        if isinstance(spec, CategoricalDist | FloatDist | IntDist):
            raise UserError(
                f"{space.file}: params.{name}: `search train` needs fixed values, this is a "
                "distribution; write a config with `search export` (or fix it by hand)"
            )
    return TrialConfig.from_values(params)


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


@dataclass
class _Job:
    """A ``search train`` run's config, read and checked."""

    config: Path  # the config file, resolved
    space: Any  # Space
    params: TrialConfig
    target: Path  # where the model is saved
    template: Any
    metric: Any  # the loaded metric of ``space.objectives.metric``


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
    from peftsearch.objectives.model import pick_device

    if checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be 0 (none) or more, got {checkpoint_every}")
    script = load_py()  # now, before a long training run: the source file can change later
    job = _read_config(config, epochs, to)
    space = job.space
    splits = load_splits(space)
    _check_provenance(job.config, splits.record)
    device = pick_device(space.model.device)
    info = _inference_info(job)
    probe = [_as_text(r, space.data.text_columns) for r in splits.test.head(16).to_dict("records")]
    ck = _checkpoint(job, splits, checkpoint_every)
    trained = _train(job, splits, device, info, probe, ck, quiet)
    info.update(trained.info)
    summary = _summary(job, splits, trained, info)
    record = _training_record(job, splits, trained, summary, device)
    saving.save(trained, info, record, job.target, probe, str(device), script)
    if ck is not None:
        ck.remove()  # the model is saved: nothing to resume
    summary["saved"] = str(job.target)
    return summary


def _read_config(config: Path, epochs: int | None, to: Path | None) -> _Job:
    """Load the config (``epochs`` overriding its own), check that its params are fixed, that
    ``to`` is free and that its metric loads.

    Raises:
        UserError: any of these fails.
    """
    from peftsearch.objectives.metrics import load_metric
    from peftsearch.spaces import load_space

    config = Path(config).expanduser().resolve()
    overrides = {"params.epochs": epochs, "params.max_steps": None} if epochs is not None else {}
    space = load_space(config, overrides)
    params = _fixed_params(space)
    file = str(space.file)
    target = Path(to).expanduser().resolve() if to is not None else config.parent / "model"
    if target.exists():
        raise UserError(f"{target} already exists; remove it or choose another --to")
    template = space.templates[params["template"]]
    metric = load_metric(space.objectives.metric, file)
    tasks.get(space.task_name).check_metric(metric, space, file)
    return _Job(config, space, params, target, template, metric)


def _inference_info(job: _Job) -> dict[str, Any]:
    """``inference.json`` (what prediction needs), before the head adds its own."""

    space = job.space
    labels = list(space.data.labels)
    return {
        "format": FORMAT,
        "kind": job.params.kind,
        "head": space.model.head,
        "base_model": space.model.path,
        "dtype": space.model.dtype,
        "trust_remote_code": space.model.trust_remote_code,
        "seed": space.study.seed,
        "labels": labels,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "template": job.template,
        "text_columns": list(space.data.text_columns),
        "max_length": space.model.max_length,
        "truncation": space.data.truncation,  # only a text is cut, never the template's words
    }


def _checkpoint(job: _Job, splits: Any, every: int) -> Checkpoint | None:
    """The checkpoint beside the target, of this config, params and data; None with ``every``
    0."""
    identity = {
        "params": job.params,
        "train_rows": len(splits.train),
        "data_sha256": splits.record["sha256"],
    }
    return Checkpoint.beside(job.target, job.config, identity, every) if every else None


def _train(
    job: _Job,
    splits: Any,
    device: Any,
    info: dict[str, Any],
    probe: list[str],
    ck: Checkpoint | None,
    quiet: bool,
) -> Trained:
    """Train with the config's head, progress on stderr unless ``quiet``.

    Raises:
        UserError: training failed (a non-finite loss, out of memory).
    """
    space, params = job.space, job.params
    progress = None if quiet else TrainProgress()
    try:
        task = tasks.get(space.task_name)
        return task.train(space, params, splits, device, progress, info, probe, ck)
    except TrialFailed as exc:  # a non-finite loss, out of memory
        raise UserError(f"{job.config}: training failed: {exc}") from None
    finally:
        if progress is not None:
            progress.close()


def _summary(job: _Job, splits: Any, trained: Trained, info: dict[str, Any]) -> dict[str, Any]:
    """What ``search train`` reports: the validation and test scores, sizes, steps, time."""
    from peftsearch.objectives.metrics import score

    objectives, task = job.space.objectives, tasks.get(job.space.task_name)
    scores = {
        split: score(
            job.metric,
            objectives.metric,
            preds,
            task.references(getattr(splits, split)),
            **objectives.metric_kwargs,
        )
        for split, preds in trained.predictions.items()
    }
    cfg, stats = trained.cfg, trained.stats
    name = objectives.metric
    return {
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


def _training_record(
    job: _Job, splits: Any, trained: Trained, summary: dict[str, Any], device: Any
) -> dict[str, Any]:
    """``training.json``: the summary, the params and where the data came from."""
    from peftsearch.objectives.runner import versions
    from peftsearch.spaces import template_text

    return {
        **summary,
        "params": job.params,
        "template_text": template_text(job.template),
        "base_params": trained.base_params,
        "device": str(device),
        "data": {
            "source": splits.record["source"],
            "sha256": splits.record["sha256"],
            "split": splits.record["split"],
            "sizes": splits.summary(),
            "rows": {k: splits.record["rows"][k] for k in ("train", "validation", "test")},
        },
        "config": str(job.config),
        "versions": versions(),
        "trained_at": time.time(),
    }


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


def _as_text(row: dict[str, Any], columns: list[str]) -> str:
    return "\t".join(str(row[c]) for c in columns)


# -- prediction -----------------------------------------------------------------------------------


def predict(model_dir: Path, texts: list[str]) -> list[dict[str, Any]]:
    """Classify (or answer) ``texts`` with a model saved by :func:`train_exported`.

    Returns:
        One dict per text: ``text``, ``label`` (the most probable), ``scores`` (softmax
        probability by label name); for a generator ``text`` and ``output`` (what it wrote).

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
