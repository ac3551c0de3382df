"""``search dashboard``: optuna-dashboard on a study's storage, with its artifact store.

The server is optuna-dashboard's WSGI app (``optuna_dashboard.wsgi``) under the standard
library's threaded ``wsgiref`` server, which is what ``optuna-dashboard``'s own command runs.
It serves the study's trials and attributes and the artifacts in ``<output>/artifacts`` (see
:mod:`peftsearch.searcher.artifacts`). The dashboard can also change the study (notes, trial
states, deleting it), so it listens on loopback unless told otherwise.
"""

from __future__ import annotations

import ipaddress
import socketserver
import sys
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from peftsearch.errors import UserError
from peftsearch.searcher.storage import display_url, resolve_url, sqlite_path
from peftsearch.spaces import Space


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection never holds up Ctrl-C


class _QuietHandler(WSGIRequestHandler):
    """No access log: the page polls the API every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def load_existing_study(space: Space) -> Any:
    """The space's study, which must exist: opening the dashboard creates no file or study.

    The storage is the one ``search run`` used: ``study.storage``, else ``<output>/study.journal``
    if a parallel run made it, else ``<output>/study.db``.

    Raises:
        UserError: no such study (or no database file yet), or the storage cannot be opened;
            one line, the storage password masked.
    """
    url = resolve_url(space)
    db = sqlite_path(url)
    if db is not None and not db.is_file():  # SQLite would make an empty database here
        raise UserError(
            f"{space.file}: no study {space.study_name!r}: {db} does not exist; "
            "run `search run` first"
        )
    from peftsearch.searcher.opening import open_study

    return open_study(space, create=False)


def banner(study_name: str, storage_url: str, artifacts: Path, url: str) -> list[str]:
    """What ``serve`` prints when it starts (the storage password masked)."""
    return [
        f"optuna-dashboard for study {study_name!r} in {display_url(storage_url)}",
        f"artifacts: {artifacts}",
        f"open {url}  (Ctrl-C to stop)",
    ]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(space: Space, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard for the space's study until Ctrl-C.

    Args:
        space: a validated space whose study exists (``search run`` made it).
        host: the address to listen on.
        port: the port; 0 picks a free one (the printed URL has it).

    Raises:
        UserError: the study does not exist, the storage cannot be opened, or the address
            cannot be listened on.
    """
    study = load_existing_study(space)
    import warnings

    import optuna_dashboard

    from peftsearch.searcher.artifacts import artifact_dir, artifact_store

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental warnings on the storage
        app = optuna_dashboard.wsgi(study._storage, artifact_store=artifact_store(space))
    try:
        httpd = make_server(
            host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{httpd.server_port}/dashboard/studies/{study._study_id}"
    for line in banner(study.study_name, resolve_url(space), artifact_dir(space), url):
        print(line, flush=True)
    if not _loopback(host):
        print(
            f"warning: listening on {host}: anyone who can reach this port can change or delete "
            "the study; the dashboard has no login",
            file=sys.stderr,
            flush=True,
        )
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped", flush=True)
    finally:
        httpd.server_close()
