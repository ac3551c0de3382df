"""The Pareto front of a finished (or running) study, as plain rows; CSV and terminal table."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from peftsearch.objectives import adapters
from peftsearch.reports.trials import front_trials


def columns() -> list[str]:
    """The CSV's columns: the trial's kind (its adapters: ``lora``, ``ia3+prompt``, ``head``),
    each registered adapter's size (``prompt_length``, ``lora_r``, ...), where the method goes
    (``target_modules``), then one learning rate per adapter (``lr_lora``, ``lr_head``, ...:
    empty where the trial does not train that adapter)."""
    return [
        "trial",
        "metric",
        "trainable_params",
        "trainable_pct",
        "template",
        "verbalizer",
        "kind",
        *adapters.size_params(),
        *adapters.placements().values(),
        *rate_columns(),
        "train_seconds",
        "template_text",
    ]


def rate_columns() -> list[str]:
    """``lr_<adapter>`` for every registered adapter, in registry order."""
    return [f"lr_{name}" for name in adapters.ADAPTERS]


def rates_text(rates: dict[str, float]) -> str:
    """``lora 1.6e-03, head 5.5e-02``: each trained adapter's learning rate."""
    return ", ".join(f"{name} {rate:.1e}" for name, rate in rates.items())


def pareto_rows(study: Any) -> list[dict[str, Any]]:
    """One row per Pareto-optimal trial (metric max, params min), fewest parameters first."""
    from peftsearch.reports.trials import trial_params

    rows = []
    for t in front_trials(study):
        params = trial_params(study, t)
        rows.append(
            {
                "trial": t.number,
                "metric": t.values[0],
                "trainable_params": int(t.values[1]),
                "trainable_pct": t.user_attrs.get("trainable_pct"),
                "template": params.get("template"),
                "verbalizer": params.get("verbalizer"),  # model.head verbalizer only
                "kind": adapters.kind_of(params),
                **adapters.sizes(params),
                **adapters.places(params),
                **{f"lr_{name}": rate for name, rate in adapters.trained_rates(params).items()},
                "train_seconds": t.user_attrs.get("train_seconds"),
                "template_text": t.user_attrs.get("template_text"),
            }
        )
    rows.sort(key=lambda r: (r["trainable_params"], -r["metric"], r["trial"]))
    return rows


def row_rates(row: dict[str, Any]) -> dict[str, float]:
    """A row's ``lr_<adapter>`` entries back as adapter -> rate (the trained ones)."""
    return {col.removeprefix("lr_"): row[col] for col in rate_columns() if row.get(col) is not None}


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Write ``rows`` to ``path`` atomically (a temp file renamed over it)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            frame.to_csv(f, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_table(rows: list[dict[str, Any]], metric: str) -> Any:
    """A rich Table of the front (the CLI prints it)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Pareto front: {escape(metric)} (max) vs trainable parameters (min)")
    verbalizers = any(r.get("verbalizer") is not None for r in rows)
    places = [p for p in adapters.placements().values() if any(r.get(p) for r in rows)]
    for col, justify in [
        ("trial", "right"),
        (escape(metric), "right"),
        ("params", "right"),
        ("% base", "right"),
        ("template", "left"),
        *([("verbalizer", "left")] if verbalizers else []),
        ("kind", "left"),
        *((name, "right") for name in adapters.size_params()),
        *((name, "left") for name in places),
        ("learning rates", "left"),
        ("train s", "right"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        pct = r["trainable_pct"]
        table.add_row(
            str(r["trial"]),
            f"{r['metric']:.4f}",
            f"{r['trainable_params']:,}",
            f"{pct:.3f}" if pct is not None else "",
            escape(str(r["template"])),
            *([escape(str(r.get("verbalizer")))] if verbalizers else []),
            str(r.get("kind")),
            *(str(r.get(name)) for name in adapters.size_params()),
            *(str(r.get(name) or "") for name in places),
            rates_text(row_rates(r)),
            f"{r['train_seconds']:.1f}" if r["train_seconds"] is not None else "",
        )
    return table
