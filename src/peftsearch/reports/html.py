"""The HTML report: one self-contained file (plotly.js inlined once) drawn from
:func:`peftsearch.reports.figures.compute_report`.

Every piece of user text (template names and texts, labels, the study name, failure reasons,
paths) is escaped, in the page and in plotly's hover and legend text alike: plotly renders a
subset of HTML there, so ``<``, ``>`` and ``&`` must not reach it raw.
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.reports.figures import (
    FEW_PER_TEMPLATE,
    ComputeSaved,
    History,
    Importances,
    LossCurve,
    ParetoInfo,
    ParetoPoint,
    PruningInfo,
    ReportData,
    RungScore,
    RungSummary,
    StepCurve,
    StepsHistory,
    StoppedTrial,
    Summary,
    TemplateMetrics,
    compute_report,
)

if TYPE_CHECKING:
    import optuna

PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
]
FRONT, FADED, KNEE = "#d62728", "rgba(120,120,120,0.35)", "#111111"
STOPPED = "rgba(120,120,120,0.6)"  # trials stopped early: grey, dashed
HEIGHT = 440
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #222; background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2.2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.lead { color: #555; margin-top: 0; }
p.how { color: #555; font-size: 0.92em; margin: 4px 0 0; }
p.note { color: #8a5a00; background: #fff6e0; padding: 8px 12px; border-radius: 4px; }
.figure { background: #fff; border: 1px solid #e4e4e4; border-radius: 6px; padding: 8px; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 0.9em; }
th, td { border: 1px solid #e2e2e2; padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.knee td { background: #fff3c4; }
td.thin { color: #8a5a00; }
code { background: #f2f2f2; padding: 1px 4px; border-radius: 3px; word-break: break-all; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; }
dl.facts dt { color: #666; }
dl.facts dd { margin: 0; }
"""


def esc(value: Any) -> str:
    """User text for an HTML page (quotes too: it may land in an attribute)."""
    return html.escape(str(value), quote=True)


def pesc(value: Any) -> str:
    """User text for plotly's text/hover/legend strings: ``<``, ``>`` and ``&`` escaped."""
    return html.escape(str(value), quote=False)


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e5 else f"{value:.4g}"
    return str(value)


def _short(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _hover(p: ParetoPoint, metric: str) -> str:
    """The hover text of one trial: objectives, then its whole config (escaped)."""
    pct = f" ({p.pct:.3f}% of base)" if p.pct is not None else ""
    lines = [
        f"<b>trial {p.trial}</b>{' (dominated)' if p.dominated else ' (Pareto-optimal)'}",
        f"{pesc(metric)}: {p.metric:.4f}",
        f"trainable params: {p.params:,}{pct}",
        f"template: {pesc(p.template)}",
    ]
    return "<br>".join(lines + _config_lines(p.config))


def _config_lines(config: dict[str, Any]) -> list[str]:
    """A trial's template text and parameters (not its template name), escaped for plotly."""
    lines = []
    if "template_text" in config:
        lines.append(f"text: {pesc(_short(str(config['template_text'])))}")
    for key, value in config.items():
        if key not in ("template", "template_text"):
            lines.append(f"{pesc(key)}: {pesc(_num(value))}")
    return lines


def _figure_html(fig: Any, div_id: str) -> str:
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=div_id,
            config=PLOT_CONFIG,
            default_width="100%",
        )
    )


def _layout(fig: Any, **kwargs: Any) -> None:
    fig.update_layout(
        template="plotly_white",
        height=kwargs.pop("height", HEIGHT),
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
        hoverlabel={"align": "left"},
        legend={"orientation": "h", "y": -0.18},
        **kwargs,
    )


def _section(title: str, body: str, how: str = "", anchor: str = "") -> str:
    anchor_attr = f' id="{anchor}"' if anchor else ""
    how_html = f'<p class="how">{how}</p>' if how else ""
    return f"<section{anchor_attr}><h2>{title}</h2>{body}{how_html}</section>"


def _box(inner: str) -> str:
    return f'<div class="figure">{inner}</div>'


def _pareto_figure(info: ParetoInfo, metric: str, confirmed: list[Any] | None = None) -> str:
    return _figure_html(pareto_figure(info, metric, confirmed), "fig-pareto")


