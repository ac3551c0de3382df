"""The confirmed trials (``search confirm``): each one's search score beside its mean over
extra seeds, how well the search ranked them, and the full-budget runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from peftsearch.reports.html.section import Drawn, Section, needs_trials
from peftsearch.reports.html.style import esc

if TYPE_CHECKING:
    from peftsearch.reports.figures import ReportData


class ConfirmedView(NamedTuple):
    confirmed: list[Any]  # reports.confirmed.Confirmed, fewest trainable params first
    full: list[Any]  # reports.confirmed.FullConfirmed
    metric: str


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


def _confirmed_table(confirmed: list[Any], metric: str) -> str:
    """One row per confirmed trial, then the rank correlation of search and confirmation."""
    from peftsearch.reports.confirmed import spearman

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
    return table + said


def _draw(v: ConfirmedView) -> Drawn:
    if not v.confirmed:  # only full-budget runs
        return Drawn(_full_table(v.full, v.metric))
    return Drawn(
        _confirmed_table(v.confirmed, v.metric) + (_full_table(v.full, v.metric) if v.full else ""),
        "<code>search confirm</code> trained these trials again on other seeds at the "
        "search's own budget and validation rows. The mean and spread count the search's run "
        "too; <code>search export --pick</code> ranks by these means where they exist. The "
        "front figure shows them as open diamonds with &plusmn; 1 std error bars.",
    )


def _view(d: ReportData) -> ConfirmedView | None:
    if not (d.confirmed or d.full_confirmed):
        return None
    return ConfirmedView(d.confirmed, d.full_confirmed, d.summary.metric)


CONFIRMED = Section("confirmed", "Confirmed", needs_trials(_view), _draw, anchor="confirmation")
