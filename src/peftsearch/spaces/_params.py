"""Search-space entries in Optuna's own vocabulary, and the rules for each known parameter.

An entry is either a fixed value (``epochs: 1``) or a distribution::

    learning_rate: {type: float, low: 1.0e-5, high: 5.0e-3, log: true}
    lora_r:        {type: categorical, choices: [0, 4, 8, 16]}
    batch_size:    {type: int, low: 8, high: 32, step: 8}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError


class Strict(BaseModel):
    """Base of every part of a space file: unknown keys are an error that lists the valid
    ones; NaN and infinity are not numbers a space can hold."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            extra = sorted(str(k) for k in data if k not in cls.model_fields)
            if extra:
                raise PydanticCustomError(
                    "unknown_key",
                    "unknown key; valid keys here: {valid}",
                    {
                        "key": extra[0],
                        "valid": ", ".join(
                            name
                            for name, info in cls.model_fields.items()
                            if not (info.json_schema_extra or {}).get("hidden")  # type: ignore[union-attr]
                        ),
                    },
                )
        return data


class _Dist(Strict):
    pass


class FloatDist(_Dist):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatDist:
        _check_range(self.low, self.high, self.log, self.step)
        return self


class IntDist(_Dist):
    type: Literal["int"]
    low: StrictInt
    high: StrictInt
    log: bool = False
    step: StrictInt = 1

    @model_validator(mode="after")
    def _check(self) -> IntDist:
        _check_range(self.low, self.high, self.log, self.step)
        return self


class CategoricalDist(_Dist):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"`low <= high` must hold, but got (low={low}, high={high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, but got low={low}")
    if log and step not in (None, 1):
        raise ValueError("`step` and `log` cannot be used together")
    if step is not None and step <= 0:
        raise ValueError(f"`step` must be > 0, but got step={step}")


def _fixed(value: Any) -> Any:
    """A fixed entry: a scalar, null or a list of strings; ranges are checked by its Rule."""
    scalar = value is None or isinstance(value, bool | int | float | str)
    if not scalar and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ValueError(
            "a fixed value is a number, a string, a list of strings or null; "
            "a distribution is a mapping with `type`"
        )
    return value


Fixed = Annotated[Any, AfterValidator(_fixed)]


def _kind(value: Any) -> str:
    if isinstance(value, dict):  # a distribution; a missing or unknown `type` is reported
        kind = value.get("type")
        return kind if kind in ("float", "int", "categorical") else "bad"
    return "fixed"


