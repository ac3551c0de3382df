"""One trial's configuration, typed and frozen: :class:`TrialConfig`.

The sampler's values become a :class:`TrialConfig` once (``searcher.suggest``, ``search
train``'s fixed config, a stored trial read back by the report); the engine, production
training, export, confirm and the report read it. It is a mapping of every registered
parameter to its concrete value (what is stored on the study as the ``params`` user attribute,
so it is a ``dict`` subclass: JSON and pickling see a plain dict), with the derived views a trial
needs as properties (its kind). It cannot be changed after it is built: a different
configuration is a new one.
"""

from __future__ import annotations

from typing import Any, NoReturn

from peftsearch.objectives import adapters


class TrialConfig(dict[str, Any]):
    """Every parameter of one trial, concrete and frozen (see the module docstring)."""

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> TrialConfig:
        """A trial of ``values`` (a sampler's, a fixed config's), every other registered
        parameter at its default; a comma-joined ``target_modules`` (how a searched list is
        stored) becomes the list.

        Raises:
            KeyError: a value for a parameter nobody registered.
        """
        from peftsearch.spaces import RULES

        unknown = sorted(set(values) - set(RULES))
        if unknown:
            raise KeyError(f"unknown parameter {unknown[0]!r}; registered: {', '.join(RULES)}")
        out = {name: rule.default for name, rule in RULES.items()}
        out.update(values)
        modules = out.get("target_modules")
        if isinstance(modules, str):
            out["target_modules"] = [m.strip() for m in modules.split(",") if m.strip()]
        return cls(out)

    @property
    def kind(self) -> str:
        """``head``, ``lora``, ``prompt``, ``lora+prompt``, ... (see ``adapters.kind_of``)."""
        return adapters.kind_of(self)

    # -- frozen ---------------------------------------------------------------------------------

    def _frozen(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a TrialConfig is frozen; build another with TrialConfig.from_values")

    __setitem__ = __delitem__ = _frozen  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _frozen  # type: ignore[assignment]
    __ior__ = _frozen  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (TrialConfig, (dict(self),))

    def __copy__(self) -> TrialConfig:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TrialConfig:
        return self
