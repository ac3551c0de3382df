"""Opening a space's study: its storage reachable, its output directory writable, the study
created (with its two objectives) or loaded. Storage errors come out as one line with the
password masked."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

from peftsearch.errors import SpaceError, UserError
from peftsearch.searcher.storage import (
    Admission,
    journal_path,
    mask_url,
    open_storage,
    resolve_url,
    sqlite_path,
)
from peftsearch.spaces import Space

DIRECTIONS: list[Literal["maximize", "minimize"]] = ["maximize", "minimize"]  # metric, params


def _prepare_output(space: Space) -> Path:
    out = space.output_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise SpaceError(
            str(space.file), "output", f"cannot write there: {exc.strerror}", str(out)
        ) from None
    return out


def open_study(space: Space, create: bool = True) -> Any:
    """Create or load the space's study in its storage (no files are made when ``create`` is
    False and the study is missing: that raises UserError)."""
    import optuna

    url = resolve_url(space)
    journal = journal_path(url)
    if not create and journal is not None and not journal.is_file():
        raise UserError(
            f"{space.file}: no study {space.study_name!r}: {journal} does not exist; "
            "run `search run` first"
        )
    lock = None
    try:
        # Opening an RDB storage creates Optuna's tables if they are missing: workers starting
        # together on a fresh database (or `search report` while `search run` starts) would
        # all create them at once.
        lock = Admission(url, None)
        with lock():
            if not create:
                return optuna.load_study(study_name=space.study_name, storage=open_storage(url))
            study = optuna.create_study(
                study_name=space.study_name,
                storage=open_storage(url),
                directions=DIRECTIONS,
                load_if_exists=True,
            )
            names = [space.objectives.metric, "trainable_params"]
            if study.metric_names != names:  # optuna-dashboard shows these, not "Objective 0"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names(names)
            return study
    except KeyError:
        raise UserError(
            f"{space.file}: no study {space.study_name!r} in {mask_url(url)}; "
            "run `search run` first"
        ) from None
    except Exception as exc:  # sqlalchemy/driver errors: say what, never show the password
        raise _storage_error(space, url, exc) from None
    finally:
        if lock is not None:
            lock.close()


def _storage_error(space: Space, url: str, exc: BaseException) -> UserError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password:
        msg = msg.replace(str(password), "***")
    return UserError(f"{space.file}: study.storage: cannot open {mask_url(url)}: {msg}")


def check_storage(space: Space) -> None:
    """Fail on a storage that cannot be reached, before any file or study is made: a database
    server must answer, and a SQLite or journal file outside the output directory must have
    its directory."""
    url = resolve_url(space)
    path = journal_path(url) or sqlite_path(url)
    if path is not None:
        folder, out = path.parent.resolve(), space.output_dir.resolve()
        if folder != out and out not in folder.parents and not folder.is_dir():
            raise _storage_error(space, url, FileNotFoundError(f"no directory {folder}"))
        return
    if url.startswith("sqlite"):
        return  # in memory
    try:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        sqlalchemy.create_engine(url, poolclass=NullPool).connect().close()
    except Exception as exc:
        raise _storage_error(space, url, exc) from None
