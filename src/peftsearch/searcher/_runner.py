"""What the searcher needs of a runner (the thing that trains a configuration) and of a pack.

:class:`~peftsearch.objectives.runner.TrialRunner` is the real one; tests pass light fakes.
A runner needs only :class:`Runner`'s members. What more it can do is asked here, in one
place: :func:`packs` (``pack(size, on_rung)``: several trials trained together),
:func:`prunes` (``supports_rungs``: ``run`` and ``pack`` take an ``on_rung`` hook),
:func:`finds_words` (``verbalizers: {auto: ...}``) and :func:`scores_zero_shot` (``model.head``
verbalizer). None of these members is required: a runner without ``pack`` trains one trial at
a time (:class:`~peftsearch.searcher.packs.SequentialPack`), one without rungs is never pruned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, runtime_checkable

if TYPE_CHECKING:
    from peftsearch.spaces import Space

StepHook = Callable[[int, int], None]  # (step, total steps)
# (trial key, rung, step, metric, eval loss, trainable params) -> stop the trial now
RungHook = Callable[[Any, int, int, float, float, int], bool]
TrialRungHook = Callable[[int, int, float, float, int], bool]  # the same, for one trial


class Pack(Protocol):
    """Trials trained together: ``add`` up to ``capacity`` of them, ``step`` until they end."""

    @property
    def capacity(self) -> int: ...

    def __len__(self) -> int: ...

    def add(self, key: Any, params: dict[str, Any]) -> None: ...

    def step(self) -> Sequence[tuple[Any, Any]]:
        """Train a little; the trials that ended: (key, a result or the exception)."""
        ...

    def progress(self) -> Sequence[tuple[Any, int, int]]:
        """(key, step, total steps) of the trials in the pack."""
        ...

    def clear(self) -> None: ...


class Runner(Protocol):
    """The members every runner has. ``splits`` and ``base_params`` are read after ``setup``;
    ``run`` returns a result with ``metric``, ``trainable_params`` and ``attrs`` (``pruned``
    when a rung stopped it) or raises. ``space`` is set to the space with the found label
    words (``verbalizers: {auto: ...}``) before any trial runs."""

    space: Space

    @property
    def splits(self) -> Any: ...

    @property
    def base_params(self) -> int: ...

    def setup(self) -> None: ...

    def run(self, params: dict[str, Any], on_step: StepHook | None = None) -> Any: ...


@runtime_checkable
class _Packs(Protocol):
    def pack(self, size: int, on_rung: RungHook | None = None) -> Pack: ...


class RungRunner(Runner, Protocol):
    """A runner whose trials report at rungs, where the pruner may stop them."""

    supports_rungs: bool

    def run(
        self,
        params: dict[str, Any],
        on_step: StepHook | None = None,
        on_rung: TrialRungHook | None = None,
    ) -> Any: ...


@runtime_checkable
class _FindsWords(Protocol):
    def find_label_words(self) -> dict[str, Any]: ...


@runtime_checkable
class _ScoresZeroShot(Protocol):
    def zero_shot(self, n_demos: int = 0) -> dict[str, dict[str, float]]: ...


def packs(runner: object) -> TypeGuard[_Packs]:
    """Trains several trials together (``runner.pack(size, on_rung)``)."""
    return isinstance(runner, _Packs)


def prunes(runner: object) -> TypeGuard[RungRunner]:
    """Takes an ``on_rung`` hook: ``supports_rungs`` is true."""
    return bool(getattr(runner, "supports_rungs", False))


def finds_words(runner: object) -> TypeGuard[_FindsWords]:
    """Finds label words for ``verbalizers: {auto: ...}`` (``runner.find_label_words()``)."""
    return isinstance(runner, _FindsWords)


def scores_zero_shot(runner: object) -> TypeGuard[_ScoresZeroShot]:
    """Scores the templates x verbalizers untrained (``runner.zero_shot(n_demos)``)."""
    return isinstance(runner, _ScoresZeroShot)
