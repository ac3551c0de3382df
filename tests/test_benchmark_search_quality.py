"""benchmarks/search_quality.py end to end on the tiny model: three methods, one seed, three
trials (random: until twice old_tpe's steps), read back from the JSON it writes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import yaml
from conftest import space_dict

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "search_quality.py"


def load_script():
    spec = importlib.util.spec_from_file_location("search_quality", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses / NamedTuple look their module up
    spec.loader.exec_module(module)
    return module


def test_search_quality_three_methods(tmp_path, tiny_model, sentiment_csv, one_thread):
    sq = load_script()
    space_file = tmp_path / "tiny.yaml"
    raw = space_dict(tiny_model, sentiment_csv, tmp_path / "unused")
    space_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    out, html = tmp_path / "results.json", tmp_path / "results.html"
    rc = sq.main(
        [
            str(space_file),
            "--seeds", "0",
            "--n-trials", "3",
            "--methods", "old_tpe", "random", "new",
            "--train-size", "64",
            "--eval-size", "40",
            "--work-dir", str(tmp_path / "work"),
            "--out", str(out),
            "--html", str(html),
        ]
    )  # fmt: skip
    assert rc == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    (space,) = results["spaces"]
    runs = {r["method"]: r for r in space["runs"]}
    assert set(runs) == {"old_tpe", "random", "new"}
    for r in runs.values():
        trials = r["trials"]
        assert trials, r["method"]
        total = 0
        for t in trials:
            total += t["train_steps"]
            assert t["cumulative_steps"] == total
            if t["duplicate_of"] is not None:
                assert t["train_steps"] == 0
        assert r["numbers"]["total_steps"] == total
        assert r["curve"]["steps"] == [t["cumulative_steps"] for t in trials]
        hv = r["curve"]["hypervolume"]
        assert len(hv) == len(trials)
        assert all(b >= a for a, b in zip(hv, hv[1:], strict=False))
        assert 0 < r["numbers"]["majority_rate"] <= 1
        assert r["curve"]["reference"] == space["reference"]
    old, rnd = runs["old_tpe"]["numbers"], runs["random"]["numbers"]
    assert runs["old_tpe"]["numbers"]["n_trials"] == runs["new"]["numbers"]["n_trials"] == 3
    assert rnd["total_steps"] >= 2 * old["total_steps"] or rnd["stopped_by"] == "cap"
    assert rnd["stopped_by"] in ("budget", "cap")
    # The methods' settings reached the studies.
    for method, r in runs.items():
        spec = yaml.safe_load(Path(r["space_file"]).read_text(encoding="utf-8"))
        assert ("params" in spec) == (method == "old_tpe")
        assert spec["study"]["coverage"] == (method == "new")
        assert spec["data"]["train_size"] == 64
    summary = space["summary"]
    assert set(summary["methods"]) == {"old_tpe", "random", "new"}
    for m in summary["methods"].values():
        assert {"final_hypervolume", "best_metric", "total_steps"} <= set(m)
        assert {"mean", "std"} <= set(m["final_hypervolume"])
    g1, g2 = summary["goal_steps_to_old_hv"], summary["goal_new_beats_random"]
    assert set(g1["per_seed"]) == set(g2["per_seed"]) == {"0"}
    assert {"fraction", "met", "new_steps_to_reach"} <= set(g1["per_seed"]["0"])
    assert "met" in g2["per_seed"]["0"]
    assert html.read_text(encoding="utf-8").count("<script") >= 1

    # Chunks: the random study resumed with more trials until a larger budget is met.
    more = sq.execute(Path(runs["random"]["space_file"]), rnd["total_steps"] + 1, 10)
    assert more["chunks"] == 2 and more["stopped_by"] == "budget"
    assert more["n_trials"] == rnd["n_trials"] + 1
    rows = sq.trial_rows(more["study"])
    assert len(rows) == rnd["n_trials"] + 1
    assert rows[-1]["cumulative_steps"] > rnd["total_steps"]
    capped = sq.execute(Path(runs["random"]["space_file"]), 10**9, more["n_trials"])
    assert capped["stopped_by"] == "cap" and capped["n_trials"] == more["n_trials"]


def test_steps_to_reach_interpolates():
    sq = load_script()
    curve = sq.Curve([10, 20, 30], [0.0, 1.0, 2.0], (0.0, 100.0))
    assert sq.steps_to_reach(curve, 0.5) == 15.0
    assert sq.steps_to_reach(curve, 2.0) == 30.0
    assert sq.steps_to_reach(curve, 2.5) is None
    assert sq.steps_to_reach(curve, 0.0) == 0.0
