"""The report's look and the small helpers every section uses: the page's CSS, the figure
colours and size, escaping (:func:`esc` for the page, :func:`pesc` for plotly's text), number
formatting, and the wrappers of a figure, a box and a ``<section>``."""

from __future__ import annotations

import html
import json
from typing import Any

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


def num(value: Any) -> str:
    """A value for a table cell: ints with thousands separators, floats to 3-4 digits, "–"
    for None. Not escaped."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e5 else f"{value:.4g}"
    return str(value)


def short(text: str, n: int = 120) -> str:
    """``text`` cut to ``n`` characters, an ellipsis marking the cut."""
    return text if len(text) <= n else text[: n - 1] + "…"


def json_text(value: Any) -> str:
    """``value`` as JSON, escaped for the page."""
    return esc(json.dumps(value, ensure_ascii=False, default=str))


def config_lines(config: dict[str, Any]) -> list[str]:
    """A trial's template text and parameters (not its template name), escaped for plotly."""
    lines = []
    if "template_text" in config:
        lines.append(f"text: {pesc(short(str(config['template_text'])))}")
    for key, value in config.items():
        if key not in ("template", "template_text"):
            lines.append(f"{pesc(key)}: {pesc(num(value))}")
    return lines


def figure_html(fig: Any, div_id: str) -> str:
    """A plotly figure as a ``<div id=div_id>`` and its script (plotly.js not included)."""
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=div_id,
            config=PLOT_CONFIG,
            default_width="100%",
        )
    )


def layout(fig: Any, **kwargs: Any) -> None:
    """The report's common plotly layout, ``kwargs`` added (``height`` overrides HEIGHT)."""
    fig.update_layout(
        template="plotly_white",
        height=kwargs.pop("height", HEIGHT),
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
        hoverlabel={"align": "left"},
        legend={"orientation": "h", "y": -0.18},
        **kwargs,
    )


def section_html(title: str, body: str, how: str = "", anchor: str = "") -> str:
    """One ``<section>``: its heading, body and "how to read it" line (all already HTML)."""
    anchor_attr = f' id="{anchor}"' if anchor else ""
    how_html = f'<p class="how">{how}</p>' if how else ""
    return f"<section{anchor_attr}><h2>{title}</h2>{body}{how_html}</section>"


def box(inner: str) -> str:
    """``inner`` in the white box figures are drawn in."""
    return f'<div class="figure">{inner}</div>'
