"""The HTML report file: self-contained, escaped, one Pareto point per trial, written atomically."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from plotly.offline import get_plotlyjs

from peftsearch.reports import html as report_html
from peftsearch.reports.html import write_report

optuna.logging.set_verbosity(optuna.logging.WARNING)

EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
FIGURES = [
    "fig-pareto",
    "fig-templates",
    "fig-distribution",
    "fig-importance-0",
    "fig-importance-1",
    "fig-history",
    "fig-curves",
]


def _study(name: str = "known", n: int = 6, evil: bool = False) -> optuna.Study:
    """``n`` complete trials (trials 1 and 4 dominated), a failed and a pruned one."""
    bad = EVIL if evil else "plain"
    study = optuna.create_study(study_name=name, directions=["maximize", "minimize"])
    study.set_user_attr("metric", "accuracy")
    study.set_user_attr("base_params", 100_000)
    study.set_user_attr("model", f"/models/{EVIL}" if evil else "/models/m")
    study.set_user_attr(
        "data",
        {"source": "/d.csv", "sizes": {"trial_train": 40}, "labels": [EVIL if evil else "a", "b"]},
    )
    study.set_user_attr(
        "space",
        {"study": {"sampler": "tpe", "storage": "postgresql://u:hunter2@host/db", "seed": 0}},
    )
    dists = {
        "template": CategoricalDistribution([bad, "review"]),
        "lora_r": CategoricalDistribution([0, 4, 8]),
        "learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
    }
    values = [(0.6, 100), (0.55, 400), (0.7, 500), (0.8, 4_000), (0.75, 9_000), (0.85, 20_000)]
    for i in range(n):
        metric, params = values[i % len(values)]
        study.add_trial(
            create_trial(
                values=[metric, params + 1000 * (i // len(values))],
                distributions=dists,
                params={
                    "template": bad if i % 2 == 0 else "review",
                    "lora_r": [0, 4, 8][i % 3],
                    "learning_rate": 1e-3,
                },
                user_attrs={
                    "template_text": f"{bad} {{text}}" if i % 2 == 0 else "review: {text}",
                    "trainable_pct": params / 1000,
                    "train_loss_curve": [0.7, 0.6, 0.5],
                    "train_loss_curve_every": 2,
                    "trial_seconds": 1.0,
                },
            )
        )
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": f"boom {EVIL}"}))
    study.add_trial(create_trial(state=TrialState.PRUNED))
    return study


def figure(page: str, div_id: str) -> dict[str, Any]:
    """The data and layout plotly is given for the div ``div_id`` (parsed as JSON)."""
    match = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    assert match, f"no figure {div_id}"
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(page, match.end())
    rest = re.match(r",\s*", page[end:])
    assert rest
    layout, _ = decoder.raw_decode(page, end + rest.end())
    return {"data": data, "layout": layout}


def point_trials(fig: dict[str, Any]) -> list[int]:
    """Trial numbers of the Pareto plot's points (its two point traces)."""
    traces = [t for t in fig["data"] if t.get("meta") == "trials"]
    assert [t["name"] for t in traces] == ["dominated", "Pareto-optimal"]
    for t in traces:
        assert len(t["x"]) == len(t["y"]) == len(t["customdata"])
    return sorted(n for t in traces for n in t["customdata"])


@pytest.fixture
def report(tmp_path: Path) -> str:
    out = write_report(_study(), tmp_path / "r" / "report.html")
    assert out == tmp_path / "r" / "report.html"
    return out.read_text(encoding="utf-8")


