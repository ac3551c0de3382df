"""Where the study lives, and the one lock that keeps its trial budget exact.

Storages, by URL:

- ``sqlite:///path`` (the default, ``<output>/study.db``): one worker process.
- ``postgresql://user:password@host/db``: any number of workers on any number of hosts.
- ``journal:///abs/path`` or a bare file path: Optuna's ``JournalStorage`` on a
  ``JournalFileBackend``, for several worker processes on one host (``search run --workers N``
  uses ``<output>/study.journal`` when no storage is given; SQLite is not safe for that).
  optuna-dashboard opens the same file given as a path.

Heartbeats are on for all of them: a trial whose process died stops beating, is marked FAIL by
``optuna.storages.fail_stale_trials`` after ``GRACE_SECONDS``, and
``RetryHeartbeatStaleTrialCallback`` enqueues its parameters again, so a killed run loses
nothing. Optuna 5 has heartbeats for RDB storages only; :class:`HeartbeatJournalStorage` adds
them to the journal with the same interface.

``PEFTSEARCH_HEARTBEAT_SECONDS`` and ``PEFTSEARCH_GRACE_SECONDS`` (whole seconds) override the
defaults below, e.g. to recover from dead workers faster in tests. Every worker of a study
should use the same values.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _env_seconds(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of seconds (got {raw!r})") from None
    if value < 1:
        raise ValueError(f"{name} must be >= 1 (got {value})")
    return value


HEARTBEAT_SECONDS = _env_seconds("PEFTSEARCH_HEARTBEAT_SECONDS", 10)  # a tiny write per trial
GRACE_SECONDS = _env_seconds("PEFTSEARCH_GRACE_SECONDS", 30)  # silent this long: worker gone
MAX_RETRY = 3  # a config that kills its worker every time is not retried forever
JOURNAL_NAME = "study.journal"  # <output>/study.journal: the default storage of --workers N
HEARTBEAT_ATTR = "peftsearch:heartbeat"  # system attr: the last beat of a journal trial (time)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs, errors and reports."""
    if url.startswith("journal://") or "://" not in url:
        return url  # a file path: nothing secret in it
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # not a SQLAlchemy URL: hide everything between '://' and '@'
        head, sep, rest = url.partition("://")
        return f"{head}{sep}***@{rest.split('@', 1)[1]}" if sep and "@" in rest else url
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def journal_path(url: str) -> Path | None:
    """The journal file of ``journal:///path`` or of a bare path; None for database URLs."""
    if url.startswith("journal://"):
        return Path(url[len("journal://") :])
    if "://" not in url:
        return Path(url)
    return None


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URL; None for other URLs and in-memory ones."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    try:
        db = make_url(url).database
    except Exception:
        return None
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def display_url(url: str) -> str:
    """What to show a user (and give optuna-dashboard): the password masked, a journal as its
    file path."""
    path = journal_path(url)
    return str(path) if path is not None else mask_url(url)


def resolve_url(space: Any) -> str:
    """The storage URL of ``space``'s study.

    With no ``study.storage``, the study is ``<output>/study.journal`` if a parallel run made
    that file, else the SQLite default, ``space.storage_url``.
    """
    if space.study.storage:
        return str(space.study.storage)
    journal = (space.output_dir / JOURNAL_NAME).resolve()
    if journal.is_file():
        return f"journal://{journal}"
    return str(space.storage_url)


def default_journal_url(space: Any) -> str:
    """``journal:///<output>/study.journal``: where a parallel run on one host keeps its study."""
    return f"journal://{(space.output_dir / JOURNAL_NAME).resolve()}"


def _journal_storage_class() -> Any:
    """Optuna's JournalStorage with heartbeats, built on first use (optuna imports lazily)."""
    global _JOURNAL_CLASS
    if _JOURNAL_CLASS is not None:
        return _JOURNAL_CLASS
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat  # the interface RDBStorage implements
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        """A journal whose running trials beat: a system attr holds the time of the last beat.

        A RUNNING trial is stale when neither its last beat nor its start (a retried trial
        inherits its predecessor's attrs) is within ``grace`` seconds. Wall-clock times of one
        host, which is what a journal file is for.
        """

        def __init__(
            self, backend: Any, interval: int, grace: int, callback: Callable[..., None] | None
        ) -> None:
            super().__init__(backend)
            self._interval, self._grace, self._callback = interval, grace, callback

        def record_heartbeat(self, trial_id: int) -> None:
            # Another worker may have declared it stale already: nothing to keep alive then.
            with contextlib.suppress(UpdateFinishedTrialError, KeyError):
                self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            stale = []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                started = t.datetime_start.timestamp() if t.datetime_start else 0.0
                last = max(float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0)), started)
                if now - last > self._grace:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self._interval

        def get_heartbeat_stale_trial_callback(self) -> Callable[..., None] | None:
            return self._callback

    _JOURNAL_CLASS = HeartbeatJournalStorage
    return _JOURNAL_CLASS


_JOURNAL_CLASS: Any = None
_RDB_CLASS: Any = None


