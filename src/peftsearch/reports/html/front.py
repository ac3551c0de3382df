"""The report's front: the Pareto figure (:func:`pareto_figure`, also stored for
optuna-dashboard) and the table of the Pareto-optimal trials."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

from peftsearch.objectives import adapters
from peftsearch.reports.html.section import Drawn, Section, needs_trials
from peftsearch.reports.html.style import (
    FADED,
    FRONT,
    KNEE,
    box,
    config_lines,
    esc,
    figure_html,
    layout,
    num,
    pesc,
)
from peftsearch.reports.pareto import rates_text, row_rates

if TYPE_CHECKING:
    from peftsearch.reports.figures import ParetoInfo, ParetoPoint, ReportData


def point_hover(p: ParetoPoint, metric: str) -> str:
    """The hover text of one trial: objectives, then its whole config (escaped)."""
    pct = f" ({p.pct:.3f}% of base)" if p.pct is not None else ""
    lines = [
        f"<b>trial {p.trial}</b>{' (dominated)' if p.dominated else ' (Pareto-optimal)'}",
        f"{pesc(metric)}: {p.metric:.4f}",
        f"trainable params: {p.params:,}{pct}",
        f"template: {pesc(p.template)}",
        f"method: {pesc(p.method)}",
    ]
    return "<br>".join(lines + config_lines(p.config))


def _log10(x: float) -> float:
    return math.log10(max(x, 1))


# A marker shape per method and placement (adapters.method_of), in the order the registry
# lists the methods; `none` (head and/or soft prompt only) is always the triangle.
SYMBOLS = ("circle", "diamond", "square", "cross", "triangle-down", "pentagon", "hexagon")
NONE_SYMBOL = "triangle-up"


def method_symbols(methods: list[str]) -> dict[str, str]:
    """Each method label of ``methods`` -> its marker shape on the front figure."""
    order = list(adapters.ADAPTERS)

    def rank(label: str) -> tuple[int, str]:
        name = label.split(" ")[0]
        return (order.index(name) if name in order else len(order), label)

    labels = sorted(set(methods) - {"none"}, key=rank)
    out = {label: SYMBOLS[i % len(SYMBOLS)] for i, label in enumerate(labels)}
    if "none" in methods:
        out["none"] = NONE_SYMBOL
    return out


def _add_method_legend(fig: Any, symbols: dict[str, str]) -> None:
    """One legend entry per marker shape (legend only: the points are drawn by state)."""
    import plotly.graph_objects as go

    for label, symbol in symbols.items():
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=pesc(label if label != "none" else "none (head / prompt only)"),
                meta="method",
                marker={"symbol": symbol, "color": "#555555", "size": 10},
                hoverinfo="skip",
            )
        )


def _add_points_and_front(fig: Any, info: ParetoInfo, metric: str) -> None:
    """The dominated and Pareto-optimal trials (shaped by method when there are several),
    then the front's staircase."""
    import plotly.graph_objects as go

    symbols = method_symbols([p.method for p in info.points])
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
                hovertext=[point_hover(p, metric) for p in pts],
                hoverinfo="text",
                mode="markers",
                name=name,
                meta="trials",
                marker={
                    "color": color,
                    "size": size,
                    "line": {"width": 0},
                    "symbol": [symbols[p.method] for p in pts],
                },
            )
        )
    if len(symbols) > 1:
        _add_method_legend(fig, symbols)
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


