"""task generate: what each trial of the Pareto front writes for the first validation rows,
beside the reference and beside what the untrained model writes under the same template.
Every text is the user's or the model's: all of it is escaped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftsearch.reports.html.section import Drawn, Section, needs_trials
from peftsearch.reports.html.style import esc

if TYPE_CHECKING:
    from peftsearch.reports.figures import ReportData


def _input(value: Any) -> str:
    """A row's input texts: one column's text alone, several as ``column: text`` lines."""
    if isinstance(value, dict):
        if len(value) == 1:
            return esc(str(next(iter(value.values()))))
        return "<br>".join(f"{esc(str(k))}: {esc(str(v))}" for k, v in value.items())
    return esc(str(value))


def _trial_table(entry: dict[str, Any], metric: str) -> str:
    head = (
        f"<h3>Trial {entry['trial']}: {esc(metric)} {entry['metric']:.4f}, "
        f"{entry['trainable']:,} trainable parameters, template {esc(entry['template'])}</h3>"
    )
    rows = "".join(
        f"<tr><td>{_input(r.get('input'))}</td><td>{esc(str(r.get('reference')))}</td>"
        f"<td>{esc(str(r.get('output')))}</td>"
        f"<td>{'' if r.get('zero_shot') is None else esc(str(r['zero_shot']))}</td></tr>"
        for r in entry["rows"]
    )
    return (
        f'{head}<table class="examples" id="examples-{entry["trial"]}"><tr><th>input</th>'
        "<th>reference</th><th>trial writes</th><th>untrained writes</th></tr>"
        f"{rows}</table>"
    )


def _draw(view: tuple[list[dict[str, Any]], str]) -> Drawn:
    entries, metric = view
    return Drawn(
        "".join(_trial_table(e, metric) for e in entries),
        "For each trial on the Pareto front, the first validation rows it was scored on: "
        "the reference answer, what the trained trial wrote (greedy decoding, cut at the "
        "first end-of-sequence token) and what the untrained model wrote with the same "
        "template. The score compares the written text with the reference; read the rows "
        "to see what a point of the score means.",
    )


def _view(d: ReportData) -> tuple[list[dict[str, Any]], str] | None:
    return (d.examples, d.summary.metric) if d.examples else None


EXAMPLES = Section("examples", "What the front's trials write", needs_trials(_view), _draw)
