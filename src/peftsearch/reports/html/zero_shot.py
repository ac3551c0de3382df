"""model.head verbalizer: the untrained model's score per template and verbalizer beside the
best trained trial's, and the label words the model found (``verbalizers.auto``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from peftsearch.reports.html.section import Drawn, Section, needs_trials
from peftsearch.reports.html.style import FADED, FRONT, box, esc, figure_html, layout, pesc

if TYPE_CHECKING:
    from peftsearch.reports.figures import ReportData


class ZeroShotView(NamedTuple):
    rows: list[dict[str, Any]]  # figures.zero_shot_rows
    found: dict[str, Any]  # figures.found_words
    metric: str


def _zero_shot_figure(rows: list[dict[str, Any]], metric: str) -> str:
    """Per template x verbalizer: the untrained score beside the best trained trial's."""
    import plotly.graph_objects as go

    words = _has_verbalizers(rows)
    labels = [
        pesc(r["template"])
        + (f" × {pesc(r['verbalizer'])}" if words else "")
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
    layout(
        fig,
        barmode="group",
        yaxis={"title": {"text": pesc(metric)}},
        xaxis={"title": {"text": "template × verbalizer" if words else "template"}},
    )
    return figure_html(fig, "fig-zero-shot")


def _has_verbalizers(rows: list[dict[str, Any]]) -> bool:
    """False for a task without verbalizers (text generation: the key ``None``)."""
    return any(r["verbalizer"] != "None" for r in rows)


def _zero_shot_table(rows: list[dict[str, Any]], metric: str) -> str:
    def num(x: Any, fmt: str = "{:.4f}") -> str:
        return "" if x is None else fmt.format(x)

    demos = any(r.get("demos") for r in rows)
    words = _has_verbalizers(rows)
    head = (
        "<tr><th>template</th>"
        + ("<th>verbalizer</th>" if words else "")
        + ("<th>demos / class</th>" if demos else "")
        + f"<th>zero-shot {esc(metric)}</th>"
        f"<th>best trained {esc(metric)}</th><th>trial</th><th>gain</th></tr>"
    )
    body = "".join(
        f"<tr><td>{esc(r['template'])}</td>"
        + (f"<td>{esc(r['verbalizer'])}</td>" if words else "")
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


def _draw(v: ZeroShotView) -> Drawn:
    return Drawn(
        box(_zero_shot_figure(v.rows, v.metric))
        + _zero_shot_table(v.rows, v.metric)
        + _found_words_table(v.found),
        "The untrained language model's score for each template and verbalizer "
        "(grey, scored once per study; with demonstrations searched, also with "
        "each number of them per class) beside the best trained trial with the "
        "same prompt (red), and what training added. No red bar or an empty "
        "cell: no trained trial with that prompt yet. Verbalizers auto-N hold "
        "label words the model found (verbalizers.auto): the likeliest words on "
        "each class's train rows, ranked by how much likelier they are there "
        "than on the other classes' rows.",
    )


def _view(d: ReportData) -> ZeroShotView | None:
    return ZeroShotView(d.zero_shot, d.found_words, d.summary.metric) if d.zero_shot else None


ZERO_SHOT = Section(
    "zero_shot",
    "Zero-shot and trained, per template and verbalizer",
    needs_trials(_view),
    _draw,
)
