"""The study's facts: the summary (model, data, budget, sampler, search space, compute,
devices, versions) and the reasons trials failed. The storage URL is never among them."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from peftsearch.reports.html.pruning import steps_saved
from peftsearch.reports.html.section import Drawn, Section
from peftsearch.reports.html.style import esc, json_text, num

if TYPE_CHECKING:
    from peftsearch.reports.figures import ComputeSaved, Summary


class FactsView(NamedTuple):
    summary: Summary
    compute: ComputeSaved | None


def _counts(s: Summary) -> str:
    c = s.counts
    return (
        f"{c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed, "
        f"{c['running']} running, {c['waiting']} waiting"
    )


def _sampler(s: Summary) -> str:
    return "; ".join(
        esc(v) if k == "sampler" else f"{esc(k)} {json_text(v)}"
        for k, v in s.sampler.items()
        if not (k == "sampler_kwargs" and not v)
    )


def _versions(s: Summary) -> str:
    return "<br>".join(
        ", ".join(f"{esc(k)} {esc(v)}" for k, v in vs.items())
        + (f" (trials {', '.join(map(str, ns))})" if len(s.versions) > 1 else "")
        for vs, ns in s.versions
    )


def _facts(s: Summary, compute: ComputeSaved | None = None) -> str:
    sizes = ", ".join(f"{esc(k)} {v:,}" for k, v in s.split_sizes.items())
    budget = ", ".join(f"{esc(k)} {esc(num(v))}" for k, v in s.budget.items() if v is not None)
    space = "<br>".join(f"<code>{esc(k)}</code>: {json_text(v)}" for k, v in s.search_space.items())
    items = [
        ("trials", _counts(s)),
        ("model", f"<code>{esc(s.model)}</code>" if s.model else ""),
        ("base parameters", f"{s.base_params:,}" if s.base_params else ""),
        ("data", f"<code>{esc(s.data_source)}</code>" if s.data_source else ""),
        ("data sha256", f"<code>{esc(s.data_sha256)}</code>" if s.data_sha256 else ""),
        ("labels", ", ".join(f"<code>{esc(x)}</code>" for x in s.labels)),
        ("split sizes", sizes),
        ("split", json_text(s.split) if s.split else ""),
        ("budget per trial", budget),
        ("sampler", _sampler(s)),
        ("search space", space),
        ("total compute", f"{s.compute_seconds:,.1f} s (sum of trial times)"),
        ("training steps", steps_saved(compute) if compute else ""),
        ("devices", ", ".join(esc(d) for d in s.devices)),
        ("versions", _versions(s)),
    ]
    return (
        '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items if v) + "</dl>"
    )


SUMMARY = Section(
    "summary",
    "Summary",
    lambda d: FactsView(d.summary, d.pruning.compute),
    lambda v: Drawn(_facts(v.summary, v.compute)),
)


def _failures(s: Summary) -> str:
    if not s.failures:
        return "<p>No trial failed.</p>"
    rows = "".join(
        f'<tr><td class="num">{n}</td><td><code>{esc(reason)}</code></td></tr>'
        for reason, n in s.failures
    )
    return f'<table id="failures"><tr><th>trials</th><th>reason</th></tr>{rows}</table>'


FAILURES = Section(
    "failures",
    "Failures",
    lambda d: d.summary,
    lambda s: Drawn(
        _failures(s), "Every distinct reason a trial failed, with how many trials it stopped."
    ),
)
