"""The prompt templates and the adapter methods compared: the trials coloured by template (by
method), and the metric's spread per template (per method) with a table saying whether the
evidence is enough to judge each one. The two views are twins: one grouping, two keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from peftsearch.reports.data.templates import FEW_PER_TEMPLATE
from peftsearch.reports.html.front import point_hover
from peftsearch.reports.html.section import Drawn, Section, needs_trials
from peftsearch.reports.html.style import PALETTE, box, esc, figure_html, layout, pesc

if TYPE_CHECKING:
    from peftsearch.reports.figures import ParetoInfo, ParetoPoint, ReportData, TemplateMetrics


class Grouping(NamedTuple):
    """What the twin views group by."""

    word: str  # "template", "method"
    key: Callable[[ParetoPoint], str]  # a point's group
    ids: str  # the suffix of the figures' and table's element ids ("" for templates)


TEMPLATE = Grouping("template", lambda p: p.template, "")
METHOD = Grouping("method", lambda p: p.method, "-methods")


class ByGroupView(NamedTuple):
    info: ParetoInfo
    names: list[str]  # the groups, in the order of their metrics list
    metric: str
    by: Grouping


def _by_group_figure(v: ByGroupView) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, name in enumerate(v.names):
        pts = [p for p in v.info.points if v.by.key(p) == name]
        fig.add_trace(
            go.Scatter(
                x=[p.params for p in pts],
                y=[p.metric for p in pts],
                customdata=[p.trial for p in pts],
                hovertext=[point_hover(p, v.metric) for p in pts],
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
        yaxis={"title": {"text": pesc(v.metric)}},
    )
    return figure_html(fig, "fig-templates" if v.by is TEMPLATE else f"fig{v.by.ids}")


def _draw_by_group(v: ByGroupView) -> Drawn:
    what = "prompt template" if v.by is TEMPLATE else "adapter method and where it goes"
    return Drawn(
        box(_by_group_figure(v)),
        f"The same trials coloured by {what}; filled dots are Pareto-optimal, "
        f"open ones dominated. Click a legend entry to hide a {v.by.word}.",
    )


class PerGroupView(NamedTuple):
    groups: list[TemplateMetrics]
    metric: str
    by: Grouping


def _distribution_figure(v: PerGroupView) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, g in enumerate(v.groups):
        if not g.metrics:  # only stopped trials: nothing to draw (the table below says so)
            continue
        fig.add_trace(
            go.Box(
                y=g.metrics,
                name=pesc(g.name),
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                customdata=g.trials,
                hovertext=[
                    f"<b>trial {n}</b><br>{pesc(v.metric)}: {m:.4f}<br>{v.by.word}: {pesc(g.name)}"
                    for n, m in zip(g.trials, g.metrics, strict=True)
                ],
                hoverinfo="text",
                marker={"color": PALETTE[i % len(PALETTE)], "size": 7},
                line={"color": PALETTE[i % len(PALETTE)]},
                showlegend=False,
            )
        )
    thin = [pesc(g.name) for g in v.groups if g.note]
    title = f"too few / too short to judge: {', '.join(thin)}" if thin else ""
    layout(
        fig,
        title={"text": title, "font": {"size": 13, "color": "#8a5a00"}},
        yaxis={"title": {"text": pesc(v.metric)}},
        xaxis={"title": {"text": v.by.word}},
    )
    return figure_html(fig, f"fig-distribution{v.by.ids}")


def _evidence_table(v: PerGroupView) -> str:
    """Per group: completed and stopped trials, and whether that is enough to judge it."""
    head = f"<tr><th>{v.by.word}</th><th>completed</th><th>stopped early</th><th>evidence</th></tr>"
    body = "".join(
        f'<tr><td>{esc(g.name)}</td><td class="num">{len(g.trials)}</td>'
        f'<td class="num">{len(g.stopped)}</td>'
        + (f'<td class="thin">{esc(g.note)}</td>' if g.note else "<td>enough to compare</td>")
        + "</tr>"
        for g in v.groups
    )
    return f'<table id="{v.by.word}-evidence">{head}{body}</table>'


def _draw_per_group(v: PerGroupView) -> Drawn:
    word = v.by.word
    return Drawn(
        box(_distribution_figure(v)) + _evidence_table(v),
        f"The spread of the metric over the completed trials of each {word} (box: "
        "quartiles and median; every trial is a dot; repeated configurations counted "
        f"once). A {word} whose box sits higher tends to work better whatever the other "
        f"settings. With fewer than {FEW_PER_TEMPLATE} completed trials, or more trials "
        f"stopped early than completed, a {word} is too few / too short to judge: the "
        "table says which."
        + (
            " A method's box mixes every size it was tried at: compare it on the front "
            "above, where size is the other axis."
            if v.by is METHOD
            else ""
        ),
    )


def _several_methods(d: ReportData) -> bool:
    return len(d.methods) > 1  # a single method has nothing to compare


BY_TEMPLATE = Section(
    "by_template",
    "Trials by template",
    needs_trials(
        lambda d: ByGroupView(d.pareto, [g.name for g in d.templates], d.summary.metric, TEMPLATE)
    ),
    _draw_by_group,
)
PER_TEMPLATE = Section(
    "per_template",
    "{metric} per template",
    needs_trials(lambda d: PerGroupView(d.templates, d.summary.metric, TEMPLATE)),
    _draw_per_group,
)
BY_METHOD = Section(
    "by_method",
    "Trials by adapter method",
    needs_trials(
        lambda d: (
            ByGroupView(d.pareto, [g.name for g in d.methods], d.summary.metric, METHOD)
            if _several_methods(d)
            else None
        )
    ),
    _draw_by_group,
)
PER_METHOD = Section(
    "per_method",
    "{metric} per adapter method",
    needs_trials(
        lambda d: PerGroupView(d.methods, d.summary.metric, METHOD) if _several_methods(d) else None
    ),
    _draw_per_group,
)
