"""What successive halving did: each trial's metric against its training steps, the trials
it stopped, its rungs, and the training steps it saved (:func:`steps_saved`, also a line of
the summary)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from peftsearch.objectives import adapters
from peftsearch.reports.html.section import Drawn, Section
from peftsearch.reports.html.style import (
    FRONT,
    PALETTE,
    STOPPED,
    box,
    config_lines,
    esc,
    figure_html,
    layout,
    num,
    pesc,
)
from peftsearch.reports.pareto import rates_text

if TYPE_CHECKING:
    from peftsearch.reports.figures import (
        ComputeSaved,
        PruningInfo,
        ReportData,
        RungScore,
        RungSummary,
        StepCurve,
        StoppedTrial,
    )


class PruningView(NamedTuple):
    pruning: PruningInfo
    curves: list[StepCurve]
    metric: str


def _step_hover(c: StepCurve, step: int, value: float, metric: str, last: bool) -> str:
    state = " (stopped here)" if c.stopped and last else " (final)" if last else " (rung)"
    params = "" if c.params is None else f"<br>trainable params: {c.params:,}"
    head = (
        f"<b>trial {c.trial}</b>{state}<br>step {step:,}: {pesc(metric)} {value:.4f}"
        f"{params}<br>template: {pesc(c.template)}"
    )
    return "<br>".join([head, *config_lines(c.config)])


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
    layout(
        fig,
        xaxis={"title": {"text": "training step"}},
        yaxis={"title": {"text": pesc(metric)}},
    )
    return figure_html(fig, "fig-steps")


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
    sizes = adapters.size_params()  # prompt_length, lora_r, ...: one column per adapter
    head = (
        "<tr><th>trial</th><th>template</th>"
        + "".join(f"<th>{esc(name)}</th>" for name in sizes)
        + "<th>learning rates</th><th>trainable params</th><th>stopped at rung</th>"
        f"<th>step</th><th>{esc(metric)} there</th><th>ranked against</th>"
        "<th>scores at each rung</th></tr>"
    )

    def step(t: StoppedTrial) -> str:
        if t.step is None:
            return "–"
        return f"{t.step:,}" + ("" if t.of is None else f" of {t.of:,}")

    body = "".join(
        f'<tr><td class="num">{t.trial}{" (coverage)" if t.coverage else ""}</td>'
        f"<td>{esc(num(t.template))}</td>"
        + "".join(f'<td class="num">{esc(num(t.sizes.get(name)))}</td>' for name in sizes)
        + f"<td>{esc(rates_text(t.rates))}</td>"
        f'<td class="num">{num(t.params)}</td>'
        f'<td class="num">{num(t.rung)}</td>'
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


def steps_saved(c: ComputeSaved) -> str:
    """The summary line on training steps: run, planned, what stopping trials early saved."""
    if not c.trials or c.ratio is None:
        return ""
    line = (
        f"{c.steps_run:,} run of {c.steps_planned:,} planned ({c.ratio:.0%}) over {c.trials} trials"
    )
    if c.saved > 0:
        line += f"; stopping trials early saved {c.saved:,} steps ({1 - c.ratio:.0%})"
    return line


def _lead(p: PruningInfo) -> str:
    """The section's note: how many trials were stopped, or why none was."""
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
    return lead


def _draw(v: PruningView) -> Drawn:
    p, curves, metric = v.pruning, v.curves, v.metric
    saved = steps_saved(p.compute)
    body = f'<p class="note" id="pruning-note">{_lead(p)}</p>'
    if saved:
        body += f"<p>Training steps: {saved}.</p>"
    if curves:
        body += box(_steps_figure(curves, metric))
    if p.stopped:
        body += "<h3>Stopped trials</h3>" + _stopped_table(p.stopped, metric)
    if p.rungs:
        body += "<h3>Rungs</h3>" + _rung_table(p, metric)
    return Drawn(
        body,
        f"Each trial is scored on its eval rows at rungs (fractions of its own training steps) "
        f"and ranked against the trials that reached the same rung ({esc(metric)} up, "
        "trainable parameters down); the low-ranked ones stop there. The figure draws each "
        f"trial's {esc(metric)} against its training steps: completed trials run on to their "
        "final score, stopped ones (grey, dashed) end at the rung that stopped them. Hover a "
        "line for its configuration."
        if curves
        else "",
    )


def _view(d: ReportData) -> PruningView:
    return PruningView(d.pruning, d.step_curves, d.summary.metric)


PRUNING = Section("pruning", "Stopped early (successive halving)", _view, _draw, anchor="pruned")
