"""How the search progressed: each trial's metric with the best so far, the hypervolume per
trial and per training step spent, and the training-loss curves."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from peftsearch.reports.html.section import Drawn, Section, needs_trials
from peftsearch.reports.html.style import (
    FADED,
    FRONT,
    PALETTE,
    box,
    esc,
    figure_html,
    layout,
    pesc,
)

if TYPE_CHECKING:
    from peftsearch.reports.figures import History, LossCurve, ReportData, StepsHistory


class HistoryView(NamedTuple):
    history: History
    steps: StepsHistory
    metric: str


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
    layout(fig, height=560)
    span = (h.trials[-1] - h.trials[0]) if h.trials else 0
    fig.update_xaxes(tick0=0, dtick=max(1, math.ceil(span / 10)))  # whole trial numbers
    fig.update_xaxes(title_text="trial number", row=2, col=1)
    fig.update_yaxes(title_text=pesc(metric), row=1, col=1)
    fig.update_yaxes(title_text=f"{pesc(metric)} × decades", row=2, col=1)
    return figure_html(fig, "fig-history")


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
    layout(
        fig,
        height=320,
        showlegend=False,
        title={"text": "hypervolume against training steps spent", "font": {"size": 14}},
        xaxis={"title": {"text": "cumulative training steps (every finished trial)"}},
        yaxis={"title": {"text": f"{pesc(metric)} × decades"}},
    )
    return figure_html(fig, "fig-hv-steps")


def _draw_history(v: HistoryView) -> Drawn:
    metric, reference = v.metric, v.history.reference
    if v.steps.steps and v.steps.steps[-1] > 0:
        by_steps = box(_steps_history_figure(v.steps, metric))
        by_steps_how = (
            " Below: the same hypervolume against the training steps spent so far (every "
            "finished trial in the order it finished; stopped trials count the steps they "
            "ran, repeats none): the cost of the front in compute, not in trials."
        )
    else:
        by_steps, by_steps_how = "", ""
    return Drawn(
        box(_history_figure(v.history, metric)) + by_steps,
        f"Top: each trial's {esc(metric)} and the best so far. Bottom: the hypervolume of "
        f"the front so far, the area the front dominates in ({esc(metric)}, log10 "
        f"params) up to the reference point ({esc(metric)} "
        f"{reference[0]:g}, {reference[1]:,.0f} params, the "
        "base model's size); it grows whenever a trial improves the front. A flat tail "
        "means recent trials found nothing new." + by_steps_how,
    )


def _history_view(d: ReportData) -> HistoryView:
    return HistoryView(d.history, d.steps_history, d.summary.metric)


HISTORY = Section("history", "Optimization history", needs_trials(_history_view), _draw_history)


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
    layout(
        fig,
        xaxis={"title": {"text": "training step"}},
        yaxis={"title": {"text": "train loss"}},
    )
    return figure_html(fig, "fig-curves")


def _draw_loss(curves: list[LossCurve]) -> Drawn:
    return Drawn(
        box(_curves_figure(curves)),
        "The train loss of each trial by training step (averaged between points). "
        "Red: Pareto-optimal trials; grey: the others. A curve that does not fall "
        "suggests a learning rate too low, one that jumps up one too high.",
    )


LOSS = Section("loss", "Training loss", needs_trials(lambda d: d.curves or None), _draw_loss)