def _confirmed_trace(confirmed: list[Any], metric: str) -> Any:
    """Each confirmed trial's mean over its seeds, with a +- 1 std error bar."""
    import plotly.graph_objects as go

    return go.Scatter(
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


def _add_knee(fig: Any, knee: ParetoPoint, metric: str) -> None:
    """The knee as a star, with an arrow naming its trial."""
    import plotly.graph_objects as go

    fig.add_trace(
        go.Scatter(
            x=[knee.params],
            y=[knee.metric],
            customdata=[knee.trial],
            mode="markers",
            name=f"knee (trial {knee.trial})",
            meta="knee",
            hovertext=[point_hover(knee, metric)],
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


def pareto_figure(info: ParetoInfo, metric: str, confirmed: list[Any] | None = None) -> Any:
    """The front against trainable parameters (log scale), every trial, the knee starred.

    The report's first figure, also stored for optuna-dashboard (``searcher/artifacts.py``).

    Args:
        info: the trials, front and knee (:func:`peftsearch.reports.figures.pareto_info`).
        metric: the metric's name (escaped here).
        confirmed: :class:`~peftsearch.reports.confirmed.Confirmed` trials: each one's mean
            over its seeds with a +- 1 std error bar, beside its search score.

    Returns:
        A ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    _add_points_and_front(fig, info, metric)
    if confirmed:
        fig.add_trace(_confirmed_trace(confirmed, metric))
    knee = next((p for p in info.points if p.trial == info.knee), None)
    if knee is not None:
        _add_knee(fig, knee, metric)
    layout(
        fig,
        xaxis={"type": "log", "title": {"text": "trainable parameters (log scale)"}},
        yaxis={"title": {"text": pesc(metric)}},
    )
    return fig


class FrontView(NamedTuple):
    info: ParetoInfo
    metric: str
    confirmed: list[Any]  # reports.confirmed.Confirmed


def _draw_front(v: FrontView) -> Drawn:
    if not v.info.points:
        return Drawn('<p class="note">No trial has completed yet.</p>')
    return Drawn(
        box(figure_html(pareto_figure(v.info, v.metric, v.confirmed), "fig-pareto")),
        f"Each dot is a completed trial: {esc(v.metric)} (up is better) against trainable "
        "parameters on a log scale (left is cheaper). Red dots are Pareto-optimal (no "
        "other trial beats them on one objective without losing on the other); grey "
        "ones are dominated. A dot's shape is its adapter method and where it goes (the "
        "legend names them; a triangle trains only the head and/or a soft prompt). The red "
        "staircase is the front; the star is its knee, the best trade-off (the pick of "
        "<code>export --pick knee</code>). Hover a dot for its whole configuration.",
    )


PARETO = Section(
    "pareto",
    "Pareto front",
    lambda d: FrontView(d.pareto, d.summary.metric, d.confirmed),
    _draw_front,
    anchor="pareto",
)


class TableView(NamedTuple):
    rows: list[dict[str, Any]]  # pareto.pareto_rows
    knee: int | None
    metric: str


def _table(rows: list[dict[str, Any]], knee: int | None, metric: str) -> str:
    verbalizers = any(r.get("verbalizer") is not None for r in rows)
    sizes = adapters.size_params()  # prompt_length, lora_r, ...: one column per adapter
    # where the methods go (target_modules), shown when some front trial has a placement
    places = [p for p in adapters.placements().values() if any(r.get(p) for r in rows)]
    head = (
        f"<tr><th>trial</th><th>{esc(metric)}</th><th>trainable params</th><th>% of base</th>"
        f"<th>template</th>{'<th>verbalizer</th>' if verbalizers else ''}<th>kind</th>"
        + "".join(f"<th>{esc(name)}</th>" for name in sizes)
        + "".join(f"<th>{esc(name)}</th>" for name in places)
        + "<th>learning rates</th><th>train s</th><th>template text</th></tr>"
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
            + f"<td>{esc(str(r.get('kind')))}</td>"
            + "".join(f'<td class="num">{esc(num(r.get(name)))}</td>' for name in sizes)
            + "".join(f"<td>{esc(num(r.get(name)))}</td>" for name in places)
            + f"<td>{esc(rates_text(row_rates(r)))}</td>"
            f'<td class="num">{"" if secs is None else f"{secs:.1f}"}</td>'
            f"<td><code>{esc(r['template_text'] or '')}</code></td></tr>"
        )
    return f'<table id="pareto-table">{head}{"".join(body)}</table>'


def _draw_table(v: TableView) -> Drawn:
    return Drawn(
        _table(v.rows, v.knee, v.metric),
        "The trials on the front, fewest trainable parameters first; the knee is highlighted.",
    )


def _table_view(d: ReportData) -> TableView:
    return TableView(d.table, d.pareto.knee, d.summary.metric)


PARETO_TABLE = Section(
    "pareto_table", "Pareto-optimal trials", needs_trials(_table_view), _draw_table
)
