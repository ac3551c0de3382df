"""Turn the space's entries into Optuna suggestions and a trial's full parameter dict."""

from __future__ import annotations

from typing import Any

from peftsearch.objectives import adapters
from peftsearch.objectives.trial import TrialConfig
from peftsearch.spaces import CategoricalDist, FloatDist, IntDist, Space


def suggest(trial: Any, space: Space) -> TrialConfig:
    """Ask ``trial`` for every distribution of ``space``, in the order of the parameters'
    registration; fixed entries pass through. A searched parameter of a method (an adapter
    chosen by ``adapter``: ``lora_r``, ``use_rslora``, ``ia3_learning_rate``) is asked only in
    the trials of that method, and a method's option (``target_modules``) only where its size
    (``lora_r``) is not 0 (Optuna's define-by-run conditional space); the others keep it at
    its default.

    Returns the trial's :class:`~peftsearch.objectives.trial.TrialConfig`: every parameter a
    trial needs, concrete values only.
    """
    params: dict[str, Any] = {}
    for name, spec in space.search_params().items():
        if _searched(spec) and _idle(name, params):
            continue  # define-by-run: lora_r of an IA3 trial, target_modules at rank 0
        if isinstance(spec, FloatDist):
            value: Any = trial.suggest_float(
                name, spec.low, spec.high, log=spec.log, step=spec.step
            )
        elif isinstance(spec, IntDist):
            value = trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, CategoricalDist):
            choices = [",".join(c) if isinstance(c, list) else c for c in spec.choices]
            value = trial.suggest_categorical(name, choices)
        else:
            value = spec
        params[name] = value
    return TrialConfig.from_values(params)


def _idle(name: str, params: dict[str, Any]) -> bool:
    """Whether parameter ``name`` means nothing in a trial of ``params`` (so far): another
    method's parameter, or an option of a method whose size is 0 (LoRA at rank 0 has nowhere
    to put ``target_modules``)."""
    methods = adapters.methods_of(name)
    if methods is not None and params.get("adapter", "lora") not in methods:
        return True
    size = adapters.size_of(name)
    return size is not None and size in params and int(params[size]) == 0


def conditional(space: Space) -> bool:
    """Whether :func:`suggest` asks some searched parameter in only some trials: ``adapter``
    is searched, or a method's size can be 0 while one of its options is searched."""
    searched = {n: s for n, s in space.search_params().items() if _searched(s)}
    if "adapter" in searched:
        return True
    for name in searched:
        size = adapters.size_of(name)
        if size is not None and 0 in (_values(searched.get(size)) or []):
            return True
    return False


def _searched(spec: Any) -> bool:
    return isinstance(spec, FloatDist | IntDist | CategoricalDist)


def fixed_params(space: Space) -> dict[str, Any]:
    """The entries that are not searched (stored once on the study)."""
    return {n: s for n, s in space.search_params().items() if not _searched(s)}


def _values(spec: Any) -> list[Any] | None:
    """The values a searched integer parameter can take (None: fixed or not integral)."""
    if isinstance(spec, CategoricalDist):
        return sorted(v for v in spec.choices if isinstance(v, int) and not isinstance(v, bool))
    if isinstance(spec, IntDist):
        return list(range(spec.low, spec.high + 1, spec.step))
    return None


def _center(spec: FloatDist) -> float:
    """The middle of a float range (geometric on a log scale), on its step grid."""
    import math

    if spec.log:
        return float(math.sqrt(spec.low * spec.high))
    mid = (spec.low + spec.high) / 2
    if spec.step:
        mid = spec.low + round((mid - spec.low) / spec.step) * spec.step
    return float(mid)


