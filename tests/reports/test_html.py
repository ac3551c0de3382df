"""The HTML report file: self-contained, escaped, one Pareto point per trial, written atomically."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta
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
    "fig-methods",
    "fig-distribution-methods",
    "fig-importance-0",
    "fig-importance-1",
    "fig-history",
    "fig-curves",
]


def _study(
    name: str = "known", n: int = 6, evil: bool = False, pruned: bool = True
) -> optuna.Study:
    """``n`` complete trials (trials 1 and 4 dominated), a failed and (``pruned``) a pruned one."""
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
    if pruned:
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


def test_the_front_marks_methods_and_the_per_method_twin_groups_them(
    report: str, tmp_path: Path
) -> None:
    fig = figure(report, "fig-pareto")
    for t in (t for t in fig["data"] if t.get("meta") == "trials"):
        lora_r = {n: [0, 4, 8][n % 3] for n in t["customdata"]}
        want = ["circle" if lora_r[n] else "triangle-up" for n in t["customdata"]]
        assert t["marker"]["symbol"] == want  # rank 0 trains the head alone
    legend = [t["name"] for t in fig["data"] if t.get("meta") == "method"]
    assert legend == ["lora", "none (head / prompt only)"]
    methods = figure(report, "fig-methods")
    assert {t["name"]: sorted(t["customdata"]) for t in methods["data"]} == {
        "lora": [1, 2, 4, 5],
        "none": [0, 3],
    }
    table = re.search(r'<table id="method-evidence">(.*?)</table>', report, re.S)
    assert table and "<td>lora</td>" in table.group(1) and "<td>none</td>" in table.group(1)
    assert "lora 1.0e-03, head 1.0e-03" in report  # the Pareto table's rates
    # One method: no twin, no method legend.
    one = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"lora_r": CategoricalDistribution([4, 8])}
    for r, v in ((4, [0.7, 100]), (8, [0.8, 200])):
        one.add_trial(create_trial(values=v, params={"lora_r": r}, distributions=dist))
    page = write_report(one, tmp_path / "one.html").read_text(encoding="utf-8")
    assert "fig-methods" not in page and "method-evidence" not in page
    assert not [t for t in figure(page, "fig-pareto")["data"] if t.get("meta") == "method"]


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


# --- successive halving ------------------------------------------------------------------------

HALVING_DISTS = {
    "template": CategoricalDistribution(["plain", "review", EVIL]),
    "lora_r": CategoricalDistribution([0, 4, 8]),
}


def _rung(rung: int, step: int, metric: float, peers: int, stopped: bool = False) -> dict:
    return {"rung": rung, "step": step, "fraction": None, "metric": metric, "eval_loss": 0.5,
            "trainable_params": 0, "peers": peers, "stopped": stopped}  # fmt: skip


def _trial(
    study: optuna.Study,
    state: TrialState,
    template: str,
    lora_r: int,
    minute: int,
    values: list[float] | None = None,
    **attrs: Any,
) -> None:
    params = {"template": template, "lora_r": lora_r}
    trial = create_trial(
        state=state,
        values=values,
        distributions=HALVING_DISTS,
        params=params,
        user_attrs={
            "params": {**params, "prompt_length": 4, "learning_rate": 1e-3},
            "template_text": f"{template} {{text}}",
            **attrs,
        },
    )
    trial.datetime_complete = datetime(2026, 1, 1) + timedelta(minutes=minute)
    study.add_trial(trial)


def _halving_study() -> optuna.Study:
    """Trials 0, 2, 6 completed (6 without rungs), 1 and 3 stopped, 4 repeats 2, 5 repeats 1.
    Trial 3, with template EVIL, finished before trial 2."""
    C, P = TrialState.COMPLETE, TrialState.PRUNED
    study = optuna.create_study(study_name="halving", directions=["maximize", "minimize"])
    study.set_user_attr("metric", "accuracy")
    study.set_user_attr("base_params", 100_000)
    full = {"train_steps": 100, "planned_steps": 100}
    r0 = [_rung(0, 25, 0.5, 0), _rung(1, 75, 0.55, 0)]
    _trial(study, C, "plain", 0, 1, [0.6, 800], rungs=r0, coverage=True, **full)
    stop1 = {"rung": 0, "step": 25, "of": 100, "metric": 0.3}
    r1 = [_rung(0, 25, 0.3, 1, stopped=True)]
    _trial(study, P, "review", 4, 2, rungs=r1, pruned_at=stop1, train_steps=25,
           planned_steps=100, trainable_params=5_000, coverage=True)  # fmt: skip
    r2 = [_rung(0, 25, 0.7, 2), _rung(1, 75, 0.72, 1)]
    _trial(study, C, "review", 4, 4, [0.75, 5_000], rungs=r2, **full)
    r3 = [_rung(0, 20, 0.6, 2), _rung(1, 60, 0.62, 2, stopped=True)]
    stop3 = {"rung": 1, "step": 60, "of": 80, "metric": 0.62}
    _trial(study, P, EVIL, 8, 3, rungs=r3, pruned_at=stop3, train_steps=60, planned_steps=80,
           trainable_params=70_000)  # fmt: skip
    none = {"train_steps": 0, "planned_steps": 0}
    _trial(study, C, "review", 4, 5, [0.75, 5_000], duplicate_of=2, **none)
    _trial(study, P, "review", 4, 6, duplicate_of=1, pruned_at=stop1, **none)
    _trial(study, C, "plain", 0, 7, [0.7, 900], **full)
    return study


@pytest.fixture
def halving(tmp_path: Path) -> str:
    return write_report(_halving_study(), tmp_path / "report.html").read_text(encoding="utf-8")


def _rows(page: str, table_id: str) -> list[list[str]]:
    """The cells of each body row of the table ``table_id`` (the HTML inside each cell)."""
    table = re.search(f'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert table, f"no table {table_id}"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]
    return [re.findall(r"<td[^>]*>(.*?)</td>", r, re.S) for r in rows]


RATES = "lora 1.0e-03, prompt 1.0e-03, head 1.0e-03"  # each adapter the trial trained


def test_stopped_trials_table_has_the_rung_step_score_and_peers(halving: str) -> None:
    assert (
        '<p class="note" id="pruning-note">2 trials were stopped early by successive halving; '
        "they are not on the front (a stopped trial has no final score). 1 more repeated a "
        "stopped configuration and was not trained.</p>"
    ) in halving
    assert _rows(halving, "stopped-table") == [
        ["1 (coverage)", "review", "4", "4", RATES, "5,000", "0", "25 of 100", "0.3000",
         "1 trial", "rung 0 @ step 25: 0.3000 (vs 1) – stopped"],
        [
            "3", EVIL_ESCAPED, "4", "8", RATES, "70,000", "1", "60 of 80", "0.6200", "2 trials",
            "rung 0 @ step 20: 0.6000 (vs 2)<br>rung 1 @ step 60: 0.6200 (vs 2) – stopped",
        ],
    ]  # fmt: skip
    assert _rows(halving, "rung-table") == [
        ["0", "20–25", "4", "1", "3", "0.3000", "0.5500", "0.7000"],
        ["1", "60–75", "3", "1", "2", "0.5500", "0.6200", "0.7200"],
    ]
    assert "; 2 stopped early by successive halving (not on the front).</p>" in halving
    assert EVIL not in halving


def test_steps_saved_are_in_the_summary(halving: str) -> None:
    summary = halving.split("<h2>Summary</h2>", 1)[1].split("</section>", 1)[0]
    assert (
        "<dt>training steps</dt><dd>385 run of 480 planned (80%) over 5 trials; stopping "
        "trials early saved 95 steps (20%)</dd>"
    ) in summary


def test_metric_against_steps_draws_stopped_trials_dashed_with_their_config(halving: str) -> None:
    fig = figure(halving, "fig-steps")
    by_trial = {t["customdata"][0]: t for t in fig["data"]}
    assert sorted(by_trial) == [0, 1, 2, 3]  # repeats and trial 6 (no rungs) are not lines
    assert (by_trial[0]["x"], by_trial[0]["y"]) == ([25, 75, 100], [0.5, 0.55, 0.6])
    assert (by_trial[3]["x"], by_trial[3]["y"]) == ([20, 60], [0.6, 0.62])
    assert [by_trial[n]["line"]["dash"] for n in (0, 1, 2, 3)] == ["solid", "dash", "solid", "dash"]
    assert [by_trial[n]["meta"] for n in (0, 1, 3)] == ["Pareto-optimal", "stopped", "stopped"]
    last = by_trial[3]["hovertext"][-1]
    assert last.startswith("<b>trial 3</b> (stopped here)<br>step 60: accuracy 0.6200")
    assert f"template: {EVIL_ESCAPED}" in last and "lora_r: 8" in last
    assert "prompt_length: 4" in last and "trainable params: 70,000" in last
    assert "(final)" in by_trial[0]["hovertext"][-1]


def test_hypervolume_against_training_steps_sits_with_the_history(halving: str) -> None:
    history = halving.split("<h2>Optimization history</h2>", 1)[1].split("</section>", 1)[0]
    assert 'id="fig-history"' in history and 'id="fig-hv-steps"' in history
    [trace] = figure(halving, "fig-hv-steps")["data"]
    assert trace["x"] == [100, 125, 185, 285, 285, 285, 385]
    assert trace["line"]["shape"] == "hv"
    assert len(trace["y"]) == 7 and trace["y"][0] == trace["y"][2] < trace["y"][3] < trace["y"][6]
    assert "against the training steps spent so far" in history


def test_templates_with_thin_evidence_are_marked(halving: str) -> None:
    assert _rows(halving, "template-evidence") == [  # by name: no search space recorded
        [EVIL_ESCAPED, "0", "1", "too few / too short to judge: 0 completed trials, 1 of 1 "
         "stopped early"],
        ["plain", "2", "0", "too few to judge: 2 completed trials"],
        ["review", "1", "1", "too few to judge: 1 completed trial"],
    ]  # fmt: skip
    fig = figure(halving, "fig-distribution")
    assert [t["name"] for t in fig["data"]] == ["plain", "review"]  # EVIL has no completed trial
    assert fig["data"][1]["customdata"] == [2]  # the repeat 4 is not counted again
    title = fig["layout"]["title"]["text"]
    assert title == f"too few / too short to judge: {EVIL_ESCAPED}, plain, review"


def test_importances_say_they_use_complete_trials_only(halving: str) -> None:
    section = halving.split("<h2>Parameter importances</h2>", 1)[1].split("</section>", 1)[0]
    assert section.count("computed on the 3 COMPLETE trials only: the 2 trials were stopped "
                         "early by successive halving") == 2  # fmt: skip
    assert "1 repeated configuration counted once" in section
    assert "only 3 completed trials: a rough hint, not a ranking" in section
    assert "The 2 trials were stopped early by successive halving and are not used" in section


def test_a_study_without_pruning_says_so_and_draws_no_step_figures(tmp_path: Path) -> None:
    page = write_report(_study(pruned=False), tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h2>Stopped early (successive halving)</h2>" in page
    assert "Pruning was off for this study or stopped nothing" in page
    assert 'id="stopped-table"' not in page and 'id="rung-table"' not in page
    assert "fig-steps" not in page and "fig-hv-steps" not in page  # no steps recorded
    assert "<dt>training steps</dt>" not in page and "stopped early by" not in page


def test_rungs_that_stopped_nothing_are_reported(tmp_path: Path) -> None:
    study = _study(n=0, pruned=False)
    for i, metric in enumerate([0.6, 0.7]):
        rungs = [_rung(0, 10, metric - 0.1, i)]
        _trial(study, TrialState.COMPLETE, "plain", 4 * i, i, [metric, 100 + 1000 * i],
               rungs=rungs, train_steps=40, planned_steps=40)  # fmt: skip
    page = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Successive halving scored 2 trials at its rungs and stopped none." in page
    assert _rows(page, "rung-table") == [["0", "10", "2", "0", "2", "0.5000", "0.5500", "0.6000"]]
    assert "<dd>80 run of 80 planned (100%) over 2 trials</dd>" in page
    assert [t["x"] for t in figure(page, "fig-steps")["data"]] == [[10, 40], [10, 40]]


def test_a_study_with_only_stopped_trials_shows_them(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="early", directions=["maximize", "minimize"])
    at = {"rung": 0, "step": 5, "of": 20, "metric": 0.25}
    _trial(study, TrialState.PRUNED, EVIL, 0, 0, pruned_at=at, train_steps=5, planned_steps=20,
           rungs=[_rung(0, 5, 0.25, 3, stopped=True)], trainable_params=10)  # fmt: skip
    page = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "No trial has completed yet." in page
    assert "1 trial was stopped early by successive halving; it is not on the front" in page
    [row] = _rows(page, "stopped-table")
    assert row[:2] == ["0", EVIL_ESCAPED] and row[7:10] == ["5 of 20", "0.2500", "3 trials"]
    assert "5 run of 20 planned (25%) over 1 trials; stopping trials early saved 15 steps" in page
    assert EVIL not in page


def test_a_coverage_trial_kept_at_a_rung_says_so(tmp_path: Path) -> None:
    study = _study(n=0, pruned=False)
    kept = {**_rung(0, 10, 0.2, 1), "protected": True}
    full = {"train_steps": 40, "planned_steps": 40}
    _trial(study, TrialState.COMPLETE, "plain", 0, 0, [0.4, 50], rungs=[kept], coverage=True,
           **full)  # fmt: skip
    _trial(study, TrialState.COMPLETE, "review", 4, 1, [0.6, 900], rungs=[_rung(0, 10, 0.5, 1)],
           **full)  # fmt: skip
    page = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    [row] = _rows(page, "rung-table")
    assert row[2:5] == ["2", "0", "2 (1 kept as coverage)"]