def pareto_figure(info: ParetoInfo, metric: str, confirmed: list[Any] | None = None) -> Any:
    """The front against trainable parameters (log scale), every trial, the knee starred: the
    report's first figure, also stored for optuna-dashboard (``searcher/artifacts.py``).
    ``confirmed`` (:class:`~peftsearch.reports.confirmed.Confirmed`): each confirmed trial's
    mean over its seeds with a +- 1 std error bar, beside its search score."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for dominated, name, color, size in (
        (True, "dominated", FADED, 8),
        (False, "Pareto-optimal", FRONT, 11),
    ):
        pts = [p for p in info.points if p.dominated == dominated]
        fig.add_trace(
            go.Scatter(
                x=[p.params for p in pts],
                y=[p.metric for p in pts],
                customdata=[p.trial for p in pts],
                hovertext=[_hover(p, metric) for p in pts],
                hoverinfo="text",
                mode="markers",
                name=name,
                meta="trials",
                marker={"color": color, "size": size, "line": {"width": 0}},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[x for x, _ in info.front],
            y=[y for _, y in info.front],
            mode="lines",
            line_shape="hv",
            line={"color": FRONT, "width": 2},
            name="front",
            meta="front",
            hoverinfo="skip",
        )
    )
    if confirmed:
        fig.add_trace(
            go.Scatter(
                x=[c.trainable for c in confirmed],
                y=[c.mean for c in confirmed],
                error_y={"type": "data", "array": [c.std for c in confirmed], "visible": True},
                customdata=[c.trial for c in confirmed],
                hovertext=[
                    f"trial {c.trial}<br>confirmed {pesc(metric)} {c.mean:.4f} \u00b1 "
                    f"{c.std:.4f} ({c.n} seeds)<br>search {c.search:.4f}"
                    for c in confirmed
                ],
                hoverinfo="text",
                mode="markers",
                name="confirmed mean \u00b1 std",
                meta="confirmed",
                marker={"symbol": "diamond-open", "size": 12, "color": KNEE},
            )
        )
    knee = next((p for p in info.points if p.trial == info.knee), None)
    if knee is not None:
        fig.add_trace(
            go.Scatter(
                x=[knee.params],
                y=[knee.metric],
                customdata=[knee.trial],
                mode="markers",
                name=f"knee (trial {knee.trial})",
                meta="knee",
                hovertext=[_hover(knee, metric)],
                hoverinfo="text",
                marker={
                    "symbol": "star",
                    "size": 20,
                    "color": "#ffd000",
                    "line": {"color": KNEE, "width": 1.5},
                },
            )
        )
        fig.add_annotation(
            x=_log10(knee.params),
            y=knee.metric,
            text=f"knee: trial {knee.trial}",
            showarrow=True,
            arrowhead=2,
            ax=40,
            ay=40,
        )
    _layout(
        fig,
        xaxis={"type": "log", "title": {"text": "trainable parameters (log scale)"}},
        yaxis={"title": {"text": pesc(metric)}},
    )
    return fig


def _log10(x: float) -> float:
    return math.log10(max(x, 1))


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
                hovertext=[_hover(p, metric) for p in pts],
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
    _layout(
        fig,
        xaxis={"type": "log", "title": {"text": "trainable parameters (log scale)"}},
        yaxis={"title": {"text": pesc(metric)}},
    )
    return _figure_html(fig, "fig-templates")


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
    _layout(
        fig,
        title={"text": title, "font": {"size": 13, "color": "#8a5a00"}},
        yaxis={"title": {"text": pesc(metric)}},
        xaxis={"title": {"text": "template"}},
    )
    return _figure_html(fig, "fig-distribution")


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


def _importance_block(imp: Importances, index: int) -> str:
    import plotly.graph_objects as go

    title = f"<h3>{esc(imp.objective)}</h3>"
    note = f'<p class="note">{esc(imp.note)}</p>' if imp.note else ""
    if not imp.values:
        return _box(title + note)
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
    _layout(
        fig,
        height=max(220, 60 + 40 * len(names)),
        xaxis={"title": {"text": "importance (sums to 1)"}, "range": [0, 1]},
        yaxis={"automargin": True},
        showlegend=False,
    )
    return _box(title + _figure_html(fig, f"fig-importance-{index}") + note)


def _history_figure(h: History, metric: str) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=(f"{pesc(metric)}: each trial and best so far", "hypervolume so far"),
    )
    fig.add_trace(
        go.Scatter(
            x=h.trials,
            y=h.metric,
            mode="markers",
            name="trial",
            marker={"color": FADED, "size": 8},
            hovertemplate="trial %{x}: %{y:.4f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=h.trials,
            y=h.best_metric,
            mode="lines",
            line_shape="hv",
            name="best so far",
            line={"color": PALETTE[0], "width": 2},
            hovertemplate="after trial %{x}: best %{y:.4f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=h.trials,
            y=h.hypervolume,
            mode="lines+markers",
            line_shape="hv",
            name="hypervolume",
            line={"color": PALETTE[2], "width": 2},
            hovertemplate="after trial %{x}: %{y:.4f}<extra></extra>",
        ),
        row=2,
        col=1,
    )
    _layout(fig, height=560)
    span = (h.trials[-1] - h.trials[0]) if h.trials else 0
    fig.update_xaxes(tick0=0, dtick=max(1, math.ceil(span / 10)))  # whole trial numbers
    fig.update_xaxes(title_text="trial number", row=2, col=1)
    fig.update_yaxes(title_text=pesc(metric), row=1, col=1)
    fig.update_yaxes(title_text=f"{pesc(metric)} × decades", row=2, col=1)
    return _figure_html(fig, "fig-history")


def _steps_history_figure(h: StepsHistory, metric: str) -> str:
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Scatter(
            x=h.steps,
            y=h.hypervolume,
            mode="lines+markers",
            line_shape="hv",
            name="hypervolume",
            line={"color": PALETTE[2], "width": 2},
            hovertemplate="after %{x:,} training steps: %{y:.4f}<extra></extra>",
        )
    )
    _layout(
        fig,
        height=320,
        showlegend=False,
        title={"text": "hypervolume against training steps spent", "font": {"size": 14}},
        xaxis={"title": {"text": "cumulative training steps (every finished trial)"}},
        yaxis={"title": {"text": f"{pesc(metric)} × decades"}},
    )
    return _figure_html(fig, "fig-hv-steps")


def _step_hover(c: StepCurve, step: int, value: float, metric: str, last: bool) -> str:
    state = " (stopped here)" if c.stopped and last else " (final)" if last else " (rung)"
    params = "" if c.params is None else f"<br>trainable params: {c.params:,}"
    head = (
        f"<b>trial {c.trial}</b>{state}<br>step {step:,}: {pesc(metric)} {value:.4f}"
        f"{params}<br>template: {pesc(c.template)}"
    )
    return "<br>".join([head, *_config_lines(c.config)])


def _steps_figure(curves: list[StepCurve], metric: str) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    shown: set[str] = set()
    # Stopped (faded, dashed) first, so the completed trials are drawn on top.
    for c in sorted(curves, key=lambda c: (not c.stopped, c.pareto, c.trial)):
        kind = "stopped" if c.stopped else "Pareto-optimal" if c.pareto else "completed"
        color = STOPPED if c.stopped else FRONT if c.pareto else PALETTE[0]
        n = len(c.steps)
        fig.add_trace(
            go.Scatter(
                x=c.steps,
                y=c.metrics,
                mode="lines+markers",
                name=kind,
                legendgroup=kind,
                showlegend=kind not in shown,
                meta=kind,
                customdata=[c.trial] * n,
                hovertext=[
                    _step_hover(c, x, y, metric, i == n - 1)
                    for i, (x, y) in enumerate(zip(c.steps, c.metrics, strict=True))
                ],
                hoverinfo="text",
                line={"color": color, "width": 1.5, "dash": "dash" if c.stopped else "solid"},
                marker={"color": color, "size": 6, "symbol": "x" if c.stopped else "circle"},
            )
        )
        shown.add(kind)
    _layout(
        fig,
        xaxis={"title": {"text": "training step"}},
        yaxis={"title": {"text": pesc(metric)}},
    )
    return _figure_html(fig, "fig-steps")


def _rung_cell(scores: list[RungScore]) -> str:
    return "<br>".join(
        f"rung {r.rung} @ step {r.step:,}: {r.metric:.4f}"
        + ("" if r.peers is None else f" (vs {r.peers})")
        + (" – stopped" if r.stopped else "")
        + (" – ranked low, kept (coverage trial)" if r.protected else "")
        for r in scores
    )


def _peers(n: int | None) -> str:
    return "–" if n is None else f"{n} trial{'' if n == 1 else 's'}"


def _stopped_table(stopped: list[StoppedTrial], metric: str) -> str:
    head = (
        "<tr><th>trial</th><th>template</th><th>prompt_length</th><th>lora_r</th>"
        "<th>learning_rate</th><th>trainable params</th><th>stopped at rung</th>"
        f"<th>step</th><th>{esc(metric)} there</th><th>ranked against</th>"
        "<th>scores at each rung</th></tr>"
    )

    def step(t: StoppedTrial) -> str:
        if t.step is None:
            return "–"
        return f"{t.step:,}" + ("" if t.of is None else f" of {t.of:,}")

    body = "".join(
        f'<tr><td class="num">{t.trial}{" (coverage)" if t.coverage else ""}</td>'
        f"<td>{esc(_num(t.template))}</td>"
        f'<td class="num">{esc(_num(t.prompt_length))}</td>'
        f'<td class="num">{esc(_num(t.lora_r))}</td>'
        f'<td class="num">{esc(_num(t.learning_rate))}</td>'
        f'<td class="num">{_num(t.params)}</td>'
        f'<td class="num">{_num(t.rung)}</td>'
        f'<td class="num">{step(t)}</td>'
        f'<td class="num">{"–" if t.metric is None else f"{t.metric:.4f}"}</td>'
        f'<td class="num">{_peers(t.peers)}</td>'
        f"<td>{_rung_cell(t.rungs)}</td></tr>"
        for t in stopped
    )
    return f'<table id="stopped-table">{head}{body}</table>'


def _rung_table(p: PruningInfo, metric: str) -> str:
    head = (
        "<tr><th>rung</th><th>at step</th><th>trials scored</th><th>stopped there</th>"
        f"<th>went on</th><th>{esc(metric)}: lowest</th><th>median</th><th>highest</th></tr>"
    )

    def row(r: RungSummary) -> str:
        low, high = r.steps
        steps = f"{low:,}" if low == high else f"{low:,}–{high:,}"
        kept = f" ({r.protected} kept as coverage)" if r.protected else ""
        cells = [
            str(r.rung),
            steps,
            str(r.reached),
            str(r.stopped),
            f"{r.reached - r.stopped}{kept}",
            f"{r.metrics[0]:.4f}",
            f"{r.median:.4f}",
            f"{r.metrics[-1]:.4f}",
        ]
        return "<tr>" + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>"

    return f'<table id="rung-table">{head}{"".join(row(r) for r in p.rungs)}</table>'


def _steps_saved(c: ComputeSaved) -> str:
    """The summary line on training steps: run, planned, what stopping trials early saved."""
    if not c.trials or c.ratio is None:
        return ""
    line = (
        f"{c.steps_run:,} run of {c.steps_planned:,} planned ({c.ratio:.0%}) over {c.trials} trials"
    )
    if c.saved > 0:
        line += f"; stopping trials early saved {c.saved:,} steps ({1 - c.ratio:.0%})"
    return line


def _pruning_section(p: PruningInfo, curves: list[StepCurve], metric: str) -> str:
    n = len(p.stopped)
    if n:
        lead = (
            f"{n} trial{' was' if n == 1 else 's were'} stopped early by successive halving; "
            f"{'it is' if n == 1 else 'they are'} not on the front (a stopped trial has no "
            "final score)."
        )
        if p.repeats:
            lead += (
                f" {p.repeats} more repeated a stopped configuration and "
                f"{'was' if p.repeats == 1 else 'were'} not trained."
            )
    elif p.with_rungs:
        lead = f"Successive halving scored {p.with_rungs} trials at its rungs and stopped none."
    else:
        lead = "Pruning was off for this study or stopped nothing: no trial was stopped early."
    saved = _steps_saved(p.compute)
    body = f'<p class="note" id="pruning-note">{lead}</p>'
    if saved:
        body += f"<p>Training steps: {saved}.</p>"
    if curves:
        body += _box(_steps_figure(curves, metric))
    if p.stopped:
        body += "<h3>Stopped trials</h3>" + _stopped_table(p.stopped, metric)
    if p.rungs:
        body += "<h3>Rungs</h3>" + _rung_table(p, metric)
    return _section(
        "Stopped early (successive halving)",
        body,
        f"Each trial is scored on its eval rows at rungs (fractions of its own training steps) "
        f"and ranked against the trials that reached the same rung ({esc(metric)} up, "
        "trainable parameters down); the low-ranked ones stop there. The figure draws each "
        f"trial's {esc(metric)} against its training steps: completed trials run on to their "
        "final score, stopped ones (grey, dashed) end at the rung that stopped them. Hover a "
        "line for its configuration."
        if curves
        else "",
        "pruned",
    )


def _curves_figure(curves: list[LossCurve]) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    # Faded first so the Pareto curves are drawn on top.
    for c in sorted(curves, key=lambda c: (c.pareto, c.trial)):
        fig.add_trace(
            go.Scatter(
                x=c.steps,
                y=c.losses,
                mode="lines",
                name=f"trial {c.trial} ({pesc(c.template)})",
                customdata=[c.trial] * len(c.steps),
                line={"color": FRONT if c.pareto else FADED, "width": 2.5 if c.pareto else 1},
                showlegend=c.pareto,
                hovertemplate=(
                    f"trial {c.trial} ({pesc(c.template)})<br>"
                    "step %{x}: loss %{y:.4f}<extra></extra>"
                ),
            )
        )
    _layout(
        fig,
        xaxis={"title": {"text": "training step"}},
        yaxis={"title": {"text": "train loss"}},
    )
    return _figure_html(fig, "fig-curves")


def _table(rows: list[dict[str, Any]], knee: int | None, metric: str) -> str:
    verbalizers = any(r.get("verbalizer") is not None for r in rows)
    head = (
        f"<tr><th>trial</th><th>{esc(metric)}</th><th>trainable params</th><th>% of base</th>"
        f"<th>template</th>{'<th>verbalizer</th>' if verbalizers else ''}<th>prompt_length</th>"
        "<th>lora_r</th><th>learning_rate</th><th>train s</th><th>template text</th></tr>"
    )
    body = []
    for r in rows:
        is_knee = r["trial"] == knee
        pct, secs = r["trainable_pct"], r["train_seconds"]
        body.append(
            f"<tr{' class=knee' if is_knee else ''}>"
            f'<td class="num">{r["trial"]}{" ★ knee" if is_knee else ""}</td>'
            f'<td class="num">{r["metric"]:.4f}</td>'
            f'<td class="num">{r["trainable_params"]:,}</td>'
            f'<td class="num">{"" if pct is None else f"{pct:.3f}"}</td>'
            f"<td>{esc(r['template'])}</td>"
            + (f"<td>{esc(str(r.get('verbalizer')))}</td>" if verbalizers else "")
            + f'<td class="num">{esc(_num(r["prompt_length"]))}</td>'
            f'<td class="num">{esc(_num(r["lora_r"]))}</td>'
            f'<td class="num">{esc(_num(r["learning_rate"]))}</td>'
            f'<td class="num">{"" if secs is None else f"{secs:.1f}"}</td>'
            f"<td><code>{esc(r['template_text'] or '')}</code></td></tr>"
        )
    return f'<table id="pareto-table">{head}{"".join(body)}</table>'


def _zero_shot_figure(rows: list[dict[str, Any]], metric: str) -> str:
    """Per template x verbalizer: the untrained score beside the best trained trial's."""
    import plotly.graph_objects as go

    labels = [
        f"{pesc(r['template'])} × {pesc(r['verbalizer'])}"
        + (f" × {r['demos']} demos" if r.get("demos") else "")
        for r in rows
    ]
    fig = go.Figure()
    for key, name, color in (
        ("zero_shot", "zero-shot", FADED),
        ("best_trained", "best trained", FRONT),
    ):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[r[key] for r in rows],
                name=name,
                marker={"color": color},
                customdata=[r["best_trial"] if key == "best_trained" else None for r in rows],
                hovertemplate=f"%{{x}}<br>{name} {pesc(metric)}: %{{y:.4f}}<extra></extra>",
            )
        )
    _layout(
        fig,
        barmode="group",
        yaxis={"title": {"text": pesc(metric)}},
        xaxis={"title": {"text": "template × verbalizer"}},
    )
    return _figure_html(fig, "fig-zero-shot")