def test_report_is_self_contained_with_plotly_js_once(report: str) -> None:
    assert report.startswith("<!DOCTYPE html>") and report.rstrip().endswith("</html>")
    assert "<script src" not in report.lower()
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?https?:""", report, re.I)
    banner = get_plotlyjs()[:200]  # "/**\n* plotly.js vX.Y.Z\n* Copyright ..."
    assert "plotly.js v" in banner
    assert report.count(banner) == 1
    assert report.count("Plotly.newPlot(") == len(FIGURES)
    assert "<title>peftsearch report: known</title>" in report
    assert "hunter2" not in report  # the storage URL is never shown


def test_pareto_figure_has_one_point_per_complete_trial(report: str) -> None:
    fig = figure(report, "fig-pareto")
    assert point_trials(fig) == [0, 1, 2, 3, 4, 5]  # not the failed 6 nor the pruned 7
    dominated = next(t for t in fig["data"] if t["name"] == "dominated")
    assert dominated["customdata"] == [1, 4]
    front = next(t for t in fig["data"] if t.get("meta") == "front")
    assert front["line"]["shape"] == "hv"
    assert front["x"] == [100, 500, 4_000, 20_000]
    assert front["y"] == [0.6, 0.7, 0.8, 0.85]
    knee = next(t for t in fig["data"] if t.get("meta") == "knee")
    assert knee["marker"]["symbol"] == "star" and len(knee["customdata"]) == 1
    assert fig["layout"]["xaxis"]["type"] == "log"
    notes = fig["layout"]["annotations"]
    assert [a["text"] for a in notes] == [f"knee: trial {knee['customdata'][0]}"]
    hover = dominated["hovertext"][0]
    assert "trial 1" in hover and "0.400% of base" in hover and "learning_rate: 0.001" in hover


def test_every_section_and_figure_is_there(report: str) -> None:
    for div in FIGURES:
        figure(report, div)
    for title in ["Summary", "Pareto front", "Pareto-optimal trials", "Parameter importances"]:
        assert f"<h2>{title}</h2>" in report
    table = re.search(r'<table id="pareto-table">(.*?)</table>', report, re.S)
    assert table and table.group(1).count("<tr") == 1 + 4  # header + the 4 front trials
    assert "0 running, 0 waiting" in report and "1 failed" in report


def test_user_text_is_escaped_in_the_page_and_in_plotly_text(tmp_path: Path) -> None:
    study = _study(name=f"study {EVIL}", evil=True)
    page = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    assert EVIL not in page
    assert "<script>alert" not in page
    assert f"<h1>peftsearch report: study {EVIL_ESCAPED}</h1>" in page
    assert f"<code>/models/{EVIL_ESCAPED}</code>" in page  # model path
    assert f"<code>{EVIL_ESCAPED}</code>, <code>b</code>" in page  # labels
    assert f"<code>boom {EVIL_ESCAPED}</code>" in page  # failure reason
    assert f"<td>{EVIL_ESCAPED}</td>" in page  # template name in the Pareto table
    pareto = figure(page, "fig-pareto")
    hovers = [h for t in pareto["data"] if "hovertext" in t for h in t["hovertext"]]
    assert any(f"template: {EVIL_ESCAPED}" in h for h in hovers)
    assert any(f"text: {EVIL_ESCAPED} {{text}}" in h for h in hovers)
    names = [t["name"] for t in figure(page, "fig-templates")["data"]]
    assert names == [EVIL_ESCAPED, "review"]  # legend entries
    boxes = [t["name"] for t in figure(page, "fig-distribution")["data"]]
    assert boxes == [EVIL_ESCAPED, "review"]
    curves = [t["name"] for t in figure(page, "fig-curves")["data"]]
    assert f"trial 0 ({EVIL_ESCAPED})" in curves


def test_more_trials_more_points(tmp_path: Path) -> None:
    page = write_report(_study(n=20), tmp_path / "report.html").read_text(encoding="utf-8")
    assert point_trials(figure(page, "fig-pareto")) == list(range(20))


def test_existing_file_is_replaced_whole_and_no_temp_file_is_left(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text("x" * 8_000_000, encoding="utf-8")  # longer than the report
    os.chmod(path, 0o640)
    write_report(_study(), path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.endswith("</html>\n") and "xxxx" not in text
    assert os.listdir(tmp_path) == ["report.html"]
    assert path.stat().st_mode & 0o777 == 0o640  # the file keeps its permissions
    fresh = write_report(_study(), tmp_path / "new.html")
    assert fresh.stat().st_mode & 0o777 == 0o644  # readable, unlike mkstemp's 0600


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "report.html"
    path.write_text("old report", encoding="utf-8")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_html.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        write_report(_study(), path)
    assert path.read_text(encoding="utf-8") == "old report"
    assert os.listdir(tmp_path) == ["report.html"]


def test_a_study_without_complete_trials_gets_a_report(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="empty", directions=["maximize", "minimize"])
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "OOM"}))
    page = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "No trial has completed yet." in page
    assert "Plotly.newPlot(" not in page
    assert '<td class="num">1</td><td><code>OOM</code></td>' in page
