"""The adapter kinds, one module each, registered in one place.

Built in: :mod:`.lora` (LoRA), :mod:`.prompt` (the soft prompt), :mod:`.head` (the
classification head). A new kind is a subclass of :class:`Adapter` in its own module and one
:func:`register` call (below, or from a user's code before a study runs): its parameters join
the space vocabulary, the packed engine builds and trains its tensors, the report and export
name it. ``docs/ARCHITECTURE.md`` has the checklist.

Registry order is the order adapters draw their initial tensors from a trial's seed and lay
them out in the stack: a kind registered later comes after the built-in ones, so their trials'
results do not change.
"""

from __future__ import annotations

from typing import Any

from peftsearch.objectives.adapters._base import Adapter
from peftsearch.objectives.adapters.dora import DoRA
from peftsearch.objectives.adapters.head import Head
from peftsearch.objectives.adapters.ia3 import IA3
from peftsearch.objectives.adapters.lora import LoRA
from peftsearch.objectives.adapters.prompt import SoftPrompt
from peftsearch.spaces import register_method, register_params

ADAPTERS: dict[str, Adapter] = {}


def register(adapter: Adapter) -> Adapter:
    """Add an adapter kind: its parameters join the space vocabulary (and default space).

    Raises:
        ValueError: the name is taken, empty, or one of its parameters is already someone's.
    """
    name = adapter.name
    if not name or not name.isidentifier():
        raise ValueError(f"an adapter's name must be an identifier, got {name!r}")
    if name in ADAPTERS:
        raise ValueError(f"an adapter named {name!r} is already registered")
    register_params(f"adapter {name!r}", adapter.rules, adapter.defaults)
    if adapter.method:
        shared = ADAPTERS[adapter.shares].rules if adapter.shares else {}
        register_method(name, frozenset(adapter.rules) | frozenset(shared))
    ADAPTERS[name] = adapter
    return adapter


def get(name: str) -> Adapter:
    """The registered adapter ``name``.

    Raises:
        KeyError: none of that name; the message lists the registered ones.
    """
    try:
        return ADAPTERS[name]
    except KeyError:
        raise KeyError(f"no adapter {name!r}; registered: {', '.join(ADAPTERS)}") from None


def used(params: dict[str, Any]) -> list[Adapter]:
    """The adapters a trial of ``params`` trains, in registry order."""
    return [a for a in ADAPTERS.values() if a.used(params)]


def kind_of(params: dict[str, Any]) -> str:
    """A trial's kind: its adapters joined by ``+`` (``lora``, ``prompt``, ``lora+prompt``),
    or ``head`` when it trains none (a linear probe, or the zero-shot LM)."""
    names = [a.name for a in used(params) if a.in_kind]
    return "+".join(sorted(names, key=_kind_order)) or "head"


def method_of(params: dict[str, Any]) -> str:
    """The weight method a trial trains and where, when that is not the default
    (``lora``, ``lora all-linear``, ``dora attention``, ``ia3``), or ``none`` (the head and/or
    a soft prompt only): the report's groups and the front's markers."""
    for a in used(params):
        if a.method:
            where = a.where(params)
            return f"{a.name} {where}" if where else a.name
    return "none"


def places(params: dict[str, Any]) -> dict[str, str]:
    """Where a trial puts each method it trains that has a placement parameter
    (``{"target_modules": "all-linear"}``; ``default``: peft's targets for the model type)."""
    return {a.placement: a.where(params) or "default" for a in used(params) if a.placement}


def trained_rates(params: dict[str, Any]) -> dict[str, float]:
    """Each adapter a trial trains -> its peak learning rate (the rate a part with no rate of
    its own takes is ``learning_rate``'s). The head counts only beside no verbalizer: a
    verbalizer trial scores label words with the LM's own head and trains none."""
    return {
        a.name: a.rate(params)
        for a in used(params)
        if a.in_kind or params.get("verbalizer") is None
    }


def _kind_order(name: str) -> tuple[int, str]:
    # ``lora+prompt`` (the kinds' names since 0.1.0): injected adapters before the outer one.
    return (int(ADAPTERS[name].outer), name)


def size_params() -> list[str]:
    """The parameters that say how big each adapter is (``prompt_length``, ``lora_r``), in the
    vocabulary's order: the columns of the Pareto table and CSV."""
    from peftsearch.spaces import RULES

    order = list(RULES)
    names = [a.size_param for a in ADAPTERS.values() if a.size_param in RULES]
    return sorted(names, key=order.index)


def part_of(parameter_name: str) -> str:
    """The learning-rate part a trainable parameter of a built model belongs to: that of the
    first adapter that claims it, else ``head``."""
    for adapter in ADAPTERS.values():
        if adapter.owns(parameter_name):
            return adapter.param_part(parameter_name)
    return "head"


def sizes(params: dict[str, Any]) -> dict[str, Any]:
    """Each size parameter (:func:`size_params`) with the trial's value, None where it means
    nothing: another method's (the ``lora_r`` of an IA3 trial or of ``adapter: none``)."""
    chosen = ADAPTERS.get(str(params.get("adapter", "lora")))
    mine = {params.get("adapter", "lora"), chosen.shares if chosen is not None else None}
    out = {}
    for name in size_params():
        owner = next(a for a in ADAPTERS.values() if a.size_param == name)
        out[name] = None if owner.method and owner.name not in mine else params.get(name)
    return out


