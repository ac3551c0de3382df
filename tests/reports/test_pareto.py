"""Pareto rows from a study with known values; CSV and table output."""

from __future__ import annotations

import csv

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution

from peftsearch.reports import columns, pareto_rows, render_table, write_csv

# (metric, params): the front is {A, B, D}; C is dominated by B, E by D.
POINTS = {
    "A": (0.60, 800),
    "B": (0.75, 5_000),
    "C": (0.70, 9_000),
    "D": (0.80, 70_000),
    "E": (0.80, 90_000),
}


def _study() -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("fixed_params", {"prompt_length": 0})
    dists = {
        "template": CategoricalDistribution(["plain", "[b]bold[/b]"]),
        "lora_r": CategoricalDistribution([0, 4]),
        "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
    }
    for i, (name, (metric, params)) in enumerate(POINTS.items()):
        study.add_trial(
            optuna.trial.create_trial(
                values=[metric, params],
                distributions=dists,
                params={
                    "template": "[b]bold[/b]" if name == "B" else "plain",
                    "lora_r": 4 if params > 1000 else 0,
                    "learning_rate": 1e-3 * (i + 1),
                },
                user_attrs={
                    "trainable_pct": params / 1e5,
                    "train_seconds": 1.5,
                    "template_text": f"tmpl {name}",
                },
            )
        )
    return study


def test_rows_are_the_front_sorted_by_params() -> None:
    rows = pareto_rows(_study())
    assert [(r["metric"], r["trainable_params"]) for r in rows] == [
        POINTS["A"],
        POINTS["B"],
        POINTS["D"],
    ]
    assert [r["trial"] for r in rows] == [0, 1, 3]
    assert rows[0]["prompt_length"] == 0  # fixed params come from the study attribute
    assert rows[1]["lora_r"] == 4 and rows[1]["template_text"] == "tmpl B"
    assert [r["kind"] for r in rows] == ["head", "lora", "lora"]  # the trial's adapters
    # each trained adapter's own rate; none for LoRA in the head-only trial (it never used it)
    assert [(r.get("lr_lora"), r.get("lr_head")) for r in rows] == [
        (None, 1e-3),
        (2e-3, 2e-3),
        (4e-3, 4e-3),
    ]
    assert [r.get("target_modules") for r in rows] == [None, "default", "default"]


def test_csv_has_every_column_and_no_temp_file(tmp_path) -> None:
    rows = pareto_rows(_study())
    path = tmp_path / "sub" / "pareto.csv"
    write_csv(rows, path)
    with path.open() as f:
        back = list(csv.DictReader(f))
    assert list(back[0]) == columns()
    assert columns()[5:10] == ["verbalizer", "kind", "prompt_length", "lora_r", "target_modules"]
    assert {"lr_lora", "lr_head", "lr_prompt", "lr_ia3", "lr_dora"} <= set(columns())
    assert [r["lr_lora"] for r in back] == ["", "0.002", "0.004"]
    assert [int(r["trial"]) for r in back] == [0, 1, 3]
    assert sorted(p.name for p in path.parent.iterdir()) == ["pareto.csv"]


def test_table_shows_user_text_literally() -> None:
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(render_table(pareto_rows(_study()), "accuracy"))
    text = console.export_text()
    assert "[b]bold[/b]" in text  # rich markup in a template name is not interpreted
    assert "70,000" in text and "0.8000" in text
    assert "lora 2.0e-03, head 2.0e-03" in text and "head 1.0e-03" in text
