"""Library log noise off (used by the CLI and by worker processes, which the CLI does not run)."""

from __future__ import annotations


def quiet_libraries() -> None:
    """datasets' and transformers' progress bars and info logs off: our own progress shows."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