def methods_of(parameter: str) -> set[str] | None:
    """The methods (adapters chosen by ``adapter``) that take ``parameter`` (``lora_r``: LoRA
    and DoRA, which shares LoRA's), or None: a generic parameter, or the soft prompt's or
    head's, which go with any method."""
    for a in ADAPTERS.values():
        if a.method and parameter in a.rules:
            return {a.name} | {b.name for b in ADAPTERS.values() if b.shares == a.name}
    return None


def check_space(space: Any, model: Any, file: str) -> None:
    """Every adapter's :meth:`Adapter.check` of the space's parameters on ``model`` (the
    base, possibly on the meta device): a placement that matches nothing fails here, before
    any file is made, not trial by trial.

    Raises:
        SpaceError: the first problem, naming the file, key and value.
    """
    import torch

    from peftsearch.objectives import tasks

    task = tasks.get(space.task_name)
    _, heads = task.head_modules(model)
    linears = [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and name.split(".")[0] not in heads
    ]
    task_type = task.peft_task_type(space.lm_kind)
    searched = space.search_params()
    for a in ADAPTERS.values():
        a.check(searched, model, linears, task_type, file)


def size_of(parameter: str) -> str | None:
    """The size parameter of the method that takes ``parameter`` as an option (``lora_r`` for
    ``target_modules`` or ``use_rslora``): a trial whose size is 0 has nothing for the option
    to act on. None: a size parameter itself, or not a method's option."""
    for a in ADAPTERS.values():
        if a.method and parameter in a.rules and a.size_param not in (None, parameter):
            return a.size_param
    return None


def placements() -> dict[str, str]:
    """Each method's size parameter -> its placement parameter (``lora_r`` ->
    ``target_modules``), for the methods that have both."""
    return {
        a.size_param: a.placement
        for a in ADAPTERS.values()
        if a.method and a.size_param and a.placement
    }


def shape_params() -> list[str]:
    """The parameters that can change how many parameters a trial trains: ``adapter``, each
    adapter's size and each method's placement (learning rates and templates cannot)."""
    return ["adapter", *size_params(), *placements().values()]


def own_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without the parameters of methods the trial does not train (an IA3 trial's
    ``lora_r`` and ``lora_alpha``): what an exported ``config.yaml`` lists, since a space that
    gives a method's parameter beside an ``adapter`` that never takes it is refused."""
    method = params.get("adapter", "lora")
    return {
        name: value
        for name, value in params.items()
        if (methods := methods_of(name)) is None or method in methods
    }


def field_part(field: str) -> str:
    """The learning-rate part of a stack field (``lora.<layer>.A``: its adapter's, by the
    name's head)."""
    return ADAPTERS[field.split(".")[0]].field_part(field)


def parts() -> tuple[str, ...]:
    """Every learning-rate part, in registry order (a column of the stack's rates each)."""
    return tuple(part for a in ADAPTERS.values() for part in a.parts)


def rates(params: dict[str, Any]) -> dict[str, float]:
    """Each part's peak learning rate in a trial of ``params``."""
    return {part: rate for a in ADAPTERS.values() for part, rate in a.rates(params).items()}


def peft_configs(
    params: dict[str, Any], task_type: Any, model_config: Any = None
) -> dict[str, Any]:
    """peft configs of a trial's adapters, by sub-directory of a saved model ('' = the top):
    see :func:`arrange`."""
    return arrange(
        {
            a.name: c
            for a in used(params)
            if (c := a.peft_config(params, task_type, model_config)) is not None
        }
    )


def arrange(configs: dict[str, Any]) -> dict[str, Any]:
    """Adapters' peft configs (by adapter name) as one peft model holds them, by
    sub-directory of a saved model ('' = the top).

    One adapter with a peft config: it is the top. Several: the ``outer`` one (the soft
    prompt: peft's prompt learning wraps the model) is the top and each other goes in beneath
    it (``inject_adapter_in_model``), saved in the sub-directory of its name; without an outer
    one peft has no way to hold them together.

    Raises:
        ValueError: several adapters with peft configs and none of them outer.
    """
    if len(configs) <= 1:
        return {"": next(iter(configs.values()))} if configs else {}
    outer = [n for n in configs if ADAPTERS[n].outer]
    if len(outer) != 1:
        raise ValueError(
            f"adapters {', '.join(configs)} cannot be combined in one peft model "
            "(one of them must wrap the others, as a soft prompt does)"
        )
    return {("" if n == outer[0] else n): c for n, c in configs.items()}


# The built-in kinds. A new one: its module, its import above and one line here.
register(LoRA())
register(SoftPrompt())
register(Head())
register(IA3())
register(DoRA())

__all__ = [
    "ADAPTERS",
    "Adapter",
    "arrange",
    "DoRA",
    "Head",
    "IA3",
    "LoRA",
    "SoftPrompt",
    "get",
    "kind_of",
    "methods_of",
    "field_part",
    "part_of",
    "parts",
    "peft_configs",
    "rates",
    "register",
    "size_params",
    "sizes",
    "used",
]