def _zero_shot_table(rows: list[dict[str, Any]], metric: str) -> str:
    def num(x: Any, fmt: str = "{:.4f}") -> str:
        return "" if x is None else fmt.format(x)

    demos = any(r.get("demos") for r in rows)
    head = (
        "<tr><th>template</th><th>verbalizer</th>"
        + ("<th>demos / class</th>" if demos else "")
        + f"<th>zero-shot {esc(metric)}</th>"
        f"<th>best trained {esc(metric)}</th><th>trial</th><th>gain</th></tr>"
    )
    body = "".join(
        f"<tr><td>{esc(r['template'])}</td><td>{esc(r['verbalizer'])}</td>"
        + (f'<td class="num">{int(r.get("demos") or 0)}</td>' if demos else "")
        + f'<td class="num">{num(r["zero_shot"])}</td>'
        f'<td class="num">{num(r["best_trained"])}</td>'
        f'<td class="num">{num(r["best_trial"], "{}")}</td>'
        f'<td class="num">{num(r["gain"], "{:+.4f}")}</td></tr>'
        for r in rows
    )
    return f'<table id="zero-shot">{head}{body}</table>'


def _found_words_table(found: dict[str, Any]) -> str:
    """The verbalizers found by the model per template, and each class's best words by
    likelihood ratio."""
    if not found:
        return ""
    rows = "".join(
        f"<tr><td>{esc(template)}</td><td>{esc(name)}</td><td>"
        + "; ".join(
            f"{esc(label)}: " + ", ".join(f"<code>{esc(repr(w))}</code>" for w in words)
            for label, words in by_label.items()
        )
        + "</td></tr>"
        for template, by_name in found.get("words", {}).items()
        for name, by_label in by_name.items()
    )
    ranking = "".join(
        f"<tr><td>{esc(template)}</td><td>{esc(label)}</td><td>"
        + ", ".join(f"<code>{esc(repr(w))}</code> {float(v):+.2f}" for w, v in ranked)
        + "</td></tr>"
        for template, by_label in found.get("ranking", {}).items()
        for label, ranked in by_label.items()
    )
    return (
        '<h3>Label words found by the model</h3><table id="found-words">'
        f"<tr><th>template</th><th>verbalizer</th><th>words</th></tr>{rows}</table>"
        '<table id="found-ranking"><tr><th>template</th><th>class</th><th>best words '
        f"(log-likelihood ratio over {len(found.get('rows', []))} train rows)</th></tr>"
        f"{ranking}</table>"
    )


