"""The task kinds, one module each, registered in one place.

Built in: :mod:`.classify` (a new classification head), :mod:`.verbalize` (LM label
words) and :mod:`.generate` (written answers). A new kind is a subclass of :class:`Task` in
its own module and one :func:`register` call; ``docs/ARCHITECTURE.md`` has the checklist.
"""

from __future__ import annotations

from peftsearch.objectives.tasks._base import Task
from peftsearch.objectives.tasks.classify import Classify
from peftsearch.objectives.tasks.generate import Generate
from peftsearch.objectives.tasks.verbalize import Verbalize
from peftsearch.spaces import register_params, register_task

TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task kind: ``task: <name>`` becomes valid in a space file (on ``model.head:
    <task.head>``), and its parameters join the space vocabulary.

    Raises:
        ValueError: its name is taken, or one of its parameters is already someone's.
    """
    if not task.name or task.name in TASKS:
        raise ValueError(f"a task named {task.name!r} is already registered")
    register_params(f"task {task.name!r}", task.rules, task.defaults)
    register_task(task.name, task.head)
    TASKS[task.name] = task
    return task


def get(name: str) -> Task:
    """The registered task ``name``.

    Raises:
        KeyError: none of that name; the message lists the registered ones.
    """
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"no task {name!r}; registered: {', '.join(TASKS)}") from None


def for_lm_kind(lm_kind: str | None) -> Task:
    """The built-in task of a base of ``lm_kind`` (None: a sequence classifier; ``seq2seq``:
    an encoder-decoder, which only generates)."""
    if lm_kind is None:
        return TASKS["classify"]
    return TASKS["generate" if lm_kind == "seq2seq" else "verbalize"]


# The built-in kinds. A new one: its module, its import above and one line here.
register(Classify())
register(Verbalize())
register(Generate())

__all__ = ["TASKS", "Classify", "Generate", "Task", "Verbalize", "for_lm_kind", "get", "register"]
