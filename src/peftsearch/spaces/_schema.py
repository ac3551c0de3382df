"""The validated form of ``space.yaml``: one pydantic model per section, unknown keys rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from peftsearch.spaces._params import (
    DEFAULT_PARAMS,
    RULES,
    TASKS,
    CategoricalDist,
    FloatDist,
    IntDist,
    ParamSpec,
    Strict,
    check_param,
    method_problem,
)
from peftsearch.spaces._sections import (
    DataSpec,
    FilesSpec,
    GenerationSpec,
    ModelSpec,
    ObjectivesSpec,
    SplitSpec,
)
from peftsearch.spaces._templates import DEMOS, Template, check_template, has_mask_slot, has_slot

__all__ = [
    "DataSpec",
    "FilesSpec",
    "GenerationSpec",
    "ModelSpec",
    "ObjectivesSpec",
    "PrunerSpec",
    "Space",
    "SplitSpec",
    "StudySpec",
]

_Section = Strict
MAX_PACK = 256  # study.pack


class PrunerSpec(_Section):
    """Multi-objective successive halving (MO-ASHA, Schmucker et al. 2021): a trial is scored
    on its eval rows at rungs (fractions of its own training steps: ``min_fraction``, times
    ``reduction``, times ``reduction`` again, ... below 1) and stopped unless it ranks in the top
    1 / ``reduction`` of the trials that reached that rung (non-dominated sorting of metric and
    trainable parameters; see peftsearch.searcher.pruners)."""

    type: Literal["moasha", "none"] = Field("moasha", description="moasha | none")
    # 0.5: on MiniLM + Rotten Tomatoes a LoRA trial is still on the majority-class plateau
    # at 25 % of 126 steps (stopped there, it ranked below the head-only trial it would
    # overtake), and has left it at 50 % (benchmarks/RESULTS.md, "Rungs").
    min_fraction: float = Field(
        0.5, gt=0, lt=1, description="the first rung, as a fraction of a trial's steps"
    )
    # 2, not 3: with 3 the demo stopped LoRA trials at 0.75-0.754 that two-epoch training takes
    # to 0.77-0.79, and its one prompt-only trial; with 2 both completed (best 0.778 -> 0.792,
    # prompt-only 0.600 -> 0.662) in 8-9 minutes (benchmarks/RESULTS.md, "Rungs").
    reduction: float = Field(2.0, gt=1, description="keep the top 1/reduction at each rung")
    min_trials: int | None = Field(
        None, ge=1, description="no trial stops at a rung fewer trials reached (default: reduction)"
    )

    @model_validator(mode="before")
    @classmethod
    def _word(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data

    def rungs(self) -> list[float]:
        """The rung fractions, smallest first (empty when ``type`` is none)."""
        if self.type == "none":
            return []
        out, f = [], self.min_fraction
        while f < 1 - 1e-9:
            out.append(round(f, 6))
            f *= self.reduction
        return out


class StudySpec(_Section):
    name: str | None = Field(None, description="default: the space file's name")
    storage: str | None = Field(
        None,
        description="default: sqlite:///<output>/study.db; <output>/study.journal after a "
        "--workers run",
    )
    sampler: str = Field("tpe", description="tpe | nsga2 | random | grid")
    sampler_kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(0, description="sampler seed and every trial's training seed")
    n_trials: int = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0, description="seconds; no new trial starts after it")
    pack: int | Literal["auto"] = Field(
        "auto",
        description="trials trained together on one copy of the base model, each with its own "
        "rows of every batch (batched multi-adapter training; results equal the trial alone). "
        "auto: 16 on a GPU, 1 on CPU",
    )
    pruner: PrunerSpec = Field(
        default_factory=PrunerSpec,
        description="moasha (default): stop trials that rank low at rungs; none: train all",
    )
    coverage: bool = Field(
        True,
        description="run first a trial of each size class of the space (head only, the "
        "smallest and largest LoRA rank, a soft prompt) so the front spans the parameter axis",
    )
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list,
        description="configurations to run first, before the sampler's own (a warm start "
        "from known-good settings; Optuna's enqueue_trial). Partial dicts are completed by "
        "the sampler.",
    )

    @field_validator("pack", mode="before")
    @classmethod
    def _pack(cls, v: Any) -> Any:
        if v == "auto" or (type(v) is int and 1 <= v <= MAX_PACK):
            return v
        raise ValueError(f"must be a whole number from 1 to {MAX_PACK}, or auto")


class AutoVerbalizerSpec(_Section):
    """``verbalizers: {auto: {...}}``: label words found by the model (LM-BFF / PET automatic
    label search), searched as the verbalizers ``auto-1`` .. ``auto-n``."""

    k: int = Field(3, ge=1, le=20, description="words per class in each found verbalizer")
    n: int = Field(2, ge=1, le=10, description="found verbalizers (auto-1 .. auto-n)")
    rows: int = Field(256, ge=2, description="train rows per class the model scores")


AUTO = "auto"  # the reserved name under `verbalizers:` that asks for found label words


class Space(_Section):
    """A whole space file. Build it with :func:`peftsearch.spaces.load_space`."""

    @model_validator(mode="before")
    @classmethod
    def _auto_apart(cls, data: Any) -> Any:
        """``verbalizers.auto`` is not a verbalizer but the request for found ones."""
        given = data.get("verbalizers") if isinstance(data, dict) else None
        if isinstance(given, dict) and AUTO in given:
            verbalizers = dict(given)
            data = {**data, "auto_verbalizers": verbalizers.pop(AUTO) or {}}
            data["verbalizers"] = verbalizers
        return data

    model: ModelSpec
    data: DataSpec
    templates: dict[str, Template] = Field(min_length=1)
    verbalizers: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict,
        description="model.head verbalizer: name -> {label: [words]}; a label's score is the "
        "mean log-probability of its words' first tokens",
    )
    auto_verbalizers: AutoVerbalizerSpec | None = Field(
        None,
        description="written as verbalizers.auto: label words found by the model",
        json_schema_extra={"hidden": True},
    )

    @property
    def auto_names(self) -> list[str]:
        """The names of the found verbalizers: ``auto-1`` .. ``auto-n``."""
        n = self.auto_verbalizers.n if self.auto_verbalizers is not None else 0
        return [f"{AUTO}-{i}" for i in range(1, n + 1)]

    def with_words(self, found: dict[str, dict[str, dict[str, list[str]]]]) -> Space:
        """This space with the found verbalizers' words: template -> ``auto-i`` -> {label:
        [words]} (found per template: each template's prediction point has its own)."""
        out = self.model_copy()
        out._found = {t: dict(v) for t, v in found.items()}
        return out

    @property
    def verbalizer_names(self) -> list[str]:
        """Every verbalizer a trial may use: the written ones, then the found ones."""
        return [*self.verbalizers, *self.auto_names]

    def words(self, verbalizer: str, template: str) -> dict[str, list[str]]:
        """The label words of ``verbalizer`` under ``template`` (found verbalizers have their
        own per template; see :meth:`with_words`).

        Raises:
            KeyError: a found verbalizer whose words are not found yet.
        """
        if verbalizer in self.verbalizers:
            return self.verbalizers[verbalizer]
        return self._found[template][verbalizer]

    @field_validator("verbalizers", mode="before")
    @classmethod
    def _one_word(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {
                name: (
                    {k: [w] if isinstance(w, str) else w for k, w in m.items()}
                    if isinstance(m, dict)
                    else m
                )
                for name, m in v.items()
            }
        return v

    params: dict[str, ParamSpec] | None = Field(
        None, description="omitted: the default space of the model kind (DEFAULT_PARAMS)"
    )
    objectives: ObjectivesSpec = Field(default_factory=ObjectivesSpec)
    study: StudySpec = Field(default_factory=StudySpec)
    output: str | None = Field(None, description="default: runs/<study name> under the cwd")
    task: str | None = Field(
        None,
        description="what a trial learns: classify (model.head classifier), verbalize "
        "(model.head verbalizer), generate (model.head generator) or a registered task; "
        "default: from model.head",
    )
    generation: GenerationSpec = Field(
        default_factory=GenerationSpec, description="task generate: how answers are decoded"
    )

    @property
    def task_name(self) -> str:
        """The task a trial of this space runs (``task:``, or the one of ``model.head``)."""
        if self.task is not None:
            return self.task
        return {"verbalizer": "verbalize", "generator": "generate"}.get(self.model.head, "classify")

    @model_validator(mode="after")
    def _cross_checks(self) -> Space:
        if self.task is not None:
            if "head" not in self.model.model_fields_set and self.task in TASKS:
                self.model.head = TASKS[self.task]  # type: ignore[assignment]
            _check_task(self.task, self.model.head)
        self._check_answers()
        for name, tmpl in self.templates.items():
            try:
                check_template(tmpl, self.data.text_columns, self.model.head == "verbalizer")
            except ValueError as exc:
                raise PydanticCustomError(
                    "at_key", "{msg}", {"msg": str(exc), "loc": ("templates", name)}
                ) from None
        for name, spec in (self.params or {}).items():
            if name not in RULES:
                raise PydanticCustomError(
                    "at_key",
                    "{msg}",
                    {
                        "msg": f"unknown parameter; valid: {', '.join(RULES)}",
                        "loc": ("params", name),
                    },
                )
            try:
                check_param(name, spec)
            except ValueError as exc:
                raise PydanticCustomError(
                    "at_key", "{msg}", {"msg": str(exc), "loc": ("params", name)}
                ) from None
            problem = method_problem(name, self.params or {})
            if problem:
                raise PydanticCustomError(
                    "at_key", "{msg}", {"msg": problem, "loc": ("params", name)}
                )
        searched = self.search_params()
        for i, config in enumerate(self.study.enqueue):
            for name, value in config.items():
                loc = ("study", "enqueue", i, name)
                spec = searched.get(name)
                msg: str | None
                if name not in RULES:
                    msg = f"unknown parameter; valid: {', '.join(RULES)}"
                elif not isinstance(spec, CategoricalDist | FloatDist | IntDist):
                    msg = f"{name} is not searched (fixed at {spec!r}); only searched ones enqueue"
                else:
                    msg = _enqueue_problem(spec, value)
                if msg:
                    raise PydanticCustomError("at_key", "{msg}", {"msg": msg, "loc": loc})
        self._check_verbalizers()
        demos = searched.get("n_demos")
        counts = demos.choices if isinstance(demos, CategoricalDist) else [demos]
        if isinstance(demos, IntDist | FloatDist):
            counts = [demos.high]
        if any(c for c in counts) and not any(has_slot(t, DEMOS) for t in self.templates.values()):
            raise PydanticCustomError(
                "at_key",
                "{msg}",
                {
                    "msg": "n_demos > 0 needs a template with a {demos} slot (where the "
                    'demonstrations go, e.g. "{demos}Review: {text}")',
                    "loc": ("params", "n_demos"),
                },
            )
        template = (self.params or {}).get("template")
        if template is not None:
            names: list[Any] = (
                template.choices if isinstance(template, CategoricalDist) else [template]
            )
            unknown = [n for n in names if n not in self.templates]
            if unknown:
                raise PydanticCustomError(
                    "at_key",
                    "{msg}",
                    {
                        "msg": f"no template named {unknown[0]!r}; templates: "
                        + ", ".join(self.templates),
                        "loc": ("params", "template"),
                    },
                )
        return self

    def _check_answers(self) -> None:
        """Labels for the label tasks; a target column, and no labels, for generation."""

        def fail(msg: str, *loc: Any) -> None:
            raise PydanticCustomError("at_key", "{msg}", {"msg": msg, "loc": loc})

        data = self.data
        if self.model.head == "generator":
            if data.target_column is None:
                fail(
                    "task generate needs the column of reference texts, e.g. target_column: answer",
                    "data",
                    "target_column",
                )
            if data.labels:
                fail("task generate writes text; it takes no labels", "data", "labels")
            for name, template in self.templates.items():
                if not isinstance(template, str):
                    fail(
                        "task generate takes one-string templates (put both text slots in "
                        "one string), not text pairs",
                        "templates",
                        name,
                    )
            return
        if len(data.labels) < 2:
            fail("needs at least 2 items (the label names)", "data", "labels")
        if data.target_column is not None:
            fail(
                "target_column is for task generate; a label task reads label_column",
                "data",
                "target_column",
            )

    def _check_verbalizers(self) -> None:
        def fail(msg: str, *loc: Any) -> None:
            raise PydanticCustomError("at_key", "{msg}", {"msg": msg, "loc": loc})

        verbalizer = (self.params or {}).get("verbalizer")
        if self.model.head != "verbalizer":
            if self.verbalizers or self.auto_verbalizers is not None:
                fail("verbalizers need model.head: verbalizer", "verbalizers")
            if verbalizer is not None:
                fail("a verbalizer needs model.head: verbalizer", "params", "verbalizer")
            return
        with_mask = [n for n, t in self.templates.items() if has_mask_slot(t)]
        if with_mask and len(with_mask) < len(self.templates):
            other = next(n for n in self.templates if n not in with_mask)
            fail(
                f"all templates or none must have {{mask}} (a masked LM predicts at {{mask}}, a "
                f"causal LM at the template's end); {with_mask[0]!r} has it, {other!r} not",
                "templates",
                other,
            )
        if not self.verbalizers and self.auto_verbalizers is None:
            fail(
                "model.head verbalizer needs at least one verbalizer, e.g. "
                "{fresh: [' great'], rotten: [' terrible']}",
                "verbalizers",
            )
        labels = list(self.data.labels)
        for name, mapping in self.verbalizers.items():
            if name in self.auto_names:  # an exported config holds found words by that name
                fail(
                    f"{name} is the name of a found verbalizer (verbalizers.auto); rename it",
                    "verbalizers",
                    name,
                )
            missing = [label for label in labels if label not in mapping]
            extra = [label for label in mapping if label not in labels]
            if missing or extra:
                fail(
                    f"must give words for exactly the labels {labels}"
                    + (f"; missing: {missing}" if missing else "")
                    + (f"; not a label: {extra}" if extra else ""),
                    "verbalizers",
                    name,
                )
            for label, words in mapping.items():
                if not words or not all(isinstance(w, str) and w.strip() for w in words):
                    fail("needs one or more non-empty words", "verbalizers", name, label)
        if verbalizer is not None:
            names: list[Any] = (
                verbalizer.choices if isinstance(verbalizer, CategoricalDist) else [verbalizer]
            )
            known = [*self.verbalizers, *self.auto_names]
            unknown = [n for n in names if n not in known]
            if unknown:
                fail(
                    f"no verbalizer named {unknown[0]!r}; verbalizers: " + ", ".join(known),
                    "params",
                    "verbalizer",
                )

    @property
    def lm_kind(self) -> Literal["masked", "causal", "generator"] | None:
        """model.head verbalizer: ``masked`` when the templates have ``{mask}``, else
        ``causal``; ``generator`` for model.head generator (a causal LM or an encoder-decoder,
        as the model's config says); None for the classifier head."""
        if self.model.head == "generator":
            return "generator"
        if self.model.head != "verbalizer":
            return None
        return "masked" if any(has_mask_slot(t) for t in self.templates.values()) else "causal"

    # -- derived, filled by load_space ------------------------------------------------------
    _file: Path = Path("space.yaml")
    _found: dict[str, dict[str, dict[str, list[str]]]] = {}

    @property
    def file(self) -> Path:
        """The space file this came from."""
        return self._file

    @property
    def study_name(self) -> str:
        return self.study.name or self._file.stem

    @property
    def output_dir(self) -> Path:
        if self.output is None:
            return Path("runs") / self.study_name
        out = Path(self.output).expanduser()
        return out if out.is_absolute() else self._file.parent / out

    @property
    def storage_url(self) -> str:
        if self.study.storage:
            return self.study.storage
        journal = (self.output_dir / "study.journal").resolve()
        if journal.is_file():  # made by `search run --workers N` (one host, several processes)
            return f"journal://{journal}"
        return f"sqlite:///{(self.output_dir / 'study.db').resolve()}"

    def search_params(self) -> dict[str, Any]:
        """Every parameter a trial needs: the file's entries over the defaults."""
        params: dict[str, Any] = {n: r.default for n, r in RULES.items()}
        params["template"] = CategoricalDist(type="categorical", choices=list(self.templates))
        if self.model.head == "verbalizer" and (self.verbalizers or self.auto_names):
            params["verbalizer"] = CategoricalDist(
                type="categorical", choices=[*self.verbalizers, *self.auto_names]
            )
        params.update(self.params if self.params is not None else default_params(self))
        return params


def _check_task(task: str, head: str) -> None:
    if task not in TASKS:
        raise PydanticCustomError(
            "at_key",
            "{msg}",
            {"msg": f"no task {task!r}; tasks: {', '.join(TASKS)}", "loc": ("task",)},
        )
    if TASKS[task] != head:
        raise PydanticCustomError(
            "at_key",
            "{msg}",
            {"msg": f"task {task} runs on model.head: {TASKS[task]}", "loc": ("task",)},
        )


def default_params(space: Space) -> dict[str, Any]:
    """The space searched when a file has no ``params:`` section (see DEFAULT_PARAMS)."""
    return {k: v for k, v in DEFAULT_PARAMS[space.model.head].items()}


def _enqueue_problem(spec: CategoricalDist | FloatDist | IntDist, value: Any) -> str | None:
    """Why ``value`` is outside the distribution ``spec`` (None if inside)."""
    if isinstance(spec, CategoricalDist):
        return (
            None if value in spec.choices else f"{value!r} is not among the choices {spec.choices}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {value!r}"
    if isinstance(spec, IntDist) and not isinstance(value, int):
        return f"must be an integer, got {value!r}"
    if not spec.low <= value <= spec.high:
        return f"{value!r} is outside [{spec.low}, {spec.high}]"
    return None
