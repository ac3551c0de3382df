"""One function from a trial's parameters to its results, behind which a worker keeps state.

:class:`TrialRunner` loads the data and the base model once per worker process, caches the
tokenized data per template, and turns a parameter dict into a :class:`TrialResult`. It knows
nothing of Optuna: the searcher asks, calls :meth:`TrialRunner.run` (one trial) or feeds a
:class:`RunnerPack` (several trials trained together, see ``packed.py``), and tells.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from peftsearch.errors import SpaceError
from peftsearch.objectives import adapters, tasks
from peftsearch.objectives.data import Encoded, Splits, TemplateTooLong, load_splits
from peftsearch.objectives.metrics import load_metric, score
from peftsearch.objectives.model import count_params, load_base, pick_device
from peftsearch.spaces import DEMOS, Space, has_slot, template_text


@dataclass
class TrialResult:
    """What a finished trial reports: the two objectives and everything worth storing."""

    metric: float
    trainable_params: int
    attrs: dict[str, Any] = field(default_factory=dict)
    pruned: bool = False  # stopped at a rung: ``metric`` is that rung's score, not a result


# on_rung(key, rung, step, metric, eval_loss, trainable_params) -> stop? (see PackedEngine)
RungHook = Callable[[Any, int, int, float, float, int], bool]


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


BUDGETS = ("search", "full")


class TrialRunner:
    """Runs trials of one space in this process; heavy state is built on first use.

    ``budget`` "search" (the searcher's): each trial trains on the ``data.train_size``
    subsample and is scored on the ``data.eval_size`` validation rows, rungs included.
    "full" (``search confirm --budget full``): it trains on the whole train split as
    ``search train`` does, no rungs, and is scored on the whole validation split, then on
    the test split (``attrs["test_metric"]``)."""

    supports_rungs = True  # run() and pack() take an on_rung hook (successive halving)

    def __init__(self, space: Space, budget: str = "search") -> None:
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
        self.space = space
        self.task = tasks.get(space.task_name)
        self.budget = budget
        self._test: dict[tuple[str, str], Encoded] = {}
        self._splits: Splits | None = None
        self._base: Any = None
        self._tokenizer: Any = None
        self._device: Any = None
        self._cache: dict[tuple[str, str], tuple[Encoded, Encoded]] = {}
        self._metric: Any = None
        self._versions: dict[str, str] | None = None
        self._engine: Any = None
        self._label_tokens: dict[tuple[str, str], list[list[int]]] = {}
        self._demos: dict[tuple[str, int, str | None], tuple[str, list[int]]] = {}
        # task generate: each template's first untrained outputs (see ``zero_shot``)
        self.zero_shot_examples: dict[str, list[Any]] = {}

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
            self.space.lm_kind,
        )
        adapters.check_space(self.space, self._base, str(self.space.file))  # before any file
        self._base.to(self._device)
        self._base.requires_grad_(False)
        file = str(self.space.file)
        self._metric = load_metric(self.space.objectives.metric, file)
        self.task.check_metric(self._metric, self.space, file)
        self._versions = versions()
        self.base_params = count_params(self._base, trainable=False)
        del splits

    def demos(self, params: dict[str, Any]) -> tuple[str, list[int]]:
        """What the ``{demos}`` slot of ``params``' template holds (the demonstration text,
        "" for none) and the train rows (``row`` numbers) it was drawn from."""
        from peftsearch.objectives import demos

        spec = self.space
        k = int(params.get("n_demos") or 0)
        if not k or not has_slot(spec.templates[params["template"]], DEMOS):
            return "", []
        verbalizer = params.get("verbalizer") if spec.lm_kind is not None else None
        key = (params["template"], k, verbalizer)
        if key not in self._demos:
            self.setup()
            self._demos[key] = demos.for_params(spec, params, self.splits.train, self._tokenizer)
        return self._demos[key]

    def encoded(self, params: dict[str, Any] | str) -> tuple[Encoded, Encoded]:
        """Train and eval tensors for a trial's template (and its demonstrations), tokenized
        once per worker; ``params`` may be a template name alone (no demonstrations). The
        train rows shown as demonstrations are left out of the train tensors."""
        from peftsearch.objectives import demos

        if isinstance(params, str):
            params = {"template": params}
        template, (demo_text, demo_rows) = params["template"], self.demos(params)
        key = (template, demo_text)
        if key not in self._cache:
            self.setup()
            spec = self.space
            tmpl = spec.templates[template]

            def encode(df: Any) -> Encoded:
                return self.task.encode(df, tmpl, self._tokenizer, spec, demo_text)

            full = self.budget == "full"
            train = self.splits.train if full else self.splits.trial_train
            train = demos.without(train, demo_rows)
            try:
                self._cache[key] = (encode(train), encode(self.held()))
                if full:
                    self._test[key] = encode(self.splits.test)
            except TemplateTooLong as exc:
                raise SpaceError(str(spec.file), f"templates.{template}", str(exc)) from None
        return self._cache[key]

    def held(self, split: str = "eval") -> Any:
        """The rows a trial is scored on (``split`` "eval": the ``data.eval_size`` subsample,
        or the whole validation split at the full budget; "test": the test split, full budget
        only), as :meth:`encoded` / :meth:`tested` tokenize them."""
        if split == "test":
            assert self.budget == "full", "a test score needs the full budget"
            return self.splits.test
        return self.splits.validation if self.budget == "full" else self.splits.trial_eval

    def tested(self, params: dict[str, Any]) -> Encoded | None:
        """The test split's tensors of a trial's template (full budget only; else None)."""
        self.encoded(params)
        return self._test.get((params["template"], self.demos(params)[0]))

    def label_tokens(self, verbalizer: str, template: str | None = None) -> list[list[int]]:
        """Each class's label words (``verbalizer``'s, under ``template``: found verbalizers
        have words per template) as the first token id of each word (see
        ``PackedEngine._verbalize`` for why the first token).

        Raises:
            SpaceError: a word with no tokens, or words of two classes that start with the
                same token (their scores could not differ).
        """
        spec = self.space
        template = template or next(iter(spec.templates))
        key = (verbalizer, template if verbalizer not in spec.verbalizers else "")
        if key not in self._label_tokens:
            from peftsearch.objectives.tasks.verbalize import label_token_ids

            self.setup()
            self._label_tokens[key] = label_token_ids(
                self._tokenizer,
                spec.data.labels,
                spec.words(verbalizer, template),
                str(spec.file),
                f"verbalizers.{verbalizer}",
            )
        return self._label_tokens[key]

    def zero_shot(
        self, n_demos: int = 0, verbalizers: list[str] | None = None
    ) -> dict[str, dict[str, float]]:
        """The untrained model's metric for every template (x verbalizer): the task's
        zero-shot table, ``{}`` where the task has none (a new random head)."""
        return self.task.zero_shot(self, n_demos, verbalizers)

    def find_label_words(self) -> dict[str, Any]:
        """``verbalizers: {auto: ...}``: the found verbalizers, per template (see
        :func:`peftsearch.objectives.zero_shot.find_label_words`)."""
        from peftsearch.objectives import zero_shot

        return zero_shot.find_label_words(self)

    def _fixed(self) -> dict[str, Any]:
        from peftsearch.spaces import RULES

        return {name: rule.default for name, rule in RULES.items() if name != "template"}

    @property
    def engine(self) -> Any:
        """The :class:`~peftsearch.objectives.packed.PackedEngine` on this worker's base model."""
        if self._engine is None:
            from peftsearch.objectives.packed import PackedEngine

            self.setup()
            left = self._tokenizer.padding_side == "left"
            self._engine = PackedEngine(
                self._base,
                self._device,
                left,
                lm_kind=self.space.lm_kind,
                special_ids=set(self._tokenizer.all_special_ids),
                task=self.space.task_name,
                tokenizer=self._tokenizer,
                max_new_tokens=self.space.generation.max_new_tokens,
            )
        return self._engine

    def add(self, key: Any, params: dict[str, Any], seed: int | None = None) -> None:
        """Queue a trial in the engine (its adapters are built now: a bad target raises).
        ``seed``: the trial's init, data order and dropout seed (default: the study's)."""
        import torch

        engine = self.engine
        if not len(engine) and self._device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self._device)
        train_data, eval_data = self.encoded(params)
        tokens = None
        if self.space.model.head == "verbalizer":
            tokens = self.label_tokens(params["verbalizer"], params["template"])
        seed = self.space.study.seed if seed is None else seed
        engine.add(
            key,
            params,
            train_data,
            eval_data,
            seed,
            tokens,
            rung_steps=self.rung_steps(params),
            test_data=self.tested(params),
        )

    def total_steps(self, params: dict[str, Any]) -> int:
        """The optimizer steps a trial of ``params`` trains at this runner's budget."""
        from peftsearch.objectives.train import TrainConfig

        train_data = self.encoded(params)[0]
        return TrainConfig.from_params(params, self.space.study.seed).total_steps(len(train_data))

    def rung_steps(self, params: dict[str, Any]) -> list[int]:
        """The steps at which a trial of ``params`` reaches the pruner's rungs (fractions of
        its own total steps; none without a pruner)."""
        from peftsearch.objectives.train import TrainConfig

        fractions = self.space.study.pruner.rungs()
        if not fractions or self.budget == "full":
            return []
        train_data = self.encoded(params)[0]
        total = TrainConfig.from_params(params, self.space.study.seed).total_steps(len(train_data))
        return sorted({max(1, round(f * total)) for f in fractions} - {total})

    def score_result(self, params: dict[str, Any], result: Any, split: str = "eval") -> float:
        """The metric of an :class:`EvalResult` of a trial of ``params`` (``split`` "test":
        on the test split, full budget only)."""
        return float(
            score(
                self._metric,
                self.space.objectives.metric,
                result.predictions,
                self.task.references(self.held(split)),
                **self.space.objectives.metric_kwargs,
            )
        )

    def rung_hook(self, on_rung: RungHook | None, params_of: Callable[[Any], Any]) -> Any:
        """The engine's ``on_rung``: score the rung's evaluation, then ask ``on_rung``."""
        if on_rung is None:
            return None

        def hook(key: Any, rung: int, step: int, result: Any) -> bool:
            params = params_of(key)
            slot = next(s for s in self.engine.active if s.key == key)
            metric = self.score_result(params, result)
            return on_rung(key, rung, step, metric, result.loss, slot.trainable)

        return hook

    def pack(self, size: int, on_rung: RungHook | None = None) -> RunnerPack:
        """Trials trained ``size`` at a time on the shared base model (see :class:`RunnerPack`)."""
        return RunnerPack(self, size, on_rung)

    def run(
        self,
        params: dict[str, Any],
        on_step: Callable[[int, int], None] | None = None,
        on_rung: Callable[[int, int, float, float, int], bool] | None = None,
    ) -> TrialResult:
        """Train and evaluate one configuration alone (the engine with one slot).

        Args:
            params: every key of :data:`peftsearch.spaces.RULES` with a concrete value.
            on_step: called as ``on_step(step, total)`` after each optimizer step.
            on_rung: called as ``on_rung(rung, step, metric, eval_loss, trainable_params)``
                at each of the pruner's rungs; True stops the trial (a pruned result).

        Raises:
            TrialFailed: out of memory, non-finite loss; the reason is the message.
        """
        engine = self.engine
        if len(engine):
            raise RuntimeError("run() while trials of a pack are in flight")
        key, capacity = ("run", id(params)), engine.capacity
        engine.capacity = 1
        hook = None if on_rung is None else (lambda k, *a: on_rung(*a))
        engine.on_rung = self.rung_hook(hook, lambda k: params)
        try:
            self.add(key, params)
            while True:
                finished = engine.step()
                if finished:
                    break
                if on_step is not None:
                    for _, step, total in engine.progress():
                        on_step(step, total)
        except BaseException:
            engine.clear()
            raise
        finally:
            engine.capacity = capacity
            engine.on_rung = None
        (done,) = finished
        if done.error is not None:
            raise done.error
        if on_step is not None and not done.pruned:
            on_step(done.stats.steps, done.stats.steps)
        return self.finish(params, done)

    def finish(self, params: dict[str, Any], done: Any) -> TrialResult:
        """Score a trial the engine trained and evaluated, and gather what is stored with it."""
        import torch

        device, seed = self._device, self.space.study.seed
        stats, result = done.stats, done.result
        metric = self.score_result(params, result)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        trainable = done.trainable
        tested: dict[str, Any] = {}
        if done.test_result is not None:
            tested = {
                "test_metric": self.score_result(params, done.test_result, "test"),
                "test_loss": done.test_result.loss,
                "test_rows": len(done.test_result.predictions),
                "eval_rows": len(result.predictions),
            }
        return TrialResult(
            metric=metric,
            trainable_params=trainable,
            pruned=done.pruned,
            attrs={
                "planned_steps": done.planned_steps or stats.steps,
                "template_text": template_text(self.space.templates[params["template"]]),
                **self._demo_attrs(params),
                "trainable_params": trainable,
                "trainable_pct": 100.0 * trainable / self.base_params,
                "base_params": self.base_params,
                "train_seconds": round(stats.seconds, 4),
                "eval_seconds": round(result.seconds, 4),
                "train_steps": stats.steps,
                "train_loss_curve": [round(x, 5) for x in stats.loss_curve],
                "train_loss_curve_every": stats.curve_every,
                "eval_loss": result.loss,
                **self._examples(result),
                "peak_gpu_memory_bytes": peak,
                "pack_size": round(done.pack_size, 3),
                "device": str(device),
                "seed": seed,
                "versions": self._versions,
                "timestamp": time.time(),
                **tested,
            },
        )

    def _examples(self, result: Any) -> dict[str, Any]:
        """A few held rows with what the trial predicted (a task that writes text)."""
        shown = self.task.examples(self.held(), result.predictions)
        return {"examples": shown} if shown else {}

    def _demo_attrs(self, params: dict[str, Any]) -> dict[str, Any]:
        text, rows = self.demos(params)
        return {"demos_text": text, "demo_rows": rows} if rows else {}


