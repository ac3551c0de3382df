"""What the report is made of: a :class:`Section` computes its own plain data from the
:class:`~peftsearch.reports.figures.ReportData` (``compute``), then draws it as HTML (``draw``),
as optuna's visualization does ``_get_x_plot(_get_x_plot_info(...))``.

:mod:`peftsearch.reports.html.sections` lists them in page order, by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

from peftsearch.reports.html.style import esc, section_html

if TYPE_CHECKING:
    from peftsearch.reports.figures import ReportData

V = TypeVar("V")


class Drawn(NamedTuple):
    """A drawn section: its HTML below the heading, and how to read it (HTML, "" for none)."""

    body: str
    how: str = ""


@dataclass(frozen=True)
class Section(Generic[V]):
    """One ``<section>`` of the report.

    Attributes:
        name: its key in :data:`peftsearch.reports.html.sections.REGISTRY`.
        title: its ``<h2>`` (HTML); ``{metric}`` stands for the metric's name, escaped.
        compute: the plain data it draws, picked from the report data; None leaves the section
            out of the page.
        draw: that data as HTML.
        anchor: the ``id`` of the ``<section>`` ("" for none).
    """

    name: str
    title: str
    compute: Callable[[ReportData], V | None]
    draw: Callable[[V], Drawn]
    anchor: str = ""

    def render(self, data: ReportData) -> str:
        """The ``<section>`` drawn from ``data``, or "" when it has nothing to show."""
        view = self.compute(data)
        if view is None:
            return ""
        body, how = self.draw(view)
        title = self.title.format(metric=esc(data.summary.metric))
        return section_html(title, body, how, self.anchor)


def needs_trials(
    compute: Callable[[ReportData], V | None],
) -> Callable[[ReportData], V | None]:
    """``compute``, left out (None) while no trial has completed."""

    def compute_with_trials(data: ReportData) -> V | None:
        return compute(data) if data.pareto.points else None

    return compute_with_trials
