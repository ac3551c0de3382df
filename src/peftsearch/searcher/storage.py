"""Where the study lives: an Optuna RDB storage (SQLite by default, PostgreSQL for many workers).

Heartbeats are on: a trial whose process died stops beating, is marked FAIL by
``optuna.storages.fail_stale_trials`` after ``GRACE_SECONDS``, and
``RetryHeartbeatStaleTrialCallback``
enqueues its parameters again, so a killed run loses nothing.
"""

from __future__ import annotations

from typing import Any

HEARTBEAT_SECONDS = 10  # one tiny UPDATE per running trial every 10 s
GRACE_SECONDS = 30  # a trial silent this long is stale: its worker is gone
MAX_RETRY = 3  # a config that kills its worker every time is not retried forever


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs, errors and reports."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # not a SQLAlchemy URL: hide everything between '://' and '@'
        head, sep, rest = url.partition("://")
        return f"{head}{sep}***@{rest.split('@', 1)[1]}" if sep and "@" in rest else url
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def open_storage(url: str) -> Any:
    """An RDB storage with heartbeats and retry of stale trials."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        # Heartbeats are marked experimental in optuna 5; they are the documented way to
        # recover trials of dead workers, and our tests pin the behaviour we rely on.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRY
            ),
        )