def coverage_configs(space: Space) -> list[dict[str, Any]]:
    """The first trials of a new study: one per size class of the space, so that the front
    spans the parameter axis from the start (without them a TPE study of 20 trials tried
    nothing under 19k parameters: issue 11): the smallest and the largest LoRA rank (and
    middle ranks until each template has a LoRA trial), the head alone (``lora_r`` 0,
    ``prompt_length`` 0), a soft prompt alone (its middle length), and with ``adapter``
    searched, each other method once (IA3 alone). A searched placement (``target_modules``)
    spans the same axis: the smallest rank goes on its first choice, the largest rank on its
    last, the middle ranks on the choices in turn (so list placements from smallest to
    largest, as the default space does: ``default``, ``all-linear``).
    Only the classes the space can express, each once; learning rates at the middle of their
    (log) ranges, templates in turn; every other searched parameter is left to the sampler."""
    searched = space.search_params()
    ranks, lengths = _values(searched.get("lora_r")), _values(searched.get("prompt_length"))
    if ranks is None and lengths is None and _methods(searched.get("adapter")) is None:
        return []  # one size class: nothing to cover
    r_choices: list[int] = ranks if ranks is not None else [int(searched["lora_r"])]
    k_choices: list[int] = lengths if lengths is not None else [int(searched["prompt_length"])]
    if not r_choices or not k_choices:
        return []
    r_min, k_min = min(r_choices), min(k_choices)
    nonzero_r = [r for r in r_choices if r > 0]
    nonzero_k = [k for k in k_choices if k > 0]
    template = searched.get("template")
    templates = list(template.choices) if isinstance(template, CategoricalDist) else []
    # LoRA: the smallest and the largest rank, and more ranks (from the middle out) until
    # every template has a LoRA trial: the adapters that learn most get every template early
    # (a demo study whose sampler never tried one template could say nothing about it).
    loras = [nonzero_r[0], nonzero_r[-1]] if nonzero_r else []
    middle = sorted(nonzero_r[1:-1], key=lambda r: abs(r - nonzero_r[len(nonzero_r) // 2]))
    loras = list(dict.fromkeys(loras + middle[: max(0, len(templates) - 2)]))
    wanted: list[tuple[int, int]] = [(r, k_min) for r in loras]
    wanted.append((r_min, k_min))  # the smallest: the head alone when 0/0
    if nonzero_k and r_min == 0:
        wanted.append((0, nonzero_k[len(nonzero_k) // 2]))
    rates = {
        name: _center(spec)
        for name, spec in searched.items()
        if name.endswith("learning_rate") and isinstance(spec, FloatDist)
    }
    methods = _methods(searched.get("adapter"))
    places = _placements(searched, "lora_r", loras)
    out: list[dict[str, Any]] = []
    for r, k in dict.fromkeys(wanted):
        config: dict[str, Any] = dict(rates)
        if r in places:
            config[adapters.placements()["lora_r"]] = places[r]
        if methods is not None:  # LoRA's trials are `adapter: lora`; no LoRA: `none`
            method = "lora" if r > 0 else ("none" if "none" in methods else "lora")
            if method not in methods:
                continue
            config["adapter"] = method
        if ranks is not None:
            config["lora_r"] = r
        if lengths is not None:
            config["prompt_length"] = k
        out.append(config)
    # every other searched method once, at the smallest prompt (IA3 alone); `none` (when
    # LoRA's ranks have no 0 to stand for it): the head alone and a soft prompt alone
    for method in methods or []:
        if method == "lora" or any(c.get("adapter") == method for c in out):
            continue
        ks = [k_min] + ([nonzero_k[len(nonzero_k) // 2]] if method == "none" and nonzero_k else [])
        for k in dict.fromkeys(ks):
            other: dict[str, Any] = {**rates, "adapter": method}
            if lengths is not None:
                other["prompt_length"] = k
            out.append(other)
    for i, config in enumerate(out):
        if len(templates) > 1:  # in turn
            config["template"] = templates[i % len(templates)]
    return out


def _placements(searched: dict[str, Any], size: str, ranks: list[int]) -> dict[int, Any]:
    """Where each coverage rank goes when the placement of the method sized by ``size`` is
    searched (``{1: "default", 16: "all-linear", 4: "default"}``; ``ranks`` are smallest,
    largest, then the middle ones); ``{}`` when it is not searched."""
    name = adapters.placements().get(size)
    spec = searched.get(name) if name else None
    if not isinstance(spec, CategoricalDist) or not ranks:
        return {}
    choices = [",".join(c) if isinstance(c, list) else c for c in spec.choices]
    out = {ranks[0]: choices[0]}
    if len(ranks) > 1:
        out[ranks[1]] = choices[-1]
    for i, r in enumerate(ranks[2:]):
        out[r] = choices[i % len(choices)]
    return out


def _methods(spec: Any) -> list[str] | None:
    """The methods a searched ``adapter`` takes (None: not searched)."""
    return list(spec.choices) if isinstance(spec, CategoricalDist) else None