def _json(value: Any) -> str:
    return esc(json.dumps(value, ensure_ascii=False, default=str))


def _facts(s: Summary, compute: ComputeSaved | None = None) -> str:
    c = s.counts
    counts = (
        f"{c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed, "
        f"{c['running']} running, {c['waiting']} waiting"
    )
    sizes = ", ".join(f"{esc(k)} {v:,}" for k, v in s.split_sizes.items())
    budget = ", ".join(f"{esc(k)} {esc(_num(v))}" for k, v in s.budget.items() if v is not None)
    sampler = "; ".join(
        esc(v) if k == "sampler" else f"{esc(k)} {_json(v)}"
        for k, v in s.sampler.items()
        if not (k == "sampler_kwargs" and not v)
    )
    space = "<br>".join(f"<code>{esc(k)}</code>: {_json(v)}" for k, v in s.search_space.items())
    versions = "<br>".join(
        ", ".join(f"{esc(k)} {esc(v)}" for k, v in vs.items())
        + (f" (trials {', '.join(map(str, ns))})" if len(s.versions) > 1 else "")
        for vs, ns in s.versions
    )
    items = [
        ("trials", counts),
        ("model", f"<code>{esc(s.model)}</code>" if s.model else ""),
        ("base parameters", f"{s.base_params:,}" if s.base_params else ""),
        ("data", f"<code>{esc(s.data_source)}</code>" if s.data_source else ""),
        ("data sha256", f"<code>{esc(s.data_sha256)}</code>" if s.data_sha256 else ""),
        ("labels", ", ".join(f"<code>{esc(x)}</code>" for x in s.labels)),
        ("split sizes", sizes),
        ("split", _json(s.split) if s.split else ""),
        ("budget per trial", budget),
        ("sampler", sampler),
        ("search space", space),
        ("total compute", f"{s.compute_seconds:,.1f} s (sum of trial times)"),
        ("training steps", _steps_saved(compute) if compute else ""),
        ("devices", ", ".join(esc(d) for d in s.devices)),
        ("versions", versions),
    ]
    return (
        '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items if v) + "</dl>"
    )


