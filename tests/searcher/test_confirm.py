"""`search confirm`: the front's trials trained again on other seeds, each run stored on the
study as it finishes (a rerun trains only what is missing), read by the report and the picks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from peftsearch.errors import UserError
from peftsearch.objectives import runner as runner_mod
from peftsearch.objectives.runner import TrialRunner
from peftsearch.reports.confirmed import confirm_key, confirmations, spearman
from peftsearch.reports.html import write_report
from peftsearch.reports.select import pick_trial
from peftsearch.reports.trials import front_trials, trial_params
from peftsearch.searcher import open_study, run_study
from peftsearch.searcher.confirm import run_confirm
from peftsearch.spaces import load_space
from tests.conftest import plain_study, run_cli, space_dict

pytestmark = pytest.mark.usefixtures("one_thread")
ENQUEUE = [
    {"template": "review", "prompt_length": 0, "lora_r": 0, "learning_rate": 0.02},
    {"template": "plain", "prompt_length": 2, "lora_r": 4, "learning_rate": 0.01},
    {"template": "plain", "prompt_length": 0, "lora_r": 2, "learning_rate": 0.03},
]


@pytest.fixture(scope="module")
def space_file(tmp_path_factory, tiny_model: Path, sentiment_csv: Path) -> Path:
    root = tmp_path_factory.mktemp("confirm")
    raw = space_dict(
        tiny_model,
        sentiment_csv,
        root / "out",
        study={"name": "conf", "n_trials": 3, "seed": 1, "enqueue": ENQUEUE},
    )
    plain_study(raw)
    path = root / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    run_study(load_space(path), show_progress=False)
    return path


def _count_adds(monkeypatch) -> list[tuple[Any, int | None]]:
    calls: list[tuple[Any, int | None]] = []
    real = runner_mod.RunnerPack.add

    def add(self, key, params, seed=None):
        calls.append((key, seed))
        return real(self, key, params, seed)

    monkeypatch.setattr(runner_mod.RunnerPack, "add", add)
    return calls


def test_confirm_trains_each_front_trial_on_new_seeds_and_stores_each_run(
    space_file: Path, monkeypatch
) -> None:
    space = load_space(space_file)
    calls = _count_adds(monkeypatch)
    found = run_confirm(space, "front", seeds=1, show_progress=False)
    study = open_study(space, create=False)
    front = sorted(t.number for t in front_trials(study))
    assert sorted(found) == front and sorted(k for k, _ in calls) == [(n, 2) for n in front]
    assert {s for _, s in calls} == {2}  # study seed 1: the extra seed is 2
    for n in front:
        stored = study.user_attrs[confirm_key(n, 2)]
        assert 0.0 <= stored["metric"] <= 1.0 and stored["train_steps"] > 0
        assert found[n].n == 2 and found[n].runs == {2: stored["metric"]}
    # The stored run is what that configuration gives with seed 2 (and seeds do matter).
    n = front[0]
    pack = TrialRunner(space).pack(1)
    pack.add("check", trial_params(study, study.trials[n]), 2)
    done: list[Any] = []
    while len(pack):
        done += pack.step()
    ((_, again),) = done
    assert again.metric == study.user_attrs[confirm_key(n, 2)]["metric"]
    assert again.attrs["eval_loss"] != study.trials[n].user_attrs["eval_loss"]

    # Asking for 2 seeds now trains only the missing one per trial; asking again, nothing.
    calls.clear()
    found = run_confirm(space, "front", seeds=2, show_progress=False)
    assert sorted(k for k, _ in calls) == [(n, 3) for n in front]
    assert all(c.n == 3 for c in found.values())
    calls.clear()
    run_confirm(space, "front", seeds=2, show_progress=False)
    assert calls == []


def test_the_report_the_picks_and_the_export_use_the_confirmed_means(
    space_file: Path, tmp_path: Path
) -> None:
    from peftsearch.reports.export import export_trial

    space = load_space(space_file)
    run_confirm(space, "front", seeds=1, show_progress=False)
    study = open_study(space, create=False)
    confirmed = confirmations(study)
    page = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="confirmed"' in page
    for c in confirmed.values():
        assert f"{c.mean:.4f} &plusmn; {c.std:.4f}" in page
    best = max(front_trials(study), key=lambda t: (confirmed[t.number].mean, -t.values[1]))
    assert pick_trial(study, "best").number == best.number
    readme = (export_trial(study, best.number, tmp_path / "e") / "README.md").read_text("utf-8")
    assert "`search confirm` trained it on" in readme
    from optuna_dashboard._note import get_note_from_system_attrs

    attrs = study._storage.get_study_system_attrs(study._study_id)
    note = get_note_from_system_attrs(attrs, None)["body"]
    for c in confirmed.values():
        assert f"{c.mean:.4f} +- {c.std:.4f} ({c.n})" in note
    assert "Knee by confirmed means (`search export --pick knee`): trial " in note


def test_bad_choices_are_refused_with_the_reason(space_file: Path) -> None:
    space = load_space(space_file)
    with pytest.raises(UserError, match="trial 99 is not a completed"):
        run_confirm(space, "99", seeds=1, show_progress=False)
    with pytest.raises(UserError, match="not a trial number"):
        run_confirm(space, "front,1", seeds=1, show_progress=False)
    with pytest.raises(UserError, match="--seeds must be at least 1"):
        run_confirm(space, "front", seeds=0, show_progress=False)


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 2, 3], [5, 5, 5]) is None


def test_cli_confirm_prints_each_trial(space_file: Path) -> None:
    proc = run_cli("confirm", str(space_file), "--trials", "0", "--seeds", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "confirmed mean +- std (n)" in proc.stdout
    assert proc.stdout.splitlines()[1].split()[0] == "0"


# -- --budget full ---------------------------------------------------------------------------


def test_full_budget_trains_on_the_whole_train_split_and_scores_validation_and_test(
    space_file: Path, tmp_path: Path, monkeypatch
) -> None:
    import math

    from peftsearch.objectives.data import load_splits
    from peftsearch.reports.confirmed import full_confirmations
    from peftsearch.reports.export import export_trial

    # A smaller eval_size than the validation split (40 rows), so that "the whole split" shows;
    # the full budget does not read train_size / eval_size at all.
    space = load_space(space_file, {"data.eval_size": 20})
    study = open_study(space, create=False)
    knee_before = pick_trial(study, "knee").number
    found = run_confirm(space, "0", seeds=1, show_progress=False, budget="full")
    splits = load_splits(space)
    stored = study.user_attrs[confirm_key(0, 2, "full")]
    params = trial_params(study, study.trials[0])
    per_epoch = math.ceil(len(splits.train) / params["batch_size"])
    # The whole split, not the trial's train_size (160) / eval_size (60) subsample.
    assert len(splits.train) > 160 and len(splits.validation) > 20
    assert stored["train_steps"] == params["epochs"] * per_epoch
    assert study.trials[0].user_attrs["train_steps"] < stored["train_steps"]
    assert stored["eval_rows"] == len(splits.validation)
    assert stored["test_rows"] == len(splits.test)
    assert 0.0 <= stored["test_metric"] <= 1.0 and stored["epochs"] == params["epochs"]
    f = found[0]
    assert f.validation == {2: stored["metric"]} and f.test == {2: stored["test_metric"]}
    assert full_confirmations(study)[0] == f

    # The stored test metric is that configuration's, seed 2, scored on the test split.
    check = TrialRunner(space, "full").pack(1)
    check.add("check", params, 2)
    done: list[Any] = []
    while len(check):
        done += check.step()
    ((_, again),) = done
    assert again.attrs["test_metric"] == stored["test_metric"]
    assert again.metric == stored["metric"]

    # --epochs: other runs under their own key, steps scale; a rerun trains nothing.
    calls = _count_adds(monkeypatch)
    run_confirm(space, "0", seeds=1, show_progress=False, budget="full", epochs=1)
    e1 = study.user_attrs[confirm_key(0, 2, "full", 1)]
    assert e1["train_steps"] == per_epoch and e1["epochs"] == 1 and len(calls) == 1
    calls.clear()
    run_confirm(space, "0", seeds=1, show_progress=False, budget="full")
    run_confirm(space, "0", seeds=1, show_progress=False, budget="full", epochs=1)
    assert calls == []

    # Shown in the report, the dashboard note and the export README; the picks ignore them.
    assert pick_trial(study, "knee").number == knee_before
    page = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    # (the search-budget table is there when an earlier test of this module confirmed)
    assert page.count('id="confirmed-full"') == 1 and page.count('id="confirmed"') <= 1
    assert page.count('id="confirmation"') == 1  # the section: its own id, not the table's
    (vm, vs), (tm, ts) = f.validation_mean_std, f.test_mean_std
    assert f"{vm:.4f} &plusmn; {vs:.4f}" in page and f"{tm:.4f} &plusmn; {ts:.4f}" in page
    readme = (export_trial(study, 0, tmp_path / "e") / "README.md").read_text("utf-8")
    assert f"test {tm:.4f} +- {ts:.4f}" in readme
    from optuna_dashboard._note import get_note_from_system_attrs

    attrs = study._storage.get_study_system_attrs(study._study_id)
    note = get_note_from_system_attrs(attrs, None)["body"]
    assert f"{tm:.4f} +- {ts:.4f} | 1 |" in note


def test_full_budget_arguments_are_checked(space_file: Path) -> None:
    space = load_space(space_file)
    with pytest.raises(UserError, match="only with --budget full"):
        run_confirm(space, "0", seeds=1, show_progress=False, epochs=2)
    with pytest.raises(UserError, match="--budget must be"):
        run_confirm(space, "0", seeds=1, show_progress=False, budget="huge")


def test_the_front_figure_has_error_bars_for_confirmed_trials(space_file: Path) -> None:
    from peftsearch.reports.figures import compute_report
    from peftsearch.reports.html import pareto_figure

    space = load_space(space_file)
    run_confirm(space, "front", seeds=1, show_progress=False)
    study = open_study(space, create=False)
    data = compute_report(study)
    fig = pareto_figure(data.pareto, "accuracy", data.confirmed)
    (trace,) = [t for t in fig.data if t.meta == "confirmed"]
    want = {c.trial: c for c in confirmations(study).values()}
    assert sorted(trace.customdata) == sorted(want)
    for trial, y, err in zip(trace.customdata, trace.y, trace.error_y.array, strict=True):
        assert y == pytest.approx(want[trial].mean) and err == pytest.approx(want[trial].std)
    assert not [t for t in pareto_figure(data.pareto, "accuracy").data if t.meta == "confirmed"]


def test_cli_confirm_full_budget_prints_validation_and_test(space_file: Path) -> None:
    proc = run_cli(
        "confirm",
        str(space_file),
        "--trials",
        "0",
        "--seeds",
        "1",
        "--budget",
        "full",
        "--epochs",
        "1",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert "validation mean +- std  test mean +- std (n)" in proc.stdout
    assert proc.stdout.splitlines()[1].split()[0] == "0"


def test_the_progress_bar_counts_training_steps_and_runs(space_file: Path, capsys) -> None:
    space = load_space(space_file)
    study = open_study(space, create=False)
    runner = TrialRunner(space, "full")
    params = trial_params(study, study.trials[1])
    want = 2 * runner.total_steps({**params, "epochs": 2, "max_steps": None})
    capsys.readouterr()
    run_confirm(space, "1", seeds=2, show_progress=True, budget="full", epochs=2)
    err = " ".join(capsys.readouterr().err.split())
    assert f"{want}/{want} steps, 2/2 runs" in err, err[-400:]
