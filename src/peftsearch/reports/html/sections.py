"""The report's sections, by name (:data:`REGISTRY`), and the order the page shows them in
(:data:`SECTIONS`). A section with nothing to show (no completed trial yet, no confirmation,
no zero-shot scores, no loss curves) leaves itself out."""

from __future__ import annotations

from typing import Any

from peftsearch.reports.html.confirmed import CONFIRMED
from peftsearch.reports.html.examples import EXAMPLES
from peftsearch.reports.html.facts import FAILURES, SUMMARY
from peftsearch.reports.html.front import PARETO, PARETO_TABLE
from peftsearch.reports.html.history import HISTORY, LOSS
from peftsearch.reports.html.importances import IMPORTANCES
from peftsearch.reports.html.pruning import PRUNING
from peftsearch.reports.html.section import Section
from peftsearch.reports.html.templates import BY_METHOD, BY_TEMPLATE, PER_METHOD, PER_TEMPLATE
from peftsearch.reports.html.zero_shot import ZERO_SHOT

REGISTRY: dict[str, Section[Any]] = {
    s.name: s
    for s in (
        SUMMARY,
        PARETO,
        PARETO_TABLE,
        EXAMPLES,
        CONFIRMED,
        BY_TEMPLATE,
        PER_TEMPLATE,
        BY_METHOD,
        PER_METHOD,
        ZERO_SHOT,
        IMPORTANCES,
        HISTORY,
        PRUNING,
        LOSS,
        FAILURES,
    )
}

# The page, top to bottom.
SECTIONS: tuple[str, ...] = (
    "summary",
    "pareto",
    "pareto_table",
    "examples",
    "confirmed",
    "by_template",
    "per_template",
    "by_method",
    "per_method",
    "zero_shot",
    "importances",
    "history",
    "pruning",
    "loss",
    "failures",
)
