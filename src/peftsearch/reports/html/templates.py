"""The prompt templates compared: the trials coloured by template, and the metric's spread
per template with a table saying whether the evidence is enough to judge each one."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from peftsearch.reports.data.templates import FEW_PER_TEMPLATE
from peftsearch.reports.html.front import point_hover
from peftsearch.reports.html.section import Drawn, Section, needs_trials
from peftsearch.reports.html.style import PALETTE, box, esc, figure_html, layout, pesc

if TYPE_CHECKING:
    from peftsearch.reports.figures import ParetoInfo, ReportData, TemplateMetrics


class ByTemplateView(NamedTuple):
    info: ParetoInfo
    names: list[str]  # the templates, in the order of data.templates
    metric: str


def _by_template_figure(info: ParetoInfo, names: list[str], metric: str) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, name in enumerate(names):
        pts = [p for p in info.points if p.template == name]
        fig.add_trace(
            go.Scatter(
                x=[p.params for p in pts],
                y=[p.metric for p in pts],
                customdata=[p.trial for p in pts],
                hovertext=[point_hover(p, metric) for p in pts],
                hoverinfo="text",
                mode="markers",
                name=pesc(name),
                marker={
                    "color": PALETTE[i % len(PALETTE)],
                    "size": 10,
                    "symbol": ["circle-open" if p.dominated else "circle" for p in pts],
                    "line": {"width": 2},
                },
            )
        )
    layout(
        fig,
        xaxis={"type": "log", "title": {"text": "trainable parameters (log scale)"}},
        yaxis={"title": {"text": pesc(metric)}},
    )
    return figure_html(fig, "fig-templates")


def _draw_by_template(v: ByTemplateView) -> Drawn:
    return Drawn(
        box(_by_template_figure(v.info, v.names, v.metric)),
        "The same trials coloured by prompt template; filled dots are Pareto-optimal, "
        "open ones dominated. Click a legend entry to hide a template.",
    )


def _by_template_view(d: ReportData) -> ByTemplateView:
    return ByTemplateView(d.pareto, [g.template for g in d.templates], d.summary.metric)


BY_TEMPLATE = Section(
    "by_template", "Trials by template", needs_trials(_by_template_view), _draw_by_template
)


class PerTemplateView(NamedTuple):
    groups: list[TemplateMetrics]
    metric: str


def _distribution_figure(groups: list[TemplateMetrics], metric: str) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, g in enumerate(groups):
        if not g.metrics:  # only stopped trials: nothing to draw (the table below says so)
            continue
        fig.add_trace(
            go.Box(
                y=g.metrics,
                name=pesc(g.template),
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                customdata=g.trials,
                hovertext=[
                    f"<b>trial {n}</b><br>{pesc(metric)}: {m:.4f}<br>template: {pesc(g.template)}"
                    for n, m in zip(g.trials, g.metrics, strict=True)
                ],
                hoverinfo="text",
                marker={"color": PALETTE[i % len(PALETTE)], "size": 7},
                line={"color": PALETTE[i % len(PALETTE)]},
                showlegend=False,
            )
        )
    thin = [pesc(g.template) for g in groups if g.note]
    title = f"too few / too short to judge: {', '.join(thin)}" if thin else ""
    layout(
        fig,
        title={"text": title, "font": {"size": 13, "color": "#8a5a00"}},
        yaxis={"title": {"text": pesc(metric)}},
        xaxis={"title": {"text": "template"}},
    )
    return figure_html(fig, "fig-distribution")


def _evidence_table(groups: list[TemplateMetrics]) -> str:
    """Per template: completed and stopped trials, and whether that is enough to judge it."""
    head = "<tr><th>template</th><th>completed</th><th>stopped early</th><th>evidence</th></tr>"
    body = "".join(
        f'<tr><td>{esc(g.template)}</td><td class="num">{len(g.trials)}</td>'
        f'<td class="num">{len(g.stopped)}</td>'
        + (f'<td class="thin">{esc(g.note)}</td>' if g.note else "<td>enough to compare</td>")
        + "</tr>"
        for g in groups
    )
    return f'<table id="template-evidence">{head}{body}</table>'


def _draw_per_template(v: PerTemplateView) -> Drawn:
    return Drawn(
        box(_distribution_figure(v.groups, v.metric)) + _evidence_table(v.groups),
        "The spread of the metric over the completed trials of each template (box: "
        "quartiles and median; every trial is a dot; repeated configurations counted "
        "once). A template whose box sits higher tends to work better whatever the other "
        f"settings. With fewer than {FEW_PER_TEMPLATE} completed trials, or more trials "
        "stopped early than completed, a template is too few / too short to judge: the "
        "table says which.",
    )


def _per_template_view(d: ReportData) -> PerTemplateView:
    return PerTemplateView(d.templates, d.summary.metric)


PER_TEMPLATE = Section(
    "per_template", "{metric} per template", needs_trials(_per_template_view), _draw_per_template
)
