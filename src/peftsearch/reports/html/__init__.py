"""The HTML report: one self-contained file (plotly.js inlined once) drawn from
:func:`peftsearch.reports.figures.compute_report`.

The page is a list of sections (:mod:`.sections`), each computing its plain data from the
report data and drawing it (:mod:`.section`), grouped by theme: :mod:`.front`,
:mod:`.templates`, :mod:`.confirmed`, :mod:`.zero_shot`, :mod:`.importances`,
:mod:`.history`, :mod:`.pruning`, :mod:`.facts`; the CSS and shared helpers are in
:mod:`.style`. This module assembles the page (:func:`render`) and writes it
(:func:`write_report`).

Every piece of user text (template names and texts, labels, the study name, failure reasons,
paths) is escaped, in the page and in plotly's hover and legend text alike: plotly renders a
subset of HTML there, so ``<``, ``>`` and ``&`` must not reach it raw.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from peftsearch.reports.figures import ReportData, compute_report
from peftsearch.reports.html.front import pareto_figure
from peftsearch.reports.html.sections import REGISTRY, SECTIONS
from peftsearch.reports.html.style import (
    CSS,
    FADED,
    FRONT,
    HEIGHT,
    KNEE,
    PALETTE,
    PLOT_CONFIG,
    STOPPED,
    esc,
    pesc,
)

if TYPE_CHECKING:
    import optuna

__all__ = [
    "CSS",
    "FADED",
    "FRONT",
    "HEIGHT",
    "KNEE",
    "PALETTE",
    "PLOT_CONFIG",
    "REGISTRY",
    "SECTIONS",
    "STOPPED",
    "esc",
    "pareto_figure",
    "pesc",
    "render",
    "write_report",
]


def _lead(data: ReportData) -> str:
    s, stopped = data.summary, len(data.pruning.stopped)
    return (
        f'<p class="lead">{esc(s.metric)} (maximized) against trainable parameters (minimized); '
        f"{s.counts['complete']} completed trials"
        + (f"; {stopped} stopped early by successive halving (not on the front)" if stopped else "")
        + ".</p>"
    )


def render(data: ReportData, sections: Sequence[str] = SECTIONS) -> str:
    """The whole page as a string (plotly.js inlined once, in the head).

    Args:
        data: what to draw (:func:`peftsearch.reports.figures.compute_report`).
        sections: the names of the sections to draw (:data:`.sections.REGISTRY`), top to
            bottom; each leaves itself out when it has nothing to show.

    Returns:
        The HTML document.
    """
    from plotly.offline import get_plotlyjs

    title = f"peftsearch report: {esc(data.summary.study_name)}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        "</head><body><main>"
        f"<h1>{title}</h1>"
        + _lead(data)
        + "".join(REGISTRY[name].render(data) for name in sections)
        + "</main></body></html>\n"
    )


def write_report(study: optuna.Study, path: Path) -> Path:
    """Write the HTML report of ``study`` to ``path`` atomically and return ``path``.

    The file is self-contained (plotly.js is inlined) and opens offline. The study's storage
    URL is not in it.

    Args:
        study: the search's study.
        path: where to write (its folder is made; an existing file keeps its mode).

    Returns:
        ``path``.
    """
    page = render(compute_report(study))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes the file private (0600); a report is meant to be shared and opened.
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