def _rdb_storage_class() -> Any:
    """Optuna's RDBStorage whose trials beat from the moment they run.

    Optuna's RDB never declares a RUNNING trial without a heartbeat row stale, and ``ask()``
    samples the parameters between creating the trial and returning it: a worker killed in
    that window would leave a trial RUNNING for ever, holding a slot of the budget. So the first
    beat is written as soon as a trial is created RUNNING or taken from the queue.
    """
    global _RDB_CLASS
    if _RDB_CLASS is not None:
        return _RDB_CLASS
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState

    class HeartbeatRDBStorage(RDBStorage):
        def _create_new_trial(self, study_id: int, template_trial: Any = None) -> Any:
            frozen = super()._create_new_trial(study_id, template_trial)
            if frozen.state == TrialState.RUNNING and self.heartbeat_interval is not None:
                self.record_heartbeat(frozen._trial_id)
            return frozen

        def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
            changed = super().set_trial_state_values(trial_id, state, values)
            if changed and state == TrialState.RUNNING and self.heartbeat_interval is not None:
                self.record_heartbeat(trial_id)
            return bool(changed)

        def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
            """Many user attributes in one statement. Optuna writes each in its own transaction
            after a lookup of the trial (0.45 ms per attribute on SQLite here, some 20 per
            trial); one multi-row upsert takes a fraction of that (benchmarks/RESULTS.md).
            Other databases than SQLite and PostgreSQL: one transaction, Optuna's statements."""
            import json

            from optuna.storages._rdb import models
            from optuna.storages._rdb.storage import _create_scoped_session

            model = models.TrialUserAttributeModel
            rows = [
                {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                for k, v in attrs.items()
            ]
            with _create_scoped_session(self.scoped_session, True) as session:
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                self.check_trial_is_updatable(trial_id, trial.state)  # type: ignore[arg-type]
                if self.engine.name in ("sqlite", "postgresql") and rows:
                    from sqlalchemy.dialects import postgresql, sqlite

                    dialect: Any = sqlite if self.engine.name == "sqlite" else postgresql
                    stmt = dialect.insert(model).values(rows)
                    stmt = stmt.on_conflict_do_update(
                        index_elements=[model.trial_id, model.key],
                        set_={"value_json": stmt.excluded.value_json},
                    )
                    session.execute(stmt)
                    return
                for key, value in attrs.items():
                    self._set_trial_attr_without_commit(session, model, trial_id, key, value)

    _RDB_CLASS = HeartbeatRDBStorage
    return _RDB_CLASS


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url`` with heartbeats and retry of stale trials."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        # Heartbeats are marked experimental in optuna 5; they are the documented way to
        # recover trials of dead workers, and our tests pin the behaviour we rely on.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        path = journal_path(url)
        if path is not None:
            from optuna.storages.journal import JournalFileBackend

            if not path.parent.is_dir():
                raise FileNotFoundError(f"no directory {path.parent}")
            return _journal_storage_class()(
                JournalFileBackend(str(path)), HEARTBEAT_SECONDS, GRACE_SECONDS, retry
            )
        return _rdb_storage_class()(
            url,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=retry,
        )


def set_user_attrs(study: Any, trial: Any, attrs: dict[str, Any]) -> None:
    """``trial.set_user_attr`` for each item; one transaction where the storage can."""
    backend = getattr(study._storage, "_backend", study._storage)  # under Optuna's cache
    if hasattr(backend, "set_trial_user_attrs"):
        backend.set_trial_user_attrs(trial._trial_id, attrs)
    else:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)


class Admission:
    """A lock over one study, shared by all its workers wherever they run.

    ``study.n_trials`` must come out exact with many workers: a worker counts the trials that
    count or are running and asks for a new one only if that is below the budget. Two workers
    doing that at the same moment would both take the last slot, so "count, then ask" runs
    under this lock. It lives with the storage, so every process that can reach the study
    takes the same one:

    - PostgreSQL: a transaction-scoped advisory lock keyed by the study name (released by the
      server if the worker's connection dies);
    - SQLite and journal files: ``flock`` on ``.<file>.lock`` beside the file (released by
      the kernel if the process dies);
    - other databases: a lock of this process only; ``exact`` is False and the caller says so.
    """

    def __init__(self, url: str, study_name: str | None) -> None:
        """``study_name`` None: a lock over the whole storage (creating Optuna's tables)."""
        self.exact = True
        self._local = threading.Lock()
        self._engine: Any = None
        self._file: Path | None = None
        name = "storage" if study_name is None else f"study:{study_name}"
        digest = hashlib.sha256(f"peftsearch-admission:{name}".encode()).digest()
        self._key = int.from_bytes(digest[:8], "big", signed=True)
        path = journal_path(url) or sqlite_path(url)
        if path is not None:
            self._file = path.parent / f".{path.name}.lock"
        elif url.startswith("postgresql"):
            import sqlalchemy

            self._engine = sqlalchemy.create_engine(url, pool_size=1, pool_pre_ping=True)
        elif not url.startswith("sqlite"):  # sqlite in memory: one process anyway
            self.exact = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._local:  # threads of one process (tests run workers as threads)
            if self._engine is not None:
                import sqlalchemy

                with self._engine.begin() as conn:
                    lock = sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)")
                    conn.execute(lock, {"k": self._key})
                    yield
            elif self._file is not None and self._file.parent.is_dir():  # else: no file yet
                import fcntl

                with open(self._file, "a") as f:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                    try:
                        yield
                    finally:
                        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            else:
                yield

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
