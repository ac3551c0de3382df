"""Ctrl-C while trials run: raised at once, never lost, and held back over storage writes.

A trial stopped by Ctrl-C is marked with the :data:`INTERRUPTED` user attribute; it does not
count toward the budget and runs again on resume.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, TypeVar

INTERRUPTED = "interrupted"  # user attr on a trial stopped by Ctrl-C

_Guard = TypeVar("_Guard", bound="_OnSigint")


class _OnSigint:
    """Installs ``self._handler`` for SIGINT while inside; only the main thread receives
    signals, so elsewhere this installs nothing."""

    _old: Any = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        raise NotImplementedError

    def __enter__(self: _Guard) -> _Guard:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


class Sigint(_OnSigint):
    """Ctrl-C that cannot be lost while trials run.

    Python's default handler raises KeyboardInterrupt wherever the main thread happens to be;
    when that is a finalizer or weakref callback (sqlalchemy's connection pool runs some),
    Python prints "Exception ignored" and the run goes on: seen in CI, where a Ctrl-C'd
    ``search run`` finished its budget and exited 0. This handler raises the same way, at once,
    and also remembers the press (``seen``, for the process: :class:`_DeferSigint` records its
    presses there too), so :meth:`check`, called by the loop at every step and turn, raises it
    again if it was swallowed. Leaving forgets the press: it was raised by then.
    """

    seen = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        Sigint.seen = True
        raise KeyboardInterrupt

    @staticmethod
    def check() -> None:
        if Sigint.seen:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            Sigint.seen = False
        super().__exit__(*exc)


class _DeferSigint(_OnSigint):
    """Hold Ctrl-C back over a few storage writes that must not be cut in half.

    Inside, a first SIGINT only sets ``caught`` (and :attr:`Sigint.seen`); the caller acts on
    it afterwards (a second one raises as usual).
    """

    def __init__(self) -> None:
        self.caught = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.caught:  # pressed again: the user insists (a hung database, say)
            raise KeyboardInterrupt
        self.caught = Sigint.seen = True
