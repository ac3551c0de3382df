"""The baseline of issue 5: a PEFT search written by hand with Optuna + HF Trainer + peft.

This is how a competent user writes the search today, and what ``search run`` is measured
against (``benchmarks/driver.py`` runs both back to back). Every trial loads the tokenizer and
the model from disk, builds a ``datasets.Dataset`` and ``.map()``s the template + tokenizer over
it, wraps the model with ``get_peft_model(LoraConfig)``, trains with ``Trainer`` and scores with
``trainer.predict``. Two objectives, as in ``search run``: accuracy (maximized) and trainable
parameters (minimized).

peftsearch is used only to read the same search from the space file: the exact train/eval rows
each ``search run`` trial sees (``load_splits``: same cleaning, split and subsample), the
template strings and the searched ranges. Training and scoring are plain Trainer + peft.

    python benchmarks/baseline_trainer.py --space benchmarks/space_rt_cpu.yaml --n-trials 2 \
        --out runs/bench-cpu/baseline

Writes OUT/baseline.db (the Optuna study, sqlite) and OUT/baseline.json (a summary).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

try:
    import peftsearch  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import datasets
import numpy as np
import optuna
import torch
import transformers
from peft import LoraConfig, TaskType, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from peftsearch.objectives.data import load_splits
from peftsearch.spaces import CategoricalDist, FloatDist, load_space
from peftsearch.spaces._templates import render

STUDY_NAME = "baseline"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="benchmarks/space_rt.yaml", help="the space file")
    p.add_argument("--n-trials", type=int, default=None, help="default: the space's n_trials")
    p.add_argument("--out", default="runs/bench/baseline", help="folder for the db and summary")
    p.add_argument("--seed", type=int, default=None, help="default: the space's study.seed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    space = load_space(args.space)
    n_trials = args.n_trials or space.study.n_trials
    seed = space.study.seed if args.seed is None else args.seed
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "baseline.db"
    if db.exists():
        db.unlink()  # a benchmark starts fresh; never resume an older study

    # --- the search, as a user would write it down (values read from the space file) ---------
    params = space.params
    template_choices = _choices(params["template"], "template")
    lora_r_choices = _choices(params["lora_r"], "lora_r")
    lr = params["learning_rate"]
    if not isinstance(lr, FloatDist):
        raise SystemExit("the space must search learning_rate as a float range")
    model_dir = str(space.model.path)  # load_space resolved relative and pkg:// paths
    max_length = space.model.max_length
    batch_size = int(params.get("batch_size", 16))
    epochs = int(params.get("epochs", 1))
    lora_alpha = params.get("lora_alpha", 16)
    target_modules = params.get("target_modules", ["query", "value"])
    num_labels = len(space.data.labels)
    text_columns = list(space.data.text_columns)
    templates = {name: space.templates[name] for name in template_choices}

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    # The exact rows `search run` trains and scores each trial on.
    splits = load_splits(space)
    train_df = splits.trial_train[[*text_columns, "label"]].reset_index(drop=True)
    eval_df = splits.trial_eval[[*text_columns, "label"]].reset_index(drop=True)
    use_bf16 = torch.cuda.is_available()

    def objective(trial: optuna.Trial) -> tuple[float, int]:
        t0 = time.perf_counter()
        template_name = trial.suggest_categorical("template", template_choices)
        r = trial.suggest_categorical("lora_r", lora_r_choices)
        learning_rate = trial.suggest_float("learning_rate", lr.low, lr.high, log=lr.log)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        transformers.set_seed(seed)  # the new classification head's init

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=num_labels, dtype=torch.float32
        )
        if trial.number == 0:
            trial.study.set_user_attr("base_params", sum(p.numel() for p in model.parameters()))

        template = templates[template_name]

        def preprocess(batch: dict[str, list[Any]]) -> Any:
            rows = [
                dict(zip(text_columns, vals, strict=True))
                for vals in zip(*(batch[c] for c in text_columns), strict=True)
            ]
            texts = [render(template, row) for row in rows]
            if texts and isinstance(texts[0], tuple):  # a text-pair template
                first, second = zip(*texts, strict=True)
                return tokenizer(list(first), list(second), truncation=True, max_length=max_length)
            return tokenizer(texts, truncation=True, max_length=max_length)

        train_ds = datasets.Dataset.from_pandas(train_df, preserve_index=False)
        eval_ds = datasets.Dataset.from_pandas(eval_df, preserve_index=False)
        train_ds = train_ds.map(preprocess, batched=True, remove_columns=text_columns)
        eval_ds = eval_ds.map(preprocess, batched=True, remove_columns=text_columns)

        model = get_peft_model(
            model,
            LoraConfig(
                task_type=TaskType.SEQ_CLS,
                r=r,
                lora_alpha=lora_alpha,
                target_modules=target_modules,
            ),
        )
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

        with tempfile.TemporaryDirectory() as tmp:
            training_args = TrainingArguments(
                output_dir=tmp,
                per_device_train_batch_size=batch_size,
                per_device_eval_batch_size=max(64, 2 * batch_size),
                num_train_epochs=epochs,
                learning_rate=learning_rate,
                bf16=use_bf16,
                seed=seed,
                report_to=[],
                save_strategy="no",
                eval_strategy="no",
                logging_strategy="no",
                disable_tqdm=True,
                dataloader_num_workers=0,
            )
            trainer = Trainer(
                model=model,
                args=training_args,
                train_dataset=train_ds,
                data_collator=DataCollatorWithPadding(tokenizer),
                processing_class=tokenizer,
            )
            t_train = time.perf_counter()
            trainer.train()
            train_seconds = time.perf_counter() - t_train
            t_eval = time.perf_counter()
            pred = trainer.predict(eval_ds)
            eval_seconds = time.perf_counter() - t_eval
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        accuracy = float((np.argmax(logits, axis=-1) == pred.label_ids).mean())

        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
        seconds = time.perf_counter() - t0
        trial.set_user_attr("trial_seconds", round(seconds, 3))
        trial.set_user_attr("train_seconds", round(train_seconds, 4))
        trial.set_user_attr("eval_seconds", round(eval_seconds, 4))
        trial.set_user_attr("peak_gpu_memory_bytes", peak)
        trial.set_user_attr("trainable_params", trainable)
        print(
            f"trial {trial.number}: template={template_name} lora_r={r} "
            f"lr={learning_rate:.2e} -> accuracy {accuracy:.4f}, {trainable:,} params; "
            f"{seconds:.2f} s (train {train_seconds:.2f} s, eval {eval_seconds:.2f} s)"
            + (f", peak {peak / 2**20:.0f} MiB" if peak is not None else ""),
            flush=True,
        )
        return accuracy, trainable

    study = optuna.create_study(
        study_name=STUDY_NAME,
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=seed),
        storage=f"sqlite:///{db.resolve()}",
    )
    t_search = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    search_seconds = time.perf_counter() - t_search

    summary = summarize(study, space, n_trials, seed)
    summary["search_seconds"] = round(search_seconds, 3)
    summary["process_seconds"] = round(time.perf_counter() - t_start, 3)
    summary["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    (out / "baseline.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(
        f"baseline: {summary['completed']} trials in {search_seconds:.1f} s, median "
        f"{summary['median_trial_seconds']} s per trial, best accuracy {summary['best_metric']}; "
        f"wrote {db} and {out / 'baseline.json'}",
        flush=True,
    )
    return 0


def _choices(spec: Any, name: str) -> list[Any]:
    if not isinstance(spec, CategoricalDist):
        raise SystemExit(f"the space must search {name} as a categorical")
    return list(spec.choices)


def summarize(study: optuna.Study, space: Any, n_trials: int, seed: int) -> dict[str, Any]:
    """Counts, timings and the best trial of the study, plus every complete trial."""
    from importlib.metadata import PackageNotFoundError, version

    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    seconds = [t.user_attrs["trial_seconds"] for t in complete]
    best = max(complete, key=lambda t: (t.values[0], -t.values[1]), default=None)
    versions = {}
    for name in ("torch", "transformers", "peft", "optuna", "datasets", "accelerate"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "space": str(space.file),
        "study_name": STUDY_NAME,
        "sampler": "TPESampler(seed)",
        "seed": seed,
        "n_trials": n_trials,
        "completed": len(complete),
        "median_trial_seconds": round(statistics.median(seconds), 3) if seconds else None,
        "median_train_seconds": (
            round(statistics.median(t.user_attrs["train_seconds"] for t in complete), 3)
            if complete
            else None
        ),
        "best_metric": best.values[0] if best else None,
        "best_trial": (
            {"number": best.number, "params": best.params, "trainable_params": int(best.values[1])}
            if best
            else None
        ),
        "base_params": study.user_attrs.get("base_params"),
        "versions": versions,
        "trials": [
            {
                "number": t.number,
                "params": t.params,
                "accuracy": t.values[0],
                "trainable_params": int(t.values[1]),
                **{
                    k: t.user_attrs.get(k)
                    for k in (
                        "trial_seconds",
                        "train_seconds",
                        "eval_seconds",
                        "peak_gpu_memory_bytes",
                    )
                },
            }
            for t in complete
        ],
    }


if __name__ == "__main__":
    raise SystemExit(main())