def _failures(s: Summary) -> str:
    if not s.failures:
        return "<p>No trial failed.</p>"
    rows = "".join(
        f'<tr><td class="num">{n}</td><td><code>{esc(reason)}</code></td></tr>'
        for reason, n in s.failures
    )
    return f'<table id="failures"><tr><th>trials</th><th>reason</th></tr>{rows}</table>'


def _full_table(full: list[Any], metric: str) -> str:
    """The full-budget runs (``search confirm --budget full``): one row per trial and epochs."""
    rows = []
    for f in full:
        (vm, vs), (tm, ts) = f.validation_mean_std, f.test_mean_std
        epochs = "the trial's" if f.epochs is None else str(f.epochs)
        rows.append(
            f'<tr><td class="num">{f.trial}</td><td class="num">{f.trainable:,}</td>'
            f'<td class="num">{epochs}</td><td class="num">{f.search:.4f}</td>'
            f'<td class="num">{vm:.4f} &plusmn; {vs:.4f}</td>'
            f'<td class="num">{tm:.4f} &plusmn; {ts:.4f}</td><td class="num">{f.n}</td>'
            f'<td class="num">{f.seconds / max(1, f.n):,.0f}</td></tr>'
        )
    return (
        "<h3>At the full budget</h3>"
        '<table id="confirmed-full"><tr><th>trial</th><th>trainable params</th><th>epochs</th>'
        f"<th>search {esc(metric)}</th><th>validation mean &plusmn; std</th>"
        f"<th>test mean &plusmn; std</th><th>runs</th><th>train s per run</th></tr>"
        f"{''.join(rows)}</table>"
        "<p>Trained as <code>search train</code> trains: the whole train split, the trial's "
        "learning rates, warm-up and decay over the whole run; scored on the whole validation "
        "split and the test split. These do not change the picks (a test score must not "
        "choose the model).</p>"
    )