class RunnerPack:
    """The searcher's view of a runner that trains ``size`` trials at a time: ``add`` a trial
    under a key, call ``step`` until it hands back ``(key, TrialResult or exception)`` pairs."""

    def __init__(self, runner: TrialRunner, size: int, on_rung: RungHook | None = None) -> None:
        self.runner = runner
        self.engine = runner.engine
        self.engine.capacity = size
        self._params: dict[Any, dict[str, Any]] = {}
        self.engine.on_rung = runner.rung_hook(on_rung, self._params.__getitem__)

    @property
    def capacity(self) -> int:
        return int(self.engine.capacity)

    def __len__(self) -> int:
        return len(self.engine)

    def add(self, key: Any, params: dict[str, Any], seed: int | None = None) -> None:
        self.runner.add(key, params, seed)
        self._params[key] = params

    def step(self) -> list[tuple[Any, TrialResult | BaseException]]:
        out: list[tuple[Any, TrialResult | BaseException]] = []
        for done in self.engine.step():
            params = self._params.pop(done.key)
            if done.error is not None:
                out.append((done.key, done.error))
                continue
            try:
                out.append((done.key, self.runner.finish(params, done)))
            except Exception as exc:  # scoring failed: that trial's failure, not the pack's
                out.append((done.key, exc))
        return out

    def progress(self) -> list[tuple[Any, int, int]]:
        return list(self.engine.progress())

    def drop(self, key: Any) -> None:
        self.engine.drop(key)
        self._params.pop(key, None)

    def clear(self) -> None:
        self.engine.clear()
        self._params.clear()
        self.engine.on_rung = None
