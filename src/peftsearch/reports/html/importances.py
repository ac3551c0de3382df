"""Parameter importances: one bar chart per objective, with the note on what they leave out."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from peftsearch.reports.html.section import Drawn, Section, needs_trials
from peftsearch.reports.html.style import PALETTE, box, esc, figure_html, layout, pesc

if TYPE_CHECKING:
    from peftsearch.reports.figures import Importances, ReportData


class ImportancesView(NamedTuple):
    importances: list[Importances]  # one per objective
    stopped: int  # trials stopped early (not used)


def _importance_block(imp: Importances, index: int) -> str:
    import plotly.graph_objects as go

    title = f"<h3>{esc(imp.objective)}</h3>"
    note = f'<p class="note">{esc(imp.note)}</p>' if imp.note else ""
    if not imp.values:
        return box(title + note)
    names = list(imp.values)[::-1]  # most important on top
    fig = go.Figure(
        go.Bar(
            x=[imp.values[n] for n in names],
            y=[pesc(n) for n in names],
            orientation="h",
            marker={"color": PALETTE[index % len(PALETTE)]},
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    layout(
        fig,
        height=max(220, 60 + 40 * len(names)),
        xaxis={"title": {"text": "importance (sums to 1)"}, "range": [0, 1]},
        yaxis={"automargin": True},
        showlegend=False,
    )
    return box(title + figure_html(fig, f"fig-importance-{index}") + note)


def _draw(v: ImportancesView) -> Drawn:
    stopped = v.stopped
    return Drawn(
        '<div class="grid">'
        + "".join(_importance_block(imp, i) for i, imp in enumerate(v.importances))
        + "</div>",
        "How much each searched parameter decides reaching the best values of each "
        "objective (Optuna's PED-ANOVA on the COMPLETE trials only, repeated "
        "configurations counted once; a longer bar matters more). With few trials these "
        "are noisy."
        + (
            f" The {stopped} trial{' was' if stopped == 1 else 's were'} stopped early "
            "by successive halving and are not used: a parameter region that was "
            "stopped often is under-represented here."
            if stopped
            else ""
        ),
    )


def _view(d: ReportData) -> ImportancesView:
    return ImportancesView(d.importances, len(d.pruning.stopped))


IMPORTANCES = Section("importances", "Parameter importances", needs_trials(_view), _draw)