def _confirmed_section(confirmed: list[Any], metric: str, full: list[Any] | None = None) -> str:
    from peftsearch.reports.confirmed import spearman

    if not confirmed:  # only full-budget runs
        return _section("Confirmed", _full_table(full or [], metric), anchor="confirmation")

    rows = "".join(
        f'<tr><td class="num">{c.trial}</td><td class="num">{c.trainable:,}</td>'
        f'<td class="num">{c.search:.4f}</td>'
        f'<td class="num">{c.mean:.4f} &plusmn; {c.std:.4f}</td><td class="num">{c.n}</td>'
        f'<td class="num">{c.mean - c.search:+.4f}</td></tr>'
        for c in confirmed
    )
    table = (
        '<table id="confirmed"><tr><th>trial</th><th>trainable params</th>'
        f"<th>search {esc(metric)}</th><th>confirmed mean &plusmn; std</th><th>runs</th>"
        f"<th>mean - search</th></tr>{rows}</table>"
    )
    rho = spearman([c.search for c in confirmed], [c.mean for c in confirmed])
    said = (
        f"<p>Rank correlation of the search's scores with the confirmed means (Spearman, "
        f"{len(confirmed)} trials): <b>{rho:.2f}</b> (1: the search ranked them as the "
        "confirmation does).</p>"
        if rho is not None
        else "<p>Fewer than three confirmed trials (or all tied): no rank correlation.</p>"
    )
    return _section(
        "Confirmed",
        table + said + (_full_table(full, metric) if full else ""),
        "<code>search confirm</code> trained these trials again on other seeds at the "
        "search's own budget and validation rows. The mean and spread count the search's run "
        "too; <code>search export --pick</code> ranks by these means where they exist. The "
        "front figure shows them as open diamonds with &plusmn; 1 std error bars.",
        "confirmation",
    )


