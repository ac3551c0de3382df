"""One function from a trial's parameters to its results, behind which a worker keeps state.

:class:`TrialRunner` loads the data and the base model once per worker process, caches the
tokenized data per template, and turns a parameter dict into a :class:`TrialResult`. It knows
nothing of Optuna: the searcher asks, calls :meth:`TrialRunner.run`, and tells.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from peftsearch.errors import TrialFailed
from peftsearch.objectives.data import Encoded, Splits, encode, load_splits
from peftsearch.objectives.metrics import check_metric, load_metric, score
from peftsearch.objectives.model import PeftPlan, build, count_params, load_base, pick_device
from peftsearch.objectives.train import TrainConfig, evaluate_model, train
from peftsearch.spaces import Space, template_text


@dataclass
class TrialResult:
    """What a finished trial reports: the two objectives and everything worth storing."""

    metric: float
    trainable_params: int
    attrs: dict[str, Any] = field(default_factory=dict)


def versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("peftsearch", "torch", "transformers", "peft", "optuna", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class TrialRunner:
    """Runs trials of one space in this process; heavy state is built on first use."""

    def __init__(self, space: Space) -> None:
        self.space = space
        self._splits: Splits | None = None
        self._base: Any = None
        self._tokenizer: Any = None
        self._device: Any = None
        self._cache: dict[str, tuple[Encoded, Encoded]] = {}
        self._metric: Any = None
        self._versions: dict[str, str] | None = None

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = load_splits(self.space)
        return self._splits

    def setup(self) -> None:
        """Load data, tokenizer, base model and metric (once)."""
        if self._base is not None:
            return
        splits = self.splits
        self._device = pick_device(self.space.model.device)
        self._base, self._tokenizer = load_base(
            self.space.model,
            len(self.space.data.labels),
            self.space.study.seed,
            str(self.space.file),
        )
        self._base.to(self._device)
        self._base.requires_grad_(False)
        objectives, file = self.space.objectives, str(self.space.file)
        self._metric = load_metric(objectives.metric, file)
        check_metric(
            self._metric,
            objectives.metric,
            objectives.metric_kwargs,
            len(self.space.data.labels),
            file,
        )
        self._versions = versions()
        self.base_params = count_params(self._base, trainable=False)
        del splits

    def encoded(self, template: str) -> tuple[Encoded, Encoded]:
        """Train and eval tensors for a template name, tokenized once per worker."""
        if template not in self._cache:
            spec = self.space
            tmpl = spec.templates[template]
            args = (self._tokenizer, spec.model.max_length, spec.data.text_columns)
            self._cache[template] = (
                encode(self.splits.trial_train, tmpl, *args),
                encode(self.splits.trial_eval, tmpl, *args),
            )
        return self._cache[template]

    def run(
        self, params: dict[str, Any], on_step: Callable[[int, int], None] | None = None
    ) -> TrialResult:
        """Train and evaluate one configuration.

        Args:
            params: every key of :data:`peftsearch.spaces.RULES` with a concrete value.
            on_step: called as ``on_step(step, total)`` after each optimizer step.

        Raises:
            TrialFailed: out of memory, non-finite loss; the reason is the message.
        """
        import torch

        self.setup()
        device, seed = self._device, self.space.study.seed
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model = None
        try:
            torch.manual_seed(seed)  # adapter init and dropout: same params + seed, same result
            plan = PeftPlan.from_params(params)
            model = build(self._base, plan)
            trainable = count_params(model)
            model.to(device)
            train_data, eval_data = self.encoded(params["template"])
            cfg = TrainConfig.from_params(params, seed)
            left = self._tokenizer.padding_side == "left"
            stats = train(model, train_data, cfg, device, left, on_step)
            result = evaluate_model(model, eval_data, device, max(64, 2 * cfg.batch_size), left)
        except Exception as exc:
            if _is_oom(exc):
                del model
                gc.collect()
                torch.cuda.empty_cache()
                raise TrialFailed(f"out of memory: {str(exc).splitlines()[0]}") from exc
            raise
        metric = score(
            self._metric,
            self.space.objectives.metric,
            result.predictions,
            eval_data.labels.tolist(),
            **self.space.objectives.metric_kwargs,
        )
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        del model
        return TrialResult(
            metric=metric,
            trainable_params=trainable,
            attrs={
                "template_text": template_text(self.space.templates[params["template"]]),
                "trainable_params": trainable,
                "trainable_pct": 100.0 * trainable / self.base_params,
                "base_params": self.base_params,
                "train_seconds": round(stats.seconds, 4),
                "eval_seconds": round(result.seconds, 4),
                "train_steps": stats.steps,
                "train_loss_curve": [round(x, 5) for x in stats.loss_curve],
                "train_loss_curve_every": stats.curve_every,
                "eval_loss": result.loss,
                "peak_gpu_memory_bytes": peak,
                "device": str(device),
                "seed": seed,
                "versions": self._versions,
                "timestamp": time.time(),
            },
        )
