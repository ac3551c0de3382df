"""What an adapter kind is: the one interface every adapter module implements.

An adapter is one kind of trainable part a trial may put on the frozen base model (LoRA, a
soft prompt, the classification head, ...). Its module owns everything about it, so that a new
PEFT method is one file (see ``docs/ARCHITECTURE.md``, "Add a PEFT method"):

- its searchable parameters (:attr:`Adapter.rules`, in the space vocabulary) and the ranges a
  file without ``params:`` searches (:attr:`Adapter.defaults`);
- whether a trial uses it (:meth:`Adapter.used`), how it is named in the report, the export
  README and a trial's kind (:meth:`Adapter.describe`, :attr:`Adapter.size_param`);
- in the packed engine: its trainable tensors and their init (:meth:`Adapter.init`, fields of
  the stack named ``<name>`` or ``<name>.<...>``), its hooks on the base (:meth:`Adapter.attach`)
  and what they need per forward (:meth:`Adapter.prepare`);
- outside the engine (``search train`` of a classifier, export, the saved model): its peft
  config (:meth:`Adapter.peft_config`), or for an adapter peft has no config for, which
  parameters of a plain model it unfreezes (:meth:`Adapter.unfreeze`); and which parameters
  of a built model are its own (:meth:`Adapter.owns`), for their learning rate.

Nothing here imports torch or peft at import time: validating a space file registers the
adapters' parameters without loading either.
"""

from __future__ import annotations

from typing import Any, ClassVar

from peftsearch.spaces import Rule


class Adapter:
    """Base of every adapter kind; subclasses set the class attributes and override what they
    need (every method has a do-nothing default except :meth:`used`).

    Attributes:
        name: the adapter's name: its learning-rate part in the stack, the prefix of its
            tensors' field names, its word in a trial's kind (``lora+prompt``).
        label: how prose names it (``LoRA``, ``soft prompt``).
        config_class: peft's config class of it (``LoraConfig``), if peft has one.
        rules: its searchable parameters (name -> :class:`~peftsearch.spaces.Rule`).
        defaults: head kind -> the entries it adds to the default space.
        rate_param: the parameter holding its own peak learning rate; None or a null value
            falls back to ``learning_rate``.
        size_param: the parameter that says how big it is (shown in report tables), if any.
        short: how the line printed per trial names that size (``r 4``; default: the name).
        in_kind: whether it names a trial's kind (the head is in every classifier: not).
        method: it is a value of the ``adapter`` parameter (the weight adapter a trial
            trains: ``lora``, ``ia3``); the head and the soft prompt are not.
        shares: the method whose parameters it takes too (DoRA takes LoRA's).
        outer: its peft config wraps the model (prompt learning); the others are injected
            beneath it and saved in a sub-directory named after them.
        placement: the parameter that says where it goes (LoRA's ``target_modules``), if
            searched choices of it should be spanned by a new study's coverage trials.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    config_class: ClassVar[str] = ""
    rules: ClassVar[dict[str, Rule]] = {}
    defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    rate_param: ClassVar[str | None] = None
    size_param: ClassVar[str | None] = None
    short: ClassVar[str] = ""
    in_kind: ClassVar[bool] = True
    method: ClassVar[bool] = False
    shares: ClassVar[str | None] = None
    outer: ClassVar[bool] = False
    placement: ClassVar[str | None] = None

    # -- the trial ------------------------------------------------------------------------------

    def used(self, params: dict[str, Any]) -> bool:
        """Whether a trial of ``params`` trains this adapter."""
        raise NotImplementedError

    def describe(self, params: dict[str, Any]) -> str:
        """A short phrase for the export README (``LoRA r=4, alpha=16``)."""
        return self.name

    def where(self, params: dict[str, Any]) -> str:
        """Where a trial of ``params`` puts it, when that is a choice (LoRA's named target
        set other than peft's default: ``all-linear``); "" otherwise."""
        return ""

    def check(
        self, searched: dict[str, Any], model: Any, linears: list[str], task_type: Any, file: str
    ) -> None:
        """Raise :class:`~peftsearch.errors.SpaceError` when a value the space can give its
        parameters (``searched``: name -> fixed value or distribution) cannot work on
        ``model`` (a base model, possibly on the meta device; ``linears``: the names of its
        linear layers an adapter may target); run before any file exists."""

    def rate(self, params: dict[str, Any]) -> float:
        """The adapter's peak learning rate in a trial of ``params``."""
        own = params.get(self.rate_param) if self.rate_param else None
        return float(own if own is not None else params["learning_rate"])

    # -- learning-rate parts (a column of the stack's rates, a group of AdamW each) -------------

    @property
    def parts(self) -> tuple[str, ...]:
        """Its learning-rate parts: its name (one rate for all its tensors), or more where
        tensors train at rates of their own (LoRA+: B apart from A)."""
        return (self.name,)

    def rates(self, params: dict[str, Any]) -> dict[str, float]:
        """Each of its parts' peak learning rate in a trial of ``params``."""
        return {part: self.rate(params) for part in self.parts}

    def field_part(self, field: str) -> str:
        """The part of one of its stack fields (``lora.<layer>.B``)."""
        return self.name

    def param_part(self, parameter_name: str) -> str:
        """The part of one of its parameters in a built peft model (it :meth:`owns` it)."""
        return self.name

    # -- the packed engine ----------------------------------------------------------------------

    def attach(self, engine: Any) -> None:
        """Called once when an engine is built on a base model: register hooks that must be
        there from the start (``engine.hook(module, key, make)``: registered once per key)."""

    def init(self, engine: Any, slot: Any, gen: Any) -> dict[str, Any]:
        """The slot's initial tensors, by field name (each a ``torch.nn.Parameter``), drawn
        from ``gen`` only; ``slot.state[self.name]`` may hold what the hooks need later.
        Called in registry order, so each adapter's draws follow the previous ones'."""
        return {}

    def prepare(self, engine: Any, rows: Any, segments: list[tuple[Any, int]]) -> None:
        """Before a packed forward: put what this adapter's hooks need per batch row into
        ``rows.extra[self.name]`` (tensor ops, no loop over slots in the hooks)."""

    def virtual_tokens(self, slot: Any) -> int:
        """Columns this adapter puts in front of a slot's rows (a soft prompt's length)."""
        return 0

    # -- outside the engine -----------------------------------------------------------------------

    def peft_config(self, params: dict[str, Any], task_type: Any, model_config: Any) -> Any:
        """peft's config of this adapter for a trial (None: peft has none for it)."""
        return None

    def slot_config(self, slot: Any, task_type: Any, model_config: Any) -> Any:
        """peft's config of an engine slot's trained adapter (``search train`` of a verbalizer
        head saves the engine's result as peft adapters); default: :meth:`peft_config`."""
        return self.peft_config(slot.params, task_type, model_config)

    def load_slot(self, model: Any, slot: Any) -> None:
        """Copy an engine slot's trained tensors into ``model``, a peft model built with
        :meth:`slot_config` (and the other adapters' configs)."""
        raise NotImplementedError(f"adapter {self.name!r} cannot save an engine slot")

    def unfreeze(self, model: Any, params: dict[str, Any]) -> None:
        """An adapter without a peft config: make its parameters of the plain ``model``
        trainable (called after the peft configs are applied)."""

    def owns(self, parameter_name: str) -> bool:
        """Whether a trainable parameter of a built model is this adapter's (its learning
        rate); the parameters no adapter claims are the head's."""
        return False