def render(data: ReportData) -> str:
    """The whole page as a string (plotly.js inlined once, in the head)."""
    from plotly.offline import get_plotlyjs

    s, metric = data.summary, data.summary.metric
    stopped = len(data.pruning.stopped)
    parts = [
        _section("Summary", _facts(s, data.pruning.compute)),
    ]
    pruning = _pruning_section(data.pruning, data.step_curves, metric)
    steps = data.steps_history
    if steps.steps and steps.steps[-1] > 0:
        by_steps = _box(_steps_history_figure(steps, metric))
        by_steps_how = (
            " Below: the same hypervolume against the training steps spent so far (every "
            "finished trial in the order it finished; stopped trials count the steps they "
            "ran, repeats none): the cost of the front in compute, not in trials."
        )
    else:
        by_steps, by_steps_how = "", ""
    if data.pareto.points:
        names = [g.template for g in data.templates]
        parts += [
            _section(
                "Pareto front",
                _box(_pareto_figure(data.pareto, metric, data.confirmed)),
                f"Each dot is a completed trial: {esc(metric)} (up is better) against trainable "
                "parameters on a log scale (left is cheaper). Red dots are Pareto-optimal (no "
                "other trial beats them on one objective without losing on the other); grey "
                "ones are dominated. The red "
                "staircase is the front; the star is its knee, the best trade-off (the pick of "
                "<code>export --pick knee</code>). Hover a dot for its whole configuration.",
                "pareto",
            ),
            _section(
                "Pareto-optimal trials",
                _table(data.table, data.pareto.knee, metric),
                "The trials on the front, fewest trainable parameters first; the knee is "
                "highlighted.",
            ),
            _section(
                "Trials by template",
                _box(_by_template_figure(data.pareto, names, metric)),
                "The same trials coloured by prompt template; filled dots are Pareto-optimal, "
                "open ones dominated. Click a legend entry to hide a template.",
            ),
            _section(
                f"{esc(metric)} per template",
                _box(_distribution_figure(data.templates, metric))
                + _evidence_table(data.templates),
                "The spread of the metric over the completed trials of each template (box: "
                "quartiles and median; every trial is a dot; repeated configurations counted "
                "once). A template whose box sits higher tends to work better whatever the other "
                f"settings. With fewer than {FEW_PER_TEMPLATE} completed trials, or more trials "
                "stopped early than completed, a template is too few / too short to judge: the "
                "table says which.",
            ),
            *(
                [
                    _section(
                        "Zero-shot and trained, per template and verbalizer",
                        _box(_zero_shot_figure(data.zero_shot, metric))
                        + _zero_shot_table(data.zero_shot, metric)
                        + _found_words_table(data.found_words),
                        "The untrained language model's score for each template and verbalizer "
                        "(grey, scored once per study; with demonstrations searched, also with "
                        "each number of them per class) beside the best trained trial with the "
                        "same prompt (red), and what training added. No red bar or an empty "
                        "cell: no trained trial with that prompt yet. Verbalizers auto-N hold "
                        "label words the model found (verbalizers.auto): the likeliest words on "
                        "each class's train rows, ranked by how much likelier they are there "
                        "than on the other classes' rows.",
                    )
                ]
                if data.zero_shot
                else []
            ),
            _section(
                "Parameter importances",
                '<div class="grid">'
                + "".join(_importance_block(imp, i) for i, imp in enumerate(data.importances))
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
            ),
            _section(
                "Optimization history",
                _box(_history_figure(data.history, metric)) + by_steps,
                f"Top: each trial's {esc(metric)} and the best so far. Bottom: the hypervolume of "
                f"the front so far, the area the front dominates in ({esc(metric)}, log10 "
                f"params) up to the reference point ({esc(metric)} "
                f"{data.history.reference[0]:g}, {data.history.reference[1]:,.0f} params, the "
                "base model's size); it grows whenever a trial improves the front. A flat tail "
                "means recent trials found nothing new." + by_steps_how,
            ),
            pruning,
        ]
        if data.confirmed or data.full_confirmed:
            parts.insert(3, _confirmed_section(data.confirmed, metric, data.full_confirmed))
        if data.curves:
            parts.append(
                _section(
                    "Training loss",
                    _box(_curves_figure(data.curves)),
                    "The train loss of each trial by training step (averaged between points). "
                    "Red: Pareto-optimal trials; grey: the others. A curve that does not fall "
                    "suggests a learning rate too low, one that jumps up one too high.",
                )
            )
    else:
        parts.append(
            _section(
                "Pareto front", '<p class="note">No trial has completed yet.</p>', "", "pareto"
            )
        )
        parts.append(pruning)
    parts.append(
        _section(
            "Failures",
            _failures(s),
            "Every distinct reason a trial failed, with how many trials it stopped.",
        )
    )
    title = f"peftsearch report: {esc(s.study_name)}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        "</head><body><main>"
        f"<h1>{title}</h1>"
        f'<p class="lead">{esc(metric)} (maximized) against trainable parameters (minimized); '
        f"{s.counts['complete']} completed trials"
        + (f"; {stopped} stopped early by successive halving (not on the front)" if stopped else "")
        + ".</p>"
        + "".join(parts)
        + "</main></body></html>\n"
    )


def write_report(study: optuna.Study, path: Path) -> Path:
    """Write the HTML report of ``study`` to ``path`` atomically and return ``path``.

    The file is self-contained (plotly.js is inlined) and opens offline. The study's storage
    URL is not in it.
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