class _BadType(BaseModel):
    """A dict whose `type` is missing or unknown: report that, not its other keys."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["float", "int", "categorical"]


ParamSpec = Annotated[
    Annotated[FloatDist, Tag("float")]
    | Annotated[IntDist, Tag("int")]
    | Annotated[CategoricalDist, Tag("categorical")]
    | Annotated[_BadType, Tag("bad")]
    | Annotated[Fixed, Tag("fixed")],
    Discriminator(_kind),
]


@dataclass(frozen=True)
class Rule:
    """What values a known parameter accepts, and its default when the space omits it."""

    kind: Literal[
        "int",
        "float",
        "str",
        "bool",
        "modules",
        "optional_int",
        "optional_str",
        "optional_float",
    ]
    default: Any
    low: float | None = None  # inclusive unless low_open
    high: float | None = None  # inclusive unless high_open
    low_open: bool = False
    high_open: bool = False
    help: str = ""
    choices: tuple[str, ...] | None = None  # the values a str parameter takes
    # Where the parameter is asked in a trial (suggest order). It fixes which random draw of
    # the sampler each parameter gets, so a seeded study replays exactly: a parameter
    # registered later gets a later place unless it says otherwise.
    order: float = math.inf

    def check(self, value: Any) -> None:
        """Raise ValueError unless ``value`` is allowed for this parameter."""
        if self.kind in ("optional_int", "optional_str", "optional_float") and value is None:
            return
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, got {value!r}")
            return
        if self.kind in ("int", "optional_int"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"must be an integer, got {value!r}")
        elif self.kind in ("float", "optional_float"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"must be a number, got {value!r}")
        elif self.kind in ("str", "optional_str"):
            if not isinstance(value, str):
                raise ValueError(f"must be a string, got {value!r}")
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"must be one of {', '.join(self.choices)}; got {value!r}")
            return
        elif self.kind == "modules":
            ok = value is None or (
                isinstance(value, list) and value and all(isinstance(v, str) for v in value)
            )
            if not ok and not (isinstance(value, str) and value):
                raise ValueError(f"must be a module name or a list of them, got {value!r}")
            return
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            op = ">" if self.low_open else ">="
            raise ValueError(f"must be {op} {self.low}, got {value!r}")
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            op = "<" if self.high_open else "<="
            raise ValueError(f"must be {op} {self.high}, got {value!r}")


# The parameters a trial understands: the generic ones here, each adapter's and task's own
# registered by its module (:func:`register_params`; peftsearch's own rooms are registered when
# ``peftsearch`` is imported). `template` choices are checked against `templates:`.
RULES: dict[str, Rule] = {
    "template": Rule("str", None, help="name of a template under `templates:`", order=0),
    "n_demos": Rule(
        "int",
        0,
        low=0,
        help="few-shot demonstrations per class in the template's {demos} slot (LM-BFF); 0 = none",
        order=3,
    ),
    # Which weight adapter a trial trains (each registered method adds its name; `none`:
    # the head and/or the soft prompt only). `lora` with `lora_r` 0 trains no LoRA either.
    "adapter": Rule(
        "str",
        "lora",
        choices=("none",),
        help="the weight adapter a trial trains: a registered method (lora, ia3, ...) or none",
        order=3.5,
    ),
    "learning_rate": Rule(
        "float",
        1e-3,
        low=0,
        low_open=True,
        help="AdamW peak learning rate of the LoRA weights (and of every other part whose own "
        "rate, e.g. head_learning_rate / prompt_learning_rate, is not given)",
        order=5,
    ),
    "epochs": Rule("int", 1, low=1, help="passes over the trial's train subset", order=12),
    "max_steps": Rule("optional_int", None, low=1, help="if set, overrides epochs", order=13),
    "batch_size": Rule("int", 16, low=1, order=14),
    "weight_decay": Rule("float", 0.0, low=0, order=15),
    "warmup_ratio": Rule("float", 0.0, low=0, high=1, order=16),
}

# The space a file without `params:` searches, per head kind (template and verbalizer: all of
# the file's): the training settings here, each adapter's sizes and rate ranges from its own
# module (see ``peftsearch.objectives.adapters``).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {}

# Who registered each parameter (a name is owned once).
OWNERS: dict[str, str] = {name: "peftsearch.spaces" for name in RULES}


# The registered task kinds: name -> the ``model.head`` it runs on (see
# ``peftsearch.objectives.tasks``; a space's ``task:`` names one).
TASKS: dict[str, str] = {}


def register_task(name: str, head: str) -> None:
    """Make ``task: name`` valid in a space file, for models with ``model.head: head``.

    Raises:
        ValueError: the name is taken.
    """
    if name in TASKS:
        raise ValueError(f"a task named {name!r} is already registered")
    TASKS[name] = head


def register_params(
    owner: str, rules: dict[str, Rule], defaults: dict[str, dict[str, Any]] | None = None
) -> None:
    """Add an adapter's or a task's parameters to the space vocabulary.

    Args:
        owner: who declares them (an adapter or task name), named in a clash.
        rules: name -> :class:`Rule`; a name may be registered once.
        defaults: head kind (``classifier`` / ``verbalizer``) -> the entries it adds to the
            default space (a fixed value or a distribution), for files without ``params:``.

    Raises:
        ValueError: a name is already registered by someone else, or a default names a
            parameter that is not registered.
    """
    for name in rules:
        if name in OWNERS and OWNERS[name] != owner:
            raise ValueError(f"parameter {name!r} is already registered by {OWNERS[name]}")
    merged = {**RULES, **rules}
    ordered = sorted(merged.items(), key=lambda kv: kv[1].order)  # stable: ties keep arrival
    RULES.clear()
    RULES.update(ordered)
    OWNERS.update(dict.fromkeys(rules, owner))
    for kind, entries in (defaults or {}).items():
        for name in entries:
            if name not in RULES:
                raise ValueError(f"default for unregistered parameter {name!r} ({owner})")
        DEFAULT_PARAMS.setdefault(kind, {}).update(entries)


# Each weight method (a value of `adapter`) -> the parameters only it takes (`lora_r` is
# LoRA's and DoRA's): a file that gives one while `adapter` can never be such a method is
# refused (``method_problem``).
METHOD_PARAMS: dict[str, frozenset[str]] = {}


def register_method(name: str, takes: frozenset[str] = frozenset()) -> None:
    """Make ``name`` a value of the ``adapter`` parameter (a weight adapter method) that
    takes the parameters ``takes``.

    Raises:
        ValueError: it is one already.
    """
    import dataclasses

    rule = RULES["adapter"]
    assert rule.choices is not None
    if name in rule.choices:
        raise ValueError(f"adapter method {name!r} is already registered")
    RULES["adapter"] = dataclasses.replace(rule, choices=(*rule.choices, name))
    METHOD_PARAMS[name] = takes


def method_problem(name: str, params: dict[str, Any]) -> str | None:
    """Why the file's ``params`` entry ``name`` means nothing: it belongs to methods that
    ``adapter`` (as the file gives it; absent: ``lora``) never takes. None when it is fine,
    or when it is the parameter's default (an exported ``config.yaml`` lists every one)."""
    owners = sorted(m for m, takes in METHOD_PARAMS.items() if name in takes)
    if not owners or params.get(name) == RULES[name].default:
        return None
    spec = params.get("adapter", RULES["adapter"].default)
    methods = spec.choices if isinstance(spec, CategoricalDist) else [spec]
    if set(owners) & set(methods):
        return None
    return (
        f"{name} is a parameter of {' and '.join(owners)}, but adapter is "
        f"{' / '.join(map(str, methods))}: it would mean nothing"
    )


def check_param(name: str, spec: Any) -> None:
    """Check a parsed entry against the rule of ``name``; raise ValueError with the reason."""
    rule = RULES[name]
    if isinstance(spec, FloatDist):
        if rule.kind not in ("float", "optional_float"):
            raise ValueError(f"`type: float` does not fit {name}, which takes {rule.kind} values")
        values: list[Any] = [spec.low, spec.high]
    elif isinstance(spec, IntDist):
        if rule.kind not in ("int", "float", "optional_int", "optional_float"):
            raise ValueError(f"`type: int` does not fit {name}, which takes {rule.kind} values")
        values = [spec.low, spec.high]
    elif isinstance(spec, CategoricalDist):
        values = list(spec.choices)
        if rule.kind == "modules":
            values = [v.split(",") if isinstance(v, str) else v for v in values]
    else:
        values = [spec]
    for v in values:
        rule.check(v)


def cat(*choices: Any) -> CategoricalDist:
    """A categorical entry (for the default spaces adapters and tasks register)."""
    return CategoricalDist(type="categorical", choices=list(choices))


def log_range(low: float, high: float) -> FloatDist:
    """A log-scale float range (for the default spaces adapters and tasks register)."""
    return FloatDist(type="float", low=low, high=high, log=True)
